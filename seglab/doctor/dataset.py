"""Examine a dataset the way a config will read it, before hours of training find out.

Checks every image/mask pair of every dataset a config's dataloaders use:
pairing, sizes, mask mode (index vs colour), label values against the class
count and ignore index after ``reduce_zero_label``, whether ``reduce_zero_label``
fits the labels, and per-class pixel and image counts (classes absent from
validation are listed). Every file is decoded in full (``file_check``: on all
cores, cached per file under the data root), so a truncated, empty or
undecodable file is a finding too; no file content makes the doctor raise.
Findings carry a severity, the check (as the rule), the file (as where) and the
fix, and print like the config doctor's. ``check_data`` is the same examination
as ``seglab train``/``test`` run it before building anything.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seglab.doctor.file_check import MASK_MODES, FileCheck, Progress, stderr_progress
from seglab.doctor.finding import Finding, by_severity, count_line, finding_line, of_severity
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
    # how this check went, not what the data holds (so not in the JSON): files decoded
    # now, and files whose facts came from the cache
    files_decoded: int = 0
    files_cached: int = 0

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
    indices: int | list[int] | None = None  # the dataset's ``indices``: a subset of the ids
    data_root: Path | None = None  # where the file cache goes (default: img/seg common folder)

    def pairs(self) -> list[tuple[Path, Path]]:
        """``(image, mask)`` paths of every sample, as the dataset will list them."""
        if not self.img_dir.is_dir():
            raise UserError(f"{self.name}: image folder {self.img_dir} not found. Fix: prepare "
                            "the dataset (seglab data prepare) or pass --data-root.")
        ids = self.ids if self.ids is not None else sorted(
            p.name[: -len(self.img_suffix)] for p in self.img_dir.glob(f"*{self.img_suffix}"))
        if isinstance(self.indices, int):
            ids = ids[:self.indices]
        elif self.indices is not None:
            ids = [ids[i] for i in self.indices if -len(ids) <= i < len(ids)]
        return [(self.img_dir / f"{i}{self.img_suffix}", self.seg_dir / f"{i}{self.seg_suffix}")
                for i in ids]

    @property
    def cache_root(self) -> Path:
        if self.data_root is not None and str(self.data_root):
            return self.data_root
        return Path(os.path.commonpath([self.img_dir.absolute(), self.seg_dir.absolute()]))


def _mask_findings(spec: DatasetSpec, mask_path: Path, values: np.ndarray) -> list[Finding]:
    """Label values (the distinct pixel values of a mask) against the classes."""
    num_classes = len(spec.classes)
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


def _file_findings(img_path: Path, mask_path: Path, image: dict, mask: dict,
                   ) -> list[Finding]:
    """Missing, unreadable, size and mode findings of one pair, from its files' facts."""
    missing = [p for p, f in ((img_path, image), (mask_path, mask)) if f.get("missing")]
    if missing:
        return [Finding("error", "pairing", str(missing[0]), "listed in the split but missing",
                        "restore the file or drop the id from the split list")]
    findings = [Finding(
        "error", "unreadable", str(path),
        f"{what} {facts['error']}; training would die on it mid-epoch",
        "copy or export the file again from its source, or drop its id from the split list")
        for path, what, facts in ((img_path, "image", image), (mask_path, "mask", mask))
        if "error" in facts]
    if findings:
        return findings
    (iw, ih), (mw, mh) = image["size"], mask["size"]
    if (iw, ih) != (mw, mh):
        findings.append(Finding("error", "size", str(mask_path),
                                f"mask is {mw}x{mh}, image is {iw}x{ih}",
                                "regenerate the mask at the image size"))
    if mask["mode"] not in MASK_MODES:
        findings.append(Finding(
            "error", "mask-mode", str(mask_path),
            f"mask mode {mask['mode']}: colours, not class indices; mmseg would read "
            "channel values as labels",
            "convert colours to indices and save a single-channel (P or L) PNG"))
    return findings


def examine_dataset(spec: DatasetSpec, files: FileCheck | None = None) -> DatasetReport:
    """``spec``'s report, from the facts ``files`` holds (gathered here when not given)."""
    num_classes = len(spec.classes)
    report = DatasetReport(spec.name, 0, num_classes, spec.reduce_zero_label,
                           [0] * num_classes, [0] * num_classes)
    pairs = spec.pairs()
    if files is None:
        files = gather_files([spec], progress=None)
    saw_zero = False
    for img_path, mask_path in pairs:
        report.images += 1
        mask = files.facts[mask_path]
        findings = _file_findings(img_path, mask_path, files.facts[img_path], mask)
        report.findings += findings
        if "hist" not in mask or any(f.rule != "size" for f in findings):
            continue
        hist = {int(v): n for v, n in mask["hist"].items()}
        report.findings += _mask_findings(spec, mask_path, np.array(sorted(hist)))
        saw_zero |= 0 in hist
        for value, pixels in hist.items():
            label = (IGNORE_INDEX if value == 0 else value - 1) if spec.reduce_zero_label \
                else value
            if 0 <= label < num_classes:
                report.class_pixels[label] += pixels
                report.class_images[label] += 1
    if spec.reduce_zero_label and report.images and not saw_zero:
        report.findings.append(Finding(
            "warning", "reduce-zero-label", str(spec.seg_dir),
            "reduce_zero_label=True but no mask contains 0, so nothing is ignored and every "
            "label is shifted down by one", "set reduce_zero_label=False if labels are 0-based"))
    return report


