"""Server figures from Prometheus scrapes: parsing TF Serving's text, deltas, summaries."""
# ruff: noqa: E501  (Prometheus exposition lines are kept verbatim)

from __future__ import annotations

import pytest

from harness.sweep import telemetry

BEFORE = """\
# TYPE :tensorflow:serving:request_count counter
:tensorflow:serving:request_count{model_name="mlp",status="OK"} 100
# TYPE :tensorflow:serving:batching_session:processed_batch_size histogram
:tensorflow:serving:batching_session:processed_batch_size_bucket{le="1"} 10
:tensorflow:serving:batching_session:processed_batch_size_bucket{le="2"} 10
:tensorflow:serving:batching_session:processed_batch_size_bucket{le="4"} 10
:tensorflow:serving:batching_session:processed_batch_size_bucket{le="8"} 20
:tensorflow:serving:batching_session:processed_batch_size_bucket{le="+Inf"} 20
:tensorflow:serving:batching_session:processed_batch_size_sum 90
:tensorflow:serving:batching_session:processed_batch_size_count 20
# TYPE :tensorflow:serving:batching_session:padding_size histogram
:tensorflow:serving:batching_session:padding_size_bucket{execution_batch_size="8",le="+Inf"} 10
:tensorflow:serving:batching_session:padding_size_sum{execution_batch_size="8"} 0
:tensorflow:serving:batching_session:padding_size_count{execution_batch_size="8"} 10
# TYPE :tensorflow:serving:batching_session:queuing_latency histogram
:tensorflow:serving:batching_session:queuing_latency_bucket{thread_pool_name="model_server",le="+Inf"} 90
:tensorflow:serving:batching_session:queuing_latency_sum{thread_pool_name="model_server"} 9000
:tensorflow:serving:batching_session:queuing_latency_count{thread_pool_name="model_server"} 90
# TYPE :batchbench:serving:batch_queue_rejected_count counter
:batchbench:serving:batch_queue_rejected_count 0
"""

# 40 more batches: 10 of 1 row, 30 of 8 rows with 2 rows of padding each; 250 requests, 10
# refused because the queue was full; queueing averaged 2000 µs.
AFTER = """\
# TYPE :tensorflow:serving:request_count counter
:tensorflow:serving:request_count{model_name="mlp",status="OK"} 340
:tensorflow:serving:request_count{model_name="mlp",status="UNAVAILABLE"} 10
# TYPE :tensorflow:serving:batching_session:processed_batch_size histogram
:tensorflow:serving:batching_session:processed_batch_size_bucket{le="1"} 20
:tensorflow:serving:batching_session:processed_batch_size_bucket{le="2"} 20
:tensorflow:serving:batching_session:processed_batch_size_bucket{le="4"} 20
:tensorflow:serving:batching_session:processed_batch_size_bucket{le="8"} 60
:tensorflow:serving:batching_session:processed_batch_size_bucket{le="+Inf"} 60
:tensorflow:serving:batching_session:processed_batch_size_sum 340
:tensorflow:serving:batching_session:processed_batch_size_count 60
# TYPE :tensorflow:serving:batching_session:padding_size histogram
:tensorflow:serving:batching_session:padding_size_bucket{execution_batch_size="8",le="+Inf"} 40
:tensorflow:serving:batching_session:padding_size_sum{execution_batch_size="8"} 60
:tensorflow:serving:batching_session:padding_size_count{execution_batch_size="8"} 40
# TYPE :tensorflow:serving:batching_session:queuing_latency histogram
:tensorflow:serving:batching_session:queuing_latency_bucket{thread_pool_name="model_server",le="+Inf"} 330
:tensorflow:serving:batching_session:queuing_latency_sum{thread_pool_name="model_server"} 489000
:tensorflow:serving:batching_session:queuing_latency_count{thread_pool_name="model_server"} 330
# TYPE :batchbench:serving:batch_queue_rejected_count counter
:batchbench:serving:batch_queue_rejected_count 10
"""


def test_counters_keep_tf_serving_names_without_total_suffix():
    samples = telemetry.parse_samples(BEFORE)
    assert telemetry.total(samples, telemetry.REQUEST_COUNT, status="OK") == 100
    assert telemetry.total(samples, telemetry.REJECTED) == 0


def test_delta_covers_only_the_interval():
    delta = telemetry.delta(telemetry.parse_samples(BEFORE), telemetry.parse_samples(AFTER))
    assert telemetry.total(delta, telemetry.REQUEST_COUNT, status="OK") == 240
    assert telemetry.total(delta, telemetry.REQUEST_COUNT, status="UNAVAILABLE") == 10  # new


def test_summary_of_the_interval():
    delta = telemetry.delta(telemetry.parse_samples(BEFORE), telemetry.parse_samples(AFTER))
    info, figures = telemetry.summarize([delta])
    assert info["batches"] == 40 and info["rows"] == 250 and info["padding_rows"] == 60
    sizes = {b["le"]: b["count"] for b in info["batch_size_buckets"]}
    assert sizes == {1: 10, 2: 0, 4: 0, 8: 30, "+Inf": 0}
    assert info["requests_by_status"] == {"OK": 240, "UNAVAILABLE": 10}
    assert info["rejected"] == 10 and info["replica_requests"] == [250]
    assert figures["batch_size_mean"] == pytest.approx(250 / 40)
    assert figures["batch_size_p50"] == 8  # the bucket holding the median batch, not a guess
    assert figures["padding_ratio"] == pytest.approx(60 / 250)
    assert figures["queue_time_mean_ms"] == pytest.approx(480000 / 240 / 1000)
    assert figures["rejected_rate"] == pytest.approx(10 / 250)
    assert figures["compute_time_mean_ms"] is None  # not exported by this server


def test_replicas_add_up_and_stay_apart_in_replica_requests():
    delta = telemetry.delta(telemetry.parse_samples(BEFORE), telemetry.parse_samples(AFTER))
    info, figures = telemetry.summarize([delta, delta])
    assert info["replica_requests"] == [250, 250]
    assert info["batches"] == 80
    assert figures["batch_size_mean"] == pytest.approx(250 / 40)


def test_without_batching_batch_figures_are_absent():
    text = "# TYPE :tensorflow:serving:request_count counter\n"
    text += ':tensorflow:serving:request_count{model_name="m",status="OK"} 5\n'
    info, figures = telemetry.summarize([telemetry.parse_samples(text)])
    assert info["batches"] == 0 and figures["batch_size_mean"] is None
    assert figures["rejected_rate"] == 0


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0.5, 10 + 10 * 25 / 75), (0.25, 10.0), (1.0, 20.0), (0.1, 4.0)],
)
def test_histogram_quantile_interpolates_within_the_bucket(q, expected):
    buckets = [(10.0, 25.0), (20.0, 100.0), (float("inf"), 100.0)]
    assert telemetry.histogram_quantile(buckets, q) == pytest.approx(expected)


def test_histogram_quantile_of_nothing_is_none():
    assert telemetry.histogram_quantile([(1.0, 0.0), (float("inf"), 0.0)], 0.5) is None
