"""Write the report's golden run folders: ``python tests/golden/make_report_runs.py``.

Three small run folders under ``tests/golden/runs/``, built through the harness's own types
(SweepSpec, expand_matrix, MaxRateSearch, PointResult, ResultStore) with numbers from a simple,
seeded model of a batching server on two cores, so they have the shape and the trade-off of a
real sweep: batching multiplies throughput until the cores are busy, a timeout longer than it
takes to fill a batch adds to p99, and the unbatched baseline saturates first.

- ``report-grid``: closed loop at two loads, 1-2 replicas, max_batch_size x timeout, the
  unbatched baseline and TF Serving's defaults, one failed, one unstable and one invalid point.
- ``report-maxrate``: ``find_max_rate`` searches (open loop), two repeats, ``max_rate.json``.
- ``report-single``: one point against an external server, no telemetry, no SLO.

Histograms are left out (null) to keep the files small; nothing else is faked.
"""

from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from harness.plan.points import Point, expand_matrix  # noqa: E402
from harness.plan.spec import validate_spec  # noqa: E402
from harness.plan.strategies import MaxRateSearch  # noqa: E402
from harness.store.results import PointResult, ResultStore, write_json  # noqa: E402
from harness.sweep.stability import judge  # noqa: E402

RUNS = Path(__file__).resolve().parent / "runs"
CREATED_AT = "2025-01-15T10:00:00+00:00"
FINISHED_AT = "2025-01-15T10:04:12+00:00"
ENVIRONMENT = {
    "cpu_model": "Example CPU @ 2.0GHz",
    "cpu_count": 2,
    "cpus_usable": 2,
    "memory_bytes": 25769803776,
    "gpus": [],
    "os": "Linux-6.1.0-x86_64-with-glibc2.36",
    "hostname": "bench-host",
    "python": "3.11.2",
    "python_implementation": "CPython",
    "packages": {"batchbench": "0.1.0", "tensorflow": "2.21.0", "locust": "2.40.0"},
    "git": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False},
}
BATCH_BOUNDS = [2**i for i in range(14)]

GRID_SPEC = {
    "name": "report-grid",
    "description": "Golden run for the report: mlp, max_batch_size x timeout x replicas.",
    "model": {"builtin": "mlp"},
    "server": {
        "enable_batching": [True, False],
        "replicas": [1, 2],
        "batching": {
            "max_batch_size": [8, 32],
            "batch_timeout_micros": [0, 2000],
            "num_batch_threads": [2],
            "max_enqueued_batches": [16],
        },
    },
    "matrix": {"include": [{"enable_batching": True, "replicas": 1}]},
    "load": {"concurrency": [16, 64]},
    "recommend": {"slo": {"latency_p99_ms": 20, "error_rate": 0.01}},
}
MAXRATE_SPEC = {
    "name": "report-maxrate",
    "model": {"builtin": "mlp"},
    "server": {
        "enable_batching": [True, False],
        "batching": {"max_batch_size": [32], "batch_timeout_micros": [1000]},
    },
    "load": {
        "find_max_rate": {
            "slo": {"latency_p99_ms": 25},
            "start_rps": 400,
            "max_rps": 12800,
            "precision": 0.1,
        }
    },
    "repeats": 2,
}
SINGLE_SPEC = {
    "name": "report-single",
    "target": {"kind": "external", "endpoints": [{"grpc": "127.0.0.1:8500"}]},
    "model": {"name": "half_plus_two"},
    "load": {"concurrency": [8]},
}


# --- the model of a server ----------------------------------------------------------------------


def service_ms(batch: float) -> float:
    """One batch's compute time on one core: fixed overhead plus a little per row."""
    return 2.0 + 0.15 * batch


def achieved_batch(point: Point, clients: float) -> float:
    """Rows per batch: what the clients in flight per batch thread allow, up to max_batch_size."""
    if point.batching is None:
        return 1.0
    mbs = point.batching.max_batch_size or 1000
    waiting = clients / point.replicas / 2  # two batch threads per replica
    if (point.batching.batch_timeout_micros or 0) == 0:
        waiting = max(1.0, waiting * 0.6)  # no waiting: batches hold only who was already there
    return max(1.0, min(mbs, waiting))


def capacity_rps(point: Point, batch: float) -> float:
    """Two cores shared by every replica; a second replica costs a little contention."""
    return 2 * batch / service_ms(batch) * 1000 * (1 - 0.06 * (point.replicas - 1))


def timeout_wait_ms(point: Point, batch: float) -> float:
    """A batch that does not fill waits its timeout (half of it on average)."""
    if point.batching is None:
        return 0.0
    mbs = point.batching.max_batch_size or 1000
    timeout = (point.batching.batch_timeout_micros or 0) / 1000
    return timeout if batch < mbs else 0.0


