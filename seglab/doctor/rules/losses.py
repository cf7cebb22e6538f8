"""Rules on the heads' losses: shared loss names, DiceLoss's own ignore_index, fp16 AMP
with Focal/Dice losses (NaN in seed 000 v1.2)."""

from __future__ import annotations

from collections.abc import Iterator

from seglab.config.walk import head_losses, model_heads
from seglab.doctor.finding import Finding
from seglab.doctor.plan import Facts
from seglab.doctor.rules import rule


@rule
def loss_settings(facts: Facts) -> Iterator[Finding]:
    for key, head in model_heads(facts.cfg.model):
        losses = head_losses(head)
        head_ignore = head.get("ignore_index", 255)
        names: dict[str, int] = {}
        defaults = {"CrossEntropyLoss": "loss_ce", "FocalLoss": "loss_focal",
                    "DiceLoss": "loss_dice", "LovaszLoss": "loss_lovasz"}
        for i, loss in enumerate(losses):
            name = loss.get("loss_name", defaults.get(loss.get("type"), str(loss.get("type"))))
            if name in names:
                yield Finding(
                    "warning", "loss-name", f"{key}.loss_decode.{i}.loss_name",
                    f"{loss.get('type')} and loss_decode.{names[name]} share loss_name "
                    f"{name!r}: mmseg sums them into one logged value, so neither can be "
                    "watched (or named when it turns NaN)",
                    f"give each loss its own loss_name (e.g. 'loss_{i}')")
            names[name] = i
            if loss.get("type") == "DiceLoss" and loss.get("ignore_index", 255) != head_ignore:
                yield Finding(
                    "error", "loss-ignore-index", f"{key}.loss_decode.{i}.ignore_index",
                    f"DiceLoss uses its own ignore_index={loss.get('ignore_index')} (the head's "
                    f"{head_ignore} is not passed to it): ignored pixels are scored as a class",
                    f"{key}.loss_decode.{i}.ignore_index={head_ignore}")
        amp = facts.cfg.get("optim_wrapper", {})
        fp16 = amp.get("type") == "AmpOptimWrapper" and amp.get("dtype") != "bfloat16"
        if fp16 and any(loss.get("type") in ("FocalLoss", "DiceLoss") for loss in losses):
            yield Finding(
                "warning", "amp-losses", "optim_wrapper.type",
                "fp16 AMP with Focal/Dice losses produced NaN losses in seed 000 v1.2; "
                "seglab's NaN guard stops such a run and names the term, but the run is lost",
                "optim_wrapper.dtype='bfloat16' or `seglab train --amp-dtype bf16` (Ampere or "
                "newer; seglab's FocalLoss computes bf16 through its PyTorch path, since "
                "mmcv's kernel has no bf16), or train these losses in fp32")
