"""Load checkpoints safely on torch >= 2.6 without turning ``weights_only`` off.

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
from typing import Any

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader
from numpy._core import multiarray

from seglab.errors import UserError


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
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(filename, map_location=map_location, weights_only=True,
                              mmap=mmap)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{filename}: refused to load: it contains a Python object that is not in "
            "seglab's allow-list of checkpoint types, so loading it could run arbitrary code.\n"
            f"{_first_line(err)}\n"
            "Fix: if you trust this file, re-save only its weights in a trusted session "
            "(torch.save({'state_dict': torch.load(f, weights_only=False)['state_dict']}, out)) "
            "and load that; seglab never disables weights_only globally."
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as err:
        raise CheckpointError(
            f"{filename}: not a readable PyTorch checkpoint (truncated or corrupt?): "
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
    """Make mmengine load local files (resume, ``load_from``, ``init_cfg``) with seglab's loader."""
    CheckpointLoader.register_scheme(prefixes="", loader=load_checkpoint_file, force=True)
