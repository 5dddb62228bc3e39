"""SIGTERM on a real server: stop accepting at once, finish the requests in flight within
``--shutdown_grace_seconds``, exit 0; work running past the grace period is abandoned.

The `synthetic` model sleeps a declared time per batch, so "in flight" is a fact the test
controls: requests wait in an open batch (``batch_timeout_micros`` long) that the Prometheus
queue depth shows, and the signal arrives while they are there.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from harness.models.zoo import build_model
from tests.conftest import start_server
from tests.helpers import wait_for

pytestmark = pytest.mark.timeout(180)

METRICS_PATH = "/monitoring/prometheus/metrics"
QUEUE_DEPTH = ":batchbench:serving:batch_queue_depth"
GRPC_CLIENTS = 3
REST_CLIENTS = 3
# Polled often: the ports must be seen refusing before the queued requests finish.
POLL_S = 0.02


def server_flags(tmp: Path, *, fixed_ms: float, grace_s: float, batching: str | None) -> list[str]:
    model = tmp / "synthetic"
    build_model("synthetic", model, fixed_ms=fixed_ms, per_item_ms=0.0)
    monitoring = tmp / "monitoring.txt"
    monitoring.write_text(f'prometheus_config: {{ enable: true, path: "{METRICS_PATH}" }}\n')
    flags = [
        "--model_name=synthetic",
        f"--model_base_path={model}",
        f"--monitoring_config_file={monitoring}",
        f"--shutdown_grace_seconds={grace_s}",
    ]
    if batching is not None:
        params = tmp / "batching.txt"
        params.write_text(batching)
        flags += ["--enable_batching", f"--batching_parameters_file={params}"]
    return flags


def grpc_predict(target: str, value: float) -> float:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "synthetic"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.full((1, 4), value, np.float32)))
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=60)
    return float(tf.make_ndarray(response.outputs["y"])[0, 0])


def rest_predict(url: str, value: float) -> float:
    body = json.dumps({"instances": [[value] * 4]}).encode()
    request = urllib.request.Request(url + "/v1/models/synthetic:predict", data=body)
    with urllib.request.urlopen(request, timeout=60) as response:
        return float(json.loads(response.read())["predictions"][0][0])


def queue_depth(rest_url: str) -> float:
    with urllib.request.urlopen(rest_url + METRICS_PATH, timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == QUEUE_DEPTH:
                return sample.value
    raise AssertionError(f"{QUEUE_DEPTH} not exported")


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def test_sigterm_finishes_requests_in_flight_refuses_new_ones_and_exits_0(tmp_path):
    # One open batch collects every request for 2 s, then runs for 0.5 s.
    batching = """
        max_batch_size { value: 8 }
        batch_timeout_micros { value: 2000000 }
        max_enqueued_batches { value: 4 }
        num_batch_threads { value: 1 }
    """
    flags = server_flags(tmp_path, fixed_ms=500, grace_s=20, batching=batching)
    with (
        start_server(flags) as server,
        ThreadPoolExecutor(GRPC_CLIENTS + REST_CLIENTS) as pool,
    ):
        calls: list[Future[float]] = [
            pool.submit(grpc_predict, server.grpc_target, i) for i in range(GRPC_CLIENTS)
        ]
        calls += [
            pool.submit(rest_predict, server.rest_url, GRPC_CLIENTS + i)
            for i in range(REST_CLIENTS)
        ]
        wait_for(lambda: queue_depth(server.rest_url) == len(calls), 10, "requests queued", POLL_S)

        server.process.send_signal(signal.SIGTERM)
        wait_for(
            lambda: refuses_connections(server.grpc_port) and refuses_connections(server.rest_port),
            5,
            "both ports to refuse connections",
            POLL_S,
        )
        assert not any(call.done() for call in calls), "refused only after requests finished"

        answers = [call.result(timeout=60) for call in calls]
        assert answers == [4.0 * i for i in range(len(calls))]  # each its own row sum
        assert server.process.wait(timeout=30) == 0
    assert "Shutting down" in server.log_text()


@pytest.mark.parametrize("batching", [True, False], ids=["batched", "unbatched"])
def test_work_running_past_the_grace_period_does_not_keep_the_process_alive(tmp_path, batching):
    params = "max_batch_size { value: 1 }\nnum_batch_threads { value: 1 }\n"
    # 60 s per batch, 1 s of grace: the process must be gone long before the batch would end.
    flags = server_flags(tmp_path, fixed_ms=60000, grace_s=1, batching=params if batching else None)
    with start_server(flags) as server, ThreadPoolExecutor(1) as pool:
        call = pool.submit(grpc_predict, server.grpc_target, 1.0)
        if batching:  # dequeued: the batch is running, no longer waiting
            wait_for(
                lambda: queue_depth(server.rest_url) == 0 and not call.done(), 10, "a run", POLL_S
            )
        time.sleep(0.5)  # the request has reached the model (unbatched: no signal to wait on)
        server.process.send_signal(signal.SIGTERM)
        try:
            code = server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("the server was still alive 30 s after SIGTERM with 1 s of grace")
        assert code == 0
        with pytest.raises(grpc.RpcError) as info:
            call.result(timeout=30)
        assert info.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    assert "abandoned" in server.log_text()
