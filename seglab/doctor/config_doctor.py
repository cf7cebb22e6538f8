"""``seglab doctor CONFIG``: the mistakes that cost the seeds days of GPU time, caught in seconds.

Each rule reads the resolved config (and, where it helps, the dataset's split
lists or folder listings; never an image) and reports a finding with a
severity, the config key, why it matters and the fix. Errors are mistakes that
waste or break the run for certain; ``seglab train`` refuses them unless told
otherwise. The dry-run plan says what the run will actually do: images per
epoch, iterations, the LR after ``auto_scale_lr``, warm-up length and how often
it validates and saves, next to the official mmseg recipe for the model.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from mmengine.config import Config, ConfigDict

from seglab.config.walk import (
    has_pretrained_backbone,
    head_losses,
    leaf_datasets,
    mmseg_config_dir,
    model_heads,
    pretrained_init,
    schedulers,
)

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
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
# IoUMetric's iou_metrics entry -> the keys it returns (aAcc always).
METRIC_KEYS = {"mIoU": ("mIoU", "mAcc"), "mDice": ("mDice", "mAcc"),
               "mFscore": ("mFscore", "mPrecision", "mRecall", "mAcc")}
WARMUP_TYPES = ("LinearLR", "ConstantLR", "ExponentialLR")
BINARY_AUX_HEADS = ("STDCHead",)  # STDC's detail head predicts edges (2 classes) by design
LR_RATIO_TOLERANCE = 2.0  # per-image LR further than 2x from the recipe's is flagged
RESNET_V1C_CHECKPOINT = "open-mmlab://resnet50_v1c"


@dataclass
class ConfigFinding:
    severity: str  # "error": the run breaks or is wasted for certain; "warning"; "info"
    rule: str
    key: str
    message: str  # what is wrong and why it matters
    fix: str


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
class DoctorReport:
    config: str
    plan: Plan
    findings: list[ConfigFinding] = field(default_factory=list)

    @property
    def errors(self) -> list[ConfigFinding]:
        return [f for f in self.findings if f.severity == "error"]

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "plan": asdict(self.plan),
                "findings": [asdict(f) for f in self.findings]}


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


# ---------------------------------------------------------------- reading the config

def _loop_kind(train_cfg: ConfigDict) -> str:
    loop_type = str(train_cfg.get("type", ""))
    if "Epoch" in loop_type or (not loop_type and train_cfg.get("by_epoch", False)):
        return "epoch"
    if "Iter" in loop_type or "max_iters" in train_cfg:
        return "iter"
    return "epoch" if "max_epochs" in train_cfg else "iter"


def _published_size(leaf: ConfigDict) -> int | None:
    ann_file = str(leaf.get("ann_file") or "")
    img_path = str(leaf.get("data_prefix", {}).get("img_path", ""))
    for suffix, size in PUBLISHED_SIZES.items():
        if ann_file.endswith(suffix) or (not ann_file and img_path.rstrip("/").endswith(suffix)):
            return size
    return None


@dataclass
class DatasetInfo:
    type: str
    num_classes: int
    reduce_zero_label: bool
    images: int | None
    images_source: str  # "counted", "published" or "unknown"


def _static_info(leaf: ConfigDict) -> tuple[int, bool]:
    """Classes and reduce_zero_label from the dataset class when its folder is absent
    (mmseg's VOC dataset asserts the folder exists even with lazy_init)."""
    import inspect

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
    from seglab.doctor.dataset import probe_dataset

    try:
        probe = probe_dataset(leaf)
    except (AssertionError, FileNotFoundError):
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


def _iters_per_epoch(images: int, world: int, batch: int, drop_last: bool) -> int:
    per_rank = math.ceil(images / world)  # DefaultSampler pads to a multiple of the world
    return per_rank // batch if drop_last else math.ceil(per_rank / batch)


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


def load_recipe(relative: str) -> Recipe:
    """The LR, world size, batch and length of a config mmseg ships."""
    cfg = Config.fromfile(str(mmseg_config_dir() / relative))
    world, batch = (int(v) for v in re.search(r"(\d+)xb(\d+)", relative).groups())
    return Recipe(relative, float(cfg.optim_wrapper.optimizer.lr), world, batch,
                  int(cfg.train_cfg.max_iters))


def _recipe_for(cfg: Config, dataset_types: list[str]) -> Recipe | None:
    model = cfg.model
    head = model.get("decode_head") or {}
    head = head[-1] if isinstance(head, (list, tuple)) else head  # cascade heads (OCRNet)
    key = (model.get("backbone", {}).get("type"), head.get("type"))
    matches = [path for (b, h, d), path in RECIPES.items() if (b, h) == key]
    exact = [RECIPES[(*key, d)] for d in dataset_types if (*key, d) in RECIPES]
    chosen = (exact or matches or [None])[0]
    return load_recipe(chosen) if chosen else None


def build_plan(cfg: Config, gpus: int | None) -> tuple[Plan, list[DatasetInfo]]:
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
                _recipe_for(cfg, [d.type for d in datasets]))
    return plan, datasets


