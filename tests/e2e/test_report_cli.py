"""`batchbench report RUN` as a user runs it: the files it writes, its errors and exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNS = REPO / "tests" / "golden" / "runs"


def batchbench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
    )


def test_report_writes_html_and_json_into_the_run_folder(tmp_path):
    run = shutil.copytree(RUNS / "report-maxrate", tmp_path / "run")
    result = batchbench("report", str(run))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"report: {run / 'report.html'}"
    assert "<h2>6. Every point</h2>" in (run / "report.html").read_text()
    data = json.loads((run / "report.json").read_text())
    assert len(data["points"]) == len(list((run / "points").glob("*.json")))
    assert not (run / "report.png").exists()


def test_report_of_a_folder_that_is_no_run_is_a_usage_error(tmp_path):
    result = batchbench("report", str(tmp_path))
    assert result.returncode == 2
    assert "is not a batchbench run folder (no run.json)" in result.stderr
    assert "Traceback" not in result.stderr


def test_report_refuses_a_point_file_from_a_newer_batchbench(tmp_path):
    run = shutil.copytree(RUNS / "report-single", tmp_path / "run")
    point = next((run / "points").glob("*.json"))
    point.write_text(json.dumps({**json.loads(point.read_text()), "schema_version": 99}))
    result = batchbench("report", str(run))
    assert result.returncode == 2
    assert "newer batchbench" in result.stderr
