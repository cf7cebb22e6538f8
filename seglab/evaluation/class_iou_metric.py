"""Per-class results that outlive the log: mmseg's IoU metric with a confusion matrix.

``ClassIoUMetric`` returns exactly what mmseg's ``IoUMetric`` returns (same
``total_area_to_metrics``, same printed table) and keeps the whole per-class
record of the last evaluation: IoU/Acc (and Dice, F-score, precision, recall
when asked), pixel support and the confusion matrix. Each image contributes a
sparse confusion matrix (the few (label, prediction) pairs it contains) instead
of four dense histograms, which is faster and lets a report say which classes a
class is mistaken for. ``ClassMetricsHook`` writes the record to the work dir
(JSON + CSV per evaluation) and logs ``val/IoU/<class>`` scalars to every
visualisation backend.

NaN: a class with no ground-truth pixels and no predictions has IoU and Acc NaN
and is left out of the means (mmseg's ``nanmean``); a class predicted but absent
from the ground truth has IoU 0 and Acc NaN. NaN values are written as ``null``
in JSON, empty in CSV, and not logged as scalars.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from mmengine.logging import print_log
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS
from prettytable import PrettyTable


def sparse_confusion(pred: torch.Tensor, label: torch.Tensor, num_classes: int,
                     ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Nonzero cells of one image's confusion matrix as (flat index, pixel count).

    Rows are ground-truth classes plus one row for labels outside the classes
    (mmseg counts their predictions in the prediction area), columns predictions.
    """
    cells = (num_classes + 1) * num_classes
    label, pred = label.long(), pred.long()
    codes = torch.where(label < num_classes, label, num_classes) * num_classes + pred
    # ignored pixels go to one extra bin that is dropped: no boolean-mask copies
    codes = torch.where(label == ignore_index, cells, codes)
    counts = torch.bincount(codes.flatten(), minlength=cells + 1)[:cells]
    index = torch.nonzero(counts).squeeze(1)
    return index.cpu().numpy().astype(np.int32), counts[index].cpu().numpy()


def confusion_from(results: list[tuple[np.ndarray, np.ndarray]], num_classes: int) -> np.ndarray:
    """Sum of the images' sparse matrices: (num_classes + 1) x num_classes pixel counts."""
    if not results:
        return np.zeros((num_classes + 1, num_classes), dtype=np.int64)
    index = np.concatenate([r[0] for r in results])
    counts = np.concatenate([r[1] for r in results])
    flat = np.bincount(index, weights=counts, minlength=(num_classes + 1) * num_classes)
    return flat.astype(np.int64).reshape(num_classes + 1, num_classes)


def areas(confusion: np.ndarray) -> tuple[torch.Tensor, ...]:
    """mmseg's four areas (intersect, union, prediction, label) from the confusion matrix."""
    classes = confusion.shape[1]
    intersect = np.diag(confusion[:classes]).astype(np.float64)
    pred = confusion.sum(axis=0).astype(np.float64)
    label = confusion[:classes].sum(axis=1).astype(np.float64)
    return tuple(torch.from_numpy(a) for a in (intersect, pred + label - intersect, pred, label))


def _nan_to_none(values: list[float]) -> list[float | None]:
    return [None if math.isnan(v) else v for v in values]


@METRICS.register_module()
class ClassIoUMetric(IoUMetric):
    """mmseg's ``IoUMetric`` plus the per-class record of each evaluation.

    Configured exactly as ``IoUMetric``; the record of the last evaluation is
    ``last_record`` (``None`` with ``format_only``).

    Args:
        ignore_index (int): label of the pixels left out. Defaults to 255.
        iou_metrics (list[str]): any of ``'mIoU'``, ``'mDice'``, ``'mFscore'``.
            Defaults to ``['mIoU']``.
        nan_to_num (int, optional): the value NaN results are replaced with.
            Defaults to None (kept NaN).
        beta (int): the beta of the F-score. Defaults to 1.
        collect_device (str): ``'cpu'`` or ``'gpu'``, where the ranks' results are
            gathered. Defaults to ``'cpu'``.
        output_dir (str, optional): where mmseg writes the predictions as PNG
            files (the record then comes from mmseg's dense areas, without a
            confusion matrix). Defaults to None.
        format_only (bool): only write the predictions (to ``output_dir``), no
            metrics. Defaults to False.
        prefix (str, optional): prefix of the metric names. Defaults to None.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.last_record: dict[str, Any] | None = None

    def process(self, data_batch: dict, data_samples: list[dict]) -> None:
        if self.format_only or self.output_dir is not None:
            return super().process(data_batch, data_samples)
        num_classes = len(self.dataset_meta["classes"])
        for sample in data_samples:
            pred = sample["pred_sem_seg"]["data"].squeeze()
            label = sample["gt_sem_seg"]["data"].squeeze().to(pred)
            self.results.append(sparse_confusion(pred, label, num_classes, self.ignore_index))

    def compute_metrics(self, results: list) -> dict[str, float]:
        if self.format_only:
            return super().compute_metrics(results)
        classes = list(self.dataset_meta["classes"])
        if results and len(results[0]) == 4:  # dense areas (output_dir set): mmseg's path
            inter, union, pred, label = (sum(r[i] for r in results) for i in range(4))
            confusion = None
        else:
            confusion = confusion_from(results, len(classes))
            inter, union, pred, label = areas(confusion)
        per_class = self.total_area_to_metrics(inter, union, pred, label, self.metrics,
                                               self.nan_to_num, self.beta)
        metrics = {("aAcc" if k == "aAcc" else "m" + k): float(np.round(np.nanmean(v) * 100, 2))
                   for k, v in per_class.items()}
        per_class.pop("aAcc", None)
        table = PrettyTable()
        table.add_column("Class", classes)
        for key, values in per_class.items():
            table.add_column(key, np.round(np.asarray(values) * 100, 2))
        print_log("per class results:", logger="current")
        print_log("\n" + table.get_string(), logger="current")
        self.last_record = {
            "classes": classes,
            "summary": metrics,
            "per_class": {k: _nan_to_none((np.asarray(v, dtype=np.float64) * 100).tolist())
                          for k, v in per_class.items()},
            "support": label.long().tolist(),
            "images": len(results),
            "confusion": None if confusion is None else confusion[:len(classes)].tolist(),
        }
        return metrics




def swap_iou_metric(cfg: Any) -> int:
    """``IoUMetric`` -> ``ClassIoUMetric`` in the val/test evaluators; returns how many."""
    swapped = 0
    for key in ("val_evaluator", "test_evaluator"):
        evaluator = cfg.get(key)
        for metric in evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]:
            if isinstance(metric, dict) and metric.get("type") == "IoUMetric":
                metric["type"] = "ClassIoUMetric"
                swapped += 1
    return swapped