def _fill_cadence(facts: Facts) -> None:
    cfg, plan = facts.cfg, facts.plan
    plan.warmup_iters = _warmup_iters(facts)
    plan.val_every = _cadence(facts, cfg.train_cfg.get("val_interval", 1), facts.epoch_loop,
                              "validation") if cfg.get("val_cfg") else "no validation"
    ckpt = cfg.get("default_hooks", {}).get("checkpoint") or {}
    plan.checkpoint_every = _cadence(facts, ckpt.get("interval", -1),
                                     ckpt.get("by_epoch", True), "checkpoint")


# ---------------------------------------------------------------- the rules

Rule = Callable[[Facts], Iterator[ConfigFinding]]
RULES: list[Rule] = []


def rule(fn: Rule) -> Rule:
    RULES.append(fn)
    return fn


@rule
def sampler_vs_loop(facts: Facts) -> Iterator[ConfigFinding]:
    sampler = facts.cfg.train_dataloader.get("sampler", {}).get("type", "")
    if facts.epoch_loop and "Infinite" in str(sampler):
        yield ConfigFinding(
            "error", "sampler-loop", "train_dataloader.sampler.type",
            f"an epoch-based loop over {sampler} never finishes an epoch, so no checkpoint and "
            "no validation ever happen (seed 002; mmseg #2566, #2912)",
            "train_dataloader.sampler = dict(type='DefaultSampler', shuffle=True)")


@rule
def scheduler_vs_loop(facts: Facts) -> Iterator[ConfigFinding]:
    scheds = schedulers(facts.cfg)
    total = facts.plan.total_iters
    for i, sched in enumerate(scheds):
        key = f"param_scheduler.{i}"
        by_epoch = sched.get("by_epoch", True)
        if by_epoch and not facts.epoch_loop:
            yield ConfigFinding(
                "error", "scheduler-by-epoch", f"{key}.by_epoch",
                f"{sched.get('type')} counts epochs but the loop is iteration-based: it steps "
                "once, at the very end, so the LR never changes during training",
                f"{key}.by_epoch=False with begin/end in iterations")
            continue
    decay = scheds[-1] if scheds else None
    if decay is None or total is None or "end" not in decay:
        return
    key = f"param_scheduler.{len(scheds) - 1}"
    by_epoch = decay.get("by_epoch", True)
    begin = facts.to_iters(decay.get("begin", 0), by_epoch)
    end = facts.to_iters(decay["end"], by_epoch)
    if end is None or begin is None:
        return
    stop = (f"iteration {total:,} (epoch {facts.plan.max_epochs})" if facts.epoch_loop
            else f"iteration {total:,}")
    unit = "epoch" if by_epoch else "iteration"
    fixed_end = facts.plan.max_epochs if by_epoch and facts.epoch_loop else total
    if end > total:
        left = ((1 - (total - begin) / (end - begin)) ** decay.get("power", 1.0)
                if decay.get("type") == "PolyLR" and end > begin else None)
        share = f"; {left:.1%} of the decay is still ahead when training stops" if left else ""
        yield ConfigFinding(
            "warning" if left is None or left > 0.05 else "info", "scheduler-end",
            f"{key}.end",
            f"{decay.get('type')} ends at {unit} {decay['end']} ({int(end):,} iterations) but "
            f"training stops at {stop}: the LR never reaches eta_min{share}",
            f"{key}.end={fixed_end} (the loop length in the scheduler's unit)")
    elif end < 0.9 * total:
        yield ConfigFinding(
            "warning", "scheduler-end", f"{key}.end",
            f"{decay.get('type')} ends at {unit} {decay['end']} ({int(end):,} iterations) but "
            f"training stops at {stop}: the last {1 - end / total:.0%} of training runs at "
            "the final LR", f"{key}.end={fixed_end}, or shorten the loop")


