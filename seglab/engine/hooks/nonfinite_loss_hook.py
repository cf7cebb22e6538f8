"""``NonFiniteLossHook``: stop (or tolerate skipped steps) at the first NaN/Inf loss term or
gradient norm, naming the term and the batch, before a bad checkpoint is written."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper
from mmengine.registry import HOOKS

from seglab.errors import UserError


class TrainingDiverged(UserError):
    """A loss term or the gradient norm stopped being finite."""


def _is_finite(value: Any) -> bool:
    if hasattr(value, "detach"):
        value = value.detach()  # a loss tensor still attached to the graph
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True  # not a number (e.g. a list of accuracies): not ours to judge




# Below this loss scale, AMP's scaler is no longer backing off from fp16 overflow: the
# gradients are non-finite even unscaled (it starts at 2**16 and halves per overflow).
MIN_LOSS_SCALE = 1.0


def _any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on one: each rank computes its own loss,
    so a NaN on one rank must stop (or be skipped by) all of them, or the others wait
    in the next all-reduce until the NCCL timeout."""
    from mmengine.dist import all_reduce, get_world_size

    if get_world_size() == 1:
        return flag
    tensor = torch.tensor([int(flag)])
    all_reduce(tensor, op="max")
    return bool(tensor.item())


def _gather_bad_batches(bad: list[str], data_batch: Any) -> tuple[list[str], list[dict]]:
    """The non-finite terms over all ranks and each rank's image paths."""
    from mmengine.dist import all_gather_object, get_world_size

    samples = (data_batch or {}).get("data_samples", []) if isinstance(data_batch, dict) \
        else []
    own = {"terms": bad, "img_paths": [s.metainfo.get("img_path") for s in samples
                                       if hasattr(s, "metainfo")]}
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

    Args:
        policy (str): ``'stop'`` raises at the first non-finite step the
            optimizer did not skip; ``'skip'`` lets ``SkipNonFiniteOptimWrapper``
            skip such steps. Defaults to ``'stop'``.
        patience (int): skipped steps in a row after which the run stops.
            Defaults to 5.
    """

    priority = "VERY_HIGH"  # before CheckpointHook and LoggerHook see the iteration

    def __init__(self, policy: str = "stop", patience: int = 5) -> None:
        if policy not in ("stop", "skip"):
            raise ValueError(f"NonFiniteLossHook policy={policy!r}: use 'stop' or 'skip'")
        self.policy, self.patience = policy, patience
        self._streak = 0

    def _step_was_skipped(self, runner) -> bool:
        wrapper = runner.optim_wrapper
        if isinstance(wrapper, AmpOptimWrapper):
            return True  # the scaler skips non-finite steps itself
        return self.policy == "skip" and getattr(wrapper, "last_step_skipped", False)

    @staticmethod
    def _scaler_backoff(runner, bad: list[str]) -> bool:
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
        print_log(f"seglab: fp16 gradient overflow at iter {runner.iter + 1}; the loss scaler "
                  f"skipped the step and backed off to {scale:g}", logger="current")
        return True

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: dict | None = None) -> None:
        values = {k: v for k, v in (outputs or {}).items() if "loss" in k}
        scalars = runner.message_hub.log_scalars  # train/grad_norm exists with clip_grad
        if "train/grad_norm" in scalars:
            values["grad_norm"] = scalars["train/grad_norm"].current()
        own_bad = sorted(k for k, v in values.items() if not _is_finite(v))
        if not _any_rank(bool(own_bad)):
            self._streak = 0
            return
        bad, ranks = _gather_bad_batches(own_bad, data_batch)
        if self._scaler_backoff(runner, bad):
            return
        self._streak += 1
        saved = self._save_batch(runner, bad, ranks)
        if self._step_was_skipped(runner) and self._streak < self.patience:
            print_log(f"seglab: non-finite {', '.join(bad)} at iter {runner.iter + 1}; the "
                      f"step was skipped ({self._streak}/{self.patience} in a row), batch "
                      f"listed in {saved}", logger="current", level=logging.WARNING)
            return
        shown = ", ".join(f"{k}={values[k]}" if k in own_bad else f"{k} (another rank)"
                          for k in bad)
        raise TrainingDiverged(
            f"training diverged at iter {runner.iter + 1} (epoch {runner.epoch + 1}): "
            f"{shown}. The batch's images are listed in {saved}; the last good checkpoint "
            f"is {self._last_checkpoint(runner)}. Fix: lower "
            "the LR or add/tighten optim_wrapper.clip_grad, check those images' masks "
            "(seglab data doctor), and continue with --resume.")

    @staticmethod
    def _save_batch(runner, bad: list[str], ranks: list[dict]) -> Path:
        """Rank 0 writes one record with every rank's images (all ranks get its path)."""
        from mmengine.dist import is_main_process

        target = Path(runner.work_dir) / f"nonfinite_iter_{runner.iter + 1}.json"
        if is_main_process():
            target.write_text(json.dumps({
                "iter": runner.iter + 1, "epoch": runner.epoch + 1, "terms": bad,
                "img_paths": [p for r in ranks for p in r["img_paths"]],
                "ranks": ranks}, indent=1))
        return target

    @staticmethod
    def _last_checkpoint(runner) -> str:
        pointer = Path(runner.work_dir) / "last_checkpoint"
        return pointer.read_text().strip() if pointer.is_file() else "(none yet)"
