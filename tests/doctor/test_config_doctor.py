"""``seglab doctor CONFIG``: every seed mistake, written as a config, is caught by its rule.

Mistake configs inherit the repository's configs by absolute path and change
only what the seed changed, so a rule that stops firing (or fires on the fixed
configs) fails here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from seglab.config.loading import ConfigError, load_config
from seglab.doctor.config_doctor import examine_config
from seglab.doctor.recipes import RECIPES, load_recipe
from seglab.doctor.rules.weights import MACHINE_STATE_RULES
from tests.conftest import REPO_ROOT, VOC_DEMO, run_cli, short_run

CONFIGS = REPO_ROOT / "configs"
ADE_V1 = CONFIGS / "segformer" / "segformer_mit-b2_ade20k_v1.0.py"
UPERNET_VOC = CONFIGS / "upernet" / "upernet_r50_voc12_v1.0.py"
UPERNET_AUG = CONFIGS / "upernet" / "upernet_r50_voc12aug_v2.0.py"
VOC_FINETUNE = CONFIGS / "segformer" / "segformer_mit-b2_voc12aug_v3.0.py"
# the seeds' final configs: what each line ended with
FIXED = [CONFIGS / "segformer" / "segformer_mit-b2_ade20k_v1.3.py", VOC_FINETUNE, UPERNET_AUG]
ALL_CONFIGS = sorted(p for p in CONFIGS.rglob("*.py") if "_base_" not in p.parts)


def write_config(tmp_path: Path, base: Path, body: str, name: str = "mistake.py") -> Path:
    path = tmp_path / name
    path.write_text(f"_base_ = [{str(base)!r}]\n{body}\n")
    return path


def rules(path: Path, gpus: int | None = None, **options) -> dict[str, str]:
    """rule -> severity of each finding for the config at ``path``."""
    report = examine_config(load_config(path, options or None), str(path), gpus)
    return {f.rule: f.severity for f in report.findings}


def test_seed000_v1_lr_far_below_the_recipe() -> None:
    report = examine_config(load_config(ADE_V1), str(ADE_V1))
    finding = next(f for f in report.findings if f.rule == "lr-vs-recipe")
    assert finding.severity == "warning" and finding.where == "optim_wrapper.optimizer.lr"
    assert "0.27x" in finding.message and "2.25e-05" in finding.fix
    plan = report.plan  # ADE20K 20,210 images, 3 GPUs x 2, 200 epochs, 20 warm-up epochs
    assert (plan.train_images, plan.train_images_source) == (20210, "published")
    assert plan.total_batch == 6 and plan.iters_per_epoch == 3369
    assert plan.total_iters == 200 * 3369 and plan.images_seen == 200 * 3369 * 6
    assert plan.warmup_iters == 20 * 3369
    assert plan.recipe.lr == 6e-5 and plan.recipe.total_batch == 16
    assert plan.recipe.images == 160_000 * 16


def test_seed000_v1_1_finetune_at_from_scratch_lr() -> None:
    found = rules(CONFIGS / "segformer" / "segformer_mit-b2_ade20k_v1.1.py")
    assert found["finetune-lr"] == "warning"
    assert found["load-from-and-init-cfg"] == "warning"


def test_finetune_lr_is_judged_against_the_checkpoints_last_lr(tmp_path: Path) -> None:
    ckpt = tmp_path / "epoch_120.pth"
    torch.save({"meta": {"epoch": 120, "iter": 400_000},
                "optimizer": {"param_groups": [{"lr": 1e-6}]}}, ckpt)
    body = f"load_from = {str(ckpt)!r}\noptim_wrapper = dict(optimizer=dict(lr=6e-6))"
    report = examine_config(load_config(write_config(tmp_path, VOC_FINETUNE, body)), "x")
    finding = next(f for f in report.findings if f.rule == "finetune-lr")
    assert "above the checkpoint's last LR 1e-06" in finding.message


def test_seed000_v1_2_fp16_amp_with_focal_dice() -> None:
    found = rules(CONFIGS / "segformer" / "segformer_mit-b2_ade20k_v1.2.py")
    assert found["amp-losses"] == "warning"
    assert "amp-losses" not in rules(CONFIGS / "segformer" / "segformer_mit-b2_ade20k_v1.2.py",
                                     **{"optim_wrapper.dtype": "bfloat16"})


@pytest.mark.slow
def test_seed001_v3_resume_in_the_config_ignores_the_new_schedule(tmp_path: Path) -> None:
    saved_cfg = load_config(CONFIGS / "segformer" / "segformer_mit-b2_voc12aug_v2.0.py")
    ckpt = tmp_path / "epoch_200.pth"
    torch.save({"meta": {"cfg": saved_cfg.pretty_text, "epoch": 200, "iter": 117_600},
                "optimizer": {"param_groups": [{"lr": 1e-9}]}}, ckpt)
    path = write_config(tmp_path, VOC_FINETUNE, f"resume = True\nload_from = {str(ckpt)!r}")
    report = examine_config(load_config(path), str(path))
    finding = next(f for f in report.findings if f.rule == "resume-in-config")
    assert finding.severity == "warning" and finding.where == "resume"
    assert "optim_wrapper.optimizer.lr: 6e-05 -> 6e-06 (IGNORED" in finding.message
    assert "--finetune-from" in finding.fix
    assert "resume-in-config" not in rules(VOC_FINETUNE)


@pytest.mark.slow
def test_seed002_epoch_loop_over_an_infinite_sampler(tmp_path: Path) -> None:
    path = write_config(tmp_path, UPERNET_VOC,
                        "train_dataloader = dict(sampler=dict(type='InfiniteSampler'))")
    assert rules(path)["sampler-loop"] == "error"
    result = run_cli("doctor", str(path))
    assert result.returncode == 1, result.stderr
    assert "ERROR [sampler-loop] train_dataloader.sampler.type" in result.stdout
    assert "DefaultSampler" in result.stdout


@pytest.mark.slow
def test_seed003_torchvision_weights_into_resnet_v1c_and_hand_scaled_lr(tmp_path: Path) -> None:
    found = rules(UPERNET_AUG)
    assert found["pretrained-arch"] == "warning"
    assert found["lr-hand-scaled"] == "info"
    assert rules(UPERNET_AUG, gpus=4)["lr-world-size"] == "warning"
    twice = rules(UPERNET_AUG, **{"auto_scale_lr.enable": True})
    assert twice["lr-scaled-twice"] == "error"


def config_rules(config: Path) -> dict[str, str]:
    """The findings on the config itself: the seeds' converted MiT-B2 weights are made by
    `seglab weights convert`, which this checkout has not run."""
    return {r: s for r, s in rules(config).items() if r not in MACHINE_STATE_RULES}


@pytest.mark.parametrize("config", FIXED, ids=lambda p: p.stem)
def test_the_seeds_fixed_configs_have_no_errors(config: Path) -> None:
    assert "error" not in config_rules(config).values()


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=lambda p: p.stem)
def test_no_config_in_the_library_has_errors(config: Path) -> None:
    assert "error" not in config_rules(config).values()


def test_a_missing_pretrained_file_names_the_command_that_makes_it(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the seed config's checkpoints/ path is read from here
    report = examine_config(load_config(ADE_V1), str(ADE_V1))
    finding = next(f for f in report.findings if f.rule == "pretrained-missing")
    assert finding.severity == "error"
    assert finding.where == "model.backbone.init_cfg.checkpoint"
    assert "seglab weights convert nvidia/mit-b2 --to checkpoints/mit_b2_converted_from_hf.pth" \
        in finding.fix
    fetched = write_config(tmp_path, ADE_V1, "model = dict(backbone=dict(init_cfg=dict("
                           "checkpoint='checkpoints/mit_b2_20220624-66e8bf70.pth')))")
    assert "seglab weights fetch mit-b2" in next(
        f.fix for f in examine_config(load_config(fetched), str(fetched)).findings
        if f.rule == "pretrained-missing")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "mit_b2_converted_from_hf.pth").write_bytes(b"weights")
    assert "pretrained-missing" not in rules(ADE_V1)


MISTAKES = {  # rule -> (base config, the mistake)
    "val-interval": (UPERNET_VOC, "train_cfg = dict(val_begin=300)"),
    "save-best-key": (UPERNET_VOC, "default_hooks = dict(checkpoint=dict(save_best='mDice'))"),
    "num-classes": (UPERNET_VOC, "model = dict(auxiliary_head=dict(num_classes=150))"),
    "reduce-zero-label": (ADE_V1, "train_dataloader = dict(dataset=dict(reduce_zero_label=False))"),
    "pretrained-and-init-cfg": (UPERNET_AUG, "model = dict(pretrained='open-mmlab://resnet50')"),
    "loss-ignore-index": (ADE_V1, "model = dict(decode_head=dict(loss_decode=["
                          "dict(type='FocalLoss', use_sigmoid=True), "
                          "dict(type='DiceLoss', ignore_index=0)]))"),
    "scheduler-by-epoch": (UPERNET_VOC, "train_cfg = dict(_delete_=True, type="
                           "'IterBasedTrainLoop', max_iters=1000, val_interval=100)"),
    "checkpoint-by-epoch": (UPERNET_VOC, "train_cfg = dict(_delete_=True, type="
                            "'IterBasedTrainLoop', max_iters=1000, val_interval=100)"),
}


@pytest.mark.parametrize("rule", sorted(MISTAKES))
@pytest.mark.slow
def test_common_mistakes_are_errors_naming_their_key(rule: str, tmp_path: Path) -> None:
    base, body = MISTAKES[rule]
    path = write_config(tmp_path, base, body)
    report = examine_config(load_config(path), str(path))
    finding = next(f for f in report.findings if f.rule == rule)
    assert finding.severity == "error" and finding.fix
    assert "error" not in config_rules(base).values()


def test_warnings_for_long_intervals_loss_names_and_short_schedules(tmp_path: Path) -> None:
    body = ("train_cfg = dict(val_interval=500)\n"
            "default_hooks = dict(checkpoint=dict(interval=500))\n"
            "model = dict(decode_head=dict(loss_decode=["
            "dict(type='FocalLoss', use_sigmoid=True, loss_name='loss_x'), "
            "dict(type='DiceLoss', loss_name='loss_x')]))\n"
            "param_scheduler = [dict(type='PolyLR', by_epoch=True, begin=0, end=100)]")
    found = rules(write_config(tmp_path, ADE_V1, body))
    assert found["val-interval"] == "warning"
    assert found["checkpoint-interval"] == "warning"
    assert found["loss-name"] == "warning"
    assert found["scheduler-end"] == "warning"  # decays in 100 of 200 epochs


def test_plan_counts_the_data_that_is_there_and_applies_auto_scale_lr(voc_root: Path) -> None:
    cfg = load_config(VOC_DEMO, {"auto_scale_lr.enable": True}, str(voc_root))
    plan = examine_config(cfg, str(VOC_DEMO), gpus=2).plan
    images = len((voc_root / "ImageSets" / "Segmentation" / "train.txt").read_text().split())
    assert (plan.train_images, plan.train_images_source) == (images, "counted")
    per_rank = math.ceil(images / 2)
    assert plan.iters_per_epoch == math.ceil(per_rank / cfg.train_dataloader.batch_size)
    assert plan.effective_lr == pytest.approx(cfg.optim_wrapper.optimizer.lr * 2 * 8 / 16)


@pytest.mark.slow
def test_doctor_json_and_exit_code(seed_weights_cwd: Path) -> None:
    out = seed_weights_cwd / "report.json"
    result = run_cli("doctor", str(ADE_V1), "--json", str(out), cwd=seed_weights_cwd)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["plan"]["iters_per_epoch"] == 3369
    assert any(f["rule"] == "lr-vs-recipe" for f in report["findings"])


@pytest.mark.slow
def test_train_refuses_doctor_errors_before_building(voc_root: Path, tmp_path: Path) -> None:
    from seglab.engine.runner import train

    run = short_run(voc_root, 1)
    run["cfg_options"]["train_cfg.val_begin"] = 5
    with pytest.raises(ConfigError, match=r"(?s)\[val-interval\] train_cfg.val_begin.*"
                       "--ignore-doctor-errors"):
        train(str(VOC_DEMO), work_dir=str(tmp_path / "refused"), **run)
    assert not (tmp_path / "refused").exists()
    run["cfg_options"]["train_dataloader.dataset.indices"] = 16
    train(str(VOC_DEMO), work_dir=str(tmp_path / "forced"), ignore_doctor_errors=True, **run)
    assert (tmp_path / "forced" / "epoch_1.pth").is_file()


@pytest.mark.slow
def test_a_run_without_validation_is_examined(tmp_path: Path) -> None:
    body = ("val_dataloader = None\nval_cfg = None\nval_evaluator = None\n"
            "default_hooks = dict(checkpoint=dict(save_best=None))")
    report = examine_config(load_config(write_config(tmp_path, UPERNET_VOC, body)), "x")
    assert report.plan.val_every == "no validation" and not report.errors


@pytest.mark.parametrize("relative", sorted(set(RECIPES.values())))
def test_every_recipe_is_a_config_mmseg_ships(relative: str) -> None:
    recipe = load_recipe(relative)
    assert recipe.lr > 0 and recipe.total_batch == 16 and recipe.max_iters >= 40_000
