"""Self-contained HTML pieces: inline SVG charts, data-URI images, coloured tables.

Nothing refers to a network resource (no CDN script, font or stylesheet), so
a report opens the same on an air-gapped cluster as on a laptop.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

import numpy as np

STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;
max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.charts{display:flex;flex-wrap:wrap;gap:12px}.charts svg{max-width:100%;height:auto}
.text{text-align:left}.flag-regression{color:#b00020;font-weight:600}.flag-gain{color:#1b7f3b;font-weight:600}
.overlays img{width:100%;image-rendering:pixelated}.overlays td{vertical-align:top}
code{background:#f4f4f4;padding:1px 4px}pre{background:#f7f7f7;padding:8px;overflow:auto}
"""


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"  # text stays text: small, searchable
    return plt.subplots(figsize=(width, height))


def literal(text: str) -> str:
    """``text`` for matplotlib to draw as typed: class and run names are data, and a ``$``
    pair in one would be parsed as mathtext (drawn as a formula, or a ValueError when it
    is no valid one). Matplotlib draws ``\\$`` as ``$`` in text without math."""
    return text.replace("$", r"\$")


def line_chart(series: dict[str, Sequence[tuple[int, float]]], title: str, xlabel: str,
               ylabel: str = "") -> str:
    """One line per series (e.g. one per run), as inline SVG."""
    fig, ax = _figure(5.2, 3.0)
    for name, points in series.items():
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, label=literal(name), linewidth=1.4)
    ax.set_title(literal(title), fontsize=11)
    ax.set_xlabel(literal(xlabel))
    ax.set_ylabel(literal(ylabel))
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return _svg(fig)


def bar_chart(names: Sequence[str], values: Sequence[float | None], title: str) -> str:
    """Horizontal bars, one per class, in the given order (NaN drawn as an empty row)."""
    fig, ax = _figure(6.0, max(2.5, 0.16 * len(names) + 0.8))
    clean = [0.0 if v is None else v for v in values]
    ax.barh(range(len(names)), clean, color=[_rgb(v) for v in values])
    ax.set_yticks(range(len(names)), labels=[literal(n) for n in names], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_title(literal(title), fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig)


def _rgb(value: float | None) -> tuple[float, float, float]:
    if value is None:
        return (0.8, 0.8, 0.8)
    t = min(max(value / 100.0, 0.0), 1.0)
    return (0.85 - 0.6 * t, 0.3 + 0.5 * t, 0.3)


def cell_style(value: float | None) -> str:
    """A red-to-green background for a percentage."""
    if value is None:
        return "background:#eee"
    r, g, b = (int(255 * (0.55 + 0.45 * c)) for c in _rgb(value))
    return f"background:rgb({r},{g},{b})"


def fmt(value: float | None, digits: int = 2) -> str:
    return "nan" if value is None else f"{value:.{digits}f}"


def png_uri(image: np.ndarray) -> str:
    """An RGB uint8 array as a ``data:`` URI."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _numeric(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def table(header: Sequence[str], rows: Sequence[Sequence[str]],
          styles: Sequence[Sequence[str]] | None = None) -> str:
    """An HTML table; cells are escaped, ``styles`` (same shape as rows) colour them."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, cell in enumerate(row):
            style = styles[i][j] if styles and styles[i][j] else ""
            if not style and j and not _numeric(cell):
                style = "text"
            attr = f' style="{style}"' if style.startswith("background") else (
                f' class="{style}"' if style else "")
            cells.append(f"<td{attr}>{html.escape(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def page(title: str, sections: Sequence[tuple[str, str]]) -> str:
    """A whole HTML document: ``sections`` are (heading, inner HTML)."""
    parts = [f"<h2>{html.escape(h)}</h2>\n{body}" if h else body for h, body in sections]
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>\n" + "\n".join(parts) + "</body></html>")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
