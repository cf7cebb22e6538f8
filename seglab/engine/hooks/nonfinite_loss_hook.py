"""``NonFiniteLossHook``: stop (or tolerate skipped steps) at the first NaN/Inf loss term or
gradient norm, naming the term and the batch, before a bad checkpoint is written."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper
from mmengine.registry import HOOKS

from seglab.engine.hooks.deferred_runtime_info_hook import (
    DeferredRuntimeInfoHook,
    detached,
    is_log_step,
    logger_interval,
)
from seglab.errors import UserError


class TrainingDiverged(UserError):
    """A loss term or the gradient norm stopped being finite."""


def _number(value: Any) -> Any:
    """A loss value as the message shows it (a tensor still attached to the graph too)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.detach().item()
    return value


def _is_finite(value: Any) -> bool:
    try:
        return math.isfinite(float(_number(value)))
    except (TypeError, ValueError):
        return True  # not a number (e.g. a list of accuracies): not ours to judge


# Below this loss scale, AMP's scaler is no longer backing off from fp16 overflow: the
# gradients are non-finite even unscaled (it starts at 2**16 and halves per overflow).
MIN_LOSS_SCALE = 1.0


@dataclass
class _Step:
    """One training step's loss terms (and gradient norm), held until it is judged."""

    iter: int
    epoch: int
    values: dict[str, Any]
    img_paths: list[str | None]

    def bad_terms(self) -> list[str]:
        return sorted(k for k, v in self.values.items() if not _is_finite(v))

    def any_bad(self) -> torch.Tensor | bool:
        """Whether a term is non-finite, as a device tensor where the terms are tensors:
        nothing waits for the GPU until the check reads it."""
        tensors = [v.reshape(()) for v in self.values.values()
                   if isinstance(v, torch.Tensor) and v.numel() == 1]
        others = [v for v in self.values.values()
                  if not (isinstance(v, torch.Tensor) and v.numel() == 1)]
        if not all(_is_finite(v) for v in others):
            return True
        if not tensors:
            return False
        device = tensors[0].device
        return ~torch.isfinite(torch.stack([t.to(device) for t in tensors])).all()


