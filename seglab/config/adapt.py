"""Fit a config to this machine and the command line: CPU adaptations, AMP dtype.

Runs before a model, a dataset or a process group is built."""

from __future__ import annotations

import os

import torch
from mmengine.config import Config, ConfigDict

from seglab.config.loading import ConfigError
from seglab.config.walk import replace_types


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
