"""``seglab weights fetch``: the catalog read from mmseg/mmengine, and downloads from a real HTTP
server on 127.0.0.1 (resume with ``Range``, a server that ignores it, a cut connection, a wrong
hash, offline). The served file is generated; the catalog entry is made to expect its hash.
"""

from __future__ import annotations

import hashlib
import random
import re
import socket
from pathlib import Path

import pytest

from seglab.errors import UserError
from seglab.testing.http_server import Server
from seglab.weights.fetch import (
    MIRROR_ENV,
    WeightSource,
    catalog,
    fetch,
    fetch_hint,
    mirror_url,
    resolve,
)

SIZE = 200 * 1024
MIT_PATH = "/mmsegmentation/v0.5/pretrain/segformer/mit_b0_20220624-{}.pth"


def weights_file(seed: int = 0) -> tuple[bytes, str]:
    data = random.Random(seed).randbytes(SIZE)
    return data, hashlib.sha256(data).hexdigest()[:8]


def serve_mit(state: Server, seed: int = 0, served: bytes | None = None,
              ) -> tuple[bytes, dict[str, WeightSource]]:
    """Serve a generated file under the real URL's path, named with its own hash (or, with
    ``served``, other bytes under that name); the catalog that expects it."""
    data, prefix = weights_file(seed)
    path = MIT_PATH.format(prefix)
    state.files[path] = data if served is None else served
    source = WeightSource.from_url("mit-b0", "https://download.openmmlab.com" + path)
    assert source.sha256_prefix == prefix
    return data, {"mit-b0": source}


def test_catalog_read_from_mmseg_configs_and_mmengine() -> None:
    from mmengine.runner.checkpoint import get_external_models

    from seglab.config.walk import mmseg_config_dir

    known = catalog()
    assert set(known) == {f"mit-b{i}" for i in range(6)} | {"resnet50_v1c", "resnet101_v1c"}
    configs = "".join(p.read_text() for p in (mmseg_config_dir() / "segformer").glob("*.py"))
    for entry in known.values():
        assert entry.url.endswith("/" + entry.file_name)
        assert re.fullmatch(r"[0-9a-f]{8}", entry.sha256_prefix or "")
        if entry.name.startswith("mit-"):
            assert f"checkpoint = '{entry.url}'" in configs
    assert known["mit-b0"].sha256_prefix == "7e0fe6dd"
    assert known["mit-b2"].file_name == "mit_b2_20220624-66e8bf70.pth"
    assert known["resnet50_v1c"].url == get_external_models()["resnet50_v1c"]
    assert known["resnet50_v1c"].sha256_prefix == "2cccc1ad"


@pytest.mark.parametrize("alias, name", [
    ("mit_b2", "mit-b2"), ("MIT-B2", "mit-b2"), ("mit_b2_20220624-66e8bf70.pth", "mit-b2"),
    ("open-mmlab://resnet50_v1c", "resnet50_v1c"), ("resnet101_v1c", "resnet101_v1c"),
    ("https://download.openmmlab.com/pretrain/third_party/resnet50_v1c-2cccc1ad.pth",
     "resnet50_v1c"),
])
def test_aliases(alias: str, name: str) -> None:
    assert resolve(alias).name == name


def test_unknown_name_suggests_close_ones(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"unknown weights 'resnet50'\. Did you mean "
                                        r"'resnet50_v1c'.*Known: mit-b0, .*resnet101_v1c"):
        fetch("resnet50", tmp_path, progress=None)
    assert not any(tmp_path.iterdir())


def test_download_checks_hash_and_renames(server: Server, tmp_path: Path) -> None:
    data, sources = serve_mit(server)
    said: list[str] = []
    out = fetch("mit-b0", tmp_path / "ckpt", mirror=server.base, progress=said.append,
                sources=sources)
    assert out == tmp_path / "ckpt" / sources["mit-b0"].file_name
    assert out.read_bytes() == data
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no .partial left
    assert server.requests == [(MIT_PATH.format(sources["mit-b0"].sha256_prefix), None)]
    assert any("sha256 checked" in line for line in said)


