"""One training run per work dir: a second is refused at once, naming the first; the lock dies
with its holder (``kill -9`` included) and is not kept by forked DataLoader workers."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from seglab.engine import work_dir_lock
from seglab.engine.work_dir_lock import WorkDirBusy, lock_work_dir
from tests.conftest import VOC_DEMO

# Another process holding the lock: the module loaded from its file, without the engine
# package's imports (torch, mmengine), so that it holds within a fraction of a second
HOLD = ("import importlib.util, sys, time; spec = importlib.util.spec_from_file_location("
        "'work_dir_lock', sys.argv[2]); module = importlib.util.module_from_spec(spec); "
        "spec.loader.exec_module(module); module.lock_work_dir(sys.argv[1]); "
        "print('held', flush=True); time.sleep(600)")


@pytest.fixture
def held_elsewhere(tmp_path: Path):
    """``tmp_path/run`` locked by another process; yields (work dir, that process)."""
    work_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(work_dir),
                               work_dir_lock.__file__], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        yield work_dir, holder
    finally:
        holder.kill()
        holder.wait()


def test_a_held_work_dir_is_refused_until_its_holder_is_killed(held_elsewhere) -> None:
    work_dir, holder = held_elsewhere
    with pytest.raises(WorkDirBusy, match=rf"in use by another training run \(pid {holder.pid} "):
        lock_work_dir(work_dir)
    holder.send_signal(signal.SIGKILL)  # no clean-up runs: the kernel drops the lock
    holder.wait()
    lock = lock_work_dir(work_dir)
    assert lock.held
    lock.release()


@pytest.mark.slow  # the CLI on generated data
def test_train_into_a_held_work_dir_is_refused_before_anything_is_built(
        held_elsewhere, voc_root, monkeypatch, capsys) -> None:
    from seglab.cli import main
    from seglab.engine import runner

    def built(cfg):
        raise AssertionError("the model was built")

    work_dir, holder = held_elsewhere
    monkeypatch.setattr(runner, "_build_runner", built)
    monkeypatch.setattr(runner, "LOCK_WAIT_S", 0.0)  # the grace for a run that just died
    code = main(["train", str(VOC_DEMO), "--work-dir", str(work_dir),
                 "--data-root", str(voc_root), "--skip-data-check"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"is in use by another training run (pid {holder.pid} on " in err
    assert "Fix: wait for that run to end or stop it (then --resume continues it)" in err


def _say_started_then_sleep(started) -> None:
    import time

    started.set()
    time.sleep(60)


def test_a_forked_worker_does_not_keep_the_lock(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    lock = lock_work_dir(tmp_path)
    started = context.Event()
    worker = context.Process(target=_say_started_then_sleep, args=(started,), daemon=True)
    worker.start()  # as a DataLoader worker is forked while the run holds the lock
    try:
        assert started.wait(30)
        lock.release()
        again = lock_work_dir(tmp_path)  # the worker's copy would still hold it
        again.release()
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.join()


def test_a_lock_freed_while_waiting_is_taken(held_elsewhere) -> None:
    """A run killed a moment ago (or a requeued job's dead node) frees the lock a little
    later: the next run waits for it instead of refusing."""
    import threading

    work_dir, holder = held_elsewhere
    threading.Timer(1.0, holder.kill).start()
    lock = lock_work_dir(work_dir, wait_s=30)
    assert lock.held
    lock.release()
