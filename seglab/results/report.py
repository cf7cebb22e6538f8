"""``seglab report WORK_DIR``: one self-contained HTML (and Markdown) page per run.

Config summary and lineage, loss/LR/mIoU curves, the checkpoints, the per-class
table (sorted, coloured) and bar chart, the worst classes with the classes
they are mistaken for (from the confusion matrix recorded at evaluation), and
image | ground truth | prediction for a fixed, seeded sample of validation
images. Everything is inline: the file opens without a network.
"""

from __future__ import annotations

import html
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seglab import REPO_ROOT
from seglab.config.walk import head_losses, model_heads, schedulers
from seglab.engine.checkpoint import best_checkpoints, best_or_latest_checkpoint
from seglab.errors import UserError
from seglab.results import render
from seglab.results.metafile import recorded_rows
from seglab.results.records import RunResults, load_results

CURVES = (("loss", "training loss"), ("lr", "learning rate"), ("mIoU", "validation mIoU"))
OVERLAY_SEED = 0
OVERLAY_WIDTH = 320
CONFUSED_SHOWN = 3


@dataclass
class Confusion:
    name: str
    iou: float
    mistaken_for: list[tuple[str, float]]  # (class, share of this class's pixels, percent)


def worst_classes(results: RunResults, count: int) -> list[Confusion]:
    """The ``count`` lowest-IoU classes and what their pixels were predicted as."""
    ious = results.per_class.get("IoU", [])
    ranked = sorted((v, i) for i, v in enumerate(ious) if v is not None)[:count]
    out = []
    for iou, i in ranked:
        mistaken: list[tuple[str, float]] = []
        if results.confusion is not None:
            row = np.asarray(results.confusion[i], dtype=np.float64)
            total = row.sum()
            others = [(row[j] / total * 100, results.classes[j]) for j in np.argsort(-row)
                      if j != i and total > 0 and row[j] > 0][:CONFUSED_SHOWN]
            mistaken = [(name, share) for share, name in others]
        out.append(Confusion(results.classes[i], iou, mistaken))
    return out


def _source_config(config_path: Path | None) -> Path | None:
    """The versioned config in configs/ this run was made from (by file name)."""
    if config_path is None:
        return None
    matches = sorted((REPO_ROOT / "configs").rglob(config_path.name))
    return matches[0] if matches else None


def lineage(config_path: Path | None) -> list[str]:
    """The source config's header comment and ``_base_`` list."""
    source = _source_config(config_path)
    if source is None:
        return []
    lines = []
    for line in source.read_text().splitlines():
        if line.startswith("#"):
            lines.append(line.lstrip("# ").rstrip())
        elif lines:
            break
    bases = re.search(r"_base_\s*=\s*(\[[^\]]*\]|'[^']*')", source.read_text())
    header = [f"source: {source.relative_to(REPO_ROOT)}"]
    return header + ([f"_base_ = {' '.join(bases.group(1).split())}"] if bases else []) + lines


def config_summary(cfg: Any) -> list[tuple[str, str]]:
    model = cfg.model
    loader = cfg.get("train_dataloader") or {}
    dataset = loader.get("dataset", {})
    train_cfg = cfg.get("train_cfg") or {}
    length = (f"{train_cfg.get('max_epochs')} epochs" if "max_epochs" in train_cfg
              else f"{train_cfg.get('max_iters')} iterations")
    optimizer = cfg.get("optim_wrapper", {}).get("optimizer", {})
    decode_heads = [head for _, head in model_heads(model, ("decode_head",))]
    heads = " + ".join(str(h.get("type")) for h in decode_heads)
    return [
        ("model", f"{model.get('type')}: {model.get('backbone', {}).get('type')} + {heads}"),
        ("dataset", f"{dataset.get('type')} ({dataset.get('data_root', '')})"),
        ("batch per GPU", str(loader.get("batch_size"))),
        ("optimizer", f"{optimizer.get('type')} lr={optimizer.get('lr')} "
                      f"({cfg.get('optim_wrapper', {}).get('type')})"),
        ("schedule", " -> ".join(str(s.get("type")) for s in schedulers(cfg)) + f", {length}"),
        ("losses", ", ".join(str(loss.get("type")) for head in decode_heads
                             for loss in head_losses(head))),
    ]


def checkpoints(work_dir: Path) -> tuple[Path | None, list[str]]:
    """(checkpoint to draw predictions with, lines describing what is there)."""
    best = best_checkpoints(work_dir)
    pointer = work_dir / "last_checkpoint"
    last = Path(pointer.read_text().strip()) if pointer.is_file() else None
    lines = [f"best: {p.name}" for p in best]
    if last is not None:
        lines.append(f"latest: {last.name}")
    chosen = best_or_latest_checkpoint(work_dir)
    return (Path(chosen) if chosen else None), lines


def _sample_validation(cfg: Any, count: int) -> list[dict]:
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    init_default_scope(cfg.get("default_scope", "mmseg"))
    dataset_cfg = {k: v for k, v in cfg.val_dataloader.dataset.items()}
    dataset = DATASETS.build({**dataset_cfg, "pipeline": []})
    chosen = sorted(random.Random(OVERLAY_SEED).sample(range(len(dataset)),
                                                       min(count, len(dataset))))
    return [dataset.get_data_info(i) for i in chosen]


def _shrink(image: np.ndarray) -> np.ndarray:
    from PIL import Image

    height, width = image.shape[:2]
    if width <= OVERLAY_WIDTH:
        return image
    size = (OVERLAY_WIDTH, round(height * OVERLAY_WIDTH / width))
    return np.asarray(Image.fromarray(image).resize(size, Image.NEAREST))


