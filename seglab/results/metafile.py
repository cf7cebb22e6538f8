"""``configs/metafile.yaml``: what each config scored, machine-readable.

mmseg's metafile shape (Name = the config's file stem, Config, Results with the
seeds' mIoU) plus seglab's Status (runs that collapsed or hit NaN losses have
no figure), Note and Reference (the official mmseg recipe's mIoU). The mIoU
columns of ``configs/CHANGELOG.md`` are these values as :meth:`Entry.seed_cell`
and :meth:`Entry.reference_cell` write them; a test checks both agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from seglab import REPO_ROOT
from seglab.errors import UserError
from seglab.results import render

METAFILE = REPO_ROOT / "configs" / "metafile.yaml"
NONE = "—"  # the CHANGELOG's empty cell
STATUS_CELLS = {"collapsed": "~0", "nan-loss": "NaN loss", "not-run": NONE, "demo": NONE}
STATUSES = ("recorded", *STATUS_CELLS)
SEED_LABEL = "mIoU of the seed's run (configs/metafile.yaml)"
REFERENCE_LABEL = "mIoU of mmseg's recipe (model zoo)"


@dataclass(frozen=True)
class Entry:
    name: str  # the config's file stem
    config: str  # "configs/<dir>/<name>.py"
    status: str
    seed_miou: float | None = None
    note: str = ""
    reference_name: str | None = None
    reference_miou: float | None = None

    def seed_cell(self) -> str:
        """The CHANGELOG's "mIoU (seed)" cell: "67.91", "59.33 (v1, ...)", "~0", "—"."""
        if self.seed_miou is None:
            return STATUS_CELLS[self.status]
        return render.fmt(self.seed_miou) + (f" ({self.note})" if self.note else "")

    def reference_cell(self) -> str:
        return NONE if self.reference_miou is None else render.fmt(self.reference_miou)


def _entry(model: dict, path: Path) -> Entry:
    name, status = model.get("Name"), model.get("Status")
    results = model.get("Results") or []
    results = [results] if isinstance(results, dict) else results  # mmseg writes both
    seed = [r["Metrics"]["mIoU"] for r in results if "mIoU" in r.get("Metrics", {})]
    reference = model.get("Reference") or {}
    if status not in STATUSES or (status == "recorded") != bool(seed):
        raise UserError(f"{path}: model {name!r} has Status {status!r}; expected one of "
                        f"{', '.join(STATUSES)}, and 'recorded' exactly when Results hold "
                        "an mIoU")
    return Entry(name, model["Config"], status, float(seed[0]) if seed else None,
                 model.get("Note", ""), reference.get("Name"),
                 reference.get("Metrics", {}).get("mIoU"))


@cache
def load_metafile(path: Path = METAFILE) -> dict[str, Entry]:
    """Entries by name (config file stem)."""
    import yaml

    if not path.is_file():
        return {}
    models = (yaml.safe_load(path.read_text()) or {}).get("Models") or []
    return {entry.name: entry for entry in (_entry(m, path) for m in models)}


def lookup(config: str | Path | None, path: Path = METAFILE) -> Entry | None:
    """The entry of a config, given its path (a work dir's dumped copy keeps the file name),
    its ``configs/...`` path or its name."""
    if config is None:
        return None
    name = Path(config).name
    return load_metafile(path).get(name[:-3] if name.endswith(".py") else name)


def recorded_rows(configs: Sequence[str | Path | None],
                  path: Path = METAFILE) -> list[list[str]]:
    """Summary rows [label, one cell per config] with the seed's and the reference mIoU,
    each only when some config has one."""
    entries = [lookup(c, path) for c in configs]
    rows = []
    for label, cell in ((SEED_LABEL, Entry.seed_cell), (REFERENCE_LABEL, Entry.reference_cell)):
        cells = [NONE if e is None else cell(e) for e in entries]
        if any(c != NONE for c in cells):
            rows.append([label, *cells])
    return rows
