"""Examine a dataset the way a config will read it, before hours of training find out.

Checks every image/mask pair of every dataset a config's dataloaders use, listed
as mmseg lists them (split list, or the image folder recursively): pairing,
sizes (an image's after its EXIF orientation), mask mode (index vs colour),
label values against the class count and ignore index after
``reduce_zero_label`` and the dataset's ``label_map`` (``metainfo.classes`` a
subset of its classes), whether ``reduce_zero_label`` fits the labels, and
per-class pixel and image counts (classes absent from validation are listed).
A dataset mmseg reads no masks for (a test set for a submission: no
``seg_map_path``, or no ``LoadAnnotations``) has its images checked only.
Every file is decoded in full (``file_check``: on all cores, cached per file
under the data root), so a truncated, empty or undecodable file is a finding
too; no file content makes the doctor raise. Findings carry a severity, the
check (as the rule), the file (as where) and the fix, and print like the config
doctor's. ``check_data`` is the same examination
as ``seglab train``/``test`` run it before building anything.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
    masks_checked: bool = True  # False: a dataset without masks (its images only; not in JSON)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; a finding's ``rule`` is written as ``check``, ``where`` as ``file``."""
        fields = {k: v for k, v in asdict(self).items() if k != "masks_checked"}
        return {**fields,
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


class DataNotFound(UserError):
    """A dataset's image folder or split list is not where its config says: the data is
    not prepared, or ``--data-root`` points elsewhere."""


PREPARE_HINTS = {
    "PascalVOCDataset": "seglab data prepare voc --archive VOCtrainval_11-May-2012.tar (for "
                        "the aug split then: seglab data prepare sbd --archive benchmark.tgz)",
    "ADE20KDataset": "seglab data prepare ade20k --archive ADEChallengeData2016.zip",
}


def data_missing(name: str, dataset_type: str | None, data_root: Any, img_dir: Path,
                 ann_file: Path | None) -> DataNotFound | None:
    """The error for a dataset whose image folder or split list is absent, else None."""
    if not img_dir.is_dir():
        what, path = "image folder", img_dir
    elif ann_file is not None and not ann_file.is_file():
        what, path = "split list", ann_file
    else:
        return None
    prepare = PREPARE_HINTS.get(dataset_type or "", "put the dataset there (seglab data "
                                "prepare voc|sbd|ade20k --archive FILE for those)")
    root = f" (data root {data_root})" if data_root else ""
    return DataNotFound(f"{name}: {what} {path} not found{root}: the data is not prepared "
                        f"there. Fix: {prepare}, or pass --data-root DIR, the folder that "
                        "holds it.")


def listed_ids(img_dir: Path, suffix: str) -> tuple[list[str], list[Finding]]:
    """The ids mmseg gives an image folder without a split list, and a finding for each
    entry of it that mmseg cannot list.

    The walk of ``BaseSegDataset.load_data_list``'s call of mmengine's ``list_dir_or_file``
    (recursive: Cityscapes' cities; files starting with "." skipped, folders followed,
    hidden and linked ones too), ids relative to ``img_dir`` without the suffix, sorted by
    path as mmseg sorts them. That walk raises on a symbolic link that loops (an OSError
    from ``DirEntry.is_file``; for a link to a folder that holds it, once the path is 40
    links deep) and on an entry or folder it cannot read: mmseg could not build the dataset,
    so here each is a finding naming the entry, and the rest is listed.
    """
    found: list[str] = []
    findings: list[Finding] = []

    def walk(folder: str, chain: frozenset[tuple[int, int]]) -> None:
        """``chain``: the (device, inode) of ``folder`` and of each folder above it."""
        try:
            entries = list(os.scandir(folder))
        except OSError as err:
            findings.append(_unlisted_finding(Path(folder), err))
            return
        for entry in entries:
            try:  # mmengine's test, in its order: a hidden entry is never stat'ed as a file
                is_file = not entry.name.startswith(".") and entry.is_file()
            except OSError as err:  # not FileNotFoundError (a dangling link): is_file() says False
                findings.append(_unlisted_finding(Path(entry.path), err))
                continue
            if is_file:
                if entry.name.endswith(suffix):
                    found.append(os.path.relpath(entry.path, img_dir))
                continue
            try:  # os.path.isdir, as mmengine asks: an entry that cannot be stat'ed is not one
                st = entry.stat()
            except OSError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                continue
            if (st.st_dev, st.st_ino) in chain:
                findings.append(_folder_loop_finding(Path(entry.path)))
                continue
            walk(entry.path, chain | {(st.st_dev, st.st_ino)})

    top = img_dir.stat()
    walk(str(img_dir), frozenset({(top.st_dev, top.st_ino)}))
    return [rel[:len(rel) - len(suffix)] for rel in sorted(found)], findings


_UNLISTABLE = "mmseg's listing of the image folder raises on it, so the dataset cannot be built"


def _unlisted_finding(path: Path, err: OSError) -> Finding:
    """An entry (or folder) of an image folder that cannot be stat'ed (or read)."""
    if err.errno == errno.ELOOP:
        target = f" -> {os.readlink(path)}" if path.is_symlink() else ""
        return Finding(
            "error", "symlink-loop", str(path),
            f"symbolic link that loops ({path.name}{target}: {err.strerror}); {_UNLISTABLE}",
            "delete the link, or point it at the real file (ls -l shows where it points)")
    return Finding("error", "unreadable", str(path),
                   f"cannot be listed ({err.strerror or err}); {_UNLISTABLE}",
                   "make it readable for your user, or move it out of the image folder")


def _folder_loop_finding(path: Path) -> Finding:
    """A link to a folder that holds it: mmengine's recursive walk would follow it forever."""
    return Finding(
        "error", "symlink-loop", str(path),
        f"symbolic link to {os.path.realpath(path)}, a folder that holds it: mmseg's "
        "recursive listing of the image folder follows it until the system refuses (too many "
        "levels of symbolic links), so the dataset cannot be built",
        "delete the link, or point it at a folder outside the image folder")


@dataclass
class DatasetSpec:
    """Where a dataset's files are and how mmseg will read them."""

    name: str
    img_dir: Path
    seg_dir: Path | None  # None: no masks are read (a test set without annotations)
    ids: list[str] | None  # None: every image below img_dir
    classes: tuple[str, ...]
    reduce_zero_label: bool
    img_suffix: str = ".jpg"
    seg_suffix: str = ".png"
    indices: int | list[int] | None = None  # the dataset's ``indices``: a subset of the ids
    data_root: Path | None = None  # where the file cache goes (default: img/seg common folder)
    # the dataset's label_map (its classes -> metainfo.classes, left-out ones -> 255)
    label_map: dict[int, int] | None = None

    def pairs(self) -> list[tuple[Path, Path | None]]:
        """``(image, mask or None)`` paths of every sample, as the dataset will list them."""
        return self.listing()[0]

    def listing(self) -> tuple[list[tuple[Path, Path | None]], list[Finding]]:
        """``pairs()``, and the findings of listing the image folder (without a split list:
        the entries mmseg's listing raises on, see ``listed_ids``)."""
        if missing := data_missing(self.name, None, self.data_root, self.img_dir, None):
            raise missing
        ids, findings = (self.ids, []) if self.ids is not None else listed_ids(
            self.img_dir, self.img_suffix)
        if isinstance(self.indices, int):  # mmengine: the first n, or the last -n
            ids = ids[:self.indices] if self.indices >= 0 else ids[self.indices:]
        elif self.indices is not None:
            ids = [ids[i] for i in self.indices if -len(ids) <= i < len(ids)]
        return [(self.img_dir / f"{i}{self.img_suffix}",
                 None if self.seg_dir is None else self.seg_dir / f"{i}{self.seg_suffix}")
                for i in ids], findings

    @property
    def cache_root(self) -> Path:
        if self.data_root is not None and str(self.data_root):
            return self.data_root
        return Path(os.path.commonpath([d.absolute() for d in (self.img_dir, self.seg_dir)
                                        if d is not None]))

    def label(self, value: int) -> int:
        """The label mmseg trains on for mask value ``value``: LoadAnnotations'
        ``reduce_zero_label`` (0 and 255 -> 255, the rest -1), then the ``label_map``."""
        if self.reduce_zero_label:
            value = IGNORE_INDEX if value in (0, IGNORE_INDEX) else value - 1
        return self.label_map.get(value, value) if self.label_map else value


def _mask_findings(spec: DatasetSpec, mask_path: Path, mask: dict) -> list[Finding]:
    """A mask's values (``mask["hist"]``'s keys) against the classes, as mmseg maps them."""
    if wrapped := mask.get("wrapped"):
        return [Finding(
            "error", "label-range", str(mask_path),
            f"{mask['mode']} mask value(s) {wrapped} do not fit in 8 bits: mmseg casts masks "
            "to uint8, so they wrap around (256 reads as 0) and train as other labels",
            "save the mask as 8-bit (P or L) with labels 0..255 (255: ignore)")]
    num_classes = len(spec.classes)
    bad = sorted(v for v in map(int, mask["hist"])
                 if spec.label(v) != IGNORE_INDEX and not 0 <= spec.label(v) < num_classes)
    if not bad:
        return []
    zero_hint = (" These look like 1-based labels: set reduce_zero_label=True."
                 if not spec.reduce_zero_label and not spec.label_map
                 and max(bad) == num_classes else "")
    mapped = " and the dataset's label_map" if spec.label_map else ""
    return [Finding(
        "error", "label-range", str(mask_path),
        f"label value(s) {bad} outside the {num_classes} classes "
        f"(reduce_zero_label={spec.reduce_zero_label}{mapped}); training hits an index error "
        f"or a CUDA assert.{zero_hint}",
        "remap them to a class or to 255 (ignore), or fix num_classes/reduce_zero_label")]


COLOUR_MODES = ("RGB", "CMYK", "YCbCr", "LAB", "HSV")  # the mode's start: RGBA, RGBX too


def _size_finding(mask_path: Path, image: dict, mask: dict) -> Finding:
    (iw, ih), (mw, mh) = image["size"], mask["size"]
    if orientation := image.get("orientation"):
        return Finding(
            "error", "size", str(mask_path),
            f"mask is {mw}x{mh}, image is {iw}x{ih} as mmseg decodes it (its EXIF "
            f"orientation {orientation} turns the stored {ih}x{iw} pixels)",
            "save the image turned, without the EXIF orientation (PIL's "
            "ImageOps.exif_transpose), or regenerate the mask at the turned size")
    return Finding("error", "size", str(mask_path), f"mask is {mw}x{mh}, image is {iw}x{ih}",
                   "regenerate the mask at the image size")


def _mode_finding(mask_path: Path, mode: str) -> Finding:
    why = ("colours, not class indices; mmseg would read channel values as labels"
           if mode.startswith(COLOUR_MODES) else
           "not one channel of integer labels; mmseg cannot read it as class indices")
    return Finding("error", "mask-mode", str(mask_path), f"mask mode {mode}: {why}",
                   "convert colours to indices and save a single-channel (P or L) PNG")


def _file_findings(img_path: Path, mask_path: Path | None, image: dict, mask: dict | None,
                   ) -> list[Finding]:
    """Missing, unreadable, size and mode findings of one pair (or of an image without a
    mask), from its files' facts."""
    files = [(img_path, "image", image)] + ([] if mask is None else [(mask_path, "mask", mask)])
    missing = [p for p, _, f in files if f.get("missing")]
    if missing:
        return [Finding("error", "pairing", str(missing[0]), "listed in the split but missing",
                        "restore the file or drop the id from the split list")]
    findings = [Finding(
        "error", "unreadable", str(path),
        f"{what} {facts['error']}; training would die on it mid-epoch",
        "copy or export the file again from its source, or drop its id from the split list")
        for path, what, facts in files if "error" in facts]
    if findings or mask is None:
        return findings
    if image["size"] != mask["size"]:
        findings.append(_size_finding(mask_path, image, mask))
    if mask["mode"] not in MASK_MODES:
        findings.append(_mode_finding(mask_path, mask["mode"]))
    return findings


def examine_dataset(spec: DatasetSpec, files: FileCheck | None = None) -> DatasetReport:
    """``spec``'s report, from the facts ``files`` holds (gathered here when not given)."""
    num_classes = len(spec.classes)
    report = DatasetReport(spec.name, 0, num_classes, spec.reduce_zero_label,
                           [0] * num_classes, [0] * num_classes,
                           masks_checked=spec.seg_dir is not None)
    pairs, report.findings = spec.listing()
    if files is None:
        files = gather_files([spec], progress=None)
    saw_zero = False
    for img_path, mask_path in pairs:
        report.images += 1
        mask = None if mask_path is None else files.facts[mask_path]
        findings = _file_findings(img_path, mask_path, files.facts[img_path], mask)
        report.findings += findings
        if mask is None or "hist" not in mask or any(f.rule != "size" for f in findings):
            continue
        report.findings += _mask_findings(spec, mask_path, mask)
        hist = {int(v): n for v, n in mask["hist"].items()}
        saw_zero |= 0 in hist
        if "wrapped" in mask:
            continue  # its labels are not what was meant: not counted
        for value, pixels in hist.items():
            label = spec.label(value)
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
                 progress: Progress | None = stderr_progress, quiet: bool = False) -> FileCheck:
    """Decode (or find in the cache) every image and mask ``specs`` list, one data root
    at a time (``quiet``: see ``FileCheck.run``)."""
    files = FileCheck()
    by_root: dict[Path, list[tuple[Path, str]]] = {}
    for spec in specs:
        by_root.setdefault(spec.cache_root, []).extend(
            item for img, mask in spec.pairs()
            for item in ((img, "image"), (mask, "mask")) if item[0] is not None)
    for root, items in by_root.items():
        files.run(root, items, use_cache=use_cache, workers=workers, progress=progress,
                  quiet=quiet)
    return files


