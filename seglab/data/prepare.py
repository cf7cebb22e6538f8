"""Turn the archives a user downloaded into the layouts the configs read; offline.

Every preparation: (1) checks the archive exists and matches its published
checksum (or the one given); (2) streams the wanted members one by one into a
staging folder beside the target (no second full copy), each written to a
``.partial`` file and renamed, so a killed run resumes where it stopped; (3)
validates what it extracted (mask mode and label values); (4) only then moves
the files into place, refusing to replace a different existing file. An error
before step 4 removes the staging folder and leaves ``data/`` as it was.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

from seglab.errors import UserError

# Published checksums: VOC and SBD (md5, their download pages); ADE20K (sha1, as
# GluonCV and others verify ADEChallengeData2016.zip).
PUBLISHED = {
    "voc": ("md5", "6cd6e144f989b92b3379bac3b3de84fd"),
    "sbd": ("md5", "82b4d87ceb2ed10f6038a1cba92111cb"),
    "ade20k": ("sha1", "219e1696abb36c8ba3a3afe7fb2f4b4606a897c7"),
}
# Counts the published archives must yield.
EXPECTED_COUNTS = {"voc": {"train": 1464, "val": 1449}, "sbd": {"trainaug": 10582},
                   "ade20k": {"training": 20210, "validation": 2000}}
VOC_LABELS = set(range(21)) | {255}
VOC_LABELS_TEXT = "0..20 = background + 20 classes, 255 = ignore"
ADE_LABELS = set(range(151))
STAGING = ".seglab-staging"
# Test seam: seconds to sleep per extracted member, so a test can kill a run mid-way.
THROTTLE_ENV = "SEGLAB_PREPARE_THROTTLE_S"


@dataclass
class PrepareReport:
    target: Path
    extracted: int
    skipped: int
    counts: dict[str, int]


def file_digest(path: Path, algo: str) -> str:
    digest = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_archive(path: Path, kind: str, checksum: str | None, skip: bool) -> bool:
    """Raise unless ``path`` exists and matches; return whether it is the published file."""
    if not path.is_file():
        raise UserError(f"archive {str(path)!r} not found. Fix: download it and pass its path "
                        "with --archive (seglab never downloads datasets).")
    if skip:
        return False
    algo, published = PUBLISHED[kind]
    expected = checksum or published
    actual = file_digest(path, algo)
    if actual != expected:
        raise UserError(
            f"{path}: {algo} {actual} does not match the expected {expected}"
            f"{' (published)' if not checksum else ''}. The download is incomplete or a "
            "different file. Fix: download it again; or, if you know this file is right, pass "
            f"--checksum {actual} (or --skip-checksum).")
    return actual == published


def _members(archive: Path) -> Iterator[tuple[str, Callable[[], IO[bytes]]]]:
    """(name, opener) for every regular file, reading the archive front to back."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    if not info.is_dir():
                        yield info.filename, lambda info=info: zf.open(info)
            return
        with tarfile.open(archive, mode="r|*") as tar:
            for member in tar:
                if member.isfile():
                    yield member.name, lambda member=member: tar.extractfile(member)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as err:
        raise UserError(f"{archive}: the archive is corrupt or truncated ({err}). Fix: "
                        "download it again.") from err


