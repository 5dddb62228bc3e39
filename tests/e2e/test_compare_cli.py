"""`batchbench compare`, `recommend` and `ci` as a user runs them: exit codes, files, words."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.decide.compare import write_baseline

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "runs"


def batchbench(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


@pytest.fixture
def runs(tmp_path):
    """Writable copies of the golden ci runs (compare writes its files into CURRENT)."""
    for name in ("ci-base", "ci-rerun", "ci-wobble", "ci-slower"):
        shutil.copytree(GOLDEN / name, tmp_path / name)
    return tmp_path


def test_unchanged_run_exits_0_and_writes_its_files(runs):
    result = batchbench("compare", runs / "ci-base", runs / "ci-rerun")
    assert result.returncode == 0, result.stderr
    assert "compared 5 point(s): no regression" in result.stdout
    for name in ("compare.json", "compare.md", "compare-junit.xml"):
        assert (runs / "ci-rerun" / name).is_file()
    assert json.loads((runs / "ci-rerun" / "compare.json").read_text())["verdict"] == "pass"


def test_20_percent_throughput_drop_exits_1(runs, tmp_path):
    summary = tmp_path / "summary.md"
    result = batchbench("compare", runs / "ci-base", runs / "ci-slower", "--step-summary", summary)
    assert result.returncode == 1, result.stderr
    assert "REGRESSION in" in result.stdout
    assert "❌ 5 point(s) regressed" in summary.read_text()


def test_3_percent_wobble_exits_0(runs):
    result = batchbench("compare", runs / "ci-base", runs / "ci-wobble")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_missing_point_is_reported(runs):
    missing = "mbs8-bt0-nbt2-meb16-r1-grpc-c32"
    for repeat in (0, 1):
        (runs / "ci-rerun" / "points" / f"{missing}-rep{repeat}.json").unlink()
    result = batchbench("compare", runs / "ci-base", runs / "ci-rerun")
    assert result.returncode == 0, result.stderr
    assert "1 missing in current" in result.stdout
    points = json.loads((runs / "ci-rerun" / "compare.json").read_text())["points"]
    assert {p["key"]: p["status"] for p in points}[missing] == "missing_in_current"


def test_a_stricter_threshold_on_the_command_line_is_used(runs):
    result = batchbench(
        "compare", runs / "ci-base", runs / "ci-slower", "--threshold-throughput", "0.5",
        "--threshold-p99", "0.5",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout


def test_a_baseline_file_stands_for_base(runs):
    baseline = runs / "baseline.json"
    write_baseline(runs / "ci-base", baseline)
    assert batchbench("compare", baseline, runs / "ci-rerun").returncode == 0
    assert batchbench("compare", baseline, runs / "ci-slower").returncode == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("compare", "{tmp}/nowhere", "{tmp}/ci-base"), "does not exist"),
        (("compare", "{tmp}/ci-base", "{tmp}"), "is not a batchbench run folder"),
        (("compare", "{tmp}/ci-base", "{tmp}/ci-rerun", "--threshold", "p99=1"), "METRIC=FRACTION"),
        (("compare", "{tmp}/ci-base", "{tmp}/ci-rerun", "--threshold-p99", "x"), "--threshold-p99"),
        (("compare", "{tmp}/ci-base"), "the following arguments are required: current"),
    ],
)
def test_bad_input_exits_2_with_a_message(runs, args, message):
    result = batchbench(*(a.format(tmp=runs) for a in args))
    assert result.returncode == 2
    assert message in result.stderr


def test_ci_without_a_baseline_exits_2_before_sweeping(tmp_path):
    result = batchbench("ci", "--baseline", tmp_path / "none.json", cwd=tmp_path)
    assert result.returncode == 2
    assert "no baseline at" in result.stderr
    assert "batchbench ci --update-baseline" in result.stderr
    assert not any(tmp_path.iterdir())  # nothing was run


def test_recommend_prints_the_sentence_and_the_paths(tmp_path):
    run = shutil.copytree(GOLDEN / "grid", tmp_path / "grid")
    result = batchbench("recommend", run, "--slo-p99-ms", "30", "--max-error-rate", "0.01")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Use max_batch_size=32") and "p99 latency ≤ 30 ms" in lines[0]
    assert f"recommendation: {run / 'recommendation.json'}" in lines
    assert f"batching_parameters: {run / 'batching_parameters.txt'}" in lines


def test_recommend_bad_input_exits_2(tmp_path):
    run = shutil.copytree(GOLDEN / "grid", tmp_path / "grid")
    result = batchbench("recommend", run, "--constraint", "latency_p99_ms>=3")
    assert result.returncode == 2 and "latency_p99_ms<=X" in result.stderr
    result = batchbench("recommend", tmp_path / "nope")
    assert result.returncode == 2 and "not a batchbench run folder" in result.stderr
