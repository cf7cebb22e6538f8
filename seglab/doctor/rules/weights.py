"""Rules on the pretrained weights a run starts from.

``model.pretrained`` and ``init_cfg`` set together, ``load_from`` overwriting
an ImageNet init, and torchvision's plain ResNet loaded into a deep-stem
ResNetV1c (the stem stays random with only a 'missing keys' warning).
"""

from __future__ import annotations

from collections.abc import Iterator

from seglab.config.walk import pretrained_init
from seglab.doctor.finding import Finding
from seglab.doctor.plan import Facts
from seglab.doctor.rules import rule

RESNET_V1C_CHECKPOINT = "open-mmlab://resnet50_v1c"


@rule
def pretrained_weights(facts: Facts) -> Iterator[Finding]:
    cfg = facts.cfg
    backbone = cfg.model.get("backbone", {})
    init_ckpt = (pretrained_init(backbone) or {}).get("checkpoint")
    if cfg.model.get("pretrained") and init_ckpt:
        yield Finding(
            "error", "pretrained-and-init-cfg", "model.pretrained",
            "model.pretrained and model.backbone.init_cfg are both set: mmseg asserts "
            "('init_cfg and pretrained cannot be setting at the same time')",
            "model.pretrained=None and keep backbone.init_cfg")
    if cfg.get("load_from") and init_ckpt and not cfg.get("resume"):
        yield Finding(
            "warning", "load-from-and-init-cfg", "model.backbone.init_cfg",
            f"load_from={cfg.load_from!r} replaces every weight after the backbone was "
            f"initialised from {init_ckpt!r}: that download/load is wasted, and if load_from "
            "was meant as the ImageNet init the heads get it too",
            "model.backbone.init_cfg=None when fine-tuning from load_from")
    if (init_ckpt and str(init_ckpt).startswith("torchvision://")
            and backbone.get("type") in ("ResNetV1c", "ResNetV1d")):
        yield Finding(
            "warning", "pretrained-arch", "model.backbone.init_cfg.checkpoint",
            f"{init_ckpt} holds a plain ResNet (one 7x7 stem conv) but the backbone is "
            f"{backbone.type} (deep stem of three 3x3 convs): the stem stays random and the "
            "only sign is a long 'missing keys' warning (seed 003)",
            f"checkpoint={RESNET_V1C_CHECKPOINT!r}, or backbone type='ResNet' with "
            "deep_stem=False")
