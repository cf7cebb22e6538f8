"""Checkpoints: loaded safely on torch >= 2.6 without turning ``weights_only`` off,
saved atomically, and found again after a crash.

torch >= 2.6 loads with ``weights_only=True`` by default. mmengine 0.10.7
stores more than tensors in a training checkpoint (the message hub's
``HistoryBuffer`` objects with numpy arrays, numpy scalars in runtime info), so
its ``--resume`` fails with ``Unsupported global``. Setting
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` would re-enable arbitrary code execution
for *every* file. Instead seglab replaces mmengine's loader for local files
with one that keeps ``weights_only=True`` and allows exactly the types that
mmengine itself writes (``SAFE_GLOBALS``), inside a ``safe_globals`` context so
the allow-list is not left behind for other ``torch.load`` calls.

A file that needs any other type is refused with a ``CheckpointError`` naming
the file and the type; a truncated or corrupt file is reported as such.
"""

from __future__ import annotations

import os.path as osp
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from mmengine.fileio import LocalBackend, register_backend
from mmengine.fileio import io as fileio_io
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader
from numpy._core import multiarray

from seglab.atomic_files import atomic_write
from seglab.engine.disk_space import save_failed_error
from seglab.errors import DISK_FULL, UserError


class CheckpointError(UserError):
    """A checkpoint file that cannot or must not be loaded; the message says why and what to do."""


def _history_buffer_method(owner: Any, name: str) -> Any:
    """Stands in for ``builtins.getattr`` while unpickling: HistoryBuffer stores its
    statistics methods (``min``, ``max``, ``mean``, ...) as ``getattr(HistoryBuffer, name)``.
    Any other attribute lookup in a checkpoint is refused."""
    attr = getattr(HistoryBuffer, name, None) if owner is HistoryBuffer else None
    if name.startswith("_") or not callable(attr):
        raise pickle.UnpicklingError(
            f"Unsupported global: getattr({owner!r}, {name!r}) is not allowed in a checkpoint")
    return attr


# Exactly what mmengine 0.10.7's Runner.save_checkpoint writes besides tensors and
# builtins (found with torch.serialization.get_unsafe_globals_in_checkpoint):
# message-hub HistoryBuffers, which hold numpy arrays and numpy scalars.
SAFE_GLOBALS: list[Any] = [
    HistoryBuffer,
    (_history_buffer_method, "builtins.getattr"),
    np.ndarray,
    np.dtype,
    multiarray._reconstruct,
    multiarray.scalar,
    # numpy 2 restores a dtype's state on its concrete class (numpy.dtypes.Float64DType, ...)
    *{type(np.dtype(code)) for code in np.typecodes["All"]},
]


def load_checkpoint_file(filename: str, map_location: Any = None, mmap: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True`` and seglab's allow-list (``mmap``: tensors
    are mapped, not read, for a quick look at the metadata)."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f"{filename} can not be found.")
    return load_checkpoint_bytes(filename, filename, map_location, mmap=mmap)


def load_checkpoint_bytes(source: str | IO[bytes], name: str, map_location: Any = None,
                          mmap: bool = False) -> Any:
    """What ``load_checkpoint_file`` does, for a path or an open binary stream (a file
    fetched from object storage); ``name`` is what the messages call it."""
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(source, map_location=map_location, weights_only=True,
                              mmap=mmap)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{name}: refused to load: it contains a Python object that is not in "
            "seglab's allow-list of checkpoint types, so loading it could run arbitrary code.\n"
            f"{_first_line(err)}\n"
            "Fix: if you trust this file, re-save only its weights in a trusted session "
            "(torch.save({'state_dict': torch.load(f, weights_only=False)['state_dict']}, out)) "
            "and load that; seglab never disables weights_only globally."
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as err:
        raise CheckpointError(
            f"{name}: not a readable PyTorch checkpoint (truncated or corrupt?): "
            f"{_first_line(err)}\nFix: use an earlier checkpoint from the same work dir, or "
            "re-download / re-copy the file."
        ) from err


def _first_line(err: BaseException) -> str:
    """The line of torch's long message that says what was refused."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("WeightsUnpickler error:"):
            rest = line.removeprefix("WeightsUnpickler error:").strip()
            return rest or (lines[i + 1] if i + 1 < len(lines) else line)
    return lines[0] if lines else type(err).__name__


def install_safe_local_loader() -> None:
    """Make mmengine load local files (resume, ``load_from``, ``init_cfg``) with seglab's loader
    and save them atomically."""
    CheckpointLoader.register_scheme(prefixes="", loader=load_checkpoint_file, force=True)
    _use_atomic_local_backend()


def _write_bytes(handle: Any, data: bytes) -> None:
    handle.write(data)


@register_backend("local", force=True, prefixes="")
class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend with atomic ``put``: the bytes go to a temporary
    file in the same folder, are flushed to disk, then renamed over the target. A
    crash mid-save leaves the previous checkpoint and no truncated ``epoch_N.pth``;
    CheckpointHook writes ``last_checkpoint`` only after ``put`` returns. A disk that
    fills up mid-write is a ``DiskSpaceError`` naming the file, its size and the free space.

    Takes no arguments: registered for the ``local`` backend, used for every local path.
    """

    def put(self, obj: bytes, filepath: str | Path) -> None:
        filepath = Path(filepath)
        try:
            with atomic_write(filepath, "wb", fsync=True) as handle:
                _write_bytes(handle, obj)
        except OSError as err:
            if err.errno in DISK_FULL:
                raise save_failed_error(filepath, len(obj), err) from err
            raise


