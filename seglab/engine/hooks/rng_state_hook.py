"""``RNGStateHook``: ``--resume`` continues every rank's random streams (see
:mod:`seglab.engine.rng`)."""

from __future__ import annotations

import logging
from typing import Any

from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from seglab.engine.rng import (
    RNG_FORMAT,
    RNG_KEY,
    align_sampler_seed,
    capture_rng_state,
    gather_rng_states,
    restore_rng_state,
    rng_state_for_this_rank,
)
from seglab.engine.runner_fields import runner_arg


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

    Takes no arguments: ``custom_hooks = [dict(type='RNGStateHook')]``.
    """

    # After every hook that draws random numbers at the end of a step (ParamSchedulerHook is
    # LOW, 70), before CheckpointHook (VERY_LOW, 90), which saves what this gathered.
    priority = 80

    def __init__(self) -> None:
        self._before_val: dict[str, Any] | None = None
        self._gathered: dict[str, Any] | None = None
        self._resumed: dict[str, Any] | None = None

    def gather_now(self, runner, own: dict[str, Any] | None = None) -> None:
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
            self.gather_now(runner)

    def after_train_epoch(self, runner) -> None:
        self.gather_now(runner)  # once an epoch: whatever CheckpointHook decides next

    def before_train_iter(self, runner, batch_idx: int, data_batch: Any = None) -> None:
        self._gathered = None  # a step draws numbers: what was gathered is stale from here

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # Kept, not consumed: after a new best, CheckpointHook saves the epoch's checkpoint a
        # second time. A best checkpoint saved during validation keeps the training streams.
        checkpoint[RNG_KEY] = self._gathered or {
            "format": RNG_FORMAT, "ranks": [self._before_val or capture_rng_state()]}

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not (runner_arg(runner, "resume") and RNG_KEY in checkpoint):
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
        self.gather_now(runner, self._before_val)  # for a best checkpoint saved after it

    def after_val_epoch(self, runner, metrics: dict | None = None) -> None:
        if self._before_val is not None:
            restore_rng_state(self._before_val)
            self._before_val = None
