"""``seglab status``: what RunStatusHook records during a real run, what the CLI marks,
and how the reader judges a record (lost runs, Slurm's queue, work dirs without one)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from mmengine.hooks import Hook
from mmengine.logging import MessageHub
from mmengine.registry import HOOKS

from seglab import cli
from seglab.engine.hooks.run_status_hook import RunStatusHook
from seglab.results.status import (
    STATUS_FILE,
    find_runs,
    mark_run_state,
    process_start,
    read_status_file,
    run_status,
    status_table,
    update_status_file,
)
from tests.conftest import VOC_DEMO

ITERATIONS = 3

# The demo config at 64 px, one image a step, 3 steps and one validation image: seconds on
# a CPU. Its pipelines are rewritten because a child config's crop_size does not reach them.
SMALL_CONFIG = f"""
_base_ = [{str(VOC_DEMO)!r}]
crop_size = (64, 64)
train_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
    dict(type='Resize', scale=(80, 64), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size), dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='Resize', scale=(80, 64), keep_ratio=True),
    dict(type='LoadAnnotations'), dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                        dataset=dict(indices={ITERATIONS}, pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(indices=1, pipeline=test_pipeline))
test_dataloader = val_dataloader
model = dict(data_preprocessor=dict(size=crop_size))
train_cfg = dict(max_epochs=1, val_interval=1)
default_hooks = dict(logger=dict(interval=1))
# runner.py adds RunStatusHook to every run; written here so the test does not depend on it
custom_hooks = [dict(type='RunStatusHook', interval_s=0), dict(type='StatusProbe', at=2)]
"""


@HOOKS.register_module(force=True)
class StatusProbe(Hook):
    """Reads ``seglab status`` of its own run after step ``at`` (1-based), after
    RunStatusHook wrote it (same priority, registered after it)."""

    priority = "LOWEST"
    seen: list = []

    def __init__(self, at: int) -> None:
        self.at = at

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.at:
            StatusProbe.seen.append(run_status(runner.work_dir))


def write_record(work_dir: Path, **fields) -> Path:
    work_dir.mkdir(parents=True, exist_ok=True)
    update_status_file(work_dir, fields, fresh=True)
    return work_dir


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def running_record(work_dir: Path, age_s: float, **fields) -> Path:
    """A "running" record whose last heartbeat was ``age_s`` ago."""
    write_record(work_dir, **{"state": "running", "pid": os.getpid(),
                              "pid_start": process_start(os.getpid()),
                              "hostname": socket.gethostname(), "iteration": 400,
                              "max_iters": 1000, "sec_per_iter": 2.0, "loss": 0.5, **fields})
    record = json.loads((work_dir / STATUS_FILE).read_text())
    record["updated"] = time.time() - age_s  # update_status_file stamps "now"
    (work_dir / STATUS_FILE).write_text(json.dumps(record))
    return work_dir


@pytest.fixture
def fake_squeue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``squeue`` first on PATH: prints $FAKE_SQUEUE_STATE, records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "squeue"
    script.write_text('#!/bin/sh\necho "$@" >> "$FAKE_SQUEUE_ARGS"\n'
                      '[ -n "$FAKE_SQUEUE_STATE" ] || exit 1\necho "$FAKE_SQUEUE_STATE"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SQUEUE_ARGS", str(tmp_path / "squeue_args"))
    return tmp_path / "squeue_args"


@pytest.mark.slow
def test_a_trained_run_reads_running_then_finished_with_iteration_and_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from seglab.data.synth import write_synth_dataset
    from seglab.engine.runner import train

    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    data = write_synth_dataset("voc", tmp_path / "data", num_train=ITERATIONS, num_val=1,
                               seed=0).root
    config = tmp_path / "small.py"
    config.write_text(SMALL_CONFIG)
    work_dir = tmp_path / "run"
    StatusProbe.seen.clear()
    train(str(config), work_dir=str(work_dir), data_root=str(data))

    [during] = StatusProbe.seen
    assert (during.state, during.display_state) == ("running", "running")
    assert (during.iteration, during.max_iters) == (2, ITERATIONS)
    assert during.pid == os.getpid() and during.hostname == socket.gethostname()
    assert during.sec_per_iter and during.sec_per_iter > 0 and during.eta_s is not None
    assert during.loss is not None and during.checkpoint is None

    after = run_status(work_dir)
    assert (after.state, after.display_state, after.source) == ("finished", "finished",
                                                                STATUS_FILE)
    assert (after.iteration, after.max_iters) == (ITERATIONS, ITERATIONS)
    assert after.checkpoint == "epoch_1.pth" and (work_dir / "epoch_1.pth").is_file()
    assert 0 <= after.checkpoint_age_s < 600 and after.eta_s is None
    assert after.miou is not None and 0 <= after.miou <= 100
    record = read_status_file(work_dir)
    assert record["checkpoint"] == "epoch_1.pth" and record["miou_iter"] == ITERATIONS
    assert record["ended"] >= record["started"]


def test_a_running_record_is_judged_by_its_heartbeat_and_its_process(tmp_path: Path) -> None:
    fresh = run_status(running_record(tmp_path / "fresh", age_s=5))
    assert fresh.display_state == "running"
    assert fresh.eta_s == pytest.approx(600 * 2.0 - 5, abs=2)  # 600 iterations at 2 s

    # kill -9 / a node failure: silent for an hour, its pid gone on this host
    old = time.time() - 3600
    lost = run_status(running_record(tmp_path / "lost", age_s=3600, pid=dead_pid()))
    assert lost.state == "lost" and lost.eta_s is None
    assert lost.display_state.startswith("lost (no heartbeat since ")
    assert f"{time.strftime('%H:%M', time.localtime(old))})" in lost.display_state
    # the pid was given to another process since: still lost
    reused = run_status(running_record(tmp_path / "reused", age_s=3600, pid_start="1"))
    assert reused.state == "lost"
    # on another host nothing can be asked of the process: silence alone decides
    assert run_status(running_record(tmp_path / "far", age_s=3600,
                                     hostname="other-node")).state == "lost"
    assert run_status(running_record(tmp_path / "far_fresh", age_s=60,
                                     hostname="other-node")).state == "running"
    # its process is alive but it writes nothing (a hung collective): stalled, not lost
    stalled = run_status(running_record(tmp_path / "hung", age_s=3600))
    assert stalled.state == "stalled" and stalled.display_state.startswith("stalled (")
    # silence is measured against the run's own pace: 20 steps of 60 s is 20 minutes
    slow = run_status(running_record(tmp_path / "slow", age_s=900, pid=dead_pid(),
                                     sec_per_iter=60.0))
    assert slow.state == "running"


def test_mark_run_state_merges_failed_and_requeued_into_the_record(tmp_path: Path) -> None:
    pid, host = os.getpid(), socket.gethostname()
    run = write_record(tmp_path / "run", state="running", pid=pid, hostname=host,
                       pid_start=process_start(pid), iteration=50, max_iters=100, miou=40.5,
                       slurm_job_id="99")
    try:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB\nmore detail")
    except RuntimeError as err:
        assert mark_run_state(run, "failed", error=err, iteration=51) == run / STATUS_FILE
    record = read_status_file(run)
    assert record["state"] == "failed" and record["iteration"] == 51
    assert record["error"] == "RuntimeError: CUDA out of memory. Tried to allocate 2 GiB"
    assert (record["pid"], record["hostname"], record["miou"], record["slurm_job_id"]) == (
        pid, host, 40.5, "99")
    assert record["ended"] <= time.time()
    # another rank's failure that followed from the first keeps the first error
    mark_run_state(run, "failed", error="DistBackendError: NCCL timeout")
    assert read_status_file(run)["error"].startswith("RuntimeError: CUDA out of memory")
    status = run_status(run)
    assert status.display_state == "failed"
    assert "error: RuntimeError: CUDA out of memory" in status_table([status])

    mark_run_state(run, "requeued", iteration=80, checkpoint=str(run / "iter_80.pth"))
    record = read_status_file(run)
    assert (record["state"], record["iteration"], record["checkpoint"]) == (
        "requeued", 80, "iter_80.pth")
    assert record["error"] is None and record["miou"] == 40.5 and record["pid"] == pid
    assert run_status(run).checkpoint == "iter_80.pth"  # from the record: no file yet
    mark_run_state(run, "stopped")
    assert read_status_file(run)["state"] == "stopped"

    # a command refused before training (a typo, a work dir holding a finished run) does
    # not mark the run of another process; the caller may insist
    other = write_record(tmp_path / "other", state="finished", pid=pid, hostname="node7")
    assert mark_run_state(other, "failed", error="ConfigError: already holds checkpoints") \
        is None
    assert read_status_file(other)["state"] == "finished"
    assert mark_run_state(other, "failed", error="x", own_record_only=False) is not None
    assert read_status_file(other)["state"] == "failed"
    (tmp_path / "bare").mkdir()
    assert mark_run_state(tmp_path / "bare", "failed") is None
    assert mark_run_state(tmp_path / "bare", "stopped", own_record_only=False) is not None
    assert mark_run_state(tmp_path / "never_made", "failed", error="x",
                          own_record_only=False) is None
    assert not (tmp_path / "never_made").exists()
    with pytest.raises(ValueError, match="not one of"):
        mark_run_state(run, "crashed")


def test_the_hook_starts_a_new_record_keeps_a_resumed_ones_history_and_never_raises(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no squeue: this machine's Slurm is not asked
    monkeypatch.setenv("SLURM_JOB_ID", "501")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "500")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    hub = MessageHub.get_instance("test_run_status_hook")
    for loss in (3.0, 1.0):
        hub.update_scalar("train/loss", loss)
    runner = SimpleNamespace(work_dir=str(tmp_path), iter=0, max_iters=100, epoch=0,
                             max_epochs=1, message_hub=hub)
    write_record(tmp_path, state="failed", error="old", miou=9.0, checkpoint="iter_1.pth")
    hook = RunStatusHook(interval_s=3600)
    hook.before_train(runner)  # a new run: the old record goes
    record = read_status_file(tmp_path)
    assert record["state"] == "running" and "error" not in record and "miou" not in record
    assert (record["slurm_job_id"], record["slurm_restart_count"]) == ("501", 2)
    assert run_status(tmp_path).slurm_job == "500_3"  # the id that survives requeues
    hook.after_train_iter(runner, 0)  # the first step is written at once
    assert read_status_file(tmp_path)["loss"] == 2.0  # the log's average
    runner.iter = 1
    hook.after_train_iter(runner, 1)  # within interval_s: not written
    assert read_status_file(tmp_path)["iteration"] == 1
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "iter_2.pth"))
    hook.before_save_checkpoint(runner, {})
    hook.after_train_iter(runner, 1)  # a checkpoint is written at once, by name
    record = read_status_file(tmp_path)
    assert (record["iteration"], record["checkpoint"]) == (2, "iter_2.pth")
    assert record["sec_per_iter"] > 0
    hook.after_val_epoch(runner, {"aAcc": 90.0, "mIoU": 41.25})
    assert read_status_file(tmp_path)["miou"] == 41.25

    mark_run_state(tmp_path, "requeued", iteration=2)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID")
    resumed = RunStatusHook()
    runner.iter = 2
    resumed.before_train(runner)  # the requeued job starts again: history kept
    record = read_status_file(tmp_path)
    assert (record["state"], record["checkpoint"], record["miou"]) == ("running",
                                                                     "iter_2.pth", 41.25)
    assert "ended" not in record and "sec_per_iter" not in record
    assert "slurm_array_job_id" not in record and record["resumed_at"] == 2
    resumed.after_train(runner)
    assert read_status_file(tmp_path)["state"] == "finished"

    # a work dir that cannot be written (here: a file) costs a warning, not the run
    runner.work_dir = str(tmp_path / "last_checkpoint")
    broken = RunStatusHook(interval_s=0)
    broken.before_train(runner)
    broken.after_train_iter(runner, 0)
    assert broken._warned


def test_a_work_dir_without_a_status_file_reads_from_checkpoints_and_scalars(
        tmp_path: Path) -> None:
    """What mmengine 0.10 writes: one JSON line a log interval (training: global "iter" and
    "step"; validation: "step" = epoch or iteration), ``last_checkpoint`` with the absolute
    path at save time, ``iter_N.pth``."""
    run = tmp_path / "mmseg_run"
    vis = run / "20250101_101010" / "vis_data"
    vis.mkdir(parents=True)
    lines = [{"base_lr": 1e-4, "lr": 1e-4, "data_time": 0.01, "loss": 2.5, "time": 0.5,
              "iter": 100, "step": 100},
             {"aAcc": 80.0, "mIoU": 31.5, "mAcc": 40.0, "data_time": 0.01, "time": 0.2,
              "step": 100},
             {"base_lr": 1e-4, "lr": 1e-4, "data_time": 0.01, "loss": 1.25, "time": 0.4,
              "iter": 150, "step": 150}]
    (vis / "scalars.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (run / "20250101_101010" / "20250101_101010.log").write_text(
        "... - mmengine - INFO - Iter(train) [ 150/1000]  lr: 1.0000e-04  loss: 1.2500\n")
    for n in (50, 100):
        (run / f"iter_{n}.pth").write_bytes(b"")
    (run / "last_checkpoint").write_text("/old/cluster/path/mmseg_run/iter_100.pth")

    status = run_status(run)
    assert (status.state, status.source) == ("unknown", "work dir")
    assert (status.iteration, status.max_iters) == (150, 1000)
    assert (status.checkpoint, status.loss, status.miou) == ("iter_100.pth", 1.25, 31.5)
    assert status.sec_per_iter == 0.4 and status.checkpoint_age_s < 600
    assert status.eta_s is None  # whether it still runs is not known

    (run / "last_checkpoint").unlink()
    (run / "iter_1000.pth").write_bytes(b"")  # numbered, not sorted as text
    assert run_status(run).checkpoint == "iter_1000.pth"

    only_checkpoints = tmp_path / "copied"
    only_checkpoints.mkdir()
    (only_checkpoints / "iter_800.pth").write_bytes(b"")
    copied = run_status(only_checkpoints)
    assert (copied.state, copied.iteration, copied.checkpoint) == ("unknown", 800,
                                                                   "iter_800.pth")


def test_squeue_gives_the_queue_state_of_a_slurm_job(
        tmp_path: Path, fake_squeue: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    requeued = write_record(tmp_path / "requeued", state="requeued", slurm_job_id="4242",
                            iteration=80, max_iters=100)
    monkeypatch.setenv("FAKE_SQUEUE_STATE", "PENDING")
    assert run_status(requeued).display_state == "requeued (PENDING)"
    assert fake_squeue.read_text().split() == ["-h", "-j", "4242", "-o", "%T"]

    monkeypatch.setenv("FAKE_SQUEUE_STATE", "RUNNING")
    array = running_record(tmp_path / "array", age_s=5, slurm_job_id="4300",
                           slurm_array_job_id="4290", slurm_array_task_id="7")
    status = run_status(array)
    assert (status.display_state, status.slurm_state) == ("running (slurm RUNNING)", "RUNNING")
    assert fake_squeue.read_text().splitlines()[-1].split()[2] == "4290_7"

    # silent for an hour on another node: lost once Slurm has requeued the job, stalled
    # (hung, not dead) while Slurm says it runs
    far = running_record(tmp_path / "far", age_s=3600, hostname="other-node",
                         slurm_job_id="4400")
    assert run_status(far).display_state.startswith("stalled (no heartbeat since ")
    assert run_status(far).display_state.endswith("; slurm RUNNING)")
    monkeypatch.setenv("FAKE_SQUEUE_STATE", "PENDING")
    assert run_status(far).state == "lost"
    assert run_status(far).display_state.endswith("; slurm PENDING)")

    monkeypatch.setenv("FAKE_SQUEUE_STATE", "")  # squeue fails: the job is not known
    assert run_status(requeued).display_state == "requeued"
    finished = write_record(tmp_path / "finished", state="finished", slurm_job_id="4242")
    calls = len(fake_squeue.read_text().splitlines())
    assert run_status(finished).display_state == "finished"
    assert len(fake_squeue.read_text().splitlines()) == calls  # a finished run: not asked


def test_cli_prints_one_aligned_row_a_run_and_json_for_a_folder_of_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no squeue here, whatever the machine has
    zoo = tmp_path / "work_dirs" / "zoo"
    running_record(zoo / "segformer_ade20k", age_s=10)
    write_record(zoo / "upernet_ade20k", state="finished", iteration=1000, max_iters=1000,
                 checkpoint="iter_1000.pth", miou=44.1234)
    write_record(zoo / "nested" / "pspnet_ade20k", state="failed", error="ValueError: bad")
    (zoo / "empty_folder").mkdir()

    assert cli.main(["status", str(zoo)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header, rows = lines[0], [line for line in lines[1:] if not line.startswith("  ")]
    assert header.split() == ["run", "state", "iter", "checkpoint", "loss", "mIoU", "it/s",
                              "ETA"]
    assert [row.split()[0] for row in rows] == [str(zoo / "nested" / "pspnet_ade20k"),
                                               str(zoo / "segformer_ade20k"),
                                               str(zoo / "upernet_ade20k")]
    for column in ("state", "iter", "checkpoint", "loss", "mIoU", "it/s", "ETA"):
        start = header.index(column)  # every cell of a column starts where its name does
        assert all(row[start - 1] == " " and row[start] != " " for row in rows), column
    assert "running" in rows[1] and "400/1000" in rows[1] and "44.12" in rows[2]
    assert "  error: ValueError: bad" in lines

    assert cli.main(["status", str(zoo / "upernet_ade20k"), str(zoo / "empty_folder"),
                     "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(d["work_dir"], d["state"]) for d in data] == [
        (str(zoo / "upernet_ade20k"), "finished"), (str(zoo / "empty_folder"), "not started")]
    assert data[0]["miou"] == 44.1234 and data[0]["iteration"] == 1000
    assert find_runs([tmp_path / "work_dirs"]) == [zoo / "segformer_ade20k",
                                                   zoo / "upernet_ade20k"]  # 2 levels


def test_a_work_dir_that_does_not_exist_is_one_clear_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status", str(tmp_path / "work_dirs" / "typo")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = err.splitlines()
    assert line.startswith("seglab: error: ") and "typo: no such folder" in line
