"""``batchbench sweep`` as a user runs it: real servers, real Locust, the run folder on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness.models.zoo import ensure_model
from harness.plan.points import without_repeat
from harness.store.results import ResultStore
from tests.helpers import wait_for

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

WINDOWS = {
    "warmup_s": 1,
    "window_s": 1,
    "stability_tolerance": 0.5,
    "stable_windows": 3,
    "max_windows": 4,
    "min_requests": 20,
}


def write_spec(folder: Path, **spec) -> Path:
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump({"measurement": WINDOWS, **spec}))
    return path


def sweep_command(spec: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "harness", "sweep", str(spec), "--out", str(out), *extra]


def run_sweep(spec: Path, out: Path, *extra: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        sweep_command(spec, out, *extra),
        capture_output=True,
        text=True,
        timeout=400,
        cwd=REPO,
        env=env,
    )


def points_by_key(run: Path) -> dict:
    return {result.key: result for result in ResultStore.open(run).load_points()}


FAKE_TFS = """#!/bin/sh
# A stand-in tensorflow_model_server: records its command line, then runs the reference server
# with exactly those flags. One configuration never starts; another dies while it serves.
echo "$@" >> "{log}"
case "$*" in
  *mbs16-*) echo "fake: cannot start this configuration" >&2; exit 3 ;;
  *mbs4-*) exec timeout -s KILL 9 "{python}" -m reference_server "$@" ;;
esac
exec "{python}" -m reference_server "$@"
"""


def test_tfserving_target_flags_files_and_failing_points(tmp_path, models_dir):
    """The tfserving target runs the binary from PATH with TF Serving's flags and files; a
    configuration whose server never starts, and one whose server dies mid-point, each fail
    that point only, with the reason and the log; the others are measured."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "tensorflow_model_server"
    log = tmp_path / "fake-calls.txt"
    fake.write_text(FAKE_TFS.format(log=log, python=sys.executable))
    fake.chmod(0o755)
    base = ensure_model(models_dir, "mlp")
    spec = write_spec(
        tmp_path,
        name="fake-tfs",
        target={"kind": "tfserving"},
        model={"base_path": str(base), "name": "mlp"},
        server={
            "batching": {
                "max_batch_size": [8, 16, 4],
                "batch_timeout_micros": [500],
                "max_enqueued_batches": [32],
            }
        },
        load={"concurrency": [8]},
        measurement={**WINDOWS, "max_windows": 12, "stability_tolerance": 0.01},
    )
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    out = tmp_path / "run"
    completed = run_sweep(spec, out, "--no-report", env=env)
    assert completed.returncode == 0, completed.stdout + completed.stderr

    points = points_by_key(out)
    assert len(points) == 3
    ok = points["mbs8-bt500-meb32-r1-grpc-c8-rep0"]
    assert ok.status == "ok" and ok.metrics["throughput_rps"] > 0
    assert ok.telemetry["batches"] > 0 and ok.metrics["batch_size_mean"] >= 1
    never = points["mbs16-bt500-meb32-r1-grpc-c8-rep0"]
    assert never.status == "failed" and "did not start" in never.reason
    assert "fake: cannot start this configuration" in never.log_tail
    died = points["mbs4-bt500-meb32-r1-grpc-c8-rep0"]
    assert died.status == "failed"  # killed while measured (or, on a slow machine, earlier)
    assert died.log_tail

    calls = log.read_text().splitlines()
    assert len(calls) == 3
    flags = dict(arg.split("=", 1) for arg in calls[0].split())
    assert flags["--model_name"] == "mlp"
    assert flags["--enable_batching"] == "true"
    batching = Path(flags["--batching_parameters_file"]).read_text()
    assert "max_batch_size { value: 8 }" in batching
    assert "batch_timeout_micros { value: 500 }" in batching
    monitoring = Path(flags["--monitoring_config_file"]).read_text()
    assert "prometheus_config" in monitoring and "enable: true" in monitoring
    assert int(flags["--port"]) > 0 and int(flags["--rest_api_port"]) > 0
    assert int(flags["--tensorflow_intra_op_parallelism"]) >= 1

    csv = (out / "results.csv").read_text().splitlines()
    assert len(csv) == 4 and csv[0].startswith("key,status")
    run = json.loads((out / "run.json").read_text())
    assert run["interrupted"] is False and run["finished_at"]


