"""``seglab compare RUN_A RUN_B [...]``: what changed, class by class, and why.

Per-class deltas against the first run (sorted; regressions and gains beyond
a threshold flagged — seed 002: "bicycle 64.18 -> 42.82 while the mean rose"),
the summary metrics side by side, overlaid curves and the resolved-config diff
when the runs are work dirs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from seglab.results import render
from seglab.results.metafile import recorded_rows
from seglab.results.records import SUMMARY_KEYS, RunResults, load_results

CURVE_KEYS = ("mIoU", "loss", "lr")


@dataclass
class ClassRow:
    name: str
    values: list[float | None]  # one per run
    delta: float | None  # last run minus first
    flag: str  # "REGRESSION", "GAIN" or ""


def class_rows(runs: list[RunResults], key: str = "IoU",
               threshold: float = 1.0) -> list[ClassRow]:
    """Classes of the first run (others aligned by name), sorted by delta, worst first."""
    lookup = [dict(zip(r.classes, r.per_class.get(key, []), strict=False)) for r in runs]
    rows = []
    for name in runs[0].classes:
        values = [table.get(name) for table in lookup]
        first, last = values[0], values[-1]
        delta = None if first is None or last is None else last - first
        flag = ("" if delta is None or abs(delta) < threshold
                else "REGRESSION" if delta < 0 else "GAIN")
        rows.append(ClassRow(name, values, delta, flag))
    return sorted(rows, key=lambda r: (r.delta is None, r.delta if r.delta is not None else 0))


def summary_rows(runs: list[RunResults]) -> list[list[str]]:
    keys = [k for k in SUMMARY_KEYS if any(k in r.summary for r in runs)]
    rows = [[k, *(render.fmt(r.summary.get(k)) for r in runs)] for k in keys]
    rows.append(["mean IoU of the table", *(render.fmt(r.mean("IoU")) for r in runs)])
    return rows + recorded_rows([r.config_path for r in runs])  # configs/metafile.yaml


def config_diff(runs: list[RunResults]) -> list[tuple[str, object, object]] | None:
    first, last = runs[0].config_path, runs[-1].config_path
    if first is None or last is None:
        return None
    from mmengine.config import Config

    from seglab.config.diff import diff_configs

    ignored = ("work_dir", "launcher", "load_from", "resume")
    return [row for row in diff_configs(Config.fromfile(str(first)), Config.fromfile(str(last)))
            if not row[0].startswith(ignored)]


def _headers(runs: list[RunResults]) -> list[str]:
    return [r.name for r in runs]


def compare_markdown(runs: list[RunResults], threshold: float = 1.0) -> str:
    rows = class_rows(runs, threshold=threshold)
    names = _headers(runs)
    out = [f"# seglab compare: {' vs '.join(names)}", "", "## Summary", "",
           render.markdown_table(["metric", *names], summary_rows(runs)), "",
           f"## Per-class IoU ({names[-1]} - {names[0]}), worst first", ""]
    out.append(render.markdown_table(
        ["class", *names, "delta", ""],
        [[r.name, *(render.fmt(v) for v in r.values), render.fmt(r.delta), r.flag]
         for r in rows]))
    regressions = [r.name for r in rows if r.flag == "REGRESSION"]
    gains = [r.name for r in rows if r.flag == "GAIN"]
    out += ["", f"{len(regressions)} regression(s), {len(gains)} gain(s) of at least "
            f"{threshold:g} IoU points" + (f"; regressions: {', '.join(regressions)}"
                                          if regressions else "")]
    diff = config_diff(runs)
    if diff is not None:
        out += ["", f"## Config diff ({len(diff)} resolved fields)", ""]
        out += [f"- `{key}`: `{a!r}` -> `{b!r}`" for key, a, b in diff]
    return "\n".join(out) + "\n"


def compare_html(runs: list[RunResults], threshold: float = 1.0) -> str:
    names = _headers(runs)
    rows = class_rows(runs, threshold=threshold)
    sections = [("Summary", render.table(["metric", *names], summary_rows(runs)))]
    charts = []
    for key in CURVE_KEYS:
        series = {r.name: r.curves.get(key, []) for r in runs if r.curves.get(key)}
        if series:
            charts.append(render.line_chart(series, key, "step"))
    if charts:
        sections.append(("Curves", f"<div class='charts'>{''.join(charts)}</div>"))
    styles = [["", *(render.cell_style(v) for v in r.values), "",
               f"flag-{r.flag.lower()}" if r.flag else ""] for r in rows]
    sections.append((f"Per-class IoU ({names[-1]} - {names[0]}), worst first", render.table(
        ["class", *names, "delta", ""],
        [[r.name, *(render.fmt(v) for v in r.values), render.fmt(r.delta), r.flag]
         for r in rows], styles)))
    diff = config_diff(runs)
    if diff is not None:
        sections.append((f"Config diff ({len(diff)} resolved fields)", render.table(
            ["key", names[0], names[-1]], [[k, repr(a), repr(b)] for k, a, b in diff])))
    return render.page(f"seglab compare: {' vs '.join(names)}", sections)


def run_compare(sources: list[str], threshold: float = 1.0, out: str | None = None) -> str:
    """Load, compare, optionally write ``out`` (.html or .md); return the Markdown."""
    runs = [load_results(s) for s in sources]
    text = compare_markdown(runs, threshold)
    if out:
        path = Path(out)
        path.write_text(compare_html(runs, threshold) if path.suffix == ".html" else text)
    return text