def _joined(data_root: Any, path: str) -> Path:
    """``path`` under ``data_root`` as mmengine's ``BaseDataset`` joins them."""
    return Path(os.path.join(data_root, path) if data_root and not os.path.isabs(path)
                else path)


def probe_dataset(leaf, name: str | None = None):
    """mmseg's dataset object for a leaf dataset config, without reading any file.

    ``lazy_init`` resolves prefixes, suffixes, classes and ``reduce_zero_label``
    exactly as training will; the caller's default scope must be mmseg's. Raises
    ``DataNotFound`` where the dataset refuses a missing folder or split list (mmseg's
    VOC, Pascal Context, DRIVE, ... assert them) and ``UserError`` for classes it does
    not have.
    """
    from mmseg.registry import DATASETS

    name = name or str(leaf.type)
    kwargs = {k: v for k, v in leaf.items() if k not in ("type", "_scope_")}
    try:
        return DATASETS.get(leaf.type)(**{**kwargs, "lazy_init": True, "pipeline": []})
    except (AssertionError, FileNotFoundError) as err:
        root, ann_file = leaf.get("data_root"), leaf.get("ann_file")
        missing = data_missing(
            name, leaf.type, root, _joined(root, (leaf.get("data_prefix") or {}).get(
                "img_path", "")), _joined(root, ann_file) if ann_file else None)
        if missing is None:
            raise
        raise missing from err
    except ValueError as err:  # BaseSegDataset.get_label_map
        if "is not a subset of classes" not in str(err):
            raise
        raise UserError(f"{name}: metainfo.classes: {err} Fix: name classes of {leaf.type} "
                        "(a subset is fine: the others are ignored, as 255).") from err


