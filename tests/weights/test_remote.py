"""Checkpoints named by URL or scheme (``load_from``, ``init_cfg``): downloaded by seglab from a
real HTTP server on 127.0.0.1, loaded with the same ``weights_only`` allow-list as local files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mmengine.runner.checkpoint import CheckpointLoader

import seglab.register  # noqa: F401  (installs the loaders, as custom_imports does)
from seglab.engine.checkpoint import CheckpointError
from seglab.errors import UserError
from seglab.testing.http_server import Server


class OpensAFileOnLoad:
    """Pickles as "open(marker, 'w')": a payload whose running leaves a trace."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """torch hub's and mmengine's caches in tmp_path (the download cache mmengine uses)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("MMENGINE_HOME", str(tmp_path / "mmengine"))
    return tmp_path


def serve_checkpoint(server: Server, path: str, checkpoint: object, tmp_path: Path) -> str:
    file = tmp_path / "to_serve.pth"
    torch.save(checkpoint, file)
    server.files[path] = file.read_bytes()
    return server.base + path


def test_every_scheme_mmengine_loads_from_goes_through_seglab() -> None:
    """A prefix left to mmengine's own loader (or one a new mmengine adds) would load with
    ``weights_only=False`` or outside the allow-list."""
    loaders = {prefix: loader.__module__ for prefix, loader in CheckpointLoader._schemes.items()}
    expected = {"", "http://", "https://", "open-mmlab://", "torchvision://", "mmcls://"}
    assert expected <= set(loaders)
    assert all(module.startswith("seglab.") for module in loaders.values()), loaders


def test_a_checkpoint_served_over_http_cannot_run_code(server: Server, caches: Path) -> None:
    from mmengine.model import BaseModule

    marker = caches / "payload_ran"
    url = serve_checkpoint(server, "/evil.pth",
                           {"state_dict": {}, "x": OpensAFileOnLoad(marker)}, caches)
    with pytest.raises(CheckpointError, match="refused to load"):
        CheckpointLoader.load_checkpoint(url)  # load_from=URL
    model = BaseModule(init_cfg=dict(type="Pretrained", checkpoint=url))
    with pytest.raises(CheckpointError, match="evil.pth: refused to load"):
        model.init_weights()  # init_cfg=dict(type='Pretrained', checkpoint=URL)
    assert not marker.exists()
    assert len(server.requests) == 1  # downloaded once into the cache, refused from there
    assert (caches / "torch" / "hub" / "checkpoints" / "evil.pth").is_file()


def test_open_mmlab_names_are_followed_to_the_same_safe_download(server: Server,
                                                                  caches: Path) -> None:
    weights = {"state_dict": {"conv.weight": torch.arange(6.0).reshape(2, 3)}}
    url = serve_checkpoint(server, "/pretrain/tiny_v1c.pth", weights, caches)
    (caches / "mmengine").mkdir()  # the user's additions to mmengine's name list
    (caches / "mmengine" / "open_mmlab.json").write_text(json.dumps({"tiny_v1c": url}))
    for _ in range(2):
        loaded = CheckpointLoader.load_checkpoint("open-mmlab://tiny_v1c", map_location="cpu")
        assert torch.equal(loaded["state_dict"]["conv.weight"],
                           weights["state_dict"]["conv.weight"])
    assert len(server.requests) == 1  # the second load reads the cache


@pytest.mark.parametrize(("name", "suggested"), [("open-mmlab://resnet50_vlc", "resnet50_v1c"),
                                                 ("torchvision://resnet5O", "resnet50")])
def test_an_unknown_name_is_one_message_with_the_close_ones(name: str, suggested: str,
                                                            caches: Path) -> None:
    scheme = name.split("://")[0] + "://"
    with pytest.raises(UserError, match=f"did you mean {scheme}{suggested}"):
        CheckpointLoader.load_checkpoint(name)


def test_other_ranks_wait_for_rank_0_then_read_its_download(server: Server, caches: Path,
                                                            monkeypatch) -> None:
    """Eight ranks fetching at once into a cache on NFS (where a folder cannot be locked)
    would all write one ``.partial``: rank 0 downloads, the others wait at a barrier."""
    import mmengine.dist

    url = serve_checkpoint(server, "/w/epoch-12.pth", {"state_dict": {}}, caches)
    order: list[str] = []
    monkeypatch.setattr(mmengine.dist, "barrier", lambda *a: order.append("barrier"))
    for rank in (0, 1):
        monkeypatch.setattr(mmengine.dist, "get_dist_info", lambda rank=rank: (rank, 2))
        CheckpointLoader.load_checkpoint(url)
        order.append(f"rank {rank} loaded")
    assert order == ["barrier", "rank 0 loaded", "barrier", "rank 1 loaded"]
    assert len(server.requests) == 1  # rank 1 read rank 0's file ("-12." is no hash to check)
    (caches / "torch" / "hub" / "checkpoints" / "epoch-12.pth").unlink()  # another node's disk
    CheckpointLoader.load_checkpoint(url)
    assert len(server.requests) == 2


def test_the_weights_mirror_serves_openmmlab_urls_only(server: Server, caches: Path,
                                                       monkeypatch) -> None:
    """SEGLAB_WEIGHTS_MIRROR holds a copy of download.openmmlab.com, not of every host."""
    from seglab.weights.fetch import MIRROR_ENV

    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9/nowhere")  # nothing listens there
    url = serve_checkpoint(server, "/elsewhere/model.pth", {"state_dict": {}}, caches)
    assert CheckpointLoader.load_checkpoint(url) == {"state_dict": {}}
