"""Examine a dataset the way a config will read it, before hours of training find out.

Checks every image/mask pair of every dataset a config's dataloaders use:
pairing, sizes, mask mode (index vs colour), label values against the class
count and ignore index after ``reduce_zero_label``, whether ``reduce_zero_label``
fits the labels, and per-class pixel and image counts (classes absent from
validation are listed). Findings carry a severity, the check (as the rule),
the file (as where) and the fix, and print like the config doctor's.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from seglab.doctor.finding import Finding, count_line, finding_line, of_severity
from seglab.errors import UserError

IGNORE_INDEX = 255


@dataclass
class DatasetReport:
    name: str
    images: int
    num_classes: int
    reduce_zero_label: bool
    class_pixels: list[int]
    class_images: list[int]
    findings: list[Finding] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; a finding's ``rule`` is written as ``check``, ``where`` as ``file``."""
        return {**asdict(self),
                "findings": [f.to_dict(rule="check", where="file") for f in self.findings]}


@dataclass
class DataDoctorReport:
    """``seglab data doctor``'s result: one report a dataset and the classes that no
    validation image contains."""

    datasets: list[DatasetReport]
    classes_absent_from_val: list[str]

    @property
    def findings(self) -> list[Finding]:
        return [f for d in self.datasets for f in d.findings]

    @property
    def errors(self) -> list[Finding]:
        return of_severity(self.findings, "error")

    @property
    def warnings(self) -> list[Finding]:
        return of_severity(self.findings, "warning")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``errors`` and ``warnings`` are counts."""
        return {"datasets": [d.to_dict() for d in self.datasets],
                "errors": len(self.errors), "warnings": len(self.warnings),
                "classes_absent_from_val": self.classes_absent_from_val}


@dataclass
class DatasetSpec:
    """Where a dataset's files are and how mmseg will read them."""

    name: str
    img_dir: Path
    seg_dir: Path
    ids: list[str] | None  # None: every image in img_dir
    classes: tuple[str, ...]
    reduce_zero_label: bool
    img_suffix: str = ".jpg"
    seg_suffix: str = ".png"


def _mask_findings(spec: DatasetSpec, mask_path: Path, raw: np.ndarray) -> list[Finding]:
    num_classes = len(spec.classes)
    values = np.unique(raw)
    findings = []
    if spec.reduce_zero_label:
        labels = set((values[values != 0] - 1).tolist()) - {IGNORE_INDEX - 1}
    else:
        labels = set(values.tolist()) - {IGNORE_INDEX}
    if bad := sorted(v for v in labels if v >= num_classes):
        shown = [v + 1 for v in bad] if spec.reduce_zero_label else bad
        zero_hint = (" These look like 1-based labels: set reduce_zero_label=True."
                     if not spec.reduce_zero_label and max(bad) == num_classes else "")
        findings.append(Finding(
            "error", "label-range", str(mask_path),
            f"label value(s) {shown} outside the {num_classes} classes "
            f"(reduce_zero_label={spec.reduce_zero_label}); training hits an index error or "
            f"a CUDA assert.{zero_hint}",
            "remap them to a class or to 255 (ignore), or fix num_classes/reduce_zero_label"))
    return findings


def examine_dataset(spec: DatasetSpec) -> DatasetReport:
    num_classes = len(spec.classes)
    report = DatasetReport(spec.name, 0, num_classes, spec.reduce_zero_label,
                           [0] * num_classes, [0] * num_classes)
    if not spec.img_dir.is_dir():
        raise UserError(f"{spec.name}: image folder {spec.img_dir} not found. Fix: prepare the "
                        "dataset (seglab data prepare) or pass --data-root.")
    ids = spec.ids if spec.ids is not None else sorted(
        p.name[: -len(spec.img_suffix)] for p in spec.img_dir.glob(f"*{spec.img_suffix}"))
    saw_zero = False
    for image_id in ids:
        report.images += 1
        img_path = spec.img_dir / f"{image_id}{spec.img_suffix}"
        mask_path = spec.seg_dir / f"{image_id}{spec.seg_suffix}"
        missing = [p for p in (img_path, mask_path) if not p.exists()]
        if missing:
            report.findings.append(Finding(
                "error", "pairing", str(missing[0]), "listed in the split but missing",
                "restore the file or drop the id from the split list"))
            continue
        with Image.open(img_path) as image, Image.open(mask_path) as mask:
            if image.size != mask.size:
                report.findings.append(Finding(
                    "error", "size", str(mask_path),
                    f"mask is {mask.size[0]}x{mask.size[1]}, image is "
                    f"{image.size[0]}x{image.size[1]}", "regenerate the mask at the image size"))
            if mask.mode not in ("P", "L"):
                report.findings.append(Finding(
                    "error", "mask-mode", str(mask_path),
                    f"mask mode {mask.mode}: colours, not class indices; mmseg would read "
                    "channel values as labels",
                    "convert colours to indices and save a single-channel (P or L) PNG"))
                continue
            raw = np.asarray(mask)
        report.findings += _mask_findings(spec, mask_path, raw)
        saw_zero |= bool((raw == 0).any())
        labels = raw.astype(np.int64)
        if spec.reduce_zero_label:
            labels = np.where(labels == 0, IGNORE_INDEX, labels - 1)
        labels = labels[(labels >= 0) & (labels < num_classes)]
        counts = np.bincount(labels, minlength=num_classes)[:num_classes]
        for c in np.nonzero(counts)[0]:
            report.class_pixels[c] += int(counts[c])
            report.class_images[c] += 1
    if spec.reduce_zero_label and report.images and not saw_zero:
        report.findings.append(Finding(
            "warning", "reduce-zero-label", str(spec.seg_dir),
            "reduce_zero_label=True but no mask contains 0, so nothing is ignored and every "
            "label is shifted down by one", "set reduce_zero_label=False if labels are 0-based"))
    return report


