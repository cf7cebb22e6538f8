"""Benchmark evaluation: mmseg's IoUMetric vs seglab's ClassIoUMetric on the same predictions.

Prints figures, asserts nothing:
    .venv/bin/python scripts/bench_metric.py [--images 500] [--classes 150] [--size 512]

Predictions agree with the ground truth on ~70% of pixels; ~5% of pixels carry
the ignore index; each image holds a handful of classes, as ADE20K's do.
Timed: ``process`` over every image plus ``compute_metrics`` (seglab's includes
the confusion matrix). Also checks that both give the same per-class numbers.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from mmseg.evaluation import IoUMetric

from seglab.evaluation.class_iou_metric import ClassIoUMetric


def make_batch(images: int, classes: int, size: int, seed: int = 0) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(images):
        present = torch.randperm(classes, generator=gen)[:12]
        blocks = torch.randint(0, len(present), (size // 32, size // 32), generator=gen)
        label = present[blocks].repeat_interleave(32, 0).repeat_interleave(32, 1)
        noise = present[torch.randint(0, len(present), (size, size), generator=gen)]
        pred = torch.where(torch.rand(size, size, generator=gen) < 0.7, label, noise)
        label = torch.where(torch.rand(size, size, generator=gen) < 0.05,
                            torch.tensor(255), label)
        samples.append({"pred_sem_seg": {"data": pred[None]}, "gt_sem_seg": {"data": label[None]}})
    return samples


def timed(metric: IoUMetric, classes: int, batch: list[dict]) -> tuple[float, dict]:
    metric.dataset_meta = {"classes": [f"c{i}" for i in range(classes)]}
    start = time.perf_counter()
    for sample in batch:
        metric.process({}, [sample])
    summary = metric.compute_metrics(metric.results)
    return time.perf_counter() - start, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--classes", type=int, default=150)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # per-process figure; a GPU or more threads change both alike
    batch = make_batch(args.images, args.classes, args.size)
    from mmengine.logging import MMLogger

    MMLogger.get_instance("bench", log_level="WARNING")  # the tables are not the point
    stock_times, ours_times = [], []
    for _ in range(args.repeats):
        stock = IoUMetric(iou_metrics=["mIoU"])
        stock_s, stock_summary = timed(stock, args.classes, batch)
        ours = ClassIoUMetric(iou_metrics=["mIoU"])
        ours_s, ours_summary = timed(ours, args.classes, batch)
        stock_times.append(stock_s)
        ours_times.append(ours_s)
    inter, union, pred, label = (sum(r[i] for r in stock.results) for i in range(4))
    expected = stock.total_area_to_metrics(inter, union, pred, label, ["mIoU"])
    got = np.array([np.nan if v is None else v for v in ours.last_record["per_class"]["IoU"]])
    want = np.asarray(expected["IoU"], dtype=np.float64) * 100
    same = np.array_equal(np.isnan(got), np.isnan(want)) and np.allclose(
        got[~np.isnan(got)], want[~np.isnan(want)], atol=1e-6)
    s, o = min(stock_times), min(ours_times)
    print(f"{args.images} images {args.size}x{args.size}, {args.classes} classes, 1 thread, "
          f"best of {args.repeats}")
    print(f"stock IoUMetric      {s:7.2f} s  ({args.images / s:7.1f} images/s)")
    print(f"seglab ClassIoUMetric {o:6.2f} s  ({args.images / o:7.1f} images/s, confusion "
          "matrix included)")
    print(f"speed-up {s / o:.2f}x; summaries equal: {stock_summary == ours_summary}; "
          f"per-class IoU equal to 1e-6: {same}")


if __name__ == "__main__":
    main()
