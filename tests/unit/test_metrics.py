"""ServerMetrics: synthetic request/batch records in, TF Serving's Prometheus text out."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from reference_server.batch_scheduler import BatchScheduler
from reference_server.batching import BatchRecord, BatchStats
from reference_server.batching_params import BatchingParameters
from reference_server.errors import ServingError, not_found
from reference_server.inference import RequestRecord
from reference_server.metrics import (
    ENTRYPOINT,
    REST_ENTRYPOINT,
    ServerMetrics,
    exponential_buckets,
    notify_failure,
)

TF = ":tensorflow:serving:"
BATCHING = TF + "batching_session:"
KEY = ("m", 1, "serving_default", ("x",), ("y",))

pytestmark = pytest.mark.timeout(60)


def samples(metrics: ServerMetrics) -> dict[tuple[str, frozenset], float]:
    """Every sample of the exposition, keyed by (name, labels), as a scraper parses them."""
    parsed = text_string_to_metric_families(metrics.render())
    return {
        (s.name, frozenset(s.labels.items())): s.value for family in parsed for s in family.samples
    }


def value(metrics: ServerMetrics, name: str, **labels: str) -> float:
    return samples(metrics)[(name, frozenset(labels.items()))]


def stats(rows: int, batch: int, queue_s: float = 0.002, compute_s: float = 0.003) -> BatchStats:
    return BatchStats(batch, 0, rows, queue_s, compute_s)


def test_exposition_uses_tf_servings_exact_names_and_types():
    metrics = ServerMetrics()
    metrics.observe_request(RequestRecord("m", "Predict", "OK", 0.01, stats(1, 1)))
    metrics.observe_batch(BatchRecord(KEY, 4, 1, 2, 0.003))
    text = metrics.render()
    assert f"# TYPE {TF}request_count counter" in text
    assert f'{TF}request_count{{model_name="m",status="OK"}} 1\n' in text  # no _total suffix
    for name in ("request_latency", "runtime_latency"):
        assert f"# TYPE {TF}{name} histogram" in text
    for name in ("queuing_latency", "input_batch_size", "processed_batch_size", "padding_size"):
        assert f"# TYPE {BATCHING}{name} histogram" in text
    assert "_created" not in text and "_total" not in text


def test_request_count_is_exact_per_model_and_status():
    metrics = ServerMetrics()
    for _ in range(3):
        metrics.observe_request(RequestRecord("a", "Predict", "OK", 0.001, stats(1, 1)))
    metrics.observe_request(RequestRecord("a", "Predict", "UNAVAILABLE", 0.001, None))
    metrics.observe_request(RequestRecord("b", "Regress", "OK", 0.001, stats(2, 2)))
    assert value(metrics, TF + "request_count_total", model_name="a", status="OK") == 3
    assert value(metrics, TF + "request_count_total", model_name="a", status="UNAVAILABLE") == 1
    assert value(metrics, TF + "request_count_total", model_name="b", status="OK") == 1


def test_request_latency_is_in_microseconds_with_tf_servings_labels():
    metrics = ServerMetrics()
    metrics.observe_request(RequestRecord("m", "Predict", "OK", 0.25, stats(1, 1)))
    rest = contextvars.copy_context()
    rest.run(ENTRYPOINT.set, REST_ENTRYPOINT)
    rest.run(metrics.observe_request, RequestRecord("m", "Predict", "OK", 0.5, stats(1, 1)))
    grpc_labels = {"model_name": "m", "API": "Predict", "entrypoint": "GRPC"}
    rest_labels = {**grpc_labels, "entrypoint": "REST"}
    assert value(metrics, TF + "request_latency_sum", **grpc_labels) == pytest.approx(250_000)
    assert value(metrics, TF + "request_latency_count", **rest_labels) == 1
    assert value(metrics, TF + "request_latency_sum", **rest_labels) == pytest.approx(500_000)


def test_runtime_latency_counts_queue_and_compute_of_answered_requests():
    metrics = ServerMetrics()
    metrics.observe_request(RequestRecord("m", "Predict", "OK", 0.01, stats(1, 4, 0.002, 0.003)))
    metrics.observe_request(RequestRecord("m", "Predict", "NOT_FOUND", 0.01, None))
    labels = {"model_name": "m", "API": "Predict", "runtime": "TF1"}
    assert value(metrics, TF + "runtime_latency_count", **labels) == 1
    assert value(metrics, TF + "runtime_latency_sum", **labels) == pytest.approx(5000)


def test_per_task_batching_metrics_count_each_request():
    metrics = ServerMetrics(thread_pool_name="pool")
    for rows in (1, 3, 4):
        metrics.observe_request(RequestRecord("m", "Predict", "OK", 0.01, stats(rows, 8, 0.001)))
    assert value(metrics, BATCHING + "input_batch_size_count") == 3
    assert value(metrics, BATCHING + "input_batch_size_sum") == 8
    assert value(metrics, BATCHING + "queuing_latency_count", thread_pool_name="pool") == 3
    assert value(metrics, BATCHING + "queuing_latency_sum", thread_pool_name="pool") == (
        pytest.approx(3000)
    )


def test_per_batch_metrics_count_each_batch_once_not_each_task():
    metrics = ServerMetrics()
    # Two batches of 8 rows (one padded by 2) carrying 6 requests between them.
    metrics.observe_batch(BatchRecord(KEY, 8, 2, 4, 0.010))
    metrics.observe_batch(BatchRecord(KEY, 8, 0, 2, 0.020))
    for _ in range(6):
        metrics.observe_request(RequestRecord("m", "Predict", "OK", 0.01, stats(1, 8)))
    assert value(metrics, BATCHING + "processed_batch_size_count") == 2
    assert value(metrics, BATCHING + "processed_batch_size_sum") == 16
    assert value(metrics, BATCHING + "padding_size_count", execution_batch_size="8") == 2
    assert value(metrics, BATCHING + "padding_size_sum", execution_batch_size="8") == 2
    compute = ":batchbench:serving:batch_compute_latency_"
    assert value(metrics, compute + "count", model_name="m") == 2
    assert value(metrics, compute + "sum", model_name="m") == pytest.approx(30_000)


def test_histogram_buckets_are_tf_servings_exponential_ones():
    assert exponential_buckets(1, 2, 14)[-1] == 8192
    metrics = ServerMetrics()
    metrics.observe_batch(BatchRecord(KEY, 3, 1, 1, 0.001))
    buckets = {
        labels["le"]: count
        for (name, label_set), count in samples(metrics).items()
        if name == BATCHING + "processed_batch_size_bucket"
        for labels in [dict(label_set)]
    }
    assert len(buckets) == 15  # 14 limits and +Inf, as Buckets::Exponential(1, 2, 14)
    assert (buckets["2.0"], buckets["4.0"], buckets["+Inf"]) == (0, 1, 1)


def test_counters_are_cumulative_across_scrapes():
    metrics = ServerMetrics()
    metrics.observe_request(RequestRecord("m", "Predict", "OK", 0.01, stats(1, 1)))
    assert value(metrics, TF + "request_count_total", model_name="m", status="OK") == 1
    metrics.observe_request(RequestRecord("m", "Predict", "OK", 0.01, stats(1, 1)))
    assert value(metrics, TF + "request_count_total", model_name="m", status="OK") == 2


def test_without_batching_there_are_no_batching_session_metrics():
    metrics = ServerMetrics(batching=False)
    metrics.observe_request(RequestRecord("m", "Predict", "OK", 0.01, stats(2, 2)))
    metrics.observe_batch(BatchRecord(KEY, 2, 0, 1, 0.001))
    assert "batching_session" not in metrics.render()
    assert value(metrics, TF + "request_count_total", model_name="m", status="OK") == 1


def test_front_end_failures_count_with_their_status():
    metrics = ServerMetrics()
    notify_failure([metrics.observe_request], "nope", "Predict", not_found("no model"), 0.0)
    notify_failure([metrics.observe_request], "m", "Predict", ValueError("bug"), 0.0)
    assert value(metrics, TF + "request_count_total", model_name="nope", status="NOT_FOUND") == 1
    assert value(metrics, TF + "request_count_total", model_name="m", status="UNKNOWN") == 1


def test_label_values_are_escaped():
    metrics = ServerMetrics()
    metrics.observe_request(RequestRecord('a"b\\c', "Predict", "OK", 0.01, None))
    assert value(metrics, TF + "request_count_total", model_name='a"b\\c', status="OK") == 1


class GatedEcho:
    """y = x, each run waiting until the test opens the gate (so batches stay queued)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.running = threading.Event()

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.running.set()
        self.gate.wait(30)
        return {"y": inputs["x"]}