def gather_files(specs: list[DatasetSpec], *, use_cache: bool = True, workers: int | None = None,
                 progress: Progress | None = stderr_progress) -> FileCheck:
    """Decode (or find in the cache) every image and mask ``specs`` list, one data root
    at a time."""
    files = FileCheck()
    by_root: dict[Path, list[tuple[Path, str]]] = {}
    for spec in specs:
        by_root.setdefault(spec.cache_root, []).extend(
            item for img, mask in spec.pairs() for item in ((img, "image"), (mask, "mask")))
    for root, items in by_root.items():
        files.run(root, items, use_cache=use_cache, workers=workers, progress=progress)
    return files


def probe_dataset(leaf):
    """mmseg's dataset object for a leaf dataset config, without reading any file.

    ``lazy_init`` resolves prefixes, suffixes, classes and ``reduce_zero_label``
    exactly as training will; the caller's default scope must be mmseg's.
    """
    from mmseg.registry import DATASETS

    kwargs = {k: v for k, v in leaf.items() if k not in ("type", "_scope_")}
    return DATASETS.get(leaf.type)(**{**kwargs, "lazy_init": True, "pipeline": []})


def specs_from_config(cfg, splits: tuple[str, ...] = ("train", "val")) -> list[DatasetSpec]:
    """The leaf datasets of the ``splits``' dataloaders (a split without one is left out),
    resolved as mmseg reads them."""
    from mmengine.registry import init_default_scope

    from seglab.config.walk import leaf_datasets

    init_default_scope(cfg.get("default_scope", "mmseg"))
    specs = []
    for split in splits:
        loader = cfg.get(f"{split}_dataloader")
        if not loader:
            continue
        for i, leaf in enumerate(leaf_datasets(loader.dataset)):
            probe = probe_dataset(leaf)
            ann_path = Path(probe.ann_file) if leaf.get("ann_file") else None
            if ann_path is not None and not ann_path.is_file():
                raise UserError(f"{split} dataset: split list {ann_path} not found. Fix: "
                                "prepare the dataset or pass --data-root.")
            specs.append(DatasetSpec(
                name=f"{split}[{i}] {leaf.type}",
                img_dir=Path(probe.data_prefix["img_path"]),
                seg_dir=Path(probe.data_prefix["seg_map_path"]),
                ids=ann_path.read_text(errors="replace").split() if ann_path else None,
                classes=tuple(probe.metainfo["classes"]),
                reduce_zero_label=bool(probe.reduce_zero_label),
                img_suffix=probe.img_suffix, seg_suffix=probe.seg_map_suffix,
                indices=leaf.get("indices"),
                data_root=Path(probe.data_root) if probe.data_root else None))
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


def run_doctor(specs: list[DatasetSpec], *, use_cache: bool = True, workers: int | None = None,
               progress: Progress | None = stderr_progress) -> DataDoctorReport:
    """Examine every dataset: each file decoded once (or read from the cache), on
    ``workers`` processes (default: every core), ``progress`` lines to stderr."""
    files = gather_files(specs, use_cache=use_cache, workers=workers, progress=progress)
    reports = [examine_dataset(spec, files) for spec in specs]
    val = [r for r in reports if r.name.startswith("val")]
    absent_in_val = sorted({specs[0].classes[c] for r in val for c, n in
                            enumerate(r.class_images) if n == 0}) if val else []
    return DataDoctorReport(reports, absent_in_val, files.examined, files.cached)


MAX_ERRORS_SHOWN = 20


def check_data(cfg, config: str, splits: tuple[str, ...], *, progress: bool = True,
               what: str = "train", errors_skipped_at_load: bool = False) -> list[str]:
    """``seglab train``/``test``'s look at the data before anything is built.

    Runs the data doctor on the ``splits``' datasets of the resolved ``cfg``;
    raises ``UserError`` with the errors (the file named in each) and returns the
    warnings as lines to log. With ``errors_skipped_at_load`` (training splits under
    ``--on-bad-sample skip``) the errors are returned as warnings too: the loader
    skips those samples and records them.
    """
    result = run_doctor(specs_from_config(cfg, splits),
                        progress=stderr_progress if progress else None)
    if result.errors and errors_skipped_at_load:
        return [f"data check: {finding_line(f)} (skipped at load time: --on-bad-sample skip)"
                for f in result.errors] + check_lines(result)
    if result.errors:
        shown = [finding_line(f) for f in result.errors[:MAX_ERRORS_SHOWN]]
        more = len(result.errors) - len(shown)
        raise UserError(
            f"seglab data check found {len(result.errors)} error(s) in the data {config} "
            f"reads ({'/'.join(splits)}):\n  " + "\n  ".join(shown)
            + (f"\n  ... and {more} more (seglab data doctor {config} lists them all)"
               if more else "")
            + f"\nFix the files, pass --skip-data-check to {what} anyway"
            + (", or --on-bad-sample skip to skip them while training." if what == "train"
               else "."))
    return check_lines(result)


def check_lines(result: DataDoctorReport) -> list[str]:
    """The warnings of a data check, as lines for the training log."""
    lines = [f"data check: {finding_line(f)}" for f in by_severity(result.warnings)]
    if result.classes_absent_from_val:
        lines.append(f"data check: {len(result.classes_absent_from_val)} class(es) absent from "
                     f"validation ({', '.join(result.classes_absent_from_val[:10])}"
                     f"{', ...' if len(result.classes_absent_from_val) > 10 else ''}): their "
                     "IoU is NaN and mIoU averages over the rest")
    return lines


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
