"""Rules on the pretrained weights a run starts from.

``model.pretrained`` and ``init_cfg`` set together, ``load_from`` overwriting
an ImageNet init, torchvision's plain ResNet loaded into a deep-stem
ResNetV1c (the stem stays random with only a 'missing keys' warning), and a local
checkpoint file that is not there (the run would build everything, then stop).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from seglab.config.walk import pretrained_init
from seglab.doctor.finding import Finding
from seglab.doctor.plan import Facts
from seglab.doctor.rules import rule

RESNET_V1C_CHECKPOINT = "open-mmlab://resnet50_v1c"
# Rules about this machine's files rather than the config: a config is right and the run
# still cannot start until the file is made (``seglab weights convert/fetch``)
MACHINE_STATE_RULES = frozenset({"pretrained-missing"})


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


@rule
def pretrained_file(facts: Facts) -> Iterator[Finding]:
    model = facts.cfg.model
    backbone = model.get("backbone", {})
    for where, checkpoint in (
            ("model.backbone.init_cfg.checkpoint", (pretrained_init(backbone) or {}).get(
                "checkpoint")),
            ("model.pretrained", model.get("pretrained")),
            ("model.backbone.pretrained", backbone.get("pretrained"))):
        if not checkpoint or "://" in str(checkpoint) or Path(checkpoint).expanduser().exists():
            continue
        yield Finding(
            "error", "pretrained-missing", where,
            f"{checkpoint} does not exist (relative paths are read from {Path.cwd()}): the run "
            "would build the model and stop at its first weight load", _make_it(str(checkpoint)))


def _make_it(checkpoint: str) -> str:
    """The command that makes a missing pretrained file, and what to do after it."""
    from seglab.weights.convert import convert_hint
    from seglab.weights.fetch import catalog, fetch_hint

    command = convert_hint(checkpoint)
    if command:
        return f"`{command}`"
    command = fetch_hint(checkpoint)
    if command is None:
        return "put the file there, or init_cfg=None to start from random weights"
    if Path(checkpoint).name in {source.file_name for source in catalog().values()}:
        return f"`{command}`"
    # fetched under its release name (mit_b2_20220624-66e8bf70.pth), not the config's
    return f"`{command}`, then point {Path(checkpoint).name!r} in the config at the file it saves"