async def until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


def test_scheduler_reports_each_batch_once_and_queue_full_rejections():
    params = BatchingParameters(
        max_batch_size=4,
        batch_timeout_micros=10_000_000,  # only full batches run
        max_enqueued_batches=1,
        num_batch_threads=1,
    )
    metrics = ServerMetrics()
    model = GatedEcho()
    scheduler = BatchScheduler(params, on_batch=metrics.observe_batch)
    metrics.watch_scheduler(scheduler.queue_depth, scheduler.rejected_full)

    def submit_rows(count: int) -> list[asyncio.Task]:
        row = {"x": np.ones((1, 2), np.float32)}
        return [asyncio.ensure_future(scheduler.submit(KEY, row, model)) for _ in range(count)]

    async def scenario() -> None:
        first = submit_rows(4)  # a full batch, taken by the only thread, which waits at the gate
        await until(model.running.is_set)
        second = submit_rows(4)  # a full batch that must wait in the queue
        await asyncio.sleep(0)
        assert value(metrics, ":batchbench:serving:batch_queue_depth") == 4
        with pytest.raises(ServingError, match="queue to which this task was submitted is full"):
            await scheduler.submit(KEY, {"x": np.ones((1, 2), np.float32)}, model)
        model.gate.set()
        await asyncio.gather(*first, *second)

    try:
        asyncio.run(scenario())
    finally:
        model.gate.set()
        scheduler.close()
    assert value(metrics, BATCHING + "processed_batch_size_count") == 2
    assert value(metrics, BATCHING + "processed_batch_size_sum") == 8
    assert value(metrics, ":batchbench:serving:batch_queue_rejected_count_total") == 1
    assert value(metrics, ":batchbench:serving:batch_queue_depth") == 0
