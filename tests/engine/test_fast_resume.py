"""O(1) resume for iteration-based loops: the same samples, without replaying the pipeline."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from mmengine.dataset import InfiniteSampler
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from seglab.engine.fast_resume import ResumableInfiniteSampler, ResumableIterBasedTrainLoop
from tests.conftest import VOC_DEMO


def rank_stream(sampler: InfiniteSampler, rank: int, world: int) -> InfiniteSampler:
    sampler.rank, sampler.world_size = rank, world
    sampler.indices = sampler._indices_of_rank()
    return sampler


@pytest.mark.parametrize("size,world,shuffle", [(7, 1, True), (10, 3, True), (10, 4, False),
                                                (1, 2, True)])
@pytest.mark.parametrize("consumed", [0, 1, 6, 23, 101])
def test_skipped_stream_equals_the_replayed_one(size, world, shuffle, consumed) -> None:
    dataset = list(range(size))
    for rank in range(world):
        stock = rank_stream(InfiniteSampler(dataset, shuffle=shuffle, seed=5), rank, world)
        replayed = list(itertools.islice(iter(stock), consumed, consumed + 3 * size))
        fast = rank_stream(ResumableInfiniteSampler(dataset, shuffle=shuffle, seed=5), rank,
                           world)
        fast.skip(consumed)
        assert list(itertools.islice(iter(fast), 3 * size)) == replayed


BATCHES: list[list[str]] = []


@HOOKS.register_module(force=True)
class BatchRecorder(Hook):
    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        BATCHES.append([Path(s.metainfo["img_path"]).name for s in data_batch["data_samples"]])


ITER_CONFIG = f"""_base_ = [{str(VOC_DEMO)!r}]
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=6, val_interval=100)
train_dataloader = dict(batch_size=4, persistent_workers=False,
                        sampler=dict(type='InfiniteSampler', shuffle=True))
param_scheduler = [dict(type='PolyLR', by_epoch=False, begin=0, end=6, eta_min=0.0)]
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=3, save_best=None),
                     logger=dict(interval=1, log_metric_by_epoch=False))
log_processor = dict(by_epoch=False)
custom_hooks = [dict(type='BatchRecorder')]
"""


@pytest.mark.slow
def test_iteration_resume_continues_with_the_uninterrupted_runs_batches(
        voc_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmengine.dataset import BaseDataset

    from seglab.engine.runner import train

    config = tmp_path / "iter_demo.py"
    config.write_text(ITER_CONFIG)
    BATCHES.clear()
    runner = train(str(config), work_dir=str(tmp_path / "straight"), data_root=str(voc_root))
    assert isinstance(runner.train_loop, ResumableIterBasedTrainLoop)
    straight = list(BATCHES)
    assert len(straight) == 6 and len({tuple(b) for b in straight}) == 6

    BATCHES.clear()
    loaded = []
    getitem = BaseDataset.__getitem__

    def counting_getitem(self, idx):
        if "train" in str(self.ann_file):
            loaded.append(idx)
        return getitem(self, idx)

    monkeypatch.setattr(BaseDataset, "__getitem__", counting_getitem)
    resumed = train(str(config), work_dir=str(tmp_path / "resumed"), data_root=str(voc_root),
                    resume=str(tmp_path / "straight" / "iter_3.pth"),
                    cfg_options={"train_dataloader.num_workers": 0})  # counted in-process
    assert resumed.iter == 6
    assert BATCHES == straight[3:]
    assert len(loaded) == 3 * 4  # the 3 new batches only; replaying loads 6 x 4
    log = next((tmp_path / "resumed").glob("*/*.log")).read_text()
    assert "the sampler skips 12 samples per rank without loading them" in log
    assert "Advance dataloader" in log  # mmengine's replay ran, over placeholders
