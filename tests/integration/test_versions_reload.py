"""Versions come and go in a running reference server: file-system polling and config reload.

The synthetic model (1 ms per batch) keeps the server cheap, so the clients measure the
switch-over, not the model.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from harness.models.zoo import build_model
from tests.conftest import start_server
from tests.helpers import wait_for

AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.END
TIMEOUT = 30.0
LOAD_SECONDS = 20.0
DROP_AFTER_SECONDS = 5.0
CLIENTS = 3


def build(base: Path, version: int) -> Path:
    return build_model("synthetic", base, version=version, fixed_ms=1, per_item_ms=0)


def predict_request(name: str, label: str = "") -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if label:
        request.model_spec.version_label = label
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((1, 4), np.float32)))
    return request


def served_version(channel: grpc.Channel, name: str = "m", label: str = "") -> int:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return stub.Predict(predict_request(name, label), timeout=TIMEOUT).model_spec.version.value


def version_status(channel: grpc.Channel, name: str = "m") -> dict[int, tuple[int, str]]:
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    response = stub.GetModelStatus(request, timeout=TIMEOUT)
    return {s.version: (s.state, s.status.error_message) for s in response.model_version_status}


@pytest.fixture
def channel_to() -> Iterator:
    channels: list[grpc.Channel] = []

    def open_channel(target: str) -> grpc.Channel:
        channels.append(grpc.insecure_channel(target))
        return channels[-1]

    yield open_channel
    for channel in channels:
        channel.close()


# -- the proof under load ------------------------------------------------------------------------


@dataclass
class ClientLog:
    """What one closed-loop client saw: (monotonic time, version) per answer, and failures."""

    answers: list[tuple[float, int]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def closed_loop(channel: grpc.Channel, until: float, log: ClientLog) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    payload = predict_request("m")
    while time.monotonic() < until:
        try:
            response = stub.Predict(payload, timeout=TIMEOUT)
        except grpc.RpcError as exc:
            log.failures.append(f"{exc.code()}: {exc.details()}")
            continue
        log.answers.append((time.monotonic(), response.model_spec.version.value))


def test_new_version_replaces_old_under_load_without_failures(
    tmp_path, channel_to, record_property
):
    base, staging = tmp_path / "m", tmp_path / "staging"
    build(base, 1)
    build(staging, 2)  # built beforehand, so dropping it in is one atomic rename
    flags = ["--model_name=m", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1"]
    with start_server(flags, rest=False) as srv:
        channel = channel_to(srv.grpc_target)
        assert served_version(channel) == 1
        logs = [ClientLog() for _ in range(CLIENTS)]
        until = time.monotonic() + LOAD_SECONDS
        threads = [threading.Thread(target=closed_loop, args=(channel, until, log)) for log in logs]
        for thread in threads:
            thread.start()
        time.sleep(DROP_AFTER_SECONDS)
        dropped_at = time.monotonic()
        (staging / "2").rename(base / "2")
        shutil.rmtree(base / "1")  # at once: version 1 must keep serving until 2 is AVAILABLE
        for thread in threads:
            thread.join()
        status = version_status(channel)

    assert [log.failures for log in logs] == [[]] * CLIENTS
    switches = [switch_time(log) - dropped_at for log in logs]
    print(
        f"switch from version 1 to 2 after {min(switches):.2f}-{max(switches):.2f} s "
        f"({sum(len(log.answers) for log in logs)} answers, 0 failures)"
    )
    record_property("switch_seconds", round(max(switches), 3))
    assert max(switches) < LOAD_SECONDS - DROP_AFTER_SECONDS
    assert status == {2: (AVAILABLE, ""), 1: (END, "")}


def switch_time(log: ClientLog) -> float:
    """When this client first got version 2; it must never see version 1 again after that."""
    versions = [version for _, version in log.answers]
    assert set(versions) == {1, 2}, "every answer comes from version 1 or 2, and both served"
    first_new = versions.index(2)
    assert all(v == 2 for v in versions[first_new:]), "went back from version 2 to 1"
    return log.answers[first_new][0]


# -- broken versions and config reload ------------------------------------------------------------


def reload_config(channel: grpc.Channel, text: str) -> model_management_pb2.ReloadConfigResponse:
    request = model_management_pb2.ReloadConfigRequest()
    text_format.Parse(text, request.config)
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    return stub.HandleReloadConfigRequest(request, timeout=60.0)


def test_broken_version_reported_and_reload_adds_model_and_label(tmp_path, channel_to):
    base, other = tmp_path / "m", tmp_path / "other"
    build(base, 1)
    build(other, 3)
    flags = ["--model_name=m", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1"]
    with start_server(flags, rest=False) as srv:
        channel = channel_to(srv.grpc_target)
        (base / "2").mkdir()
        (base / "2" / "saved_model.pb").write_bytes(b"not a protobuf")
        wait_for(lambda: version_status(channel).get(2, (0, ""))[0] == END, 30, "version 2 to end")
        _, error = version_status(channel)[2]
        assert error, "the load error is shown in the status"
        assert version_status(channel)[1] == (AVAILABLE, "")
        assert served_version(channel) == 1

        config = (
            f'model_config_list {{ config {{ name: "m" base_path: "{base}" '
            f'version_labels {{ key: "stable" value: 1 }} }} '
            f'config {{ name: "other" base_path: "{other}" }} }}'
        )
        response = reload_config(channel, config)
        assert response.status.error_code == 0
        assert served_version(channel, "other") == 3
        assert served_version(channel, "m", label="stable") == 1

        refused = config.replace("value: 1", "value: 2")
        with pytest.raises(grpc.RpcError) as caught:
            reload_config(channel, refused)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert caught.value.details() == (
            "Request to assign label to version 2 of model m, which is not currently "
            "available for inference"
        )
        assert served_version(channel, "m", label="stable") == 1  # the old config stays