def _any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on one: each rank computes its own loss,
    so a NaN on one rank must stop (or be skipped by) all of them, or the others wait
    in the next all-reduce until the NCCL timeout."""
    return _any_rank_each([flag])[0]


def _any_rank_each(flags: list[torch.Tensor | bool]) -> list[bool]:
    """Each of ``flags`` or-ed over the ranks: one copy to the host, one all-reduce."""
    from mmengine.dist import all_reduce, get_world_size

    values = torch.tensor(_host_flags(flags), dtype=torch.int64)
    if get_world_size() > 1:
        all_reduce(values, op="max")
    return [bool(v) for v in values.tolist()]


def _host_flags(flags: list[torch.Tensor | bool]) -> list[bool]:
    """The flags as Python bools, the device ones read in one copy."""
    tensors = [f for f in flags if isinstance(f, torch.Tensor)]
    read = iter(torch.stack([t.to(tensors[0].device) for t in tensors]).tolist()
                if tensors else [])
    return [next(read) if isinstance(f, torch.Tensor) else f for f in flags]


def _img_paths(data_batch: Any) -> list[str | None]:
    samples = (data_batch or {}).get("data_samples", []) if isinstance(data_batch, dict) \
        else []
    return [s.metainfo.get("img_path") for s in samples if hasattr(s, "metainfo")]


def _gather_bad_batches(bad: list[str], img_paths: list[str | None],
                        ) -> tuple[list[str], list[dict]]:
    """The non-finite terms over all ranks and each rank's image paths."""
    from mmengine.dist import all_gather_object, get_world_size

    own = {"terms": bad, "img_paths": img_paths}
    ranks = all_gather_object(own) if get_world_size() > 1 else [own]
    return sorted({t for r in ranks for t in r["terms"]}), ranks


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stop at the first non-finite loss term or gradient norm (seed 000 V1.3).

    Names the term, saves the batch's image paths (every rank's) next to the
    checkpoints, and raises on every rank before the epoch's checkpoint is
    written, so the newest checkpoint on disk is the last good one.

    Under AMP, a non-finite gradient norm with finite losses is the dynamic loss
    scaler backing off from fp16 overflow (it skips the step and halves the
    scale): normal early in a run, never counted, unless the scale has fallen
    below ``MIN_LOSS_SCALE``. Other skipped steps are tolerated up to
    ``patience`` in a row: AMP steps with a non-finite loss (the scaler skips
    them) and, with ``policy='skip'``, the steps ``SkipNonFiniteOptimWrapper``
    skips in fp32 runs.

    In a single-process fp32 run the check costs no host sync per step: each step's
    terms are flagged on the device, and the flags are read in one copy every
    ``check_interval`` iterations, at the end of each epoch, and before every
    checkpoint is written, so a checkpoint never follows a non-finite step. The error
    names the step where it happened. AMP runs and ``policy='skip'`` check every step
    (their optimizer reads the gradients' finiteness every step anyway, and the outcome
    decides the next step), and so do distributed runs (see ``_defers``).

    Args:
        policy (str): ``'stop'`` raises at the first non-finite step the
            optimizer did not skip; ``'skip'`` lets ``SkipNonFiniteOptimWrapper``
            skip such steps. Defaults to ``'stop'``.
        patience (int): skipped steps in a row after which the run stops.
            Defaults to 5.
        check_interval (int, optional): iterations between checks; 1 checks every
            step. Defaults to the ``LoggerHook``'s interval (the log reads the
            values then anyway).
    """

    priority = "VERY_HIGH"  # before CheckpointHook and LoggerHook see the iteration

    def __init__(self, policy: str = "stop", patience: int = 5,
                 check_interval: int | None = None) -> None:
        if policy not in ("stop", "skip"):
            raise ValueError(f"NonFiniteLossHook policy={policy!r}: use 'stop' or 'skip'")
        self.policy, self.patience, self.check_interval = policy, patience, check_interval
        self._streak = 0
        self._interval = check_interval or 1  # before_train asks the LoggerHook
        self._held: list[_Step] = []
        self._runtime_info: DeferredRuntimeInfoHook | None = None  # set by before_train

    def _step_was_skipped(self, runner) -> bool:
        wrapper = runner.optim_wrapper
        if isinstance(wrapper, AmpOptimWrapper):
            return True  # the scaler skips non-finite steps itself
        return self.policy == "skip" and getattr(wrapper, "last_step_skipped", False)

    @staticmethod
    def _scaler_backoff(runner, bad: list[str], iteration: int) -> bool:
        """Only the gradient norm overflowed, under fp16 AMP, at a scale that can still shrink.

        bf16 has fp32's range: a non-finite gradient there is divergence, not overflow.
        """
        wrapper = runner.optim_wrapper
        if (bad != ["grad_norm"] or not isinstance(wrapper, AmpOptimWrapper)
                or wrapper.cast_dtype not in (None, torch.float16)):
            return False
        scale = float(wrapper.loss_scaler.get_scale())
        if scale < MIN_LOSS_SCALE:
            return False
        print_log(f"seglab: fp16 gradient overflow at iter {iteration}; the loss scaler "
                  f"skipped the step and backed off to {scale:g}", logger="current")
        return True

    def before_train(self, runner) -> None:
        self._interval = self.check_interval or logger_interval(runner)
        self._runtime_info = next((h for h in runner.hooks
                                   if isinstance(h, DeferredRuntimeInfoHook)), None)

    def _defers(self, runner) -> bool:
        """Whether this run's checks wait for a check point. Not where the step syncs
        anyway and its outcome decides the next step: AMP's loss scaler reads its
        overflow flag every step, ``policy='skip'`` reads the gradients'."""
        from mmengine.dist import get_world_size

        # Distributed runs judge every step too: mmengine saves checkpoints on rank 0 only
        # (Runner.save_checkpoint is master_only), so a check there could not agree over
        # the ranks before the save.
        return (self._interval > 1 and self.policy == "stop" and get_world_size() == 1
                and not isinstance(runner.optim_wrapper, AmpOptimWrapper))

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: dict | None = None) -> None:
        values = {k: detached(v) for k, v in (outputs or {}).items() if "loss" in k}
        grad_norm = self._grad_norm(runner)
        if grad_norm is not None:
            values["grad_norm"] = grad_norm
        step = _Step(runner.iter + 1, runner.epoch + 1, values, _img_paths(data_batch))
        if not self._defers(runner):
            self._judge(runner, step, _any_rank(bool(step.bad_terms())))
            return
        self._held.append(step)
        if is_log_step(runner, batch_idx, self._interval):
            self.check_held(runner)

    def _grad_norm(self, runner) -> Any:
        """This step's clipped gradient norm: the deferred hook's tensor, else the hub's
        (where it exists with clip_grad)."""
        key = f"train/{getattr(runner.optim_wrapper, 'grad_name', 'grad_norm')}"
        if self._runtime_info is not None and key in self._runtime_info.last_step:
            return self._runtime_info.last_step[key]
        scalars = runner.message_hub.log_scalars
        return scalars[key].current() if key in scalars else None

    def check_held(self, runner) -> None:
        """Judge the steps held since the last check, in one host sync (and one all-reduce
        over the ranks); raises at the first non-finite one."""
        held, self._held = self._held, []
        if not held:
            return
        bad = _any_rank_each([s.any_bad() for s in held])
        for step, any_rank_bad in zip(held, bad, strict=True):
            if any_rank_bad:
                self._judge(runner, step, True, checked_at=runner.iter + 1)
                return

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        self.check_held(runner)  # no checkpoint is written after a non-finite step

    def after_train_epoch(self, runner) -> None:
        self.check_held(runner)

    def after_train(self, runner) -> None:
        self.check_held(runner)

    def _judge(self, runner, step: _Step, any_rank_bad: bool,
               checked_at: int | None = None) -> None:
        if not any_rank_bad:
            self._streak = 0
            return
        own_bad = step.bad_terms()
        bad, ranks = _gather_bad_batches(own_bad, step.img_paths)
        if self._scaler_backoff(runner, bad, step.iter):
            return
        self._streak += 1
        saved = self._save_batch(runner, step, bad, ranks)
        if self._step_was_skipped(runner) and self._streak < self.patience:
            print_log(f"seglab: non-finite {', '.join(bad)} at iter {step.iter}; the "
                      f"step was skipped ({self._streak}/{self.patience} in a row), batch "
                      f"listed in {saved}", logger="current", level=logging.WARNING)
            return
        shown = ", ".join(f"{k}={_number(step.values[k])}" if k in own_bad
                          else f"{k} (another rank)" for k in bad)
        found = ("" if checked_at in (None, step.iter) else
                 f" (found at iter {checked_at}: steps are checked every {self._interval} "
                 "iterations and before every checkpoint)")
        raise TrainingDiverged(
            f"training diverged at iter {step.iter} (epoch {step.epoch}): "
            f"{shown}{found}. The batch's images are listed in {saved}; the last good "
            f"checkpoint is {self._last_checkpoint(runner)}. Fix: lower "
            "the LR or add/tighten optim_wrapper.clip_grad, check those images' masks "
            "(seglab data doctor), and continue with --resume.")

    @staticmethod
    def _save_batch(runner, step: _Step, bad: list[str], ranks: list[dict]) -> Path:
        """Rank 0 writes one record with every rank's images (all ranks get its path)."""
        from mmengine.dist import is_main_process

        target = Path(runner.work_dir) / f"nonfinite_iter_{step.iter}.json"
        if is_main_process():
            target.write_text(json.dumps({
                "iter": step.iter, "epoch": step.epoch, "terms": bad,
                "img_paths": [p for r in ranks for p in r["img_paths"]],
                "ranks": ranks}, indent=1))
        return target

    @staticmethod
    def _last_checkpoint(runner) -> str:
        pointer = Path(runner.work_dir) / "last_checkpoint"
        return pointer.read_text().strip() if pointer.is_file() else "(none yet)"
