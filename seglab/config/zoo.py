"""The ADE20K model zoo of seed 004: 29 families, one launcher, mmseg's own configs.

Each family names the config that ships inside mmsegmentation (``mmseg::`` scope);
seglab applies the seed's unified settings on top (512x512, batch 2 per GPU,
mmseg's 80k/160k schedule, validation and a checkpoint every 4,000 iterations,
3 checkpoints kept) instead of 29 hand-copied scripts. Three families need mmdet or
mmpretrain (the ``zoo`` extra, installed by ``make env``); without it they say which package
before anything is built.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from mmengine.config import Config, ConfigDict

from seglab.config.walk import mmseg_config_dir, model_heads
from seglab.errors import UserError

UNIFIED_BATCH_PER_GPU = 2
UNIFIED_INTERVAL_ITERS = 4000
UNIFIED_KEEP_CHECKPOINTS = 3
ADE20K_DATASET = "_base_/datasets/ade20k.py"
# Latest releases whose declared ranges accept mmcv 2.1.0 and mmengine 0.10.7
# (mmdet: mmcv<2.2.0; mmpretrain: mmcv<2.4.0): pyproject.toml's `zoo` extra, which `make env`
# installs; the `hf` extra's transformers is one under which mmpretrain's multimodal models
# import (mmdet imports them, and mmseg imports mmdet).
OPTIONAL_PACKAGES = {"mmdet": "mmdet==3.3.0", "mmpretrain": "mmpretrain==1.2.0"}
OPTIONAL_EXTRA = "zoo"


@dataclass(frozen=True)
class Family:
    name: str
    group: str
    config: str  # relative to mmseg's packaged configs
    needs: tuple[str, ...] = ()
    swap_to_ade20k: bool = False  # mmseg ships no ADE20K config for this family
    notes: str = field(default="", compare=False)


FAMILIES = [
    Family("fcn", "CNN", "fcn/fcn_r50-d8_4xb4-80k_ade20k-512x512.py"),
    Family("pspnet", "CNN", "pspnet/pspnet_r50-d8_4xb4-80k_ade20k-512x512.py"),
    Family("deeplabv3plus", "CNN", "deeplabv3plus/deeplabv3plus_r50-d8_4xb4-80k_ade20k-512x512.py"),
    Family("upernet", "CNN", "upernet/upernet_r50_4xb4-80k_ade20k-512x512.py"),
    Family("ocrnet", "CNN", "ocrnet/ocrnet_hr18_4xb4-80k_ade20k-512x512.py"),
    Family("gcnet", "attention", "gcnet/gcnet_r50-d8_4xb4-80k_ade20k-512x512.py"),
    Family("isanet", "attention", "isanet/isanet_r50-d8_4xb4-80k_ade20k-512x512.py"),
    Family("nonlocal", "attention", "nonlocal_net/nonlocal_r50-d8_4xb4-80k_ade20k-512x512.py"),
    Family("dnlnet", "attention", "dnlnet/dnl_r50-d8_4xb4-80k_ade20k-512x512.py"),
    Family("psanet", "attention", "psanet/psanet_r50-d8_4xb4-80k_ade20k-512x512.py"),
    Family("dmnet", "attention", "dmnet/dmnet_r50-d8_4xb4-80k_ade20k-512x512.py"),
    Family("encnet", "attention", "encnet/encnet_r50-d8_4xb4-80k_ade20k-512x512.py"),
    Family("segformer", "transformer", "segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py"),
    Family("segmenter", "transformer",
           "segmenter/segmenter_vit-s_mask_8xb1-160k_ade20k-512x512.py"),
    Family("segnext", "transformer", "segnext/segnext_mscan-t_1xb16-adamw-160k_ade20k-512x512.py"),
    Family("setr", "transformer", "setr/setr_vit-l_naive_8xb2-160k_ade20k-512x512.py"),
    Family("vit_deit", "transformer", "vit/vit_deit-s16_upernet_8xb2-80k_ade20k-512x512.py",
           notes="the seed's 'ViT-Adapter' script trains ViT/DeiT + UPerNet"),
    Family("mask2former", "mask classification",
           "mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py", needs=("mmdet",)),
    Family("maskformer", "mask classification",
           "maskformer/maskformer_r50-d32_8xb2-160k_ade20k-512x512.py", needs=("mmdet",)),
    Family("pointrend", "mask classification",
           "point_rend/pointrend_r50_4xb4-160k_ade20k-512x512.py"),
    Family("knet", "mask classification",
           "knet/knet-s3_r50-d8_fcn_8xb2-adamw-80k_ade20k-512x512.py"),
    Family("mobilenetv2", "lightweight",
           "mobilenet_v2/mobilenet-v2-d8_deeplabv3_4xb4-160k_ade20k-512x512.py"),
    Family("poolformer", "lightweight", "poolformer/fpn_poolformer_s12_8xb4-40k_ade20k-512x512.py",
           needs=("mmpretrain",)),
    Family("fastfcn", "other", "fastfcn/fastfcn_r50-d32_jpu_psp_4xb4-80k_ade20k-512x512.py"),
    Family("resnest", "other", "resnest/resnest_s101-d8_fcn_4xb4-160k_ade20k-512x512.py"),
    Family("sem_fpn", "other", "sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py",
           notes="the seed's SeMask script trains Semantic FPN"),
    Family("stdc", "other", "stdc/stdc1_4xb12-80k_cityscapes-512x1024.py", swap_to_ade20k=True,
           notes="mmseg ships STDC for Cityscapes only; seglab swaps in ADE20K"),
    Family("twins", "other", "twins/twins_pcpvt-s_fpn_fpnhead_8xb4-80k_ade20k-512x512.py"),
    Family("swin", "other",
           "swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py"),
]
BY_NAME = {f.name: f for f in FAMILIES}


def missing_packages(family: Family) -> list[str]:
    return [pkg for pkg in family.needs if importlib.util.find_spec(pkg) is None]


def get_family(name: str) -> Family:
    if name not in BY_NAME:
        raise UserError(f"unknown zoo family {name!r}; `seglab zoo list` shows the "
                        f"{len(FAMILIES)} families")
    return BY_NAME[name]


def require_packages(family: Family) -> None:
    """Stop with the pip command, before any config or model is built."""
    missing = missing_packages(family)
    if missing:
        pins = " ".join(OPTIONAL_PACKAGES[p] for p in missing)
        raise UserError(f"zoo family {family.name!r} needs {', '.join(missing)}, which is not "
                        f"installed. Fix: .venv/bin/pip install {pins} (seglab's "
                        f"{OPTIONAL_EXTRA!r} extra; `make env` installs it)")


def _swap_dataset_to_ade20k(cfg: Config) -> None:
    ade = Config.fromfile(str(mmseg_config_dir() / ADE20K_DATASET))
    for key in ("train_dataloader", "val_dataloader", "test_dataloader",
                "val_evaluator", "test_evaluator"):
        cfg[key] = ade[key]
    for _, head in model_heads(cfg.model):
        if head.num_classes == 19:  # Cityscapes classes; STDC's detail head has 2
            head.num_classes = 150
    cfg.model.data_preprocessor.size = (512, 512)


def zoo_config(name: str) -> Config:
    """The family's mmseg config with the seed's unified ADE20K settings applied."""
    family = get_family(name)
    require_packages(family)
    cfg = Config.fromfile(str(mmseg_config_dir() / family.config))
    if family.swap_to_ade20k:
        _swap_dataset_to_ade20k(cfg)
    cfg.train_dataloader.batch_size = UNIFIED_BATCH_PER_GPU
    cfg.train_cfg.val_interval = UNIFIED_INTERVAL_ITERS
    cfg.default_hooks.checkpoint.update(interval=UNIFIED_INTERVAL_ITERS,
                                        max_keep_ckpts=UNIFIED_KEEP_CHECKPOINTS)
    imports = cfg.get("custom_imports", {}).get("imports", [])
    # Mask2Former's config names one module as a string ('mmdet.models'), not a list
    imports = [imports] if isinstance(imports, str) else list(imports)
    cfg.custom_imports = ConfigDict(imports=[*imports, "seglab.register"],
                                    allow_failed_imports=False)
    return cfg


def write_zoo_config(name: str, work_dir: str | Path) -> Path:
    """Write the family's resolved config into its work dir (once; never over an edited file)."""
    text = zoo_config(name).pretty_text
    path = Path(work_dir) / f"zoo_{name}_ade20k.py"
    if path.exists() and path.read_text() != text:
        raise UserError(
            f"{path} exists and differs from the zoo's config for {name!r} (edited?); "
            f"seglab will not overwrite it. Fix: train it directly with `seglab train {path} "
            f"--work-dir {work_dir}`, or move it away.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def list_rows() -> list[tuple[str, str, str, str]]:
    """(name, group, mmseg config, status) for every family."""
    rows = []
    for family in FAMILIES:
        missing = missing_packages(family)
        status = f"needs {', '.join(missing)}" if missing else "ready"
        rows.append((family.name, family.group, family.config, status))
    return rows
