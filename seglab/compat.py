"""Import-time fixes for third-party packages on seglab's pinned stack (stdlib only).

mmpretrain 1.2.0 (the ``zoo`` extra) imports its multimodal models (BLIP, BLIP-2, Flamingo,
...) from ``mmpretrain.models`` whenever ``pycocotools`` and ``transformers>=4.28`` are
installed (``mmpretrain.utils.dependency.WITH_MULTIMODAL``). Those models are written for
transformers 4; under the ``hf`` extra's transformers 5 they fail at import (``TypeError:
NoneType takes no arguments``: ``transformers.modeling_utils.apply_chunking_to_forward`` is
gone). mmdet 3.3.0 imports ``mmpretrain.models`` and mmseg 1.2.2 imports
``mmdet.models.dense_heads`` when they are installed, so that one error would break every
``import mmseg.models``: every family, not only the three that need mmdet/mmpretrain.

seglab uses none of the multimodal models, so :func:`install` makes
``WITH_MULTIMODAL`` false as ``mmpretrain.utils.dependency`` is first imported; mmpretrain
then registers its own placeholders for them (building one raises an ``ImportError`` that
names the extra). Nothing in site-packages is changed. ``import seglab`` installs it, which
every seglab entry point (CLI, tests, configs' ``custom_imports``) does before mmseg. A process
that never imports seglab (mmseg's own ``tools/train.py``) gets it from its config:
``custom_imports = dict(imports=['seglab'])``, loaded before any model is built (the GPU
check's throughput stage does so).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

MMPRETRAIN_DEPENDENCY = "mmpretrain.utils.dependency"


def _without_multimodal(module) -> None:
    module.WITH_MULTIMODAL = False


class _PatchingLoader(importlib.abc.Loader):
    """Runs the module's own loader, then ``after(module)``."""

    def __init__(self, loader: importlib.abc.Loader, after) -> None:
        self._loader, self._after = loader, after

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        self._after(module)

    def __getattr__(self, name: str):  # get_source, get_filename, ... for tracebacks/inspect
        return getattr(self._loader, name)


class _MmpretrainFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != MMPRETRAIN_DEPENDENCY:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchingLoader(spec.loader, _without_multimodal)
        return spec


def install() -> None:
    """Idempotent; also patches an ``mmpretrain.utils.dependency`` imported before seglab."""
    if MMPRETRAIN_DEPENDENCY in sys.modules:
        _without_multimodal(sys.modules[MMPRETRAIN_DEPENDENCY])
    if not any(isinstance(f, _MmpretrainFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MmpretrainFinder())
