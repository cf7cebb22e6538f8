"""A launch imports the optional model packages only when its config needs them (stdlib only).

mmseg 1.2.2 imports mmdet at ``import mmseg.models`` for two heads only (Mask2Former and
MaskFormer subclass mmdet's), and mmdet imports mmpretrain and transformers: ~2.5 s of every
process on a 2-core CPU where the ``zoo`` extra is installed, for the 2 of 29 families that use
them. ``seglab train`` and ``seglab test`` read their one config first and call
:func:`defer_unneeded` before mmseg's models are imported (``cli._defer_unneeded_packages``).
A process that imports seglab as a library (a notebook, the tests, mmseg's own tools) is not
changed.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

DEFERRABLE = ("mmdet",)
MMDET_BASED_HEADS = ("mmseg.models.decode_heads.mask2former_head",
                     "mmseg.models.decode_heads.maskformer_head")
_deferred: set[str] = set()
_inside_head: list[str] = []


class _HeadLoader(importlib.abc.Loader):
    """Runs one of mmseg's mmdet-based head modules with the deferred packages missing."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        _inside_head.append(module.__name__)
        try:
            self._loader.exec_module(module)
        finally:
            _inside_head.pop()

    def __getattr__(self, name: str):  # get_source, get_filename, ... for tracebacks/inspect
        return getattr(self._loader, name)


class _DeferringFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if _inside_head and fullname.partition(".")[0] in _deferred:
            raise ModuleNotFoundError(f"No module named {fullname!r} (seglab: this run's "
                                      "config needs no mmdet-based head)", name=fullname)
        if fullname in MMDET_BASED_HEADS and _deferred:
            spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _HeadLoader(spec.loader)
            return spec
        return None


def defer_unneeded(needed: set[str]) -> list[str]:
    """For a process that builds one config's model: keep the :data:`DEFERRABLE` packages not in
    ``needed`` (the top-level packages its config names) out of ``import mmseg.models``. Does
    nothing to a package already imported, or once mmseg's heads are. Returns what it deferred.

    Only the two mmdet-based heads see the package missing, and they register mmseg's
    placeholders, as without mmdet: a model that uses them is not built by such a process.
    """
    if any(head in sys.modules for head in MMDET_BASED_HEADS):
        return []
    _deferred.update(p for p in DEFERRABLE if p not in needed and p not in sys.modules)
    if _deferred and not any(isinstance(f, _DeferringFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _DeferringFinder())
    return sorted(_deferred)
