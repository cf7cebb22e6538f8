"""End-to-end on CPU: train, evaluate, resume, distributed ranks, the test table, tmux."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mmengine.optim import PolyLR

from seglab.config.loading import ConfigError
from seglab.engine import runner as engine
from tests.conftest import (
    ADE_DEMO,
    REPO_ROOT,
    TINY_SUBSET,
    TINY_TRAIN_IMAGES,
    TRAIN_IMAGES,
    VAL_IMAGES,
    VOC_DEMO,
    run_cli,
    short_run,
)

VOC_CLASSES = 21
# A model that predicts only background scores ~0.9/21 = 4 mIoU; the demo
# reached 39.9 in 2 epochs when tuned, so 20 is 5x chance with a 2x margin.
MIN_MIOU_AFTER_TWO_EPOCHS = 20.0
BATCH = 8


def iters_per_epoch(images: int, world_size: int = 1) -> int:
    per_rank = -(-images // world_size)
    return -(-per_rank // BATCH)


def _optimizer_steps(runner) -> set[int]:
    state = runner.optim_wrapper.optimizer.state
    return {int(s["step"]) for s in state.values()}


@pytest.mark.slow
def test_voc_demo_learns_in_two_epochs(voc_two_epochs, voc_root) -> None:
    runner, work_dir = voc_two_epochs
    assert runner.epoch == 2
    metrics = engine.test(str(VOC_DEMO), str(Path(work_dir) / "epoch_2.pth"),
                          work_dir=str(work_dir), **short_run(voc_root, 2))
    assert metrics["mIoU"] > MIN_MIOU_AFTER_TWO_EPOCHS, metrics


@pytest.mark.slow
def test_ade20k_layout_with_reduce_zero_label_learns(ade_root, tmp_path) -> None:
    runner = engine.train(str(ADE_DEMO), work_dir=str(tmp_path),
                   **short_run(ade_root, 2))
    dataset = runner.train_dataloader.dataset
    assert dataset.reduce_zero_label and len(dataset.metainfo["classes"]) == 150
    metrics = engine.test(str(ADE_DEMO), str(tmp_path / "epoch_2.pth"), work_dir=str(tmp_path),
                          **short_run(ade_root, 2))
    assert metrics["mIoU"] > MIN_MIOU_AFTER_TWO_EPOCHS, metrics


@pytest.mark.slow
def test_resume_continues_at_epoch_three_with_restored_state(voc_two_epochs, voc_root,
                                                             tmp_path) -> None:
    _, first_run = voc_two_epochs
    work_dir = tmp_path / "run"
    shutil.copytree(first_run, work_dir, ignore=shutil.ignore_patterns("2*"))
    (work_dir / "last_checkpoint").write_text(str(work_dir / "epoch_2.pth"))
    ipe = iters_per_epoch(TRAIN_IMAGES)
    # the third epoch over the tiny subset: what is restored is the point, not its length
    run = short_run(voc_root, 3)
    run["cfg_options"].update(TINY_SUBSET)
    runner = engine.train(str(VOC_DEMO), work_dir=str(work_dir), resume=True, **run)
    steps = 2 * ipe + iters_per_epoch(TINY_TRAIN_IMAGES)
    assert runner.epoch == 3 and runner.iter == steps
    # AdamW's per-parameter step counts and the PolyLR schedule's position carry
    # on from the checkpoint: a fresh optimizer or scheduler would count from 0.
    assert _optimizer_steps(runner) == {steps}
    poly = runner.param_schedulers[-1]
    assert isinstance(poly, PolyLR) and poly.last_step == steps
    saved = torch.load(work_dir / "epoch_2.pth", weights_only=False)
    assert saved["meta"]["iter"] == 2 * ipe


@pytest.mark.slow
def test_resume_without_a_checkpoint_is_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no loadable checkpoint found"):
        engine.train(str(VOC_DEMO), work_dir=str(tmp_path), resume=True)


@pytest.mark.slow
def test_new_run_over_existing_checkpoints_is_refused(tmp_path) -> None:
    (tmp_path / "epoch_1.pth").write_bytes(b"a user's checkpoint")
    out = run_cli("train", str(VOC_DEMO), "--work-dir", str(tmp_path))
    assert out.returncode == 2
    assert "already holds checkpoints" in out.stderr and "--resume" in out.stderr
    assert (tmp_path / "epoch_1.pth").read_bytes() == b"a user's checkpoint"


def _parse_table(stdout: str) -> tuple[list[str], list[float], float]:
    """Rows of mmseg's per-class table and the mIoU from the summary line."""
    table = stdout[stdout.index("per class results:"):]
    rows = re.findall(r"^\|\s*([^|]+?)\s*\|\s*([\d.]+|nan)\s*\|\s*([\d.]+|nan)\s*\|$",
                      table, flags=re.M)
    names = [r[0] for r in rows]
    ious = [float(r[1]) for r in rows]
    miou = float(re.search(r"mIoU: ([\d.]+)", table).group(1))
    return names, ious, miou


