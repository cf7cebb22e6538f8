"""Config loading errors and the CPU adaptation of GPU-written configs, without training."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.config import Config

from seglab.config.adapt import adapt_to_device, fit_dataloader_workers
from seglab.config.loading import ConfigError, default_work_dir, load_config
from tests.conftest import ADE_DEMO, REPO_ROOT, VOC_DEMO, run_cli

GPU_CONFIG = """
model = dict(
    type='EncoderDecoder',
    backbone=dict(type='ResNetV1c', norm_cfg=dict(type='SyncBN', requires_grad=True)),
    decode_head=dict(type='UPerHead', norm_cfg=dict(type='SyncBN', requires_grad=True)),
    auxiliary_head=[dict(type='FCNHead', norm_cfg=dict(type='SyncBN'))])
optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic',
                     optimizer=dict(type='AdamW', lr=6e-5))
env_cfg = dict(dist_cfg=dict(backend='nccl'))
"""


def test_missing_config_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.py.*not found"):
        load_config(tmp_path / "nope.py")


def test_broken_config_names_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("model = dict(type='EncoderDecoder'\n")
    with pytest.raises(ConfigError, match="broken.py"):
        load_config(broken)


@pytest.mark.slow
def test_cli_reports_bad_config_without_traceback(tmp_path: Path) -> None:
    out = run_cli("train", str(tmp_path / "missing.py"))
    assert out.returncode == 2
    assert out.stderr.startswith("seglab: error: config file") and "Traceback" not in out.stderr


def test_cpu_adaptation_of_a_gpu_config(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    path = tmp_path / "gpu.py"
    path.write_text(GPU_CONFIG)
    cfg = Config.fromfile(str(path))
    notes = adapt_to_device(cfg, launcher="pytorch")
    assert cfg.env_cfg.dist_cfg.backend == "gloo"
    assert cfg.model_wrapper_cfg.type == "CPUAwareDDP"
    assert cfg.optim_wrapper.type == "OptimWrapper" and "loss_scale" not in cfg.optim_wrapper
    assert "SyncBN" not in cfg.pretty_text and cfg.pretty_text.count("type='BN'") == 3
    assert len(notes) == 4 and any("3 SyncBN" in n for n in notes)


def test_gpu_machine_leaves_the_config_alone(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    path = tmp_path / "gpu.py"
    path.write_text(GPU_CONFIG)
    cfg = Config.fromfile(str(path))
    before = cfg.pretty_text
    assert adapt_to_device(cfg, launcher="pytorch") == [] and cfg.pretty_text == before


@pytest.mark.slow
def test_data_root_override_reaches_every_dataset() -> None:
    voc_aug = REPO_ROOT / "configs" / "upernet" / "upernet_r50_voc12aug_v2.0.py"
    cfg = load_config(voc_aug, data_root="/data/voc")
    train_sets = cfg.train_dataloader.dataset.datasets  # VOC-aug: ConcatDataset(train, aug)
    roots = {d.data_root for d in train_sets} | {cfg.val_dataloader.dataset.data_root,
                                                 cfg.test_dataloader.dataset.data_root}
    assert len(train_sets) == 2 and roots == {"/data/voc"}
    assert "data_root" not in cfg.train_dataloader.dataset


@pytest.mark.slow
def test_demo_configs_resolve_to_their_datasets() -> None:
    voc, ade = load_config(VOC_DEMO), load_config(ADE_DEMO)
    assert voc.train_dataloader.dataset.type == "PascalVOCDataset"
    assert voc.model.decode_head.num_classes == 21
    assert ade.train_dataloader.dataset.type == "ADE20KDataset"
    assert ade.model.decode_head.num_classes == 150
    # epoch-based loops need a sampler that ends an epoch (seed 002's lost checkpoints)
    for cfg in (voc, ade):
        assert cfg.train_cfg.type == "EpochBasedTrainLoop"
        assert cfg.train_dataloader.sampler.type == "DefaultSampler"
    assert voc.custom_imports.imports == ["seglab.register"]
    assert default_work_dir(VOC_DEMO) == "work_dirs/segformer_mit-b0_synth-voc_v1.0"


def test_no_workers_turns_persistent_workers_off() -> None:
    cfg = Config(dict(
        train_dataloader=dict(num_workers=0, persistent_workers=True),
        val_dataloader=dict(num_workers=2, persistent_workers=True),
        test_dataloader=dict(persistent_workers=True)))  # torch's default: no workers
    notes = fit_dataloader_workers(cfg)
    assert cfg.train_dataloader.persistent_workers is False
    assert cfg.val_dataloader.persistent_workers is True
    assert cfg.test_dataloader.persistent_workers is False
    assert len(notes) == 2 and notes[0].startswith("train_dataloader.persistent_workers=False")
    assert fit_dataloader_workers(cfg) == []
    assert fit_dataloader_workers(Config(dict(val_dataloader=None))) == []


@pytest.mark.slow
def test_num_workers_0_override_builds_the_dataloaders(tmp_path: Path) -> None:
    """``--cfg-options train_dataloader.num_workers=0`` (the common debugging override)
    on a config whose dataloaders keep persistent workers: the prepare step shared by
    ``seglab train`` and ``seglab test`` turns them off, and every dataloader builds."""
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner
    from mmseg.utils import register_all_modules

    from seglab.data.synth import write_synth_dataset
    from seglab.engine.runner import _prepare

    register_all_modules(init_default_scope=False)
    root = write_synth_dataset("voc", tmp_path, num_train=4, num_val=2, seed=0).root
    options = {f"{name}.num_workers": 0 for name in ("train_dataloader", "val_dataloader",
                                                     "test_dataloader")}
    cfg = load_config(VOC_DEMO, options, data_root=str(root))
    assert cfg.train_dataloader.persistent_workers is True  # mmseg's dataset fragment
    with pytest.raises(ValueError, match="persistent_workers option needs num_workers > 0"):
        Runner.build_dataloader(copy.deepcopy(cfg.train_dataloader))
    notes = _prepare(cfg, "none")
    assert any(n.startswith("train_dataloader.persistent_workers=False") for n in notes)
    with DefaultScope.overwrite_default_scope("mmseg"):
        for name in ("train_dataloader", "val_dataloader", "test_dataloader"):
            loader = Runner.build_dataloader(cfg[name], seed=0)
            assert loader.num_workers == 0 and not loader.persistent_workers
            assert next(iter(loader))["inputs"], name


@pytest.mark.slow  # a subprocess CLI: not in make test-fast
def test_python_dash_m_seglab_is_the_cli() -> None:
    out = subprocess.run([sys.executable, "-m", "seglab", "--help"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: seglab") and "train" in out.stdout


def test_a_config_parsed_for_a_first_look_is_not_read_again(tmp_path, monkeypatch) -> None:
    """The CLI looks at the config before importing mmseg's models (which optional packages it
    needs); the full load takes that parse over, runs its custom_imports, and only once."""
    from seglab.config import loading

    (tmp_path / "extra_module_for_the_test.py").write_text("LOADED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "cfg.py"
    config.write_text(f"_base_ = [{str(VOC_DEMO)!r}]\n"
                      "custom_imports = dict(imports=['extra_module_for_the_test'])\n")
    first_look = loading.parse_for_load(config)
    assert "extra_module_for_the_test" not in sys.modules
    reads = []
    real = Config.fromfile
    monkeypatch.setattr(Config, "fromfile", lambda *a, **k: reads.append(a) or real(*a, **k))
    cfg = load_config(config, {"train_cfg.max_epochs": 3})
    assert reads == [] and "extra_module_for_the_test" in sys.modules
    assert cfg.train_cfg.max_epochs == 3 and cfg.model == first_look.model
    load_config(config)  # handed over once: a second load reads the file
    assert len(reads) == 1
