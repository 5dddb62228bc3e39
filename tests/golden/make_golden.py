"""The golden run folders under tests/golden/runs/: ``python -m tests.golden.make_golden``.

The figures follow what the harness measures on the built-in ``mlp`` model on a 2-core machine:
batching raises throughput, a longer ``batch_timeout_micros`` buys a little more of it with a
higher p99, closed-loop latency follows Little's law (clients / throughput). Noise is seeded, so
the folders are the same on every run but for their timestamps. Points keep no histogram and
only a few window metrics, so each file stays around a kilobyte.

Runs:
- ``grid``: 6 configurations x 2 concurrencies x 2 repeats, with one failed, one invalid and one
  unstable point, and a configuration that meets the SLO in one repeat only.
- ``max-rate``: a find_max_rate search (2 configurations x 2 repeats), walked by the real
  ``MaxRateSearch`` against a synthetic capacity model.
- ``ci-base``, ``ci-rerun``, ``ci-wobble``, ``ci-slower``: the ``ci`` preset measured four times:
  the baseline, the same code again (new noise), a 3% wobble, and a 20% throughput drop.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from harness.plan.points import Point, expand_matrix
from harness.plan.spec import load_preset, validate_spec
from harness.plan.strategies import MaxRateSearch
from harness.store.results import PointResult, ResultStore
from harness.sweep.stability import WindowFigures, judge

RUNS = Path(__file__).resolve().parent / "runs"
ENVIRONMENT = {"cpu_model": "golden test cpu", "cpu_count": 2, "python": "3.11", "os": "Linux"}

GRID_SPEC = {
    "name": "grid",
    "model": {"builtin": "mlp"},
    "server": {
        "enable_batching": [True, False],
        "batching": {
            "max_batch_size": [8, 32],
            "batch_timeout_micros": [0, 5000],
            "num_batch_threads": [2],
            "max_enqueued_batches": [16],
        },
    },
    # TF Serving's defaults: batching on, no parameters file fields.
    "matrix": {"include": [{"enable_batching": True}]},
    "load": {"concurrency": [16, 64]},
    "repeats": 2,
    "recommend": {"slo": {"latency_p99_ms": 50, "error_rate": 0.01}},
}

MAX_RATE_SPEC = {
    "name": "max-rate",
    "model": {"builtin": "mlp"},
    "server": {
        "enable_batching": [True, False],
        "batching": {"max_batch_size": [32], "batch_timeout_micros": [2000]},
    },
    "load": {
        "find_max_rate": {
            "slo": {"latency_p99_ms": 25},
            "start_rps": 1000,
            "max_rps": 20000,
            "precision": 0.1,
            "max_probes": 8,
        }
    },
    "repeats": 2,
}

# (config key, concurrency) -> (throughput req/s, p99 ms), the grid's "true" figures.
GRID_TRUTH = {
    ("nobatch-r1", 16): (1900, 14.0),
    ("nobatch-r1", 64): (2000, 61.0),
    ("bdefault-r1", 16): (3600, 9.0),
    ("bdefault-r1", 64): (5600, 24.0),
    ("mbs8-bt0-nbt2-meb16-r1", 16): (3500, 9.5),
    ("mbs8-bt0-nbt2-meb16-r1", 64): (4700, 27.0),
    ("mbs8-bt5000-nbt2-meb16-r1", 16): (3300, 16.0),
    ("mbs8-bt5000-nbt2-meb16-r1", 64): (4900, 32.0),
    ("mbs32-bt0-nbt2-meb16-r1", 16): (3700, 9.0),
    ("mbs32-bt0-nbt2-meb16-r1", 64): (5800, 23.0),
    ("mbs32-bt5000-nbt2-meb16-r1", 16): (3400, 17.0),
    ("mbs32-bt5000-nbt2-meb16-r1", 64): (6300, 47.0),
}

# The ci preset's configurations at 32 clients.
CI_TRUTH = {
    "nobatch-r1": (1950, 30.0),
    "mbs8-bt0-nbt2-meb16-r1": (4200, 15.0),
    "mbs8-bt2000-nbt2-meb16-r1": (4400, 18.0),
    "mbs32-bt0-nbt2-meb16-r1": (5200, 13.0),
    "mbs32-bt2000-nbt2-meb16-r1": (5500, 16.0),
}


def windows_for(
    throughput: float, p99: float, rng: np.random.Generator, *, count: int = 3, noise: float = 0.02
) -> list[WindowFigures]:
    """``count`` windows around the given figures, each off by a few percent."""
    out = []
    for _ in range(count):
        t = throughput * (1 + rng.normal(0, noise))
        out.append(
            WindowFigures(round(t, 1), round(p99 * (1 + rng.normal(0, noise)), 2), round(t * 2))
        )
    return out


def point_result(
    point: Point,
    windows: list[WindowFigures],
    *,
    error_rate: float = 0.0,
    batch_size: float = 1.0,
    max_windows: int = 6,
) -> PointResult:
    """A measured point: windows judged by the real stability rule, figures from the used ones."""
    verdict = judge(windows, tolerance=0.10, stable_windows=3, max_windows=max_windows)
    used = [windows[i] for i in verdict.windows_used]
    throughput = sum(w.throughput_rps for w in used) / len(used)
    p99 = max(w.latency_p99_ms for w in used)
    p50 = round(p99 / 2.6, 2)
    metrics = {
        "throughput_rps": round(throughput, 1),
        "requests": sum(w.requests or 0 for w in used),
        "latency_p50_ms": p50,
        "latency_p99_ms": p99,
        "error_rate": error_rate,
        "batch_size_mean": batch_size,
    }
    return PointResult(
        point,
        metrics=metrics,
        windows=[_window(i, w, i in verdict.windows_used) for i, w in enumerate(windows)],
        histogram=None,
        stability=verdict.as_dict(),
        telemetry=_telemetry(metrics["requests"], batch_size),
        started_at="2025-01-01T00:00:00+00:00",
        finished_at="2025-01-01T00:00:10+00:00",
    )


def _window(index: int, w: WindowFigures, used: bool) -> dict:
    metrics = {"throughput_rps": w.throughput_rps, "latency_p99_ms": w.latency_p99_ms}
    return {"index": index, "duration_s": 2.0, "used": used, "metrics": metrics}


def _telemetry(requests: int, batch_size: float) -> dict:
    batches = max(1, round(requests / batch_size))
    return {
        "batches": batches,
        "rows": requests,
        "padding_rows": 0,
        "queue_time_mean_ms": None,
        "compute_time_mean_ms": None,
        "requests_by_status": {"OK": requests},
        "rejected": 0,
        "replica_requests": [requests],
    }


def _batch_size(point: Point, throughput: float) -> float:
    if point.batching is None:
        return 1.0
    largest = point.batching.max_batch_size or 1000
    return round(min(largest, throughput / 900), 2)


def fresh_store(name: str, spec, points: list[Point]) -> ResultStore:
    root = RUNS / name
    shutil.rmtree(root, ignore_errors=True)
    return ResultStore.create(root, spec, points, ENVIRONMENT)


# --- grid -----------------------------------------------------------------------------------------


def make_grid() -> Path:
    spec = validate_spec(GRID_SPEC, "grid.yaml")
    points = expand_matrix(spec)
    store = fresh_store("grid", spec, points)
    rng = np.random.default_rng(1)
    for point in points:
        store.write_point(grid_point(point, rng))
    store.write_csv()
    return store.root


def grid_point(point: Point, rng: np.random.Generator) -> PointResult:
    config, clients = point.server.key, int(point.load)
    throughput, p99 = GRID_TRUTH[(config, clients)]
    if config == "mbs32-bt5000-nbt2-meb16-r1" and clients == 64 and point.repeat == 1:
        p99 = 54.0  # met the SLO in repeat 0 only: the worst repeat decides
    if config == "mbs8-bt0-nbt2-meb16-r1" and clients == 16 and point.repeat == 1:
        return PointResult.failed(point, "server exited with code -9 during warm-up", "Killed\n")
    windows = windows_for(throughput, p99, rng, noise=0.01)
    if config == "mbs8-bt5000-nbt2-meb16-r1" and clients == 64 and point.repeat == 1:
        swings = [0.7, 1.2, 0.8, 1.25, 0.75, 1.2]  # never settles within 10%
        windows = [WindowFigures(throughput * s, p99 / s, 9000) for s in swings]
    result = point_result(point, windows, batch_size=_batch_size(point, throughput))
    if config == "mbs8-bt0-nbt2-meb16-r1" and clients == 64 and point.repeat == 0:
        result.valid = False
        result.invalid_reasons = ["load generator CPU at 98%: it, not the server, was the limit"]
    return result


# --- max rate -------------------------------------------------------------------------------------


def make_max_rate() -> Path:
    spec = validate_spec(MAX_RATE_SPEC, "max-rate.yaml")
    lanes = expand_matrix(spec)
    search = MaxRateSearch(lanes, spec.load.find_max_rate)
    store = fresh_store("max-rate", spec, lanes)
    rng = np.random.default_rng(2)
    for point in search.points():
        result = rate_point(point, rng)
        store.write_point(result)
        search.observe(point, result.metrics)
    store.write_extra("max_rate.json", {"searches": [r.as_dict() for r in search.results]})
    store.write_csv()
    return store.root


# Capacity (req/s) and service time (ms) per configuration and repeat.
CAPACITY = {"nobatch-r1": (2000, 1900, 2.5), "mbs32-bt2000-r1": (6000, 5700, 3.0)}


def rate_point(point: Point, rng: np.random.Generator) -> PointResult:
    """An open-loop point: the latency of a queue as the rate nears capacity (M/M/1-like)."""
    first, second, service = CAPACITY[point.server.key]
    capacity = first if point.repeat == 0 else second
    utilisation = point.load / capacity
    achieved = min(point.load, capacity * 0.98)
    p99 = service * 4.6 / (1 - utilisation) if utilisation < 0.98 else 2000.0
    windows = windows_for(achieved, min(p99, 2000.0), rng, noise=0.01)
    result = point_result(point, windows, batch_size=_batch_size(point, achieved))
    result.metrics["offered_rate_rps"] = point.load
    return result


# --- ci -------------------------------------------------------------------------------------------


def make_ci(name: str, seed: int, throughput_factor: float = 1.0) -> Path:
    """One run of the ci preset, throughput scaled by ``throughput_factor`` (p99: Little's law)."""
    spec = load_preset("ci")
    points = expand_matrix(spec)
    store = fresh_store(name, spec, points)
    rng = np.random.default_rng(seed)
    for point in points:
        throughput, p99 = CI_TRUTH[point.server.key]
        repeat_drift = 1 + rng.normal(0, 0.015)  # servers differ a little from run to run
        throughput *= throughput_factor * repeat_drift
        p99 /= throughput_factor * repeat_drift
        windows = windows_for(throughput, p99, rng)
        store.write_point(point_result(point, windows, batch_size=_batch_size(point, throughput)))
    store.write_csv()
    return store.root


MAKERS: dict[str, Callable[[], Path]] = {
    "grid": make_grid,
    "max-rate": make_max_rate,
    "ci-base": lambda: make_ci("ci-base", seed=10),
    "ci-rerun": lambda: make_ci("ci-rerun", seed=11),
    "ci-wobble": lambda: make_ci("ci-wobble", seed=12, throughput_factor=0.97),
    "ci-slower": lambda: make_ci("ci-slower", seed=13, throughput_factor=0.8),
}


def main() -> None:
    for make in MAKERS.values():
        root = make()
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        print(f"{root}: {math.ceil(size / 1024)} KiB")


if __name__ == "__main__":
    main()
