"""Sigmoid focal loss registered over mmseg's ``FocalLoss``, so existing configs just work.

mmseg 1.2.2's ``FocalLoss(use_sigmoid=True)`` has two branches, and each fails somewhere:

* CUDA tensors go to mmcv's ``sigmoid_focal_loss`` kernel. The kernel is missing when mmcv
  was built without CUDA ops ("sigmoid_focal_loss_forward_impl: implementation for device
  cuda:0 not found", open-mmlab/mmsegmentation #2250, #3683) and is compiled only for
  float32/float16/float64, so bf16 AMP fails with "not implemented for 'BFloat16'".
* Every other device goes to mmseg's pure-PyTorch branch, which crashes with index targets:
  it takes column ``num_classes`` of the one-hot target instead of the first ``num_classes``
  columns ("The size of tensor a (C) must match the size of tensor b (N)"), so every config
  with FocalLoss (seeds 000 and 001) fails before its first CPU step.

seglab's ``FocalLoss`` keeps mmseg's own path wherever mmcv's kernel runs (CUDA build, CUDA
tensor, kernel dtype) and computes everything else with :func:`sigmoid_focal_loss_pytorch`,
which gives the kernel's numbers with mmseg's semantics on any device and dtype. Each reason
for the switch is logged once per process.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from mmcv import ops as mmcv_ops
from mmengine.logging import print_log
from mmseg.models.losses import FocalLoss as MMSegFocalLoss
from mmseg.models.losses.utils import weight_reduce_loss
from mmseg.registry import MODELS

# What mmcv's CUDA launcher dispatches on (AT_DISPATCH_FLOATING_TYPES_AND_HALF).
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.float64)
_REDUCTIONS = (None, "none", "mean", "sum")
_logged_reasons: set[str] = set()


def _kernel_gap(device_type: str, dtype: torch.dtype) -> str | None:
    """Why mmseg's kernel path cannot run for this device and dtype; None when it can."""
    if device_type != "cuda":
        return (f"mmseg 1.2.2 uses mmcv's sigmoid_focal_loss kernel only for CUDA tensors and "
                f"its own {device_type} branch crashes on index targets")
    # Asked on every call rather than cached so that tests can fake a CPU-only build.
    if mmcv_ops.get_compiling_cuda_version() == "not available":
        return "mmcv has no CUDA kernel for sigmoid_focal_loss (mmcv was built without CUDA ops)"
    if torch.cuda.is_available():  # a CUDA build for other GPUs: "no kernel image is available"
        from seglab.platform.mmcv_ops import cuda_kernel_gap

        if gap := cuda_kernel_gap():
            return f"mmcv's sigmoid_focal_loss kernel cannot run on this GPU ({gap})"
    if dtype not in _KERNEL_DTYPES:
        return (f"{str(dtype).removeprefix('torch.')} is not supported by mmcv's "
                f"sigmoid_focal_loss kernel (float32/float16/float64 only)")
    return None


def mmcv_focal_kernel_supports(device_type: str, dtype: torch.dtype) -> bool:
    """Whether seglab's ``FocalLoss`` runs mmseg's own path (mmcv's kernel) for such a tensor.

    True only for CUDA tensors of float32/float16/float64 with an mmcv built with CUDA ops.
    mmseg 1.2.2 never uses mmcv's kernel off CUDA (mmcv 2.1.0 has none for the CPU either:
    "sigmoid_focal_loss_forward_impl: implementation for device cpu not found"), so every
    other device gets seglab's pure-PyTorch loss.

    Args:
        device_type: ``tensor.device.type``, e.g. ``"cuda"`` or ``"cpu"``.
        dtype: the prediction's dtype.
    """
    return _kernel_gap(device_type, dtype) is None


def _log_fallback_once(reason: str, device_type: str) -> None:
    if reason in _logged_reasons:
        return
    _logged_reasons.add(reason)
    # On a GPU the switch costs speed and memory, so it should stand out there.
    level = logging.WARNING if device_type == "cuda" else logging.INFO
    print_log(f"FocalLoss: {reason}; using seglab's pure-PyTorch sigmoid focal loss",
              logger="current", level=level)


