"""``seglab infer CONFIG CKPT IMAGES... --out DIR``: overlays and index masks for any images.

What the seeds did with mmseg's ``demo/image_demo.py`` one image at a time:
folders and many files, batched, with a progress bar. For each image
``DIR/<name>.png`` holds the class index of every pixel (0..C-1, as the model
numbers classes) and ``DIR/<name>_overlay.jpg`` the colour overlay. Existing
files are never replaced unless ``--overwrite``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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


def run_infer(config: str, checkpoint: str, inputs: Sequence[str], out_dir: str,
              batch_size: int = 4, overwrite: bool = False) -> list[Path]:
    """Write an index mask and an overlay per image; returns the masks written."""
    from mmengine.utils import ProgressBar
    from PIL import Image

    paths = collect_images(inputs)
    out = Path(out_dir)
    targets = [(out / f"{p.stem}.png", out / f"{p.stem}_overlay.jpg") for p in paths]
    clash = [str(t) for pair in targets for t in pair if t.exists()]
    if clash and not overwrite:
        raise UserError(f"{len(clash)} output file(s) already exist (e.g. {clash[0]}). Fix: "
                        "another --out folder, or --overwrite.")
    model = load_model(config, checkpoint)  # after the cheap checks
    out.mkdir(parents=True, exist_ok=True)
    progress = ProgressBar(len(paths))
    masks = predict(model, [str(p) for p in paths], batch_size)
    palette = None
    for path, (mask_path, overlay_path), mask in zip(paths, targets, masks, strict=True):
        palette = palette if palette is not None else palette_of(model, int(mask.max()) + 1)
        Image.fromarray(mask.astype(np.uint8 if mask.max() < 256 else np.uint16)).save(mask_path)
        Image.fromarray(overlay(read_rgb(path), mask, palette)).save(overlay_path, quality=92)
        progress.update()
    print(f"\nseglab infer: {len(paths)} image(s) -> {out} (<name>.png class indices, "
          "<name>_overlay.jpg)")
    return [t[0] for t in targets]
