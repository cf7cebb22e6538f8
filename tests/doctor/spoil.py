"""Spoil one file of a VOC-layout dataset the ways real datasets get spoiled.

Each spoiler takes the dataset root and an image id, breaks one file and returns
that file and the data doctor's rule for it. Used on a copy of a generated dataset
(``copy_dataset``), never on a session fixture. ``count_decodes`` records which
files the data check decodes (the rest came from its cache).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from seglab.doctor import file_check


def _mask(root: Path, image_id: str) -> Path:
    return root / "SegmentationClass" / f"{image_id}.png"


def _image(root: Path, image_id: str) -> Path:
    return root / "JPEGImages" / f"{image_id}.jpg"


def label_out_of_range(root: Path, image_id: str) -> tuple[Path, str]:
    """Label 200 in a 21-class VOC mask."""
    with Image.open(_mask(root, image_id)) as mask:
        mask.load()
    mask.putpixel((0, 0), 200)
    mask.save(_mask(root, image_id))
    return _mask(root, image_id), "label-range"


def half_size_mask(root: Path, image_id: str) -> tuple[Path, str]:
    mask = Image.open(_mask(root, image_id))
    mask.resize((mask.width // 2, mask.height // 2), Image.NEAREST).save(_mask(root, image_id))
    return _mask(root, image_id), "size"


def rgb_mask(root: Path, image_id: str) -> tuple[Path, str]:
    Image.open(_mask(root, image_id)).convert("RGB").save(_mask(root, image_id))
    return _mask(root, image_id), "mask-mode"


def truncated_jpeg(root: Path, image_id: str) -> tuple[Path, str]:
    """The header and half the scan: an interrupted copy."""
    path = _image(root, image_id)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path, "unreadable"


def empty_jpeg(root: Path, image_id: str) -> tuple[Path, str]:
    _image(root, image_id).write_bytes(b"")
    return _image(root, image_id), "unreadable"


def looping_image(root: Path, image_id: str) -> tuple[Path, str]:
    """The image a link to itself (listed in the split, so never listed from the folder)."""
    _image(root, image_id).unlink()
    _image(root, image_id).symlink_to(_image(root, image_id).name)
    return _image(root, image_id), "unreadable"


def missing_mask(root: Path, image_id: str) -> tuple[Path, str]:
    _mask(root, image_id).unlink()
    return _mask(root, image_id), "pairing"


SPOILERS: dict[str, Callable[[Path, str], tuple[Path, str]]] = {
    f.__name__: f for f in (label_out_of_range, half_size_mask, rgb_mask, truncated_jpeg,
                            empty_jpeg, looping_image, missing_mask)}


def copy_dataset(root: Path, dest: Path) -> Path:
    """A private copy of a generated dataset, without the data check's cache."""
    shutil.copytree(root, dest, ignore=shutil.ignore_patterns(file_check.CACHE_NAME))
    return dest


def first_id(root: Path, split: str = "train") -> str:
    return (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()[0]


def count_decodes(monkeypatch) -> list[str]:
    """The paths the data check decodes from now on (in this process), in order."""
    decoded: list[str] = []
    real = file_check.examine_file

    def counted(path: str, kind: str) -> file_check.Facts:
        decoded.append(path)
        return real(path, kind)

    monkeypatch.setattr(file_check, "examine_file", counted)
    return decoded
