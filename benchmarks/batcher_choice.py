"""Which batcher: our Python BatchScheduler or TensorFlow's BatchFunction op (TF Serving's own)?

Same model (mlp), same parameters, same offered work: N client threads each send single-row
requests back to back. Records rows/s and median latency for both, and their ratio.
Run: python -m benchmarks.batcher_choice
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from benchmarks.common import finish, result
from harness.models.zoo import build_model
from reference_server.batch_scheduler import BatchScheduler
from reference_server.batching_params import BatchingParameters
from reference_server.servable import Servable, SessionOptions

CLIENTS = 32
SECONDS = 5.0
PARAMS = BatchingParameters(
    max_batch_size=32, batch_timeout_micros=1000, max_enqueued_batches=1000, num_batch_threads=2
)


def python_scheduler(servable: Servable) -> tuple[float, float]:
    signature = servable.signature("")
    latencies: list[float] = []

    async def client(scheduler: BatchScheduler, deadline: float) -> int:
        row = {"x": np.ones((1, 16), np.float32)}
        done = 0
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await scheduler.submit("k", row, lambda b: servable.run(signature, b, ("y",)))
            latencies.append(time.perf_counter() - started)
            done += 1
        return done

    async def main() -> int:
        scheduler = BatchScheduler(PARAMS)
        deadline = time.perf_counter() + SECONDS
        counts = await asyncio.gather(*(client(scheduler, deadline) for _ in range(CLIENTS)))
        scheduler.close()
        return sum(counts)

    return asyncio.run(main()) / SECONDS, statistics.median(latencies)


def tf_batch_function(base: Path) -> tuple[float, float]:
    loaded = tf.saved_model.load(str(base / "1"))  # keeps the variables alive
    model = loaded.signatures["serving_default"]

    @tf.function(input_signature=[tf.TensorSpec([None, 16], tf.float32)])
    def batched(x):
        @tf.nondifferentiable_batch_function(
            num_batch_threads=PARAMS.num_batch_threads,
            max_batch_size=PARAMS.max_batch_size,
            batch_timeout_micros=PARAMS.batch_timeout_micros,
            max_enqueued_batches=PARAMS.max_enqueued_batches,
        )
        def run(rows):
            return model(x=rows)["y"]

        return run(x)

    latencies: list[float] = []
    counts = [0] * CLIENTS
    deadline = time.perf_counter() + SECONDS
    row = tf.constant(np.ones((1, 16), np.float32))

    def client(index: int) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            batched(row).numpy()
            latencies.append(time.perf_counter() - started)
            counts[index] += 1

    batched(row)  # trace once before timing
    deadline = time.perf_counter() + SECONDS
    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / SECONDS, statistics.median(latencies)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "mlp"
        build_model("mlp", base)
        servable = Servable("mlp", 1, base / "1", SessionOptions())
        ours = python_scheduler(servable)
        theirs = tf_batch_function(base)
    notes = (
        f"BatchScheduler {ours[0]:,.0f} rows/s at {ours[1] * 1e3:.2f} ms p50, BatchFunction op "
        f"{theirs[0]:,.0f} rows/s at {theirs[1] * 1e3:.2f} ms p50 ({CLIENTS} clients, mlp)"
    )
    ratio = ours[0] / theirs[0]
    rows = [result("batcher choice: Python scheduler / TF op rows/s", ratio, unit="x", notes=notes)]
    return finish("batcher_choice", rows)


if __name__ == "__main__":
    sys.exit(main())
