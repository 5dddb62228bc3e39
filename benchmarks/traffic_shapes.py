"""Traffic shapes: arrival statistics, trace replay fidelity, and what burstiness does to the
best batch timeout.

1. 10,000 generated gaps per process (poisson, gamma CV 0.5/2/4, mmpp): mean within 2%,
   CV within 5%, a KS test against the process's law (mmpp: every 10th gap of 100,000, as its
   consecutive gaps are correlated) passes at p >= 0.01.
2. A 1,000 req/s Poisson trace replayed by one gRPC process against the no-op server: the
   p99 of (actual - intended) send time, target <= 2 ms.
3. The `synthetic` model at the same mean rate under Poisson and gamma CV 4 arrivals, over
   several batch timeouts: the timeout with the lowest p99 under each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from benchmarks.common import (
    ROOT,
    BenchResult,
    finish,
    model_path,
    noop_server,
    reference_server,
    result,
    target_of,
)
from harness.plan.batching_file import BatchingParams
from scenarios.arrivals import ArrivalSpec, make_arrivals, mmpp_gap_law

RATE = 200.0
GAPS = 10_000
SPECS = {
    "poisson": ArrivalSpec("poisson"),
    "gamma cv 0.5": ArrivalSpec("gamma", cv=0.5),
    "gamma cv 2": ArrivalSpec("gamma", cv=2.0),
    "gamma cv 4": ArrivalSpec("gamma", cv=4.0),
    "mmpp": ArrivalSpec("mmpp", burst_ratio=10, base_dwell_s=0.1, burst_dwell_s=0.02),
}
REPLAY_RATE = 1000.0
REPLAY_SECONDS = 10.0
TIMEOUTS_US = (0, 1000, 4000, 16000)
SYNTHETIC_RATE = 150.0


def gaps(spec: ArrivalSpec, seed: str, count: int) -> np.ndarray:
    process = make_arrivals(spec, seed)
    return np.array([process.gap(RATE) for _ in range(count)])


def arrival_rows(name: str, spec: ArrivalSpec) -> list[BenchResult]:
    sample = gaps(spec, f"bench-{name}", GAPS)
    if spec.kind == "mmpp":
        mean, cv, cdf = mmpp_gap_law(spec, RATE)
        tested = gaps(spec, f"bench-ks-{name}", 10 * GAPS)[::10]
    else:
        cv = spec.cv
        mean = 1 / RATE
        law = stats.gamma(1 / cv**2, scale=cv**2 / RATE)
        cdf, tested = law.cdf, sample
    return [
        result(f"{name}: mean gap error", float(abs(sample.mean() / mean - 1)), "<= 0.02"),
        result(f"{name}: CV error", float(abs(sample.std() / sample.mean() / cv - 1)), "<= 0.05"),
        result(f"{name}: KS p-value", float(stats.kstest(tested, cdf).pvalue), ">= 0.01"),
    ]


def locust(host: str, args: list[str], folder: Path) -> dict[str, Any]:
    out = folder / f"result-{len(list(folder.iterdir()))}.json"
    argv = [sys.executable, "-m", "locust", "-f", str(ROOT / "scenarios" / "tfserving_grpc.py"),
            "--headless", "--host", host, "--result-file", str(out), *args]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    return json.loads(out.read_text())


def send_floor() -> dict[str, Any]:
    """The machine's own floor under the replay: a bare gevent timer loop's lag at the same
    rate (scenarios.send_floor), in a process of its own."""
    argv = [sys.executable, "-m", "scenarios.send_floor", "--rate", f"{REPLAY_RATE:g}",
            "--seconds", f"{REPLAY_SECONDS:g}"]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    floor: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return floor


def replay_rows() -> tuple[list[BenchResult], dict[str, Any]]:
    rng = np.random.default_rng(1)
    times = np.cumsum(rng.exponential(1 / REPLAY_RATE, int(REPLAY_RATE * REPLAY_SECONDS)))
    floor_before = send_floor()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp, noop_server() as server:
        folder = Path(tmp)
        trace = folder / "trace.jsonl"
        trace.write_text("".join(json.dumps({"t": round(t, 6)}) + "\n" for t in times))
        raw = folder / "raw"
        args = ["--model-name", "mlp", "--trace", str(trace), "-u", "64", "-r", "1000",
                "-t", "60s", "--raw-latency-dir", str(raw)]  # fmt: skip
        run = locust(target_of(server, "grpc"), args, folder)
        lags = np.array(
            [
                float(b) - float(a)
                for path in raw.glob("sends-*.txt")
                for a, b in (line.split() for line in path.read_text().splitlines())
            ]
        )
    load_after = os.getloadavg()[0]
    floor_after = send_floor()
    floors = [floor_before["lag_ms"]["p99"], floor_after["lag_ms"]["p99"]]
    p99_ms = float(np.percentile(lags, 99) * 1000) if lags.size else None
    cpu = run["generator"]["processes"].get("local", {}).get("cpu_percent")
    rows = [
        result(
            "replay 1000/s: p99 send lag",
            p99_ms,
            "<= 2",
            "ms",
            f"generator CPU {cpu}%, dropped {run['total']['dropped']}, "
            f"late {run['total']['late']}, window {run['total']['window_s']} s",
        ),
        result("replay 1000/s: requests sent", float(run["total"]["sent"]), f">= {len(times)}"),
        result(
            "replay 1000/s: floor, bare gevent timer loop p99 lag (before, after)",
            max(floors),
            "",
            "ms",
            f"{floors[0]:g} and {floors[1]:g} ms; load average {load_before:.1f} before the "
            f"replay, {load_after:.1f} after",
        ),
    ]
    details = {
        "lag_ms": {f"p{q}": float(np.percentile(lags, q) * 1000) for q in (50, 90, 99)},
        "floor": [floor_before, floor_after],
        "load_average": [load_before, load_after],
    }
    return rows, details


def timeout_sweep(arrival_args: list[str]) -> list[dict[str, Any]]:
    """p99 and mean batch size of `synthetic` at SYNTHETIC_RATE for each batch timeout."""
    figures = []
    base = model_path("synthetic")
    for timeout in TIMEOUTS_US:
        params = BatchingParams(
            max_batch_size=32, batch_timeout_micros=timeout, max_enqueued_batches=100
        )
        monitoring = "--monitoring_config_file=" + str(_monitoring_file())
        with (
            tempfile.TemporaryDirectory(prefix="bench-burst-") as tmp,
            reference_server("synthetic", base, params, monitoring) as server,
        ):
            scrape = f"{server.rest_url}/monitoring/prometheus/metrics"
            args = ["--model-name", "synthetic", "--rate", str(SYNTHETIC_RATE), "-u", "16",
                    "-r", "16", "-t", "22s", "--warmup", "4", "--scrape-urls", scrape,
                    *arrival_args]  # fmt: skip
            run = locust(target_of(server, "grpc"), args, Path(tmp))
        sizes = [s["batch_size_mean"] for s in run["timeline"] if s["batch_size_mean"]]
        figures.append(
            {
                "timeout_us": timeout,
                "p99_ms": run["total"]["latency_p99_ms"],
                "p50_ms": run["total"]["latency_p50_ms"],
                "valid": run["valid"],
                "batch_size_mean": float(np.mean(sizes)) if sizes else None,
            }
        )
    return figures


def _monitoring_file() -> Path:
    path = ROOT / "reports" / "bench" / "monitoring.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("prometheus_config { enable: true }\n")
    return path


def best_timeout(figures: list[dict[str, Any]]) -> int | None:
    valid = [f for f in figures if f["p99_ms"] is not None]
    return min(valid, key=lambda f: f["p99_ms"])["timeout_us"] if valid else None


def burst_rows() -> tuple[list[BenchResult], dict[str, Any]]:
    poisson = timeout_sweep(["--arrival", "poisson"])
    bursty = timeout_sweep(["--arrival", "gamma", "--arrival-cv", "4"])
    chosen = (best_timeout(poisson), best_timeout(bursty))
    notes = "; ".join(
        f"{t['timeout_us']} us: p99 {p['p99_ms']} vs {t['p99_ms']} ms, batch {p['batch_size_mean']}"
        f" vs {t['batch_size_mean']}"
        for p, t in zip(poisson, bursty, strict=True)
    )
    rows = [
        result("synthetic 150/s: best timeout, poisson", chosen[0], "", "us"),
        result("synthetic 150/s: best timeout, gamma cv 4", chosen[1], "", "us", notes),
    ]
    return rows, {"poisson": poisson, "gamma_cv4": bursty}


def main(argv: list[str] | None = None) -> int:
    rows = [row for name, spec in SPECS.items() for row in arrival_rows(name, spec)]
    replay, replay_details = replay_rows()
    burst, burst_details = burst_rows()
    return finish(
        "traffic_shapes", [*rows, *replay, *burst], {**replay_details, "timeouts": burst_details}
    )


if __name__ == "__main__":
    raise SystemExit(main())
