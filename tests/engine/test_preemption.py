"""A stop signal mid-epoch: checkpoint at that iteration, requeue a Slurm job, resume exactly."""

from __future__ import annotations

import itertools
import os
import signal
import stat
from pathlib import Path

import pytest
import torch
from mmengine.dataset import DefaultSampler
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from seglab.engine import runner as engine
from seglab.engine.fast_resume import ResumableDefaultSampler
from seglab.engine.hooks.preemption_hook import RunPreempted
from seglab.results.status import run_status
from tests.conftest import VOC_DEMO

IMAGES, BATCH, EPOCHS = 8, 2, 2  # 4 steps an epoch, of 2 images (a quarter of 8's compute)
PER_EPOCH = IMAGES // BATCH


@pytest.mark.parametrize("world,round_up", [(1, True), (3, True), (4, False)])
@pytest.mark.parametrize("consumed", [0, 1, 5])
def test_sampler_skip_gives_the_rest_of_the_stock_epoch(world, round_up, consumed) -> None:
    dataset = list(range(23))
    for rank in range(world):
        stock, fast = (cls(dataset, shuffle=True, seed=3, round_up=round_up)
                       for cls in (DefaultSampler, ResumableDefaultSampler))
        for sampler in (stock, fast):
            sampler.rank, sampler.world_size = rank, world
            sampler.set_epoch(4)
        fast.skip(consumed)
        assert list(fast) == list(itertools.islice(stock, consumed, None))
        assert list(fast) == list(stock), "the skip is for one epoch only"


@HOOKS.register_module(force=True)
class SignalAtIteration(Hook):
    """Sends ``signum`` to this process while step ``at`` (0-based) is in flight."""

    def __init__(self, at: int, signum: int) -> None:
        self.at, self.signum = at, signum

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if runner.iter == self.at:
            os.kill(os.getpid(), self.signum)


def _options(**extra: object) -> dict[str, object]:
    # workers off: the augmentations run in this process, whose random streams
    # RNGStateHook saves, so the resumed run draws what the uninterrupted one drew
    return {"train_cfg.max_epochs": EPOCHS, "train_cfg.val_interval": EPOCHS,
            "train_dataloader.dataset.indices": IMAGES, "val_dataloader.dataset.indices": 4,
            "train_dataloader.batch_size": BATCH,
            "train_dataloader.num_workers": 0, "train_dataloader.persistent_workers": False,
            "randomness.seed": 7, "randomness.deterministic": True, **extra}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from seglab.engine.checkpoint import load_checkpoint_file

    return load_checkpoint_file(str(path))["state_dict"]


@pytest.mark.slow
def test_signal_mid_epoch_checkpoints_there_and_resume_auto_is_bitwise_equal(
        voc_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    at = PER_EPOCH + 2  # the third step of epoch 2
    straight = tmp_path / "straight"
    engine.train(str(VOC_DEMO), work_dir=str(straight), data_root=str(voc_root),
                 cfg_options=_options())

    stopped = tmp_path / "stopped"
    hook = {"custom_hooks": [dict(type="SignalAtIteration", at=at, signum=signal.SIGTERM)]}
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RunPreempted, match=f"SIGTERM at iteration {at + 1}") as stop:
        engine.train(str(VOC_DEMO), work_dir=str(stopped), data_root=str(voc_root),
                     cfg_options=_options(**hook))
    assert not stop.value.requeued and "--resume" in str(stop.value)
    assert signal.getsignal(signal.SIGTERM) is before, "the handler outlived the run"
    checkpoint = stopped / f"iter_{at + 1}.pth"
    assert (stopped / "last_checkpoint").read_text() == str(checkpoint)
    assert not (stopped / f"epoch_{EPOCHS}.pth").exists()

    runner = engine.train(str(VOC_DEMO), work_dir=str(stopped), data_root=str(voc_root),
                          resume="auto", cfg_options=_options())
    assert runner.iter == EPOCHS * PER_EPOCH, "the resumed epoch trained its batches again"
    a, b = _weights(straight / f"epoch_{EPOCHS}.pth"), _weights(stopped / f"epoch_{EPOCHS}.pth")
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, f"{len(differing)} of {len(a)} tensors differ"


def _fake_scontrol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rc: int = 0) -> Path:
    calls = tmp_path / "scontrol_calls"
    script = tmp_path / "bin" / "scontrol"
    script.parent.mkdir()
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n"
                      f"[ {rc} = 0 ] || echo 'Only batch jobs are accepted' >&2\nexit {rc}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    squeue = script.parent / "squeue"  # `seglab status` asks the queue about a Slurm run
    squeue.write_text("#!/bin/sh\necho PENDING\n")
    squeue.chmod(script.stat().st_mode)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    return calls


@pytest.mark.slow
@pytest.mark.parametrize("signum,requeues", [(signal.SIGUSR1, True), (signal.SIGTERM, False)])
def test_usr1_requeues_the_slurm_job_and_sigterm_only_stops(
        voc_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signum, requeues) -> None:
    """SIGUSR1 is the time-limit/preemption notice; SIGTERM is also what scancel sends."""
    calls = _fake_scontrol(tmp_path, monkeypatch)
    hook = {"custom_hooks": [dict(type="SignalAtIteration", at=1, signum=signum)]}
    with pytest.raises(RunPreempted) as stop:
        engine.train(str(VOC_DEMO), work_dir=str(tmp_path / "run"), data_root=str(voc_root),
                     cfg_options=_options(**hook))
    assert stop.value.requeued is requeues
    assert (calls.read_text().split() if calls.exists() else []) == (
        ["requeue", "4242"] if requeues else [])
    assert (tmp_path / "run" / "iter_2.pth").is_file()
    status = run_status(str(tmp_path / "run"))
    assert (status.state, status.iteration, status.checkpoint) == (
        "requeued" if requeues else "stopped", 2, "iter_2.pth")


def test_a_failed_requeue_says_so_and_the_run_still_stops(tmp_path, monkeypatch, capsys) -> None:
    from seglab.launch.slurm import requeue_this_job

    calls = _fake_scontrol(tmp_path, monkeypatch, rc=1)
    assert requeue_this_job() is False
    assert calls.read_text().split() == ["requeue", "4242"]
    monkeypatch.delenv("SLURM_JOB_ID")
    assert requeue_this_job() is False  # not a Slurm job: nothing to requeue
