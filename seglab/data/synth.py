"""Deterministic synthetic datasets in the exact on-disk layouts of VOC 2012 and ADE20K.

Tests and the demo need real directory layouts and file formats (JPEG images,
palette-mode VOC PNGs with 255 void borders, ADE20K index PNGs with 0 = "other")
without downloading anything. Every object class has its own colour, stripe
frequency and shape, so a small model learns them in minutes on a CPU.

The same ``seed`` always yields byte-identical files.
"""

from __future__ import annotations

import colorsys
import json
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from seglab.errors import UserError

VOC_NUM_CLASSES = 21  # background + 20 object classes
ADE_NUM_CLASSES = 150  # labels 1..150 on disk; 0 is "other"
# ADE20K classes used as the scene "stuff" (wall, floor, sky, ...) behind objects: 1-based.
ADE_STUFF_CLASSES = (1, 4, 3, 7)


def voc_palette() -> list[int]:
    """The PASCAL VOC colour map (index i -> RGB), as stored in its PNGs."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette += [r, g, b]
    return palette


@dataclass
class SynthSummary:
    """What a generator wrote: the dataset root and image ids per split."""

    root: Path
    splits: dict[str, list[str]] = field(default_factory=dict)


def class_colour(label: int) -> tuple[int, int, int]:
    """A distinct, saturated colour per class (hue walks the colour wheel)."""
    hue = (label * 0.61803398875) % 1.0  # golden-ratio steps keep neighbours apart
    sat = 0.95 if label % 2 else 0.6
    val = 0.95 if (label // 2) % 2 else 0.7
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return int(r * 255), int(g * 255), int(b * 255)


def _draw_shape(mask: Image.Image, label: int, box: tuple[int, int, int, int]) -> None:
    draw = ImageDraw.Draw(mask)
    x0, y0, x1, y1 = box
    kind = label % 3
    if kind == 0:
        draw.ellipse(box, fill=255)
    elif kind == 1:
        draw.rectangle(box, fill=255)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=255)


def _texture(label: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Class colour modulated by stripes whose period depends on the class."""
    colour = np.array(class_colour(label), dtype=np.float32)
    period = 4 + (label % 5) * 3
    yy, xx = np.mgrid[0:height, 0:width]
    direction = xx if label % 2 else yy
    stripes = 0.75 + 0.25 * np.sign(np.sin(2 * np.pi * direction / period))
    img = colour[None, None, :] * stripes[..., None]
    return img + rng.normal(0, 6, size=img.shape)


def _background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    base = rng.uniform(90, 150)
    img = np.full((height, width, 3), base, dtype=np.float32)
    return img + rng.normal(0, 12, size=img.shape)


