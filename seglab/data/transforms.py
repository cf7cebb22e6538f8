"""Data transforms that give mmseg's outputs, bitwise, in less time.

``CountingRandomCrop``: mmseg's ``RandomCrop`` with ``cat_max_ratio < 1`` (every SegFormer
and UPerNet ADE20K/VOC recipe: 0.75) draws up to 10 crops per image and, for each, sorts the
crop's mask with ``np.unique`` to count its classes (a 512x512 crop: 262,144 labels sorted per
draw, on the dataloader workers that feed the GPU). Counting with ``np.bincount`` gives the same
counts in linear time, so the same crop is accepted after the same random draws: the
outputs, and every later random draw of the pipeline, are those of mmseg's transform.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mmcv.transforms.utils import cache_randomness
from mmseg.datasets.transforms import RandomCrop
from mmseg.registry import TRANSFORMS

MAX_COUNTED_LABEL = 1 << 16  # masks are uint8 (VOC, ADE20K) or small ints; else np.unique


def label_counts(mask: np.ndarray, ignore_index: int) -> np.ndarray:
    """The pixel count of each label present in ``mask`` but ``ignore_index``, in label order
    (what ``np.unique(mask, return_counts=True)`` gives, ignore index dropped)."""
    flat = mask.ravel()
    small_ints = flat.dtype.kind in "ui" and flat.size > 0 and float(ignore_index).is_integer()
    if small_ints and 0 <= flat.min() and flat.max() < MAX_COUNTED_LABEL:
        ignore_index = int(ignore_index)  # 255.0 from a config is label 255
        counts = np.bincount(flat)
        if 0 <= ignore_index < counts.size:
            counts[ignore_index] = 0
        return counts[counts > 0]
    labels, counts = np.unique(flat, return_counts=True)
    return counts[labels != ignore_index]


@TRANSFORMS.register_module()
class CountingRandomCrop(RandomCrop):
    """mmseg's ``RandomCrop`` with the class counting of ``cat_max_ratio`` done by
    ``np.bincount``: the same crops after the same random draws.

    Configured as ``RandomCrop`` (``seglab train`` uses it in place of it where
    ``cat_max_ratio < 1``).

    Args:
        crop_size (int | tuple[int, int]): the crop's (h, w).
        cat_max_ratio (float): the largest share one class may take of a crop.
            Defaults to 1.
        ignore_index (int): the label left out of the shares. Defaults to 255.
    """

    # mmcv's cache_randomness appends to the class's list, creating it only where none is
    # found: without a list of its own this class would append to RandomCrop's (one entry
    # twice), and every RandomCrop under shared random parameters would refuse to run
    _methods_with_randomness: list[str] = []

    @cache_randomness
    def crop_bbox(self, results: dict) -> tuple:
        img = results["img"]

        def draw() -> tuple:  # mmseg's draws, in mmseg's order
            margin_h = max(img.shape[0] - self.crop_size[0], 0)
            margin_w = max(img.shape[1] - self.crop_size[1], 0)
            offset_h = np.random.randint(0, margin_h + 1)
            offset_w = np.random.randint(0, margin_w + 1)
            return (offset_h, offset_h + self.crop_size[0],
                    offset_w, offset_w + self.crop_size[1])

        crop_bbox = draw()
        if self.cat_max_ratio < 1.0:
            for _ in range(10):
                counts = label_counts(self.crop(results["gt_seg_map"], crop_bbox),
                                      self.ignore_index)
                if len(counts) > 1 and np.max(counts) / np.sum(counts) < self.cat_max_ratio:
                    break
                crop_bbox = draw()
        return crop_bbox


def use_counting_random_crop(cfg: Any) -> list[str]:
    """Swap mmseg's ``RandomCrop`` for ``CountingRandomCrop`` in the training pipeline where
    it counts classes (``cat_max_ratio < 1``)."""
    from seglab.config.walk import leaf_datasets, type_name

    swapped = 0
    loader = cfg.get("train_dataloader") or {}
    for dataset in leaf_datasets(loader.get("dataset") or {}):
        for step in dataset.get("pipeline") or []:
            if type_name(step) == "RandomCrop" and step.get("cat_max_ratio", 1.0) < 1.0:
                kind = step.type  # keep its scope ('mmseg.', 'mmseg::'), or give the class
                step.type = (kind[:-len("RandomCrop")] + "CountingRandomCrop"
                             if isinstance(kind, str) else CountingRandomCrop)
                swapped += 1
    return ([f"RandomCrop -> CountingRandomCrop ({swapped}x): the class shares of "
             "cat_max_ratio counted in linear time, the same crops"] if swapped else [])