def three_point_spec(folder: Path, models_dir: Path, name: str) -> Path:
    """An unbatched mlp swept over 3 concurrencies: points to interrupt and resume."""
    base = ensure_model(models_dir, "mlp")
    return write_spec(
        folder,
        name=name,
        model={"base_path": str(base), "name": "mlp"},
        server={"enable_batching": [False]},
        load={"concurrency": [2, 4, 6]},
    )


def test_killed_sweep_resumes_and_keeps_every_point_once(tmp_path, models_dir):
    spec = three_point_spec(tmp_path, models_dir, "resume")
    out = tmp_path / "run"
    harness = subprocess.Popen(
        sweep_command(spec, out, "--no-report"),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        points_dir = out / "points"
        wait_for(lambda: len(list(points_dir.glob("*.json"))) >= 1, 240, "the first point")
    finally:
        harness.send_signal(signal.SIGKILL)
        harness.wait()
    first = {p.name: p.read_bytes() for p in (out / "points").glob("*.json")}
    assert 1 <= len(first) < 3

    completed = run_sweep(spec, out, "--resume", str(out), "--no-report")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert f"resuming: {len(first)} points already done" in completed.stdout
    files = sorted(p.name for p in (out / "points").glob("*.json"))
    assert files == [f"nobatch-r1-grpc-c{c}-rep0.json" for c in (2, 4, 6)]
    for name, content in first.items():
        assert (out / "points" / name).read_bytes() == content  # not measured again
    assert all(r.status == "ok" for r in points_by_key(out).values())


def test_first_ctrl_c_finishes_the_current_point_then_stops(tmp_path, models_dir):
    spec = three_point_spec(tmp_path, models_dir, "interrupt")
    out = tmp_path / "run"
    harness = subprocess.Popen(
        sweep_command(spec, out, "--no-report"),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    for line in harness.stdout:
        lines.append(line)
        if line.startswith("[1/3]"):
            break
    time.sleep(1.0)  # inside the first point's measurement
    harness.send_signal(signal.SIGINT)
    output, _ = harness.communicate(timeout=120)
    assert harness.returncode == 130, "".join(lines) + output
    assert "finishing the current point" in output
    assert "--resume" in output  # how to carry on
    run = json.loads((out / "run.json").read_text())
    assert run["interrupted"] is True
    done = points_by_key(out)
    assert list(done) == ["nobatch-r1-grpc-c2-rep0"]
    assert done["nobatch-r1-grpc-c2-rep0"].status == "ok"


def test_find_max_rate_finds_the_capacity_of_a_known_server(tmp_path, models_dir):
    """The synthetic model sleeps 20 ms per batch; one batch thread with batches of one row
    serves at most 50 requests/s. The search must land near that: at most 10% above it, and
    at most 20% below (on a busy machine each batch also waits for a core, so the server's real
    capacity there is lower)."""
    base = ensure_model(models_dir, "synthetic", {"fixed_ms": 20.0, "per_item_ms": 0.0})
    spec = write_spec(
        tmp_path,
        name="maxrate",
        model={"base_path": str(base), "name": "synthetic"},
        server={
            "batching": {
                "max_batch_size": [1],
                "batch_timeout_micros": [0],
                "num_batch_threads": [1],
                "max_enqueued_batches": [16],
            }
        },
        load={
            "arrival": "constant",
            "find_max_rate": {
                "slo": {"latency_p99_ms": 400, "error_rate": 0.001},
                "start_rps": 30,
                "precision": 0.05,
            },
        },
        measurement={**WINDOWS, "window_s": 2, "warmup_s": 1, "stable_windows": 2},
    )
    out = tmp_path / "run"
    completed = run_sweep(spec, out, "--no-report")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    searches = json.loads((out / "max_rate.json").read_text())["searches"]
    assert len(searches) == 1
    found = searches[0]["max_rate_rps"]
    assert found is not None and 40 <= found <= 55, searches[0]["probes"]
    probes = {p["key"] for p in searches[0]["probes"]}
    assert probes == set(points_by_key(out))  # every probe is a stored point


def test_bursty_preset_in_small_sends_its_mix_and_keeps_kinds_timelines_and_padding(tmp_path):
    """The shipped ``bursty`` preset cut down to one padded configuration under Poisson and
    gamma CV 4 arrivals: each point is keyed by its traffic, its file has the figures of every
    request size in the mix and a per-second timeline with the server's side, and the report
    shows the padding waste and the timelines."""
    spec = yaml.safe_load((REPO / "harness/plan/presets/bursty.yaml").read_text())
    spec["server"]["batching"].update(
        batch_timeout_micros=[2000], allowed_batch_sizes=[[8, 16, 32]]
    )
    spec["measurement"] = {**WINDOWS, "max_windows": 3}
    path = tmp_path / "bursty.yaml"
    path.write_text(yaml.safe_dump(spec))
    run = tmp_path / "run"
    completed = run_sweep(path, run)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    points = points_by_key(run)
    suffix = "rps150{}-rows1w0.7_4w0.2_16w0.1-rep0"
    config = "mbs32-bt2000-nbt2-meb16-abs8.16.32-r1-grpc-"
    assert set(points) == {config + suffix.format(""), config + suffix.format("-gamma4")}
    for result in points.values():
        assert result.status == "ok"
        requests = {kind["rows"]: kind["metrics"]["requests"] for kind in result.by_kind}
        assert set(requests) == {1, 4, 16} and all(requests.values())
        assert 0.03 < requests[16] / sum(requests.values()) < 0.25
        seconds = [entry["at_s"] for entry in result.timeline]
        assert seconds == sorted(seconds) and result.timeline[0]["warmup"]
        assert any(entry["batch_size_mean"] for entry in result.timeline)
        assert result.telemetry["padding_rows"] > 0  # 1, 4 and 16 rows padded up to 8/16/32
    report = json.loads((run / "report.json").read_text())
    assert {series["key"] for series in report["timelines"]} <= set(points)
    assert report["timelines"]
    assert all(row["padding_compute_ms"] > 0 for row in report["batching"]["rows"])
    html = (run / "report.html").read_text()
    assert 'id="timelines"' in html and "Padded rows" in html


def write_trace(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_a_trace_is_a_load_axis_replayed_once_per_speed(tmp_path, models_dir):
    """``load: {trace: FILE, speed: [...]}``: each point replays the whole trace once at its
    speed (every request sent, none twice), keyed by the speed, judged on the whole pass, and
    the CSV and the report name the speed."""
    trace = write_trace(
        tmp_path / "day.jsonl",
        [{"t": round(i / 60, 4), "rows": 1 + i % 4} for i in range(120)],  # 2 s at 60/s
    )
    spec = write_spec(
        tmp_path,
        model={"base_path": str(ensure_model(models_dir, "mlp")), "name": "mlp"},
        server={"batching": {"max_batch_size": [8], "batch_timeout_micros": [1000]}},
        load={"trace": str(trace), "speed": [1, 2]},
        measurement={**WINDOWS, "warmup_s": 0.25, "window_s": 0.5, "min_requests": 10},
    )
    run = tmp_path / "run"
    completed = run_sweep(spec, run)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    points = points_by_key(run)
    assert set(points) == {f"mbs8-bt1000-r1-grpc-trace{s}-rep0" for s in (1, 2)}
    for result in points.values():
        assert result.status == "ok" and result.point.load_kind == "trace"
        assert result.point.traffic.trace == str(trace)
        assert sum(second["sent"] for second in result.timeline) == 120  # one pass
        assert {kind["rows"] for kind in result.by_kind} == {1, 2, 3, 4}
        # The warm-up stage stays out of the kinds' figures as it does out of the point's.
        kinds = sum(kind["metrics"]["requests"] for kind in result.by_kind)
        assert kinds == result.metrics["requests"] < sum(s["ok"] for s in result.timeline)
        assert result.stability["reason"].startswith("trace replay: the whole pass")
        assert set(result.stability["windows_used"]) == set(range(len(result.windows)))
    # At 2x the pass takes half as long: fewer windows of the same length.
    assert len(points["mbs8-bt1000-r1-grpc-trace2-rep0"].windows) < len(
        points["mbs8-bt1000-r1-grpc-trace1-rep0"].windows
    )
    rows = (run / "results.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert sorted(row.split(",")[header.index("speed")] for row in rows[1:]) == ["1.0", "2.0"]
    assert "Trace replay speed" in (run / "report.html").read_text()


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            [{"t": 0.5}, {"t": 0.2}],
            "day.jsonl:2: t 0.2 is earlier than the line before (0.5); sort the trace by t",
        ),
        (
            [{"t": 0.0, "model": "mlp"}, {"t": 0.1, "model": "resnet"}],
            "day.jsonl:2: model 'resnet' is not served; valid models: mlp",
        ),
        (
            [{"t": 0.0, "rows": 4}, {"t": 0.1, "rows": 16}],
            "day.jsonl:2: rows 16 is over max_batch_size 8 (the server refuses it); "
            "valid rows: 1-8",
        ),
    ],
)
def test_a_bad_trace_is_refused_before_anything_runs(tmp_path, lines, message):
    """Unsorted times, a model the servers do not host and rows over a configuration's
    max_batch_size: one line naming the file, line, key and valid values; no server started,
    no run folder made."""
    trace = write_trace(tmp_path / "day.jsonl", lines)
    spec = write_spec(
        tmp_path,
        model={"builtin": "mlp"},
        server={"batching": {"max_batch_size": [8, 32]}},
        load={"trace": str(trace), "speed": [1]},
    )
    run = tmp_path / "run"
    completed = run_sweep(spec, run)
    assert completed.returncode != 0
    errors = [line for line in completed.stderr.splitlines() if "day.jsonl" in line]
    assert errors == [f"batchbench: error: load.trace: {trace.parent}/{message}"]
    assert not run.exists()
    assert "Traceback" not in completed.stderr


def test_a_multi_model_sweep_serves_each_model_by_its_own_batching(tmp_path, models_dir):
    """Two models on one server, one with batching axes of its own and one on the shared
    axes: each configuration serves them through a model config file with a
    batching_params.pbtxt per model (TF Serving's per-model layout), the traffic follows the
    weights, each point keeps each model's figures, and the recommendation is a batching file
    per model with its figures."""
    mlp = str(ensure_model(models_dir, "mlp"))
    synthetic = str(ensure_model(models_dir, "synthetic"))
    spec = write_spec(
        tmp_path,
        models=[
            {
                "base_path": mlp,
                "name": "mlp",
                "weight": 3,
                "batching": {"max_batch_size": [4, 8], "batch_timeout_micros": [500]},
            },
            {"base_path": synthetic, "name": "synthetic", "weight": 1},
        ],
        server={"batching": {"max_batch_size": [2], "batch_timeout_micros": [3000]}},
        load={"concurrency": [4]},
        measurement={**WINDOWS, "stable_windows": 2, "max_windows": 2, "stability_tolerance": 1},
    )
    run = tmp_path / "run"
    completed = run_sweep(spec, run)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    points = points_by_key(run)
    configs = {f"mbs2-bt3000-mlp.mbs{size}.bt500-r1" for size in (4, 8)}
    assert set(points) == {f"{config}-grpc-c4-rep0" for config in configs}
    for config in configs:
        folder = run / "servers" / config
        files = {
            model: (folder / "models" / model / "1" / "batching_params.pbtxt").read_text()
            for model in ("mlp", "synthetic")
        }
        size = config.split("mlp.mbs")[1].split(".")[0]
        assert (
            files["mlp"]
            == f"max_batch_size {{ value: {size} }}\nbatch_timeout_micros {{ value: 500 }}\n"
        )
        assert (
            files["synthetic"]
            == "max_batch_size { value: 2 }\nbatch_timeout_micros { value: 3000 }\n"
        )
    for result in points.values():
        assert result.status == "ok"
        requests = {entry["model"]: entry["metrics"]["requests"] for entry in result.by_model}
        assert set(requests) == {"mlp", "synthetic"} and all(requests.values())
        assert sum(requests.values()) == pytest.approx(result.metrics["requests"], abs=8)
    completed = subprocess.run(
        [sys.executable, "-m", "harness", "recommend", str(run)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    rec = json.loads((run / "recommendation.json").read_text())
    if rec["chosen"] is not None:  # a loaded machine may leave every point out
        chosen = rec["chosen"]["config_key"]
        assert set(rec["per_model"]) == {"mlp", "synthetic"}
        for model in ("mlp", "synthetic"):
            written = (run / "per_model" / model / "batching_params.pbtxt").read_text()
            served = run / "servers" / chosen / "models" / model / "1" / "batching_params.pbtxt"
            assert written.endswith(served.read_text())
            assert rec["per_model"][model]["metrics"]["throughput_rps"] > 0
        assert "--enable_per_model_batching_parameters=true" in rec["commands"]["reference_server"]
    html = (run / "report.html").read_text()
    assert 'id="models"' in html


def test_search_preset_in_small_climbs_reports_its_path_and_confirms_its_pick(tmp_path):
    """The shipped ``search`` preset cut down to a 4 x 2 space (a range and a list, one value
    excluded) and a budget of 3 points: the quick search measures at most 3 configurations of
    the space, records its path, the report shows it, and the pick is confirmed in 2 rounds."""
    spec = yaml.safe_load((REPO / "harness/plan/presets/search.yaml").read_text())
    spec["server"]["batching"].update(
        max_batch_size={"min": 2, "max": 16, "scale": "pow2"},
        batch_timeout_micros=[0, 2000],
        num_batch_threads=[2],
    )
    spec["matrix"] = {"exclude": [{"max_batch_size": 16, "batch_timeout_micros": 2000}]}
    spec["search"] = {"strategy": "quick", "max_points": 3}
    # Any answered point qualifies, however loaded the machine: the test is about the walk.
    spec["recommend"]["slo"] = {"error_rate": 0.5}
    spec["confirm"] = {"top": 1, "rounds": 2}
    spec["measurement"] = {**WINDOWS, "stability_tolerance": 1.0, "max_windows": 3}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(spec))
    run = tmp_path / "run"
    completed = run_sweep(path, run)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "search quick: a space of 7 configurations" in completed.stdout
    assert "budget 3 points (43% of the space)" in completed.stdout
    search = json.loads((run / "search.json").read_text())
    measured = [t["key"] for t in search["trials"]]
    assert search["strategy"] == "quick" and search["space_size"] == 7
    assert 1 <= len(measured) <= 3 and search["measured"] == len(measured)
    assert set(points_by_key(run)) == set(measured)  # nothing outside the search's path
    assert measured[0].startswith("mbs4-bt0-") or measured[0].startswith("mbs8-bt0-")
    assert search["best"] in measured
    confirmed = {r.point.group_key for r in ResultStore.open(run / "confirm").load_points()}
    # 2 rounds of the recommender's pick among what the search measured (the best, or one
    # tied with it and cheaper by the tie-break)
    assert len(confirmed) == 1 and confirmed <= {without_repeat(key) for key in measured}
    html = (run / "report.html").read_text()
    assert "Search path: quick" in html and "of the space's 7 configurations" in html