@rule
def validation_and_checkpoints(facts: Facts) -> Iterator[ConfigFinding]:
    cfg, plan = facts.cfg, facts.plan
    length = plan.max_epochs if facts.epoch_loop else plan.max_iters
    unit = "epochs" if facts.epoch_loop else "iterations"
    if length is None:
        return
    if cfg.get("val_cfg") and cfg.train_cfg.get("val_begin", 1) > length:
        yield ConfigFinding(
            "error", "val-interval", "train_cfg.val_begin",
            f"validation begins after training ends ({length} {unit}): no mIoU, no best "
            "checkpoint", f"train_cfg.val_begin <= {length}")
    elif cfg.get("val_cfg") and cfg.train_cfg.get("val_interval", 1) > length:
        yield ConfigFinding(
            "warning", "val-interval", "train_cfg.val_interval",
            f"val_interval {cfg.train_cfg.val_interval} is longer than training ({length} "
            f"{unit}): validation runs once, at the end, so a failing run is found late and "
            "save_best has one candidate", f"train_cfg.val_interval <= {length}")
    ckpt = cfg.get("default_hooks", {}).get("checkpoint") or {}
    if ckpt.get("by_epoch", True) and not facts.epoch_loop:
        yield ConfigFinding(
            "error", "checkpoint-by-epoch", "default_hooks.checkpoint.by_epoch",
            "CheckpointHook counts epochs in an iteration-based loop: nothing is saved until "
            "training ends, so an interruption loses the whole run",
            "default_hooks.checkpoint.by_epoch=False with interval in iterations")
    elif ckpt.get("interval", -1) > length:
        yield ConfigFinding(
            "warning", "checkpoint-interval", "default_hooks.checkpoint.interval",
            f"checkpoint interval {ckpt.interval} is longer than training ({length} {unit}): "
            "only the final checkpoint is written, an interruption loses the whole run",
            f"default_hooks.checkpoint.interval <= {length}")


def _evaluator_keys(evaluator: Any) -> set[str]:
    metrics = evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]
    keys = set()
    for metric in metrics:
        if not isinstance(metric, dict):
            continue
        if "IoUMetric" in str(metric.get("type", "")):
            keys.add("aAcc")
            for name in metric.get("iou_metrics", ["mIoU"]):
                keys.update(METRIC_KEYS.get(name, ()))
        else:
            return set()  # another metric: its keys are not known here
    return keys


@rule
def save_best_key(facts: Facts) -> Iterator[ConfigFinding]:
    ckpt = facts.cfg.get("default_hooks", {}).get("checkpoint") or {}
    wanted = ckpt.get("save_best")
    if not wanted or wanted == "auto" or not facts.cfg.get("val_evaluator"):
        return
    produced = _evaluator_keys(facts.cfg.val_evaluator)
    for key in [wanted] if isinstance(wanted, str) else list(wanted):
        if produced and key not in produced:
            yield ConfigFinding(
                "error", "save-best-key", "default_hooks.checkpoint.save_best",
                f"save_best={key!r} but the evaluator produces {sorted(produced)}: the best "
                "checkpoint is never saved (CheckpointHook fails at the first validation)",
                f"save_best one of {sorted(produced)}, or add it to val_evaluator.iou_metrics")


@rule
def classes_and_labels(facts: Facts) -> Iterator[ConfigFinding]:
    if not facts.datasets:
        return
    first = facts.datasets[0]
    dataset_type, num_classes, reduce_zero = first.type, first.num_classes, first.reduce_zero_label
    for key, head in model_heads(facts.cfg.model):
        if head.get("type") in BINARY_AUX_HEADS:
            continue
        if head.get("num_classes") not in (None, num_classes):
            yield ConfigFinding(
                "error", "num-classes", f"{key}.num_classes",
                f"{head.num_classes} classes in the head, {num_classes} in {dataset_type}: "
                "labels beyond the head crash (CUDA device-side assert) or classes never "
                "get a logit", f"{key}.num_classes={num_classes}")
    expected = {"ADE20KDataset": True, "PascalVOCDataset": False}.get(dataset_type)
    if expected is not None and reduce_zero != expected:
        why = ("ADE20K labels 0 as 'other' and 1..150 as classes" if expected else
               "VOC's label 0 is the background class")
        yield ConfigFinding(
            "error", "reduce-zero-label", "train_dataloader.dataset.reduce_zero_label",
            f"{dataset_type} with reduce_zero_label={reduce_zero}: {why}, so every label is "
            "off by one", f"reduce_zero_label={expected}")
    for loader in ("train_dataloader", "val_dataloader"):
        if not facts.cfg.get(loader):
            continue  # a run without validation
        for leaf in leaf_datasets(facts.cfg[loader].dataset):
            for i, step in enumerate(leaf.get("pipeline") or []):
                value = step.get("reduce_zero_label")
                if step.get("type") == "LoadAnnotations" and value not in (None, reduce_zero):
                    yield ConfigFinding(
                        "error", "reduce-zero-label", f"{loader}.dataset.pipeline.{i}",
                        f"LoadAnnotations(reduce_zero_label={value}) disagrees with the "
                        f"dataset's reduce_zero_label={reduce_zero}: mmseg asserts at the "
                        "first batch", "drop reduce_zero_label from LoadAnnotations "
                        "(the dataset's value is used)")