def probe_dataset(leaf):
    """mmseg's dataset object for a leaf dataset config, without reading any file.

    ``lazy_init`` resolves prefixes, suffixes, classes and ``reduce_zero_label``
    exactly as training will; the caller's default scope must be mmseg's.
    """
    from mmseg.registry import DATASETS

    kwargs = {k: v for k, v in leaf.items() if k not in ("type", "_scope_")}
    return DATASETS.get(leaf.type)(**{**kwargs, "lazy_init": True, "pipeline": []})


def specs_from_config(cfg) -> list[DatasetSpec]:
    """The leaf datasets of the train and val dataloaders, resolved as mmseg reads them."""
    from mmengine.registry import init_default_scope

    from seglab.config.walk import leaf_datasets

    init_default_scope(cfg.get("default_scope", "mmseg"))
    specs = []
    for split in ("train", "val"):
        for i, leaf in enumerate(leaf_datasets(cfg[f"{split}_dataloader"].dataset)):
            probe = probe_dataset(leaf)
            ann_path = Path(probe.ann_file) if leaf.get("ann_file") else None
            if ann_path is not None and not ann_path.is_file():
                raise UserError(f"{split} dataset: split list {ann_path} not found. Fix: "
                                "prepare the dataset or pass --data-root.")
            specs.append(DatasetSpec(
                name=f"{split}[{i}] {leaf.type}",
                img_dir=Path(probe.data_prefix["img_path"]),
                seg_dir=Path(probe.data_prefix["seg_map_path"]),
                ids=ann_path.read_text().split() if ann_path else None,
                classes=tuple(probe.metainfo["classes"]),
                reduce_zero_label=bool(probe.reduce_zero_label),
                img_suffix=probe.img_suffix, seg_suffix=probe.seg_map_suffix))
    return specs


DATASET_FRAGMENTS = {  # a dataset root given instead of a config: how to read it
    "VOC2012": "configs/_base_/datasets/pascal_voc12.py",
    "ADEChallengeData2016": "configs/_base_/datasets/ade20k.py",
}


def config_for_target(target: Path, data_root: str | None):
    """A config file as is, or a dataset root read with the matching dataset fragment."""
    from seglab import REPO_ROOT
    from seglab.config.loading import load_config

    if target.is_dir():
        if (target / "index_ade20k.pkl").exists():
            from seglab.data.prepare import full_ade_error

            raise full_ade_error(target)
        fragment = DATASET_FRAGMENTS.get(target.name)
        if fragment is None:
            raise UserError(f"{target}: not a config and not a VOC2012 or ADEChallengeData2016 "
                            "folder. Fix: pass the config that reads it, with --data-root.")
        return load_config(REPO_ROOT / fragment, data_root=str(target))
    return load_config(target, data_root=data_root)


def run_doctor(specs: list[DatasetSpec]) -> DataDoctorReport:
    """Examine every dataset."""
    reports = [examine_dataset(spec) for spec in specs]
    val = [r for r in reports if r.name.startswith("val")]
    absent_in_val = sorted({specs[0].classes[c] for r in val for c, n in
                            enumerate(r.class_images) if n == 0}) if val else []
    return DataDoctorReport(reports, absent_in_val)


def summary_text(result: DataDoctorReport) -> str:
    lines = []
    for report in result.datasets:
        present = sum(1 for n in report.class_images if n)
        lines.append(f"{report.name}: {report.images} images, {present}/"
                     f"{report.num_classes} classes present, reduce_zero_label="
                     f"{report.reduce_zero_label}")
        lines += [f"  {finding_line(f)}" for f in report.findings]
    if result.classes_absent_from_val:
        lines.append(f"classes absent from validation ({len(result.classes_absent_from_val)}"
                     f"): their IoU is NaN and mIoU averages over the rest")
    lines.append(count_line(result.findings))
    return "\n".join(lines)


def write_json(result: DataDoctorReport, path: Path) -> None:
    path.write_text(json.dumps(result.to_dict(), indent=1))
