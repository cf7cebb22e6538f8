"""Room for a run's checkpoints, checked before training instead of found missing at
epoch N.

``check_work_dir_writable`` runs before anything is built (creates the work dir,
writes and deletes a probe file). ``check_checkpoint_space`` runs once the runner
is built and before ``runner.train()``: the free space must hold the expected
checkpoint size times the copies the run keeps. A save that still fails for space
(``AtomicLocalBackend``) raises ``save_failed_error``: the previous checkpoint is
kept and the message says how much the save needed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from seglab.errors import UserError, free_bytes, gib

FP32_BYTES = 4
# pickled metadata, message hub, optimizer step counters: SegFormer-B0's estimate was 0.7 % short
CHECKPOINT_OVERHEAD = 1.02
# extra fp32 tensors an optimizer keeps per parameter (unknown optimizers: Adam's 2)
OPTIMIZER_STATE_PER_PARAM = {"adam": 2, "adamw": 2, "adamax": 2, "nadam": 2, "radam": 2,
                             "lamb": 2, "adadelta": 2, "adagrad": 1, "lion": 1, "sgd": 1,
                             "rmsprop": 1}
_FEWER_CHECKPOINTS = ("keep fewer checkpoints (--cfg-options "
                      "default_hooks.checkpoint.max_keep_ckpts=N)")


class WorkDirError(UserError):
    """The work dir cannot be created or written."""


class DiskSpaceError(UserError):
    """Not enough free space for the run's checkpoints (before training or during a save)."""


def check_work_dir_writable(work_dir: str | os.PathLike[str]) -> None:
    """Create ``work_dir`` if missing and write and delete a probe file in it."""
    path = Path(work_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        _write_probe(path)
    except OSError as err:
        raise WorkDirError(
            f"work dir {str(path)!r} is not writable ({err.strerror or err}): the run could "
            "save no log and no checkpoint. Fix: pass --work-dir a folder on a disk you can "
            "write to, or make this one writable for your user (chmod u+w).") from err


def _write_probe(folder: Path) -> None:
    fd, probe = tempfile.mkstemp(prefix=".seglab-write-probe-", dir=folder)
    try:
        os.write(fd, b"seglab")
    finally:
        os.close(fd)
        os.unlink(probe)


def check_checkpoint_space(runner: Any) -> None:
    """Refuse a run whose disk cannot hold the checkpoints it keeps.

    Rank 0 measures (it alone saves); every rank raises the same error. The process
    group exists by now, so a refusal on rank 0 alone would leave the other ranks
    waiting in their first collective until the NCCL timeout.
    """
    from mmengine.dist import broadcast_object_list, get_world_size, is_main_process

    message = [_space_shortfall(runner) if is_main_process() else None]
    if get_world_size() > 1:
        broadcast_object_list(message)
    if message[0]:
        raise DiskSpaceError(message[0])


def _space_shortfall(runner: Any) -> str | None:
    """Why the checkpoints will not fit (``None``: they will, or nothing is saved)."""
    cfg = runner.cfg
    hook = (cfg.get("default_hooks") or {}).get("checkpoint")
    if not hook:
        return None
    (periodic, best), why = checkpoint_copies(cfg)
    folder = hook.get("out_dir") or runner.work_dir  # mmengine saves under out_dir if set
    free = free_bytes(folder)
    if not periodic + best or free is None:
        return None
    size, estimated = checkpoint_bytes(runner)
    # the best checkpoint holds the weights alone (mmengine saves it without the optimizer)
    weights = estimate_checkpoint_bytes(runner.model) if best else 0
    present = _resumed_checkpoint_bytes(folder) if _resume_file(cfg) else 0
    needed = max(size, periodic * size + best * weights - present)
    if free >= needed:
        return None
    return (f"not enough free space for this run's checkpoints in {folder}: {why}, "
            f"{'about ' if estimated else ''}{gib(size)} each"
            + (f" ({gib(weights)} for a best one: weights only)" if best else "")
            + f", need {gib(needed)}"
            + (f" more than the {gib(present)} already there" if present else "")
            + f", and {gib(free)} are free. Fix: pass --work-dir a folder on a disk with more "
            f"space, {_FEWER_CHECKPOINTS}, or free space on this disk.")


def checkpoint_copies(cfg: Any) -> tuple[tuple[int, int], str]:
    """How many periodic and best checkpoints the run holds at once at most, and how that
    adds up. mmengine deletes the oldest kept checkpoint (and the previous best) before it
    writes the next one, so the one being written is among those counted."""
    hook = cfg.default_hooks.checkpoint
    keep = hook.get("max_keep_ckpts", -1)
    if keep and keep > 0:
        periodic, text = keep, f"{keep} kept (max_keep_ckpts={keep})"
    else:
        periodic = _planned_saves(cfg, hook)
        text = f"{periodic} saved and all kept (max_keep_ckpts not set)"
    best = hook.get("save_best")
    n_best = (len(best) if isinstance(best, list | tuple) else 1) if best else 0
    if n_best:
        text += f" + {n_best} best (save_best)"
    return (periodic, n_best), text + f" = {periodic + n_best} checkpoints"


def _planned_saves(cfg: Any, hook: Any) -> int:
    by_epoch = hook.get("by_epoch", True)
    length = (cfg.get("train_cfg") or {}).get("max_epochs" if by_epoch else "max_iters")
    interval = hook.get("interval", -1)
    if not length:
        return 1
    periodic = length // interval if interval and interval > 0 else 0
    last = hook.get("save_last", True) and (periodic == 0 or length % interval != 0)
    return max(periodic + int(bool(last)), 1)


def checkpoint_bytes(runner: Any) -> tuple[int, bool]:
    """The size of one checkpoint, and whether it is an estimate: the file a resume starts
    from, else the model's state plus the optimizer's per-parameter state in fp32."""
    resumed = _resume_file(runner.cfg)
    if resumed:
        return os.path.getsize(resumed), False
    hook = runner.cfg.default_hooks.checkpoint
    optim = runner.cfg.get("optim_wrapper") if hook.get("save_optimizer", True) else None
    return estimate_checkpoint_bytes(runner.model, optim), True


def estimate_checkpoint_bytes(model: Any, optim_wrapper_cfg: Any = None) -> int:
    """Weights and buffers as stored, plus the optimizer's state (e.g. AdamW: 2 fp32
    tensors per trained parameter), plus 2 %; sums shapes, copies nothing."""
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values()
                if hasattr(t, "numel"))
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = trained * FP32_BYTES * optimizer_state_per_param(optim_wrapper_cfg)
    return int((state + optimizer) * CHECKPOINT_OVERHEAD)


