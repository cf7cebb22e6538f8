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
import stat
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

import numpy as np
from PIL import Image

from seglab.errors import DISK_FULL, UserError, free_bytes, gib

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
VOC_LISTS = ("ImageSets/Segmentation/train.txt", "ImageSets/Segmentation/val.txt")
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


# What the published archives hold: folders and plain files, each named inside the archive's
# own tree, unpacking to about their own size (JPEG, PNG and MATLAB files compress little).
# Anything else is refused before it is written: a member named "../x" or "/x" (it would land
# outside the data folder), a link, a device or FIFO, a sparse tar member (a few bytes that
# unpack to gigabytes of zeros), and more bytes than MAX_EXPANSION times the archive's size.
MAX_EXPANSION = 4
EXPANSION_ALLOWANCE = 64 << 20  # small test and hand-made archives
# What reading a damaged archive raises (gzip: BadGzipFile is an OSError; deflate: zlib.error)
READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error)


@dataclass(frozen=True)
class Member:
    """A regular file of an archive: its name, its declared size, how to read it."""

    name: str
    size: int
    open: Callable[[], IO[bytes]]


def _refuse(archive: Path, name: str, why: str) -> UserError:
    return UserError(
        f"{archive}: refused: member {name!r} {why}. The published archive holds only folders "
        "and plain files inside its own tree, so this one was altered or is not the dataset; "
        "nothing was written to the data folder. Fix: download the archive again from the "
        "dataset's page.")


def _check_name(archive: Path, name: str) -> None:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (parts and ":" in parts[0]) or ".." in parts:
        raise _refuse(archive, name, "would be written outside the data folder")


def _zip_members(archive: Path, zf: zipfile.ZipFile) -> Iterator[Member]:
    for info in zf.infolist():
        _check_name(archive, info.filename)
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
            raise _refuse(archive, info.filename, "is a link or a special file, not a file")
        if not info.is_dir():
            yield Member(info.filename, info.file_size, lambda info=info: zf.open(info))


def _tar_members(archive: Path, tar: tarfile.TarFile) -> Iterator[Member]:
    for member in tar:
        _check_name(archive, member.name)
        if member.issparse():
            raise _refuse(archive, member.name, "is a sparse file (it unpacks to more bytes "
                          "than the archive holds)")
        if member.issym() or member.islnk():
            raise _refuse(archive, member.name, f"is a link (to {member.linkname!r})")
        if not (member.isfile() or member.isdir()):
            raise _refuse(archive, member.name, "is a device, FIFO or other special file")
        if member.isfile():
            yield Member(member.name, member.size,
                         lambda member=member: tar.extractfile(member))


