"""``batchbench rollout`` as a user runs it: a real server, real Locust, a version dropped in."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.models.zoo import ensure_model
from harness.servers.replicas import write_monitoring_config
from tests.conftest import start_server
from tests.e2e.test_sweep import FAKE_TFS

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def rollout(out: Path, models_dir: Path, *extra: str, env=None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "harness", "rollout", "--model", "mlp",
            "--models-dir", str(models_dir), "--concurrency", "4", "--switch-after", "3",
            "--after", "4", "--out", str(out), *extra]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=400, cwd=REPO, env=env)


def check_switch(run: dict) -> dict:
    """No failure; the figures present; the first answer of the new version in the same second
    (give or take one) as the server made it AVAILABLE."""
    figures = run["figures"]
    assert figures["failed"] == 0 and figures["failures"] == {}
    assert (figures["old_version"], figures["new_version"]) == ("1", "2")
    for name in ("p99_before_ms", "p99_during_ms", "p99_after_ms", "excess_p99_ms_s"):
        assert figures[name] is not None and figures[name] >= 0, name
    assert figures["requests"] > 100
    assert figures["answers_by_version"]["1"] > 0 and figures["answers_by_version"]["2"] > 0
    available = run["server"]["new_available_at_s"]
    assert available is not None and available >= figures["switch_at_s"]
    assert abs(figures["first_new_at_s"] - available) <= 1.0, (figures, run["server"])
    assert figures["last_old_at_s"] <= available + 1.0
    return figures


def test_rollout_against_the_reference_server_with_and_without_warmup(tmp_path, models_dir):
    out = tmp_path / "rollout"
    completed = rollout(out, models_dir, "--warmup-records", "0", "--warmup-records", "2")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    document = json.loads((out / "rollout.json").read_text())
    assert [run["warmup_records"] for run in document["runs"]] == [0, 2]
    for run in document["runs"]:
        check_switch(run)
    warm = out / "warmup-2" / "models" / "base" / "2" / "assets.extra"
    assert (warm / "tf_serving_warmup_requests").is_file()
    assert not (out / "warmup-0" / "models" / "base" / "2" / "assets.extra").exists()
    assert "warm-up records 2: version 1 -> 2" in completed.stdout
    html = (out / "report.html").read_text()
    assert 'id="rollout"' in html and html.count("<svg") == 2 and 'id="versions"' in html
    report = json.loads((out / "report.json").read_text())
    assert {row["version"] for row in report["runs"][0]["versions"]} == {"1", "2"}


def test_rollout_against_a_tensorflow_model_server_on_path(tmp_path, models_dir):
    """The tfserving target starts the binary from PATH with TF Serving's flags and files."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "tensorflow_model_server"
    calls = tmp_path / "fake-calls.txt"
    fake.write_text(FAKE_TFS.format(log=calls, python=sys.executable))
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    out = tmp_path / "rollout"
    completed = rollout(out, models_dir, "--target", "tfserving", "--no-report", env=env)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    (run,) = json.loads((out / "rollout.json").read_text())["runs"]
    check_switch(run)
    (line,) = calls.read_text().splitlines()
    flags = dict(arg.split("=", 1) for arg in line.split())
    assert flags["--model_name"] == "mlp"
    assert Path(flags["--model_base_path"]) == (out / "warmup-0" / "models" / "base").resolve()
    assert flags["--file_system_poll_wait_seconds"] == "1"
    assert flags["--enable_model_warmup"] == "true"
    assert "prometheus_config" in Path(flags["--monitoring_config_file"]).read_text()
    assert int(flags["--port"]) > 0 and int(flags["--rest_api_port"]) > 0


def test_an_external_target_needs_a_switch_command(tmp_path, models_dir):
    completed = rollout(tmp_path / "x", models_dir, "--target", "external", "--grpc", "h:1")
    assert completed.returncode == 2
    assert "--switch-command" in completed.stderr


def test_rollout_of_an_external_server_with_a_switch_command(tmp_path, models_dir):
    """A server the harness does not start: the user's command makes the switch."""
    base = tmp_path / "base" / "mlp"
    shutil.copytree(ensure_model(models_dir, "mlp") / "1", base / "1")
    staged = tmp_path / "staged" / "2"
    shutil.copytree(ensure_model(models_dir, "mlp") / "1", staged)  # a copy is a new version too
    flags = ["--model_name=mlp", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1"]
    flags.append(f"--monitoring_config_file={write_monitoring_config(tmp_path)}")
    out = tmp_path / "rollout"
    with start_server(flags) as server:
        completed = rollout(
            out, models_dir, "--target", "external", "--model-name", "mlp",
            "--grpc", server.grpc_target, "--rest", server.rest_url,
            "--switch-command", f"mv {staged} {base / '2'}", "--no-report",
        )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    (run,) = json.loads((out / "rollout.json").read_text())["runs"]
    check_switch(run)
