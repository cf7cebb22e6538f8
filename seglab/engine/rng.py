"""Random-generator states that survive a checkpoint: captured per rank as NumPy arrays
(no ``map_location`` moves them), gathered for rank 0 to save, restored per rank."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from mmengine.logging import print_log

from seglab.engine.runner_fields import runner_arg

RNG_KEY = "seglab_rng_state"
RNG_FORMAT = 2  # one state per rank, stored as NumPy arrays

def _uint8_cpu(state: Any) -> torch.Tensor:
    """An RNG state as the CPU ``ByteTensor`` ``set_rng_state`` insists on.

    Format-1 checkpoints stored torch tensors, which mmengine's resume maps onto the
    current GPU (``map_location='default'``); format 2 stores NumPy arrays, which no
    ``map_location`` moves.
    """
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", torch.uint8)
    return torch.from_numpy(np.ascontiguousarray(state, dtype=np.uint8))


def capture_rng_state() -> dict[str, Any]:
    """This process's torch (CPU and current CUDA device), NumPy and Python RNG states.

    Only NumPy arrays and builtins: ``weights_only`` loads them and ``map_location``
    leaves them on the CPU. The CUDA state is the current device's alone: each rank
    draws from its own GPU's generator, and a resume may see fewer GPUs.
    """
    np_state = np.random.get_state(legacy=False)
    state = {"torch": torch.get_rng_state().numpy(),
             "numpy": {"key": np_state["state"]["key"].astype(np.int64),
                       "pos": int(np_state["state"]["pos"]),
                       "has_gauss": int(np_state["has_gauss"]),
                       "gauss": float(np_state["gauss"])},
             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state().cpu().numpy()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set this process's generators from :func:`capture_rng_state`'s result (either format)."""
    torch.set_rng_state(_uint8_cpu(state["torch"]))
    np_state = state["numpy"]
    key = np_state["key"]
    key = key.cpu().numpy() if isinstance(key, torch.Tensor) else np.asarray(key)
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": key.astype(np.uint32), "pos": np_state["pos"]},
                         "has_gauss": np_state["has_gauss"], "gauss": np_state["gauss"]})
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    cuda = state.get("cuda")
    if cuda is None or not torch.cuda.is_available():
        return
    if isinstance(cuda, (list, tuple)):  # format 1: every visible GPU's state, from rank 0
        device = torch.cuda.current_device()
        if device >= len(cuda):
            return
        cuda = cuda[device]
    torch.cuda.set_rng_state(_uint8_cpu(cuda))


def gather_rng_states(own: dict[str, Any]) -> dict[str, Any]:
    """Every rank's streams, in rank order, for the checkpoint rank 0 writes.

    A collective: every rank must call it (``RNGStateHook`` does just before
    ``CheckpointHook`` saves; mmengine's ``Runner.save_checkpoint`` runs on rank 0
    alone). Without it, ranks >= 1 would resume with rank 0's streams.
    """
    from mmengine.dist import all_gather_object, get_world_size

    ranks = all_gather_object(own) if get_world_size() > 1 else [own]
    return {"format": RNG_FORMAT, "ranks": ranks}


def rng_state_for_this_rank(saved: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """This rank's saved streams and, when they cannot all be restored, why (for the log)."""
    from mmengine.dist import get_rank, get_world_size

    if saved.get("format") != RNG_FORMAT:  # format 1: one process's streams, from rank 0
        return saved, None
    ranks, rank, world = saved["ranks"], get_rank(), get_world_size()
    note = None
    if len(ranks) != world:
        note = (f"the checkpoint holds the random streams of {len(ranks)} rank(s), this run has "
                f"{world}: ranks below {min(len(ranks), world)} continue their own streams, "
                "the data split differs, so the run is not an exact continuation")
    return (ranks[rank] if rank < len(ranks) else None), note


def align_sampler_seed(runner) -> None:
    """Give the train sampler the resumed run's seed.

    mmengine builds the train dataloader before ``resume`` reads the checkpoint's
    seed, so without ``randomness.seed`` in the config a resumed run shuffles
    with a new random seed: different batches than the run it continues.
    """
    sampler = getattr(runner.train_dataloader, "sampler", None)
    if (not runner_arg(runner, "resume") or getattr(sampler, "seed", runner.seed) == runner.seed
            or runner_arg(runner, "randomness").get("diff_rank_seed", False)):
        return
    print_log(f"seglab: train sampler seed {sampler.seed} -> {runner.seed} (the resumed "
              "run's), so the data order continues", logger="current")
    sampler.seed = runner.seed
    if hasattr(sampler, "_indices_of_rank"):  # InfiniteSampler made its stream at build time
        sampler.indices = sampler._indices_of_rank()  # mmengine has no public way to remake it