@pytest.mark.slow
def test_cli_test_prints_per_class_table_and_saves_every_overlay(voc_two_epochs, voc_root) -> None:
    from mmseg.datasets import PascalVOCDataset

    _, work_dir = voc_two_epochs
    out = run_cli("test", str(VOC_DEMO), str(Path(work_dir) / "epoch_2.pth"),
                  "--work-dir", str(work_dir), "--data-root", str(voc_root), "--show-dir", "vis")
    assert out.returncode == 0, out.stderr[-3000:]
    # --show-dir keeps an overlay of every test image, not every 50th.
    overlays = list((Path(work_dir) / "vis").rglob("*.png"))
    assert len(overlays) == VAL_IMAGES
    assert f"{VAL_IMAGES} prediction overlays saved in {work_dir}/vis" in out.stdout
    test_record = json.loads((Path(work_dir) / "class_metrics" / "test.json").read_text())
    assert test_record["mode"] == "test" and len(test_record["classes"]) == VOC_CLASSES
    names, ious, miou = _parse_table(out.stdout)
    assert names == list(PascalVOCDataset.METAINFO["classes"])
    valid = [v for v in ious if v == v]
    # per-class values and mIoU are each rounded to 2 decimals by mmseg
    assert abs(sum(valid) / len(valid) - miou) <= 0.01


