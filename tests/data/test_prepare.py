"""`seglab data prepare` on small archives in the real download formats."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import signal
import stat
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglab.data.prepare import (
    PREPARERS,
    STAGING,
    THROTTLE_ENV,
    prepare_ade20k,
    prepare_sbd,
    prepare_voc,
)
from seglab.data.synth import write_archives
from seglab.errors import UserError
from tests.conftest import REPO_ROOT

NUM_TRAIN, NUM_VAL = 6, 3


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_archives(tmp_path_factory.mktemp("archives"), NUM_TRAIN, NUM_VAL, seed=5)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): _md5(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _dataset_len(config: str, split: str, data_root: Path) -> int:
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    from seglab.config.loading import load_config

    init_default_scope("mmseg")
    cfg = load_config(REPO_ROOT / "configs" / config, data_root=str(data_root))
    return len(DATASETS.build(cfg[f"{split}_dataloader"].dataset))


@pytest.mark.slow
def test_prepared_datasets_load_in_their_configs(archives, tmp_path) -> None:
    voc = prepare_voc(archives["voc"], tmp_path, checksum=_md5(archives["voc"]))
    assert voc.counts == {"train": NUM_TRAIN, "val": NUM_VAL}
    assert _dataset_len("upernet/upernet_r50_voc12_v1.0.py", "train", voc.target) == NUM_TRAIN
    assert _dataset_len("upernet/upernet_r50_voc12_v1.0.py", "val", voc.target) == NUM_VAL

    sbd = prepare_sbd(archives["sbd"], tmp_path, checksum=_md5(archives["sbd"]), nproc=2)
    sets = voc.target / "ImageSets" / "Segmentation"
    val = set((sets / "val.txt").read_text().split())
    train = set((sets / "train.txt").read_text().split())
    aug = set((sets / "aug.txt").read_text().split())
    trainaug = set((sets / "trainaug.txt").read_text().split())
    assert not (aug | trainaug) & val, "a validation image leaked into training"
    assert trainaug == train | aug and sbd.counts["trainaug"] == 2 * NUM_TRAIN
    assert _dataset_len("upernet/upernet_r50_voc12aug_v2.0.py", "train",
                        voc.target) == len(train) + len(aug)

    ade = prepare_ade20k(archives["ade20k"], tmp_path, skip_checksum=True)
    assert ade.counts == {"training": NUM_TRAIN, "validation": NUM_VAL}
    config = "segformer/segformer_mit-b2_ade20k_v1.0.py"
    assert _dataset_len(config, "train", ade.target) == NUM_TRAIN
    assert _dataset_len(config, "val", ade.target) == NUM_VAL
    assert not (tmp_path / STAGING).exists()


def test_rerun_is_a_no_op(archives, tmp_path) -> None:
    prepare_voc(archives["voc"], tmp_path, skip_checksum=True)
    before = _snapshot(tmp_path)
    again = prepare_voc(archives["voc"], tmp_path, skip_checksum=True)
    assert again.extracted == 0 and again.skipped > 0 and _snapshot(tmp_path) == before


@pytest.mark.slow  # a subprocess CLI: not in make test-fast
def test_killed_prepare_resumes_to_identical_output(archives, tmp_path) -> None:
    reference = tmp_path / "reference"
    prepare_voc(archives["voc"], reference, skip_checksum=True)
    data = tmp_path / "interrupted"
    command = [sys.executable, "-m", "seglab.cli", "data", "prepare", "voc", "--archive",
               str(archives["voc"]), "--data-dir", str(data), "--skip-checksum"]
    proc = subprocess.Popen(command, env={**os.environ, THROTTLE_ENV: "0.2"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    staging = data / STAGING / "voc"
    deadline = time.monotonic() + 120
    while len([p for p in staging.rglob("*") if p.is_file()]) < 3:
        assert time.monotonic() < deadline and proc.poll() is None, "never got mid-way"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (data / "VOCdevkit").exists()  # nothing published mid-way
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "already there" in done.stdout and not (data / STAGING).exists()
    assert _snapshot(data) == _snapshot(reference)


def _rewrite_voc_tar(source: Path, target: Path, replace: dict[str, bytes]) -> Path:
    with tarfile.open(source) as src, tarfile.open(target, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            for suffix, new in replace.items():
                if member.name.endswith(suffix):
                    data = new
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    return target


def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(buffer, format="PNG")
    return buffer.getvalue()


def _first_mask_name(archive: Path) -> str:
    with tarfile.open(archive) as tar:
        return next(n for n in tar.getnames() if "/SegmentationClass/" in n).split("VOC2012/")[1]


@pytest.mark.parametrize("case", ["missing", "checksum", "corrupt", "rgb_mask", "label_200",
                                  "full_ade"])
def test_bad_input_gives_one_clear_error_and_leaves_data_alone(case, archives, tmp_path) -> None:
    data = tmp_path / "data"
    (data / "mine.txt").parent.mkdir()
    (data / "mine.txt").write_text("a user's file")
    before = _snapshot(data)
    archive, kind, options = archives["voc"], "voc", {"skip_checksum": True}
    if case == "missing":
        archive = tmp_path / "VOCtrainval_11-May-2012.tar"
        expected = ["not found", "--archive"]
    elif case == "checksum":
        options = {}
        expected = [str(archive), "6cd6e144f989b92b3379bac3b3de84fd", "--checksum"]
    elif case == "corrupt":
        archive = tmp_path / "truncated.tar"
        archive.write_bytes(archives["voc"].read_bytes()[: archives["voc"].stat().st_size // 2])
        expected = [str(archive), "corrupt or truncated", "download it again"]
    elif case in ("rgb_mask", "label_200"):
        name = _first_mask_name(archives["voc"])
        mask = np.zeros((8, 8), dtype=np.uint8)
        if case == "label_200":
            mask[0, 0] = 200
            new = _png(mask)
        else:
            new = _png(np.stack([mask + 128] * 3, axis=-1))
        archive = tmp_path / "edited.tar"
        _rewrite_voc_tar(archives["voc"], archive, {name: new})
        expected = [Path(name).name, "RGB" if case == "rgb_mask" else "[200]", "Fix:"]
    else:
        archive, kind, options = archives["full_ade"], "ade20k", {}
        expected = ["full ADE20K release", "ADEChallengeData2016.zip"]
    prepare = {"voc": prepare_voc, "ade20k": prepare_ade20k}[kind]
    with pytest.raises(UserError) as err:
        prepare(archive, data, **options)
    for text in expected:
        assert text in str(err.value)
    assert _snapshot(data) == before and sorted(p.name for p in data.iterdir()) == ["mine.txt"]


def test_sbd_needs_voc_first(archives, tmp_path) -> None:
    with pytest.raises(UserError, match="prepare voc"):
        prepare_sbd(archives["sbd"], tmp_path, skip_checksum=True)


# ---------------------------------------------------------------------------------------------
# Hostile and damaged archives: the published layouts with a member added, replaced or cut.


def _tar_plus(source: Path, target: Path, extra: list[tarfile.TarInfo]) -> Path:
    """``source`` copied (same compression), then ``extra`` members (empty bodies) appended,
    so the refusal comes after good members were staged."""
    with tarfile.open(source) as src, tarfile.open(
            target, "w:gz" if target.name.endswith("gz") else "w") as dst:
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member))
        for info in extra:
            dst.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return target


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    info.size = 1 if kind == tarfile.REGTYPE else 0
    return info


def _zip_plus(source: Path, target: Path, extra: list[tuple[zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w",
                                                         zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        for info, data in extra:
            dst.writestr(info, data, zipfile.ZIP_DEFLATED)
    return target


def _zip_replace(source: Path, target: Path, suffix: str, data: bytes) -> Path:
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w",
                                                         zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info, data if info.filename.endswith(suffix) else src.read(info))
    return target


def _first_name(archive: Path, part: str) -> str:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            return next(n for n in zf.namelist() if part in n)
    with tarfile.open(archive) as tar:
        return next(n for n in tar.getnames() if part in n)


def _sparse_member(archives: dict[str, Path], tmp_path: Path) -> Path:
    """GNU tar's sparse member: a few header bytes that unpack to 1 GiB of zeros."""
    folder = tmp_path / "sparse" / "VOCdevkit" / "VOC2012" / "JPEGImages"
    folder.mkdir(parents=True)
    with open(folder / "big.jpg", "wb") as big:
        big.truncate(1 << 30)
    target = tmp_path / "sparse.tar"
    target.write_bytes(archives["voc"].read_bytes())
    subprocess.run(["tar", "--sparse", "-rf", str(target), "-C", str(tmp_path / "sparse"),
                    "VOCdevkit/VOC2012/JPEGImages/big.jpg"], check=True)
    return target


