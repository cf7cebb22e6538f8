"""ClassIoUMetric: mmseg's numbers, a per-class record, and a confusion matrix."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mmseg.evaluation import IoUMetric

from seglab.evaluation.class_iou_metric import ClassIoUMetric
from seglab.evaluation.record import write_record

ALL_METRICS = ["mIoU", "mDice", "mFscore"]


def samples(preds: list[torch.Tensor], labels: list[torch.Tensor]) -> list[dict]:
    return [{"pred_sem_seg": {"data": p[None]}, "gt_sem_seg": {"data": g[None]}}
            for p, g in zip(preds, labels, strict=True)]


def evaluate(metric: IoUMetric, classes: list[str], batch: list[dict]) -> dict[str, float]:
    metric.dataset_meta = {"classes": classes}
    metric.process({}, batch)
    return metric.compute_metrics(metric.results)


def random_batch(num_classes: int, images: int, seed: int) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    preds, labels = [], []
    for _ in range(images):
        # classes 0..num_classes-11 appear in the ground truth; the last 10 never do, and of
        # those the last 5 are never predicted either (IoU and Acc NaN)
        label = torch.randint(0, num_classes - 10, (37, 53), generator=gen)
        pred = torch.where(torch.rand(37, 53, generator=gen) < 0.6, label,
                           torch.randint(0, num_classes - 5, (37, 53), generator=gen))
        label[torch.rand(37, 53, generator=gen) < 0.1] = 255  # ignored pixels
        label[0, :3] = num_classes + 7  # a label outside the classes, not the ignore index
        preds.append(pred)
        labels.append(label)
    return samples(preds, labels)


def test_same_numbers_as_mmseg_per_class_and_summary() -> None:
    classes = [f"class{i}" for i in range(150)]
    batch = random_batch(150, 6, seed=0)
    stock = IoUMetric(iou_metrics=ALL_METRICS)
    expected_summary = evaluate(stock, classes, batch)
    inter, union, pred, label = (sum(r[i] for r in stock.results) for i in range(4))
    expected = stock.total_area_to_metrics(inter, union, pred, label, ALL_METRICS)

    ours = ClassIoUMetric(iou_metrics=ALL_METRICS)
    summary = evaluate(ours, classes, batch)
    assert summary == pytest.approx(expected_summary, abs=1e-6)
    record = ours.last_record
    for key in ("IoU", "Acc", "Dice", "Fscore", "Precision", "Recall"):
        got = np.array([np.nan if v is None else v for v in record["per_class"][key]])
        want = np.asarray(expected[key], dtype=np.float64) * 100
        assert np.array_equal(np.isnan(got), np.isnan(want)), key
        assert np.allclose(got[~np.isnan(got)], want[~np.isnan(want)], atol=1e-6), key
    iou, acc = record["per_class"]["IoU"], record["per_class"]["Acc"]
    # predicted but absent from the ground truth: IoU 0, Acc NaN; neither: both NaN
    assert iou[141:145] == [0.0] * 4 and acc[141:145] == [None] * 4
    assert iou[145:] == [None] * 5 and acc[145:] == [None] * 5
    assert record["support"][140:] == [0] * 10


def test_hand_computed_confusion_matrix() -> None:
    # ground truth / prediction, 3 classes, 255 ignored:
    label = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 2]])
    metric = ClassIoUMetric()
    summary = evaluate(metric, ["a", "b", "c"], samples([pred], [label]))
    record = metric.last_record
    # rows = truth, columns = prediction; the ignored pixel is not counted
    assert record["confusion"] == [[1, 1, 0], [0, 2, 1], [1, 0, 1]]
    assert record["support"] == [2, 3, 2]
    # IoU = TP / (TP + FP + FN): a 1/(1+1+1), b 2/(2+1+1), c 1/(1+1+1)
    assert record["per_class"]["IoU"] == pytest.approx([100 / 3, 50.0, 100 / 3])
    assert record["per_class"]["Acc"] == pytest.approx([50.0, 200 / 3, 50.0])
    assert summary["aAcc"] == pytest.approx(round(100 * 4 / 7, 2))
    assert summary["mIoU"] == pytest.approx(round((100 / 3 + 50 + 100 / 3) / 3, 2))


def test_record_files(tmp_path: Path) -> None:
    metric = ClassIoUMetric()
    evaluate(metric, ["a", "b", "c", "d"], samples([torch.tensor([[0, 1], [1, 1]])],
                                                   [torch.tensor([[0, 1], [2, 1]])]))
    json_path, csv_path = write_record(metric.last_record, tmp_path / "val_epoch_3")
    record = json.loads(json_path.read_text())  # strict JSON: NaN written as null
    assert record["per_class"]["IoU"][3] is None and record["classes"][3] == "d"
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["class"] for r in rows] == ["a", "b", "c", "d"]
    assert rows[3]["IoU"] == "" and math.isclose(float(rows[1]["IoU"]), 200 / 3, rel_tol=1e-4)
    assert rows[2]["IoU"] == "0.0000" and rows[2]["support"] == "1"
