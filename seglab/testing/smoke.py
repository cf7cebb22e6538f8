"""Shrink any experiment config to a seconds-long CPU run on generated data.

The architecture, losses, optimizer, schedule and pipeline stages stay as
written; only sizes, data roots, weights and loop length change. A config that
passes has a model that builds, datasets that load, a pipeline that runs, and a
loss that back-propagates: the mistakes that otherwise surface hours into a run.
"""

from __future__ import annotations

from mmengine.config import Config, ConfigDict

from seglab.config.walk import leaf_datasets, strip_pretrained

SMOKE_CROP = (64, 64)
# mmseg dataset type -> which generated layout feeds it
DATASET_LAYOUTS = {"PascalVOCDataset": "voc", "ADE20KDataset": "ade20k"}


def shrink_pipeline(pipeline: list[dict], crop: tuple[int, int]) -> None:
    height, width = crop
    for step in pipeline:
        if "scale" in step and step["type"] in ("Resize", "RandomResize"):
            step["scale"] = (2 * width, height)
        if step["type"] == "RandomCrop":
            step["crop_size"] = crop
        if step["type"] == "Pad" and "size" in step:
            step["size"] = crop


def _no_repeats(dataset: ConfigDict) -> None:
    """``RepeatDataset(times=50)`` (PoolFormer's ADE20K) would repeat the smoke epoch 50x."""
    if "times" in dataset:
        dataset.times = 1
    for child in [dataset.get("dataset"), *dataset.get("datasets", [])]:
        if isinstance(child, dict):
            _no_repeats(child)


def _shrink_dataset(dataset: ConfigDict, data_roots: dict[str, str], images: int,
                    crop: tuple[int, int] | None) -> None:
    _no_repeats(dataset)
    leaves = leaf_datasets(dataset)
    for leaf in leaves:
        layout = DATASET_LAYOUTS.get(leaf.type)
        if layout is None:
            raise KeyError(f"no generated layout for dataset type {leaf.type!r}")
        leaf.data_root = data_roots[layout]
        leaf.indices = max(1, images // len(leaves))
        if crop is not None:
            shrink_pipeline(leaf.pipeline, crop)


def smoke_config(cfg: Config, data_roots: dict[str, str], work_dir: str,
                 iterations: int = 2, batch_size: int | None = 2,
                 crop: tuple[int, int] | None = SMOKE_CROP, num_workers: int = 0,
                 pretrained: bool = False, validate: bool = True) -> Config:
    """Return ``cfg`` changed in place to train ``iterations`` steps and validate 2 images.

    ``crop=None`` and ``batch_size=None`` keep the config's own crop and per-GPU
    batch (the device check runs configs at their real size). ``pretrained=True`` keeps
    the config's pretrained weights (the file must exist); else initialisation is random.
    ``validate=False`` drops validation and testing (train loop only).
    """
    if not pretrained:
        strip_pretrained(cfg.model)
    cfg.load_from, cfg.resume, cfg.work_dir = None, False, work_dir
    if crop is not None:
        cfg.model.data_preprocessor.size = crop
    batch_size = batch_size or cfg.train_dataloader.batch_size
    for name, images in (("train_dataloader", iterations * batch_size),
                         ("val_dataloader", 2), ("test_dataloader", 2)):
        loader = cfg[name]
        loader.update(batch_size=batch_size if name == "train_dataloader" else 1,
                      num_workers=num_workers, persistent_workers=False,
                      sampler=ConfigDict(type="DefaultSampler",
                                         shuffle=name == "train_dataloader"))
        _shrink_dataset(loader.dataset, data_roots, images, crop)
    cfg.train_cfg = ConfigDict(type="EpochBasedTrainLoop", max_epochs=1, val_interval=1)
    cfg.default_hooks.checkpoint = ConfigDict(type="CheckpointHook", interval=-1,
                                              save_last=False)
    cfg.default_hooks.logger = ConfigDict(type="LoggerHook", interval=1)
    if not validate:  # mmengine builds a val/test loop only when all three are set
        for stage in ("val", "test"):
            cfg[f"{stage}_dataloader"] = cfg[f"{stage}_cfg"] = cfg[f"{stage}_evaluator"] = None
    return cfg