@pytest.mark.slow
def test_dist_train_runs_two_cpu_ranks(voc_root, tmp_path) -> None:
    env = {**os.environ, "PORT": "29517", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        ["bash", str(REPO_ROOT / "tools" / "dist_train.sh"), str(VOC_DEMO), "2",
         "--work-dir", str(tmp_path), "--data-root", str(voc_root),
         "--cfg-options", "train_cfg.max_epochs=1", "train_cfg.val_interval=2",
         *(f"{key}={value}" for key, value in TINY_SUBSET.items())],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    state = torch.load(tmp_path / "epoch_1.pth", weights_only=False)
    # The sampler split the data over 2 ranks: an epoch took half the steps of one
    # process. Every step all-reduces gradients across both ranks (DDP), so the run
    # could only finish if both ranks took every step.
    assert state["meta"]["iter"] == iters_per_epoch(TINY_TRAIN_IMAGES, world_size=2)
    assert "dist_cfg=dict(backend='gloo')" in state["meta"]["cfg"]
    # each rank's random streams, gathered while every rank was there (the save is rank 0's)
    assert len(state["seglab_rng_state"]["ranks"]) == 2


@pytest.mark.slow
def test_dist_test_on_two_ranks_matches_single_process(voc_two_epochs, voc_root) -> None:
    _, work_dir = voc_two_epochs
    checkpoint = str(Path(work_dir) / "epoch_2.pth")
    run = short_run(voc_root, 2)  # 8 test images: 4 a rank
    run["cfg_options"]["test_dataloader.dataset.indices"] = 8
    single = engine.test(str(VOC_DEMO), checkpoint, work_dir=str(work_dir), **run)
    env = {**os.environ, "PORT": "29518", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        ["bash", str(REPO_ROOT / "tools" / "dist_test.sh"), str(VOC_DEMO), checkpoint, "2",
         "--work-dir", str(work_dir), "--data-root", str(voc_root),
         "--cfg-options", "test_dataloader.dataset.indices=8"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    names, _, miou = _parse_table(out.stdout)
    assert len(names) == VOC_CLASSES
    assert miou == pytest.approx(single["mIoU"], abs=0.01)


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(1)


@pytest.mark.slow
def test_tmux_session_runs_training_and_logs_under_work_dir(voc_root, tmp_path) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    session = "seglab_segformer_mit-b0_synth-voc_v1-0"
    subprocess.run(["tmux", "kill-session", "-t", f"={session}"], capture_output=True)
    out = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "tmux_train.sh"), str(VOC_DEMO), "1",
         "--work-dir", str(tmp_path), "--data-root", str(voc_root),
         "--cfg-options", "train_cfg.max_epochs=1", "default_hooks.logger.interval=1",
         *(f"{key}={value}" for key, value in TINY_SUBSET.items())],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    try:
        assert out.returncode == 0, out.stderr
        assert f"tmux attach -t {session}" in out.stdout and "--resume" in out.stdout
        log = tmp_path / "tmux_train.log"
        _wait_for(lambda: log.exists() and "Epoch(train)" in log.read_text(), 300,
                  "training output in the tmux log")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", f"={session}"], capture_output=True)


@pytest.mark.slow
def test_resume_with_a_new_lr_says_it_is_ignored(voc_two_epochs, voc_root, tmp_path) -> None:
    _, first_run = voc_two_epochs
    work_dir = tmp_path / "run"
    shutil.copytree(first_run, work_dir, ignore=shutil.ignore_patterns("2*"))
    (work_dir / "last_checkpoint").write_text(str(work_dir / "epoch_2.pth"))
    out = run_cli("train", str(VOC_DEMO), "--work-dir", str(work_dir), "--resume",
                  "--data-root", str(voc_root), "--cfg-options", "train_cfg.max_epochs=2",
                  "optim_wrapper.optimizer.lr=0.01")
    assert out.returncode == 0, out.stderr[-2000:]
    assert ("optim_wrapper.optimizer.lr: 0.001 -> 0.01 (IGNORED: restored from the checkpoint)"
            in out.stdout)
    assert "--finetune-from" in out.stdout


@pytest.mark.slow
def test_finetune_from_starts_fresh_with_the_new_lr(voc_two_epochs, voc_root, tmp_path) -> None:
    _, first_run = voc_two_epochs
    new_lr = 2e-4  # below the checkpoint's last LR: no warning expected
    runner = engine.train(str(VOC_DEMO), work_dir=str(tmp_path), data_root=str(voc_root),
                          cfg_options={"train_cfg.max_epochs": 1,
                                       "optim_wrapper.optimizer.lr": new_lr, **TINY_SUBSET},
                          finetune_from=str(Path(first_run) / "epoch_2.pth"))
    ipe = iters_per_epoch(TINY_TRAIN_IMAGES)
    assert runner.epoch == 1 and runner.iter == ipe  # counted from 0, not from epoch 2
    assert _optimizer_steps(runner) == {ipe}  # a fresh AdamW
    group_lrs = {g["initial_lr"] for g in runner.optim_wrapper.optimizer.param_groups}
    assert min(group_lrs) == pytest.approx(new_lr)  # head groups carry lr_mult 10


def test_finetune_above_the_last_lr_warns_loudly(voc_two_epochs) -> None:
    from seglab.engine.resume import lr_jump_warning, read_saved_run

    _, first_run = voc_two_epochs
    saved = read_saved_run(str(Path(first_run) / "epoch_2.pth"))
    assert saved.epoch == 2 and saved.last_lrs
    assert lr_jump_warning(saved, min(saved.last_lrs) / 2) is None

    assert "can destroy it" in lr_jump_warning(saved, max(saved.last_lrs) * 10)


def inject_nan_loss(monkeypatch: pytest.MonkeyPatch, at_call: int) -> None:
    """Make the decode head's cross-entropy NaN at its ``at_call``-th evaluation."""
    from mmseg.models.losses import CrossEntropyLoss

    calls, original = [0], CrossEntropyLoss.forward

    def nan_once(self, *args, **kwargs):
        calls[0] += 1
        loss = original(self, *args, **kwargs)
        return loss * float("nan") if calls[0] == at_call else loss

    monkeypatch.setattr(CrossEntropyLoss, "forward", nan_once)


@pytest.mark.slow
def test_nan_in_one_loss_term_stops_with_the_term_named(voc_root, tmp_path, monkeypatch) -> None:
    from seglab.engine.checkpoint import load_checkpoint_file
    from seglab.engine.hooks.nonfinite_loss_hook import TrainingDiverged

    ipe = iters_per_epoch(TINY_TRAIN_IMAGES)
    inject_nan_loss(monkeypatch, at_call=ipe + 2)  # the second step of epoch 2
    with pytest.raises(TrainingDiverged, match=r"decode\.loss_ce=nan") as err:
        engine.train(str(VOC_DEMO), work_dir=str(tmp_path), data_root=str(voc_root),
                     cfg_options={"train_cfg.max_epochs": 3, "train_cfg.val_interval": 10,
                                  **TINY_SUBSET})
    assert f"iter {ipe + 2}" in str(err.value) and "epoch_1.pth" in str(err.value)
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["epoch_1.pth"]
    state = load_checkpoint_file(str(tmp_path / "epoch_1.pth"))
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values()
               if v.is_floating_point())
    record = json.loads((tmp_path / f"nonfinite_iter_{ipe + 2}.json").read_text())
    assert record["terms"] == ["decode.loss_ce", "loss"] and len(record["img_paths"]) == BATCH


