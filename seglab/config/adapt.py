"""Fit a config to this machine and the command line: CPU adaptations, dataloader workers,
AMP dtype, the world size against the config's ``gpu_count``.

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


DATALOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")


def fit_dataloader_workers(cfg: Config) -> list[str]:
    """Turn ``persistent_workers`` off where a dataloader has no workers; return the notes.

    mmseg's dataset fragments set ``persistent_workers=True``, and torch's DataLoader
    refuses it with ``num_workers=0`` ("persistent_workers option needs num_workers > 0"),
    so the most common debugging override, ``--cfg-options
    train_dataloader.num_workers=0``, failed on every config.
    """
    notes = []
    for name in DATALOADERS:
        loader = cfg.get(name)
        if (isinstance(loader, dict) and loader.get("num_workers", 0) == 0
                and loader.get("persistent_workers")):
            loader.persistent_workers = False
            notes.append(f"{name}.persistent_workers=False (num_workers=0: no worker "
                         "processes to keep; torch's DataLoader refuses the pair)")
    return notes


def fit_world_size(cfg: Config, world_size: int, scale_lr: bool = False,
                   as_written: bool = False) -> list[str]:
    """Compare the run's world size with the config's ``gpu_count``; return the note line.

    A config with an int ``gpu_count`` computes its total batch (and often a hand-scaled
    LR) for that many GPUs; launched on another number of processes it trains at another
    total batch. Nothing changes silently: the line states the total batch written and
    now, and that the LR is unchanged, or, with ``scale_lr``, scaled by the linear rule
    (``lr x now / written``, on ``optim_wrapper.optimizer.lr``). ``as_written`` refuses
    to start unless the world size is ``gpu_count``. No ``gpu_count``, or the same
    number: nothing to say.
    """
    gpu_count = cfg.get("gpu_count")
    if not isinstance(gpu_count, int) or isinstance(gpu_count, bool) or gpu_count == world_size:
        return []
    if as_written:
        raise ConfigError(
            f"--as-written: the config is written for gpu_count={gpu_count} but this run has "
            f"{world_size} process(es) (world size). Fix: launch {gpu_count} process(es) "
            f"(tools/dist_train.sh CONFIG {gpu_count}), or drop --as-written (add --scale-lr "
            "to scale the LR to the new total batch), or set gpu_count in the config.")
    batch = int(cfg.train_dataloader.get("batch_size", 1))
    written, now = gpu_count * batch, world_size * batch
    head = (f"gpu_count={gpu_count} but world size {world_size}: total batch {now} "
            f"({world_size} x {batch}), not the {written} ({gpu_count} x {batch}) the config "
            "is written for; ")
    optimizer = cfg.get("optim_wrapper", {}).get("optimizer", {})
    lr = optimizer.get("lr")
    if (cfg.get("auto_scale_lr") or {}).get("enable", False):
        return [head + "the LR follows the real batch by auto_scale_lr"
                + (" (--scale-lr not applied on top)" if scale_lr else "")]
    if lr is None:
        return [head + "no optim_wrapper.optimizer.lr to scale"
                + (" (--scale-lr did nothing)" if scale_lr else "")]
    if scale_lr:
        optimizer.lr = lr * now / written
        return [head + f"LR scaled by the linear rule (--scale-lr): {lr:g} x {now}/{written} "
                f"= {optimizer.lr:g}"]
    return [head + f"LR unchanged at {lr:g} (--scale-lr scales it to {lr * now / written:g}; "
            "--as-written refuses to start)"]


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
