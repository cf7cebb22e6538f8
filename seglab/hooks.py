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
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper
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
        # one device sync for the whole model, not one per parameter
        finite = not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())
        self.last_step_skipped = not finite
        if finite:
            super().step(**kwargs)
        else:
            self.skipped_steps += 1


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
        policy (str): ``'stop'`` (default) raises at the first non-finite step
            the optimizer did not skip; ``'skip'`` lets
            ``SkipNonFiniteOptimWrapper`` skip such steps.
        patience (int): skipped steps in a row after which the run stops.
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


RNG_KEY = "seglab_rng_state"
RNG_FORMAT = 2  # one state per rank, stored as NumPy arrays


def _uint8_cpu(state: Any) -> torch.Tensor:
    """An RNG state as the CPU ``ByteTensor`` ``set_rng_state`` insists on.

    Format-1 checkpoints stored torch tensors, which mmengine's resume maps onto the
    current GPU (``map_location='default'``); format 2 stores NumPy arrays, which no
    ``map_location`` moves.
    """
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", torch.uint8)
    return torch.from_numpy(np.ascontiguousarray(state, dtype=np.uint8))


def capture_rng_state() -> dict[str, Any]:
    """This process's torch (CPU and current CUDA device), NumPy and Python RNG states.

    Only NumPy arrays and builtins: ``weights_only`` loads them and ``map_location``
    leaves them on the CPU. The CUDA state is the current device's alone: each rank
    draws from its own GPU's generator, and a resume may see fewer GPUs.
    """
    np_state = np.random.get_state(legacy=False)
    state = {"torch": torch.get_rng_state().numpy(),
             "numpy": {"key": np_state["state"]["key"].astype(np.int64),
                       "pos": int(np_state["state"]["pos"]),
                       "has_gauss": int(np_state["has_gauss"]),
                       "gauss": float(np_state["gauss"])},
             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state().cpu().numpy()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set this process's generators from :func:`capture_rng_state`'s result (either format)."""
    torch.set_rng_state(_uint8_cpu(state["torch"]))
    np_state = state["numpy"]
    key = np_state["key"]
    key = key.cpu().numpy() if isinstance(key, torch.Tensor) else np.asarray(key)
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": key.astype(np.uint32), "pos": np_state["pos"]},
                         "has_gauss": np_state["has_gauss"], "gauss": np_state["gauss"]})
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    cuda = state.get("cuda")
    if cuda is None or not torch.cuda.is_available():
        return
    if isinstance(cuda, (list, tuple)):  # format 1: every visible GPU's state, from rank 0
        device = torch.cuda.current_device()
        if device >= len(cuda):
            return
        cuda = cuda[device]
    torch.cuda.set_rng_state(_uint8_cpu(cuda))


def gather_rng_states(own: dict[str, Any]) -> dict[str, Any]:
    """Every rank's streams, in rank order, for the checkpoint rank 0 writes.

    A collective: every rank must call it (``RNGStateHook`` does just before
    ``CheckpointHook`` saves; mmengine's ``Runner.save_checkpoint`` runs on rank 0
    alone). Without it, ranks >= 1 would resume with rank 0's streams.
    """
    from mmengine.dist import all_gather_object, get_world_size

    ranks = all_gather_object(own) if get_world_size() > 1 else [own]
    return {"format": RNG_FORMAT, "ranks": ranks}


def rng_state_for_this_rank(saved: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """This rank's saved streams and, when they cannot all be restored, why (for the log)."""
    from mmengine.dist import get_rank, get_world_size

    if saved.get("format") != RNG_FORMAT:  # format 1: one process's streams, from rank 0
        return saved, None
    ranks, rank, world = saved["ranks"], get_rank(), get_world_size()
    note = None
    if len(ranks) != world:
        note = (f"the checkpoint holds the random streams of {len(ranks)} rank(s), this run has "
                f"{world}: ranks below {min(len(ranks), world)} continue their own streams, "
                "the data split differs, so the run is not an exact continuation")
    return (ranks[rank] if rank < len(ranks) else None), note


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
    saves every rank's generator states (CPU, its own GPU, NumPy, Python) with
    each checkpoint and gives each rank its own back on resume (with another
    world size, the ranks both runs have; logged); validation runs on a copy of
    the streams, so whether it ran
    between the checkpoint and the next epoch changes nothing; the train
    sampler takes the resumed run's seed. With persistent dataloader workers,
    the workers' own streams still restart on resume.
    """

    # After every hook that draws random numbers at the end of a step (ParamSchedulerHook is
    # LOW, 70), before CheckpointHook (VERY_LOW, 90), which saves what this gathered.
    priority = 80

    def __init__(self) -> None:
        self._before_val: dict[str, Any] | None = None
        self._gathered: dict[str, Any] | None = None
        self._resumed: dict[str, Any] | None = None

    def _gather_now(self, runner, own: dict[str, Any] | None = None) -> None:
        """Collect every rank's streams while every rank is here: mmengine's
        ``Runner.save_checkpoint`` (and so ``before_save_checkpoint``) runs on rank 0
        alone, where a collective would wait forever."""
        self._gathered = gather_rng_states(own or capture_rng_state())

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: dict | None = None) -> None:
        hook = next((h for h in runner.hooks if isinstance(h, CheckpointHook)), None)
        if hook is None or hook.by_epoch:
            return
        if (hook.every_n_train_iters(runner, hook.interval, hook.save_begin)
                or (hook.save_last and hook.is_last_train_iter(runner))):
            self._gather_now(runner)

    def after_train_epoch(self, runner) -> None:
        self._gather_now(runner)  # once an epoch: whatever CheckpointHook decides next

    def before_train_iter(self, runner, batch_idx: int, data_batch: Any = None) -> None:
        self._gathered = None  # a step draws numbers: what was gathered is stale from here

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # Kept, not consumed: after a new best, CheckpointHook saves the epoch's checkpoint a
        # second time. A best checkpoint saved during validation keeps the training streams.
        checkpoint[RNG_KEY] = self._gathered or {
            "format": RNG_FORMAT, "ranks": [self._before_val or capture_rng_state()]}

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not (runner._resume and RNG_KEY in checkpoint):
            return
        self._resumed, note = rng_state_for_this_rank(checkpoint[RNG_KEY])
        if note:
            print_log(f"seglab: {note}", logger="current", level=logging.WARNING)

    def before_train(self, runner) -> None:
        # Restored here, not on load: mmengine's resume reseeds every generator after
        # loading when the config has no randomness.seed (none of configs/ has one).
        if self._resumed is not None:
            restore_rng_state(self._resumed)
            self._resumed = None
        align_sampler_seed(runner)

    def before_val_epoch(self, runner) -> None:
        self._before_val = capture_rng_state()
        self._gather_now(runner, self._before_val)  # for a best checkpoint saved after it

    def after_val_epoch(self, runner, metrics: dict | None = None) -> None:
        if self._before_val is not None:
            restore_rng_state(self._before_val)
            self._before_val = None