def closed_loop(point: Point, rng: random.Random) -> dict[str, float]:
    batch = achieved_batch(point, point.load)
    capacity = capacity_rps(point, batch)
    wait = timeout_wait_ms(point, batch)
    latency = max(point.load / capacity * 1000, service_ms(batch)) + wait / 2
    throughput = point.load / latency * 1000
    return figures(throughput, latency, wait, batch, rng)


def open_loop(point: Point, rng: random.Random) -> dict[str, float]:
    batch = achieved_batch(point, point.load * 0.004)
    capacity = capacity_rps(point, batch)
    rho = point.load / capacity
    wait = timeout_wait_ms(point, batch)
    base = service_ms(batch) + wait / 2
    latency = base * (1 + 1 / (1 - rho)) if rho < 0.97 else 400.0 * rho
    throughput = min(point.load, capacity) * rng.uniform(0.99, 1.0)
    out = figures(throughput, latency, wait, batch, rng)
    out["offered_rate_rps"] = point.load
    out["send_rate_rps"] = point.load * rng.uniform(0.995, 1.0)
    return out


def figures(
    throughput: float, mean_ms: float, wait: float, batch: float, rng: random.Random
) -> dict[str, float]:
    jitter = rng.uniform(0.96, 1.04)
    p99 = (mean_ms * 1.9 + wait / 2) * jitter
    compute = service_ms(batch)
    return {
        "throughput_rps": round(throughput * rng.uniform(0.98, 1.02), 1),
        "requests": round(throughput * 15),
        "latency_p50_ms": round(mean_ms * 0.9 * jitter, 3),
        "latency_p90_ms": round(mean_ms * 1.35 * jitter, 3),
        "latency_p95_ms": round(mean_ms * 1.55 * jitter, 3),
        "latency_p99_ms": round(p99, 3),
        "latency_p999_ms": round(p99 * 1.45, 3),
        "latency_max_ms": round(p99 * 2.6, 3),
        "latency_mean_ms": round(mean_ms * jitter, 3),
        "error_rate": 0.0,
        "generator_cpu_percent": round(rng.uniform(30, 60), 1),
        "batch_size_mean": round(batch, 2),
        "queue_time_mean_ms": round(max(0.02, mean_ms - compute), 3),
        "compute_time_mean_ms": round(compute, 3),
    }