def _loss_weight(weight: torch.Tensor, num_rows: int, num_classes: int) -> torch.Tensor:
    """``weight`` as a 2-D tensor broadcasting to the (N, C) loss, with mmseg's rules."""
    if weight.dim() == 1 and weight.size(0) == num_rows:
        weight = weight[:, None]  # one weight per pixel
    if (weight.dim() != 2 or weight.size(0) not in (1, num_rows)
            or weight.size(1) not in (1, num_classes)):
        raise ValueError(
            f"FocalLoss weight of shape {tuple(weight.shape)} does not fit the loss of shape "
            f"(N, C) = ({num_rows}, {num_classes}): give (N,), (N, 1), (N, C) or (1, C), or a "
            f"per-pixel map shaped like the label map")
    return weight


def sigmoid_focal_loss_pytorch(
    pred: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    gamma: float = 2.0,
    alpha: float | list[float] = 0.5,
    class_weight: list[float] | None = None,
    valid_mask: torch.Tensor | None = None,
    reduction: str = "mean",
    avg_factor: float | None = None,
) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al. 2017) with mmseg's weighting, in plain PyTorch.

    Per element ``-alpha_t * (1 - p_t) ** gamma * log(p_t)``, as mmcv's kernel and
    ``torchvision.ops.sigmoid_focal_loss`` compute it, then weighted and reduced as mmseg's
    ``sigmoid_focal_loss`` does. It runs on any device and dtype: the arithmetic is done in
    float32 (float64 stays float64) because fp16/bf16 lose the small per-element terms, and
    the loss comes back in that precision, as autocast does for its own losses.

    Args:
        pred: logits of shape (N, C).
        target: (N, C) one-hot (or soft) targets; soft targets enter the formula as they are,
            as in mmseg's CPU branch and torchvision (mmcv's kernel takes their argmax).
        weight: (N,), (N, 1), (N, C) or (1, C) weights multiplied into the loss.
        gamma: focusing exponent.
        alpha: weight of the positive term, one float or one per class (the negative term
            gets ``1 - alpha``).
        class_weight: one weight per class, multiplied into the loss.
        valid_mask: (N, 1) mask, 0 for ignored pixels.
        reduction: ``"none"``, ``"mean"`` or ``"sum"``; ``"mean"`` averages over all N x C
            elements, ignored ones included as zeros, as mmseg does.
        avg_factor: divisor replacing N x C for ``"mean"``.
    """
    compute_dtype = torch.promote_types(pred.dtype, torch.float32)
    logits = pred.to(compute_dtype)
    target = target.to(compute_dtype)
    num_rows, num_classes = logits.shape
    # log(p_t) from the logits rather than from p, and 1 - p as sigmoid(-x): no cancellation.
    log_pt = -F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p, one_minus_p = torch.sigmoid(logits), torch.sigmoid(-logits)
    one_minus_pt = one_minus_p * target + p * (1 - target)
    # The floor (the kernel clamps its logs the same way) keeps the backward of pow finite for
    # gamma < 1 where a logit saturates; it changes no value above ~1e-38.
    modulating = one_minus_pt.clamp_min(torch.finfo(compute_dtype).tiny).pow(gamma)
    alpha_c = logits.new_tensor(alpha)  # scalar, or (C,) broadcast over the columns
    alpha_t = alpha_c * target + (1 - alpha_c) * (1 - target)
    loss = -alpha_t * modulating * log_pt

    final_weight = logits.new_ones(1, num_classes)
    if weight is not None:
        final_weight = final_weight * _loss_weight(weight, num_rows, num_classes).to(loss)
    if class_weight is not None:
        final_weight = final_weight * logits.new_tensor(class_weight)
    if valid_mask is not None:
        final_weight = final_weight * valid_mask.to(loss)
    return weight_reduce_loss(loss, final_weight, reduction, avg_factor)


@MODELS.register_module(name="FocalLoss", force=True)
class FocalLoss(MMSegFocalLoss):
    """mmseg's sigmoid FocalLoss, falling back to plain PyTorch where mmcv's kernel cannot run.

    Constructed exactly as ``mmseg.models.losses.FocalLoss``; gives mmseg's CUDA results on
    every device and dtype.

    Args:
        use_sigmoid (bool): must be True (mmseg implements only the sigmoid focal loss).
            Defaults to True.
        gamma (float): focusing exponent. Defaults to 2.0.
        alpha (float or list[float]): weight of the positive term, a float or one per
            class; the negative term gets ``1 - alpha``. Defaults to 0.5.
        reduction (str): ``"none"``, ``"mean"`` or ``"sum"``. Defaults to ``"mean"``.
        class_weight (list[float], optional): one weight per class. Defaults to None.
        loss_weight (float): factor on the loss. Defaults to 1.0.
        loss_name (str): name of the loss term; ``loss_`` first puts it in the backward
            pass. Defaults to ``"loss_focal"``.
    """

    def forward(self, pred: torch.Tensor, target: torch.Tensor,
                weight: torch.Tensor | None = None, avg_factor: float | None = None,
                reduction_override: str | None = None, ignore_index: int = 255,
                **kwargs) -> torch.Tensor:
        """Focal loss of ``pred`` against ``target``.

        Args:
            pred: logits (B, C, d_1, ..., d_k).
            target: labels (B, d_1, ..., d_k), label C meaning background (and with C == 1,
                label 1 the foreground), or one-hot/soft targets shaped like ``pred``.
            weight: (N,), (N, 1), (N, C) or (1, C) with N = B x d_1 x ... x d_k, or a
                per-pixel map shaped like the labels (what mmseg's OHEM sampler gives).
            avg_factor: divisor replacing N x C for the mean.
            reduction_override: overrides ``reduction`` for this call.
            ignore_index: label whose pixels contribute nothing (with dense targets: the
                argmax class, as in mmseg).

        Returns:
            The loss times ``loss_weight``; with reduction ``"none"`` shaped like ``pred``.
        """
        if weight is not None and weight.dim() > 2 and weight.shape == pred.shape[:1] + \
                pred.shape[2:]:
            # A per-pixel map shaped like the label map (mmseg's OHEM sampler gives one) is
            # flattened to mmseg's (N,), which both paths accept; mmseg's own asserts on it.
            weight = weight.reshape(-1)
        reason = _kernel_gap(pred.device.type, pred.dtype)
        if not self.use_sigmoid or reason is None:
            return super().forward(pred, target, weight, avg_factor, reduction_override,
                                   ignore_index, **kwargs)
        assert isinstance(ignore_index, int), "ignore_index must be of type int"
        assert reduction_override in _REDUCTIONS, \
            "reduction should be 'none', 'mean' or 'sum'"
        dense = pred.shape == target.shape
        assert dense or (pred.size(0) == target.size(0)
                         and pred.shape[2:] == target.shape[1:]), \
            "The shape of pred doesn't match the shape of target"
        _log_fallback_once(reason, pred.device.type)

        num_classes = pred.size(1)
        # (B, C, d_1, ..., d_k) -> (N, C) with the pixel order of mmseg's transpose/reshape.
        flat_pred = pred.movedim(1, -1).reshape(-1, num_classes)
        if dense:
            flat_target = target.movedim(1, -1).reshape(-1, num_classes)
            # mmseg compares the argmax class with ignore_index for dense targets.
            valid = flat_target.argmax(dim=1) != ignore_index
        else:
            labels = target.reshape(-1)
            valid = labels != ignore_index
            # As mmseg's CUDA branch encodes labels: label num_classes is background (negative
            # in every column) and a single channel is the foreground of labels 0/1.
            one_hot = F.one_hot(torch.where(valid, labels, 0).long(), num_classes + 1)
            flat_target = one_hot[:, 1:] if num_classes == 1 else one_hot[:, :num_classes]
        reduction = reduction_override or self.reduction
        loss = self.loss_weight * sigmoid_focal_loss_pytorch(
            flat_pred, flat_target, weight, gamma=self.gamma, alpha=self.alpha,
            class_weight=self.class_weight, valid_mask=valid[:, None], reduction=reduction,
            avg_factor=avg_factor)
        if reduction == "none":  # back to pred's layout
            loss = loss.reshape(pred.shape[:1] + pred.shape[2:] + (num_classes,)).movedim(-1, 1)
        return loss
