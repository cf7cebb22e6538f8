"""Training hooks seglab adds to every run."""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmengine.registry import HOOKS, OPTIM_WRAPPERS

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


@OPTIM_WRAPPERS.register_module()
class SkipNonFiniteOptimWrapper(OptimWrapper):
    """``OptimWrapper`` that leaves the weights alone when a gradient is NaN/Inf.

    What AMP's loss scaler does for fp16 overflow, for fp32 runs: the step is
    skipped (gradients are zeroed as usual), ``skipped_steps`` counts it, and
    ``NonFiniteLossHook(policy='skip')`` decides when skipping becomes divergence.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skipped_steps = 0
        self.last_step_skipped = False

    def step(self, **kwargs: Any) -> None:
        grads = [p.grad for group in self.optimizer.param_groups for p in group["params"]
                 if p.grad is not None]
        finite = all(bool(torch.isfinite(g).all()) for g in grads)
        self.last_step_skipped = not finite
        if finite:
            super().step(**kwargs)
        else:
            self.skipped_steps += 1


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stop at the first non-finite loss term or gradient norm (seed 000 V1.3).

    Names the term, saves the batch's image paths next to the checkpoints, and
    raises before the epoch's checkpoint is written, so the newest checkpoint on
    disk is the last good one. Steps whose update was skipped are tolerated up
    to ``patience`` in a row: under AMP, the dynamic loss scaler skips steps
    whose gradients overflow (normal); with ``policy='skip'``,
    ``SkipNonFiniteOptimWrapper`` skips non-finite steps in fp32 runs and every
    skipped batch is saved for inspection.
    """

    priority = "VERY_HIGH"  # before CheckpointHook and LoggerHook see the iteration

    def __init__(self, policy: str = "stop", patience: int = 5) -> None:
        if policy not in ("stop", "skip"):
            raise ValueError(f"NonFiniteLossHook policy={policy!r}: use 'stop' or 'skip'")
        self.policy, self.patience = policy, patience
        self._streak = 0

    def _step_was_skipped(self, runner) -> bool:
        wrapper = runner.optim_wrapper
        if type(wrapper).__name__ == "AmpOptimWrapper":
            return True  # the scaler skips non-finite steps itself
        return self.policy == "skip" and getattr(wrapper, "last_step_skipped", False)

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: dict | None = None) -> None:
        values = {k: v for k, v in (outputs or {}).items() if "loss" in k}
        scalars = runner.message_hub.log_scalars  # train/grad_norm exists with clip_grad
        if "train/grad_norm" in scalars:
            values["grad_norm"] = scalars["train/grad_norm"].current()
        bad = sorted(k for k, v in values.items() if not _is_finite(v))
        if not bad:
            self._streak = 0
            return
        self._streak += 1
        if self._step_was_skipped(runner) and self._streak < self.patience:
            saved = self._save_batch(runner, data_batch, bad)
            print_log(f"seglab: non-finite {', '.join(bad)} at iter {runner.iter + 1}; the "
                      f"step was skipped ({self._streak}/{self.patience} in a row), batch "
                      f"listed in {saved}", logger="current", level=logging.WARNING)
            return
        saved = self._save_batch(runner, data_batch, bad)
        raise TrainingDiverged(
            f"training diverged at iter {runner.iter + 1} (epoch {runner.epoch + 1}): "
            f"{', '.join(f'{k}={values[k]}' for k in bad)}. The batch's images are listed in "
            f"{saved}; the last good checkpoint is {self._last_checkpoint(runner)}. Fix: lower "
            "the LR or add/tighten optim_wrapper.clip_grad, check those images' masks "
            "(seglab data doctor), and continue with --resume.")

    @staticmethod
    def _save_batch(runner, data_batch: Any, bad: list[str]) -> Path:
        samples = (data_batch or {}).get("data_samples", []) if isinstance(data_batch, dict) \
            else []
        paths = [s.metainfo.get("img_path") for s in samples if hasattr(s, "metainfo")]
        target = Path(runner.work_dir) / f"nonfinite_iter_{runner.iter + 1}.json"
        target.write_text(json.dumps({"iter": runner.iter + 1, "epoch": runner.epoch + 1,
                                      "terms": bad, "img_paths": paths}, indent=1))
        return target

    @staticmethod
    def _last_checkpoint(runner) -> str:
        pointer = Path(runner.work_dir) / "last_checkpoint"
        return pointer.read_text().strip() if pointer.is_file() else "(none yet)"


RNG_KEY = "seglab_rng_state"


def capture_rng_state() -> dict[str, Any]:
    """Torch (CPU and CUDA), NumPy and Python RNG states, in types ``weights_only`` loads."""
    np_state = np.random.get_state(legacy=False)
    state = {"torch": torch.get_rng_state(),
             "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                       "pos": int(np_state["state"]["pos"]),
                       "has_gauss": int(np_state["has_gauss"]),
                       "gauss": float(np_state["gauss"])},
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": np_state["key"].numpy().astype(np.uint32),
                                   "pos": np_state["pos"]},
                         "has_gauss": np_state["has_gauss"], "gauss": np_state["gauss"]})
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def align_sampler_seed(runner) -> None:
    """Give the train sampler the resumed run's seed.

    mmengine builds the train dataloader before ``resume`` reads the checkpoint's
    seed, so without ``randomness.seed`` in the config a resumed run shuffles
    with a new random seed: different batches than the run it continues.
    """
    sampler = getattr(runner.train_dataloader, "sampler", None)
    if (not runner._resume or getattr(sampler, "seed", runner.seed) == runner.seed
            or runner._randomness_cfg.get("diff_rank_seed", False)):
        return
    print_log(f"seglab: train sampler seed {sampler.seed} -> {runner.seed} (the resumed "
              "run's), so the data order continues", logger="current")
    sampler.seed = runner.seed
    if hasattr(sampler, "_indices_of_rank"):  # InfiniteSampler made its stream at build time
        sampler.indices = sampler._indices_of_rank()


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Make ``--resume`` continue the random streams, not restart them.

    mmengine's checkpoints keep the seed but not the generators' positions, so a
    resumed run draws different dropout/drop-path masks and (with
    ``num_workers=0``) different augmentations than the run it continues. This
    saves every generator's state with each checkpoint and restores it on
    resume; validation runs on a copy of the streams, so whether it ran
    between the checkpoint and the next epoch changes nothing; the train
    sampler takes the resumed run's seed. With persistent dataloader workers,
    the workers' own streams still restart on resume.
    """

    priority = "VERY_LOW"  # capture after every other hook has drawn its numbers

    def __init__(self) -> None:
        self._before_val: dict[str, Any] | None = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # a best-checkpoint saved during validation keeps the training streams
        checkpoint[RNG_KEY] = self._before_val or capture_rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if runner._resume and RNG_KEY in checkpoint:
            restore_rng_state(checkpoint[RNG_KEY])

    def before_train(self, runner) -> None:
        align_sampler_seed(runner)

    def before_val_epoch(self, runner) -> None:
        self._before_val = capture_rng_state()

    def after_val_epoch(self, runner, metrics: dict | None = None) -> None:
        if self._before_val is not None:
            restore_rng_state(self._before_val)
            self._before_val = None