@rule
def pretrained_weights(facts: Facts) -> Iterator[ConfigFinding]:
    cfg = facts.cfg
    backbone = cfg.model.get("backbone", {})
    init_ckpt = (pretrained_init(backbone) or {}).get("checkpoint")
    if cfg.model.get("pretrained") and init_ckpt:
        yield ConfigFinding(
            "error", "pretrained-and-init-cfg", "model.pretrained",
            "model.pretrained and model.backbone.init_cfg are both set: mmseg asserts "
            "('init_cfg and pretrained cannot be setting at the same time')",
            "model.pretrained=None and keep backbone.init_cfg")
    if cfg.get("load_from") and init_ckpt and not cfg.get("resume"):
        yield ConfigFinding(
            "warning", "load-from-and-init-cfg", "model.backbone.init_cfg",
            f"load_from={cfg.load_from!r} replaces every weight after the backbone was "
            f"initialised from {init_ckpt!r}: that download/load is wasted, and if load_from "
            "was meant as the ImageNet init the heads get it too",
            "model.backbone.init_cfg=None when fine-tuning from load_from")
    if (init_ckpt and str(init_ckpt).startswith("torchvision://")
            and backbone.get("type") in ("ResNetV1c", "ResNetV1d")):
        yield ConfigFinding(
            "warning", "pretrained-arch", "model.backbone.init_cfg.checkpoint",
            f"{init_ckpt} holds a plain ResNet (one 7x7 stem conv) but the backbone is "
            f"{backbone.type} (deep stem of three 3x3 convs): the stem stays random and the "
            "only sign is a long 'missing keys' warning (seed 003)",
            f"checkpoint={RESNET_V1C_CHECKPOINT!r}, or backbone type='ResNet' with "
            "deep_stem=False")


@rule
def loss_settings(facts: Facts) -> Iterator[ConfigFinding]:
    for key, head in model_heads(facts.cfg.model):
        losses = head_losses(head)
        head_ignore = head.get("ignore_index", 255)
        names: dict[str, int] = {}
        defaults = {"CrossEntropyLoss": "loss_ce", "FocalLoss": "loss_focal",
                    "DiceLoss": "loss_dice", "LovaszLoss": "loss_lovasz"}
        for i, loss in enumerate(losses):
            name = loss.get("loss_name", defaults.get(loss.get("type"), str(loss.get("type"))))
            if name in names:
                yield ConfigFinding(
                    "warning", "loss-name", f"{key}.loss_decode.{i}.loss_name",
                    f"{loss.get('type')} and loss_decode.{names[name]} share loss_name "
                    f"{name!r}: mmseg sums them into one logged value, so neither can be "
                    "watched (or named when it turns NaN)",
                    f"give each loss its own loss_name (e.g. 'loss_{i}')")
            names[name] = i
            if loss.get("type") == "DiceLoss" and loss.get("ignore_index", 255) != head_ignore:
                yield ConfigFinding(
                    "error", "loss-ignore-index", f"{key}.loss_decode.{i}.ignore_index",
                    f"DiceLoss uses its own ignore_index={loss.get('ignore_index')} (the head's "
                    f"{head_ignore} is not passed to it): ignored pixels are scored as a class",
                    f"{key}.loss_decode.{i}.ignore_index={head_ignore}")
        amp = facts.cfg.get("optim_wrapper", {})
        fp16 = amp.get("type") == "AmpOptimWrapper" and amp.get("dtype") != "bfloat16"
        if fp16 and any(loss.get("type") in ("FocalLoss", "DiceLoss") for loss in losses):
            yield ConfigFinding(
                "warning", "amp-losses", "optim_wrapper.type",
                "fp16 AMP with Focal/Dice losses produced NaN losses in seed 000 v1.2; "
                "seglab's NaN guard stops such a run and names the term, but the run is lost",
                "optim_wrapper.dtype='bfloat16' or `seglab train --amp-dtype bf16` (Ampere or "
                "newer; seglab's FocalLoss computes bf16 through its PyTorch path, since "
                "mmcv's kernel has no bf16), or train these losses in fp32")


