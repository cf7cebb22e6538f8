"""The per-file facts of the data check are what mmseg's loaders get, and its cache is
shared safely: by teammates (file mode) and by the ranks of a job (lock only to decode)."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
from pathlib import Path

import mmcv
import numpy as np
import pytest
from PIL import Image

from seglab.doctor import file_check
from seglab.doctor.dataset import DatasetSpec, run_doctor
from seglab.doctor.file_check import FileCheck, examine_file
from tests.doctor.spoil import count_decodes

QUARTER_TURN = 6  # EXIF orientation: rotate 90 degrees clockwise to display


def _turned(fmt: str, size: tuple[int, int] = (40, 20)) -> bytes:
    """An RGB image of ``size`` stored as ``fmt`` with EXIF orientation 6."""
    exif = Image.Exif()
    exif[file_check.EXIF_ORIENTATION] = QUARTER_TURN
    out = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(out, fmt, exif=exif.tobytes())
    return out.getvalue()


def _facts(tmp_path: Path, data: bytes, kind: str, name: str = "f") -> dict:
    path = tmp_path / name
    path.write_bytes(data)
    with file_check._strict_pil():
        return examine_file(str(path), kind)


def _mmseg_image_size(data: bytes) -> list[int]:
    """``[w, h]`` of mmseg's LoadImageFromFile (mmcv: cv2, color_type 'color')."""
    height, width = mmcv.imfrombytes(data, flag="color", backend="cv2").shape[:2]
    return [width, height]


def _mmseg_mask(data: bytes) -> np.ndarray:
    """What mmseg's LoadAnnotations makes of a mask file (pillow, 'unchanged', uint8)."""
    return mmcv.imfrombytes(data, flag="unchanged", backend="pillow").squeeze().astype(np.uint8)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_image_size_follows_the_exif_orientation_as_mmseg_decodes_it(tmp_path, fmt) -> None:
    """A 40x20 JPEG/PNG with orientation 6 decodes as 20 wide, 40 high (OpenCV turns it;
    it leaves WebP's orientation alone); a mask is read 'unchanged', never turned."""
    data = _turned(fmt)
    image = _facts(tmp_path, data, "image")
    assert image["size"] == _mmseg_image_size(data)
    assert image.get("orientation") == (None if fmt == "WEBP" else QUARTER_TURN)
    if fmt == "PNG":
        assert _facts(tmp_path, data, "mask")["size"] == [40, 20]


def test_a_mask_drawn_on_the_stored_pixels_of_a_turned_image_is_a_size_error(tmp_path) -> None:
    images, masks = tmp_path / "img", tmp_path / "ann"
    images.mkdir()
    masks.mkdir()
    (images / "a.jpg").write_bytes(_turned("JPEG"))
    Image.new("L", (40, 20)).save(masks / "a.png")  # the stored size: wrong once turned
    Image.new("RGB", (40, 20)).save(images / "b.jpg")
    Image.new("L", (40, 20)).save(masks / "b.png")
    spec = DatasetSpec("train[0] X", images, masks, None, ("bg", "fg"), False)
    (finding,) = run_doctor([spec], use_cache=False, progress=None).findings
    assert (finding.rule, Path(finding.where).name) == ("size", "a.png")
    assert "EXIF orientation 6" in finding.message and "exif_transpose" in finding.fix


def test_a_cache_from_before_exif_sizes_is_not_reused(tmp_path) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(_turned("JPEG"))
    stat = path.stat()
    old = {"stat": [stat.st_size, stat.st_mtime_ns], "kind": "image", "size": [40, 20],
           "mode": "RGB"}
    (tmp_path / file_check.CACHE_NAME).write_text(json.dumps(
        {"version": 1, "files": {"a.jpg": old}}))
    files = FileCheck()
    files.run(tmp_path, [(path, "image")], progress=None)
    assert (files.examined, files.cached) == (1, 0) and files.facts[path]["size"] == [20, 40]


def _png(pixels: np.ndarray | Image.Image) -> bytes:
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _one_bit() -> Image.Image:
    image = Image.new("1", (4, 2))
    image.putpixel((1, 0), 1)
    return image


@pytest.mark.parametrize("make", [
    _one_bit,
    lambda: np.array([[0, 3, 255], [7, 7, 0]], np.uint16),
    lambda: np.array([[0, 3, 255], [7, 7, 0]], np.uint8),
], ids=["1-bit", "16-bit", "8-bit"])
def test_single_channel_masks_give_the_labels_mmseg_reads(tmp_path, make) -> None:
    data = _png(make())
    facts = _facts(tmp_path, data, "mask")
    values, counts = np.unique(_mmseg_mask(data), return_counts=True)
    assert facts["hist"] == {str(v): int(n) for v, n in zip(values, counts, strict=True)}
    assert "wrapped" not in facts and facts["mode"] in file_check.MASK_MODES