def optimizer_state_per_param(optim_wrapper_cfg: Any) -> int:
    """Fp32 tensors the optimizer keeps per trained parameter (0: no optimizer saved)."""
    if optim_wrapper_cfg is None:
        return 0
    optimizer = optim_wrapper_cfg.get("optimizer") or {}
    kind = optimizer.get("type", "AdamW")
    name = (kind if isinstance(kind, str) else getattr(kind, "__name__", "")).lower()
    per_param = OPTIMIZER_STATE_PER_PARAM.get(name, 2)
    if name == "sgd" and not optimizer.get("momentum"):
        per_param = 0
    if name in ("adam", "adamw") and optimizer.get("amsgrad"):
        per_param += 1
    if name == "rmsprop":
        per_param += bool(optimizer.get("momentum")) + bool(optimizer.get("centered"))
    return per_param


def _resume_file(cfg: Any) -> str | None:
    load_from = cfg.get("load_from")
    return load_from if cfg.get("resume") and load_from and os.path.isfile(load_from) else None


def _resumed_checkpoint_bytes(work_dir: str) -> int:
    """What the run's earlier checkpoints already take (rotated out as new ones come)."""
    return sum(p.stat().st_size for p in Path(work_dir).glob("*.pth") if p.is_file())


def save_failed_error(filepath: Path, size: int, err: OSError) -> DiskSpaceError:
    """The error for a save that ran out of space; the temporary file is already gone."""
    free = free_bytes(filepath.parent)
    return DiskSpaceError(
        f"{filepath}: not saved: {err.strerror or err}; it needs {gib(size)} ({size} bytes) "
        f"and {gib(free) if free is not None else 'an unknown amount'} is free on that disk. "
        f"{_previous_checkpoint(filepath.parent)} Fix: free space there and continue with "
        f"--resume, or continue on a bigger disk with --resume CHECKPOINT --work-dir NEW_DIR, "
        f"or {_FEWER_CHECKPOINTS}.")


def _previous_checkpoint(folder: Path) -> str:
    pointer = folder / "last_checkpoint"
    target = pointer.read_text().strip() if pointer.is_file() else ""
    if target and Path(target).is_file():
        return f"The previous checkpoint {target} is kept; last_checkpoint points to it."
    if target:
        return (f"No earlier checkpoint is left: {target} was deleted before this save "
                "(max_keep_ckpts makes room before writing).")
    return "No earlier checkpoint was saved."
