"""The run folder: run.json, atomic point files, resume, schema versions, CSV, environment."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from harness.errors import UserError
from harness.metrics import metric_ids
from harness.plan.points import expand_matrix
from harness.plan.spec import validate_spec
from harness.store.environment import (
    collect_environment,
    git_info,
    parse_cpuinfo,
    parse_meminfo,
    parse_nvidia_smi,
)
from harness.store.results import SCHEMA_VERSION, PointResult, ResultStore, new_run_id
from harness.sweep.stability import WindowFigures, judge

ROOT = Path(__file__).resolve().parents[2]
RAW_SPEC = {
    "name": "t",
    "model": {"builtin": "mlp"},
    "server": {"enable_batching": [True, False], "batching": {"max_batch_size": [8, 32]}},
    "load": {"concurrency": [16]},
}
ENVIRONMENT = {"cpu_model": "test cpu", "cpu_count": 2}


@pytest.fixture
def spec():
    return validate_spec(RAW_SPEC, "spec.yaml")


@pytest.fixture
def store(tmp_path, spec):
    return ResultStore.create(tmp_path / "run", spec, expand_matrix(spec), ENVIRONMENT)


def ok_result(point, throughput=1000.0, p99=12.5):
    figures = [WindowFigures(throughput, p99, 2000)] * 3
    return PointResult(
        point,
        metrics={
            "throughput_rps": throughput,
            "latency_p99_ms": p99,
            "error_rate": 0.0,
            "batch_size_mean": 7.5,
            "latency_p999_ms": math.nan,
        },
        windows=[
            {"index": i, "duration_s": 1.0, "metrics": {"throughput_rps": throughput}}
            for i in range(3)
        ],
        histogram="HISTFAAAAB14nJNpmSzMwMDAyQABzFCaEUrzMEAAAAs4AGs=",
        stability=judge(figures).as_dict(),
        telemetry={"batch_size_histogram": {"8": 120}},
        started_at="2025-01-01T00:00:00+00:00",
    )


def test_run_json_holds_spec_as_given_points_and_environment(store, spec):
    info = json.loads(store.run_file.read_text())
    assert info["schema_version"] == SCHEMA_VERSION
    assert info["spec"] == RAW_SPEC and info["spec_source"] == "spec.yaml"
    assert [p["key"] for p in info["points"]] == [p.key for p in expand_matrix(spec)]
    assert info["environment"] == ENVIRONMENT
    assert store.planned_points() == expand_matrix(spec)


def test_creating_over_an_existing_run_is_refused(store, spec):
    with pytest.raises(UserError, match="already holds a run; resume it"):
        ResultStore.create(store.root, spec, [], ENVIRONMENT)


def test_point_file_round_trips_and_counts_as_completed(store, spec):
    point = expand_matrix(spec)[0]
    path = store.write_point(ok_result(point))
    assert path == store.points_dir / f"{point.key}.json"
    loaded = store.load_point(point.key)
    assert loaded.point == point and loaded.stable
    assert loaded.metrics["throughput_rps"] == 1000.0
    assert loaded.metrics["latency_p999_ms"] is None  # NaN is stored as null: strict JSON
    assert store.completed_keys() == {point.key}
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION


def test_writes_leave_no_temporary_files_and_ignore_stale_ones(store, spec):
    points = expand_matrix(spec)
    for point in points:
        store.write_point(ok_result(point))
    (store.points_dir / f".{points[0].key}.json.999.tmp").write_text("{partial")  # killed writer
    assert store.completed_keys() == {p.key for p in points}
    assert [p.name for p in store.points_dir.iterdir() if p.name.startswith(".")] == [
        f".{points[0].key}.json.999.tmp"
    ]
    assert len(store.load_points()) == len(points)


def test_rewriting_a_point_replaces_it(store, spec):
    point = expand_matrix(spec)[0]
    store.write_point(PointResult.failed(point, "server crashed", "Traceback ...\nBoom"))
    store.write_point(ok_result(point))
    assert store.load_point(point.key).status == "ok"


def test_failed_point_keeps_reason_and_log_tail(store, spec):
    point = expand_matrix(spec)[1]
    store.write_point(PointResult.failed(point, "never became ready", "line 1\nline 2"))
    loaded = store.load_point(point.key)
    assert (loaded.status, loaded.valid, loaded.reason) == ("failed", False, "never became ready")
    assert loaded.log_tail == "line 1\nline 2"
    assert point.key in store.completed_keys()


def test_points_load_in_run_order(store, spec):
    points = expand_matrix(spec)
    for point in reversed(points):
        store.write_point(ok_result(point))
    assert [r.point for r in store.load_points()] == points


def test_newer_schema_is_refused_clearly(store, spec):
    point = expand_matrix(spec)[0]
    path = store.write_point(ok_result(point))
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(
        UserError,
        match=r"written by a newer batchbench \(schema_version 2; this "
        r"one reads up to 1\): upgrade batchbench",
    ):
        store.load_points()


def test_files_without_schema_or_not_json_are_refused(store, spec):
    point = expand_matrix(spec)[0]
    store.point_path(point.key).write_text('{"key": "x"}')
    with pytest.raises(UserError, match="has no schema_version"):
        store.load_point(point.key)
    store.point_path(point.key).write_text("{not json")
    with pytest.raises(UserError, match="is not valid JSON"):
        store.load_point(point.key)


def test_open_needs_a_run_folder(tmp_path, store):
    with pytest.raises(UserError, match="not a batchbench run folder"):
        ResultStore.open(tmp_path / "elsewhere")
    assert ResultStore.open(store.root).run_info()["run_id"] == "run"


def test_resume_requires_the_same_spec(store, spec):
    ResultStore.open(store.root).check_resumable(spec)
    other = validate_spec({**RAW_SPEC, "repeats": 2})
    with pytest.raises(UserError, match="started with a different spec"):
        store.check_resumable(other)


def test_results_csv_has_one_row_per_point_and_metric_id_columns(store, spec):
    points = expand_matrix(spec)
    store.write_point(ok_result(points[0], throughput=1500.0))
    store.write_point(PointResult.failed(points[2], "crashed"))
    frame = pd.read_csv(store.write_csv())
    assert list(frame["key"]) == [points[0].key, points[2].key]
    assert set(metric_ids()) <= set(frame.columns)
    first, failed = frame.iloc[0], frame.iloc[1]
    assert first["throughput_rps"] == 1500.0 and first["max_batch_size"] == 8
    assert first["stability"] == "stable" and first["concurrency"] == 16
    assert math.isnan(first["latency_p999_ms"])
    assert failed["status"] == "failed" and failed["reason"] == "crashed"
    assert not failed["enable_batching"]


def test_results_csv_keeps_one_point_per_line_when_a_reason_spans_lines(store, spec):
    points = expand_matrix(spec)
    reason = "StatusCode.UNAVAILABLE\n  failed to connect:\n  Connection refused"
    store.write_point(PointResult.failed(points[0], reason))
    lines = store.write_csv().read_text().splitlines()
    assert len(lines) == 2  # the header and the one point
    assert lines[1].endswith("StatusCode.UNAVAILABLE failed to connect: Connection refused,,")


def test_extra_files_are_versioned(store):
    path = store.write_extra("max_rate.json", {"searches": []})
    assert json.loads(path.read_text()) == {"schema_version": SCHEMA_VERSION, "searches": []}


def test_run_id_sorts_by_time():
    assert new_run_id("demo", datetime(2025, 3, 4, 5, 6, 7)) == "20250304-050607-demo"


# --- environment (recorded in run.json) ---------------------------------------------------------


def test_environment_describes_this_machine():
    env = collect_environment(ROOT)
    assert env["cpu_count"] >= 1 and env["python"].count(".") == 2
    assert isinstance(env["gpus"], list)
    assert set(env["packages"]) >= {"tensorflow", "grpcio", "locust"}
    json.dumps(env)


def test_environment_outside_a_repository_has_no_git(tmp_path):
    assert git_info(tmp_path) is None


def test_environment_parsers():
    assert parse_cpuinfo("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n") == "AMD EPYC 7B13"
    assert parse_cpuinfo("Hardware\t: BCM2835\n") == "BCM2835"
    assert parse_meminfo("MemTotal:       16314532 kB\nMemFree: 1 kB\n") == 16314532 * 1024
    assert parse_nvidia_smi("NVIDIA H100, 81559 MiB, 550.54\n") == [
        {"name": "NVIDIA H100", "memory": "81559 MiB", "driver": "550.54"}
    ]
    assert parse_nvidia_smi("") == []


def test_harness_core_never_imports_tensorflow():
    code = (
        "import sys, harness.plan.spec, harness.plan.points, harness.plan.strategies, "
        "harness.store.results, harness.plan.preflight, harness.store.environment, "
        "harness.plan.batching_file, harness.sweep.stability\n"
        "harness.store.environment.collect_environment()\n"
        "bad = [m for m in ('tensorflow', 'reference_server', 'locust') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
