"""A/B of model versions: `--version-split` sends each arm's share, the answers are counted by the
version that gave them (gRPC: the answer's model_spec.version; REST: the arm)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.models.zoo import build_model
from tests.conftest import start_server
from tests.integration.test_scenarios_locust import assert_ran, run_locust

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Versions 1 and 2 of the mlp, labelled stable and canary."""
    base = tmp_path_factory.mktemp("split") / "m"
    shutil.copytree(build_model("mlp", base, version=1), base / "2")  # the same model twice
    config = base.parent / "models.config"
    labels = "version_labels { key: 'stable' value: 1 } version_labels { key: 'canary' value: 2 }"
    config.write_text(
        f"model_config_list {{ config {{ name: 'm' base_path: '{base}' "
        f"model_platform: 'tensorflow' model_version_policy {{ all {{}} }} {labels} }} }}\n"
    )
    with start_server([f"--model_config_file={config}"]) as srv:
        yield srv


def by_version(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["version"]: entry for entry in result["by_version"]}


def test_a_90_10_label_split_is_measured_within_two_points(server: Any, tmp_path: Path) -> None:
    args = ["--model-name", "m", "--version-split", "stable=0.9,canary=0.1", "-u", "8",
            "-r", "100", "-t", "5s", "--seed", "3"]  # fmt: skip
    result = assert_ran(*run_locust("tfserving_grpc", server.grpc_target, args, tmp_path))
    versions = by_version(result)
    assert set(versions) == {"1", "2"}  # the versions the labels point at, from the answers
    total = versions["1"]["count"] + versions["2"]["count"]
    assert total == result["total"]["count"] and total >= 2000
    assert abs(versions["2"]["count"] / total - 0.10) <= 0.02
    assert versions["2"]["latency_p99_ms"] and versions["2"]["histogram"]
    assert result["model"]["version_split"] == "stable:0.9,canary:0.1"
    seconds = [entry for entry in result["timeline"] if entry.get("versions")]
    assert sum(e["versions"].get("2", {}).get("ok", 0) for e in seconds) == versions["2"]["count"]


def test_rest_splits_by_version_number_and_counts_by_arm(server: Any, tmp_path: Path) -> None:
    args = ["--model-name", "m", "--version-split", "1=1,2=1", "-u", "4", "-r", "100",
            "-t", "2s"]  # fmt: skip
    result = assert_ran(*run_locust("tfserving_rest", server.rest_url, args, tmp_path))
    versions = by_version(result)
    assert set(versions) == {"1", "2"} and min(v["count"] for v in versions.values()) > 20


def test_an_arm_that_does_not_exist_fails_under_its_name(server: Any, tmp_path: Path) -> None:
    args = ["--model-name", "m", "--version-split", "stable=1,missing=1", "-u", "2",
            "-r", "100", "-t", "2s"]  # fmt: skip
    completed, result = run_locust("tfserving_grpc", server.grpc_target, args, tmp_path)
    assert result is not None, completed.stdout[-3000:]
    versions = by_version(result)
    assert versions["missing"]["error_count"] > 0 and not versions["missing"]["count"]
    assert set(versions["missing"]["errors"]) == {"INVALID_ARGUMENT"}  # an unknown label
    assert versions["1"]["count"] > 0 and not versions["1"]["error_count"]
