"""The per-class record on disk: ``class_metrics/<mode>_<unit>_<step>.json`` (everything)
and ``.csv`` (one row a class), written by ``ClassMetricsHook``, read by ``seglab.results``."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

RECORD_DIR = "class_metrics"
PER_CLASS_KEYS = ("IoU", "Acc", "Dice", "Fscore", "Precision", "Recall")




def write_record(record: dict[str, Any], stem: Path) -> tuple[Path, Path]:
    """``stem.json`` (everything) and ``stem.csv`` (one row per class)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = stem.with_suffix(".json"), stem.with_suffix(".csv")
    json_path.write_text(json.dumps(record))
    keys = [k for k in PER_CLASS_KEYS if k in record["per_class"]]
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["class", *keys, "support"])
        for i, name in enumerate(record["classes"]):
            values = [record["per_class"][k][i] for k in keys]
            writer.writerow([name, *("" if v is None else f"{v:.4f}" for v in values),
                             record["support"][i]])
    return json_path, csv_path
