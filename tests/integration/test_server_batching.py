"""Batching semantics end to end: a real server, the real `synthetic` model, real gRPC and REST.

Each Predict answer carries what its request went through (x-batch-size, x-batch-padding,
x-batch-queue-us, x-batch-compute-us), which is what these tests read.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from harness.models.zoo import build_model
from tests.conftest import start_server

QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"


@pytest.fixture(scope="module")
def synthetic_model(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("synthetic")
    build_model("synthetic", base, fixed_ms=5.0, per_item_ms=0.5)
    return base


def batching_flags(model: Path, tmp: Path, params: str) -> list[str]:
    params_file = tmp / "batching.txt"
    params_file.write_text(params)
    return [
        "--model_name=synthetic",
        f"--model_base_path={model}",
        "--enable_batching",
        f"--batching_parameters_file={params_file}",
    ]


@pytest.fixture(scope="module")
def batching_server(synthetic_model, tmp_path_factory):
    """Batches of 8, a long timeout (1 s) so a burst fills them, one batch thread."""
    params = """
        max_batch_size { value: 8 }
        batch_timeout_micros { value: 1000000 }
        max_enqueued_batches { value: 100 }
        num_batch_threads { value: 1 }
        allowed_batch_sizes: 4
        allowed_batch_sizes: 8
    """
    flags = batching_flags(synthetic_model, tmp_path_factory.mktemp("b"), params)
    with start_server(flags) as server:
        yield server


def predict(target: str, rows: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """One gRPC Predict; returns y and the request's batch telemetry."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "synthetic"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(rows))
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response, call = stub.Predict.with_call(request, timeout=60)
    telemetry = {k: int(v) for k, v in call.trailing_metadata() if k.startswith("x-batch")}
    return tf.make_ndarray(response.outputs["y"]), telemetry


def test_a_burst_of_single_rows_runs_in_full_batches(batching_server):
    rows = [np.full((1, 4), i, np.float32) for i in range(32)]
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda r: predict(batching_server.grpc_target, r), rows))
    for i, (y, telemetry) in enumerate(answers):
        assert y.tolist() == [[4.0 * i]]  # every caller gets its own row back
        assert telemetry["x-batch-size"] == 8
        assert telemetry["x-batch-padding"] == 0
    # 32 rows in batches of 8: at least 4 batches' worth of compute, each ~5 + 0.5·8 ms
    assert min(t["x-batch-compute-us"] for _, t in answers) >= 8_000


def test_a_lone_request_waits_for_the_batch_timeout_and_is_padded(batching_server):
    started = time.perf_counter()
    y, telemetry = predict(batching_server.grpc_target, np.ones((3, 4), np.float32))
    waited = time.perf_counter() - started
    assert y.tolist() == [[4.0]] * 3
    assert telemetry["x-batch-queue-us"] >= 1_000_000
    assert waited >= 1.0
    # 3 rows padded up to the allowed size 4
    assert (telemetry["x-batch-size"], telemetry["x-batch-padding"]) == (4, 1)


def test_a_request_larger_than_max_batch_size_is_invalid(batching_server):
    with pytest.raises(grpc.RpcError) as caught:
        predict(batching_server.grpc_target, np.ones((9, 4), np.float32))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "Task size 9 is larger than maximum input batch size 8"


def rest_predict(url: str, rows: list) -> tuple[int, dict, dict]:
    request = urllib.request.Request(
        f"{url}/v1/models/synthetic:predict", data=json.dumps({"instances": rows}).encode()
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read()), dict(error.headers)


def test_rest_answers_carry_the_batch_telemetry(batching_server):
    status, body, headers = rest_predict(batching_server.rest_url, [[1, 1, 1, 1]] * 4)
    assert (status, body) == (200, {"predictions": [[4.0]] * 4})
    assert headers["x-batch-size"] == "4"
    assert headers["x-batch-padding"] == "0"


def test_a_full_queue_rejects_at_once_with_unavailable(tmp_path):
    """One slow (200 ms) batch running, one waiting: further requests are refused at once."""
    slow_model = tmp_path / "slow"
    build_model("synthetic", slow_model, fixed_ms=200.0, per_item_ms=0.0)
    params = """
        max_batch_size { value: 1 }
        batch_timeout_micros { value: 0 }
        max_enqueued_batches { value: 1 }
        num_batch_threads { value: 1 }
    """
    flags = batching_flags(slow_model, tmp_path, params)
    with start_server(flags) as server, ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: rest_predict(server.rest_url, [[0, 0, 0, 1]]), range(12)))
    codes = sorted(status for status, _, _ in answers)
    assert 200 in codes and 503 in codes
    for status, body, _ in answers:
        if status == 503:
            assert body["error"].startswith(QUEUE_FULL)
        else:
            assert (status, body) == (200, {"predictions": [[1.0]]})
