"""Rules on classes and labels: the heads' class count and ``reduce_zero_label``.

A head with the wrong ``num_classes`` crashes or leaves classes without a logit;
a ``reduce_zero_label`` that does not fit the dataset (or disagrees between the
dataset and ``LoadAnnotations``) shifts every label by one or asserts.
"""

from __future__ import annotations

from collections.abc import Iterator

from seglab.config.walk import leaf_datasets, model_heads
from seglab.doctor.finding import Finding
from seglab.doctor.plan import Facts
from seglab.doctor.rules import rule

BINARY_AUX_HEADS = ("STDCHead",)  # STDC's detail head predicts edges (2 classes) by design


@rule
def classes_and_labels(facts: Facts) -> Iterator[Finding]:
    if not facts.datasets:
        return
    first = facts.datasets[0]
    dataset_type, num_classes, reduce_zero = first.type, first.num_classes, first.reduce_zero_label
    for key, head in model_heads(facts.cfg.model):
        if head.get("type") in BINARY_AUX_HEADS:
            continue
        if head.get("num_classes") not in (None, num_classes):
            yield Finding(
                "error", "num-classes", f"{key}.num_classes",
                f"{head.num_classes} classes in the head, {num_classes} in {dataset_type}: "
                "labels beyond the head crash (CUDA device-side assert) or classes never "
                "get a logit", f"{key}.num_classes={num_classes}")
    expected = {"ADE20KDataset": True, "PascalVOCDataset": False}.get(dataset_type)
    if expected is not None and reduce_zero != expected:
        why = ("ADE20K labels 0 as 'other' and 1..150 as classes" if expected else
               "VOC's label 0 is the background class")
        yield Finding(
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
                    yield Finding(
                        "error", "reduce-zero-label", f"{loader}.dataset.pipeline.{i}",
                        f"LoadAnnotations(reduce_zero_label={value}) disagrees with the "
                        f"dataset's reduce_zero_label={reduce_zero}: mmseg asserts at the "
                        "first batch", "drop reduce_zero_label from LoadAnnotations "
                        "(the dataset's value is used)")
