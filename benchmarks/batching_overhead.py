"""(3) Batching layer overhead: median latency at batch_timeout 0 under light load minus a direct
call of the model with one row.

Two views, side by side in one run, both on mlp (a ~100 µs model, so the overhead shows):
- in process: one client awaiting ``BatchScheduler.submit`` (the server's batcher, timeout 0)
  one row at a time, against ``Servable.run`` of the same row called directly;
- through the server: one closed-loop gRPC user against the reference server with batching on
  (timeout 0) and with batching off; the difference of the medians is what batching adds to a
  request end to end.
Run: python -m benchmarks.batching_overhead
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import finish, locust_run, model_path, reference_server, result
from harness.plan.batching_file import BatchingParams

CALLS = 3000
SECONDS = 6.0
TARGET = "<= 200"
SERVER_BATCHING = BatchingParams(
    max_batch_size=32, batch_timeout_micros=0, num_batch_threads=2, max_enqueued_batches=16
)


def in_process_us(base: Path) -> tuple[float, float]:
    """(median µs through the scheduler, median µs of a direct call), interleaved in blocks
    so that machine noise hits both alike."""
    from reference_server.batch_scheduler import BatchScheduler
    from reference_server.batching_params import BatchingParameters
    from reference_server.servable import Servable, SessionOptions

    servable = Servable("mlp", 1, base / "1", SessionOptions())
    signature = servable.signature("")
    row = {"x": np.ones((1, 16), np.float32)}

    def run(batch):
        return servable.run(signature, batch, ("y",))

    params = BatchingParameters(
        max_batch_size=32, batch_timeout_micros=0, max_enqueued_batches=16, num_batch_threads=2
    )

    async def measure() -> tuple[list[float], list[float]]:
        scheduler = BatchScheduler(params)
        batched, direct = [], []
        for _ in range(CALLS // 100):
            for _ in range(100):
                started = time.perf_counter()
                await scheduler.submit("mlp", row, run)
                batched.append(time.perf_counter() - started)
            for _ in range(100):
                started = time.perf_counter()
                run(row)
                direct.append(time.perf_counter() - started)
        scheduler.close()
        return batched, direct

    batched, direct = asyncio.run(measure())
    servable.close()
    return statistics.median(batched) * 1e6, statistics.median(direct) * 1e6


def end_to_end_ms(base: Path) -> dict[str, float]:
    medians = {}
    for label, batching in (("off", None), ("on", SERVER_BATCHING)):
        with reference_server("mlp", base, batching) as server:
            run = locust_run(server, "grpc", "mlp", load=1, seconds=SECONDS)
        medians[label] = run["latency_p50_ms"]
    return medians


def main() -> int:
    base = model_path("mlp")
    served = end_to_end_ms(base)
    batched_us, direct_us = in_process_us(base)
    server_us = (served["on"] - served["off"]) * 1e3
    rows = [
        result(
            "batching overhead, in process (p50 - direct)",
            batched_us - direct_us,
            TARGET,
            "µs",
            f"BatchScheduler.submit p50 {batched_us:.0f} µs vs Servable.run p50 {direct_us:.0f} µs"
            f" (1 row, timeout 0, {CALLS} calls each)",
        ),
        result(
            "batching overhead, server gRPC (on - off p50)",
            server_us,
            TARGET,
            "µs",
            f"1 closed-loop gRPC user: p50 {served['on']:.3f} ms batching on, "
            f"{served['off']:.3f} ms off",
        ),
    ]
    details = {
        "in_process_us": {"batched": batched_us, "direct": direct_us},
        "server_p50_ms": served,
    }
    return finish("batching_overhead", rows, details)


if __name__ == "__main__":
    sys.exit(main())
