"""O(1) resume, at any iteration: skip consumed samples at the sampler.

mmengine's ``IterBasedTrainLoop`` resumes at iteration k by pulling k batches
through the whole data pipeline (decode, augment, collate) and discarding them
(mmseg #3671, mmengine #1520): minutes late in a 160k-iteration run. The
sampler's order is a pure function of its seed, so the position after k
batches can be computed instead: ``ResumableInfiniteSampler`` regenerates the
permutations it has passed (no data touched) and starts at the right offset,
and ``ResumableIterBasedTrainLoop`` asks it to before the first new step. The
sample order is identical to the replaying path.

Epoch-based loops have the opposite gap: mmengine resumes them only at an epoch
boundary, so a checkpoint written mid-epoch (a Slurm time limit or preemption, see
``PreemptionCheckpointHook``) would train its epoch's first batches twice.
``ResumableEpochBasedTrainLoop`` starts the interrupted epoch after them, and
``ResumableDefaultSampler`` drops them from that epoch's order without loading them.
With dataloader workers, the data order continues exactly; the workers' own
augmentation streams restart (as at every epoch in mmengine); with ``num_workers=0``
the augmentations continue too (``RNGStateHook``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import torch
from mmengine.dataset import DefaultSampler, InfiniteSampler
from mmengine.logging import print_log
from mmengine.registry import DATA_SAMPLERS, LOOPS
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop

# The iterator IterBasedTrainLoop.__init__ wraps its dataloader in; mmengine has no public
# name for it, and a fresh one is needed after the sampler skips.
from mmengine.runner.loops import _InfiniteDataloaderIterator

from seglab.engine.rng import align_sampler_seed


@DATA_SAMPLERS.register_module()
class ResumableInfiniteSampler(InfiniteSampler):
    """mmengine's ``InfiniteSampler`` (same order) that can start after ``consumed`` indices.

    Configured exactly as ``InfiniteSampler``; ``use_fast_resume`` swaps it in.

    Args:
        dataset (Sized): the dataset (the runner passes it).
        shuffle (bool): whether each pass over the dataset is a new permutation.
            Defaults to True.
        seed (int, optional): seed of the permutations, the same on every rank.
            Defaults to None: the runner passes its seed (with
            ``randomness.diff_rank_seed``, none: a random seed shared by the ranks).
    """

    def _permutation(self, generator: torch.Generator) -> list[int]:
        if self.shuffle:
            return torch.randperm(self.size, generator=generator).tolist()
        return list(range(self.size))

    def _global_indices_from(self, start: int) -> Iterator[int]:
        """The infinite global index stream (``_infinite_indices``) from position ``start``."""
        passed, offset = divmod(start, self.size)
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        if self.shuffle:
            for _ in range(passed):  # advance the generator exactly as the stream did
                torch.randperm(self.size, generator=generator)
        yield from self._permutation(generator)[offset:]
        while True:
            yield from self._permutation(generator)

    def skip(self, consumed: int) -> None:
        """Make the next ``iter()`` start after this rank's first ``consumed`` indices."""
        start = self.rank + consumed * self.world_size
        self.indices = itertools.islice(self._global_indices_from(start), 0, None,
                                        self.world_size)


class _SkippedPrefix:
    """An iterator whose first ``count`` items are placeholders that cost nothing.

    ``IterBasedTrainLoop.run`` discards k batches on resume; with the sampler
    already past them, those k ``next()`` calls get ``None`` without loading data.
    """

    def __init__(self, count: int, iterator: _InfiniteDataloaderIterator) -> None:
        self._left, self._iterator = count, iterator

    def __iter__(self) -> _SkippedPrefix:
        return self

    def __next__(self) -> Any:
        if self._left > 0:
            self._left -= 1
            return None
        return next(self._iterator)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._iterator, name)


@LOOPS.register_module()
class ResumableIterBasedTrainLoop(IterBasedTrainLoop):
    """``IterBasedTrainLoop`` whose resume skips consumed samples at the sampler.

    Configured exactly as ``IterBasedTrainLoop`` (``train_cfg``); the skip needs
    the train dataloader's sampler to be a ``ResumableInfiniteSampler``, else the
    resume replays as mmengine's does.

    Args:
        runner (Runner): the runner (it passes itself).
        dataloader (DataLoader or dict): the train dataloader (the runner passes it).
        max_iters (int): iterations to train.
        val_begin (int): the iteration at which validation starts. Defaults to 1.
        val_interval (int): iterations between validations. Defaults to 1000.
        dynamic_intervals (list[tuple[int, int]], optional): ``(milestone,
            val_interval)`` pairs that change the interval from that iteration on.
            Defaults to None.
    """

    def run(self) -> torch.nn.Module:
        sampler = getattr(self.dataloader, "sampler", None)
        done = self.iter
        if done > 0 and isinstance(sampler, ResumableInfiniteSampler):
            align_sampler_seed(self.runner)  # before_train would be too late for the skip
            sampler.skip(done * self.dataloader.batch_size)
            # the iterator built with the loop already prefetched from the old position
            self.dataloader_iterator = _SkippedPrefix(
                done, _InfiniteDataloaderIterator(self.dataloader))
            print_log(f"seglab: resuming at iteration {done}: the sampler skips "
                      f"{done * self.dataloader.batch_size} samples per rank "
                      "without loading them", logger="current")
        return super().run()