def _lr_for_batch(recipe: Recipe, total_batch: int) -> float:
    """The recipe's LR moved to ``total_batch`` by the linear scaling rule."""
    return recipe.lr * total_batch / recipe.total_batch


@rule
def learning_rate(facts: Facts) -> Iterator[ConfigFinding]:
    cfg, plan, recipe = facts.cfg, facts.plan, facts.plan.recipe
    if plan.lr is None:
        return
    gpu_count = cfg.get("gpu_count")
    if facts.gpus_given and isinstance(gpu_count, int) and gpu_count != facts.gpus_given:
        yield ConfigFinding(
            "warning", "lr-world-size", "gpu_count",
            f"the config computes its batch and LR for gpu_count={gpu_count} but the run "
            f"uses {facts.gpus_given} processes: the total batch is "
            f"{facts.gpus_given * plan.batch_per_gpu}, not {gpu_count * plan.batch_per_gpu}, "
            "and the hand-scaled LR no longer matches it",
            f"gpu_count={facts.gpus_given}, or the recipe LR with auto_scale_lr.enable=True")
    if recipe is None:
        return
    scaled = _lr_for_batch(recipe, plan.total_batch)
    hand_scaled = (plan.total_batch != recipe.total_batch
                   and math.isclose(plan.lr, scaled, rel_tol=1e-6))
    if hand_scaled and plan.auto_scale_lr:
        yield ConfigFinding(
            "error", "lr-scaled-twice", "auto_scale_lr.enable",
            f"lr {plan.lr:g} is already the recipe's {recipe.lr:g} scaled to a batch of "
            f"{plan.total_batch}, and auto_scale_lr scales it again to {plan.effective_lr:g}",
            f"optim_wrapper.optimizer.lr={recipe.lr:g} (auto_scale_lr does the scaling)")
    elif hand_scaled:
        yield ConfigFinding(
            "info", "lr-hand-scaled", "optim_wrapper.optimizer.lr",
            f"lr {plan.lr:g} = {recipe.lr:g} x {plan.total_batch}/{recipe.total_batch} by hand "
            "(seed 003): right only for this GPU count", f"optim_wrapper.optimizer.lr="
            f"{recipe.lr:g} and auto_scale_lr=dict(enable=True, base_batch_size="
            f"{recipe.total_batch})")
    if cfg.get("load_from") or cfg.get("resume"):
        return  # fine-tuning LRs are judged against the checkpoint (rule below)
    if not has_pretrained_backbone(cfg.model):
        return  # recipes start from ImageNet weights; from-scratch runs are another regime
    ratio = plan.effective_lr / scaled
    if not 1 / LR_RATIO_TOLERANCE <= ratio <= LR_RATIO_TOLERANCE:
        effect = ("learning crawls: seed 000 v1 trained at 0.27x and reached 26.6 mIoU "
                  "against a published 45.6" if ratio < 1 else
                  "pretrained features get overwritten and the loss may diverge")
        yield ConfigFinding(
            "warning", "lr-vs-recipe", "optim_wrapper.optimizer.lr",
            f"LR {plan.effective_lr:g} at a total batch of {plan.total_batch} is {ratio:.2g}x "
            f"the official recipe ({recipe.lr:g} at {recipe.total_batch}, i.e. {scaled:.3g} "
            f"at {plan.total_batch}; {recipe.config}): {effect}",
            f"optim_wrapper.optimizer.lr={scaled:.3g}, or {recipe.lr:g} with auto_scale_lr")


