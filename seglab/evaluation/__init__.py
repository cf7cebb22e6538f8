"""Evaluation: mmseg's IoU metric that keeps the per-class record and confusion matrix."""

from seglab.evaluation.class_iou_metric import ClassIoUMetric

__all__ = ["ClassIoUMetric"]
