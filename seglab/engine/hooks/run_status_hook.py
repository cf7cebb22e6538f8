"""``RunStatusHook``: ``WORK_DIR/run_status.json`` says where the run stands, for
``seglab status`` (see :mod:`seglab.results.status`)."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable, Mapping
from typing import Any

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from seglab.results.status import (
    ATTEMPT_FIELDS,
    SLURM_FIELDS,
    process_start,
    slurm_fields,
    update_status_file,
)

# mmengine's LogProcessor averages the logged loss over its last 10 iterations by default
LOSS_WINDOW = 10


def _miou(metrics: Mapping[str, Any] | None) -> float | None:
    """The evaluation's mIoU (mmseg's IoUMetric, seglab's ClassIoUMetric; with a prefix)."""
    for key, value in (metrics or {}).items():
        if key == "mIoU" or key.endswith("/mIoU"):
            try:
                return float(value)
            except (TypeError, ValueError):
                return None
    return None


@HOOKS.register_module()
class RunStatusHook(Hook):
    """Keep ``WORK_DIR/run_status.json`` saying where the run stands.

    A researcher with runs on several machines and queues wants one answer each
    morning: which runs are still going, how far, how fast, which died. Rank 0
    writes the record (whole, never half: :func:`seglab.atomic_files.atomic_write`)
    when training starts (state ``running``, pid, host, start time, ``max_iters``,
    the Slurm job, array task and restart count), then at most every ``interval_s``
    seconds during training and validation (iteration, a smoothed seconds per
    iteration, the loss as the log shows it), after each checkpoint (its name),
    after each validation (mIoU) and at the end (``finished``). The written time is
    the heartbeat: ``seglab status`` calls a ``running`` run whose heartbeat is old
    and whose process is gone ``lost``. mmengine calls no hook when training
    raises; the CLI marks that (``failed``), and a stop on a signal (``requeued``,
    ``stopped``), with :func:`seglab.results.status.mark_run_state`. A record it
    cannot write (a full disk) is logged once and never stops the run. A resumed
    run keeps the record's checkpoint and mIoU; a new one starts a new record.

    Args:
        interval_s (float): the least seconds between two writes during training and
            validation (a checkpoint, a validation and the first iteration are written
            at once). Defaults to 30.
        smoothing (float): weight of the newest iteration in the running average of
            seconds per iteration (the first iterations are averaged plainly).
            Defaults to 0.05.
    """

    # After CheckpointHook (VERY_LOW): the checkpoint it saves in the same call is on
    # disk, and last_checkpoint names it, when this hook reads it.
    priority = "LOWEST"

    def __init__(self, interval_s: float = 30.0, smoothing: float = 0.05) -> None:
        if interval_s < 0 or not 0 < smoothing <= 1:
            raise ValueError(f"RunStatusHook: interval_s={interval_s} must be >= 0 and "
                             f"smoothing={smoothing} in (0, 1]")
        self.interval_s = float(interval_s)
        self.smoothing = float(smoothing)
        self._training = False
        self._last_write = 0.0  # time.monotonic() of the last write
        self._tick: float | None = None  # time.monotonic() at the end of the last step
        self._sec_per_iter: float | None = None
        self._timed = 0  # steps timed in this attempt
        self._checkpoint_saved = False
        self._warned = False

    # -- writing ------------------------------------------------------------------------

    def _write(self, runner: Any, fields: Mapping[str, Any], fresh: bool = False,
               drop: Iterable[str] = ()) -> None:
        try:
            update_status_file(runner.work_dir, fields, fresh=fresh, drop=drop)
        except OSError as err:
            if not self._warned:  # a status file is not worth a run
                print_log(f"seglab: cannot write the run status in {runner.work_dir} "
                          f"({err}); training goes on, `seglab status` will show it stale",
                          logger="current", level=logging.WARNING)
                self._warned = True
        self._last_write = time.monotonic()

    def _due(self) -> bool:
        return time.monotonic() - self._last_write >= self.interval_s

    def _progress(self, runner: Any, iteration: int) -> dict[str, Any]:
        fields: dict[str, Any] = {"iteration": iteration, "epoch": runner.epoch,
                                  "sec_per_iter": self._sec_per_iter}
        try:
            fields["loss"] = float(runner.message_hub.get_scalar("train/loss").mean(LOSS_WINDOW))
        except (KeyError, TypeError, ValueError):
            pass  # a model whose train_step logs no "loss"
        if self._checkpoint_saved:
            fields.update(self._checkpoint(runner))
        return fields

    def _checkpoint(self, runner: Any) -> dict[str, Any]:
        """The checkpoint just saved, by the name ``last_checkpoint`` gives it (mmengine
        has no hook after a save, and only CheckpointHook knows the file name)."""
        self._checkpoint_saved = False
        try:
            with open(os.path.join(runner.work_dir, "last_checkpoint")) as pointer:
                target = pointer.read().strip()
        except OSError:
            return {}  # a best checkpoint before any regular one: last_checkpoint is not there
        return {"checkpoint": os.path.basename(target), "checkpoint_time": time.time()}

    # -- hooks ----------------------------------------------------------------------------

    def before_train(self, runner: Any) -> None:
        if not is_main_process():
            return
        self._training, self._tick, self._sec_per_iter, self._timed = True, None, None, 0
        pid = os.getpid()
        resumed = runner.iter > 0  # mmengine loads the checkpoint before this hook
        fields: dict[str, Any] = {
            "state": "running", "phase": "train", "pid": pid, "pid_start": process_start(pid),
            "hostname": socket.gethostname(), "started": time.time(),
            "iteration": runner.iter, "max_iters": runner.max_iters, "epoch": runner.epoch,
            "max_epochs": runner.max_epochs, **slurm_fields()}
        if resumed:
            fields["resumed_at"] = runner.iter
        # A new run gets a new record; a resumed one keeps its checkpoint, loss and mIoU
        # but not what belonged to the attempt before (its error, end, speed, Slurm job).
        self._write(runner, fields, fresh=not resumed, drop=(*ATTEMPT_FIELDS, *SLURM_FIELDS))

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        if not (self._training and is_main_process()):
            return
        now = time.monotonic()
        if self._tick is not None:  # the first step after a start (or a validation) is
            step = now - self._tick  # not timed: worker start-up, cudnn autotuning
            self._timed += 1
            weight = max(self.smoothing, 1.0 / self._timed)
            self._sec_per_iter = (step if self._sec_per_iter is None
                                  else (1 - weight) * self._sec_per_iter + weight * step)
        first = self._tick is None and self._timed == 0
        self._tick = now
        if first or self._checkpoint_saved or self._due():
            self._write(runner, self._progress(runner, runner.iter + 1))

    def after_train_epoch(self, runner: Any) -> None:
        if self._training and self._checkpoint_saved and is_main_process():
            self._write(runner, self._progress(runner, runner.iter))

    def after_val_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                       outputs: Any = None) -> None:
        # a long validation (Cityscapes' sliding windows) must not look like a dead run
        if self._training and is_main_process() and self._due():
            self._write(runner, {"phase": "val"})

    def after_val_epoch(self, runner: Any, metrics: dict | None = None) -> None:
        if not (self._training and is_main_process()):
            return
        fields: dict[str, Any] = {"phase": "train"}
        miou = _miou(metrics)
        if miou is not None:
            fields.update(miou=miou, miou_iter=runner.iter, miou_epoch=runner.epoch)
        if self._checkpoint_saved:
            fields.update(self._checkpoint(runner))
        self._tick = None  # the next step's time would include the validation
        self._write(runner, fields)

    def before_save_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        self._checkpoint_saved = True  # named once saved, in the next call of this hook

    def after_train(self, runner: Any) -> None:
        if not (self._training and is_main_process()):
            return
        self._training = False
        fields = self._progress(runner, runner.iter)
        fields.update(state="finished", ended=time.time())
        self._write(runner, fields, drop=("phase",))
