"""Model warm-up in a running reference server: TF Serving's warm-up file replayed at load time.

The first-request test uses the built-in ``cnn`` at 32×32 pixels and 10 classes: its first
session run costs about a second (TensorFlow optimises the MobileNetV2 graph on the first run
of a session; measured 1.2 s on 2 cores) and every later one a few milliseconds, so a version
warmed up before it serves answers its first request much faster than one that was not.
"""

from __future__ import annotations

import re
import shutil
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from harness.models.warmup_file import tfrecord, warmup_path, write_for_version
from harness.models.zoo import build_model
from harness.servers.replicas import PROMETHEUS_PATH, write_monitoring_config
from tests.conftest import shared_testdata, start_server
from tests.helpers import wait_for
from tests.integration.test_versions_reload import version_status

TIMEOUT = 60.0


def metrics_text(rest_url: str) -> str:
    with urllib.request.urlopen(rest_url + PROMETHEUS_PATH, timeout=TIMEOUT) as answer:
        return answer.read().decode()


def metric_value(text: str, name: str, **labels: str) -> float | None:
    """The value of the series ``name`` with (at least) these labels, or None."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def write_logs(version_dir: Path, logs: list[prediction_log_pb2.PredictionLog]) -> None:
    path = warmup_path(version_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(tfrecord(log.SerializeToString()) for log in logs))


def half_plus_two_logs() -> list[prediction_log_pb2.PredictionLog]:
    """One record of each kind TF Serving replays, for TF Serving's half_plus_two model."""
    predict = predict_pb2.PredictRequest()
    predict.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.0, 2.0], np.float32)))
    example = tf.train.Example()
    example.features.feature["x"].float_list.value.append(3.0)
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.signature_name = "classify_x_to_y"
    classify.input.example_list.examples.add().CopyFrom(example)
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.signature_name = "regress_x_to_y"
    regress.input.example_list.examples.add().CopyFrom(example)
    multi = inference_pb2.MultiInferenceRequest()
    task = multi.tasks.add()
    task.model_spec.signature_name = "regress_x_to_y"
    task.method_name = "tensorflow/serving/regress"
    multi.input.example_list.examples.add().CopyFrom(example)
    return [
        prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=predict)
        ),
        prediction_log_pb2.PredictionLog(
            classify_log=prediction_log_pb2.ClassifyLog(request=classify)
        ),
        prediction_log_pb2.PredictionLog(
            regress_log=prediction_log_pb2.RegressLog(request=regress)
        ),
        prediction_log_pb2.PredictionLog(
            multi_inference_log=prediction_log_pb2.MultiInferenceLog(request=multi)
        ),
    ]


def test_every_kind_of_record_is_replayed_and_counted(tmp_path):
    """Predict, Classify, Regress and MultiInference records all run before the version is
    AVAILABLE; the metrics count 4 records read and one OK warm-up, labelled by the path."""
    source = shared_testdata("saved_model_half_plus_two_cpu/00000123")
    version = tmp_path / "half_plus_two" / "123"
    shutil.copytree(source, version)
    write_logs(version, half_plus_two_logs())
    monitoring = write_monitoring_config(tmp_path)
    flags = [
        "--model_name=half_plus_two",
        f"--model_base_path={version.parent}",
        f"--monitoring_config_file={monitoring}",
        "--num_request_iterations_for_warmup=2",
    ]
    with start_server(flags) as server:
        text = metrics_text(server.rest_url)
        labels = {"model_path": str(version)}
        assert metric_value(text, ":batchbench:serving:model_warmup_records_read", **labels) == 4
        count = ":tensorflow:serving:model_warmup_latency_count"
        assert metric_value(text, count, status="OK", **labels) == 1
    assert "Number of warmup records read: 4" in server.log_text()
    assert "has no effect" not in server.log_text()  # the iterations flag is acted on


def test_without_the_flag_nothing_is_replayed(tmp_path):
    version = tmp_path / "half_plus_two" / "123"
    shutil.copytree(shared_testdata("saved_model_half_plus_two_cpu/00000123"), version)
    write_logs(version, half_plus_two_logs())
    monitoring = write_monitoring_config(tmp_path)
    flags = [
        "--model_name=half_plus_two",
        f"--model_base_path={version.parent}",
        f"--monitoring_config_file={monitoring}",
        "--enable_model_warmup=false",
    ]
    with start_server(flags) as server:
        text = metrics_text(server.rest_url)
    assert metric_value(text, ":batchbench:serving:model_warmup_records_read") is None
    assert "warmup" not in server.log_text()