@DATA_SAMPLERS.register_module()
class ResumableDefaultSampler(DefaultSampler):
    """mmengine's ``DefaultSampler`` (same order) whose next epoch can start part-way.

    Configured exactly as ``DefaultSampler``; ``use_fast_resume`` swaps it in.

    Args:
        dataset (Sized): the dataset (the runner passes it).
        shuffle (bool): whether each epoch is a new permutation. Defaults to True.
        seed (int, optional): seed of the permutations, the same on every rank.
            Defaults to None: the runner's seed.
        round_up (bool): pad the order so every rank gets as many samples. Defaults to True.
    """

    _skip_next = 0

    def skip(self, consumed: int) -> None:
        """Make the next ``iter()`` (one epoch) start after this rank's first ``consumed``."""
        self._skip_next = consumed

    def __iter__(self) -> Iterator[int]:
        indices = super().__iter__()
        skip, self._skip_next = self._skip_next, 0
        return itertools.islice(indices, skip, None)


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(EpochBasedTrainLoop):
    """``EpochBasedTrainLoop`` that resumes mid-epoch where the checkpoint was written.

    Configured exactly as ``EpochBasedTrainLoop`` (``train_cfg``). A checkpoint saved
    after iteration k of epoch e (``meta: epoch=e, iter=e*len+k``) continues with batch
    k of epoch e: the sampler (a ``ResumableDefaultSampler``) skips the k batches, and
    the hooks see the batch indices the uninterrupted run saw. Without that sampler the
    epoch restarts, as in mmengine.

    Args:
        runner (Runner): the runner (it passes itself).
        dataloader (DataLoader or dict): the train dataloader (the runner passes it).
        max_epochs (int): epochs to train.
        val_begin (int): the epoch at which validation starts. Defaults to 1.
        val_interval (int): epochs between validations. Defaults to 1.
        dynamic_intervals (list[tuple[int, int]], optional): ``(milestone,
            val_interval)`` pairs that change the interval from that epoch on.
            Defaults to None.
    """

    _first_batch = 0

    def run(self) -> torch.nn.Module:
        sampler = getattr(self.dataloader, "sampler", None)
        done = self.iter - self.epoch * len(self.dataloader)
        if 0 < done < len(self.dataloader) and isinstance(sampler, ResumableDefaultSampler):
            align_sampler_seed(self.runner)
            sampler.skip(done * self.dataloader.batch_size)
            self._first_batch = done
            print_log(f"seglab: resuming in epoch {self.epoch + 1} at batch {done + 1} of "
                      f"{len(self.dataloader)}: the sampler skips "
                      f"{done * self.dataloader.batch_size} samples per rank without "
                      "loading them", logger="current")
        return super().run()

    def run_epoch(self) -> None:
        """mmengine's ``run_epoch``, its batch indices counted from where the epoch resumed."""
        first, self._first_batch = self._first_batch, 0
        self.runner.call_hook("before_train_epoch")
        self.runner.model.train()
        batches: Any = self.dataloader
        if first:
            # The uninterrupted run drew the loader's base seed from torch's generator at the
            # epoch's start, before the state the checkpoint holds: not a second time here.
            state = torch.get_rng_state()
            batches = iter(self.dataloader)
            torch.set_rng_state(state)
        for idx, data_batch in enumerate(batches, start=first):
            self.run_iter(idx, data_batch)
        self.runner.call_hook("after_train_epoch")
        self._epoch += 1


# loop and sampler of stock configs -> their resumable twins (same order, same options)
_RESUMABLE = {
    "IterBasedTrainLoop": ("ResumableIterBasedTrainLoop",
                           ("InfiniteSampler", "mmengine.InfiniteSampler"),
                           "ResumableInfiniteSampler"),
    "EpochBasedTrainLoop": ("ResumableEpochBasedTrainLoop",
                            ("DefaultSampler", "mmengine.DefaultSampler"),
                            "ResumableDefaultSampler"),
}


def use_fast_resume(cfg: Any) -> list[str]:
    """Swap mmengine's train loop and sampler for the resumable ones (same order)."""
    loop = cfg.train_cfg.get("type")
    if loop is None and "by_epoch" in cfg.train_cfg:  # mmengine picks the loop by by_epoch
        loop = "EpochBasedTrainLoop" if cfg.train_cfg.by_epoch else "IterBasedTrainLoop"
    if loop not in _RESUMABLE:
        return []
    resumable_loop, samplers, resumable_sampler = _RESUMABLE[loop]
    sampler = cfg.train_dataloader.get("sampler") or {}
    if sampler.get("type") not in samplers:
        return []
    cfg.train_cfg.pop("by_epoch", None)  # a typed loop takes no by_epoch
    cfg.train_cfg.type = resumable_loop
    sampler.type = resumable_sampler
    return [f"{loop} + {samplers[0]} -> {resumable_loop} + {resumable_sampler} "
            "(a resume at any iteration skips consumed samples at the sampler)"]
