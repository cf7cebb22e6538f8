"""seglab's FocalLoss equals the focal-loss definition on the CPU, where mmseg 1.2.2 crashes."""

from __future__ import annotations

import pytest
import torch
from mmseg.models.losses.focal_loss import FocalLoss as MMSegFocalLoss
from torchvision.ops import sigmoid_focal_loss

import seglab.register  # noqa: F401
from seglab.losses import FocalLoss


def _inputs(classes: int = 5):
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(2, classes, 6, 7, generator=gen)
    target = torch.randint(0, classes, (2, 6, 7), generator=gen)
    target[0, :2] = 255  # ignored pixels
    return pred, target


def test_mmseg_focal_loss_fails_on_cpu_with_index_targets() -> None:
    pred, target = _inputs()
    with pytest.raises(RuntimeError, match="must match the size"):
        MMSegFocalLoss(use_sigmoid=True)(pred, target)


@pytest.mark.parametrize("gamma,alpha", [(2.0, 0.5), (1.0, 0.25)])
def test_cpu_focal_loss_matches_the_definition(gamma: float, alpha: float) -> None:
    pred, target = _inputs()
    loss = FocalLoss(use_sigmoid=True, gamma=gamma, alpha=alpha, loss_weight=0.7)(pred, target)
    flat_pred = pred.movedim(1, -1).reshape(-1, 5)
    flat_target = target.reshape(-1)
    valid = flat_target != 255
    one_hot = torch.nn.functional.one_hot(torch.where(valid, flat_target, 0), 5).float()
    per_element = sigmoid_focal_loss(flat_pred, one_hot, alpha=alpha, gamma=gamma,
                                     reduction="none") * valid[:, None]
    # mmseg averages over all N x C elements, ignored pixels contributing zero
    assert loss.item() == pytest.approx(0.7 * per_element.mean().item(), rel=1e-6)


def test_focal_loss_name_resolves_to_seglabs_class() -> None:
    from mmseg.registry import MODELS

    assert MODELS.get("FocalLoss") is FocalLoss
