"""``CountingRandomCrop``: mmseg's ``RandomCrop`` outputs, bitwise, after the same random draws;
swapped in for the training pipelines that count classes."""

from __future__ import annotations

import numpy as np
import pytest
from mmseg.datasets.transforms import RandomCrop

from seglab.data.transforms import CountingRandomCrop, label_counts, use_counting_random_crop


def scene(seed: int, shape: tuple[int, int] = (96, 128)) -> dict:
    """An image and a mask of a few large regions, some ignored: crops often fail the 0.75
    share test, so the retries (the draws after the first) are exercised."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, np.uint8)
    for label in rng.integers(0, 21, size=4):
        y, x = rng.integers(0, shape[0] - 8), rng.integers(0, shape[1] - 8)
        mask[y:y + rng.integers(8, 64), x:x + rng.integers(8, 96)] = label
    mask[rng.random(shape) < 0.05] = 255
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    return {"img": image, "gt_seg_map": mask, "seg_fields": ["gt_seg_map"]}


@pytest.mark.parametrize("cat_max_ratio", [0.75, 0.5, 1.0])
def test_the_same_crops_as_mmseg_after_the_same_draws(cat_max_ratio, monkeypatch) -> None:
    stock = RandomCrop(crop_size=(48, 48), cat_max_ratio=cat_max_ratio)
    ours = CountingRandomCrop(crop_size=(48, 48), cat_max_ratio=cat_max_ratio)
    draws = []
    randint = np.random.randint
    monkeypatch.setattr(np.random, "randint", lambda *a, **k: draws.append(1) or randint(*a, **k))
    retried = 0
    for seed in range(200):
        results = []
        for transform in (stock, ours):
            np.random.seed(seed)
            draws.clear()
            out = transform(scene(seed))
            results.append((out["img"], out["gt_seg_map"], out["img_shape"], len(draws),
                            np.random.random()))  # the pipeline's next random number
        (img_a, seg_a, shape_a, *rest_a), (img_b, seg_b, shape_b, *rest_b) = results
        assert np.array_equal(img_a, img_b) and np.array_equal(seg_a, seg_b)
        assert shape_a == shape_b and rest_a == rest_b
        retried += rest_b[0] > 2  # more than one (h, w) draw: a crop was rejected
    if cat_max_ratio < 1:
        assert retried > 20  # the share test rejected crops: the retry loop was compared


@pytest.mark.parametrize("mask", [
    np.array([[0, 0, 3], [255, 3, 3]], np.uint8),
    np.array([[7, 7], [7, 7]], np.int64),
    np.array([[-1, 2], [2, 70000]], np.int64),  # outside bincount's range: np.unique
    np.zeros((0, 4), np.uint8),
], ids=["uint8", "int64", "negative-and-large", "empty"])
def test_label_counts_are_np_uniques(mask) -> None:
    labels, counts = np.unique(mask, return_counts=True)
    assert np.array_equal(label_counts(mask, 255), counts[labels != 255])


def test_the_training_pipelines_that_count_classes_are_swapped() -> None:
    from mmengine.config import Config

    crop = dict(type="RandomCrop", crop_size=(512, 512), cat_max_ratio=0.75)
    cfg = Config(dict(train_dataloader=dict(dataset=dict(type="ConcatDataset", datasets=[
        dict(type="PascalVOCDataset", pipeline=[dict(type="LoadImageFromFile"), crop]),
        dict(type="PascalVOCDataset", pipeline=[dict(crop, type="mmseg.RandomCrop")]),
        dict(type="PascalVOCDataset", pipeline=[dict(crop, cat_max_ratio=1.0)])]))))
    assert use_counting_random_crop(cfg) == [
        "RandomCrop -> CountingRandomCrop (2x): the class shares of cat_max_ratio counted in "
        "linear time, the same crops"]
    kinds = [d.pipeline[-1].type for d in cfg.train_dataloader.dataset.datasets]
    assert kinds == ["CountingRandomCrop", "mmseg.CountingRandomCrop", "RandomCrop"]


def test_mmsegs_random_crop_still_runs_under_shared_random_parameters() -> None:
    """mmcv's cache_randomness keeps one list per class: the subclass's method must not be
    added to RandomCrop's, or every RandomCrop of a TransformBroadcaster refuses to run."""
    from mmcv.transforms.utils import cache_random_params

    assert RandomCrop._methods_with_randomness == ["crop_bbox"]
    for transform in (RandomCrop(crop_size=(8, 8)), CountingRandomCrop(crop_size=(8, 8))):
        with cache_random_params(transform):
            transform(scene(0))


def test_the_swap_keeps_the_scope_or_the_class_it_was_given() -> None:
    from mmengine.config import Config

    pipeline = [dict(type=kind, crop_size=(8, 8), cat_max_ratio=0.75)
                for kind in ("mmseg.RandomCrop", "mmseg::RandomCrop", RandomCrop)]
    cfg = Config(dict(train_dataloader=dict(dataset=dict(type="ADE20KDataset",
                                                         pipeline=pipeline))))
    use_counting_random_crop(cfg)
    kinds = [step.type for step in cfg.train_dataloader.dataset.pipeline]
    assert kinds == ["mmseg.CountingRandomCrop", "mmseg::CountingRandomCrop", CountingRandomCrop]


def test_an_ignore_index_written_as_a_float_counts_as_its_label() -> None:
    mask = np.array([[0, 255], [3, 3]], np.uint8)
    assert np.array_equal(label_counts(mask, 255.0), [1, 2])
    assert np.array_equal(label_counts(mask, 254.5), [1, 2, 1])  # no such label: np.unique's
