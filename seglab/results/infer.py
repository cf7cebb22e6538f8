"""``seglab infer CONFIG CKPT IMAGES... --out DIR``: overlays and index masks for any images.

What the seeds did with mmseg's ``demo/image_demo.py`` one image at a time:
folders and many files, batched, with a progress bar. For each image
``DIR/<name>.png`` holds the class index of every pixel (0..C-1, as the model
numbers classes) and ``DIR/<name>_overlay.jpg`` the colour overlay. Existing
files are never replaced unless ``--overwrite``. A folder contributes its files with an
image suffix (others, a README or notes, are left alone). A file that is not a readable
image (empty, or not an image whatever its name) is skipped: the others are still
predicted and written, the skipped ones named one a line, and the command then exits 2
(``ImagesSkipped``, a ``UserError``), so that a script sees that outputs are missing.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seglab.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
OVERLAY_ALPHA = 0.5


def load_model(config: str | Path, checkpoint: str | Path, device: str | None = None) -> Any:
    """The model of ``config`` with ``checkpoint``'s weights, ready for inference."""
    import torch
    from mmseg.apis import init_model

    from seglab import register  # noqa: F401  (weights_only loader)
    from seglab.config.loading import load_config

    if not Path(checkpoint).is_file():
        raise UserError(f"checkpoint {str(checkpoint)!r} not found")
    cfg = load_config(config)
    device = device or ("cuda:0" if torch.cuda.is_available() else "cpu")
    return init_model(cfg, str(checkpoint), device=device)


def predict(model: Any, images: Sequence[str | np.ndarray],
            batch_size: int = 4) -> Iterator[np.ndarray]:
    """Class-index maps (H x W, int64) at each image's own size, in order."""
    from mmseg.apis import inference_model

    for start in range(0, len(images), batch_size):
        batch = list(images[start:start + batch_size])
        try:
            samples = inference_model(model, batch)
        except AssertionError:  # mmseg stacks a test batch only when sizes agree
            samples = [inference_model(model, image) for image in batch]
        for sample in samples:
            yield sample.pred_sem_seg.data.squeeze(0).cpu().numpy()


def palette_of(model: Any, num_classes: int) -> np.ndarray:
    """The dataset's palette from the checkpoint, or a fixed one for unknown datasets."""
    palette = (getattr(model, "dataset_meta", None) or {}).get("palette")
    if palette is not None and len(palette) >= num_classes:
        return np.asarray(palette, dtype=np.uint8)
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(max(num_classes, 256), 3), dtype=np.uint8)


