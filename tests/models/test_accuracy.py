"""``sync_free_accuracy``: mmseg's ``acc_seg`` bitwise, with no data-dependent shape."""

from __future__ import annotations

import itertools

import pytest
import torch
from mmseg.models.losses import accuracy as mmseg_accuracy
from torch._subclasses.fake_tensor import DynamicOutputShapeException, FakeTensorMode

from seglab.models.accuracy import CALLERS, sync_free_accuracy, use_sync_free_accuracy


def _as_list(value):
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize(("ignore_index", "topk", "thresh"), list(itertools.product(
    (None, 255), (1, (1, 3)), (None, 0.1))))
def test_the_value_is_mmsegs_bitwise(ignore_index, topk, thresh) -> None:
    generator = torch.Generator().manual_seed(0)
    for shape in ((2, 5, 8, 8), (3, 5)):  # mmseg's thresh branch only works for (N, C)
        if thresh is not None and len(shape) > 2:
            continue
        pred = torch.randn(*shape, generator=generator)
        target = torch.randint(0, 5, (shape[0], *shape[2:]), generator=generator)
        target.view(-1)[:3] = 255 if ignore_index is not None else 0
        ours = _as_list(sync_free_accuracy(pred, target, topk, thresh, ignore_index))
        theirs = _as_list(mmseg_accuracy(pred, target, topk, thresh, ignore_index))
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True)), (ours, theirs)


def test_an_all_ignored_batch_and_an_empty_one_are_mmsegs_too() -> None:
    pred, target = torch.randn(1, 4, 3, 3), torch.full((1, 3, 3), 255)
    assert torch.equal(sync_free_accuracy(pred, target, ignore_index=255),
                       mmseg_accuracy(pred, target, ignore_index=255))
    empty = torch.randn(0, 4, 3, 3), torch.zeros(0, 3, 3, dtype=torch.long)
    assert torch.equal(sync_free_accuracy(*empty), mmseg_accuracy(*empty))


def test_every_shape_is_known_without_the_data() -> None:
    """Under fake tensors (shapes, no values) a data-dependent size cannot be computed: on a
    GPU it is what makes the host wait for the step's kernels."""
    with FakeTensorMode():
        pred, target = torch.randn(2, 5, 8, 8), torch.randint(0, 5, (2, 8, 8))
        assert sync_free_accuracy(pred, target, ignore_index=255).shape == (1,)
        with pytest.raises(DynamicOutputShapeException):
            mmseg_accuracy(pred, target, ignore_index=255)


def test_the_swap_lasts_the_block_and_leaves_other_functions_alone() -> None:
    import importlib

    modules = [importlib.import_module(name) for name in CALLERS]
    with use_sync_free_accuracy() as swapped:
        assert swapped == list(CALLERS)
        assert all(m.accuracy is sync_free_accuracy for m in modules)
    assert all(m.accuracy is mmseg_accuracy for m in modules)
    own = modules[0]
    own.accuracy = len  # a caller's own function under that name
    try:
        with use_sync_free_accuracy() as swapped:
            assert own.__name__ not in swapped and own.accuracy is len
    finally:
        own.accuracy = mmseg_accuracy
