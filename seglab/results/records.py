"""A run's results, from wherever they are: a work dir, a record, a log, a pasted table.

The seeds compare experiments by pasting ``tools/test.py``'s per-class table
into notes; ``load_results`` reads those tables (and whole mmengine logs), the
JSON records ``ClassMetricsHook`` writes, and work dirs (newest record, curves
from ``scalars.json``, the dumped config), so old and new runs compare alike.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seglab.errors import UserError
from seglab.evaluation.record import RECORD_DIR

SUMMARY_KEYS = ("aAcc", "mIoU", "mAcc", "mDice", "mFscore")
_SUMMARY_RE = re.compile(r"\b(aAcc|mIoU|mAcc|mDice|mFscore|mPrecision|mRecall):\s*([0-9.]+)")


@dataclass
class RunResults:
    name: str
    classes: list[str]
    per_class: dict[str, list[float | None]]  # "IoU" -> one value per class (percent)
    summary: dict[str, float] = field(default_factory=dict)
    confusion: list[list[int]] | None = None
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # key -> (step, v)
    config_path: Path | None = None
    source: str = ""

    def mean(self, key: str = "IoU") -> float:
        values = [v for v in self.per_class.get(key, []) if v is not None]
        return float(np.mean(values)) if values else float("nan")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parse_tables(text: str) -> list[tuple[list[str], dict[str, list[float | None]]]]:
    """Every per-class table (PrettyTable or Markdown, header starting with 'Class')."""
    tables = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        cells = _cells(line) if line.startswith("|") else []
        if cells and cells[0] == "Class" and len(cells) > 1:
            keys, classes = cells[1:], []
            values: dict[str, list[float | None]] = {k: [] for k in keys}
            i += 1
            while i < len(lines) and lines[i].strip().startswith(("|", "+")):
                row = lines[i].strip()
                i += 1
                if row.startswith("+") or set(row) <= set("|-: "):
                    continue  # PrettyTable border or Markdown separator
                cells = _cells(row)
                if len(cells) != len(keys) + 1:
                    break
                classes.append(cells[0])
                for key, cell in zip(keys, cells[1:], strict=True):
                    values[key].append(None if cell.lower() in ("nan", "") else float(cell))
            if classes:
                tables.append((classes, values))
            continue
        i += 1
    return tables


def _from_text(path: Path, table: int | None = None) -> RunResults:
    """The last per-class table of a text file, or its ``table``-th (1-based)."""
    text = path.read_text(errors="replace")
    tables = parse_tables(text)
    if not tables:
        raise UserError(f"{path}: no per-class table found (expected the '| Class | IoU | Acc |' "
                        "table that tools/test.py prints). Fix: pass a work dir, a "
                        f"{RECORD_DIR}/*.json record, or a log that contains the table.")
    if table is not None and not 1 <= table <= len(tables):
        raise UserError(f"{path}#{table}: the file holds {len(tables)} per-class table(s); "
                        f"use #1..#{len(tables)}")
    classes, values = tables[-1 if table is None else table - 1]
    after = text[text.rfind("Class"):] if table is None else ""
    summary = {k: float(v) for k, v in _SUMMARY_RE.findall(after)}
    name = path.stem if table is None else f"{path.stem}#{table}"
    return RunResults(name, classes, values, summary, source=str(path))


# what compare and report read instead: the places seglab's own records are
_RECORD_SOURCES = (f"a run's work dir or one of its {RECORD_DIR}/*.json records (what seglab "
                   "train / seglab test write), or a log/table file")


def _json_kind(value: object) -> str:
    return ("null" if value is None else "a boolean" if isinstance(value, bool) else
            {dict: "an object", list: "a list", str: "a string", int: "a number",
             float: "a number"}.get(type(value), type(value).__name__))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_value(value: object) -> bool:
    """A per-class or summary value: a number, or null (NaN: the class is absent)."""
    return value is None or _is_number(value)


def _record_problem(record: object) -> str | None:
    """Why ``record`` is not what ``ClassMetricsHook`` writes (None: it is); only the keys
    read here are checked, so records that gain keys stay readable."""
    if not isinstance(record, dict):
        return (f"it holds {_json_kind(record)}, where a record is a JSON object with "
                "'classes' and 'per_class'")
    missing = [k for k in ("classes", "per_class") if k not in record]
    if missing:
        keys = ", ".join(repr(k) for k in list(record)[:5]) or "none"
        return (f"no {' or '.join(repr(k) for k in missing)} key (its keys: {keys}"
                + (", ..." if len(record) > 5 else "") + ")")
    classes, per_class = record["classes"], record["per_class"]
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        return ("'classes' is an empty list" if classes == [] else
                f"'classes' is {_json_kind(classes)}, not a list of class names")
    if not isinstance(per_class, dict):
        return f"'per_class' is {_json_kind(per_class)}, not an object of per-class lists"
    for key, values in per_class.items():
        if not (isinstance(values, list) and len(values) == len(classes)
                and all(_is_value(v) for v in values)):
            return (f"'per_class' {key!r} is not a list of {len(classes)} numbers (one per "
                    "class)")
    summary = record.get("summary", {})
    if not (isinstance(summary, dict) and all(_is_value(v) for v in summary.values())):
        return "'summary' is not an object of numbers"
    confusion = record.get("confusion")
    if confusion is not None and not (
            isinstance(confusion, list) and len(confusion) == len(classes)
            and all(isinstance(row, list) and len(row) == len(classes)
                    and all(_is_number(v) for v in row) for row in confusion)):
        return (f"'confusion' is not a {len(classes)} x {len(classes)} matrix (one row and "
                "column per class)")
    return None


def _from_record(path: Path, name: str | None = None) -> RunResults:
    try:
        record = json.loads(path.read_text())
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not a seglab record: not text ({err.reason} at byte "
                        f"{err.start}). Fix: pass {_RECORD_SOURCES}.") from err
    except json.JSONDecodeError as err:
        # what a writer stopped mid-file leaves: the newest record of a crashed run
        raise UserError(f"{path}: not a seglab record: not valid JSON ({err.msg} at line "
                        f"{err.lineno} column {err.colno}), as a record cut short by a run "
                        "stopped mid-write is. Fix: delete it (its work dir then uses the "
                        "previous record) or re-run the evaluation that writes it (seglab "
                        f"test); for other results pass {_RECORD_SOURCES}.") from err
    problem = _record_problem(record)
    if problem is not None:
        raise UserError(f"{path}: not a seglab record: {problem}. Fix: pass "
                        f"{_RECORD_SOURCES}.")
    return RunResults(name or path.stem, record["classes"], record["per_class"],
                      record.get("summary", {}), record.get("confusion"), source=str(path))


def _record_order(path: Path) -> tuple[int, int]:
    """test first (the final evaluation), then the latest validation."""
    if path.stem == "test":
        return (2, 0)
    match = re.search(r"_(\d+)$", path.stem)
    return (1, int(match.group(1)) if match else 0)


def read_curves(work_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars mmengine logged (``*/vis_data/scalars.json``), concatenated across resumes."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for scalars in sorted(work_dir.glob("*/vis_data/scalars.json")):
        for line in scalars.read_text().splitlines():
            entry = json.loads(line) if line.strip() else {}
            step = entry.pop("step", None)
            if step is None:
                continue
            for key, value in entry.items():
                if isinstance(value, (int, float)) and key not in ("epoch", "iter"):
                    curves.setdefault(key, []).append((int(step), float(value)))
    return curves


def _from_work_dir(work_dir: Path) -> RunResults:
    records = sorted((work_dir / RECORD_DIR).glob("*.json"), key=_record_order)
    if records:
        results = _from_record(records[-1], work_dir.name)
    else:
        logs = sorted(work_dir.glob("*/*.log"))
        if not logs:
            raise UserError(f"{work_dir}: no {RECORD_DIR}/ records and no log. Fix: pass a "
                            "seglab work dir, a record, or a log/table file.")
        results = _from_text(logs[-1])
        results.name = work_dir.name
    results.curves = read_curves(work_dir)
    configs = sorted(work_dir.glob("*.py"))
    results.config_path = configs[0] if configs else None
    results.source = str(work_dir)
    return results


def load_results(source: str | Path) -> RunResults:
    """A work dir, a ``class_metrics`` JSON record, or a text log / pasted table
    (``notes.txt#2``: the second table in the file)."""
    path, table = Path(source), None
    if not path.exists() and (match := re.fullmatch(r"(.+)#(\d+)", str(source))):
        path, table = Path(match.group(1)), int(match.group(2))
        if path.is_file():
            return _from_text(path, table)
    if path.is_dir():
        return _from_work_dir(path)
    if not path.is_file():
        raise UserError(f"{path}: no such work dir or file")
    if path.suffix == ".json":
        return _from_record(path)
    return _from_text(path)
