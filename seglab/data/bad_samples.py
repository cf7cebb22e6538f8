"""Bad samples, caught as they load: one error naming the dataset index and both files.

Without this, a truncated JPEG or an empty file dies in a dataloader worker with a
traceback that often names no file (``cv2.error ... !buf.empty()``), an RGB mask dies
later in collate (``stack expects each tensor to be equal size``), and a mask of the wrong
size or with label 200 trains silently on corrupt labels.

``use_sample_checks`` (called by ``seglab train``/``test``) edits every dataset pipeline
of the config in place of the loaders, nothing else:

- each ``Load*`` transform (``LoadImageFromFile``, ``LoadAnnotations``, ...) runs inside
  ``GuardedLoad``: whatever it raises (missing, empty, truncated, undecodable file) becomes
  a ``BadSampleError``;
- ``CheckLoadedSample`` goes right after the last loader, before any resize or crop: the
  mask has one channel, the image's size, and labels ``0..num_classes-1`` or
  ``ignore_index`` (after ``reduce_zero_label`` and any ``label_map``).

``--on-bad-sample raise`` (the default) stops at the first bad sample with one readable
error, also from a dataloader worker. ``--on-bad-sample skip`` skips a bad *training*
sample: the transform returns ``None`` and mmengine's ``BaseDataset`` loads another one
(its ``max_refetch`` logic); each bad sample is recorded once in
``WORK_DIR/bad_samples.json`` (workers and ranks share the file under a lock) and the run
stops when more than ``--max-bad-samples`` are recorded. Validation and test samples are
never skipped: a skipped or substituted sample would change the metric.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import os.path as osp
from typing import Any

import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.config import Config
from mmengine.logging import print_log
from mmseg.registry import TRANSFORMS

from seglab.atomic_files import atomic_write, folder_lock
from seglab.config.walk import leaf_datasets, model_heads, type_name
from seglab.errors import UserError
from seglab.launch.env import launch_rank

POLICIES = ("raise", "skip")
DEFAULT_MAX_BAD_SAMPLES = 100
RECORD_FILE = "bad_samples.json"
DEFAULT_IGNORE_INDEX = 255  # mmseg's BaseDecodeHead default and its datasets' void label
# dataloader -> split name in messages and records
SPLITS = {"train_dataloader": "train", "val_dataloader": "val", "test_dataloader": "test"}


class BadSampleError(UserError):
    """A sample that cannot be loaded or whose mask disagrees with its image.

    Raised in a dataloader worker, it reaches the main process re-created by torch's
    ``ExceptionWrapper.reraise`` as ``BadSampleError("Caught BadSampleError in DataLoader
    worker process N.\\nOriginal Traceback ...")``; the constructor keeps only the original
    message, so the user reads one paragraph, not a 40-line worker traceback.
    """

    def __init__(self, message: str, *, index: int | None = None, img_path: str | None = None,
                 seg_map_path: str | None = None, reason: str | None = None) -> None:
        marker = f"{type(self).__module__}.{type(self).__qualname__}: "
        if message.startswith("Caught ") and marker in message:
            message = message.rsplit(marker, 1)[1].rstrip()
        super().__init__(message)
        self.index, self.img_path, self.seg_map_path, self.reason = (
            index, img_path, seg_map_path, reason)


class TooManyBadSamples(BadSampleError):
    """``--on-bad-sample skip`` recorded more bad samples than ``--max-bad-samples``."""


def _is_loader(step: Any) -> bool:
    return type_name(step).startswith("Load")


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(int(n)) for n in shape)


def _describe(err: BaseException, what: str) -> str:
    """What went wrong reading the ``what`` ('image', 'mask') file, in words."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if isinstance(err, FileNotFoundError):
        return f"the {what} file does not exist"
    if "!buf.empty()" in text:
        return f"the {what} file is empty"
    if isinstance(err, AssertionError) and "failed to load" in text:
        return f"the {what} cannot be decoded (truncated, corrupt or not an image)"
    if "truncated" in text.lower():
        return f"the {what} file is truncated ({text})"
    if "cannot identify image file" in text:
        return f"the {what} file is empty or not an image"
    return f"the {what} cannot be read: {type(err).__name__}: {text[:200]}"


# ---------------------------------------------------------------------------------------
# the record of skipped samples, shared by dataloader workers and ranks


def read_records(path: str) -> list[dict[str, Any]]:
    """The records in ``path`` (``[]`` when there is none yet)."""
    if not osp.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def add_record(path: str, record: dict[str, Any]) -> tuple[int, bool]:
    """Add ``record`` to the JSON list in ``path`` unless its sample is there already.

    Returns the number of distinct bad samples recorded and whether this one is new.
    The read-modify-write runs under a lock on the folder and replaces the file
    atomically, so concurrent dataloader workers (and ranks) never lose or tear a record.
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with folder_lock(folder):
        records = read_records(path)
        key = (record["split"], record["index"], record["img_path"])
        if any((r["split"], r["index"], r["img_path"]) == key for r in records):
            return len(records), False
        records.append(record)
        with atomic_write(path) as f:
            json.dump(records, f, indent=1)
            f.write("\n")
        return len(records), True


# ---------------------------------------------------------------------------------------
# the transforms


class _BadSamplePolicy:
    """What ``GuardedLoad`` and ``CheckLoadedSample`` do with a bad sample."""

    def _init_policy(self, split: str, on_bad_sample: str, max_bad_samples: int,
                     record_file: str | None, config: str | None) -> None:
        if on_bad_sample not in POLICIES:
            raise ValueError(f"on_bad_sample={on_bad_sample!r}: expected one of {POLICIES}")
        self.split, self.on_bad_sample = split, on_bad_sample
        self.max_bad_samples, self.record_file, self.config = (
            max_bad_samples, record_file, config)
        self._skipped: set[tuple[Any, ...]] = set()  # this process's, without a record file

    def _fix(self) -> str:
        doctor = f"`seglab data doctor {self.config or 'CONFIG'}` checks every sample"
        if self.split != "train":
            return (f"Fix: replace or remove this pair ({doctor}); {self.split} samples are "
                    "never skipped (that would change the metric).")
        return (f"Fix: replace or remove this pair ({doctor}), or train with "
                "--on-bad-sample skip to skip such samples and record them in "
                f"WORK_DIR/{RECORD_FILE}.")

    def _bad(self, results: dict, reason: str,
             cause: BaseException | None = None) -> None:
        """Raise the one error for this sample, or (skip) record it and return ``None``."""
        index = results.get("sample_idx")
        img, mask = results.get("img_path"), results.get("seg_map_path")
        message = (f"bad {self.split} sample (dataset index {index}): {reason}\n"
                   f"  image: {img}\n  mask:  {mask}\n{self._fix()}")
        error = BadSampleError(message, index=index, img_path=img, seg_map_path=mask,
                               reason=reason)
        if self.on_bad_sample == "raise" or self.split != "train":
            raise error from cause
        record = {"split": self.split, "index": index, "img_path": img,
                  "seg_map_path": mask, "reason": reason}
        if self.record_file:
            count, new = add_record(self.record_file, record)
        else:
            key = (self.split, index, img)
            new = key not in self._skipped
            self._skipped.add(key)
            count = len(self._skipped)
        where = self.record_file or "this process (no work dir: no record file)"
        if count > self.max_bad_samples:
            raise TooManyBadSamples(
                f"{count} bad {self.split} samples, more than --max-bad-samples "
                f"{self.max_bad_samples}; every one is recorded in {where}. The last: "
                f"dataset index {index}: {reason}\n  image: {img}\n  mask:  {mask}\n"
                f"Fix: `seglab data doctor {self.config or 'CONFIG'}` lists every bad "
                "sample; replace or remove them (or raise --max-bad-samples).",
                index=index, img_path=img, seg_map_path=mask, reason=reason) from cause
        if new:
            print_log(f"seglab: skipped bad {self.split} sample (dataset index {index}): "
                      f"{reason}; image {img}, mask {mask} ({count} of at most "
                      f"{self.max_bad_samples} recorded in {where})", logger="current",
                      level=logging.WARNING)
        return None


@TRANSFORMS.register_module()
class GuardedLoad(_BadSamplePolicy, BaseTransform):
    """Run a ``Load*`` transform; any failure becomes one ``BadSampleError`` naming the
    sample's dataset index, its image and its mask (or, in skip mode, a skipped sample).

    ``use_sample_checks`` wraps each loader of a pipeline in one, e.g.
    ``dict(type='GuardedLoad', transform=dict(type='LoadImageFromFile'))``.

    Args:
        transform (dict): the loader's config (``LoadImageFromFile``, ``LoadAnnotations``,
            any ``Load*`` transform).
        split (str): ``'train'``, ``'val'`` or ``'test'``, for messages and records; only
            training samples are ever skipped. Defaults to ``'train'``.
        on_bad_sample (str): ``'raise'`` (one error naming index and files) or ``'skip'``
            (return ``None``: mmengine's dataset loads another sample). Defaults to
            ``'raise'``.
        max_bad_samples (int): in skip mode, more distinct bad samples than this stop the
            run. Defaults to 100.
        record_file (str, optional): the JSON list the skipped samples are recorded in.
            Defaults to None (counted per process, not recorded).
        config (str, optional): the config file, for the ``seglab data doctor`` hint.
            Defaults to None.
    """

    def __init__(self, transform: dict, split: str = "train", on_bad_sample: str = "raise",
                 max_bad_samples: int = DEFAULT_MAX_BAD_SAMPLES,
                 record_file: str | None = None, config: str | None = None) -> None:
        self._init_policy(split, on_bad_sample, max_bad_samples, record_file, config)
        self.transform_cfg = transform
        self.loader = TRANSFORMS.build(transform) if isinstance(transform, dict) else transform
        self.what = "mask" if "Annotation" in type_name(transform) else "image"

    def transform(self, results: dict) -> dict | None:
        try:
            return self.loader(results)
        except BadSampleError:
            raise
        except Exception as err:  # anything a loader raises means this file is unusable
            return self._bad(results, _describe(err, self.what), err)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.loader!r}, on_bad_sample={self.on_bad_sample!r})"


@TRANSFORMS.register_module()
class CheckLoadedSample(_BadSamplePolicy, BaseTransform):
    """Check a sample right after loading, before any resize or crop: the mask has one
    channel, the image's height and width, and only labels the dataset has.

    ``use_sample_checks`` inserts it after the last ``Load*`` transform of a pipeline.
    A sample without a mask (a test pipeline without ``LoadAnnotations``) passes.

    Args:
        num_classes (int, optional): labels must be ``0..num_classes-1`` or
            ``ignore_index`` (after ``reduce_zero_label`` and ``label_map``). Defaults to
            None: labels are not checked.
        ignore_index (int): the label the loss ignores. Defaults to 255.
        split (str): ``'train'``, ``'val'`` or ``'test'``, for messages and records; only
            training samples are ever skipped. Defaults to ``'train'``.
        on_bad_sample (str): ``'raise'`` or ``'skip'``, as in ``GuardedLoad``. Defaults to
            ``'raise'``.
        max_bad_samples (int): in skip mode, more distinct bad samples than this stop the
            run. Defaults to 100.
        record_file (str, optional): the JSON list the skipped samples are recorded in.
            Defaults to None.
        config (str, optional): the config file, for the ``seglab data doctor`` hint.
            Defaults to None.
    """

    def __init__(self, num_classes: int | None = None,
                 ignore_index: int = DEFAULT_IGNORE_INDEX, split: str = "train",
                 on_bad_sample: str = "raise", max_bad_samples: int = DEFAULT_MAX_BAD_SAMPLES,
                 record_file: str | None = None, config: str | None = None) -> None:
        self._init_policy(split, on_bad_sample, max_bad_samples, record_file, config)
        self.num_classes, self.ignore_index = num_classes, ignore_index

    def transform(self, results: dict) -> dict | None:
        reason = self.problem(results)
        return results if reason is None else self._bad(results, reason)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(num_classes={self.num_classes}, ignore_index="
                f"{self.ignore_index}, on_bad_sample={self.on_bad_sample!r})")

    def problem(self, results: dict) -> str | None:
        """What is wrong with the loaded sample, or ``None``."""
        mask = results.get("gt_seg_map")
        if mask is None:
            return None
        image_shape = tuple(results.get("ori_shape") or ())
        if len(image_shape) == 2:  # 2-D images (a biomedical volume is checked for labels only)
            if mask.ndim != 2:
                return (f"the mask is {_shape_text(mask.shape)} (HxWxC): {mask.shape[-1]} "
                        "channels, an RGB colour image? A label mask has one channel of class "
                        "indices (a palette or greyscale PNG)")
            if mask.shape != image_shape:
                return (f"the mask is {_shape_text(mask.shape)} (HxW) but its image is "
                        f"{_shape_text(image_shape)}")
        return self._label_problem(mask, bool(results.get("reduce_zero_label")))

    def _label_problem(self, mask: np.ndarray, reduce_zero_label: bool) -> str | None:
        if self.num_classes is None:
            return None
        over = mask[mask >= self.num_classes]  # few pixels (the void label): cheap to count
        if not over.size:
            return None
        values, counts = np.unique(over, return_counts=True)
        keep = values != self.ignore_index
        bad, pixels = [int(v) for v in values[keep]], int(counts[keep].sum())
        if not bad:
            return None
        shown = ", ".join(str(v) for v in bad[:8]) + (", ..." if len(bad) > 8 else "")
        after = (" (after reduce_zero_label, which subtracts 1 from every label on disk)"
                 if reduce_zero_label else "")
        return (f"the mask has label(s) {shown} ({pixels} pixels){after}; this dataset's "
                f"labels are 0..{self.num_classes - 1} ({self.num_classes} classes) and "
                f"{self.ignore_index} (ignore_index)")


# ---------------------------------------------------------------------------------------
# the config edit


def _num_classes(dataset: dict, cfg: Config) -> int | None:
    """The dataset's class count: its ``metainfo.classes``, else its class's ``METAINFO``,
    else the first decode head's ``num_classes``."""
    classes = (dataset.get("metainfo") or {}).get("classes")
    if not classes:
        from mmseg.registry import DATASETS

        kind = dataset.get("type")
        try:
            cls = DATASETS.get(kind) if isinstance(kind, str) else kind
        except Exception:  # an unknown or unimportable type: fall back to the model
            cls = None
        classes = (getattr(cls, "METAINFO", None) or {}).get("classes")
    if classes:
        return len(classes)
    return _first_decode_head(cfg).get("num_classes")


def _first_decode_head(cfg: Config) -> dict:
    heads = model_heads(cfg.get("model") or {}, ("decode_head",))
    return heads[0][1] if heads else {}


def _ignore_index(cfg: Config) -> int:
    value = _first_decode_head(cfg).get("ignore_index")
    return DEFAULT_IGNORE_INDEX if value is None else int(value)


def checked_pipeline(pipeline: list, policy: dict[str, Any],
                     num_classes: int | None, ignore_index: int) -> list:
    """``pipeline`` with each loader in a ``GuardedLoad`` and a ``CheckLoadedSample`` after
    the last one; a pipeline that was checked before is first restored (so the policy of a
    saved training config never carries over into ``seglab test``)."""
    plain = [step["transform"] if type_name(step) == "GuardedLoad" else step
             for step in pipeline if type_name(step) != "CheckLoadedSample"]
    loaders = [i for i, step in enumerate(plain) if _is_loader(step)]
    if not loaders:
        return plain
    out = [dict(type="GuardedLoad", transform=step, **policy) if _is_loader(step) else step
           for step in plain]
    out.insert(loaders[-1] + 1, dict(type="CheckLoadedSample", num_classes=num_classes,
                                     ignore_index=ignore_index, **policy))
    return out


def use_sample_checks(cfg: Config, on_bad_sample: str = "raise",
                      max_bad_samples: int | None = None) -> list[str]:
    """Check every sample of every dataloader as it loads (see the module docstring);
    return what was changed, for the run's log.

    ``on_bad_sample='skip'`` skips bad training samples and records them in
    ``WORK_DIR/bad_samples.json`` (a fresh run starts a fresh record; ``--resume`` keeps
    it); more than ``max_bad_samples`` (default 100) stop the run.
    """
    from seglab.config.loading import ConfigError

    if on_bad_sample not in POLICIES:
        raise ConfigError(f"--on-bad-sample {on_bad_sample!r}: expected one of "
                          f"{', '.join(POLICIES)}")
    if max_bad_samples is not None and on_bad_sample != "skip":
        raise ConfigError("--max-bad-samples applies to --on-bad-sample skip only "
                          "(the default, raise, stops at the first bad sample)")
    if max_bad_samples is not None and max_bad_samples < 0:
        raise ConfigError(f"--max-bad-samples {max_bad_samples}: expected 0 or more")
    limit = DEFAULT_MAX_BAD_SAMPLES if max_bad_samples is None else max_bad_samples
    record = osp.abspath(osp.join(cfg.work_dir, RECORD_FILE)) if cfg.get("work_dir") else None
    config = getattr(cfg, "filename", None)
    checked = []
    for loader, split in SPLITS.items():
        if not cfg.get(loader):
            continue
        policy = dict(split=split, on_bad_sample=on_bad_sample if split == "train" else "raise",
                      max_bad_samples=limit, record_file=record, config=config)
        for dataset in leaf_datasets(cfg[loader].dataset):
            if not isinstance(dataset.get("pipeline"), list | tuple):
                continue
            dataset.pipeline = checked_pipeline(list(dataset.pipeline), policy,
                                                _num_classes(dataset, cfg), _ignore_index(cfg))
            checked.append(split)
    if not checked:
        return []
    splits = "/".join(dict.fromkeys(checked))
    if on_bad_sample == "skip":
        if record and not cfg.get("resume") and launch_rank() == 0:
            with contextlib.suppress(FileNotFoundError):
                os.remove(record)  # a fresh run: the old run's record is not this one's
        return [f"{splits} samples checked as they load (decodes, mask size, labels); bad "
                f"training samples are skipped and recorded in {record} (the run stops "
                f"after more than {limit}); a bad val/test sample stops the run"]
    return [f"{splits} samples checked as they load (decodes, mask size, labels); a bad "
            "one stops the run naming its index and files (--on-bad-sample skip skips "
            "training samples)"]