def render_scene(
    rng: np.random.Generator,
    size: tuple[int, int],
    object_labels: list[int],
    background_label: np.ndarray | int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw objects over a background; return RGB image, label map, object-edge map."""
    height, width = size
    image = _background(height, width, rng)
    labels = np.broadcast_to(np.asarray(background_label, dtype=np.uint8), size).copy()
    edges = np.zeros(size, dtype=bool)
    for label in object_labels:
        w = int(rng.integers(width // 4, width // 2 + 1))
        h = int(rng.integers(height // 4, height // 2 + 1))
        x0 = int(rng.integers(0, width - w))
        y0 = int(rng.integers(0, height - h))
        mask_img = Image.new("L", (width, height), 0)
        _draw_shape(mask_img, label, (x0, y0, x0 + w, y0 + h))
        mask = np.asarray(mask_img) > 0
        texture = _texture(label, height, width, rng)
        image[mask] = texture[mask]
        labels[mask] = label
        outer = np.asarray(mask_img.filter(ImageFilter.MaxFilter(3))) > 0
        inner = np.asarray(mask_img.filter(ImageFilter.MinFilter(3))) > 0
        edges &= ~mask  # a later object hides earlier borders
        edges |= outer & ~inner
    return np.clip(image, 0, 255).astype(np.uint8), labels, edges


def _image_size(rng: np.random.Generator, size: tuple[int, int]) -> tuple[int, int]:
    """Vary sizes a little around ``size`` (h, w), as real datasets do."""
    height, width = size
    return int(height + rng.integers(-height // 8, height // 8 + 1)), int(
        width + rng.integers(-width // 8, width // 8 + 1)
    )


def _save_jpeg(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, format="JPEG", quality=92)


def synth_voc(
    out_dir: Path | str,
    num_train: int = 48,
    num_val: int = 16,
    size: tuple[int, int] = (128, 160),
    max_objects: int = 3,
    seed: int = 0,
    with_aug: bool = False,
) -> SynthSummary:
    """Write ``VOCdevkit/VOC2012`` under ``out_dir`` in PASCAL VOC 2012's layout.

    ``JPEGImages/*.jpg``; ``SegmentationClass/*.png`` in palette mode with the VOC
    colour map, labels 0 (background)..20 and 255 on object borders;
    ``ImageSets/Segmentation/{train,val,trainval}.txt``. With ``with_aug``, also
    the converted-SBD layout mmseg's VOC-aug configs read: ``num_train`` extra
    SBD-only images listed in ``ImageSets/Segmentation/aug.txt``, and
    single-channel ``SegmentationClassAug/*.png`` (no void borders) for them and
    the training images.
    """
    root = Path(out_dir) / "VOCdevkit" / "VOC2012"
    img_dir, ann_dir = root / "JPEGImages", root / "SegmentationClass"
    sets_dir = root / "ImageSets" / "Segmentation"
    aug_dir = root / "SegmentationClassAug"
    for d in (img_dir, ann_dir, sets_dir) + ((aug_dir,) if with_aug else ()):
        d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    palette = voc_palette()
    summary = SynthSummary(root=root)
    # "aug": extra SBD-only images, as mmseg's voc_aug.py lists them in aug.txt
    counts = {"train": num_train, "val": num_val, "aug": num_train if with_aug else 0}
    index = 0
    for split, count in counts.items():
        ids = []
        for _ in range(count):
            index += 1
            image_id = f"2012_{index:06d}"
            n_objects = int(rng.integers(1, max_objects + 1))
            # Cycle through all classes so each split sees every one of them.
            object_labels = [1 + (index * max_objects + k) % (VOC_NUM_CLASSES - 1)
                             for k in range(n_objects)]
            image, labels, edges = render_scene(rng, _image_size(rng, size), object_labels, 0)
            labels[edges] = 255
            _save_jpeg(image, img_dir / f"{image_id}.jpg")
            if split != "aug":
                png = Image.frombytes("P", labels.shape[::-1], labels.tobytes())
                png.putpalette(palette)
                png.save(ann_dir / f"{image_id}.png")
            if with_aug and split != "val":  # SBD covers VOC train images too
                sbd_labels = np.where(labels == 255, 0, labels).astype(np.uint8)
                Image.fromarray(sbd_labels).save(aug_dir / f"{image_id}.png")
            ids.append(image_id)
        if count:
            summary.splits[split] = ids
            (sets_dir / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    (sets_dir / "trainval.txt").write_text(
        "".join(f"{i}\n" for i in summary.splits["train"] + summary.splits["val"])
    )
    return summary


def synth_ade20k(
    out_dir: Path | str,
    num_train: int = 48,
    num_val: int = 16,
    size: tuple[int, int] = (128, 160),
    num_object_classes: int = 12,
    max_objects: int = 3,
    seed: int = 0,
) -> SynthSummary:
    """Write ``ADEChallengeData2016`` under ``out_dir`` in the ADE20K benchmark layout.

    ``images/{training,validation}/ADE_{train,val}_XXXXXXXX.jpg`` and
    ``annotations/...png`` in mode L: 0 = "other" (ignored with
    ``reduce_zero_label=True``), 1..150 = classes. A scene is an "other" band at
    the top, stuff (wall, floor, ...) below it, and objects from the first
    ``num_object_classes`` non-stuff classes on top.
    """
    root = Path(out_dir) / "ADEChallengeData2016"
    object_classes = [c for c in range(1, ADE_NUM_CLASSES + 1) if c not in ADE_STUFF_CLASSES]
    object_classes = object_classes[:num_object_classes]
    rng = np.random.default_rng(seed)
    summary = SynthSummary(root=root)
    for split, folder, count in (("train", "training", num_train), ("val", "validation", num_val)):
        img_dir = root / "images" / folder
        ann_dir = root / "annotations" / folder
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        ids = []
        for index in range(1, count + 1):
            image_id = f"ADE_{split}_{index:08d}"
            height, width = _image_size(rng, size)
            stuff = np.full((height, width), ADE_STUFF_CLASSES[index % 2], dtype=np.uint8)
            stuff[height // 2 :] = ADE_STUFF_CLASSES[2 + index % 2]
            stuff[: height // 8] = 0  # "other": ignored after reduce_zero_label
            n_objects = int(rng.integers(1, max_objects + 1))
            labels_drawn = [
                object_classes[(index * max_objects + k) % len(object_classes)]
                for k in range(n_objects)
            ]
            image, labels, _ = render_scene(rng, (height, width), labels_drawn, stuff)
            # Stuff gets a flat tint of its class colour so it is learnable too.
            for stuff_label in ADE_STUFF_CLASSES:
                region = (labels == stuff_label)
                image[region] = (0.5 * image[region] + 0.5 * np.array(class_colour(stuff_label)))
            _save_jpeg(image, img_dir / f"{image_id}.jpg")
            Image.fromarray(labels).save(ann_dir / f"{image_id}.png")
            ids.append(image_id)
        summary.splits[split] = ids
    return summary


GENERATORS = {"voc": synth_voc, "ade20k": synth_ade20k}
MARKER = ".seglab-synth.json"


def write_synth_dataset(layout: str, out_dir: Path | str, **params: int) -> SynthSummary:
    """Generate ``layout`` under ``out_dir`` unless an identical one is already there.

    A marker file records the generator parameters. An existing dataset folder
    without the marker is the user's and is never written into.
    """
    if layout not in GENERATORS:
        raise UserError(f"unknown synth layout {layout!r}; choose one of {sorted(GENERATORS)}")
    out_dir = Path(out_dir)
    top = out_dir / {"voc": "VOCdevkit", "ade20k": "ADEChallengeData2016"}[layout]
    marker = top / MARKER
    record = {"layout": layout, "generator_version": 1, **params}
    if top.exists():
        if not marker.exists():
            raise UserError(
                f"{top} exists and was not generated by seglab; refusing to write into it. "
                "Fix: pass --out to another folder.")
        if json.loads(marker.read_text()) == record:
            return _read_summary(layout, top)
    top.mkdir(parents=True, exist_ok=True)
    # Marked as ours before the first file, complete only at the end: an
    # interrupted generation is redone, never mistaken for a user's folder.
    marker.write_text(json.dumps({**record, "complete": False}))
    summary = GENERATORS[layout](out_dir, **params)
    marker.write_text(json.dumps(record))
    return summary


def _read_summary(layout: str, top: Path) -> SynthSummary:
    if layout == "voc":
        root = top / "VOC2012"
        sets = root / "ImageSets" / "Segmentation"
        splits = {s: (sets / f"{s}.txt").read_text().split() for s in ("train", "val")}
    else:
        root = top
        splits = {s: sorted(p.stem for p in (root / "images" / folder).glob("*.jpg"))
                  for s, folder in (("train", "training"), ("val", "validation"))}
    return SynthSummary(root=root, splits=splits)


def _tar_tree(out: Path, src_root: Path, arc_root: str, keep) -> None:
    with tarfile.open(out, "w:gz" if out.name.endswith("gz") else "w") as tar:
        for path in sorted(src_root.rglob("*")):
            rel = path.relative_to(src_root).as_posix()
            if path.is_file() and keep(rel):
                tar.add(path, arcname=f"{arc_root}/{rel}")


def _zip_tree(out: Path, src_root: Path, arc_root: str) -> None:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(src_root.rglob("*")):
            if path.is_file() and path.name != MARKER:
                zf.write(path, f"{arc_root}/{path.relative_to(src_root).as_posix()}")


def _write_sbd(voc_root: Path, dataset_dir: Path, summary: SynthSummary) -> None:
    """SBD's ``dataset/{cls/*.mat, img/*.jpg, train.txt, val.txt}`` with MATLAB-v5
    ``GTcls`` structs. Like the real SBD it covers VOC train images and one VOC val
    image (which VOC-aug must keep out of training)."""
    from scipy.io import savemat

    train, val, aug = summary.splits["train"], summary.splits["val"], summary.splits["aug"]
    half = len(aug) // 2
    sbd_train, sbd_val = aug[:half] + train, aug[half:] + val[:1]
    (dataset_dir / "cls").mkdir(parents=True)
    (dataset_dir / "img").mkdir()
    for image_id in sbd_train + sbd_val:
        aug_png = voc_root / "SegmentationClassAug" / f"{image_id}.png"
        mask = np.asarray(Image.open(aug_png if aug_png.exists() else
                                     voc_root / "SegmentationClass" / f"{image_id}.png"))
        mask = np.where(mask == 255, 0, mask).astype(np.uint8)
        gt = {"Segmentation": mask, "Boundaries": np.zeros((1, 1), dtype=object),
              "CategoriesPresent": np.unique(mask[mask > 0]).astype(np.uint8)}
        savemat(dataset_dir / "cls" / f"{image_id}.mat", {"GTcls": gt}, format="5")
        shutil.copy(voc_root / "JPEGImages" / f"{image_id}.jpg", dataset_dir / "img")
    (dataset_dir / "train.txt").write_text("".join(f"{i}\n" for i in sbd_train))
    (dataset_dir / "val.txt").write_text("".join(f"{i}\n" for i in sbd_val))


def write_archives(out_dir: Path | str, num_train: int = 6, num_val: int = 3,
                   seed: int = 0, size: tuple[int, int] = (128, 160)) -> dict[str, Path]:
    """Small archives in the real download formats, for ``seglab data prepare`` tests.

    ``voc``: VOCtrainval tar (VOCdevkit/VOC2012/...); ``sbd``: benchmark.tgz
    (benchmark_RELEASE/dataset/...); ``ade20k``: ADEChallengeData2016.zip;
    ``full_ade``: a zip in the layout of the full ADE20K_2021_17_01 release.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        voc = synth_voc(tmp_path / "voc", num_train=num_train, num_val=num_val, seed=seed,
                        size=size, with_aug=True)
        voc_keep = ("JPEGImages/", "SegmentationClass/", "ImageSets/Segmentation/train.txt",
                    "ImageSets/Segmentation/val.txt", "ImageSets/Segmentation/trainval.txt")
        archives = {"voc": out_dir / "VOCtrainval_11-May-2012.tar",
                    "sbd": out_dir / "benchmark.tgz",
                    "ade20k": out_dir / "ADEChallengeData2016.zip",
                    "full_ade": out_dir / "ADE20K_2021_17_01.zip"}
        _tar_tree(archives["voc"], voc.root, "VOCdevkit/VOC2012",
                  lambda rel: rel.startswith(voc_keep))
        _write_sbd(voc.root, tmp_path / "sbd" / "dataset", voc)
        _tar_tree(archives["sbd"], tmp_path / "sbd", "benchmark_RELEASE", lambda rel: True)
        ade = synth_ade20k(tmp_path / "ade", num_train=num_train, num_val=num_val, seed=seed,
                           size=size)
        _zip_tree(archives["ade20k"], ade.root, "ADEChallengeData2016")
        full = tmp_path / "full" / "images" / "ADE" / "training" / "cultural"
        full.mkdir(parents=True)
        shutil.copy(next((ade.root / "images" / "training").glob("*.jpg")), full)
        (tmp_path / "full" / "objects.txt").write_text("wall\nfloor\n")
        (tmp_path / "full" / "index_ade20k.pkl").write_bytes(b"not a pickle")
        _zip_tree(archives["full_ade"], tmp_path / "full", "ADE20K_2021_17_01")
    return archives