def _write_atomic(source: IO[bytes], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with open(partial, "wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)
    partial.replace(target)


def stage(archive: Path, select: Callable[[str], str | None], staging: Path,
          final: Path | None = None) -> tuple[int, int]:
    """Stream selected members into ``staging``; skip those already staged or in place."""
    extracted = skipped = 0
    throttle = float(os.environ.get(THROTTLE_ENV, "0"))
    for name, opener in _members(archive):
        rel = select(name)
        if rel is None:
            continue
        if (staging / rel).exists() or (final is not None and (final / rel).exists()):
            skipped += 1
            continue
        try:
            with opener() as source:
                _write_atomic(source, staging / rel)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as err:
            raise UserError(f"{archive}: the archive is corrupt or truncated at {name} "
                            f"({err}). Fix: download it again.") from err
        extracted += 1
        if throttle:
            time.sleep(throttle)
    return extracted, skipped


def check_masks(folder: Path, allowed: set[int], allowed_text: str, what: str) -> None:
    """Index masks only, with labels the dataset defines; name the first offender."""
    for mask_path in sorted(folder.rglob("*.png")):
        with Image.open(mask_path) as mask:
            if mask.mode not in ("P", "L"):
                raise UserError(
                    f"{mask_path}: mask mode {mask.mode} (colour); {what} masks must hold class "
                    "indices (mode P or L). Fix: map each colour to its class index (e.g. "
                    "with the dataset's palette) and save a single-channel PNG.")
            values = set(np.unique(np.asarray(mask)).tolist())
        if bad := sorted(values - allowed):
            raise UserError(
                f"{mask_path}: label value(s) {bad} not valid for {what} (allowed: "
                f"{allowed_text}). Fix: remap them to a class index or to the ignore value.")


def publish(staging: Path, final: Path) -> None:
    """Move staged files into place; refuse (moving nothing) if one would replace a
    different existing file."""
    staged = [p for p in staging.rglob("*") if p.is_file() and not p.name.endswith(".partial")]
    for path in staged:
        target = final / path.relative_to(staging)
        if target.exists() and target.read_bytes() != path.read_bytes():
            raise UserError(f"{target} exists with different content; seglab does not "
                            "replace your files. Fix: move it away and run again.")
    for path in staged:
        target = final / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        path.replace(target)
    _discard(staging)


def _discard(staging: Path) -> None:
    """Remove seglab's staging folder (and its parent when empty): data/ as it was."""
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.parent.rmdir()
    except OSError:
        pass  # other preparations staged there, or it is gone


def _run(kind: str, archive: Path, data_dir: Path, final: Path,
         select: Callable[[str], str | None], checksum: str | None, skip_checksum: bool,
         validate: Callable[[Path], None]) -> tuple[int, int, bool]:
    published = verify_archive(archive, kind, checksum, skip_checksum)
    staging = data_dir / STAGING / kind
    try:
        extracted, skipped = stage(archive, select, staging, final)
        validate(staging)
    except UserError:
        _discard(staging)
        raise
    publish(staging, final)
    return extracted, skipped, published


def _assert_counts(kind: str, counts: dict[str, int], published: bool) -> None:
    if published and counts != EXPECTED_COUNTS[kind]:
        raise UserError(f"{kind}: expected {EXPECTED_COUNTS[kind]} from the published archive, "
                        f"got {counts}")


def prepare_voc(archive: Path, data_dir: Path, checksum: str | None = None,
                skip_checksum: bool = False) -> PrepareReport:
    """VOCtrainval_11-May-2012.tar -> data/VOCdevkit/VOC2012 (images, masks, split lists)."""
    keep = ("JPEGImages/", "SegmentationClass/", "ImageSets/Segmentation/")

    def select(name: str) -> str | None:
        marker = "VOCdevkit/VOC2012/"
        if marker not in name:
            return None
        rel = name[name.index(marker) + len(marker):]
        return rel if rel.startswith(keep) else None

    final = data_dir / "VOCdevkit" / "VOC2012"
    extracted, skipped, published = _run(
        "voc", archive, data_dir, final, select, checksum, skip_checksum,
        lambda staging: check_masks(staging / "SegmentationClass", VOC_LABELS, VOC_LABELS_TEXT,
                                    "VOC"))
    sets = final / "ImageSets" / "Segmentation"
    counts = {s: len((sets / f"{s}.txt").read_text().split()) for s in ("train", "val")}
    _assert_counts("voc", counts, published)
    return PrepareReport(final, extracted, skipped, counts)


def _convert_mat(paths: tuple[Path, Path]) -> None:
    """SBD ``GTcls.Segmentation`` (MATLAB v5) -> single-channel PNG, as mmseg's voc_aug.py."""
    from scipy.io import loadmat

    mat_path, png_path = paths
    if png_path.exists():
        return
    mask = loadmat(mat_path)["GTcls"][0]["Segmentation"][0].astype(np.uint8)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    partial = png_path.with_name(png_path.name + ".partial")
    Image.fromarray(mask).save(partial, format="PNG")
    partial.replace(png_path)


def _read_list(path: Path) -> list[str]:
    return path.read_text().split()


def prepare_sbd(archive: Path, data_dir: Path, checksum: str | None = None,
                skip_checksum: bool = False, nproc: int = 1) -> PrepareReport:
    """benchmark.tgz (SBD) -> VOC2012/SegmentationClassAug + aug.txt/trainaug.txt (VOC-aug)."""
    voc = data_dir / "VOCdevkit" / "VOC2012"
    sets = voc / "ImageSets" / "Segmentation"
    if not (sets / "train.txt").exists() or not (sets / "val.txt").exists():
        raise UserError(f"{sets}/train.txt and val.txt are missing: VOC-aug is built on VOC "
                        "2012. Fix: run `seglab data prepare voc --archive ...` first.")
    published = verify_archive(archive, "sbd", checksum, skip_checksum)
    staging = data_dir / STAGING / "sbd"
    raw, out = staging / "raw", staging / "out"

    def select(name: str) -> str | None:
        marker = "benchmark_RELEASE/dataset/"
        if marker not in name:
            return None
        rel = name[name.index(marker) + len(marker):]
        return rel if rel.startswith("cls/") or rel in ("train.txt", "val.txt") else None

    try:
        extracted, skipped = stage(archive, select, raw)
        mats = sorted((raw / "cls").glob("*.mat"))
        tasks = [(m, out / "SegmentationClassAug" / f"{m.stem}.png") for m in mats
                 if not (voc / "SegmentationClassAug" / f"{m.stem}.png").exists()]
        _convert_all(tasks, nproc)
        check_masks(out / "SegmentationClassAug", VOC_LABELS, VOC_LABELS_TEXT, "SBD")
        voc_train, voc_val = _read_list(sets / "train.txt"), _read_list(sets / "val.txt")
        sbd = _read_list(raw / "train.txt") + _read_list(raw / "val.txt")
        aug = sorted(set(sbd) - set(voc_train) - set(voc_val))
        trainaug = sorted(set(voc_train + sbd) - set(voc_val))
        assert not set(trainaug) & set(voc_val), "a validation image leaked into training"
        out_sets = out / "ImageSets" / "Segmentation"
        out_sets.mkdir(parents=True, exist_ok=True)
        (out_sets / "aug.txt").write_text("".join(f"{i}\n" for i in aug))
        (out_sets / "trainaug.txt").write_text("".join(f"{i}\n" for i in trainaug))
    except UserError:
        _discard(staging)
        raise
    publish(out, voc)
    _discard(staging)
    counts = {"trainaug": len(trainaug)}
    _assert_counts("sbd", counts, published)
    return PrepareReport(voc, extracted, skipped, {**counts, "aug": len(aug)})


def _convert_all(tasks: list[tuple[Path, Path]], nproc: int) -> None:
    if not tasks:
        return
    from mmengine.utils import track_parallel_progress, track_progress

    if nproc > 1:
        track_parallel_progress(_convert_mat, tasks, nproc=nproc)
    else:
        track_progress(_convert_mat, tasks)


FULL_ADE_MARKERS = ("ADE20K_2021_17_01/", "index_ade20k.pkl", "index_ade20k.mat")


def full_ade_error(archive: Path) -> UserError:
    return UserError(
        f"{archive} is the full ADE20K release (ADE20K_2021_17_01: per-image RGB-encoded "
        "masks over thousands of object classes, index_ade20k.pkl), not the 150-class scene-"
        "parsing benchmark the configs train on. Renaming it would train on the wrong labels. "
        "Fix: download ADEChallengeData2016.zip (20,210 training / 2,000 validation images, "
        "150 classes) and pass that.")


def prepare_ade20k(archive: Path, data_dir: Path, checksum: str | None = None,
                   skip_checksum: bool = False) -> PrepareReport:
    """ADEChallengeData2016.zip -> data/ade/ADEChallengeData2016."""
    if archive.is_file() and zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:  # the central directory: names without reading
            if any(m in n for n in zf.namelist() for m in FULL_ADE_MARKERS):
                raise full_ade_error(archive)

    def select(name: str) -> str | None:
        if any(m in name for m in FULL_ADE_MARKERS):
            raise full_ade_error(archive)
        marker = "ADEChallengeData2016/"
        if marker not in name:
            return None
        rel = name[name.index(marker) + len(marker):]
        return rel if rel.startswith(("images/", "annotations/")) or "/" not in rel else None

    final = data_dir / "ade" / "ADEChallengeData2016"
    extracted, skipped, published = _run(
        "ade20k", archive, data_dir, final, select, checksum, skip_checksum,
        lambda staging: check_masks(staging / "annotations", ADE_LABELS,
                                    "0 = other, 1..150 = classes", "ADE20K"))
    counts = {split: len(list((final / "images" / split).glob("*.jpg")))
              for split in ("training", "validation")}
    _assert_counts("ade20k", counts, published)
    return PrepareReport(final, extracted, skipped, counts)


PREPARERS = {"voc": prepare_voc, "sbd": prepare_sbd, "ade20k": prepare_ade20k}