def _final_weights(work_dir: Path, epoch: int) -> dict[str, torch.Tensor]:
    from seglab.engine.checkpoint import load_checkpoint_file

    return load_checkpoint_file(str(work_dir / f"epoch_{epoch}.pth"))["state_dict"]


@pytest.mark.slow
def test_kill9_at_a_random_step_then_resume_gives_bitwise_identical_weights(
        voc_root, tmp_path) -> None:
    """Same weights as an uninterrupted run: data order, augmentation, dropout/drop-path
    and the optimizer all continue where the checkpoint left them."""
    import random

    epochs = 4
    args = ["--data-root", str(voc_root), "--cfg-options", f"train_cfg.max_epochs={epochs}",
            # 8 steps an epoch of 2 images: a quarter of the compute of 6 steps of 8, and as
            # many steps after the first checkpoint for the random kill to land in
            "train_cfg.val_interval=2", "train_dataloader.dataset.indices=16",
            "train_dataloader.batch_size=2",
            "val_dataloader.dataset.indices=4", "train_dataloader.persistent_workers=False",
            "randomness.seed=7", "randomness.deterministic=True"]
    straight = run_cli("train", str(VOC_DEMO), "--work-dir", str(tmp_path / "straight"), *args)
    assert straight.returncode == 0, straight.stderr[-3000:]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "seglab.cli", "train", str(VOC_DEMO), "--work-dir", str(killed),
         *args], cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    delay = random.Random().uniform(0.0, 4.0)
    try:
        _wait_for(lambda: (killed / "last_checkpoint").exists(), 600, "a first checkpoint")
        time.sleep(delay)
        assert proc.poll() is None, f"run finished before the kill (delay {delay:.2f} s)"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    resumed = run_cli("train", str(VOC_DEMO), "--work-dir", str(killed), "--resume", *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    a, b = _final_weights(tmp_path / "straight", epochs), _final_weights(killed, epochs)
    assert a.keys() == b.keys()
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, f"killed after {delay:.2f} s: {len(differing)} tensors differ"


@pytest.mark.slow
def test_skip_policy_skips_the_nan_step_and_finishes(voc_root, tmp_path, monkeypatch) -> None:
    ipe = iters_per_epoch(48)
    inject_nan_loss(monkeypatch, at_call=ipe + 2)
    runner = engine.train(str(VOC_DEMO), work_dir=str(tmp_path), data_root=str(voc_root),
                          on_nonfinite="skip",
                          cfg_options={"train_cfg.max_epochs": 2, "train_cfg.val_interval": 10,
                                       "train_dataloader.dataset.indices": 48})
    assert runner.epoch == 2 and runner.optim_wrapper.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in runner.model.parameters())
    record = json.loads((tmp_path / f"nonfinite_iter_{ipe + 2}.json").read_text())
    assert "decode.loss_ce" in record["terms"]
