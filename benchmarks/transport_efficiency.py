"""(2) Transport efficiency, overhead-bound: the reference server's req/s over a no-op server's.

Same client (our Locust scenario, closed loop, one process), same run, same stack: the no-op
server (benchmarks/noop_server.py) is grpc.aio + aiohttp answering a fixed PredictResponse, so
the ratio says how much of the transport's capacity the serving work (decode, batching,
session run, encode) leaves. mlp, batching off and on, gRPC and REST.
Run: python -m benchmarks.transport_efficiency
"""

from __future__ import annotations

import sys

from benchmarks.common import (
    finish,
    generator_cpu_percent,
    locust_run,
    model_path,
    noop_server,
    reference_server,
    result,
)
from harness.batching_file import BatchingParams

USERS = 16
SECONDS = 6.0
TARGET = ">= 0.7"
BATCHING = BatchingParams(
    max_batch_size=16, batch_timeout_micros=0, num_batch_threads=2, max_enqueued_batches=16
)


def measure(protocol: str, details: dict) -> list:
    base = model_path("mlp")
    runs = {}
    with noop_server() as server:
        runs["noop"] = locust_run(server, protocol, "mlp", load=USERS, seconds=SECONDS)
    for label, batching in (("batching off", None), ("batching on", BATCHING)):
        with reference_server("mlp", base, batching) as server:
            runs[label] = locust_run(server, protocol, "mlp", load=USERS, seconds=SECONDS)
    noop_rps = runs["noop"]["throughput_rps"]
    details[protocol] = {
        label: {
            "throughput_rps": run["throughput_rps"],
            "latency_p50_ms": run["latency_p50_ms"],
            "generator_cpu_percent": generator_cpu_percent(run),
            "errors": run["error_count"],
        }
        for label, run in runs.items()
    }
    rows = []
    for label in ("batching off", "batching on"):
        rps = runs[label]["throughput_rps"]
        notes = (
            f"{rps:,.0f} vs no-op {noop_rps:,.0f} req/s, {USERS} users closed loop; "
            f"generator CPU {generator_cpu_percent(runs[label]) or 0:.0f}% "
            f"(no-op run {generator_cpu_percent(runs['noop']) or 0:.0f}%)"
        )
        rows.append(
            result(f"transport efficiency {protocol}, {label}", rps / noop_rps, TARGET, "x", notes)
        )
    return rows


def main() -> int:
    details: dict = {}
    rows = measure("grpc", details) + measure("rest", details)
    return finish("transport_efficiency", rows, details)


if __name__ == "__main__":
    sys.exit(main())