def colorize(mask: np.ndarray, palette: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Class indices -> RGB; ignored (or unknown) pixels are black."""
    out = np.zeros((*mask.shape, 3), dtype=np.uint8)
    valid = (mask != ignore_index) & (mask < len(palette))
    out[valid] = palette[mask[valid]]
    return out


def overlay(image: np.ndarray, mask: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Blend the colourised mask over an RGB image."""
    colours = colorize(mask, palette).astype(np.float32)
    return (image * (1 - OVERLAY_ALPHA) + colours * OVERLAY_ALPHA).astype(np.uint8)


class UnreadableImage(Exception):
    """A file mmseg's image loader makes no pixels of; the message says why."""


class ImagesSkipped(UserError):
    """``run_infer`` wrote the outputs of the readable images and skipped the others."""

    def __init__(self, message: str, written: list[Path], skipped: list[Path]) -> None:
        super().__init__(message)
        self.written, self.skipped = written, skipped


def read_bgr(path: str | Path) -> np.ndarray:
    """The pixels mmseg's ``LoadImageFromFile`` makes of ``path`` (OpenCV, 3 channels,
    BGR, EXIF orientation applied); ``UnreadableImage`` where it would fail on the file.
    Decoded once here and given to the model as an array, so the prediction, the overlay
    and the check that the file is an image all see the same pixels."""
    import cv2
    import mmcv

    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise UnreadableImage(f"cannot be read: {err.strerror or err}") from err
    if not data:
        raise UnreadableImage("empty file, 0 bytes")
    try:
        image = mmcv.imfrombytes(data, flag="color", channel_order="bgr", backend="cv2")
    except cv2.error as err:  # imdecode refuses some headers outright instead of None
        raise UnreadableImage(f"OpenCV: {str(err).strip().splitlines()[-1]}") from err
    if image is None:
        raise UnreadableImage(f"OpenCV decodes no image from its {len(data):,} bytes")
    return image


def read_rgb(path: str | Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def collect_images(inputs: Sequence[str]) -> list[Path]:
    """Files as given; folders contribute their images (sorted)."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            paths.append(path)
        else:
            raise UserError(f"{item}: no such image or folder")
    if not paths:
        raise UserError(f"no images found in {', '.join(inputs)} (looked for "
                        f"{', '.join(IMAGE_SUFFIXES)})")
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        dup = sorted({s for s in stems if stems.count(s) > 1})
        raise UserError(f"several images are named {dup[:3]}: their outputs would overwrite "
                        "each other. Fix: run them separately with different --out folders.")
    return paths


def _readable(paths: Sequence[Path], skipped: list[tuple[Path, str]],
              ) -> Iterator[tuple[Path, np.ndarray]]:
    """``(path, BGR pixels)`` of each readable image; the others go to ``skipped``."""
    for path in paths:
        try:
            image = read_bgr(path)
        except UnreadableImage as why:
            skipped.append((path, str(why)))
            continue
        yield path, image


def _batches(items: Iterable[tuple[Path, np.ndarray]], size: int,
             ) -> Iterator[list[tuple[Path, np.ndarray]]]:
    """Full batches of readable images (a skipped file leaves no gap in one)."""
    items = iter(items)
    while batch := list(itertools.islice(items, size)):
        yield batch


def _advance(progress: Any, done: int) -> None:
    """Move mmengine's ``ProgressBar`` to ``done`` files (written or skipped)."""
    if done > progress.completed:
        progress.update(done - progress.completed)


def run_infer(config: str, checkpoint: str, inputs: Sequence[str], out_dir: str,
              batch_size: int = 4, overwrite: bool = False) -> list[Path]:
    """Write an index mask and an overlay per image; returns the masks written.

    Raises ``ImagesSkipped`` after writing the others when some files are not readable
    images (each named on stderr)."""
    from mmengine.utils import ProgressBar
    from PIL import Image

    paths = collect_images(inputs)
    out = Path(out_dir)
    targets = {p: (out / f"{p.stem}.png", out / f"{p.stem}_overlay.jpg") for p in paths}
    clash = [str(t) for pair in targets.values() for t in pair if t.exists()]
    if clash and not overwrite:
        raise UserError(f"{len(clash)} output file(s) already exist (e.g. {clash[0]}). Fix: "
                        "another --out folder, or --overwrite.")
    model = load_model(config, checkpoint)  # after the cheap checks
    out.mkdir(parents=True, exist_ok=True)
    progress = ProgressBar(len(paths))
    skipped: list[tuple[Path, str]] = []
    written: list[Path] = []
    palette = None
    for batch in _batches(_readable(paths, skipped), batch_size):
        masks = predict(model, [image for _, image in batch], batch_size)
        for (path, image), mask in zip(batch, masks, strict=True):
            mask_path, overlay_path = targets[path]
            palette = palette if palette is not None else palette_of(model, int(mask.max()) + 1)
            Image.fromarray(mask.astype(np.uint8 if mask.max() < 256 else np.uint16)).save(
                mask_path)
            Image.fromarray(overlay(image[..., ::-1], mask, palette)).save(overlay_path,
                                                                          quality=92)
            written.append(mask_path)
        _advance(progress, len(written) + len(skipped))
    _advance(progress, len(paths))  # files skipped after the last batch
    print(f"\nseglab infer: {len(written)} image(s) -> {out} (<name>.png class indices, "
          "<name>_overlay.jpg)")
    if skipped:
        # after the progress bar, which owns the terminal line while it runs
        for path, why in skipped:
            print(f"seglab infer: skipped {path}: not a readable image ({why})",
                  file=sys.stderr)
        raise ImagesSkipped(
            f"{len(skipped)} of {len(paths)} image file(s) skipped, not readable images "
            f"(listed above); the other {len(written)} were written to {out}. Fix: replace "
            "or delete the skipped files; to add their outputs later, run infer on just "
            "them with the same --out.", written, [path for path, _ in skipped])
    return written
