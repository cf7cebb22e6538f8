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
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

from seglab.errors import UserError


class CheckpointError(UserError):
    """A checkpoint file that cannot or must not be loaded; the message says why and what to do."""


def _numpy_globals() -> list[Callable[..., Any] | type]:
    # np.ndarray pickles through numpy's reconstruct helper and dtype classes;
    # their module paths moved in numpy 2 (numpy.core -> numpy._core).
    from numpy._core import multiarray

    dtype_classes = [type(np.dtype(t)) for t in np.typecodes["All"] if t not in "Mm"]
    dtype_classes += [type(np.dtype("M8[s]")), type(np.dtype("m8[s]"))]
    scalar_types = [np.dtype(t).type for t in np.typecodes["All"]]
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype,
            *dtype_classes, *scalar_types]


# What mmengine 0.10.7's CheckpointHook / Runner.save_checkpoint writes besides tensors.
SAFE_GLOBALS: list[Callable[..., Any] | type] = [HistoryBuffer, *_numpy_globals()]


def load_checkpoint_file(filename: str, map_location: Any = None) -> Any:
    """``torch.load`` with ``weights_only=True`` and seglab's allow-list."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f"{filename} can not be found.")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{filename}: refused to load: it contains a Python object that is not in seglab's "
            f"allow-list of checkpoint types, so loading it could run arbitrary code.\n{_first_line(err)}\n"
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
    text = str(err).strip()
    for line in text.splitlines():
        if "Unsupported global" in line:
            return line.strip()
    return text.splitlines()[0] if text else type(err).__name__


def install_safe_local_loader() -> None:
    """Make mmengine load local files (resume, ``load_from``, ``init_cfg``) with seglab's loader."""
    CheckpointLoader.register_scheme(prefixes="", loader=load_checkpoint_file, force=True)