def telemetry(point: Point, metrics: dict[str, float]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Server telemetry consistent with the figures; the batch figures move into ``metrics``."""
    requests = int(metrics["requests"])
    if point.batching is None:
        for name in ("batch_size_mean", "queue_time_mean_ms", "compute_time_mean_ms"):
            metrics.pop(name)
        return {
            "requests_by_status": {"OK": requests},
            "replica_requests": split(point, requests),
            "batches": 0,
            "rows": 0,
            "padding_rows": 0,
            "batch_size_buckets": [],
            "rejected": 0,
            "queue_time_mean_ms": None,
            "compute_time_mean_ms": None,
        }, metrics
    batch = metrics["batch_size_mean"]
    batches = max(1, round(requests / batch))
    buckets = size_buckets(batch, batches)
    metrics["batch_size_p50"] = float(min(b for b in BATCH_BOUNDS if b >= batch))
    metrics["padding_ratio"] = 0.0
    metrics["rejected_rate"] = 0.0
    return {
        "batches": batches,
        "rows": requests,
        "padding_rows": 0,
        "batch_size_buckets": buckets,
        "queue_time_mean_ms": metrics["queue_time_mean_ms"],
        "compute_time_mean_ms": metrics["compute_time_mean_ms"],
        "requests_by_status": {"OK": requests},
        "rejected": 0,
        "replica_requests": split(point, requests),
    }, metrics


def size_buckets(batch: float, batches: int) -> list[dict[str, Any]]:
    """Non-cumulative processed-batch-size buckets: most batches near the mean, some smaller."""
    home = next(i for i, bound in enumerate(BATCH_BOUNDS) if bound >= batch)
    shares = {home: 0.7, max(0, home - 1): 0.2, max(0, home - 2): 0.1}
    counts = [0] * len(BATCH_BOUNDS)
    for index, share in shares.items():
        counts[index] += round(batches * share)
    out = [{"le": bound, "count": count} for bound, count in zip(BATCH_BOUNDS, counts, strict=True)]
    return [*out, {"le": "+Inf", "count": 0}]


def split(point: Point, requests: int) -> list[int]:
    share = requests // point.replicas
    return [share] * (point.replicas - 1) + [requests - share * (point.replicas - 1)]


def windows(metrics: dict[str, float], rng: random.Random, wobble: float = 0.03) -> list[dict]:
    out = []
    for index in range(3):
        w = {
            "throughput_rps": round(
                metrics["throughput_rps"] * rng.uniform(1 - wobble, 1 + wobble), 1
            ),
            "latency_p99_ms": round(
                metrics["latency_p99_ms"] * rng.uniform(1 - wobble, 1 + wobble), 3
            ),
            "requests": round(metrics["requests"] / 3),
        }
        out.append({"index": index + 1, "duration_s": 5.0, "used": True, "metrics": w})
    return out


def measured(point: Point, rng: random.Random) -> PointResult:
    """A stable, valid point with the model's figures, windows and telemetry."""
    model = closed_loop if point.load_kind == "concurrency" else open_loop
    metrics = model(point, rng)
    tel, metrics = telemetry(point, metrics)
    wins = windows(metrics, rng)
    verdict = judge_windows(wins)
    return PointResult(
        point,
        metrics=metrics,
        windows=wins,
        stability=verdict,
        telemetry=tel,
        started_at=CREATED_AT,
        finished_at=FINISHED_AT,
    )


def judge_windows(wins: list[dict]) -> dict[str, Any]:
    from harness.sweep.stability import WindowFigures

    figs = [
        WindowFigures(
            w["metrics"]["throughput_rps"], w["metrics"]["latency_p99_ms"], w["metrics"]["requests"]
        )
        for w in wins
    ]
    return judge(figs, min_requests=100).as_dict()


# --- the three runs -----------------------------------------------------------------------------


def new_store(name: str, raw: dict[str, Any], points: list[Point]) -> ResultStore:
    root = RUNS / name
    shutil.rmtree(root, ignore_errors=True)
    spec = validate_spec(raw, f"{name}.yaml")
    store = ResultStore.create(root, spec, points, ENVIRONMENT)
    info = store.run_info()
    info.update(created_at=CREATED_AT, finished_at=FINISHED_AT, interrupted=False)
    info.pop("schema_version")
    write_json(store.run_file, info)
    return store


def make_grid() -> Path:
    spec = validate_spec(GRID_SPEC, "report-grid.yaml")
    points = expand_matrix(spec)
    store = new_store("report-grid", GRID_SPEC, points)
    rng = random.Random(6)
    for point in points:
        store.write_point(grid_result(point, rng))
    store.write_csv()
    return store.root


def grid_result(point: Point, rng: random.Random) -> PointResult:
    key = point.key
    if key == "mbs32-bt2000-nbt2-meb16-r2-grpc-c64-rep0":
        return PointResult.failed(
            point,
            "replica 1 exited with status 1 before it was ready",
            "2025-01-15 10:02:11 E reference_server: cannot bind 127.0.0.1:41873: "
            "Address already in use\n",
        )
    result = measured(point, rng)
    if key == "mbs8-bt2000-nbt2-meb16-r1-grpc-c64-rep0":
        result.windows = windows(result.metrics, rng, wobble=0.2)
        result.stability = judge_windows(result.windows)
        result.stability.update(verdict="unstable", windows_used=[8, 9, 10])
    if key == "mbs8-bt0-nbt2-meb16-r2-grpc-c16-rep0":
        result.valid = False
        result.invalid_reasons = ["generator CPU 97% >= 90%: the load generator was the limit"]
        result.metrics["generator_cpu_percent"] = 97.0
    return result


def make_maxrate() -> Path:
    spec = validate_spec(MAXRATE_SPEC, "report-maxrate.yaml")
    lanes = expand_matrix(spec)
    search = MaxRateSearch(lanes, spec.load.find_max_rate)
    rng = random.Random(7)
    results = []
    for point in search.points():
        result = measured(point, rng)
        results.append(result)
        search.observe(point, result.metrics)
    store = new_store("report-maxrate", MAXRATE_SPEC, lanes)
    for result in results:
        store.write_point(result)
    store.write_extra("max_rate.json", {"searches": [r.as_dict() for r in search.results]})
    store.write_csv()
    return store.root


def make_single() -> Path:
    spec = validate_spec(SINGLE_SPEC, "report-single.yaml")
    points = expand_matrix(spec)
    store = new_store("report-single", SINGLE_SPEC, points)
    rng = random.Random(8)
    result = measured(points[0], rng)
    result.telemetry = {}
    for name in (
        "batch_size_mean",
        "batch_size_p50",
        "padding_ratio",
        "queue_time_mean_ms",
        "compute_time_mean_ms",
        "rejected_rate",
    ):
        result.metrics.pop(name, None)
    store.write_point(result)
    store.write_csv()
    return store.root


def main() -> None:
    for make in (make_grid, make_maxrate, make_single):
        print(make())


if __name__ == "__main__":
    main()
