"""``DeferredRuntimeInfoHook``: the loss terms and gradient norm reach the message hub at log
time, in one host sync, instead of one ``.item()`` per value every step."""

from __future__ import annotations

import functools
from typing import Any

import torch
from mmengine.config import Config, ConfigDict
from mmengine.hooks import LoggerHook, RuntimeInfoHook
from mmengine.optim import OptimWrapper
from mmengine.registry import HOOKS
from mmengine.utils import apply_to

DEFAULT_INTERVAL = 10  # mmengine's LoggerHook default, for a run without one


def logger_interval(runner: Any) -> int:
    """The train log interval of ``runner``'s ``LoggerHook`` (mmengine's default without one)."""
    for hook in runner.hooks:
        if isinstance(hook, LoggerHook):
            return max(int(hook.interval), 1)
    return DEFAULT_INTERVAL


def is_log_step(runner: Any, batch_idx: int, interval: int) -> bool:
    """A step after which ``LoggerHook`` may log (its inner-iteration or epoch-end rule) or
    the run's iteration count is a multiple of ``interval``."""
    loader = getattr(runner, "train_dataloader", None)
    try:
        last = loader is not None and batch_idx + 1 == len(loader)
    except TypeError:  # a loader without a length
        last = False
    return (batch_idx + 1) % interval == 0 or (runner.iter + 1) % interval == 0 or last


def _host_values(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``steps`` with every one-element tensor replaced by its Python number: one copy to the
    host for all of them (float64 holds float32, bf16 and ints below 2**53 exactly, so the
    numbers are what ``.item()`` gives)."""
    tensors = [v for step in steps for v in step.values()
               if isinstance(v, torch.Tensor) and v.numel() == 1]
    if not tensors:
        return steps
    numbers: dict[int, Any] = {}
    for device in {t.device for t in tensors}:
        group = [t for t in tensors if t.device == device]
        flat = torch.cat([t.detach().reshape(1).to(torch.float64) for t in group]).tolist()
        for tensor, number in zip(group, flat, strict=True):
            is_int = not (tensor.is_floating_point() or tensor.is_complex())
            numbers[id(tensor)] = int(number) if is_int else number
    return [{k: numbers.get(id(v), v) if isinstance(v, torch.Tensor) else v
             for k, v in step.items()} for step in steps]


def detached(value: Any) -> Any:
    """``value`` without its autograd graph (a held loss must not keep one alive)."""
    return value.detach() if isinstance(value, torch.Tensor) else value


def _clip_grad_deferred(wrapper: OptimWrapper, record: Any) -> None:
    """mmengine's ``OptimWrapper._clip_grad`` with the norm kept as a tensor (mmengine calls
    ``float()`` on it: a host sync every step)."""
    params = [p for group in wrapper.optimizer.param_groups for p in group["params"]
              if p.requires_grad and p.grad is not None]
    if params:
        grad = wrapper.clip_func(params, **wrapper.clip_grad_kwargs)
        if grad is not None:  # clip_grad_value_ returns None
            record(f"train/{wrapper.grad_name}", grad.detach())


@HOOKS.register_module()
class DeferredRuntimeInfoHook(RuntimeInfoHook):
    """mmengine's ``RuntimeInfoHook``, holding each step's scalars until they are read.

    mmengine writes every loss term of every step into the message hub with ``.item()``,
    and the clipped gradient norm with ``float()``: each waits for the GPU to finish the
    step before the host can queue the next one. This hook keeps them as tensors and hands
    them over, in order and in one copy to the host, when something reads them: after a
    step the ``LoggerHook`` logs, before a checkpoint is saved (it holds the hub), at the
    end of each epoch and of training. The logged numbers and smoothing windows are the
    same; between log steps the hub's history is behind by the steps held.

    Args:
        interval (int, optional): hand over at least every ``interval`` iterations.
            Defaults to the ``LoggerHook``'s interval.
    """

    def __init__(self, interval: int | None = None) -> None:
        super().__init__()
        self.interval = interval
        self._held: list[dict[str, Any]] = []
        self._step: dict[str, Any] = {}
        self.last_step: dict[str, Any] = {}  # the last finished step's scalars, as tensors

    def _record(self, key: str, value: Any) -> None:
        self._step[key] = value

    def before_train(self, runner: Any) -> None:
        super().before_train(runner)
        self._log_interval = logger_interval(runner)  # the LoggerHook reads the hub then
        self.interval = self.interval or self._log_interval
        wrapper = runner.optim_wrapper
        # only mmengine's own clipping is replaced; a wrapper that clips its own way keeps it
        if (isinstance(wrapper, OptimWrapper) and wrapper.clip_grad_kwargs
                and type(wrapper)._clip_grad is OptimWrapper._clip_grad):
            wrapper._clip_grad = functools.partial(_clip_grad_deferred, wrapper, self._record)

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                         outputs: dict | None = None) -> None:
        for key, value in (outputs or {}).items():  # held detached: no graph kept alive
            self._step[f"train/{key}"] = detached(value)
        self.last_step, self._step = self._step, {}
        self._held.append(self.last_step)
        if (is_log_step(runner, batch_idx, self.interval)
                or is_log_step(runner, batch_idx, self._log_interval)):
            self.hand_over(runner)

    def hand_over(self, runner: Any) -> None:
        """Write the held steps' scalars into the message hub (one host sync)."""
        held, self._held = self._held, []
        for step in _host_values(held):
            for key, value in step.items():
                runner.message_hub.update_scalar(key, value)

    def before_save_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        self.hand_over(runner)
        if "message_hub" in checkpoint:  # taken before this hook ran; on the CPU, as mmengine
            checkpoint["message_hub"] = apply_to(runner.message_hub.state_dict(),
                                                 lambda x: hasattr(x, "cpu"), lambda x: x.cpu())

    def after_train_epoch(self, runner: Any) -> None:
        self.hand_over(runner)

    def after_train(self, runner: Any) -> None:
        self.hand_over(runner)
        super().after_train(runner)


def use_deferred_runtime_info(cfg: Config) -> list[str]:
    """Make ``DeferredRuntimeInfoHook`` the run's ``runtime_info`` hook unless the config
    chose one of its own; returns the note."""
    hooks = cfg.setdefault("default_hooks", ConfigDict())
    chosen = hooks.get("runtime_info", ConfigDict())
    if chosen is None or chosen.get("type", "RuntimeInfoHook") != "RuntimeInfoHook":
        return []  # turned off (None) or a hook of the config's own
    hooks.runtime_info = ConfigDict({**chosen, "type": "DeferredRuntimeInfoHook"})
    return ["default_hooks.runtime_info RuntimeInfoHook -> DeferredRuntimeInfoHook (the same "
            "logged numbers; one host sync per log interval instead of one per value a step)"]
