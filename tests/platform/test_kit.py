"""The offline kit for a bare GPU machine: a built mmcv wheel travels back in parts the
device tool returns (16 MiB each at most) and is reassembled on the next run."""

from __future__ import annotations

import os

import pytest

from seglab.platform.kit import PART_BYTES, install_kit, join_parts, split_file


def test_a_wheel_split_into_returnable_parts_is_reassembled_exactly(tmp_path) -> None:
    wheel = tmp_path / "mmcv-2.1.0-cp312-cp312-linux_x86_64.whl"
    payload = os.urandom(2 * PART_BYTES + 12345)
    wheel.write_bytes(payload)
    out, kit = tmp_path / "out", tmp_path / "kit"
    out.mkdir()
    kit.mkdir()
    parts = split_file(wheel, out)
    assert len(parts) == 3 and all(p.stat().st_size <= 16 * 2**20 for p in parts)
    for part in parts:  # what a session copies into the carried folder
        (kit / part.name).write_bytes(part.read_bytes())
    assert join_parts(kit) == [kit / wheel.name]
    assert (kit / wheel.name).read_bytes() == payload


def test_a_kit_without_mmcv_is_refused_before_installing(tmp_path) -> None:
    with pytest.raises(SystemExit, match="neither an mmcv wheel nor mmcv's sdist"):
        install_kit(tmp_path, tmp_path / "site")
