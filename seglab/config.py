"""Load an experiment config, apply command-line overrides and fit it to this machine.

Every check here runs before a model, a dataset or a process group is built, so
bad input costs seconds and names the file, key and fix.
"""

from __future__ import annotations

import os
import os.path as osp
from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config, ConfigDict

from seglab.errors import UserError

DATALOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")


class ConfigError(UserError):
    """A config or command-line value seglab refuses before doing expensive work."""


def load_config(path: str | Path, cfg_options: dict[str, Any] | None = None,
                data_root: str | None = None) -> Config:
    """Read ``path`` (with its ``_base_`` chain and ``custom_imports``) and merge overrides;
    ``data_root`` then points every dataset of every dataloader there."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found (looked in {Path.cwd()})")
    try:
        cfg = Config.fromfile(str(path))
    except Exception as err:  # mmengine raises bare Exceptions for syntax/base errors
        raise ConfigError(f"{path}: cannot be loaded: {err}") from err
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if data_root is not None:
        set_data_root(cfg, data_root)
    return cfg


def default_work_dir(config_path: str | Path) -> str:
    """``work_dirs/<config file stem>``, as mmseg's tools choose it."""
    return osp.join("work_dirs", Path(config_path).stem)


def leaf_datasets(dataset: ConfigDict) -> list[ConfigDict]:
    """The datasets that read files: a ``ConcatDataset`` (VOC-aug) is opened up."""
    if dataset.get("type") == "ConcatDataset":
        return [leaf for d in dataset.datasets for leaf in leaf_datasets(d)]
    return [dataset]


def set_data_root(cfg: Config, data_root: str) -> None:
    """Point every dataset of every dataloader at ``data_root`` (``--data-root``)."""
    for loader in DATALOADERS:
        for leaf in leaf_datasets(cfg[loader].dataset):
            leaf.data_root = data_root


def replace_types(node: Any, old: str, new: str) -> int:
    """Rename every ``type=old`` in a nested config; return how many were changed."""
    changed = 0
    if isinstance(node, dict):
        if node.get("type") == old:
            node["type"] = new
            changed += 1
        for value in node.values():
            changed += replace_types(value, old, new)
    elif isinstance(node, (list, tuple)):
        for value in node:
            changed += replace_types(value, old, new)
    return changed


def adapt_to_device(cfg: Config, launcher: str) -> list[str]:
    """Fit a GPU-written config to a machine without CUDA; return what was changed.

    On CPU: distributed runs use the gloo backend and ``CPUAwareDDP``; SyncBN
    (CUDA-only) becomes BN. Configs are written for the multi-GPU cluster and
    stay unchanged there; these adjustments are logged and saved with the run.
    """
    if torch.cuda.is_available():
        return []
    notes = []
    if launcher != "none":
        cfg.setdefault("env_cfg", ConfigDict())
        cfg.env_cfg.setdefault("dist_cfg", ConfigDict())
        if cfg.env_cfg.dist_cfg.get("backend") != "gloo":
            cfg.env_cfg.dist_cfg.backend = "gloo"
            notes.append("env_cfg.dist_cfg.backend=gloo (no CUDA)")
        cfg.model_wrapper_cfg = ConfigDict(
            type="CPUAwareDDP", broadcast_buffers=False,
            find_unused_parameters=cfg.get("find_unused_parameters", False))
        notes.append("model_wrapper_cfg.type=CPUAwareDDP (DDP without device_ids)")
    if n := replace_types(cfg.model, "SyncBN", "BN"):
        notes.append(f"{n} SyncBN norm layer config(s) -> BN (SyncBN needs CUDA)")
    if cfg.get("optim_wrapper", {}).get("type") == "AmpOptimWrapper":
        cfg.optim_wrapper.type = "OptimWrapper"
        for amp_only in ("loss_scale", "dtype", "use_fsdp"):  # OptimWrapper takes none
            cfg.optim_wrapper.pop(amp_only, None)
        notes.append("optim_wrapper AmpOptimWrapper -> OptimWrapper (fp16 AMP needs CUDA)")
    return notes


AMP_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def default_amp_dtype() -> str:
    """bf16 where the GPU computes it natively (compute capability 8.0+, Ampere and newer:
    fp32's range, no loss-scale back-offs, Focal/Dice stay finite), else fp16.

    Not ``torch.cuda.is_bf16_supported()``: it says True on a V100/T4 too (emulated, slow)
    and allocates on GPU 0 from every rank before ``set_device``.
    """
    if not torch.cuda.is_available():
        return "float16"
    major, _ = torch.cuda.get_device_capability(int(os.environ.get("LOCAL_RANK", "0")))
    return "bfloat16" if major >= 8 else "float16"


def enable_amp(cfg: Config, amp: bool = False, amp_dtype: str | None = None) -> list[str]:
    """mmseg's ``tools/train.py --amp`` (``AmpOptimWrapper``, dynamic loss scale), plus
    ``--amp-dtype bf16|fp16``; returns what was changed.

    A config that already enables AMP keeps its dtype unless ``amp_dtype`` is given, so
    a config reproduces its run; ``--amp`` alone picks :func:`default_amp_dtype`.
    """
    wrapper = cfg.optim_wrapper
    kind = wrapper.get("type", "OptimWrapper")
    notes, turned_on = [], False
    if amp and kind == "AmpOptimWrapper":
        notes.append("--amp: AMP is already enabled in the config")
    elif amp:
        if kind != "OptimWrapper":
            raise ConfigError(
                f"--amp: optim_wrapper.type is {kind!r}; mmseg's --amp only turns an "
                "'OptimWrapper' into 'AmpOptimWrapper'. Fix: set optim_wrapper.type="
                "'AmpOptimWrapper' in the config instead.")
        wrapper.type, wrapper.loss_scale = "AmpOptimWrapper", "dynamic"
        turned_on = True
        notes.append("optim_wrapper OptimWrapper -> AmpOptimWrapper (--amp, dynamic loss scale)")
    if wrapper.get("type") != "AmpOptimWrapper":
        if amp_dtype is not None:
            raise ConfigError(f"--amp-dtype {amp_dtype}: this config does not train with AMP. "
                              "Fix: add --amp.")
        return notes
    if amp_dtype is not None:
        dtype = AMP_DTYPES[amp_dtype]
    elif turned_on:
        dtype = default_amp_dtype()
    else:
        return notes
    wrapper.dtype = dtype
    notes.append(f"optim_wrapper.dtype={dtype!r} (autocast dtype)")
    return notes


MISSING = "<absent>"


def flatten_config(node: Any, prefix: str = "") -> dict[str, Any]:
    """Resolved config as ``{"optim_wrapper.optimizer.lr": 6e-05, "param_scheduler.0.end": 20}``."""
    if isinstance(node, Config):
        node = node.to_dict()
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in node):
        items = enumerate(node)
    else:
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(flatten_config(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def diff_configs(a: Config, b: Config) -> list[tuple[str, Any, Any]]:
    """``(key, value in a, value in b)`` for every resolved field that differs."""
    flat_a, flat_b = flatten_config(a), flatten_config(b)
    keys = sorted(set(flat_a) | set(flat_b))
    return [(k, flat_a.get(k, MISSING), flat_b.get(k, MISSING)) for k in keys
            if flat_a.get(k, MISSING) != flat_b.get(k, MISSING)]