@rule
def fine_tune_and_resume(facts: Facts) -> Iterator[ConfigFinding]:
    from seglab.engine.resume import lr_jump_warning, read_saved_run, resume_report

    cfg, plan = facts.cfg, facts.plan
    load_from = cfg.get("load_from")
    if not load_from or plan.lr is None:
        return
    saved = read_saved_run(load_from) if os.path.isfile(load_from) else None
    if cfg.get("resume"):
        changes = resume_report(saved, cfg) if saved else []
        ignored = [line for line in changes if "IGNORED" in line]
        yield ConfigFinding(
            "warning" if ignored or not saved else "info", "resume-in-config", "resume",
            f"resume=True restores the optimizer (with its LR) and the scheduler from "
            f"{load_from}: this config's LR, warm-up and schedule are ignored (seed 001 v3)"
            + (": " + "; ".join(ignored) if ignored else ""),
            "drop resume=True and use `seglab train --finetune-from CKPT` for a new schedule; "
            "`--resume` on the command line to continue a run")
        return
    if saved is not None:
        warning = lr_jump_warning(saved, plan.effective_lr)
        if warning:
            yield ConfigFinding("warning", "finetune-lr", "optim_wrapper.optimizer.lr",
                                warning, f"optim_wrapper.optimizer.lr <= {min(saved.last_lrs):g}")
        return
    recipe = plan.recipe
    if recipe is not None and plan.effective_lr >= 0.5 * _lr_for_batch(recipe, plan.total_batch):
        yield ConfigFinding(
            "warning", "finetune-lr", "optim_wrapper.optimizer.lr",
            f"fine-tuning {load_from} at LR {plan.effective_lr:g}, the from-scratch level "
            f"({recipe.lr:g} at {recipe.total_batch}): on a converged model this destroys it "
            "(seed 000 v1.1: mIoU fell to ~0)",
            "start at or below the checkpoint's last LR (typically 10x lower)")


# ---------------------------------------------------------------- running and printing

def examine_config(cfg: Config, config_path: str, gpus: int | None = None) -> DoctorReport:
    """Apply every rule to a resolved config; reads split lists, never images."""
    from mmengine.registry import init_default_scope

    init_default_scope(cfg.get("default_scope", "mmseg"))
    plan, datasets = build_plan(cfg, gpus)
    facts = Facts(cfg, plan, gpus, datasets)
    _fill_cadence(facts)
    findings = [finding for check in RULES for finding in check(facts)]
    findings.sort(key=lambda f: SEVERITY_ORDER[f.severity])
    return DoctorReport(config_path, plan, findings)


def _fmt(value: float | None, unit: str = "") -> str:
    return "unknown" if value is None else f"{value:,}{unit}"


def plan_text(plan: Plan) -> list[str]:
    where = {"counted": "counted from the split lists", "published": "published size; "
             "data not found on this machine", "unknown": "data not found"}
    lines = [
        f"  train images      {_fmt(plan.train_images)} ({where[plan.train_images_source]})",
        f"  world x batch     {plan.world_size} x {plan.batch_per_gpu} = {plan.total_batch} "
        f"(world size from {plan.world_size_source})",
        f"  iterations/epoch  {_fmt(plan.iters_per_epoch)}",
    ]
    length = (f"{plan.max_epochs} epochs" if plan.loop == "epoch" else f"{plan.max_iters} iters")
    lines.append(f"  total             {length} = {_fmt(plan.total_iters)} iterations, "
                 f"{_fmt(plan.images_seen)} images seen")
    if plan.recipe is not None and plan.images_seen is not None:
        r = plan.recipe
        lines.append(f"  official recipe   {r.config}: {r.max_iters:,} iters x {r.total_batch} = "
                     f"{r.images:,} images ({plan.images_seen / r.images:.2f}x), lr {r.lr:g}")
    scale = ("auto_scale_lr on" if plan.auto_scale_lr else "auto_scale_lr off")
    lines += [
        f"  learning rate     {_fmt(plan.lr)} -> effective {_fmt(plan.effective_lr)} ({scale})",
        f"  warm-up           {_fmt(plan.warmup_iters)} iterations",
        f"  validation        {plan.val_every}",
        f"  checkpoints       {plan.checkpoint_every}",
    ]
    return lines


def report_text(report: DoctorReport) -> str:
    lines = [f"seglab doctor: {report.config}", "plan:", *plan_text(report.plan)]
    for f in report.findings:
        lines.append(f"{f.severity.upper()} [{f.rule}] {f.key}: {f.message}. Fix: {f.fix}")
    errors = len(report.errors)
    warnings = sum(f.severity == "warning" for f in report.findings)
    lines.append(f"{errors} error(s), {warnings} warning(s)")
    return "\n".join(lines)
