"""``SkipNonFiniteOptimWrapper``: fp32 runs skip a step whose gradients are NaN/Inf."""

from __future__ import annotations

from typing import Any

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class SkipNonFiniteOptimWrapper(OptimWrapper):
    """``OptimWrapper`` that leaves the weights alone when a gradient is NaN/Inf.

    What AMP's loss scaler does for fp16 overflow, for fp32 runs: the step is
    skipped (gradients are zeroed as usual), ``skipped_steps`` counts it, and
    ``NonFiniteLossHook(policy='skip')`` decides when skipping becomes divergence.

    Configured exactly as ``OptimWrapper``
    (``optim_wrapper = dict(type='SkipNonFiniteOptimWrapper', optimizer=...)``).

    Args:
        optimizer (dict or Optimizer): the optimizer (a config, which the runner
            builds).
        accumulative_counts (int): steps whose gradients are accumulated before
            each update. Defaults to 1.
        clip_grad (dict, optional): gradient clipping, as ``OptimWrapper`` takes
            it (e.g. ``dict(max_norm=1.0)``). Defaults to None.
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
