"""(2) Transport efficiency, overhead-bound: the reference server's req/s over a no-op server's.

Same client (our Locust scenario, closed loop, one process), same run, same stack: the no-op
server (benchmarks/noop_server.py) is grpc.aio + aiohttp answering a fixed PredictResponse, so
the ratio says how much of the transport's capacity the serving work (decode, batching,
session run, encode) leaves. mlp, batching off and on, gRPC and REST.

Both servers are also timed by their own CPU use: CPU-seconds per request, warm-up included.
On 2 cores the generator and the server share the machine, and a Python server's event loop
holds the GIL for nearly all of its per-request work, so when the server is the bottleneck its
req/s ratio cannot beat the ratio of the two CPU costs; that row shows the ceiling.
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
    requests_sent,
    result,
    server_cpu_seconds,
)
from harness.plan.batching_file import BatchingParams

USERS = 16
SECONDS = 6.0
TARGET = ">= 0.7"
BATCHING = BatchingParams(
    max_batch_size=16, batch_timeout_micros=0, num_batch_threads=2, max_enqueued_batches=16
)


def timed_run(server, protocol: str) -> dict:
    """One closed-loop run, with the server's CPU-seconds per request beside its figures."""
    before = server_cpu_seconds(server)
    run = locust_run(server, protocol, "mlp", load=USERS, seconds=SECONDS)
    run["server_cpu_us_per_request"] = (
        (server_cpu_seconds(server) - before) / max(1, requests_sent(run)) * 1e6
    )
    return run


def measure(protocol: str, details: dict) -> list:
    base = model_path("mlp")
    runs = {}
    with noop_server() as server:
        runs["noop"] = timed_run(server, protocol)
    for label, batching in (("batching off", None), ("batching on", BATCHING)):
        with reference_server("mlp", base, batching) as server:
            runs[label] = timed_run(server, protocol)
    noop = runs["noop"]
    details[protocol] = {
        label: {
            "throughput_rps": run["throughput_rps"],
            "latency_p50_ms": run["latency_p50_ms"],
            "generator_cpu_percent": generator_cpu_percent(run),
            "server_cpu_us_per_request": run["server_cpu_us_per_request"],
            "errors": run["error_count"],
        }
        for label, run in runs.items()
    }
    rows = []
    for label in ("batching off", "batching on"):
        run = runs[label]
        notes = (
            f"{run['throughput_rps']:,.0f} vs no-op {noop['throughput_rps']:,.0f} req/s, "
            f"{USERS} users closed loop; generator CPU "
            f"{generator_cpu_percent(run) or 0:.0f}% (no-op run "
            f"{generator_cpu_percent(noop) or 0:.0f}%)"
        )
        ratio = run["throughput_rps"] / noop["throughput_rps"]
        rows.append(result(f"transport efficiency {protocol}, {label}", ratio, TARGET, "x", notes))
        cpu_ratio = noop["server_cpu_us_per_request"] / run["server_cpu_us_per_request"]
        cpu_notes = (
            f"server CPU per request: no-op {noop['server_cpu_us_per_request']:.0f} µs, "
            f"ours {run['server_cpu_us_per_request']:.0f} µs"
        )
        rows.append(
            result(f"transport CPU ceiling {protocol}, {label}", cpu_ratio, "", "x", cpu_notes)
        )
    return rows


def main() -> int:
    details: dict = {}
    rows = measure("grpc", details) + measure("rest", details)
    return finish("transport_efficiency", rows, details)


if __name__ == "__main__":
    sys.exit(main())
