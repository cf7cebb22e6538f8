"""Every config in configs/ builds and trains; lineage diffs say what the seeds say.

Configs are collected from the tree, so a new config is tested without touching this file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from seglab.config.adapt import adapt_to_device
from seglab.config.diff import diff_configs
from seglab.config.loading import load_config
from seglab.testing.smoke import smoke_config
from tests.conftest import REPO_ROOT, run_cli

CONFIGS = sorted(p for p in (REPO_ROOT / "configs").rglob("*.py") if "_base_" not in p.parts)


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from seglab.data.synth import write_synth_dataset

    root = tmp_path_factory.mktemp("smoke_data")
    voc = write_synth_dataset("voc", root, num_train=4, num_val=2, seed=3, with_aug=True)
    ade = write_synth_dataset("ade20k", root, num_train=4, num_val=2, seed=3)
    return {"voc": str(voc.root), "ade20k": str(ade.root)}


def test_the_config_library_is_collected() -> None:
    names = {p.relative_to(REPO_ROOT / "configs").as_posix() for p in CONFIGS}
    assert {"upernet/upernet_r50_voc12_v1.0.py", "segformer/segformer_mit-b2_ade20k_v1.2.py",
            "demo/segformer_mit-b0_synth-voc_v1.0.py"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
@pytest.mark.slow
def test_config_builds_and_trains_two_iterations(config: Path, smoke_data, tmp_path) -> None:
    from mmengine.runner import Runner

    import seglab.register  # noqa: F401

    cfg = smoke_config(load_config(config), smoke_data, str(tmp_path))
    adapt_to_device(cfg, launcher="none")
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 2
    losses = runner.message_hub.get_scalar("train/loss").data[0]
    assert all(v == v and abs(v) < 1e6 for v in losses), losses  # finite


def test_ade20k_v1_0_to_v1_2_diff_is_exactly_the_seeds_changes() -> None:
    """Seed 000: v1.2 raised the LR, enabled AMP, clipped gradients, reweighted the
    losses and changed the warm-up/scheduler. Nothing else may differ."""
    segformer = REPO_ROOT / "configs" / "segformer"
    rows = diff_configs(load_config(segformer / "segformer_mit-b2_ade20k_v1.0.py"),
                        load_config(segformer / "segformer_mit-b2_ade20k_v1.2.py"))
    assert {key: (a, b) for key, a, b in rows} == {
        "learning_rate": (6e-06, 3e-05),
        "optim_wrapper.optimizer.lr": (6e-06, 3e-05),
        "optim_wrapper.type": ("OptimWrapper", "AmpOptimWrapper"),
        "optim_wrapper.loss_scale": ("<absent>", "dynamic"),
        "optim_wrapper.clip_grad.max_norm": ("<absent>", 10),
        "optim_wrapper.clip_grad.norm_type": ("<absent>", 2),
        "model.decode_head.loss_decode.0.loss_weight": (0.7, 0.5),
        "model.decode_head.loss_decode.1.loss_weight": (1.3, 1.0),
        "param_scheduler.0.start_factor": (1e-07, 1e-06),
        "param_scheduler.1.end": (201, 200),
    }


UPERNET = REPO_ROOT / "configs" / "upernet"
# seed 002/003's CheckpointHook: every 10 epochs; v1.0 keeps all (max_keep_ckpts unset), v2.0 3
UPERNET_SEED_CHECKPOINTS = {"upernet_r50_voc12_v1.0.py": -1, "upernet_r50_voc12aug_v2.0.py": 3}


@pytest.mark.parametrize("name", sorted(UPERNET_SEED_CHECKPOINTS))
def test_upernet_seed_configs_step_polylr_per_epoch(name: str) -> None:
    """The seeds' UPerNet runs step PolyLR once per epoch (v2's comment: by_epoch "must be
    True, so that the LR is updated per epoch") and keep no best checkpoint."""
    cfg = load_config(UPERNET / name)
    (poly,) = cfg.param_scheduler
    assert poly.type == "PolyLR" and poly.by_epoch is True
    assert "convert_to_iter_based" not in poly
    assert (poly.begin, poly.end, poly.power, poly.eta_min) == (0, 200, 0.9, 1e-4)
    assert cfg.train_cfg.max_epochs == 200
    checkpoint = cfg.default_hooks.checkpoint
    assert checkpoint.by_epoch is True and checkpoint.interval == 10
    assert checkpoint.get("max_keep_ckpts", -1) == UPERNET_SEED_CHECKPOINTS[name]
    assert checkpoint.get("save_best") is None


@pytest.mark.slow
@pytest.mark.parametrize("seed,variant", [("upernet_r50_voc12_v1.0", "upernet_r50_voc12_v1.1"),
                                          ("upernet_r50_voc12aug_v2.0",
                                           "upernet_r50_voc12aug_v2.1")])
def test_upernet_per_iteration_variants_change_only_schedule_and_best(seed: str,
                                                                      variant: str) -> None:
    rows = diff_configs(load_config(UPERNET / f"{seed}.py"), load_config(UPERNET / f"{variant}.py"))
    expected = {"param_scheduler.0.convert_to_iter_based": ("<absent>", True),
                "default_hooks.checkpoint.save_best": ("<absent>", "mIoU"),
                "default_hooks.checkpoint.rule": ("<absent>", "greater")}
    if seed.endswith("v1.0"):  # the seed kept every checkpoint
        expected["default_hooks.checkpoint.max_keep_ckpts"] = ("<absent>", 3)
    assert {key: (a, b) for key, a, b in rows} == expected


@pytest.mark.slow
def test_config_diff_and_show_cli() -> None:
    a = "configs/upernet/upernet_r50_voc12_v1.0.py"
    b = "configs/upernet/upernet_r50_voc12aug_v2.0.py"
    out = run_cli("config", "diff", a, b)
    assert out.returncode == 0, out.stderr
    assert "optim_wrapper.optimizer.lr: 0.01 -> 0.005" in out.stdout
    assert "train_dataloader.dataset.type: 'PascalVOCDataset' -> 'ConcatDataset'" in out.stdout
    show = run_cli("config", "show", b, "--cfg-options", "train_cfg.max_epochs=3")
    assert show.returncode == 0 and "max_epochs=3" in show.stdout