def overlay_rows(cfg: Any, checkpoint: Path, count: int) -> list[tuple[str, list[str]]]:
    """(image name, [image, ground truth, prediction] as data URIs) for a seeded sample."""
    from PIL import Image

    from seglab.results.infer import colorize, load_model, palette_of, predict, read_rgb

    infos = _sample_validation(cfg, count)
    model = load_model(cfg.filename, checkpoint)
    palette = palette_of(model, len(model.dataset_meta["classes"]))
    rows = []
    for info, pred in zip(infos, predict(model, [i["img_path"] for i in infos]), strict=True):
        with Image.open(info["seg_map_path"]) as mask:
            truth = np.asarray(mask).astype(np.int64)
        if info.get("reduce_zero_label"):
            truth = np.where(truth == 0, 255, truth - 1)
        images = [read_rgb(info["img_path"]), colorize(truth, palette), colorize(pred, palette)]
        rows.append((Path(info["img_path"]).name, [render.png_uri(_shrink(i)) for i in images]))
    return rows


def _class_table(results: RunResults) -> tuple[list[str], list[list[str]], list[list[str]]]:
    keys = [k for k in ("IoU", "Acc", "Dice", "Fscore") if k in results.per_class]
    ious = results.per_class["IoU"]
    order = sorted(range(len(results.classes)),  # best first, NaN (absent) last
                   key=lambda i: (ious[i] is None, -(ious[i] or 0.0)))
    rows, styles = [], []
    for i in order:
        values = [results.per_class[k][i] for k in keys]
        rows.append([results.classes[i], *(render.fmt(v) for v in values)])
        styles.append(["", *(render.cell_style(v) for v in values)])
    return ["class", *keys], rows, styles


def build_report(work_dir: str | Path, overlays: int = 6, worst: int = 10) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` in the work dir; return their paths."""
    from mmengine.config import Config

    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        raise UserError(f"{work_dir}: no such work dir")
    results = load_results(work_dir)
    cfg = Config.fromfile(str(results.config_path)) if results.config_path else None
    ckpt, ckpt_lines = checkpoints(work_dir)
    title = f"seglab report: {work_dir.name}"
    summary = [[k, render.fmt(v)] for k, v in results.summary.items()]
    summary += recorded_rows([results.config_path])  # what configs/metafile.yaml says
    sections = [("Summary", render.table(["metric", "value"], summary)
                 + "<p>" + "<br>".join(html.escape(line) for line in ckpt_lines) + "</p>")]
    md = [f"# {title}", "", render.markdown_table(["metric", "value"], summary), "",
          *(f"- {line}" for line in ckpt_lines)]
    if cfg is not None:
        rows = config_summary(cfg)
        history = lineage(results.config_path)
        sections.append(("Config", render.table(["setting", "value"], [list(r) for r in rows])
                         + (f"<pre>{html.escape(chr(10).join(history))}</pre>"
                            if history else "")))
        md += ["", "## Config", "", render.markdown_table(["setting", "value"],
                                                           [list(r) for r in rows])]
        md += ["", "```", *history, "```"] if history else []
    charts = [render.line_chart({work_dir.name: results.curves[key]}, label, "step")
              for key, label in CURVES if results.curves.get(key)]
    if charts:
        sections.append(("Curves", f"<div class='charts'>{''.join(charts)}</div>"))
    header, rows, styles = _class_table(results)
    sections.append((f"Per-class results ({len(rows)} classes, best first)",
                     render.table(header, rows, styles)))
    sections.append(("Per-class IoU", render.bar_chart(
        [r[0] for r in rows], [None if r[1] == "nan" else float(r[1]) for r in rows], "IoU")))
    md += ["", "## Per-class results", "", render.markdown_table(header, rows)]
    confused = worst_classes(results, worst)
    confused_rows = [[c.name, render.fmt(c.iou), ", ".join(f"{n} {s:.1f}%" for n, s in
                                                            c.mistaken_for) or "-"]
                     for c in confused]
    sections.append((f"The {len(confused)} worst classes and what they are mistaken for",
                     render.table(["class", "IoU", "its pixels predicted as"], confused_rows)))
    md += ["", "## Worst classes", "", render.markdown_table(
        ["class", "IoU", "its pixels predicted as"], confused_rows)]
    if overlays and cfg is not None and ckpt is not None:
        sections.append(_overlay_section(cfg, ckpt, overlays))
    html_path, md_path = work_dir / "report.html", work_dir / "report.md"
    html_path.write_text(render.page(title, sections))
    md_path.write_text("\n".join(md) + "\n")
    return html_path, md_path


def _overlay_section(cfg: Any, ckpt: Path, count: int) -> tuple[str, str]:
    heading = f"Predictions ({ckpt.name}; seeded sample of validation images)"
    try:
        rows = overlay_rows(cfg, ckpt, count)
    except (FileNotFoundError, AssertionError, UserError) as err:
        return heading, f"<p>skipped: {html.escape(str(err))}</p>"
    cells = "".join(
        f"<tr><td>{html.escape(name)}</td>"
        + "".join(f"<td><img src='{uri}' alt='{kind}'></td>"
                  for uri, kind in zip(uris, ("image", "truth", "prediction"), strict=True))
        + "</tr>" for name, uris in rows)
    return heading, ("<table class='overlays'><tr><th>file</th><th>image</th>"
                     f"<th>ground truth</th><th>prediction</th></tr>{cells}</table>")
