"""Seed 004's zoo: every one of the 29 families trains 2 iterations on CPU (mmdet and
mmpretrain come with the ``zoo`` extra, which ``make env`` installs), or names the package
it needs."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from seglab.config import zoo
from seglab.config.adapt import adapt_to_device
from seglab.config.diff import flatten_config
from seglab.errors import UserError
from tests.conftest import REPO_ROOT, run_cli

pytestmark = pytest.mark.zoo

ITERATIONS = 2
# smoke.py's 64x64 crop: at the deepest stride (32) 2x2 features remain. Batch 2, not 1: the
# pooling branches (PSP, ASPP, ...) put batch norm over 1x1 maps, which cannot train on one
# image. smoke_config keeps every architecture (depth, width) as mmseg's config writes it.
CROP, BATCH = (64, 64), 2


@pytest.fixture(scope="module")
def ade_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One tiny ADE20K-layout dataset for all 29 families (written once)."""
    from seglab.data.synth import write_synth_dataset

    root = tmp_path_factory.mktemp("zoo_ade20k")
    summary = write_synth_dataset("ade20k", root, num_train=ITERATIONS * BATCH, num_val=1,
                                  seed=4)
    return {"ade20k": str(summary.root)}


def _build(cfg):
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import seglab.register  # noqa: F401
    from seglab.config.walk import strip_pretrained

    init_default_scope("mmseg")
    strip_pretrained(cfg.model)
    adapt_to_device(cfg, "none")
    return MODELS.build(cfg.model)


def _predict(model) -> torch.Tensor:
    from mmseg.structures import SegDataSample

    image = torch.randint(0, 255, (3, *CROP), dtype=torch.uint8)
    sample = SegDataSample(metainfo=dict(img_shape=CROP, ori_shape=CROP, pad_shape=CROP))
    with torch.no_grad():
        return model.eval().test_step(dict(inputs=[image], data_samples=[sample]))[0] \
            .pred_sem_seg.data


