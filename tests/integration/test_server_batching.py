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


def rest_predict(url: str, rows: list, model: str = "synthetic") -> tuple[int, dict, dict]:
    request = urllib.request.Request(
        f"{url}/v1/models/{model}:predict", data=json.dumps({"instances": rows}).encode()
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


def test_per_model_batching_parameters_take_precedence_as_in_tf_serving(tmp_path):
    """With --enable_per_model_batching_parameters a version's batching_params.pbtxt is its
    batching (limit and padding); a version without one does not batch; without the flag the
    global file governs both."""
    own, plain = tmp_path / "own", tmp_path / "plain"
    for base in (own, plain):
        build_model("synthetic", base, fixed_ms=1.0, per_item_ms=0.1)
    (own / "1" / "batching_params.pbtxt").write_text(
        "max_batch_size { value: 2 }\nbatch_timeout_micros { value: 0 }\nallowed_batch_sizes: 2\n"
    )
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list {\n"
        f'  config {{ name: "own" base_path: "{own}" model_platform: "tensorflow" }}\n'
        f'  config {{ name: "plain" base_path: "{plain}" model_platform: "tensorflow" }}\n'
        "}\n"
    )
    global_file = tmp_path / "batching.txt"
    global_file.write_text("max_batch_size { value: 4 }\nallowed_batch_sizes: 4\n")
    flags = [
        f"--model_config_file={config}",
        "--enable_batching",
        f"--batching_parameters_file={global_file}",
    ]
    one, three, eight = [[1.0] * 4], [[1.0] * 4] * 3, [[1.0] * 4] * 8
    with start_server([*flags, "--enable_per_model_batching_parameters"]) as server:
        status, body, _ = rest_predict(server.rest_url, three, "own")
        assert status == 400
        assert body["error"] == "Task size 3 is larger than maximum input batch size 2"
        status, _, headers = rest_predict(server.rest_url, one, "own")
        assert (status, headers["x-batch-size"], headers["x-batch-padding"]) == (200, "2", "1")
        status, _, headers = rest_predict(server.rest_url, eight, "plain")
        assert (status, headers["x-batch-size"], headers["x-batch-padding"]) == (200, "8", "0")
    with start_server(flags) as server:
        status, _, headers = rest_predict(server.rest_url, three, "own")
        assert (status, headers["x-batch-size"], headers["x-batch-padding"]) == (200, "4", "1")
        status, body, _ = rest_predict(server.rest_url, eight, "plain")
        assert body["error"] == "Task size 8 is larger than maximum input batch size 4"


def test_a_bad_per_model_batching_file_fails_that_version_only(tmp_path):
    model = tmp_path / "m"
    build_model("synthetic", model, fixed_ms=1.0, per_item_ms=0.1)
    (model / "1" / "batching_params.pbtxt").write_text("max_batch_sizes { value: 2 }\n")
    flags = [
        "--model_name=m",
        f"--model_base_path={model}",
        "--enable_batching",
        "--enable_per_model_batching_parameters",
    ]
    with start_server(flags) as server:
        with urllib.request.urlopen(f"{server.rest_url}/v1/models/m", timeout=10) as response:
            status = json.loads(response.read())["model_version_status"][0]
        assert status["state"] == "END"
        assert "batching_params.pbtxt" in status["status"]["error_message"]
        assert 'no field named "max_batch_sizes"' in status["status"]["error_message"]
