"""Checkpoints load with weights_only=True: mmengine's own types pass, anything else is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

from seglab.engine.checkpoint import CheckpointError, load_checkpoint_file


@pytest.mark.slow
def test_training_checkpoint_needs_the_allow_list_and_loads_with_it(voc_two_epochs) -> None:
    _, work_dir = voc_two_epochs
    ckpt = Path(work_dir) / "epoch_2.pth"
    # What mmengine 0.10.7 does on torch >= 2.6 (weights_only by default) fails ...
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(ckpt)
    # ... seglab's loader keeps weights_only on and restores the full training state.
    state = load_checkpoint_file(str(ckpt))
    assert state["meta"]["epoch"] == 2
    assert {"state_dict", "optimizer", "param_schedulers", "message_hub"} <= state.keys()


def test_the_allow_list_is_scoped_to_seglabs_loader(voc_two_epochs) -> None:
    _, work_dir = voc_two_epochs
    load_checkpoint_file(str(Path(work_dir) / "epoch_2.pth"))
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(Path(work_dir) / "epoch_2.pth")


class CallsOnLoad:
    """Pickles as "call builtins.print on load": the shape of a code-execution payload."""

    def __reduce__(self):
        return (print, ("payload ran",))


def test_untrusted_object_is_refused_with_file_and_type(tmp_path: Path, capsys) -> None:
    path = tmp_path / "untrusted.pth"
    torch.save({"state_dict": {}, "payload": CallsOnLoad()}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint_file(str(path))
    message = str(err.value)
    assert str(path) in message and "print" in message and "weights_only" in message
    assert "payload ran" not in capsys.readouterr().out


class GetattrPayload:
    def __init__(self, owner: object, name: str) -> None:
        self.owner, self.name = owner, name

    def __reduce__(self):
        return (getattr, (self.owner, self.name))


@pytest.mark.parametrize("owner,name", [(np.ndarray, "tofile"), (HistoryBuffer, "__init__")])
def test_getattr_is_allowed_only_for_history_buffer_statistics(tmp_path: Path, owner,
                                                                name: str) -> None:
    path = tmp_path / "getattr.pth"
    torch.save({"payload": GetattrPayload(owner, name)}, path)
    with pytest.raises(CheckpointError, match="getattr"):
        load_checkpoint_file(str(path))


def test_truncated_file_is_reported_as_corrupt(tmp_path: Path) -> None:
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {"w": torch.ones(1000)}}, good)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(good.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as err:
        load_checkpoint_file(str(bad))
    assert str(bad) in str(err.value)


def test_mmengine_uses_seglabs_loader_for_local_files(tmp_path: Path) -> None:
    from mmengine.runner.checkpoint import CheckpointLoader

    import seglab.register  # noqa: F401

    path = tmp_path / "untrusted.pth"
    torch.save({"payload": CallsOnLoad()}, path)
    with pytest.raises(CheckpointError):
        CheckpointLoader.load_checkpoint(str(path))


@pytest.mark.slow
def test_crash_during_save_keeps_the_newest_checkpoint_loadable(voc_root, tmp_path,
                                                                monkeypatch) -> None:
    """The process dies half-way through writing epoch_2.pth."""
    from seglab.engine import checkpoint as ckpt
    from seglab.engine import runner as engine
    from tests.conftest import VOC_DEMO

    writes = []

    def crash_on_second_save(handle, data: bytes) -> None:
        writes.append(len(data))
        if len(writes) == 2:
            handle.write(data[: len(data) // 2])
            raise SystemExit("simulated crash during checkpoint save")
        handle.write(data)

    monkeypatch.setattr(ckpt, "_write_bytes", crash_on_second_save)
    options = {"train_cfg.max_epochs": 3, "train_cfg.val_interval": 10,
               "default_hooks.checkpoint.save_best": None}
    with pytest.raises(SystemExit):
        engine.train(str(VOC_DEMO), work_dir=str(tmp_path), data_root=str(voc_root),
                     cfg_options=options)
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["epoch_1.pth"]  # no torso
    assert not list(tmp_path.glob(".*.tmp"))
    assert Path((tmp_path / "last_checkpoint").read_text()).name == "epoch_1.pth"
    assert load_checkpoint_file(str(tmp_path / "epoch_1.pth"))["meta"]["epoch"] == 1
    monkeypatch.undo()
    runner = engine.train(str(VOC_DEMO), work_dir=str(tmp_path), data_root=str(voc_root),
                          resume=True, cfg_options={**options, "train_cfg.max_epochs": 2})
    assert runner.epoch == 2


def test_resume_skips_a_stale_or_truncated_newest_file(tmp_path) -> None:
    from seglab.engine.checkpoint import latest_loadable_checkpoint

    good = tmp_path / "epoch_1.pth"
    torch.save({"state_dict": {"w": torch.ones(3)}, "meta": {"epoch": 1}}, good)
    bad = tmp_path / "epoch_2.pth"  # e.g. copied in by hand, cut short
    bad.write_bytes(good.read_bytes()[:100])
    (tmp_path / "last_checkpoint").write_text(str(bad))
    assert latest_loadable_checkpoint(str(tmp_path)) == str(good)
    (tmp_path / "last_checkpoint").write_text("")  # a pointer cut short
    assert latest_loadable_checkpoint(str(tmp_path)) == str(good)


def test_rng_state_survives_a_weights_only_checkpoint_and_validation(tmp_path) -> None:
    import random
    from types import SimpleNamespace

    import numpy as np

    from seglab.engine.hooks.rng_state_hook import RNGStateHook
    from seglab.engine.rng import RNG_KEY, capture_rng_state, restore_rng_state

    def draws() -> tuple:
        return torch.rand(4).tolist(), np.random.rand(4).tolist(), random.random()

    hook = RNGStateHook()
    runner = SimpleNamespace(_resume=True, seed=0, train_dataloader=SimpleNamespace())
    checkpoint: dict = {}
    hook.before_save_checkpoint(runner, checkpoint)
    expected = draws()
    torch.save(checkpoint, tmp_path / "ckpt.pth")
    hook.after_load_checkpoint(runner, load_checkpoint_file(str(tmp_path / "ckpt.pth")))
    hook.before_train(runner)  # after mmengine's own reseeding
    assert draws() == expected and RNG_KEY in checkpoint

    state = capture_rng_state()
    expected = draws()  # what training draws next when nothing runs in between
    restore_rng_state(state)
    hook.before_val_epoch(runner)
    draws(), draws()  # whatever validation consumes
    hook.after_val_epoch(runner)
    assert draws() == expected