def _trainable(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def test_the_zoo_has_the_seeds_29_families() -> None:
    assert len(zoo.FAMILIES) == 29 == len({f.name for f in zoo.FAMILIES})


def test_make_env_installs_the_zoo_extra_with_the_zoo_pins() -> None:
    """CI (make test -> make env) gets mmdet and mmpretrain, at the versions zoo.py names."""
    from seglab.platform.install import DEFAULT_EXTRAS, tomllib

    assert zoo.OPTIONAL_EXTRA in DEFAULT_EXTRAS.split(",")
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert set(zoo.OPTIONAL_PACKAGES.values()) <= set(extras[zoo.OPTIONAL_EXTRA])
    assert {p for f in zoo.FAMILIES for p in f.needs} == set(zoo.OPTIONAL_PACKAGES)


@pytest.mark.parametrize("family", [f for f in zoo.FAMILIES if f.needs], ids=lambda f: f.name)
def test_a_family_without_its_package_names_the_pip_command(
        family: zoo.Family, monkeypatch: pytest.MonkeyPatch) -> None:
    for package in family.needs:  # None in sys.modules: find_spec says not installed
        monkeypatch.setitem(sys.modules, package, None)
    assert zoo.missing_packages(family) == list(family.needs)
    pin = zoo.OPTIONAL_PACKAGES[family.needs[0]]
    with pytest.raises(UserError, match=f"needs {family.needs[0]}.*pip install {pin}.*'zoo' extra"):
        zoo.zoo_config(family.name)
    assert f"needs {family.needs[0]}" in dict((r[0], r[3]) for r in zoo.list_rows())[family.name]


@pytest.mark.parametrize("family", zoo.FAMILIES, ids=lambda f: f.name)
@pytest.mark.slow
def test_family_trains_two_iterations_on_cpu(family: zoo.Family, ade_data, tmp_path) -> None:
    from mmengine.config import Config
    from mmengine.hooks import Hook
    from mmengine.runner import Runner
    from mmengine.runner.checkpoint import _load_checkpoint

    import seglab.register  # noqa: F401
    from seglab.config.walk import leaf_datasets
    from seglab.testing.smoke import smoke_config

    missing = zoo.missing_packages(family)
    if missing:
        pytest.skip(f"{family.name} needs {', '.join(missing)}, not installed here: "
                    f"install seglab's {zoo.OPTIONAL_EXTRA!r} extra (make env)")
    cfg = zoo.zoo_config(family.name)
    # the seed's unified settings
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.train_cfg.val_interval == 4000
    assert cfg.default_hooks.checkpoint.interval == 4000
    assert cfg.default_hooks.checkpoint.max_keep_ckpts == 3
    assert tuple(cfg.model.data_preprocessor.size) == (512, 512)
    # PoolFormer's config wraps ADE20K in a RepeatDataset
    assert {d.type for d in leaf_datasets(cfg.train_dataloader.dataset)} == {"ADE20KDataset"}
    num_classes = {v for k, v in flatten_config(cfg.model).items() if k.endswith("num_classes")}
    assert 150 in num_classes and num_classes <= {150, 2}  # 2: STDC's boundary head

    smoke_config(cfg, ade_data, str(tmp_path), iterations=ITERATIONS, batch_size=BATCH,
                 crop=CROP, validate=False)
    cfg.default_hooks.checkpoint.update(interval=1, save_optimizer=False,
                                        save_param_scheduler=False)
    cfg.log_level = "WARNING"
    adapt_to_device(cfg, launcher="none")
    # mmengine formats the config with yapf each time it logs or saves it (5 times a run,
    # ~1 s each: a third of this test's time); the text stays valid Python without it
    cfg = Config(cfg.to_dict(), filename=cfg.filename, format_python_code=False)
    runner = Runner.from_cfg(cfg)
    initial: dict[str, torch.Tensor] = {}

    class _Initial(Hook):  # after init_weights, before the first step
        def before_train(self, runner) -> None:
            initial.update(_trainable(runner.model))

    runner.register_hook(_Initial(), priority="LOWEST")
    runner.train()

    assert runner.iter == ITERATIONS
    losses = runner.message_hub.get_scalar("train/loss").data[0]
    assert len(losses) == ITERATIONS and all(math.isfinite(v) for v in losses), losses
    final = _trainable(runner.model)
    assert final.keys() == initial.keys()
    changed = {name for name in final if not torch.equal(final[name], initial[name])}
    parts = {name.split(".")[0] for name in final}  # backbone, decode_head, neck, ...
    assert parts >= {"backbone", "decode_head"}
    assert {name.split(".")[0] for name in changed} == parts, sorted(set(final) - changed)
    initial.clear()  # SETR's ViT-L: 1.2 GB a copy

    checkpoint = _load_checkpoint(str(tmp_path / "epoch_1.pth"), map_location="cpu")
    assert checkpoint["meta"]["iter"] == ITERATIONS
    state = runner.model.state_dict()
    assert checkpoint["state_dict"].keys() == state.keys()
    assert all(torch.equal(checkpoint["state_dict"][k], state[k]) for k in changed)
    del checkpoint

    prediction = _predict(runner.model)
    assert prediction.shape == (1, *CROP)
    assert 0 <= int(prediction.min()) and int(prediction.max()) < 150


@pytest.mark.parametrize("family", [f for f in zoo.FAMILIES if f.needs], ids=lambda f: f.name)
def test_declared_optional_packages_are_really_needed(family: zoo.Family, monkeypatch) -> None:
    """Without seglab's check the build fails deep inside mmseg (for MaskFormer with a
    bare ``TypeError: BaseModule.__init__() got an unexpected keyword argument``)."""
    if not zoo.missing_packages(family):
        pytest.skip(f"{', '.join(family.needs)} installed here; this is the venv without "
                    f"seglab's {zoo.OPTIONAL_EXTRA!r} extra")
    monkeypatch.setattr(zoo, "require_packages", lambda f: None)
    with pytest.raises((ImportError, TypeError, KeyError)):
        _predict(_build(zoo.zoo_config(family.name)))


@pytest.mark.slow  # a subprocess CLI: not in make test-fast
def test_zoo_cli_lists_families_and_refuses_clearly() -> None:
    listing = run_cli("zoo", "list")
    assert listing.returncode == 0
    rows = {ln.split()[0]: ln for ln in listing.stdout.splitlines()[1:] if ln.strip()}
    assert len(rows) == 29
    for family in zoo.FAMILIES:  # with the zoo extra (make env) all 29 are ready
        missing = zoo.missing_packages(family)
        status = rows[family.name].split(family.config, 1)[1].strip()
        assert status == (f"needs {', '.join(missing)}" if missing else "ready"), status
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


@pytest.mark.parametrize("family", zoo.FAMILIES, ids=lambda f: f.name)
def test_zoo_configs_pass_the_doctor(family: zoo.Family, tmp_path) -> None:
    """`seglab zoo train` runs the doctor first: no family may be refused (OCRNet's cascade
    heads, STDC's binary detail head and the rest)."""
    if zoo.missing_packages(family):
        pytest.skip(f"{family.name} needs {', '.join(zoo.missing_packages(family))}, not "
                    f"installed here: install seglab's {zoo.OPTIONAL_EXTRA!r} extra (make env)")
    from seglab.config.loading import load_config
    from seglab.doctor.config_doctor import examine_config
    from seglab.doctor.rules.weights import MACHINE_STATE_RULES

    config = zoo.write_zoo_config(family.name, str(tmp_path / family.name))
    report = examine_config(load_config(config), str(config), gpus=8)
    # SETR reads pretrain/vit_large_p16.pth, a file the user converts: said, not the config's
    errors = [f for f in report.errors if f.rule not in MACHINE_STATE_RULES]
    assert not errors, [(f.rule, f.where, f.message) for f in errors]
    assert report.plan.total_iters == report.plan.max_iters  # mmseg's iteration schedules
