"""seglab's FocalLoss: mmseg's CUDA-kernel results on any device and dtype, where mmseg 1.2.2
crashes (CPU), mmcv lacks the kernel (CUDA-less build) or the dtype (bf16)."""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import mmcv.ops
import pytest
import torch
import torch.nn.functional as F
from mmseg.models.losses.focal_loss import FocalLoss as MMSegFocalLoss
from torchvision.ops import sigmoid_focal_loss

import seglab.register  # noqa: F401
from seglab.models import focal_loss as losses
from seglab.models.focal_loss import FocalLoss

FIXTURE = Path(__file__).parent.parent / "fixtures" / "mmseg_focal_loss_cuda_reference.json"
TOL = 1e-6


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


# --- the pure-PyTorch fallback (seglab.models.focal_loss.sigmoid_focal_loss_pytorch) ---


@pytest.fixture
def fresh_log(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Forget which fallback reasons were logged and record what is logged from now on."""
    records: list[tuple[str, int]] = []
    monkeypatch.setattr(losses, "_logged_reasons", set())
    monkeypatch.setattr(losses, "print_log",
                        lambda msg, logger=None, level=0: records.append((msg, level)))
    return records


def _reference(pred, target, *, gamma=2.0, alpha=0.5, class_weight=None, weight=None,
               ignore_index=255, reduction="mean", avg_factor=None, loss_weight=1.0):
    """mmseg's weighting and reduction around torchvision's per-element focal loss."""
    classes = pred.size(1)
    flat_pred = pred.movedim(1, -1).reshape(-1, classes).double()
    labels = target.reshape(-1)
    valid = labels != ignore_index
    one_hot = F.one_hot(torch.where(valid, labels, 0), classes).double()
    # torchvision takes one scalar alpha: apply a per-class alpha by hand.
    per_element = sigmoid_focal_loss(flat_pred, one_hot, alpha=-1, gamma=gamma, reduction="none")
    alpha = torch.as_tensor(alpha, dtype=torch.float64)
    per_element = per_element * (alpha * one_hot + (1 - alpha) * (1 - one_hot))
    per_element = per_element * valid[:, None]
    if class_weight is not None:
        per_element = per_element * torch.tensor(class_weight, dtype=torch.float64)
    if weight is not None:
        per_element = per_element * weight.double().reshape(flat_pred.size(0), -1)
    if reduction == "none":
        shape = pred.shape[:1] + pred.shape[2:] + (classes,)
        return loss_weight * per_element.reshape(shape).movedim(-1, 1)
    if avg_factor is not None:
        return loss_weight * per_element.sum() / (avg_factor + torch.finfo(torch.float32).eps)
    return loss_weight * (per_element.mean() if reduction == "mean" else per_element.sum())


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def _within_tol(got: torch.Tensor, expected: torch.Tensor) -> bool:
    """Within 1e-6, relative for values above 1 (a float32 sum of hundreds of terms)."""
    return _max_abs_diff(got, expected) < TOL * max(1.0, expected.abs().max().item())


def test_recorded_cuda_kernel_results_are_reproduced() -> None:
    """mmseg's test_same grid: 3 weights x 2 class weights x 2 target forms x 2 ignore
    indices x float/list alpha x 3 reductions against numbers recorded from mmcv's kernel."""
    ref = json.loads(FIXTURE.read_text())
    pred = torch.tensor(ref["pred"])
    target = torch.tensor(ref["target"])
    targets = {"index": target, "one-hot": F.one_hot(target, 3).permute(0, 3, 1, 2)}
    weights = {name: torch.tensor(w) for name, w in ref["weights"].items()}
    loss = FocalLoss(use_sigmoid=True, gamma=2.0)
    checked = 0
    for case in ref["cases"]:
        weight = weights[case["weight"]] if case["weight"] else None
        loss.class_weight = ref["class_weight"] if case["class_weight"] else None
        for reduction, (form, tgt), ignore_index, alpha in itertools.product(
                ("none", "mean", "sum"), targets.items(), (255, 4), ([0.4] * 3, 0.4)):
            loss.alpha = alpha
            got = loss(pred, tgt, weight=weight, ignore_index=ignore_index,
                       reduction_override=reduction)
            expected = torch.tensor(case[reduction])
            assert got.shape == expected.shape
            assert _within_tol(got, expected), (case["weight"], case["class_weight"], reduction,
                                                form, alpha)
            checked += 1
    assert checked == 144  # mmseg's 288 include each alpha twice


VARIANTS = [
    dict(),
    dict(gamma=1.0, alpha=0.25),
    dict(gamma=0.5, alpha=[0.1, 0.2, 0.3, 0.4, 0.5]),
    dict(gamma=3.0, class_weight=[1.0, 2.0, 0.5, 0.0, 3.0]),
    dict(ignore_index=2),
    dict(reduction="sum", alpha=0.75),
    dict(reduction="none", class_weight=[0.2, 0.4, 0.6, 0.8, 1.0]),
    dict(avg_factor=17.0, gamma=2.5),
    dict(loss_weight=0.3, alpha=[0.9, 0.1, 0.5, 0.5, 0.25], reduction="sum"),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(map(str, v)) or "default")
def test_fallback_matches_torchvision(variant: dict) -> None:
    pred, target = _inputs()
    target[target == 255] = variant.get("ignore_index", 255)
    cfg = {k: v for k, v in variant.items() if k in ("gamma", "alpha", "class_weight")}
    loss = FocalLoss(use_sigmoid=True, reduction=variant.get("reduction", "mean"),
                     loss_weight=variant.get("loss_weight", 1.0), **cfg)
    got = loss(pred, target, ignore_index=variant.get("ignore_index", 255),
               avg_factor=variant.get("avg_factor"))
    assert got.dtype == torch.float32
    assert _within_tol(got, _reference(pred, target, **variant))


def _kernel_formula(x: torch.Tensor, labels: torch.Tensor, gamma: float, alpha: float):
    """mmcv's sigmoid_focal_loss CUDA kernel, forward and backward (sigmoid_focal_loss_cuda_
    kernel.cuh), element by element in float64, logs clamped at FLT_MIN as there."""
    x = x.double()
    pos = labels[:, None] == torch.arange(x.size(1))
    p = torch.sigmoid(x)
    log_p = p.clamp_min(torch.finfo(torch.float32).tiny).log()
    log_q = (1 - p).clamp_min(torch.finfo(torch.float32).tiny).log()
    loss = torch.where(pos, -alpha * (1 - p) ** gamma * log_p,
                       -(1 - alpha) * p ** gamma * log_q)
    grad = torch.where(pos, -alpha * (1 - p) ** gamma * (1 - p - gamma * p * log_p),
                       -(1 - alpha) * p ** gamma * (gamma * (1 - p) * log_q - p))
    return loss, grad


def test_mmcv_has_no_cpu_sigmoid_focal_loss() -> None:
    """Why the CPU is compared with the kernel's formula and recorded numbers, not the op."""
    pred, target = _inputs()
    with pytest.raises(RuntimeError, match="not found"):
        mmcv.ops.sigmoid_focal_loss(pred.movedim(1, -1).reshape(-1, 5).contiguous(),
                                    target.reshape(-1).clamp_max(4), 2.0, 0.25, None, "none")


@pytest.mark.parametrize("gamma,alpha", [(2.0, 0.25), (1.0, 0.5), (0.5, 0.9), (3.0, 0.0)])
def test_fallback_matches_the_kernel_formula_and_gradient(gamma: float, alpha: float) -> None:
    pred, target = _inputs()
    flat_pred = (3 * pred).movedim(1, -1).reshape(-1, 5).requires_grad_()
    labels = target.reshape(-1).clamp_max(5)  # 5 = num_classes: background, as in mmseg
    ours = losses.sigmoid_focal_loss_pytorch(flat_pred, F.one_hot(labels, 6)[:, :5],
                                             gamma=gamma, alpha=alpha, reduction="none")
    ours.sum().backward()
    loss, grad = _kernel_formula(flat_pred.detach(), labels, gamma, alpha)
    assert _within_tol(ours, loss)
    # Logits reach |x| = 12 here, where float32's 1 - sigmoid(x) keeps few digits (autograd's
    # p(1 - p) and the float32 kernel alike): gradients agree to 2e-6, not 1e-6.
    assert _max_abs_diff(flat_pred.grad, grad) < 1e-5


def test_background_label_and_binary_head_encode_like_mmseg() -> None:
    """Label num_classes is negative in every column; one channel is the foreground of 0/1."""
    pred, target = _inputs()
    target[1, 0] = 5
    got = FocalLoss(use_sigmoid=True, reduction="none")(pred, target).movedim(1, -1)
    background = pred.movedim(1, -1)[target == 5].double()
    expected = sigmoid_focal_loss(background, torch.zeros_like(background), alpha=0.5,
                                  reduction="none")
    assert _max_abs_diff(got[target == 5], expected) < TOL

    binary_pred, binary_target = pred[:, :1], target.clamp_max(1)
    binary_target[0, :2] = 255
    valid = binary_target != 255
    expected = sigmoid_focal_loss(binary_pred[:, 0][valid].double(),
                                  (binary_target[valid] == 1).double(), alpha=0.5,
                                  reduction="sum") / binary_target.numel()
    got = FocalLoss(use_sigmoid=True)(binary_pred, binary_target)
    assert _max_abs_diff(got, expected) < TOL


def test_per_element_weight_with_an_index_target() -> None:
    """An (N, C) weight used to crash seglab's CPU path ('size of tensor a (90) must match
    ... (360)'); every shape mmseg accepts gives the weighted per-element loss."""
    pred, target = _inputs()
    n = target.numel()
    gen = torch.Generator().manual_seed(1)
    per_element = torch.rand(n, 5, generator=gen)
    per_pixel = torch.rand(n, generator=gen)
    loss = FocalLoss(use_sigmoid=True, reduction="none")
    unweighted = loss(pred, target)
    as_flat = unweighted.movedim(1, -1).reshape(n, 5)
    cases = {
        "(N, C)": (per_element, as_flat * per_element),
        "(N,)": (per_pixel, as_flat * per_pixel[:, None]),
        "(N, 1)": (per_pixel[:, None], as_flat * per_pixel[:, None]),
        "(1, C)": (per_element[:1], as_flat * per_element[:1]),
        "label map": (per_pixel.reshape(target.shape), as_flat * per_pixel[:, None]),
    }
    for name, (weight, expected) in cases.items():
        got = loss(pred, target, weight=weight).movedim(1, -1).reshape(n, 5)
        assert _max_abs_diff(got, expected) < TOL, name
    mean = FocalLoss(use_sigmoid=True)(pred, target, weight=per_element)
    assert _within_tol(mean, _reference(pred, target, weight=per_element))
    with pytest.raises(ValueError, match="does not fit"):
        loss(pred, target, weight=torch.ones(n, 3))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_are_computed_in_float32(dtype: torch.dtype) -> None:
    pred, target = _inputs()
    low = pred.to(dtype).requires_grad_()
    weight = torch.rand(target.numel(), 5, generator=torch.Generator().manual_seed(2)).to(dtype)
    loss = FocalLoss(use_sigmoid=True, class_weight=[1.0, 2.0, 3.0, 4.0, 5.0])
    got = loss(low, target, weight=weight)
    assert got.dtype == torch.float32
    # The only rounding is the inputs': the same numbers in float32 give the same loss.
    assert _max_abs_diff(got, loss(low.detach().float(), target, weight=weight.float())) < TOL
    got.backward()
    assert low.grad.dtype == dtype and torch.isfinite(low.grad).all() and low.grad.abs().sum() > 0


def test_bf16_autocast_training_step() -> None:
    pred, target = _inputs()
    conv = torch.nn.Conv2d(5, 5, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(pred)
        assert logits.dtype == torch.bfloat16
        loss = FocalLoss(use_sigmoid=True, alpha=[0.25] * 5)(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and conv.weight.grad is not None
    assert torch.isfinite(conv.weight.grad).all() and conv.weight.grad.abs().sum() > 0


def test_saturated_logits_keep_finite_gradients() -> None:
    """gamma < 1 differentiates (1 - p_t) ** gamma at 0 where a logit saturates."""
    pred, target = _inputs()
    pred = (pred.sign() * 200).requires_grad_()
    FocalLoss(use_sigmoid=True, gamma=0.5)(pred, target).backward()
    assert torch.isfinite(pred.grad).all()


def test_kernel_support_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mmcv.ops, "get_compiling_cuda_version", lambda: "12.1")
    for dtype in (torch.float32, torch.float16, torch.float64):
        assert losses.mmcv_focal_kernel_supports("cuda", dtype)
    assert not losses.mmcv_focal_kernel_supports("cuda", torch.bfloat16)
    assert not losses.mmcv_focal_kernel_supports("cpu", torch.float32)
    monkeypatch.setattr(mmcv.ops, "get_compiling_cuda_version", lambda: "not available")
    assert not losses.mmcv_focal_kernel_supports("cuda", torch.float32)


def _pretend_cuda(monkeypatch: pytest.MonkeyPatch, cuda_version: str) -> list[bool]:
    """Route CPU tensors as if they were CUDA ones, with mmcv's build faked; returns a list
    that records each call of mmseg's own (kernel) path."""
    gap = losses._kernel_gap
    monkeypatch.setattr(losses, "_kernel_gap", lambda device_type, dtype: gap("cuda", dtype))
    monkeypatch.setattr(mmcv.ops, "get_compiling_cuda_version", lambda: cuda_version)
    kernel_calls: list[bool] = []
    monkeypatch.setattr(MMSegFocalLoss, "forward",
                        lambda self, *args, **kwargs: kernel_calls.append(True))
    return kernel_calls


def test_missing_cuda_kernel_falls_back_and_logs_once(monkeypatch, fresh_log) -> None:
    kernel_calls = _pretend_cuda(monkeypatch, "not available")
    pred, target = _inputs()
    loss = FocalLoss(use_sigmoid=True)
    first, second = loss(pred, target), loss(pred, target)
    assert kernel_calls == []
    assert _max_abs_diff(first, _reference(pred, target)) < TOL and torch.equal(first, second)
    assert len(fresh_log) == 1
    assert "mmcv has no CUDA kernel for sigmoid_focal_loss" in fresh_log[0][0]


def test_bf16_on_cuda_falls_back_fp32_uses_the_kernel(monkeypatch, fresh_log) -> None:
    kernel_calls = _pretend_cuda(monkeypatch, "12.1")
    pred, target = _inputs()
    loss = FocalLoss(use_sigmoid=True)
    loss(pred, target)
    loss(pred.half(), target)
    assert kernel_calls == [True, True] and fresh_log == []
    got = loss(pred.bfloat16(), target)
    assert kernel_calls == [True, True]
    assert _max_abs_diff(got, _reference(pred.bfloat16().float(), target)) < TOL
    assert len(fresh_log) == 1
    assert "bfloat16 is not supported by mmcv's sigmoid_focal_loss kernel" in fresh_log[0][0]


def test_a_cuda_build_for_other_gpus_falls_back(monkeypatch, fresh_log) -> None:
    """mmcv built with CUDA for sm_80 on an sm_90 node: its kernel would die with "no
    kernel image is available", so the PyTorch loss runs."""
    import seglab.platform.mmcv_ops

    kernel_calls = _pretend_cuda(monkeypatch, "12.1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(seglab.platform.mmcv_ops, "cuda_kernel_gap",
                        lambda device="cuda": "no kernels for sm_90 (built for sm_80)")
    pred, target = _inputs()
    got = FocalLoss(use_sigmoid=True)(pred, target)
    assert kernel_calls == []
    assert _max_abs_diff(got, _reference(pred, target)) < TOL
    assert "cannot run on this GPU (no kernels for sm_90" in fresh_log[0][0]


def test_cpu_fallback_is_logged_once_at_info(fresh_log) -> None:
    pred, target = _inputs()
    for _ in range(3):
        FocalLoss(use_sigmoid=True)(pred, target)
    assert len(fresh_log) == 1 and fresh_log[0][1] == logging.INFO
    assert "only for CUDA tensors" in fresh_log[0][0]


def test_mmseg_argument_checks_still_apply() -> None:
    pred, target = _inputs()
    loss = FocalLoss(use_sigmoid=True)
    with pytest.raises(AssertionError):
        loss(pred, target, reduction_override="test")
    with pytest.raises(AssertionError):
        loss(pred, target[:, :3])
    loss.use_sigmoid = False
    with pytest.raises(NotImplementedError):
        loss(pred, target)


def test_ignored_pixels_contribute_nothing() -> None:
    """mmseg's test_ignore_index: an ignore_index inside the C classes, index vs one-hot."""
    pred, target = _inputs()
    target[target == 255] = 3
    loss = FocalLoss(use_sigmoid=True, reduction="none")
    by_index = loss(pred, target, ignore_index=3)
    by_one_hot = loss(pred, F.one_hot(target, 5).permute(0, 3, 1, 2), ignore_index=3)
    assert torch.equal(by_index, by_one_hot)
    assert (by_index.movedim(1, -1)[target == 3] == 0).all()
    assert (by_index.movedim(1, -1)[target != 3] > 0).all()
