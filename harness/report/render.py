"""The report's edges: render the data through Jinja2 and write the files into the run folder.

``write_report(run_dir)`` is what ``batchbench sweep`` calls when a sweep ends and what
``batchbench report RUN`` runs: it writes ``report.json`` (the data, as built) and
``report.html`` (one self-contained file: inline CSS, inline SVG charts, a few lines of inline
JavaScript, no external URL).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from harness.metrics import metric
from harness.report import plots
from harness.report.data import build_report_data, check_run_dir, format_micros
from harness.store.layout import REPORT_HTML_FILE, REPORT_JSON_FILE
from harness.store.results import write_atomically

# The table's metric columns, in order (IDs from the one registry).
TABLE_METRICS = (
    "throughput_rps",
    "latency_p50_ms",
    "latency_p99_ms",
    "latency_p999_ms",
    "error_rate",
    "batch_size_mean",
    "queue_time_mean_ms",
    "rejected_rate",
)


def write_report(run_dir: Path) -> Path:
    """Write ``report.json`` and ``report.html`` into ``run_dir``; returns the HTML's path.

    ``report.png`` is ``screenshot.capture``'s job (it needs a browser; see ``batchbench report
    --screenshot``).
    """
    run_dir = check_run_dir(run_dir)
    data = build_report_data(run_dir)
    text = json.dumps(data, indent=1, allow_nan=False) + "\n"
    write_atomically(run_dir / REPORT_JSON_FILE, text)
    return write_atomically(run_dir / REPORT_HTML_FILE, render_html(data))


def render_html(data: Mapping[str, Any]) -> str:
    """The report page for ``data`` (from ``build_report_data``)."""
    charts = _as_markup(plots.all_charts(data))
    template = environment().get_template("report.html.j2")
    return template.render(data=data, charts=charts, table_metrics=TABLE_METRICS)


def environment() -> jinja2.Environment:
    """The reports' Jinja2 environment: their templates, autoescape, the number filters."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("harness.report", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(num=format_value, pct=format_percent, micros=_micros, label=_label)
    env.filters.update(header=_header, plain=_plain)
    return env


def _as_markup(charts: Mapping[str, Any]) -> dict[str, Any]:
    """Charts as Markup: SVG made by matplotlib from our data (it escapes the text it writes)."""

    def mark(value: Any) -> Any:
        if isinstance(value, list):
            return [mark(v) for v in value]
        return None if value is None else Markup(value)

    return {name: mark(value) for name, value in charts.items()}


def format_value(value: Any, digits: int = 3) -> str:
    """Numbers for people: ``12,345``, ``12.3``, ``0.0123``; a dash when missing."""
    if value is None or isinstance(value, bool):
        return "—" if value is None else ("yes" if value else "no")
    if not isinstance(value, (int, float)):
        return str(value)
    if not math.isfinite(value):
        return "—"
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def format_percent(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "—"
    return f"{value:.1%}" if math.isfinite(value) else "—"


def _micros(value: Any) -> str:
    return "default" if value is None else format_micros(value)


def _label(metric_id: str) -> str:
    return metric(metric_id).label()


def _header(metric_id: str) -> str:
    return metric(metric_id).header


def _plain(value: Any) -> str:
    """Environment values: nested mappings and lists as compact text."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {_plain(v)}" for k, v in value.items()) or "—"
    if isinstance(value, list):
        return "; ".join(_plain(v) for v in value) or "—"
    return "—" if value is None else str(value)
