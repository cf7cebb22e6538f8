"""mmseg's pixel accuracy without a data-dependent shape: the same value, no host sync.

mmseg's ``accuracy`` (logged as ``acc_seg`` by every decode head, every step) drops the
ignored pixels with a boolean mask (``correct[:, target != ignore_index]``) and counts them
with ``.numel()``: a tensor whose size depends on the data, so on a GPU the host waits for the
step's kernels to finish before it can even queue the next operation. ``sync_free_accuracy``
multiplies by the mask instead and counts it with a sum, on the device: the same
correct/total fraction, computed in the same dtypes (the total in float64, as Python's float
does in mmseg), so the logged value is bitwise the same.

:func:`use_sync_free_accuracy` swaps it into mmseg's decode heads for the duration of a run.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator

import torch

# The modules that call ``accuracy`` by the name they imported (``from ..losses import
# accuracy``): the swap replaces that name there.
CALLERS = tuple(f"mmseg.models.decode_heads.{name}"
                for name in ("decode_head", "point_head", "pid_head", "ddr_head"))


def sync_free_accuracy(pred: torch.Tensor, target: torch.Tensor,
                       topk: int | tuple[int, ...] = 1, thresh: float | None = None,
                       ignore_index: int | None = None) -> torch.Tensor | list[torch.Tensor]:
    """mmseg's ``accuracy(pred, target, topk, thresh, ignore_index)``, with every shape
    known before the data is: percent of (non-ignored) pixels whose label is in the top k.
    """
    single = isinstance(topk, int)
    topk = (topk,) if single else topk
    if pred.size(0) == 0:
        values = [pred.new_tensor(0.0) for _ in topk]
        return values[0] if single else values
    if pred.ndim != target.ndim + 1 or pred.size(0) != target.size(0):
        raise ValueError(f"accuracy: pred {tuple(pred.shape)} and target "
                         f"{tuple(target.shape)} do not match (N, C, ...) and (N, ...)")
    if max(topk) > pred.size(1):
        raise ValueError(f"accuracy: maxk {max(topk)} exceeds pred dimension {pred.size(1)}")
    pred_value, pred_label = pred.topk(max(topk), dim=1)
    pred_label = pred_label.transpose(0, 1)  # (maxk, N, ...)
    correct = pred_label.eq(target.unsqueeze(0).expand_as(pred_label))
    if thresh is not None:
        correct = correct & (pred_value > thresh).t()  # mmseg's expression, as it is
    eps = torch.finfo(torch.float32).eps
    if ignore_index is None:
        scale = 100.0 / (target.numel() + eps)  # a static size: mmseg's Python float
    else:
        valid = target != ignore_index
        correct = correct & valid.unsqueeze(0)
        # counted on the device, in float64 as mmseg's Python float
        scale = 100.0 / (valid.sum(dtype=torch.float64) + eps)
    values = [(correct[:k].reshape(-1).float().sum(0, keepdim=True) + eps).mul_(scale)
              for k in topk]
    return values[0] if single else values


@contextlib.contextmanager
def use_sync_free_accuracy() -> Iterator[list[str]]:
    """Within the block, mmseg's decode heads compute ``acc_seg`` with
    :func:`sync_free_accuracy`; yields the modules swapped. A caller's own ``accuracy`` (a
    module that does not hold mmseg's function under that name) is left alone."""
    from mmseg.models.losses import accuracy as mmseg_accuracy

    swapped = []
    for name in CALLERS:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if getattr(module, "accuracy", None) is mmseg_accuracy:
            module.accuracy = sync_free_accuracy
            swapped.append(module)
    try:
        yield [m.__name__ for m in swapped]
    finally:
        for module in swapped:
            module.accuracy = mmseg_accuracy
