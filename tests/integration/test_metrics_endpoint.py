"""The Prometheus endpoint of a real server: scrape, send N requests, scrape again.

The harness reads these counters before and after each measurement, so the difference must be
exactly what happened in between: N requests, and as many batches as actually ran (each Predict
answer tells its batch's size and padding, which is how the test counts the batches).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from harness.models.zoo import build_model
from tests.conftest import TESTDATA, start_server

pytestmark = pytest.mark.timeout(120)

TF = ":tensorflow:serving:"
BATCHING = TF + "batching_session:"
METRICS_PATH = "/monitoring/prometheus/metrics"
MONITORING_CONFIG = f'prometheus_config: {{ enable: true, path: "{METRICS_PATH}" }}\n'
REQUESTS = 24

Samples = dict[tuple[str, frozenset], float]


def monitoring_config(tmp: Path) -> Path:
    """TF Serving's own monitoring_config.txt when the test data is there, else the same text."""
    shared = TESTDATA / "monitoring_config.txt"
    if shared.exists():
        return shared
    path = tmp / "monitoring_config.txt"
    path.write_text(MONITORING_CONFIG)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("metrics")
    model = tmp / "synthetic"
    build_model("synthetic", model, fixed_ms=2.0, per_item_ms=0.2)
    params = tmp / "batching.txt"
    params.write_text(
        """
        max_batch_size { value: 4 }
        batch_timeout_micros { value: 100000 }
        max_enqueued_batches { value: 100 }
        num_batch_threads { value: 1 }
        allowed_batch_sizes: 2
        allowed_batch_sizes: 4
        """
    )
    flags = [
        "--model_name=synthetic",
        f"--model_base_path={model}",
        "--enable_batching",
        f"--batching_parameters_file={params}",
        f"--monitoring_config_file={monitoring_config(tmp)}",
    ]
    with start_server(flags) as srv:
        yield srv


def scrape(rest_url: str) -> tuple[str, Samples]:
    with urllib.request.urlopen(rest_url + METRICS_PATH, timeout=30) as response:
        content_type = response.headers["Content-Type"]
        text = response.read().decode()
    parsed = text_string_to_metric_families(text)
    samples = {
        (s.name, frozenset(s.labels.items())): s.value for family in parsed for s in family.samples
    }
    return content_type, samples


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def predict(target: str, model: str = "synthetic") -> dict[str, int]:
    """One single-row gRPC Predict; returns its x-batch-* telemetry."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((1, 4), np.float32)))
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        _, call = stub.Predict.with_call(request, timeout=60)
    return {k: int(v) for k, v in call.trailing_metadata() if k.startswith("x-batch")}


def batches_seen(telemetry: list[dict[str, int]]) -> tuple[int, int, int]:
    """(batches, executed rows, padding rows) implied by single-row answers' telemetry.

    A batch of size S with padding P carried S - P single-row requests, each of which reports
    (S, P); so the requests reporting (S, P) came from count / (S - P) such batches.
    """
    batches = rows = padding = 0
    for (size, pad), count in Counter(
        (t["x-batch-size"], t["x-batch-padding"]) for t in telemetry
    ).items():
        assert count % (size - pad) == 0
        n = count // (size - pad)
        batches, rows, padding = batches + n, rows + n * size, padding + n * pad
    return batches, rows, padding


def test_metrics_are_served_with_prometheus_content_type(server):
    content_type, samples = scrape(server.rest_url)
    assert content_type.startswith("text/plain")
    assert (BATCHING + "processed_batch_size_count", frozenset()) in samples


def test_scrape_difference_equals_the_requests_and_batches_in_between(server):
    _, before = scrape(server.rest_url)
    with ThreadPoolExecutor(REQUESTS) as pool:
        telemetry = list(pool.map(lambda _: predict(server.grpc_target), range(REQUESTS)))
    _, after = scrape(server.rest_url)

    def delta(name: str, **labels: str) -> float:
        return get(after, name, **labels) - get(before, name, **labels)

    ok = {"model_name": "synthetic", "status": "OK"}
    assert delta(TF + "request_count_total", **ok) == REQUESTS
    grpc_predict = {"model_name": "synthetic", "API": "Predict", "entrypoint": "GRPC"}
    assert delta(TF + "request_latency_count", **grpc_predict) == REQUESTS
    assert delta(BATCHING + "input_batch_size_count") == REQUESTS
    assert delta(BATCHING + "input_batch_size_sum") == REQUESTS
    batches, rows, padding = batches_seen(telemetry)
    assert batches < REQUESTS  # some batches held several requests: per-batch != per-task
    assert delta(BATCHING + "processed_batch_size_count") == batches
    assert delta(BATCHING + "processed_batch_size_sum") == rows
    padding_counts = sum(
        delta(BATCHING + "padding_size_count", execution_batch_size=str(size)) for size in (1, 2, 4)
    )
    assert padding_counts == batches
    assert (
        sum(
            delta(BATCHING + "padding_size_sum", execution_batch_size=str(size))
            for size in (1, 2, 4)
        )
        == padding
    )
    assert get(after, ":batchbench:serving:batch_queue_depth") == 0


def test_requests_failing_before_the_model_count_with_their_status(server):
    _, before = scrape(server.rest_url)
    with pytest.raises(grpc.RpcError) as failure:
        predict(server.grpc_target, model="no_such_model")
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    body = json.dumps({"instances": [[1.0, 2.0, 3.0, 4.0]]}).encode()
    rest = urllib.request.Request(server.rest_url + "/v1/models/no_such_model:predict", body)
    with pytest.raises(urllib.error.HTTPError) as http_failure:
        urllib.request.urlopen(rest, timeout=30)
    assert http_failure.value.code == 404
    _, after = scrape(server.rest_url)
    labels = {"model_name": "no_such_model", "status": "NOT_FOUND"}
    assert (
        get(after, TF + "request_count_total", **labels)
        - get(before, TF + "request_count_total", **labels)
        == 2
    )
    rest_labels = {"model_name": "no_such_model", "API": "Predict", "entrypoint": "REST"}
    assert (
        get(after, TF + "request_latency_count", **rest_labels)
        - get(before, TF + "request_latency_count", **rest_labels)
        == 1
    )
