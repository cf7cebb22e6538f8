"""The published numbers the config doctor compares a run with.

mmseg's official training recipes (LR, GPUs x batch, length, read from the
configs mmseg ships) per backbone, decode head and dataset, and the published
split sizes of VOC and ADE20K for when the data is not on this machine. The
plan shows the recipe next to the run; the LR rules judge the run's LR by it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mmengine.config import Config

from seglab.config.walk import mmseg_config_dir

# mmseg's packaged recipe per (backbone, decode head, dataset); the first of these
# whose backbone and head match is used when the dataset has no recipe of its own.
RECIPES = {
    ("MixVisionTransformer", "SegformerHead", "ADE20KDataset"):
        "segformer/segformer_mit-b2_8xb2-160k_ade20k-512x512.py",
    ("ResNetV1c", "UPerHead", "PascalVOCDataset"):
        "upernet/upernet_r50_4xb4-40k_voc12aug-512x512.py",
    ("ResNetV1c", "UPerHead", "ADE20KDataset"): "upernet/upernet_r50_4xb4-160k_ade20k-512x512.py",
    **{("ResNetV1c", head, dataset): f"{name}/{name}_r50-d8_4xb4-{length}-512x512.py"
       for name, head in (("pspnet", "PSPHead"), ("deeplabv3", "ASPPHead"),
                          ("deeplabv3plus", "DepthwiseSeparableASPPHead"), ("fcn", "FCNHead"))
       for dataset, length in (("PascalVOCDataset", "40k_voc12aug"),
                               ("ADE20KDataset", "80k_ade20k"))},
}
# Split sizes of the published datasets, used when the data is not on this machine.
PUBLISHED_SIZES = {
    "ImageSets/Segmentation/train.txt": 1464,
    "ImageSets/Segmentation/val.txt": 1449,
    "ImageSets/Segmentation/aug.txt": 9118,  # SBD minus VOC train/val (mmseg's VOC-aug)
    "ImageSets/Segmentation/trainaug.txt": 10582,
    "images/training": 20210,
    "images/validation": 2000,
}


@dataclass
class Recipe:
    """An official mmseg training recipe, read from the config mmseg ships."""

    config: str
    lr: float
    world_size: int
    batch_per_gpu: int
    max_iters: int

    @property
    def total_batch(self) -> int:
        return self.world_size * self.batch_per_gpu

    @property
    def images(self) -> int:
        return self.max_iters * self.total_batch

    def lr_for_batch(self, total_batch: int) -> float:
        """The recipe's LR moved to ``total_batch`` by the linear scaling rule."""
        return self.lr * total_batch / self.total_batch


def load_recipe(relative: str) -> Recipe:
    """The LR, world size, batch and length of a config mmseg ships."""
    cfg = Config.fromfile(str(mmseg_config_dir() / relative))
    world, batch = (int(v) for v in re.search(r"(\d+)xb(\d+)", relative).groups())
    return Recipe(relative, float(cfg.optim_wrapper.optimizer.lr), world, batch,
                  int(cfg.train_cfg.max_iters))


def recipe_for(cfg: Config, dataset_types: list[str]) -> Recipe | None:
    """The recipe for the config's backbone and (last) decode head, on its dataset if
    mmseg has one for it, else on another; ``None`` when mmseg has no such model."""
    model = cfg.model
    head = model.get("decode_head") or {}
    head = head[-1] if isinstance(head, (list, tuple)) else head  # cascade heads (OCRNet)
    key = (model.get("backbone", {}).get("type"), head.get("type"))
    matches = [path for (b, h, d), path in RECIPES.items() if (b, h) == key]
    exact = [RECIPES[(*key, d)] for d in dataset_types if (*key, d) in RECIPES]
    chosen = (exact or matches or [None])[0]
    return load_recipe(chosen) if chosen else None
