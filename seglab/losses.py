"""Loss fixes registered over mmseg's own names, so existing configs just work.

``FocalLoss`` (``use_sigmoid=True``) in mmseg 1.2.2 crashes on the CPU with index
targets: its CPU branch takes column ``num_classes`` of the one-hot target
(``target[:, num_classes]``) instead of the first ``num_classes`` columns, so every
config with FocalLoss (seeds 000 and 001) fails with "The size of tensor a (C)
must match the size of tensor b (N)" before its first CPU step. The CUDA branch
(mmcv's kernel) is unaffected and still used on GPUs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from mmseg.models.losses import FocalLoss as MMSegFocalLoss
from mmseg.registry import MODELS


@MODELS.register_module(name="FocalLoss", force=True)
class FocalLoss(MMSegFocalLoss):
    """mmseg's FocalLoss with index targets one-hot encoded correctly on the CPU."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight=None,
                avg_factor=None, reduction_override=None, ignore_index: int = 255,
                **kwargs) -> torch.Tensor:
        if not self.use_sigmoid or pred.is_cuda or pred.shape == target.shape:
            return super().forward(pred, target, weight, avg_factor, reduction_override,
                                   ignore_index, **kwargs)
        # Hand mmseg a one-hot target of pred's shape (its dense-target path is
        # correct) and carry the ignore mask as the per-pixel weight.
        valid = target != ignore_index
        one_hot = F.one_hot(torch.where(valid, target, 0), pred.size(1))
        one_hot = one_hot.movedim(-1, 1).to(pred.dtype)
        pixel_weight = valid.reshape(-1).to(pred.dtype)
        if weight is not None:
            pixel_weight = pixel_weight * weight.reshape(-1)
        return super().forward(pred, one_hot, pixel_weight, avg_factor, reduction_override,
                               ignore_index, **kwargs)