def _members(archive: Path) -> Iterator[Member]:
    """Every regular file, reading the archive front to back; refuses what is not safe."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                yield from _zip_members(archive, zf)
            return
        with tarfile.open(archive, mode="r|*") as tar:
            yield from _tar_members(archive, tar)
    except READ_ERRORS as err:
        raise _corrupt(archive, err) from err


def extraction_limit(archive: Path) -> int:
    """The most bytes seglab extracts from ``archive``: a stated multiple of its size."""
    return MAX_EXPANSION * archive.stat().st_size + EXPANSION_ALLOWANCE


def _space_needed(archive: Path, select: Callable[[str], str | None]) -> int:
    """What the wanted members take: exact for a zip (its central directory), the archive's
    size for a tar (an uncompressed tar holds no more; a compressed one about that much)."""
    if zipfile.is_zipfile(archive):
        try:
            with zipfile.ZipFile(archive) as zf:
                return sum(i.file_size for i in zf.infolist()
                           if not i.is_dir() and select(i.filename) is not None)
        except READ_ERRORS:
            return 0  # reported as corrupt when it is read
    return archive.stat().st_size


def _check_free_space(archive: Path, select: Callable[[str], str | None],
                      staging: Path) -> None:
    needed, free = _space_needed(archive, select), free_bytes(staging)
    if free is not None and needed > free:
        raise UserError(
            f"{archive}: extracting it needs about {gib(needed)} in {staging.parent.parent} "
            f"({gib(free)} free); nothing was written. Fix: free space there, or pass "
            "--data-dir on a bigger disk.")


def _disk_full(target: Path, err: OSError) -> UserError:
    free = free_bytes(target)
    return UserError(
        f"no space left on device writing {target}"
        + (f" ({gib(free)} free)" if free is not None else "") + "; the files extracted so "
        "far were removed and nothing was moved into the data folder. Fix: free space there, "
        "or pass --data-dir on a bigger disk, then run the same command again.")


def _write_atomic(archive: Path, member: Member, target: Path, budget: list[int]) -> None:
    """Copy one member to ``target`` via ``.partial``; ``budget[0]``: bytes still allowed."""
    if member.size > budget[0]:
        raise _refuse(archive, member.name, f"declares {member.size:,} bytes, more than "
                      f"{MAX_EXPANSION}x the archive's size allows")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        source = member.open()
    except READ_ERRORS as err:
        raise _corrupt(archive, err, member.name) from err
    with source, open(partial, "wb") as out:
        while True:
            try:
                block = source.read(1 << 20)
            except READ_ERRORS as err:
                raise _corrupt(archive, err, member.name) from err
            if not block:
                break
            budget[0] -= len(block)
            if budget[0] < 0:  # more than it declared (a lying header) or than the cap
                raise _refuse(archive, member.name, "unpacks to more bytes than "
                              f"{MAX_EXPANSION}x the archive's size")
            try:
                out.write(block)
            except OSError as err:
                if err.errno in DISK_FULL:
                    raise _disk_full(target, err) from err
                raise
    partial.replace(target)


def _corrupt(archive: Path, err: BaseException, at: str | None = None) -> UserError:
    where = f" at {at}" if at else ""
    return UserError(f"{archive}: the archive is corrupt or truncated{where} ({err}). "
                     "Fix: download it again.")


def stage(archive: Path, select: Callable[[str], str | None], staging: Path,
          final: Path | None = None) -> tuple[int, int]:
    """Stream selected members into ``staging``; skip those already staged or in place."""
    extracted = skipped = 0
    throttle = float(os.environ.get(THROTTLE_ENV, "0"))
    _check_free_space(archive, select, staging)
    budget = [extraction_limit(archive)]
    for member in _members(archive):
        rel = select(member.name)
        if rel is None:
            continue
        if (staging / rel).exists() or (final is not None and (final / rel).exists()):
            skipped += 1
            continue
        _write_atomic(archive, member, staging / rel, budget)
        extracted += 1
        if throttle:
            time.sleep(throttle)
    return extracted, skipped


def check_masks(folder: Path, allowed: set[int], allowed_text: str, what: str,
                archive: Path | None = None) -> None:
    """Index masks only, with labels the dataset defines; name the first offender (as the
    member of ``archive`` it came from, when given: the staged copy is removed)."""
    for mask_path in sorted(folder.rglob("*.png")):
        where = (f"{archive}: member {mask_path.relative_to(folder.parent)}" if archive
                 else str(mask_path))
        try:
            with Image.open(mask_path) as mask:
                if mask.mode not in ("P", "L"):
                    raise UserError(
                        f"{where}: mask mode {mask.mode} (colour); {what} masks must hold "
                        "class indices (mode P or L). Fix: map each colour to its class index "
                        "(e.g. with the dataset's palette) and save a single-channel PNG.")
                values = set(np.unique(np.asarray(mask)).tolist())
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            # truncated, not a PNG, or more pixels than PIL decodes (a decompression bomb)
            raise UserError(f"{where}: not a readable {what} mask ({err}); the archive is "
                            "damaged or was altered. Fix: download it again.") from err
        if bad := sorted(values - allowed):
            raise UserError(
                f"{where}: label value(s) {bad} not valid for {what} (allowed: "
                f"{allowed_text}). Fix: remap them to a class index or to the ignore value.")


def check_complete(archive: Path, staging: Path, final: Path, lists: tuple[str, ...],
                   files: tuple[str, ...]) -> None:
    """Every id the split ``lists`` name has each of ``files`` (``{}`` is the id), staged now
    or in place from before: a tar cut inside a header reads as a shorter archive."""
    def where(rel: str) -> Path | None:
        return next((root / rel for root in (staging, final) if (root / rel).is_file()), None)

    for rel_list in lists:
        found = where(rel_list)
        if found is None:
            raise UserError(f"{archive}: holds no {rel_list}; the archive is truncated or not "
                            "the dataset's. Fix: download it again.")
        ids = found.read_text().split()
        missing = [pattern.format(i) for i in ids for pattern in files
                   if where(pattern.format(i)) is None]
        if missing:
            raise UserError(f"{archive}: {len(missing)} file(s) named by {rel_list} are not in "
                            f"it (first: {missing[0]}); the archive is truncated. Fix: download "
                            "it again.")


def check_pairs(archive: Path, staging: Path, images: str, masks: str) -> None:
    """Each staged image has its mask and each mask its image (ADE20K lists no splits)."""
    image_stems = {p.relative_to(staging / images).with_suffix("")
                   for p in (staging / images).rglob("*.jpg")}
    mask_stems = {p.relative_to(staging / masks).with_suffix("")
                  for p in (staging / masks).rglob("*.png")}
    if odd := sorted(image_stems ^ mask_stems):
        raise UserError(f"{archive}: {len(odd)} image(s) without their mask or masks without "
                        f"their image (first: {odd[0]}); the archive is truncated. Fix: "
                        "download it again.")


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
        lambda staging: (
            check_complete(archive, staging, final, VOC_LISTS,
                           ("JPEGImages/{}.jpg", "SegmentationClass/{}.png")),
            check_masks(staging / "SegmentationClass", VOC_LABELS, VOC_LABELS_TEXT, "VOC",
                        archive)))
    sets = final / "ImageSets" / "Segmentation"
    counts = {s: len((sets / f"{s}.txt").read_text().split()) for s in ("train", "val")}
    _assert_counts("voc", counts, published)
    return PrepareReport(final, extracted, skipped, counts)


def _convert_mat(paths: tuple[Path, Path, Path]) -> None:
    """SBD ``GTcls.Segmentation`` (MATLAB v5) -> single-channel PNG, as mmseg's voc_aug.py
    (``paths``: the archive it came from, the staged ``.mat``, the PNG to write)."""
    from scipy.io import loadmat

    archive, mat_path, png_path = paths
    if png_path.exists():
        return
    try:
        mask = loadmat(mat_path)["GTcls"][0]["Segmentation"][0].astype(np.uint8)
    except Exception as err:  # noqa: BLE001 (scipy raises many types for a damaged file)
        raise UserError(f"{archive}: member cls/{mat_path.name}: not a readable SBD mask file "
                        f"(MATLAB GTcls.Segmentation): {type(err).__name__}: {err}. The archive "
                        "is damaged or was altered. Fix: download it again.") from None
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
        check_complete(archive, raw, raw, ("train.txt", "val.txt"), ("cls/{}.mat",))
        mats = sorted((raw / "cls").glob("*.mat"))
        tasks = [(archive, m, out / "SegmentationClassAug" / f"{m.stem}.png") for m in mats
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


def _convert_all(tasks: list[tuple[Path, Path, Path]], nproc: int) -> None:
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
        lambda staging: (
            check_pairs(archive, staging, "images", "annotations"),
            check_masks(staging / "annotations", ADE_LABELS, "0 = other, 1..150 = classes",
                        "ADE20K", archive)))
    counts = {split: len(list((final / "images" / split).glob("*.jpg")))
              for split in ("training", "validation")}
    _assert_counts("ade20k", counts, published)
    return PrepareReport(final, extracted, skipped, counts)


PREPARERS = {"voc": prepare_voc, "sbd": prepare_sbd, "ade20k": prepare_ade20k}
