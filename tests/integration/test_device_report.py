"""A real server says which device its models run on: a start-up log line and a Prometheus
gauge the harness scrapes."""

from __future__ import annotations

import urllib.request

import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families

from harness.models.zoo import build_model
from tests.conftest import start_server

pytestmark = pytest.mark.timeout(120)

METRICS_PATH = "/monitoring/prometheus/metrics"
DEVICE_INFO = ":batchbench:serving:device_info"


def test_the_device_is_logged_and_exported(tmp_path):
    build_model("synthetic", tmp_path / "m", fixed_ms=0.0, per_item_ms=0.0)
    monitoring = tmp_path / "monitoring.txt"
    monitoring.write_text(f'prometheus_config: {{ enable: true, path: "{METRICS_PATH}" }}\n')
    flags = [
        "--model_name=synthetic",
        f"--model_base_path={tmp_path / 'm'}",
        f"--monitoring_config_file={monitoring}",
        "--per_process_gpu_memory_fraction=0.3",
    ]
    with start_server(flags) as server:
        with urllib.request.urlopen(server.rest_url + METRICS_PATH, timeout=30) as response:
            text = response.read().decode()
        log = server.log_text()
    [sample] = [
        s
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == DEVICE_INFO
    ]
    assert sample.value == 1
    if tf.config.list_physical_devices("GPU"):
        assert (sample.labels["device"], sample.labels["kind"]) == ("GPU:0", "GPU")
        assert f"Serving on device: GPU:0 ({sample.labels['name']})" in log
    else:
        assert sample.labels == {"device": "CPU", "kind": "CPU", "name": ""}
        assert "Serving on device: CPU\n" in log
    assert "per_process_gpu_memory_fraction is accepted" not in log  # it has an effect now