def _corrupt_deflate(archives: dict[str, Path], tmp_path: Path) -> Path:
    """A member whose deflate stream is damaged in the middle (zlib.error when read)."""
    name = "ADEChallengeData2016/objectInfo150.txt"
    target = _zip_plus(archives["ade20k"], tmp_path / "deflate.zip",
                       [(zipfile.ZipInfo(name), bytes(range(256)) * 64)])
    with zipfile.ZipFile(target) as zf:
        info = zf.getinfo(name)
    data = bytearray(target.read_bytes())
    name_len, extra_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28],
                                         "little"), int.from_bytes(
        data[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    data[start + 2:start + 12] = b"\xff" * 10
    target.write_bytes(bytes(data))
    return target


def _cut_inside_a_header(archives: dict[str, Path], tmp_path: Path) -> Path:
    """A VOC tar cut 100 bytes into the header of a member half-way through: Python's tarfile
    then reads a shorter archive without complaint."""
    with tarfile.open(archives["voc"]) as tar:
        members = tar.getmembers()
    target = tmp_path / "cut.tar"
    target.write_bytes(archives["voc"].read_bytes()[:members[len(members) // 2].offset + 100])
    return target


def _damaged_mat(archives: dict[str, Path], tmp_path: Path) -> Path:
    name = _first_name(archives["sbd"], "/cls/")
    target = tmp_path / "benchmark.tgz"
    return _rewrite_voc_tar(archives["sbd"], target, {name: b"MATLAB 5.0 MAT-file" + bytes(200)})


HOSTILE = {  # case: (dataset, build(archives, tmp_path) -> archive, what the message says)
    "tar_dot_dot": ("voc", lambda a, t: _tar_plus(a["voc"], t / "x.tar", [
        _member("VOCdevkit/VOC2012/JPEGImages/../../../../../escaped.txt")]),
        "would be written outside the data folder"),
    "tar_absolute": ("voc", lambda a, t: _tar_plus(a["voc"], t / "x.tar", [
        _member(str(t / "escaped.txt"))]), "would be written outside the data folder"),
    "tar_symlink": ("voc", lambda a, t: _tar_plus(a["voc"], t / "x.tar", [
        _member("VOCdevkit/VOC2012/JPEGImages/a.jpg", tarfile.SYMTYPE, "/etc/passwd")]),
        "is a link (to '/etc/passwd')"),
    "tar_hardlink": ("voc", lambda a, t: _tar_plus(a["voc"], t / "x.tar", [
        _member("VOCdevkit/VOC2012/JPEGImages/a.jpg", tarfile.LNKTYPE, "../../etc/x")]),
        "is a link (to '../../etc/x')"),
    "tar_fifo": ("voc", lambda a, t: _tar_plus(a["voc"], t / "x.tar", [
        _member("VOCdevkit/VOC2012/JPEGImages/a.jpg", tarfile.FIFOTYPE)]),
        "is a device, FIFO or other special file"),
    "tar_sparse": ("voc", _sparse_member, "is a sparse file"),
    "tgz_dot_dot": ("sbd", lambda a, t: _tar_plus(a["sbd"], t / "benchmark.tgz", [
        _member("benchmark_RELEASE/dataset/cls/../../../../../escaped.txt")]),
        "would be written outside the data folder"),
    "zip_dot_dot": ("ade20k", lambda a, t: _zip_plus(a["ade20k"], t / "x.zip", [
        (zipfile.ZipInfo("ADEChallengeData2016/images/../../../../escaped.txt"), b"x")]),
        "would be written outside the data folder"),
    "zip_symlink": ("ade20k", lambda a, t: _zip_plus(a["ade20k"], t / "x.zip", [
        (_zip_link("ADEChallengeData2016/images/training/a.jpg"), b"/etc/passwd")]),
        "is a link or a special file"),
    "zip_bomb": ("ade20k", lambda a, t: _zip_plus(a["ade20k"], t / "x.zip", [
        (zipfile.ZipInfo("ADEChallengeData2016/images/training/bomb.jpg"), bytes(96 << 20))]),
        "declares 100,663,296 bytes, more than 4x the archive's size allows"),
    "zip_bad_deflate": ("ade20k", _corrupt_deflate, "corrupt or truncated at "
                        "ADEChallengeData2016/objectInfo150.txt"),
    "tar_cut_in_a_header": ("voc", _cut_inside_a_header, "the archive is truncated"),
    "truncated_mask": ("voc", lambda a, t: _rewrite_voc_tar(
        a["voc"], t / "x.tar", {_first_mask_name(a["voc"]): _png(np.zeros((8, 8), np.uint8))[:40]}),
        "not a readable VOC mask"),
    "damaged_sbd_mat": ("sbd", _damaged_mat, "not a readable SBD mask file"),
    "damaged_ade_mask": ("ade20k", lambda a, t: _zip_replace(
        a["ade20k"], t / "x.zip", _first_name(a["ade20k"], "annotations/training/"),
        b"\x89PNG\r\n\x1a\n" + bytes(50)), "not a readable ADE20K mask"),
}


def _zip_link(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_or_damaged_archive_is_refused_and_changes_nothing(case, archives,
                                                                     tmp_path) -> None:
    kind, build, expected = HOSTILE[case]
    data = tmp_path / "data"
    data.mkdir()
    (data / "mine.txt").write_text("a user's file")
    if kind == "sbd":  # VOC-aug is built on a prepared VOC
        prepare_voc(archives["voc"], data, skip_checksum=True)
    before = _snapshot(data)
    archive = build(archives, tmp_path)
    with pytest.raises(UserError, match=re.escape(expected)) as err:
        PREPARERS[kind](archive, data, skip_checksum=True)
    assert str(archive) in str(err.value)
    assert "Fix:" in str(err.value)
    assert _snapshot(data) == before and not (data / STAGING).exists()
    assert not list(tmp_path.rglob("escaped*"))  # nothing was written outside either


def test_a_decompression_bomb_mask_is_refused(archives, tmp_path, monkeypatch) -> None:
    """PIL refuses to decode an image of more pixels than its limit (here: lowered, so that
    the archive's ordinary masks stand in for a bomb)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(UserError, match="not a readable VOC mask .*decompression bomb"):
        prepare_voc(archives["voc"], tmp_path, skip_checksum=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_full_disk_is_reported_as_such_and_leaves_nothing(archives, tmp_path,
                                                            monkeypatch) -> None:
    from seglab.data import prepare

    class FillsUp(io.BytesIO):
        def write(self, block: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    real_open = open
    monkeypatch.setattr(prepare, "open", lambda path, mode="r", *a, **k: FillsUp()
                        if "w" in mode else real_open(path, mode, *a, **k), raising=False)
    with pytest.raises(UserError, match="no space left on device writing .*nothing was moved "
                       "into the data folder. Fix: free space there, or pass --data-dir"):
        prepare_voc(archives["voc"], tmp_path, skip_checksum=True)
    assert list(tmp_path.iterdir()) == []


def test_too_little_free_space_is_refused_before_extracting(archives, tmp_path,
                                                            monkeypatch) -> None:
    from seglab.data import prepare

    monkeypatch.setattr(prepare, "free_bytes", lambda path: 1000)
    with pytest.raises(UserError, match=r"extracting it needs about 0\.\d\d GiB in .* \(0\.00 "
                       r"GiB free\); nothing was written"):
        prepare_ade20k(archives["ade20k"], tmp_path, skip_checksum=True)
    assert list(tmp_path.iterdir()) == []
