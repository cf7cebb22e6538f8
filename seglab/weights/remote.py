"""Checkpoints a config names by URL or scheme, loaded through seglab's allow-list.

mmengine resolves ``load_from``/``init_cfg`` checkpoints by prefix (``CheckpointLoader``):
``http(s)://`` goes through ``torch.hub.load_state_dict_from_url``, which calls
``torch.load(..., weights_only=False)``, and ``torchvision://``, ``open-mmlab://`` and
``mmcls://`` resolve a name to such a URL: a file served from anywhere could run code in
the training process before any weight was looked at. seglab registers its own loader for
every prefix mmengine knows: the file is downloaded into the cache mmengine uses
(``<torch hub dir>/checkpoints``, so files downloaded before are reused) by
``seglab.weights.fetch`` (resumable, checked against the hash in its name, one download
per node under a folder lock), then loaded with ``weights_only=True`` and the same
allow-list as a local file. Object stores (``s3://``, ``petrel://``, ``pavi://``) are read
into memory and loaded the same way.
"""

from __future__ import annotations

import difflib
import io
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mmengine.runner import checkpoint as mm_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader

from seglab.engine.checkpoint import load_checkpoint_bytes, load_checkpoint_file
from seglab.errors import UserError
from seglab.weights.fetch import WeightSource

Loader = Callable[[str, Any], Any]


def cache_dir() -> Path:
    """Where mmengine's http loader keeps downloads: ``$TORCH_HOME/hub/checkpoints``."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def download(url: str) -> Path:
    """``url`` in ``cache_dir()``: global rank 0 downloads (and checks) it while the other
    ranks wait at a barrier, as mmengine's http loader does; they then read the cached file
    (on a node whose cache the first did not fill, they download it there themselves, one
    at a time under the folder lock of a local disk). The file lock alone would not do: on
    NFS a folder cannot be locked and every rank would write the same ``.partial``."""
    from mmengine.dist import barrier, get_dist_info

    from seglab.weights.fetch import OPENMMLAB_HOST, fetch

    # a cluster's mirror (SEGLAB_WEIGHTS_MIRROR) holds OpenMMLab's files, not torchvision's
    mirror = None if urlsplit(url).hostname == OPENMMLAB_HOST else ""
    rank, world_size = get_dist_info()
    path = fetch(url, cache_dir(), mirror=mirror) if rank == 0 else None
    if world_size > 1:
        barrier()
    if path is None:
        cached = cache_dir() / WeightSource.from_url(url, url).file_name
        path = cached if cached.is_file() else fetch(url, cache_dir(), mirror=mirror,
                                                     progress=None)
    return path


def load_from_url(filename: str, map_location: Any = None) -> Any:
    """An ``http(s)://`` checkpoint: downloaded into ``cache_dir()`` once, then loaded safely."""
    return load_checkpoint_file(str(download(filename)), map_location)


def _named(scheme: str, name: str, urls: Mapping[str, str]) -> str:
    if name in urls:
        return urls[name]
    close = difflib.get_close_matches(name, list(urls), n=3)
    raise UserError(
        f"{scheme}{name}: not a checkpoint name mmengine knows"
        + (f"; did you mean {' or '.join(scheme + c for c in close)}?" if close else ".")
        + " Fix: correct the name in load_from / init_cfg, or give the file's path or URL.")


def load_from_torchvision(filename: str, map_location: Any = None) -> Any:
    """``torchvision://NAME`` (and the deprecated ``modelzoo://NAME``)."""
    scheme = "modelzoo://" if filename.startswith("modelzoo://") else "torchvision://"
    url = _named(scheme, filename[len(scheme):], mm_checkpoint.get_torchvision_models())
    return load_from_url(url, map_location)


def load_from_openmmlab(filename: str, map_location: Any = None) -> Any:
    """``open-mmlab://NAME`` / ``openmmlab://NAME``: mmengine's ``hub/openmmlab.json`` plus the
    user's ``$MMENGINE_HOME/open_mmlab.json``; a deprecated name is followed to its successor;
    an entry that is not a URL is a file under ``$MMENGINE_HOME``."""
    scheme = "open-mmlab://" if filename.startswith("open-mmlab://") else "openmmlab://"
    name = filename[len(scheme):]
    name = mm_checkpoint.get_deprecated_model_names().get(name, name)
    url = _named(scheme, name, mm_checkpoint.get_external_models())
    if url.startswith(("http://", "https://")):
        return load_from_url(url, map_location)
    return load_checkpoint_file(str(Path(mm_checkpoint._get_mmengine_home()) / url),
                                map_location)


def load_from_mmcls(filename: str, map_location: Any = None) -> Any:
    """``mmcls://NAME``: the backbone's weights of an mmcls classifier."""
    url = _named("mmcls://", filename[len("mmcls://"):], mm_checkpoint.get_mmcls_models())
    return mm_checkpoint._process_mmcls_checkpoint(load_from_url(url, map_location))


def load_from_object_store(filename: str, map_location: Any = None) -> Any:
    """``s3://``/``petrel://`` (mmengine's petrel backend): the bytes, loaded safely."""
    from mmengine.fileio import get_file_backend

    backend = get_file_backend(filename, backend_args={"backend": "petrel"})
    with io.BytesIO(backend.get(filename)) as buffer:
        return load_checkpoint_bytes(buffer, filename, map_location)


def load_from_pavi(filename: str, map_location: Any = None) -> Any:
    """``pavi://`` (OpenMMLab's model cloud): downloaded to a temporary folder, loaded safely."""
    try:
        from pavi import modelcloud
    except ImportError as err:
        raise UserError(f"{filename}: loading from pavi:// needs the pavi package. Fix: "
                        "install it, or download the file and give its path.") from err
    model = modelcloud.get(filename[len("pavi://"):])
    with tempfile.TemporaryDirectory() as folder:
        downloaded = str(Path(folder) / model.name)
        model.download(downloaded)
        return load_checkpoint_file(downloaded, map_location)


# Every prefix mmengine 0.10.7 registers besides local files (tests check none is left over)
SAFE_REMOTE_LOADERS: dict[tuple[str, ...], Loader] = {
    ("http://", "https://"): load_from_url,
    ("modelzoo://", "torchvision://"): load_from_torchvision,
    ("open-mmlab://", "openmmlab://"): load_from_openmmlab,
    ("mmcls://",): load_from_mmcls,
    (r"(\S+\:)?s3://", r"(\S+\:)?petrel://"): load_from_object_store,
    ("pavi://",): load_from_pavi,
}


def install_safe_remote_loaders() -> None:
    """Replace mmengine's loader of every remote prefix with seglab's safe one."""
    for prefixes, loader in SAFE_REMOTE_LOADERS.items():
        CheckpointLoader.register_scheme(prefixes=list(prefixes), loader=loader, force=True)
