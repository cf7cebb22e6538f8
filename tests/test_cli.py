"""The one error path of ``seglab``: bad input is a message and exit 2, a bug a traceback
and a line saying so (exit 1), Ctrl-C exit 130."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from seglab import cli
from seglab.errors import UserError, user_message
from tests.conftest import VOC_DEMO


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "seglab: error:" in line]


@pytest.mark.slow
def test_registry_typo_is_one_line_naming_the_type(tmp_path: Path, capsys) -> None:
    """mmseg's KeyError from the model registry, the cheapest way: ``infer`` builds the model
    right after reading the config."""
    from PIL import Image

    config = tmp_path / "typo.py"
    config.write_text(f"_base_ = [{str(VOC_DEMO)!r}]\n"
                      "model = dict(decode_head=dict(type='SegformerHeed'))\n")
    checkpoint = tmp_path / "any.pth"
    checkpoint.write_bytes(b"")  # never read: the model fails to build first
    Image.new("RGB", (8, 8)).save(tmp_path / "image.png")
    code = cli.main(["infer", str(config), str(checkpoint), str(tmp_path / "image.png"),
                     "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    [line] = _error_lines(err)
    assert "unknown model type 'SegformerHeed'" in line and "mmseg::model registry" in line
    assert "Did you mean 'SegformerHead'" in line and "Fix:" in line


def test_an_unknown_type_names_the_cfg_option_that_set_it() -> None:
    err = KeyError("SegformerHeed is not in the mmseg::model registry. Please check ...")
    message = user_message(err, {"model.decode_head.type": "SegformerHeed", "a.b": 1})
    assert "(set by --cfg-options model.decode_head.type=SegformerHeed)" in message


@pytest.mark.parametrize("err, expected", [
    (KeyError("SegformerHeed is not in the mmseg::model registry. Please check ..."),
     "unknown model type 'SegformerHeed'"),
    (KeyError("Polly is not in the parameter scheduler registry. Please check ..."),
     "unknown parameter scheduler type 'Polly'"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "data/x.jpg"),
     "data/x.jpg: no such file or directory. Fix: check the path"),
    (FileNotFoundError("ckpt/epoch_9.pth can not be found."),
     "ckpt/epoch_9.pth can not be found. Fix"),
    (FileNotFoundError("Caught FileNotFoundError in DataLoader worker process 0.\n"
                       "Original Traceback (most recent call last):\n  File ...\n"
                       "FileNotFoundError: [Errno 2] No such file or directory: 'a.png'\n"),
     "No such file or directory: 'a.png'. Fix"),
    (PermissionError(errno.EACCES, "Permission denied", "/srv/work"),
     "/srv/work: permission denied. Fix: pass --work-dir"),
    (OSError(errno.ENOSPC, "No space left on device", "/tmp/x.pth"),
     "no space left on device writing /tmp/x.pth"),
    (OSError(errno.ELOOP, "Too many levels of symbolic links", "data/img/loop"),
     "data/img/loop: too many levels of symbolic links (a link that points to itself"),
    (UserError("config file 'x.py' not found"), "config file 'x.py' not found"),
])
def test_user_caused_framework_errors_get_a_message_with_the_fix(err, expected) -> None:
    assert expected in user_message(err)


@pytest.mark.parametrize("err", [
    KeyError("state_dict"), RuntimeError("boom"), OSError(errno.EIO, "I/O error"),
    AttributeError("'NoneType' object has no attribute 'shape'"),
])
def test_anything_else_is_a_bug(err) -> None:
    assert user_message(err) is None


def test_an_unexpected_exception_prints_the_traceback_and_says_it_is_a_bug(
        monkeypatch, capsys) -> None:
    def broken(args) -> int:
        raise RuntimeError("something seglab did not expect")

    monkeypatch.setattr(cli, "cmd_zoo_list", broken)
    assert cli.main(["zoo", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "RuntimeError: something seglab did not expect" in err
    last = err.rstrip().splitlines()[-1]
    assert "bug in seglab" in last and "seglab zoo list" in last and "pip list" in last
    assert not _error_lines(err)


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys) -> None:
    def interrupted(args) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_train", interrupted)
    assert cli.main(["train", str(VOC_DEMO)]) == 130
    err = capsys.readouterr().err
    assert err == "seglab: interrupted; resume with the same command plus --resume\n"


def test_each_rank_prints_a_user_error_once_without_a_traceback(monkeypatch, capsys) -> None:
    def refused(args) -> int:
        raise PermissionError(errno.EACCES, "Permission denied", "/srv/work")

    monkeypatch.setattr(cli, "cmd_train", refused)
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "3")
    assert cli.main(["train", str(VOC_DEMO), "--launcher", "pytorch"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines() == _error_lines(err) and len(_error_lines(err)) == 1
    assert err.startswith("[rank 3] seglab: error: /srv/work: permission denied")


def _commands_with_cfg_options(parser=None, words: tuple[str, ...] = ()):
    """``(command words, parser)`` of every (sub-)command of ``seglab`` with --cfg-options."""
    import argparse

    parser = parser or cli.build_parser()
    for action in parser._actions:  # argparse has no public list of its actions
        if "--cfg-options" in action.option_strings:
            yield words, parser
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands_with_cfg_options(sub, (*words, name))


CFG_OPTIONS_COMMANDS = {words: parser for words, parser in _commands_with_cfg_options()}
POSITIONALS = {"config": str(VOC_DEMO), "checkpoint": "model.pth"}


def test_every_cfg_options_is_the_checked_one() -> None:
    assert {" ".join(w) for w in CFG_OPTIONS_COMMANDS} >= {"train", "test", "doctor",
                                                           "config show"}
    for parser in CFG_OPTIONS_COMMANDS.values():
        (option,) = [a for a in parser._actions if "--cfg-options" in a.option_strings]
        assert option.type is cli.cfg_option_item


@pytest.mark.parametrize("words", sorted(CFG_OPTIONS_COMMANDS), ids=" ".join)
@pytest.mark.parametrize("item, expected", [
    ("train_cfg.max_epochs", "'train_cfg.max_epochs' is not KEY=VALUE. Fix: write each item "
                             "as KEY=VALUE, e.g. train_cfg.max_epochs=12"),
    ("=12", "'=12' is not KEY=VALUE"),
    ("model.decode_head.loss_decode.class_weight=[1.0,2.0",
     "unbalanced brackets in the value '[1.0,2.0'. Fix: close every [ and ("),
])
def test_a_bad_cfg_options_item_is_a_usage_error_naming_it(words, item, expected,
                                                           capsys) -> None:
    """mmengine's DictAction raised a bare ValueError (AssertionError) out of argparse."""
    positionals = [POSITIONALS[a.dest] for a in CFG_OPTIONS_COMMANDS[words]._actions
                   if not a.option_strings]
    with pytest.raises(SystemExit) as stop:
        cli.main([*words, *positionals, "--cfg-options", "a.b=1", item])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err
    last = err.rstrip().splitlines()[-1]
    assert last.startswith(f"seglab {' '.join(words)}: error: argument --cfg-options: ")
    assert expected in last


def test_good_cfg_options_items_parse_as_mmengine_parses_them() -> None:
    args = cli.build_parser().parse_args(
        ["config", "show", str(VOC_DEMO), "--cfg-options", "train_cfg.max_epochs=12",
         "a.b=[1,(2,x)]", "c=", "d=e=f"])
    assert args.cfg_options == {"train_cfg.max_epochs": 12, "a.b": [1, (2, "x")], "c": "",
                                "d": "e=f"}
