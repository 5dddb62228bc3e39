"""Device discovery and the sessions' GPU options: always on the CPU path, the GPU path when a
GPU is visible to TensorFlow (``-m gpu``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow.core.protobuf import config_pb2

from harness.models.zoo import build_model
from reference_server.devices import DeviceReport, discover_device, gpu_options
from reference_server.flags import FlagError, ignored_flags, parse_flags
from reference_server.metrics import ServerMetrics
from reference_server.servable import Servable, SessionOptions, session_config

pytestmark = pytest.mark.timeout(120)

HAS_GPU = bool(tf.config.list_physical_devices("GPU"))
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="no GPU visible to TensorFlow")


def test_fraction_zero_lets_memory_grow_so_replicas_can_share_a_gpu():
    options = gpu_options(0.0)
    assert options.allow_growth is True
    assert options.per_process_gpu_memory_fraction == 0.0


def test_a_fraction_caps_memory_as_tf_serving_does():
    options = gpu_options(0.25)
    assert options.per_process_gpu_memory_fraction == pytest.approx(0.25)
    assert options.allow_growth is False  # TF claims the fraction up front, as in TF Serving


@pytest.mark.parametrize("fraction", [-0.5, math.nan, math.inf])
def test_a_fraction_that_is_not_a_fraction_is_refused_naming_the_flag(fraction):
    with pytest.raises(ValueError, match="--per_process_gpu_memory_fraction="):
        gpu_options(fraction)


def test_the_session_config_carries_parallelism_and_gpu_options():
    config = session_config(SessionOptions(2, 3, per_process_gpu_memory_fraction=0.5))
    assert config.intra_op_parallelism_threads == 2
    assert config.inter_op_parallelism_threads == 3
    assert config.allow_soft_placement is True
    assert config.gpu_options.per_process_gpu_memory_fraction == pytest.approx(0.5)
    assert config.gpu_options.allow_growth is False
    assert session_config(SessionOptions()).gpu_options.allow_growth is True


def test_the_flag_takes_effect_and_a_negative_fraction_fails_at_parse_time():
    base = ["--model_base_path=/models/m"]
    flags = parse_flags([*base, "--per_process_gpu_memory_fraction=0.4"])
    assert "per_process_gpu_memory_fraction" not in ignored_flags(flags)  # no "no effect" warning
    with pytest.raises(FlagError) as info:
        parse_flags([*base, "--per_process_gpu_memory_fraction=-1"])
    assert info.value.flag == "per_process_gpu_memory_fraction"
    assert "expected 0 (grow as needed) or a fraction" in str(info.value)


def test_the_reported_device_is_what_tensorflow_sees():
    device = discover_device()
    if HAS_GPU:
        assert (device.device, device.kind) == ("GPU:0", "GPU")
    else:
        assert device == DeviceReport("CPU", "CPU")
        assert device.log_text() == "CPU"


def test_the_device_is_exported_as_an_info_gauge():
    metrics = ServerMetrics()
    metrics.describe_device(DeviceReport("GPU:0", "GPU", "NVIDIA H100 80GB HBM3"))
    text = metrics.render()
    assert "# TYPE :batchbench:serving:device_info gauge" in text
    samples = [
        s
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == ":batchbench:serving:device_info"
    ]
    assert [(s.labels, s.value) for s in samples] == [
        ({"device": "GPU:0", "kind": "GPU", "name": "NVIDIA H100 80GB HBM3"}, 1.0)
    ]


@pytest.mark.gpu
@needs_gpu
def test_a_servable_runs_on_the_gpu_within_its_memory_fraction(tmp_path):
    build_model("mlp", tmp_path)
    options = SessionOptions(per_process_gpu_memory_fraction=0.2)
    servable = Servable("mlp", 1, tmp_path / "1", options)
    try:
        signature = servable.signature("")
        x = np.ones((4, 16), np.float32)
        assert servable.run(signature, {"x": x}, ("y",))["y"].shape == (4, 1)
        # A traced run of the same signature says where its ops executed.
        trace = config_pb2.RunOptions(trace_level=config_pb2.RunOptions.FULL_TRACE)
        metadata = config_pb2.RunMetadata()
        servable._session.run(
            signature.outputs["y"].tensor_name,
            {signature.inputs["x"].tensor_name: x},
            options=trace,
            run_metadata=metadata,
        )
        assert any("GPU:0" in stats.device for stats in metadata.step_stats.dev_stats)
        assert discover_device().kind == "GPU"
    finally:
        servable.close()
