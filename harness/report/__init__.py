"""The HTML report of a run folder: ``write_report(run_dir)`` and its data, ``build_report_data``.

``data`` builds the report's content as plain data (pure; also written as ``report.json``),
``plots`` draws it as inline SVG, ``render`` puts both through the Jinja2 template into one
self-contained ``report.html``, and ``screenshot`` photographs it in headless Chromium.
"""

from __future__ import annotations

from harness.report.data import build_report_data
from harness.report.render import write_report

__all__ = ["build_report_data", "write_report"]