def test_16_bit_mask_values_above_255_are_one_error(tmp_path) -> None:
    images, masks = tmp_path / "img", tmp_path / "ann"
    images.mkdir()
    masks.mkdir()
    Image.new("RGB", (3, 2)).save(images / "a.jpg")
    data = _png(np.array([[0, 1, 300], [256, 1, 0]], np.uint16))
    (masks / "a.png").write_bytes(data)
    assert sorted(np.unique(_mmseg_mask(data))) == [0, 1, 44]  # mmseg: 300 -> 44, 256 -> 0
    spec = DatasetSpec("train[0] X", images, masks, None, ("bg", "fg"), False)
    result = run_doctor([spec], use_cache=False, progress=None)
    (finding,) = result.findings
    assert finding.rule == "label-range" and "[256, 300]" in finding.message
    assert "wrap" in finding.message and "8-bit" in finding.fix
    assert result.datasets[0].class_images == [0, 0]  # its labels are not counted


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA"])
def test_multi_channel_masks_stay_mode_errors(tmp_path, mode) -> None:
    facts = _facts(tmp_path, _png(Image.new(mode, (3, 2))), "mask")
    assert facts["mode"] == mode and "hist" not in facts


def test_the_cache_file_is_readable_as_the_umask_allows(tmp_path) -> None:
    """``mkstemp`` makes 0600 files: a group-shared data root's cache must follow the umask."""
    path = tmp_path / "a.png"
    Image.new("L", (2, 2)).save(path)
    old = os.umask(0o002)
    try:
        FileCheck().run(tmp_path, [(path, "mask")], progress=None)
    finally:
        os.umask(old)
    assert (tmp_path / file_check.CACHE_NAME).stat().st_mode & 0o777 == 0o664


def _masks(folder: Path, count: int = 3) -> list[tuple[Path, str]]:
    for i in range(count):
        Image.new("L", (2, 2), i).save(folder / f"{i}.png")
    return [(folder / f"{i}.png", "mask") for i in range(count)]


def test_a_check_of_cached_files_takes_no_lock(tmp_path, monkeypatch) -> None:
    """Eight ranks reading a full cache stat their files at once, none waits on another."""
    files = _masks(tmp_path)
    FileCheck().run(tmp_path, files, progress=None)
    turns: list[Path] = []
    real = file_check._turn

    def recorded(folder, progress):
        turns.append(folder)
        return real(folder, progress)

    monkeypatch.setattr(file_check, "_turn", recorded)
    again = FileCheck()
    again.run(tmp_path, files, progress=None)
    assert turns == [] and (again.examined, again.cached) == (0, 3)


def test_files_another_process_decoded_while_this_one_waited_are_not_decoded(
        tmp_path, monkeypatch) -> None:
    files = _masks(tmp_path)
    real = file_check._turn

    @contextlib.contextmanager
    def after_another(folder, progress):
        monkeypatch.setattr(file_check, "_turn", real)
        FileCheck().run(tmp_path, files, progress=None)  # the rank that had the turn first
        with real(folder, progress):
            yield

    monkeypatch.setattr(file_check, "_turn", after_another)
    decoded = count_decodes(monkeypatch)
    check = FileCheck()
    check.run(tmp_path, files, progress=None)
    assert len(decoded) == 3 and (check.examined, check.cached) == (0, 3)  # 3: the other's


@pytest.mark.parametrize("failure", [errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP],
                         ids=["ENOLCK", "ENOSYS", "EOPNOTSUPP"])
def test_a_file_system_without_locks_checks_without(tmp_path, monkeypatch, failure) -> None:
    """``flock`` failing, also after the non-blocking try found the lock taken."""
    import fcntl

    calls: list[int] = []

    def flock(fd, operation):
        calls.append(operation)
        if operation & fcntl.LOCK_NB:
            raise BlockingIOError(errno.EWOULDBLOCK, "held")
        raise OSError(failure, os.strerror(failure))

    monkeypatch.setattr(fcntl, "flock", flock)
    check = FileCheck()
    check.run(tmp_path, _masks(tmp_path), progress=None)
    assert len(calls) == 2 and check.examined == 3


def test_quiet_check_announces_only_a_decode(tmp_path) -> None:
    """The ranks after the first print the lines of a decode they do, nothing else."""
    files = _masks(tmp_path)
    lines: list[str] = []
    FileCheck().run(tmp_path, files, progress=lines.append, quiet=True)
    assert len(lines) == 2 and "decoding 3 on 1 process(es)" in lines[0]
    assert lines[1].startswith("data check: 3/3 files in ")
    lines.clear()
    FileCheck().run(tmp_path, files, progress=lines.append, quiet=True)
    assert lines == []
    FileCheck().run(tmp_path, files, progress=lines.append)
    assert len(lines) == 1 and lines[0].startswith("data check: 3/3 files in ")
