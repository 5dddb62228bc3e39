"""End-to-end fixtures: one real ``batchbench demo`` run shared by the tests that read it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """``batchbench demo --out DIR`` run once (the default sweep, about 3-4 minutes): the
    completed process and its run folder."""
    out = tmp_path_factory.mktemp("demo")
    completed = subprocess.run(
        [sys.executable, "-m", "harness", "demo", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    runs = [p for p in out.iterdir() if (p / "run.json").exists()]
    if completed.returncode != 0 or len(runs) != 1:
        output = completed.stdout + completed.stderr
        pytest.fail(f"demo failed (exit code {completed.returncode}):\n{output}")
    return completed, runs[0]
