"""The roll-out report: ``batchbench rollout``'s run folder (``rollout.json``) as one HTML page.

``rollout_report_data`` is pure (the document as ``batchbench rollout`` wrote it, arranged for
the page: each roll-out's figures, the versions side by side with their intervals);
``write_rollout_report`` writes ``report.json`` and ``report.html`` beside ``rollout.json``,
with the same self-contained page style as the sweep report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from markupsafe import Markup

from harness.decide.versions import version_rows
from harness.errors import UserError
from harness.report import plots
from harness.report.render import environment
from harness.store.layout import REPORT_HTML_FILE, REPORT_JSON_FILE
from harness.store.results import json_safe, write_atomically

ROLLOUT_FILE = "rollout.json"
ROLLOUT_KIND = "batchbench.rollout"
SCHEMA_VERSION = 1


def is_rollout_folder(folder: Path) -> bool:
    return (Path(folder) / ROLLOUT_FILE).is_file()


def read_rollout(folder: Path) -> dict[str, Any]:
    """``rollout.json``; UserError when it is not one or newer than this reader."""
    path = Path(folder) / ROLLOUT_FILE
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    if not isinstance(document, dict) or document.get("kind") != ROLLOUT_KIND:
        raise UserError(f"{path} is not a batchbench roll-out file")
    version = document.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise UserError(
            f"{path} has schema_version {version!r}; this batchbench reads up to {SCHEMA_VERSION}"
        )
    return document


def rollout_report_data(document: Mapping[str, Any]) -> dict[str, Any]:
    """The page's data: the spec, and per roll-out its figures, the server's state changes
    and its versions side by side."""
    runs = []
    for run in document["runs"]:
        runs.append(
            {
                **{key: run[key] for key in ("warmup_records", "protocol", "figures", "server")},
                "valid": run.get("valid", True),
                "invalid_reasons": run.get("invalid_reasons", []),
                "versions": version_rows(
                    run.get("by_version", []),
                    run.get("timeline", []),
                    f"warmup-{run['warmup_records']}",
                ),
                "timeline": run.get("timeline", []),
            }
        )
    return json_safe({"schema_version": SCHEMA_VERSION, "spec": document["spec"], "runs": runs})


def write_rollout_report(folder: Path) -> Path:
    """Write ``report.json`` (without the timelines, which ``rollout.json`` has) and
    ``report.html`` into the roll-out folder; returns the HTML's path."""
    folder = Path(folder)
    data = rollout_report_data(read_rollout(folder))
    charts = [plots.rollout_chart(run, i) for i, run in enumerate(data["runs"])]
    slim = {**data, "runs": [{k: v for k, v in r.items() if k != "timeline"} for r in data["runs"]]}
    write_atomically(folder / REPORT_JSON_FILE, json.dumps(slim, indent=1, allow_nan=False) + "\n")
    template = environment().get_template("rollout.html.j2")
    html = template.render(data=slim, charts=[Markup(c) if c else None for c in charts])
    return write_atomically(folder / REPORT_HTML_FILE, html)