def _reads_masks(leaf, probe) -> bool:
    """Whether mmseg loads masks for ``leaf``: its ``data_prefix`` names a mask folder and
    its pipeline, when it has one, a ``LoadAnnotations`` (a test set for a submission
    has neither)."""
    from seglab.config.walk import walk_dicts

    pipeline = leaf.get("pipeline")
    return bool(probe.data_prefix.get("seg_map_path")) and (
        not pipeline or any("Annotation" in str(step.get("type", ""))
                            for step in walk_dicts(pipeline)))


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
            name = f"{split}[{i}] {leaf.type}"
            probe = probe_dataset(leaf, name)
            img_dir = Path(probe.data_prefix.get("img_path", ""))
            # mmseg lists the image folder when ann_file is empty or a folder
            ann_path = Path(probe.ann_file) if leaf.get("ann_file") else None
            if ann_path is not None and ann_path.is_dir():
                ann_path = None
            if missing := data_missing(name, leaf.type, probe.data_root, img_dir, ann_path):
                raise missing
            specs.append(DatasetSpec(
                name=name, img_dir=img_dir,
                seg_dir=(Path(probe.data_prefix["seg_map_path"]) if _reads_masks(leaf, probe)
                         else None),
                ids=ann_path.read_text(errors="replace").split() if ann_path else None,
                classes=tuple(probe.metainfo["classes"]),
                reduce_zero_label=bool(probe.reduce_zero_label),
                img_suffix=probe.img_suffix, seg_suffix=probe.seg_map_suffix,
                indices=leaf.get("indices"),
                data_root=Path(probe.data_root) if probe.data_root else None,
                label_map={int(k): int(v) for k, v in probe.label_map.items()}
                if probe.label_map else None))
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
               progress: Progress | None = stderr_progress, quiet: bool = False,
               ) -> DataDoctorReport:
    """Examine every dataset: each file decoded once (or read from the cache), on
    ``workers`` processes (default: every core), ``progress`` lines to stderr (``quiet``:
    only a decode's start and end, see ``FileCheck.run``)."""
    files = gather_files(specs, use_cache=use_cache, workers=workers, progress=progress,
                         quiet=quiet)
    reports = [examine_dataset(spec, files) for spec in specs]
    val = [r for r in reports if r.name.startswith("val") and r.masks_checked]
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
    skips those samples and records them. Without ``progress`` (the ranks after the first)
    only a decode this process does is announced, at its start and end.
    """
    result = run_doctor(specs_from_config(cfg, splits), progress=stderr_progress,
                        quiet=not progress)
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
        classes = (f"{present}/{report.num_classes} classes present" if report.masks_checked
                   else "no masks (images checked only)")
        lines.append(f"{report.name}: {report.images} images, {classes}, reduce_zero_label="
                     f"{report.reduce_zero_label}")
        lines += [f"  {finding_line(f)}" for f in report.findings]
    if result.classes_absent_from_val:
        lines.append(f"classes absent from validation ({len(result.classes_absent_from_val)}"
                     f"): their IoU is NaN and mIoU averages over the rest")
    lines.append(count_line(result.findings))
    return "\n".join(lines)


def write_json(result: DataDoctorReport, path: Path) -> None:
    path.write_text(json.dumps(result.to_dict(), indent=1))
