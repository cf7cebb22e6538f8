"""``PreemptionCheckpointHook``: a time limit or preemption costs one iteration, not an epoch."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

import torch
from mmengine.dist import all_reduce, barrier, get_rank, is_distributed
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from seglab.atomic_files import atomic_write
from seglab.engine.hooks.rng_state_hook import RNGStateHook
from seglab.launch.slurm import requeue_this_job
from seglab.results.status import mark_run_state

# SIGUSR1: what `seglab submit` asks Slurm to send before the time limit (and at preemption,
# with PreemptParameters=send_user_signal). SIGTERM: scancel, a preemption's grace period,
# torchrun forwarding a kill of dist_train.sh, `kill PID` under tmux.
DEFAULT_SIGNALS = ("SIGUSR1", "SIGTERM")


class RunPreempted(Exception):  # noqa: N818  (a stop, not a failure: the CLI exits cleanly)
    """Training stopped on a signal after writing a checkpoint; the CLI reports it.

    Args:
        message (str): what happened and how the run continues.
        signum (int): the signal that stopped the run.
        requeued (bool): whether the Slurm job was put back in the queue.
    """

    def __init__(self, message: str, signum: int, requeued: bool) -> None:
        super().__init__(message)
        self.signum, self.requeued = signum, requeued


@HOOKS.register_module()
class PreemptionCheckpointHook(Hook):
    """On a stop signal: checkpoint at the current iteration, requeue a Slurm job, stop.

    mmengine saves every ``interval`` epochs or iterations; a job killed at its time
    limit or preempted loses everything since, and must be resubmitted by hand. This
    hook catches the signal (it only sets a flag: a signal can arrive mid-step), and
    after the step in flight all ranks agree (one all-reduce), save
    ``iter_N.pth`` with optimizer, scheduler and RNG state (written atomically like
    every seglab checkpoint) and point ``last_checkpoint`` at it. On ``requeue_on``
    signals inside a Slurm batch job, rank 0 then runs ``scontrol requeue``: the job
    goes back in the queue and its next start continues with ``--resume auto``
    (the mid-epoch position, sampler and random streams included). SIGTERM only
    stops: it is what ``scancel`` sends, and a preempting Slurm that requeues does so
    itself. Signals that come during validation wait for the next training step.

    Args:
        signals (Sequence[str]): signals that stop the run with a checkpoint.
            Defaults to ``('SIGUSR1', 'SIGTERM')``.
        requeue_on (Sequence[str]): of those, the ones after which a Slurm batch job
            requeues itself. Defaults to ``('SIGUSR1',)``.
    """

    priority = "LOWEST"  # after the scheduler stepped and the RNG states were gathered

    def __init__(self, signals: Sequence[str] = DEFAULT_SIGNALS,
                 requeue_on: Sequence[str] = ("SIGUSR1",)) -> None:
        self.signals = [signal.Signals[name] for name in signals]
        self.requeue_on = {signal.Signals[name] for name in requeue_on}
        self._received: int = 0
        self._received_at = 0.0
        self._previous: dict[int, Any] = {}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self._received:
            self._received, self._received_at = signum, time.time()

    def before_train(self, runner: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python takes signal handlers in the main thread only
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def after_train(self, runner: Any) -> None:
        self.restore_handlers()

    def restore_handlers(self) -> None:
        """Give the signals back the handlers they had before training."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _agreed_signal(self, runner: Any) -> int:
        """The signal any rank received (0: none); every rank gets the same answer."""
        if not is_distributed():
            return self._received
        flag = torch.tensor([self._received], dtype=torch.int64)
        all_reduce(flag, op="max")  # mmengine moves it to the backend's device (NCCL: cuda)
        return int(flag.item())

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        signum = self._agreed_signal(runner)
        if not signum:
            return
        name = signal.Signals(signum).name
        iteration = runner.iter + 1  # the step that just finished
        filename = f"iter_{iteration}.pth"
        path = os.path.join(runner.work_dir, filename)
        print_log(f"seglab: {name} received: saving {path} at iteration {iteration}",
                  logger="current")
        for hook in runner.hooks:  # every rank's random streams, collected while all are here
            if isinstance(hook, RNGStateHook):
                hook.gather_now(runner)
        runner.save_checkpoint(runner.work_dir, filename, by_epoch=False)
        if get_rank() == 0:  # what --resume (and --resume auto) reads first
            with atomic_write(os.path.join(runner.work_dir, "last_checkpoint")) as pointer:
                pointer.write(path)
        barrier()  # every rank is past the save before the job can be requeued (and killed)
        requeued = signum in self.requeue_on and get_rank() == 0 and requeue_this_job()
        mark_run_state(runner.work_dir, "requeued" if requeued else "stopped",
                       iteration=iteration, checkpoint=path)
        waited = time.time() - self._received_at if self._received else 0.0
        self.restore_handlers()
        if requeued:
            how = ("the Slurm job is requeued: its next start continues from this "
                   "checkpoint (--resume auto)")
        else:
            how = "continue with `--resume` (the same command plus --resume)"
        raise RunPreempted(f"stopped by {name} at iteration {iteration} "
                           f"({waited:.1f} s after the signal); checkpoint {path}; {how}",
                           signum, requeued)


def release_stop_signals(runner: Any) -> None:
    """Restore the signal handlers of a run that ended without ``after_train`` (it raised)."""
    for hook in runner.hooks:
        if isinstance(hook, PreemptionCheckpointHook):
            hook.restore_handlers()
