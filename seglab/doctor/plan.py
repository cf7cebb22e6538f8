"""What a config will actually do, worked out before it runs: the config doctor's plan.

Reads the resolved config and the dataset's split lists or folder listings
(never an image): images per epoch, world size x batch, iterations, the LR
after ``auto_scale_lr``, warm-up length, how often it validates and saves, and
the official recipe for the model. ``Facts`` bundles the config with these
numbers; it is what every rule is given.
"""

from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass

from mmengine.config import Config, ConfigDict

from seglab.config.walk import leaf_datasets, schedulers
from seglab.doctor.dataset import DataNotFound, probe_dataset
from seglab.doctor.recipes import PUBLISHED_SIZES, Recipe, recipe_for

WARMUP_TYPES = ("LinearLR", "ConstantLR", "ExponentialLR")


@dataclass
class Plan:
    world_size: int
    world_size_source: str
    batch_per_gpu: int
    train_images: int | None
    train_images_source: str  # "counted", "published" or "unknown"
    loop: str  # "epoch" or "iter"
    max_epochs: int | None
    max_iters: int | None
    iters_per_epoch: int | None
    total_iters: int | None
    lr: float | None
    effective_lr: float | None
    auto_scale_lr: bool
    warmup_iters: int | None
    val_every: str
    checkpoint_every: str
    recipe: Recipe | None = None

    @property
    def total_batch(self) -> int:
        return self.world_size * self.batch_per_gpu

    @property
    def images_seen(self) -> int | None:
        return None if self.total_iters is None else self.total_iters * self.total_batch


@dataclass
class DatasetInfo:
    type: str
    num_classes: int
    reduce_zero_label: bool
    images: int | None
    images_source: str  # "counted", "published" or "unknown"


@dataclass
class Facts:
    """What the rules share: the resolved config and the numbers derived from it."""

    cfg: Config
    plan: Plan
    gpus_given: int | None
    datasets: list[DatasetInfo]  # the train loader's leaves

    @property
    def epoch_loop(self) -> bool:
        return self.plan.loop == "epoch"

    def to_iters(self, value: float, by_epoch: bool) -> float | None:
        """A position in the loop's unit (epochs or iterations) as iterations."""
        if not by_epoch:
            return value
        return None if self.plan.iters_per_epoch is None else value * self.plan.iters_per_epoch


# ---------------------------------------------------------------- the datasets

def _published_size(leaf: ConfigDict) -> int | None:
    ann_file = str(leaf.get("ann_file") or "")
    img_path = str(leaf.get("data_prefix", {}).get("img_path", ""))
    for suffix, size in PUBLISHED_SIZES.items():
        if ann_file.endswith(suffix) or (not ann_file and img_path.rstrip("/").endswith(suffix)):
            return size
    return None


def _static_info(leaf: ConfigDict) -> tuple[int, bool]:
    """Classes and reduce_zero_label from the dataset class when its folder is absent
    (mmseg's VOC dataset asserts the folder exists even with lazy_init)."""
    from mmseg.registry import DATASETS

    cls = DATASETS.get(leaf.type)
    classes = (leaf.get("metainfo") or {}).get("classes") or cls.METAINFO["classes"]
    default = inspect.signature(cls.__init__).parameters.get("reduce_zero_label")
    reduce_zero = leaf.get("reduce_zero_label",
                           default.default if default is not None else False)
    return len(classes), bool(reduce_zero)


def describe_dataset(leaf: ConfigDict) -> DatasetInfo:
    """Class count, reduce_zero_label and image count of a leaf dataset, from its split
    list or folder listing when the data is here (no image is read), else published sizes."""
    try:
        probe = probe_dataset(leaf)
    except DataNotFound:  # the data is not here: the config's own figures
        probe = None
    size, source = None, "unknown"
    if probe is None:
        num_classes, reduce_zero = _static_info(leaf)
    else:
        num_classes, reduce_zero = len(probe.metainfo["classes"]), bool(probe.reduce_zero_label)
        if leaf.get("ann_file") and os.path.isfile(probe.ann_file):
            size = sum(1 for line in open(probe.ann_file) if line.strip())
            source = "counted"
        elif not leaf.get("ann_file") and os.path.isdir(probe.data_prefix["img_path"]):
            size = sum(1 for e in os.scandir(probe.data_prefix["img_path"])
                       if e.name.endswith(probe.img_suffix))
            source = "counted"
    if size is None and (published := _published_size(leaf)) is not None:
        size, source = published, "published"
    indices = leaf.get("indices")
    if size is not None and isinstance(indices, int):
        size = min(size, indices)
    elif isinstance(indices, (list, tuple)):
        size = len(indices)
    return DatasetInfo(leaf.type, num_classes, reduce_zero, size, source)