def test_a_malformed_file_fails_the_load_with_tf_servings_message(tmp_path):
    """A file that is not TFRecord fails the version with DATA_LOSS and TF Serving's advice;
    a record that is not a PredictionLog with INVALID_ARGUMENT; the version served before
    stays AVAILABLE and keeps answering."""
    base = tmp_path / "m"
    built = build_model("mlp", tmp_path / "built", version=1)
    shutil.copytree(built, base / "1")
    flags = ["--model_name=m", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1"]
    with start_server(flags) as server, grpc.insecure_channel(server.grpc_target) as channel:
        corrupt = tmp_path / "staged" / "2"
        shutil.copytree(built, corrupt)
        warmup_path(corrupt).parent.mkdir()
        warmup_path(corrupt).write_bytes(b"this is not a TFRecord file at all")
        corrupt.rename(base / "2")
        states = wait_for(
            lambda: (s := version_status(channel)).get(2, (0, ""))[1] and s,
            TIMEOUT,
            "version 2 to fail",
        )
        assert states[2][1] == (
            "corrupted record at 0 (Is this even a TFRecord file?). "
            "Please verify your warmup data is in TFRecord format."
        )
        assert states[1][0] == 30  # AVAILABLE: the old version keeps serving

        unparseable = tmp_path / "staged" / "3"
        shutil.copytree(built, unparseable)
        warmup_path(unparseable).parent.mkdir()
        warmup_path(unparseable).write_bytes(tfrecord(b"\xff\xff\xff"))
        unparseable.rename(base / "3")
        states = wait_for(
            lambda: (s := version_status(channel)).get(3, (0, ""))[1] and s,
            TIMEOUT,
            "version 3 to fail",
        )
        assert states[3][1].startswith("Failed to parse warmup record: ")
        assert states[3][1].endswith(f" from {warmup_path(base / '3')}")
        assert states[1][0] == 30
    assert "DATA_LOSS" in server.log_text() or "corrupted record at 0" in server.log_text()


def first_request_ms(target: str, model: str) -> float:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 32, 32, 3), np.float32)))
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        started = time.perf_counter()
        stub.Predict(request, timeout=TIMEOUT)
        return (time.perf_counter() - started) * 1000.0


@pytest.mark.slow
def test_a_warmed_up_version_answers_its_first_request_faster(tmp_path):
    """The same cnn version served twice by one server, once with a one-record warm-up file
    (as ``make-model --warmup-records`` writes): the warmed-up model's first answer skips the
    first run's graph optimisation (about a second here), the other's pays for it."""
    cold = tmp_path / "cold"
    build_model("cnn", cold, image_size=32, classes=10)
    warm = tmp_path / "warm"
    shutil.copytree(cold, warm)
    write_for_version(warm / "1", 1, model_name="warm")
    entries = "".join(
        f'config {{ name: "{name}" base_path: "{tmp_path / name}" model_platform: "tensorflow" }} '
        for name in ("cold", "warm")
    )
    config = tmp_path / "models.config"
    config.write_text(f"model_config_list {{ {entries}}}\n")
    flags = [f"--model_config_file={config}", "--tensorflow_intra_op_parallelism=1"]
    with start_server([*flags, "--tensorflow_inter_op_parallelism=1"]) as server:
        times = {name: first_request_ms(server.grpc_target, name) for name in ("cold", "warm")}
    assert server.log_text().count("Number of warmup records read: 1") == 1
    assert times["warm"] < times["cold"], times


def test_make_model_writes_a_file_the_server_replays(tmp_path):
    """``make-model --warmup-records 3`` output, read by TensorFlow's own TFRecord reader."""
    version = build_model("mlp", tmp_path / "mlp", warmup_records=3)
    records = list(tf.compat.v1.io.tf_record_iterator(str(warmup_path(version))))
    logs = [prediction_log_pb2.PredictionLog.FromString(r) for r in records]
    assert [log.WhichOneof("log_type") for log in logs] == ["predict_log"] * 3
    shapes = [tf.make_ndarray(log.predict_log.request.inputs["x"]).shape for log in logs]
    assert shapes == [(1, 16)] * 3
    assert re.fullmatch(r"mlp", logs[0].predict_log.request.model_spec.name)
