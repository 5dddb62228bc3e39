"""(7) Stall test: the server freezes for ~1 s during an open-loop run. Does our p99 show it?

The reference server (mlp, batching on) is stopped with SIGSTOP for 1 s in the middle of the
measurement window and resumed with SIGCONT: a real stall of the whole process, at times we
record. The truth follows from the intended send times: at a constant rate R over the window,
a request intended at t inside the stall [a, b] cannot be answered before b, so its latency is
(b - t) plus the usual latency; every other request has the usual latency (our own p50). The
p99 of that computed population is the truth our open-loop p99 must be within 10% of.
Beside it, the same stall under Locust's stock closed loop: its users simply stop sending while
the server is frozen, so few samples carry the stall and Locust's own p99 barely moves
(coordinated omission).
Run: python -m benchmarks.stall
"""

from __future__ import annotations

import datetime
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import (
    finish,
    locust_run,
    model_path,
    reference_server,
    relative_error,
    result,
)
from harness.plan.batching_file import BatchingParams
from harness.plan.spec import LoadKind
from harness.servers.replicas import PROMETHEUS_PATH, write_monitoring_config
from harness.sweep import telemetry

RATE = 200.0
USERS = 16
WARMUP_S = 1.0
SECONDS = 8.0
STALL_S = 1.0
STALL_AFTER_S = 3.0  # into the measurement window
BATCHING = BatchingParams(
    max_batch_size=32, batch_timeout_micros=0, num_batch_threads=2, max_enqueued_batches=64
)


def stall_truth_ms(
    window: tuple[float, float], stall: tuple[float, float], rate: float, usual_ms: float
) -> np.ndarray:
    """Latencies (ms) of requests intended at a constant ``rate`` over ``window`` (epoch s) when
    the server answers nothing during ``stall`` and in ``usual_ms`` otherwise."""
    intended = np.arange(window[0], window[1], 1.0 / rate)
    start, end = stall
    waiting = np.where((intended >= start) & (intended < end), end - intended, 0.0)
    return usual_ms + waiting * 1e3


def stall_when_serving(server, metrics_url: str, delay_s: float, record: dict) -> None:
    """Wait for the first answered request, then ``delay_s``, then freeze the server."""
    while telemetry.total(telemetry.scrape(metrics_url), telemetry.REQUEST_COUNT) < 1:
        time.sleep(0.05)
    time.sleep(delay_s)
    os.kill(server.process.pid, signal.SIGSTOP)
    record["start"] = time.time()
    time.sleep(STALL_S)
    os.kill(server.process.pid, signal.SIGCONT)
    record["end"] = time.time()


def stalled_run(base: Path, load_kind: LoadKind, load: float) -> tuple[dict, dict]:
    with tempfile.TemporaryDirectory(prefix="bench-stall-") as tmp:
        monitoring = write_monitoring_config(Path(tmp))
        flags = (f"--monitoring_config_file={monitoring}",)
        with reference_server("mlp", base, BATCHING, *flags) as server:
            record: dict = {}
            url = server.rest_url + PROMETHEUS_PATH
            staller = threading.Thread(
                target=stall_when_serving, args=(server, url, WARMUP_S + STALL_AFTER_S, record)
            )
            staller.start()
            try:
                run = locust_run(
                    server, "grpc", "mlp", load_kind=load_kind, load=load,
                    seconds=SECONDS, warmup_s=WARMUP_S, arrival="constant",
                )  # fmt: skip
            finally:
                staller.join()
    return run, record


def window_epoch(run: dict) -> tuple[float, float]:
    started = datetime.datetime.fromisoformat(run["result"]["started_at"]).timestamp()
    return started + run["started_s"] + run["warmup_s"], started + run["ended_s"]


def main() -> int:
    base = model_path("mlp")
    open_run, stall = stalled_run(base, "rate", RATE)
    closed_run, _ = stalled_run(base, "concurrency", USERS)
    window = window_epoch(open_run)
    inside = window[0] <= stall["start"] and stall["end"] <= window[1]
    truth = stall_truth_ms(window, (stall["start"], stall["end"]), RATE, open_run["latency_p50_ms"])
    truth_p99 = float(np.percentile(truth, 99))
    ours = open_run["latency_p99_ms"]
    locust_p99 = closed_run["locust"]["p99_ms"]
    stalled_for = stall["end"] - stall["start"]
    rows = [
        result(
            "stall: our open-loop p99 vs truth (rel. error)",
            relative_error(ours, truth_p99) if inside else None,
            "<= 0.1",
            notes=(
                f"{stalled_for:.2f} s SIGSTOP at {RATE:g}/s constant: our p99 {ours:.0f} ms, "
                f"truth {truth_p99:.0f} ms"
                + ("" if inside else "; the stall fell outside the window: not judged")
            ),
        ),
        result(
            "stall: Locust stock closed-loop p99",
            locust_p99,
            unit="ms",
            notes=f"same stall, {USERS} closed-loop users; Locust's own p99 beside our "
            f"open-loop {ours:.0f} ms",
        ),
    ]
    details = {
        "stall_epoch": stall,
        "window_epoch": window,
        "open_loop": {k: open_run[k] for k in ("count", "latency_p50_ms", "latency_p99_ms")},
        "truth_p99_ms": truth_p99,
        "closed_loop_locust": closed_run["locust"],
    }
    return finish("stall", rows, details)


if __name__ == "__main__":
    sys.exit(main())