def _train_images(datasets: list[DatasetInfo]) -> tuple[int | None, str]:
    if not datasets or any(d.images is None for d in datasets):
        return None, "unknown"
    sources = {d.images_source for d in datasets}
    return (sum(d.images for d in datasets),
            "published" if "published" in sources else "counted")


# ---------------------------------------------------------------- the loop

def _loop_kind(train_cfg: ConfigDict) -> str:
    loop_type = str(train_cfg.get("type", ""))
    if "Epoch" in loop_type or (not loop_type and train_cfg.get("by_epoch", False)):
        return "epoch"
    if "Iter" in loop_type or "max_iters" in train_cfg:
        return "iter"
    return "epoch" if "max_epochs" in train_cfg else "iter"


def _iters_per_epoch(images: int, world: int, batch: int, drop_last: bool) -> int:
    per_rank = math.ceil(images / world)  # DefaultSampler pads to a multiple of the world
    return per_rank // batch if drop_last else math.ceil(per_rank / batch)


def build_plan(cfg: Config, gpus: int | None) -> tuple[Plan, list[DatasetInfo]]:
    """The plan's sizes, lengths and LR (cadence is filled in by ``fill_cadence``), and
    the train loader's leaf datasets."""
    loader = cfg.train_dataloader
    datasets = [describe_dataset(leaf) for leaf in leaf_datasets(loader.dataset)]
    if gpus is not None:
        world, world_source = gpus, "--gpus"
    elif isinstance(cfg.get("gpu_count"), int):
        world, world_source = cfg.gpu_count, "gpu_count in the config"
    else:
        world, world_source = 1, "default (pass --gpus N)"
    images, source = _train_images(datasets)
    loop = _loop_kind(cfg.train_cfg)
    batch = int(loader.batch_size)
    ipe = (_iters_per_epoch(images, world, batch, bool(loader.get("drop_last", False)))
           if images else None)
    max_epochs = cfg.train_cfg.get("max_epochs") if loop == "epoch" else None
    max_iters = cfg.train_cfg.get("max_iters") if loop == "iter" else None
    total = max_iters if loop == "iter" else (max_epochs * ipe if ipe else None)
    optimizer = cfg.get("optim_wrapper", {}).get("optimizer", {})
    lr = optimizer.get("lr")
    scale = cfg.get("auto_scale_lr") or {}
    auto = bool(scale.get("enable", False))
    effective = (lr * world * batch / scale.get("base_batch_size", 16)
                 if auto and lr is not None else lr)
    plan = Plan(world, world_source, batch, images, source, loop, max_epochs, max_iters, ipe,
                total, lr, effective, auto, None, "", "",
                recipe_for(cfg, [d.type for d in datasets]))
    return plan, datasets


# ---------------------------------------------------------------- warm-up, validation, saving

def _warmup_iters(facts: Facts) -> int | None:
    for sched in schedulers(facts.cfg):
        factor = sched.get("start_factor", sched.get("factor", 1.0))
        if sched.get("type") in WARMUP_TYPES and sched.get("begin", 0) == 0 and factor < 1:
            end = facts.to_iters(sched.get("end", 0), sched.get("by_epoch", True))
            return None if end is None else int(end)
    return 0


def _cadence(facts: Facts, interval: int | None, by_epoch: bool, what: str) -> str:
    if interval is None or interval <= 0:
        return f"no periodic {what}"
    unit = "epoch" if by_epoch else "iteration"
    iters = facts.to_iters(interval, by_epoch)
    in_iters = f" ({int(iters)} iterations)" if by_epoch and iters is not None else ""
    return f"every {interval} {unit}(s){in_iters}"


def fill_cadence(facts: Facts) -> None:
    """Warm-up length and validation/checkpoint cadence, which need iterations per epoch."""
    cfg, plan = facts.cfg, facts.plan
    plan.warmup_iters = _warmup_iters(facts)
    plan.val_every = _cadence(facts, cfg.train_cfg.get("val_interval", 1), facts.epoch_loop,
                              "validation") if cfg.get("val_cfg") else "no validation"
    ckpt = cfg.get("default_hooks", {}).get("checkpoint") or {}
    plan.checkpoint_every = _cadence(facts, ckpt.get("interval", -1),
                                     ckpt.get("by_epoch", True), "checkpoint")
