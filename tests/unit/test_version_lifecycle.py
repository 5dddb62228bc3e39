"""Which versions load and unload as the disk, policy or config change (no TF sessions)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from reference_server.errors import ServingError
from reference_server.model_registry import ModelRegistry, select_versions
from reference_server.reloading import poll_config_file
from reference_server.servable import SessionOptions
from reference_server.version_lifecycle import VersionPlan, VersionState, plan_versions
from tests.helpers import FakeServable

A, L, E, U = (
    VersionState.AVAILABLE,
    VersionState.LOADING,
    VersionState.END,
    VersionState.UNLOADING,
)

# -- the pure plan ------------------------------------------------------------------------------


def test_first_load_loads_every_aspired_version_newest_first():
    assert plan_versions([1, 2, 3], {}) == VersionPlan(load=(3, 2, 1), unload=())


def test_new_version_is_loaded_before_the_old_one_is_unloaded():
    assert plan_versions([2], {1: A}) == VersionPlan(load=(2,), unload=())
    assert plan_versions([2], {1: A, 2: L}) == VersionPlan(load=(), unload=())
    assert plan_versions([2], {1: A, 2: A}) == VersionPlan(load=(), unload=(1,))


def test_failed_new_version_leaves_the_serving_one_and_is_not_retried():
    assert plan_versions([2], {1: A, 2: E}, failed={2}) == VersionPlan(load=(), unload=())


def test_removed_folder_with_nothing_else_aspired_is_unloaded():
    assert plan_versions([], {1: A}) == VersionPlan(load=(), unload=(1,))


def test_only_the_newest_unaspired_version_stays_while_nothing_aspired_serves():
    assert plan_versions([5], {1: A, 2: A, 3: A, 5: L}).unload == (1, 2)


def test_cleanly_unloaded_version_can_be_loaded_again():
    assert plan_versions([1], {1: E, 2: A}).load == (1,)


def test_loading_and_unloading_versions_are_left_alone():
    assert plan_versions([1, 2], {1: U, 2: L}) == VersionPlan(load=(), unload=())


@pytest.mark.parametrize(
    ("policy", "on_disk", "expected"),
    [
        ("", [1, 2, 3], [3]),
        ("latest { num_versions: 2 }", [1, 2, 3], [2, 3]),
        ("all {}", [1, 3], [1, 3]),
        ("specific { versions: 2 versions: 9 }", [1, 2, 3], [2]),
    ],
)
def test_policy_chooses_the_aspired_versions(policy, on_disk, expected):
    config = text_format.Parse(
        f"model_version_policy {{ {policy} }}" if policy else "",
        model_server_config_pb2.ModelConfig(),
    )
    assert select_versions(config, on_disk) == expected


# -- the registry applying plans to a fake base path --------------------------------------------


def server_config(*models: tuple[str, Path, str]) -> model_server_config_pb2.ModelServerConfig:
    text = "".join(
        f'config {{ name: "{name}" base_path: "{base}" {extra} }}' for name, base, extra in models
    )
    return text_format.Parse(
        f"model_config_list {{ {text} }}", model_server_config_pb2.ModelServerConfig()
    )


def states(registry: ModelRegistry, name: str = "m") -> dict[int, VersionState]:
    return {r.version: r.state for r in registry.version_records(name)}


def make_versions(base: Path, *versions: int) -> None:
    for version in versions:
        (base / str(version)).mkdir(parents=True)


@pytest.fixture
def registry() -> ModelRegistry:
    return ModelRegistry(SessionOptions(), factory=FakeServable)


def test_poll_switches_to_a_new_version_and_unloads_the_old(tmp_path, registry):
    make_versions(tmp_path, 1)
    registry.load_config(server_config(("m", tmp_path, "")))
    make_versions(tmp_path, 2)
    registry.poll()
    assert states(registry) == {2: A, 1: E}
    assert registry.resolve("m").version == 2


def test_poll_keeps_serving_when_the_new_version_is_broken(tmp_path, registry):
    make_versions(tmp_path, 1)
    registry.load_config(server_config(("m", tmp_path, "")))
    make_versions(tmp_path, 2)
    (tmp_path / "2" / "broken").write_text("")
    registry.poll()
    (tmp_path / "1").rmdir()  # even with its folder gone, 1 is the only one serving
    registry.poll()
    records = {r.version: r for r in registry.version_records("m")}
    assert (records[1].state, records[2].state) == (A, E)
    assert "could not load" in records[2].error.message
    assert registry.resolve("m").version == 1


def test_poll_unloads_a_removed_folder(tmp_path, registry):
    make_versions(tmp_path, 1, 2)
    registry.load_config(server_config(("m", tmp_path, "model_version_policy { all {} }")))
    (tmp_path / "1").rmdir()
    registry.poll()
    assert states(registry) == {2: A, 1: E}


def test_reload_adds_and_removes_models_and_moves_labels(tmp_path, registry):
    make_versions(tmp_path / "a", 1, 2)
    make_versions(tmp_path / "b", 7)
    registry.load_config(server_config(("a", tmp_path / "a", "model_version_policy { all {} }")))
    registry.apply_config(
        server_config(
            (
                "a",
                tmp_path / "a",
                'model_version_policy { all {} } version_labels { key: "s" value: 1 }',
            ),
            ("b", tmp_path / "b", ""),
        )
    )
    assert registry.resolve("a", label="s").version == 1
    assert registry.resolve("b").version == 7
    registry.apply_config(server_config(("b", tmp_path / "b", "")))
    assert states(registry, "a") == {1: E, 2: E}
    with pytest.raises(ServingError, match="Servable not found"):
        registry.resolve("a")


def test_reload_refuses_a_label_on_a_version_not_available(tmp_path, registry):
    make_versions(tmp_path, 1)
    registry.load_config(server_config(("m", tmp_path, "")))
    with pytest.raises(ServingError) as caught:
        registry.apply_config(
            server_config(("m", tmp_path, 'version_labels { key: "s" value: 2 }'))
        )
    assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.message == (
        "Request to assign label to version 2 of model m, which is not currently available "
        "for inference"
    )


def test_unavailable_labels_allowed_by_the_flag(tmp_path):
    registry = ModelRegistry(
        SessionOptions(), factory=FakeServable, allow_version_labels_for_unavailable_models=True
    )
    make_versions(tmp_path, 1)
    registry.load_config(server_config(("m", tmp_path, "")))
    registry.apply_config(server_config(("m", tmp_path, 'version_labels { key: "s" value: 2 }')))
    assert registry.label_version("m", "s") == 2


def test_config_file_poll_applies_only_a_changed_config_and_survives_bad_reads(tmp_path):
    make_versions(tmp_path / "a", 1)
    make_versions(tmp_path / "b", 1)
    first = server_config(("a", tmp_path / "a", ""))
    reads = iter([first, first, ValueError("bad file"), server_config(("b", tmp_path / "b", ""))])
    registry = ModelRegistry(SessionOptions(), factory=FakeServable)
    registry.load_config(first)

    def read_config():
        value = next(reads, None)
        if isinstance(value, Exception):
            raise value
        if value is None:
            raise asyncio.CancelledError  # every planned read done: end the loop
        return value

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(poll_config_file(registry, read_config, 0.001))
    assert registry.resolve("b").version == 1
    assert states(registry, "a") == {1: E}
