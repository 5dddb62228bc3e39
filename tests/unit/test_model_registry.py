"""Version selection and lookup rules of the model registry (no TensorFlow sessions)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from reference_server.errors import ServingError
from reference_server.model_registry import (
    ModelRegistry,
    VersionState,
    list_version_dirs,
    select_versions,
)
from reference_server.servable import SessionOptions
from tests.helpers import FakeServable


def model_config(text: str = "") -> model_server_config_pb2.ModelConfig:
    return text_format.Parse(text, model_server_config_pb2.ModelConfig())


def test_default_policy_is_latest_one():
    assert select_versions(model_config(), [3, 1, 2]) == [3]


def test_latest_n_all_and_specific_policies():
    assert select_versions(
        model_config("model_version_policy { latest { num_versions: 2 } }"), [1, 5, 3]
    ) == [3, 5]
    assert select_versions(model_config("model_version_policy { all {} }"), [2, 1]) == [1, 2]
    specific = model_config("model_version_policy { specific { versions: 1 versions: 7 } }")
    assert select_versions(specific, [1, 2, 3]) == [1]


def test_only_numeric_folders_are_versions(tmp_path: Path):
    for name in ("1", "20", "tmp", "3.bak"):
        (tmp_path / name).mkdir()
    (tmp_path / "5").write_text("a file, not a folder")
    assert sorted(list_version_dirs(tmp_path)) == [1, 20]
    assert list_version_dirs(tmp_path / "missing") == {}


def registry_with(tmp_path: Path, versions: list[str], policy: str, labels: str = ""):
    for version in versions:
        (tmp_path / version).mkdir()
    config = text_format.Parse(
        f'model_config_list {{ config {{ name: "m" base_path: "{tmp_path}" '
        f"model_version_policy {{ {policy} }} {labels} }} }}",
        model_server_config_pb2.ModelServerConfig(),
    )
    registry = ModelRegistry(SessionOptions(), factory=FakeServable)
    registry.load_config(config)
    return registry


def test_resolve_latest_specific_and_label(tmp_path: Path):
    registry = registry_with(
        tmp_path, ["1", "2"], "all {}", 'version_labels { key: "stable" value: 1 }'
    )
    assert registry.resolve("m").version == 2
    assert registry.resolve("m", 1).version == 1
    assert registry.resolve("m", label="stable").version == 1


def test_unknown_model_version_and_label_use_tf_serving_messages(tmp_path: Path):
    registry = registry_with(tmp_path, ["1"], "all {}")
    cases = [
        (
            lambda: registry.resolve("other"),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(other)",
        ),
        (
            lambda: registry.resolve("m", 9),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Specific(m, 9)",
        ),
        (
            lambda: registry.resolve("m", label="canary"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Unrecognized servable version label: canary",
        ),
        (
            lambda: registry.version_records("other"),
            grpc.StatusCode.NOT_FOUND,
            "Could not find any versions of model other",
        ),
        (
            lambda: registry.version_records("m", 9),
            grpc.StatusCode.NOT_FOUND,
            "Could not find version 9 of model m",
        ),
    ]
    for call, code, message in cases:
        with pytest.raises(ServingError) as caught:
            call()
        assert (caught.value.code, caught.value.message) == (code, message)


def test_failed_version_is_recorded_and_others_serve(tmp_path: Path):
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "broken").write_text("")
    registry = registry_with(tmp_path, ["1"], "all {}")
    states = {r.version: (r.state, r.error) for r in registry.version_records("m")}
    assert states[1] == (VersionState.AVAILABLE, None)
    assert states[3][0] == VersionState.END
    assert "could not load" in states[3][1].message
    assert registry.resolve("m").version == 1  # the broken newest version is never served


def test_label_on_a_version_that_is_not_available_is_not_applied(tmp_path: Path):
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "broken").write_text("")
    registry = registry_with(tmp_path, ["1"], "all {}", 'version_labels { key: "b" value: 3 }')
    with pytest.raises(ServingError, match="Unrecognized servable version label: b"):
        registry.resolve("m", label="b")
