"""The run report: one self-contained ``report.html`` (inline CSS, PNGs embedded as base64 data
URIs, no scripts or external resources) and the plain-text metrics table the CLI prints."""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from . import __version__
from .rundir import atomic_write_text

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A metric is judged by the words of its name before "_at_" (tar_at_far_1e-3 is a TAR): these
# words make it better when smaller; all others when larger.
_LOWER_IS_BETTER = frozenset(
    {"loss", "error", "errors", "err", "eer", "far", "frr", "distance", "time", "seconds",
     "rank", "overlap"}
)  # fmt: skip
# Words of values that are settings or counts, not scores: never highlighted as "best".
_NOT_SCORES = frozenset({"threshold", "num", "count", "users", "samples", "epochs", "pairs"})

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 1.8em;
     border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ddd; padding: .3em .7em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f4f4f4; }
td.best { background: #e3f4e1; font-weight: bold; }
pre { background: #f7f7f7; padding: .8em; white-space: pre-wrap; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; }
footer { margin-top: 3em; color: #888; font-size: .8em; }
"""

Metrics = Mapping[str, Mapping[str, float]]
Image = str | Path | tuple[str | Path, str]


def _rows(metrics: Metrics) -> list[str]:
    """Metric names in first-seen order over the columns."""
    seen: dict[str, None] = {}
    for column in metrics.values():
        for name in column:
            seen.setdefault(name, None)
    return list(seen)


def _format_value(value: object) -> str:
    if isinstance(value, (bool, int)):
        return str(value)
    try:
        return f"{float(value):.4f}"  # numpy scalars, 0-d tensors
    except (TypeError, ValueError):
        return str(value)


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _words(name: str) -> set[str]:
    return set(re.split(r"[^a-z0-9]+", name.lower()))


def lower_is_better(metric: str) -> bool:
    """Whether a metric is better when smaller, judged from the words of its name before
    ``_at_`` (losses, errors, EER, FAR, distances, ranks, times)."""
    return bool(_words(metric.lower().split("_at_")[0]) & _LOWER_IS_BETTER)


def is_score(metric: str) -> bool:
    """Whether a metric is a score to compare (not a threshold, a count or a setting)."""
    return not _words(metric) & _NOT_SCORES


def best_columns(metrics: Metrics, metric: str) -> set[str]:
    """The columns holding the best value of ``metric`` (empty for thresholds and counts, and
    when fewer than two columns have a finite value or all values are equal)."""
    if not is_score(metric):
        return set()
    values = {c: _number(col.get(metric)) for c, col in metrics.items()}
    values = {c: v for c, v in values.items() if v is not None}
    if len(values) < 2 or len(set(values.values())) == 1:
        return set()
    best = (min if lower_is_better(metric) else max)(values.values())
    return {c for c, v in values.items() if v == best}


def format_metrics_table(metrics: Metrics) -> str:
    """Plain-text table, one row per metric and one column per setting (e.g. "trained",
    "untrained", "raw input"); numbers with 4 decimals, "-" where a column lacks a metric."""
    columns = list(metrics)
    header = ["metric", *columns]
    body = [
        [name, *(_format_value(metrics[c][name]) if name in metrics[c] else "-" for c in columns)]
        for name in _rows(metrics)
    ]
    widths = [max(len(row[k]) for row in [header, *body]) for k in range(len(header))]

    def line(row: list[str]) -> str:
        cells = [row[0].ljust(widths[0])] + [
            v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *map(line, body)])


def _flatten(config: Mapping[str, object], prefix: str = "") -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.extend(_flatten(value, f"{name}."))
        else:
            out.append((name, value))
    return out


def _config_html(config: Mapping[str, object]) -> str:
    if not config:
        return "<p>(empty)</p>"
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td><code>{html.escape(str(v))}</code></td></tr>"
        for k, v in _flatten(config)
    )
    return f"<table>{rows}</table>"


def _metrics_html(metrics: Metrics) -> str:
    if not metrics:
        return "<p>(no metrics)</p>"
    columns = list(metrics)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    rows = []
    for name in _rows(metrics):
        best = best_columns(metrics, name)
        cells = "".join(
            f'<td class="num{" best" if c in best else ""}">'
            f"{html.escape(_format_value(metrics[c][name]) if name in metrics[c] else '-')}</td>"
            for c in columns
        )
        rows.append(f"<tr><th>{html.escape(str(name))}</th>{cells}</tr>")
    note = "<p><small>Best value per row highlighted (lower is better for losses, errors, EER, "
    note += "FAR, distances, ranks and times; higher otherwise; thresholds and counts are not "
    note += "scores and are not highlighted).</small></p>"
    return f"<table><tr><th>metric</th>{head}</tr>{''.join(rows)}</table>{note}"


def _figure_html(image: Image) -> str:
    path, caption = image if isinstance(image, tuple) else (image, Path(image).stem)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"images: no such PNG file {str(path)!r}")
    data = path.read_bytes()
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError(f"images: {str(path)!r} is not a PNG file")
    b64 = base64.b64encode(data).decode("ascii")
    alt = html.escape(str(caption), quote=True)
    return (
        f'<figure><img alt="{alt}" src="data:image/png;base64,{b64}">'
        f"<figcaption>{html.escape(str(caption))}</figcaption></figure>"
    )


def write_report(
    run_dir: str | Path,
    *,
    title: str,
    config: Mapping[str, object],
    metrics: Metrics,
    images: Sequence[Image],
    notes: str | None = None,
) -> Path:
    """Write ``run_dir/report.html`` and return its path.

    ``metrics`` maps a column (e.g. "trained", "untrained", "raw input") to ``{metric: value}``;
    the columns are shown side by side with the best value of each row highlighted. ``images``
    are PNG paths, or ``(path, caption)`` pairs (the caption defaults to the file name). Nested
    config sections are flattened to dotted keys. Every string is HTML-escaped; the file needs no
    network, server or script to display.
    """
    run_dir = Path(run_dir)
    figures = "".join(_figure_html(img) for img in images)
    notes_html = f"<h2>Notes</h2><pre>{html.escape(notes)}</pre>" if notes else ""
    doc = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<h2>Metrics</h2>{_metrics_html(metrics)}"
        f"{notes_html}"
        f"<h2>Figures</h2>{figures or '<p>(no figures)</p>'}"
        f"<h2>Configuration</h2>{_config_html(config)}"
        f"<footer>written by metrickit {html.escape(__version__)}</footer>"
        "</body></html>\n"
    )
    return atomic_write_text(run_dir / "report.html", doc)
