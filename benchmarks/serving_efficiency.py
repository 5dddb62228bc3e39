"""(1) Serving efficiency, compute-bound: the reference server's best gRPC throughput on the cnn
(MobileNetV2-sized) over the same model's in-process throughput at the batch size the server
actually executed.

The server runs with batching on and an access log; the log's per-request ``batch_size`` gives
the executed batches (a batch of b rows answers b requests, so batches = Σ 1/b). The model is
then loaded in this process with the server's own ``Servable`` (same session options) and run
on batches of that size back to back, after the server has stopped so the two never share the
cores. Ratio ≥ 0.9 means the stack around the session costs under 10% of a compute-bound model.

On a 2-core machine the load generator shares the cores with the server: serialising 600 KB
images for 16 users takes a sizeable share of one. The second row runs the in-process loop
again beside a process that burns the CPU share the generator was measured to use, so the
generator's cost is on both sides; what is left between the two is the serving stack's.
Run: python -m benchmarks.serving_efficiency
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from benchmarks.common import (
    finish,
    generator_cpu_percent,
    locust_run,
    median_seconds,
    model_path,
    reference_server,
    result,
)
from harness.batching_file import BatchingParams

USERS = (8, 16)
SECONDS = 8.0
BATCHING = BatchingParams(
    max_batch_size=8, batch_timeout_micros=20000, num_batch_threads=1, max_enqueued_batches=8
)


def executed_batches(access_log: Path) -> dict[str, float]:
    """Requests, batches and the mean executed batch size from an access log's Predict lines."""
    sizes = []
    for line in access_log.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("batch_size") and entry.get("method", "").endswith("Predict"):
            sizes.append(entry["batch_size"])
    batches = sum(1.0 / size for size in sizes)
    return {"requests": len(sizes), "batches": batches, "mean_batch_size": len(sizes) / batches}


def served(base: Path, users: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-cnn-") as tmp:
        log = Path(tmp) / "access.jsonl"
        with reference_server("cnn", base, BATCHING, f"--access_log_file={log}") as server:
            run = locust_run(server, "grpc", "cnn", load=users, seconds=SECONDS, warmup_s=3.0)
        batches = executed_batches(log)
    return {
        "users": users,
        "throughput_rps": run["throughput_rps"],
        "generator_cpu_percent": generator_cpu_percent(run),
        **batches,
    }


def _burn(share: float, stop) -> None:
    """Keep one core busy ``share`` of every 10 ms until ``stop`` is set."""
    period = 0.01
    while not stop.is_set():
        started = time.perf_counter()
        while time.perf_counter() - started < share * period:
            pass
        time.sleep(period * (1 - share))


@contextlib.contextmanager
def cpu_burner(share: float) -> Iterator[None]:
    """A separate process using ``share`` (0-1) of one core while the block runs."""
    stop = multiprocessing.Event()
    burner = multiprocessing.Process(target=_burn, args=(share, stop), daemon=True)
    burner.start()
    try:
        yield
    finally:
        stop.set()
        burner.join(5)


def in_process_rps(base: Path, batch_size: int) -> float:
    """Rows/s of the model run directly, ``batch_size`` rows a call, in this process."""
    from reference_server.servable import Servable, SessionOptions

    version = max((p for p in base.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    servable = Servable("cnn", int(version.name), version, SessionOptions())
    signature = servable.signature("")
    rows = {"image": np.random.default_rng(0).random((batch_size, 224, 224, 3), np.float32)}
    seconds = median_seconds(lambda: servable.run(signature, rows, ("probabilities",)), 10)
    servable.close()
    return batch_size / seconds


def main() -> int:
    base = model_path("cnn")
    runs = [served(base, users) for users in USERS]
    best = max(runs, key=lambda run: run["throughput_rps"])
    batch = max(1, round(best["mean_batch_size"]))
    direct = in_process_rps(base, batch)
    ratio = best["throughput_rps"] / direct
    notes = (
        f"server {best['throughput_rps']:.1f} rows/s ({best['users']} gRPC users, mean executed "
        f"batch {best['mean_batch_size']:.2f}) vs in-process {direct:.1f} rows/s at batch {batch}"
    )
    rows = [result("serving efficiency cnn (gRPC / in-process)", ratio, ">= 0.9", "x", notes)]
    details = {"server_runs": runs, "in_process_rps": direct}
    share = min(1.0, (best["generator_cpu_percent"] or 0.0) / 100)
    if share > 0:
        with cpu_burner(share):
            beside = in_process_rps(base, batch)
        rows.append(
            result(
                "serving efficiency cnn, generator's CPU on both sides",
                best["throughput_rps"] / beside,
                "",
                "x",
                f"in-process {beside:.1f} rows/s at batch {batch} beside a process burning "
                f"{share:.0%} of a core, the load generator's measured use",
            )
        )
        details["in_process_beside_burner_rps"] = beside
    return finish("serving_efficiency", rows, details)


if __name__ == "__main__":
    sys.exit(main())