def test_mirror_from_environment(server: Server, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    data, sources = serve_mit(server)
    monkeypatch.setenv(MIRROR_ENV, server.base + "/")
    assert fetch("mit_b0", tmp_path, progress=None, sources=sources).read_bytes() == data
    assert len(server.requests) == 1


def test_mirror_url_keeps_the_mirror_path() -> None:
    url = "https://download.openmmlab.com/pretrain/third_party/resnet50_v1c-2cccc1ad.pth"
    assert mirror_url(url, "http://m:8080/openmmlab/") == \
        "http://m:8080/openmmlab/pretrain/third_party/resnet50_v1c-2cccc1ad.pth"
    with pytest.raises(UserError, match="not a URL"):
        mirror_url(url, "mirror.local")


def test_interrupted_transfer_resumes_with_range(server: Server, tmp_path: Path) -> None:
    data, sources = serve_mit(server)
    source = sources["mit-b0"]
    cut = 70_000
    server.cut_after = cut
    with pytest.raises(UserError, match=r"closed after 70,000 of 204,800 bytes.*resumes"):
        fetch("mit-b0", tmp_path, mirror=server.base, progress=None, sources=sources)
    partial = tmp_path / (source.file_name + ".partial")
    assert partial.stat().st_size == cut
    assert not (tmp_path / source.file_name).exists()

    server.cut_after = None
    out = fetch("mit-b0", tmp_path, mirror=server.base, progress=None, sources=sources)
    assert server.requests[-1][1] == f"bytes={cut}-"
    assert out.read_bytes() == data
    assert not partial.exists()


def test_server_ignoring_range_restarts_from_zero(server: Server, tmp_path: Path) -> None:
    data, sources = serve_mit(server)
    source = sources["mit-b0"]
    partial = tmp_path / (source.file_name + ".partial")
    partial.write_bytes(data[:50_000])
    server.ignore_range = True
    said: list[str] = []
    out = fetch("mit-b0", tmp_path, mirror=server.base, progress=said.append, sources=sources)
    assert server.requests[-1][1] == "bytes=50000-"  # asked, got 200 and the whole file
    assert out.read_bytes() == data  # not 50 000 bytes twice
    assert any("does not resume" in line for line in said)


def test_complete_partial_is_finished_without_a_body(server: Server, tmp_path: Path) -> None:
    data, sources = serve_mit(server)
    partial = tmp_path / (sources["mit-b0"].file_name + ".partial")
    partial.write_bytes(data)  # a run that stopped between the last byte and the rename
    out = fetch("mit-b0", tmp_path, mirror=server.base, progress=None, sources=sources)
    assert server.requests[-1][1] == f"bytes={SIZE}-"  # the server answered 416
    assert out.read_bytes() == data and not partial.exists()


def test_partial_longer_than_the_file_starts_over(server: Server, tmp_path: Path) -> None:
    data, sources = serve_mit(server)
    partial = tmp_path / (sources["mit-b0"].file_name + ".partial")
    partial.write_bytes(data + b"junk")  # not this file: the server answers 416
    out = fetch("mit-b0", tmp_path, mirror=server.base, progress=None, sources=sources)
    assert [r[1] for r in server.requests] == [f"bytes={SIZE + 4}-", None]
    assert out.read_bytes() == data and not partial.exists()


def test_wrong_hash_refused_and_nothing_left(server: Server, tmp_path: Path) -> None:
    other, _ = weights_file(seed=1)
    _, sources = serve_mit(server, served=other)
    expected, got = sources["mit-b0"].sha256_prefix, hashlib.sha256(other).hexdigest()[:8]
    with pytest.raises(UserError) as caught:
        fetch("mit-b0", tmp_path, mirror=server.base, progress=None, sources=sources)
    message = str(caught.value)
    assert server.base + MIT_PATH.format(expected) in message
    assert f"starts with {got}, expected {expected}" in message
    assert list(tmp_path.iterdir()) == []


def test_existing_good_file_is_not_downloaded(server: Server, tmp_path: Path) -> None:
    data, sources = serve_mit(server)
    final = tmp_path / sources["mit-b0"].file_name
    final.write_bytes(data)
    said: list[str] = []
    assert fetch("mit-b0", tmp_path, mirror=server.base, progress=said.append,
                 sources=sources) == final
    assert server.requests == []
    assert any("not downloaded" in line for line in said)


def test_existing_bad_file_is_left_alone(server: Server, tmp_path: Path) -> None:
    _, sources = serve_mit(server)
    final = tmp_path / sources["mit-b0"].file_name
    final.write_bytes(b"someone else's weights")
    with pytest.raises(UserError, match="Move it away"):
        fetch("mit-b0", tmp_path, mirror=server.base, progress=None, sources=sources)
    assert final.read_bytes() == b"someone else's weights"
    assert server.requests == []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_offline_says_what_to_fetch_and_where(tmp_path: Path) -> None:
    _, prefix = weights_file()
    sources = {"mit-b0": WeightSource.from_url(
        "mit-b0", "https://download.openmmlab.com" + MIT_PATH.format(prefix))}
    source = sources["mit-b0"]
    partial = tmp_path / (source.file_name + ".partial")
    partial.write_bytes(b"x" * 1000)  # an earlier interrupted run
    with pytest.raises(UserError) as caught:
        fetch("mit-b0", tmp_path, mirror=f"http://127.0.0.1:{free_port()}", progress=None,
              sources=sources)
    message = str(caught.value)
    assert source.url in message
    assert str((tmp_path / source.file_name).resolve()) in message
    assert "seglab weights fetch mit-b0" in message and "verifies it" in message
    assert partial.read_bytes() == b"x" * 1000  # kept, for the next run to resume


def test_not_found_on_the_mirror_is_the_same_message(server: Server, tmp_path: Path) -> None:
    _, sources = serve_mit(server)
    server.files.clear()
    with pytest.raises(UserError, match=r"HTTP 404.*Fetch https://download\.openmmlab\.com/"):
        fetch("mit-b0", tmp_path, mirror=server.base, progress=None, sources=sources)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("named, command", [
    ("checkpoints/mit_b2_20220624-66e8bf70.pth", "seglab weights fetch mit-b2 --dir checkpoints"),
    ("open-mmlab://resnet50_v1c", "seglab weights fetch resnet50_v1c --dir checkpoints"),
    ("https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segformer/"
     "mit_b0_20220624-7e0fe6dd.pth", "seglab weights fetch mit-b0 --dir checkpoints"),
    ("/data/weights/resnet101_v1c.pth", "seglab weights fetch resnet101_v1c --dir /data/weights"),
    ("pretrain/mit_b5.pth", "seglab weights fetch mit-b5 --dir pretrain"),
    ("checkpoints/mit_b2_converted_from_hf.pth", None),  # seglab weights convert's file
    ("open-mmlab://resnet18_v1c", None),
    ("work_dirs/run/iter_4000.pth", None),
])
def test_fetch_hint(named: str, command: str | None) -> None:
    assert fetch_hint(named) == command