def _use_atomic_local_backend() -> None:
    """Drop local backends mmengine created before seglab registered its own."""
    for key in [k for k in fileio_io.backend_instances if k.startswith(":")]:
        del fileio_io.backend_instances[key]


# What mmengine's Runner.resume reads (message_hub and meta unconditionally); a run that
# saves its optimizer (CheckpointHook's default) needs it back, or the optimizer and the
# schedule restart. save_best's ``best_*.pth`` never holds it (saved with
# save_optimizer=False), so it is no resume point either way.
RESUME_KEYS = ("state_dict", "meta", "message_hub")
MAX_POINTER_BYTES = 4096  # a path; anything longer is not what CheckpointHook wrote


@dataclass(frozen=True)
class FoundCheckpoint:
    """The newest checkpoint a search accepted, and why it passed over newer ones."""

    path: str | None
    passed_over: tuple[str, ...] = ()


def saves_optimizer(cfg: Any) -> bool:
    """Whether the run's CheckpointHook saves the optimizer (mmengine's default)."""
    hook = (cfg.get("default_hooks") or {}).get("checkpoint") or {}
    return hook.get("save_optimizer", True) is not False


def find_latest_checkpoint(work_dir: str, optimizer: bool = True,
                           training_state: bool = True) -> FoundCheckpoint:
    """The newest complete checkpoint: ``last_checkpoint``'s target when it loads, else the
    newest ``*.pth`` that does (a pointer can be stale, cut short or garbage after a crash).

    Args:
        work_dir (str): the run's work dir.
        optimizer (bool): the run saves its optimizer, so a resume point must hold it.
            Defaults to True.
        training_state (bool): accept only files ``--resume`` can continue from (what
            ``Runner.resume`` reads, not a ``best_*.pth``); False: any loadable file.
            Defaults to True.
    """
    passed_over: list[str] = []
    named = _pointer_target(Path(work_dir) / "last_checkpoint", passed_over)
    others = sorted(Path(work_dir).glob("*.pth"), key=lambda p: p.stat().st_mtime,
                    reverse=True)
    for candidate in dict.fromkeys([named, *map(str, others)]):  # the pointer's target once
        if not candidate or not _is_file(candidate):
            continue
        try:
            loaded = load_checkpoint_file(candidate, map_location="cpu", mmap=True)
        except (CheckpointError, OSError) as err:
            passed_over.append(f"{candidate}: {str(err).splitlines()[0]}")
            continue
        wanted = RESUME_KEYS + (("optimizer",) if optimizer else ())
        missing = [k for k in wanted if not isinstance(loaded, dict) or k not in loaded]
        if training_state and (missing or Path(candidate).name.startswith("best_")):
            passed_over.append(f"{candidate}: weights only (no {', '.join(missing)}), cannot "
                               "continue a run" if missing else f"{candidate}: save_best's "
                               "copy of the best weights, not a point to continue from")
            continue
        return FoundCheckpoint(candidate, tuple(passed_over))
    return FoundCheckpoint(None, tuple(passed_over))


def _is_file(path: str) -> bool:
    try:
        return Path(path).is_file()
    except OSError:  # a name too long for this file system, a loop of links
        return False


def _pointer_target(pointer: Path, passed_over: list[str]) -> str:
    """The path ``last_checkpoint`` holds; "" (and why, in ``passed_over``) when it is
    missing, too long to be a path or not text."""
    try:
        with open(pointer, "rb") as handle:
            raw = handle.read(MAX_POINTER_BYTES + 1)
    except OSError:
        return ""
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        text = None
    if text is None or len(raw) > MAX_POINTER_BYTES or "\0" in text or "\n" in text:
        passed_over.append(f"{pointer}: does not hold a checkpoint path (a crash or another "
                           "program wrote it)")
        return ""
    return text


def best_checkpoints(work_dir: str | Path) -> list[Path]:
    """The ``save_best`` checkpoints (``best_<metric>_<epoch|iter>_N.pth``), sorted by name."""
    return sorted(Path(work_dir).glob("best_*.pth"))


def best_or_latest_checkpoint(work_dir: str | Path) -> str | None:
    """The ``save_best`` checkpoint, else the newest complete one (``None``: nothing)."""
    best = best_checkpoints(work_dir)
    if best:
        return str(best[-1])
    return find_latest_checkpoint(str(work_dir), training_state=False).path
