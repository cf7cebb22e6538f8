"""Seed 004's zoo: every family builds and predicts on CPU, or names the package it needs."""

from __future__ import annotations

import pytest
import torch

from seglab.config import zoo
from seglab.config.adapt import adapt_to_device
from seglab.config.diff import flatten_config
from seglab.config.walk import strip_pretrained
from seglab.errors import UserError
from tests.conftest import run_cli


def _predict(cfg) -> torch.Tensor:
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    import seglab.register  # noqa: F401

    init_default_scope("mmseg")
    strip_pretrained(cfg.model)
    adapt_to_device(cfg, "none")
    model = MODELS.build(cfg.model).eval()
    image = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    sample = SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64),
                                         pad_shape=(64, 64)))
    with torch.no_grad():
        return model.test_step(dict(inputs=[image], data_samples=[sample]))[0].pred_sem_seg.data


def test_the_zoo_has_the_seeds_29_families() -> None:
    assert len(zoo.FAMILIES) == 29 == len({f.name for f in zoo.FAMILIES})


@pytest.mark.parametrize("family", zoo.FAMILIES, ids=lambda f: f.name)
@pytest.mark.slow
def test_family_builds_and_predicts_or_names_its_package(family: zoo.Family) -> None:
    missing = zoo.missing_packages(family)
    if missing:
        with pytest.raises(UserError, match=f"needs {missing[0]}.*pip install {missing[0]}=="):
            zoo.zoo_config(family.name)
        return
    cfg = zoo.zoo_config(family.name)
    # the seed's unified settings
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.train_cfg.val_interval == 4000
    assert cfg.default_hooks.checkpoint.interval == 4000
    assert cfg.default_hooks.checkpoint.max_keep_ckpts == 3
    assert tuple(cfg.model.data_preprocessor.size) == (512, 512)
    assert cfg.train_dataloader.dataset.type == "ADE20KDataset"
    num_classes = {v for k, v in flatten_config(cfg.model).items() if k.endswith("num_classes")}
    assert 150 in num_classes and num_classes <= {150, 2}  # 2: STDC's boundary head
    prediction = _predict(cfg)
    assert prediction.shape == (1, 64, 64)
    assert 0 <= int(prediction.min()) and int(prediction.max()) < 150


@pytest.mark.parametrize("family", [f for f in zoo.FAMILIES if f.needs], ids=lambda f: f.name)
def test_declared_optional_packages_are_really_needed(family: zoo.Family, monkeypatch) -> None:
    """Without seglab's check the build fails deep inside mmseg (for MaskFormer with a
    bare ``TypeError: BaseModule.__init__() got an unexpected keyword argument``)."""
    if not zoo.missing_packages(family):
        pytest.skip(f"{family.needs} installed here")
    monkeypatch.setattr(zoo, "require_packages", lambda f: None)
    with pytest.raises((ImportError, TypeError, KeyError)):
        _predict(zoo.zoo_config(family.name))


def test_zoo_cli_lists_families_and_refuses_clearly() -> None:
    listing = run_cli("zoo", "list")
    assert listing.returncode == 0
    assert len([ln for ln in listing.stdout.splitlines()[1:] if ln.strip()]) == 29
    unknown = run_cli("zoo", "train", "no-such-net")
    assert unknown.returncode == 2 and "unknown zoo family 'no-such-net'" in unknown.stderr


def test_zoo_train_writes_its_config_once_and_never_over_an_edit(tmp_path) -> None:
    path = zoo.write_zoo_config("fcn", tmp_path)
    assert path.name == "zoo_fcn_ade20k.py"
    assert zoo.write_zoo_config("fcn", tmp_path) == path  # identical: reused
    path.write_text(path.read_text() + "\n# my edit\n")
    with pytest.raises(UserError, match="will not overwrite"):
        zoo.write_zoo_config("fcn", tmp_path)
    assert path.read_text().endswith("# my edit\n")


@pytest.mark.parametrize("family", [f for f in zoo.FAMILIES if not f.needs],
                         ids=lambda f: f.name)
def test_zoo_configs_pass_the_doctor(family: zoo.Family, tmp_path) -> None:
    """`seglab zoo train` runs the doctor first: no family may be refused (OCRNet's cascade
    heads, STDC's binary detail head and the rest)."""
    from seglab.config.loading import load_config
    from seglab.doctor.config_doctor import examine_config
    from seglab.doctor.rules.weights import MACHINE_STATE_RULES

    config = zoo.write_zoo_config(family.name, str(tmp_path / family.name))
    report = examine_config(load_config(config), str(config), gpus=8)
    # SETR reads pretrain/vit_large_p16.pth, a file the user converts: said, not the config's
    errors = [f for f in report.errors if f.rule not in MACHINE_STATE_RULES]
    assert not errors, [(f.rule, f.where, f.message) for f in errors]
    assert report.plan.total_iters == report.plan.max_iters  # mmseg's iteration schedules
