"""Reading a resolved config's structure: datasets, heads, losses, schedulers, pretrained
weights, nested ``type`` keys, mmseg's own config folder. One place for each, so the
doctor, the report, the zoo, the coverage hook and the smoke harness agree on what a
config holds (mmseg writes most of these as either one dict or a list of them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmengine.config import Config, ConfigDict

HEAD_KEYS = ("decode_head", "auxiliary_head")


def as_list(value: Any) -> list[Any]:
    """mmseg's "one dict or a list/tuple of dicts" as a list (``None`` -> ``[]``)."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def walk_dicts(node: Any) -> Iterator[dict]:
    """Every dict in a nested config, parents before children."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk_dicts(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from walk_dicts(value)


# mmseg's heads that subclass mmdet's (mmseg imports mmdet only for them)
MMDET_BASED_HEAD_TYPES = ("Mask2FormerHead", "MaskFormerHead")


def packages_named(cfg: Config | dict) -> set[str]:
    """The top-level packages a config's model and pipeline need beyond mmseg: the scope of
    every scoped ``type`` (``mmdet.MSDeformAttnPixelDecoder``, ``mmpretrain.PoolFormer``),
    mmdet for its Mask2Former/MaskFormer heads, and every ``custom_imports`` module."""
    found = set()
    for node in walk_dicts(cfg.to_dict() if isinstance(cfg, Config) else cfg):
        kind = node.get("type")
        if isinstance(kind, str):
            scope = kind.replace("::", ".").partition(".")
            if scope[1]:
                found.add(scope[0])
            if kind in MMDET_BASED_HEAD_TYPES:
                found.add("mmdet")
    imports = (cfg.get("custom_imports") or {}).get("imports", [])
    found.update(name.partition(".")[0] for name in as_list(imports))
    return found


# mmengine's and mmseg's dataset wrappers over one ``dataset`` (mmseg's DRIVE, STARE, HRF and
# CHASE_DB1 configs repeat theirs); ``ConcatDataset`` joins a list of ``datasets``
ONE_DATASET_WRAPPERS = ("RepeatDataset", "ClassBalancedDataset", "MultiImageMixDataset")


def type_name(node: Any) -> str:
    """The class name a config node's ``type`` (or a class given directly) names, without
    a scope: ``'LoadAnnotations'`` for ``mmseg.LoadAnnotations`` or ``mmseg::LoadAnnotations``."""
    kind = node.get("type", "") if isinstance(node, dict) else node
    name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    return name.replace("::", ".").rsplit(".", 1)[-1]


def leaf_datasets(dataset: ConfigDict) -> list[ConfigDict]:
    """The datasets that read files: a ``ConcatDataset`` (VOC-aug) and the wrappers over
    one dataset (``RepeatDataset``, ``ClassBalancedDataset``, ``MultiImageMixDataset``,
    with or without a scope: ``mmengine.RepeatDataset``) are opened up, nested or not."""
    kind = type_name(dataset)
    if kind == "ConcatDataset":
        return [leaf for d in dataset.datasets for leaf in leaf_datasets(d)]
    if kind in ONE_DATASET_WRAPPERS:
        return leaf_datasets(dataset.dataset)
    return [dataset]


def model_heads(model: ConfigDict, keys: tuple[str, ...] = HEAD_KEYS,
                ) -> list[tuple[str, ConfigDict]]:
    """``(config key, head)`` for every decode/auxiliary head; a cascade's list (OCRNet)
    or an auxiliary list/tuple gives one entry a head (``model.decode_head.1``)."""
    found = []
    for name in keys:
        heads = model.get(name)
        if isinstance(heads, dict):
            found.append((f"model.{name}", heads))
        else:
            found += [(f"model.{name}.{i}", head) for i, head in enumerate(as_list(heads))]
    return found


def head_losses(head: ConfigDict) -> list[ConfigDict]:
    """A head's ``loss_decode``: one loss or a list of them (Focal + Dice)."""
    return as_list(head.get("loss_decode"))


def schedulers(cfg: Config) -> list[ConfigDict]:
    """``param_scheduler`` as a list (a config may give one scheduler alone)."""
    return as_list(cfg.get("param_scheduler"))


def pretrained_init(node: Any) -> dict | None:
    """The ``init_cfg`` of a model part (a config dict, or a built module's attribute)
    when it loads a checkpoint (``type='Pretrained'``), else ``None``."""
    init_cfg = node.get("init_cfg") if isinstance(node, dict) else getattr(node, "init_cfg", None)
    if isinstance(init_cfg, dict) and init_cfg.get("type") == "Pretrained":
        return init_cfg
    return None


def has_pretrained_backbone(model: ConfigDict) -> bool:
    """Whether the backbone starts from a checkpoint (``model.pretrained`` or its init_cfg)."""
    init = pretrained_init(model.get("backbone", {}))
    return bool(model.get("pretrained") or (init and init.get("checkpoint")))


def strip_pretrained(node: Any) -> None:
    """Random initialisation everywhere: no download, no checkpoint file needed."""
    for value in walk_dicts(node):
        if "pretrained" in value:
            value["pretrained"] = None
        if pretrained_init(value) is not None:
            value["init_cfg"] = None


def replace_types(node: Any, old: str, new: str) -> int:
    """Rename every ``type=old`` in a nested config; return how many were changed."""
    changed = 0
    for value in walk_dicts(node):
        if value.get("type") == old:
            value["type"] = new
            changed += 1
    return changed


def mmseg_config_dir() -> Path:
    """The configs mmsegmentation ships (``mmseg::`` in a ``_base_`` resolves here)."""
    import mmseg

    return Path(mmseg.__file__).parent / ".mim" / "configs"
