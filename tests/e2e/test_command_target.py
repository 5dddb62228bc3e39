"""A ``command`` target: the spec's hooks deploy every configuration through the shell.

The hooks here start and stop reference servers as a user's deployment script would start a
container; one configuration's ``apply`` fails, and only its point fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.store.results import ResultStore

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

# The user's tooling: `deploy.sh up N MODEL BASE BATCHING_FILE` starts N servers on free ports
# and remembers them in servers.txt (in the configuration's folder, the hooks' working
# directory); `ready` checks each; `endpoints` prints them; `down` stops them.
DEPLOY = """#!/bin/sh
set -e
port() {
  "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'
}
case "$1" in
up)
  echo 'prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }' > monitoring.txt
  : > servers.txt
  i=0
  while [ "$i" -lt "$2" ]; do
    grpc=$(port); rest=$(port)
    "$PYTHON" -m reference_server --port="$grpc" --rest_api_port="$rest" --model_name="$3" \\
      --model_base_path="$4" --enable_batching=true --batching_parameters_file="$5" \\
      --monitoring_config_file=monitoring.txt > "server-$i.log" 2>&1 &
    echo "$! $grpc $rest" >> servers.txt
    i=$((i + 1))
  done ;;
ready)
  while read -r pid grpc rest; do
    "$PYTHON" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$rest/v1/models/$2')"
  done < servers.txt ;;
endpoints)
  while read -r pid grpc rest; do
    echo "grpc 127.0.0.1:$grpc"
    echo "rest http://127.0.0.1:$rest"
  done < servers.txt ;;
down)
  while read -r pid grpc rest; do kill "$pid"; done < servers.txt
  while read -r pid grpc rest; do
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  done < servers.txt
  echo stopped ;;
esac
"""


def test_hooks_deploy_each_configuration_and_a_failing_hook_fails_only_its_point(
    tmp_path,
):
    script = tmp_path / "deploy.sh"
    script.write_text(DEPLOY)
    deploy = f"sh {script}"
    spec = {
        "name": "command",
        "target": {
            "kind": "command",
            "hooks": {
                # This tooling cannot deploy max_batch_size 16: its apply fails for that one.
                "apply": (
                    "case {{batching}} in *'value: 16 '*) echo 'quota exceeded for {{config}}'; "
                    f"exit 3;; esac; {deploy} up {{{{replicas}}}} {{{{model}}}} "
                    "{{model_base_path}} {{batching_file}}"
                ),
                "ready": {"run": f"{deploy} ready {{{{model}}}}", "timeout_s": 120},
                "endpoints": f"{deploy} endpoints",
                "teardown": f"{deploy} down",
            },
        },
        "model": {"builtin": "mlp"},
        "server": {"replicas": [1], "batching": {"max_batch_size": [8, 16]}},
        "matrix": {"include": [{"max_batch_size": 8, "replicas": 2}]},
        "load": {"concurrency": [8]},
        "placement": "none",
        "measurement": {
            "warmup_s": 0.5,
            "window_s": 1,
            "stability_tolerance": 1.0,
            "stable_windows": 2,
            "max_windows": 2,
            "min_requests": 1,
        },
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "run"
    env = {**os.environ, "PYTHON": sys.executable}
    argv = [sys.executable, "-m", "harness", "sweep", str(path), "--out", str(out), "--no-report"]
    try:
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=400, env=env)
    finally:
        _kill_leftovers(out)
    assert done.returncode == 0, done.stdout + done.stderr

    points = {p.key: p for p in ResultStore.open(out).load_points()}
    assert set(points) == {"mbs8-r1-grpc-c8-rep0", "mbs16-r1-grpc-c8-rep0", "mbs8-r2-grpc-c8-rep0"}
    failed = points["mbs16-r1-grpc-c8-rep0"]
    assert failed.status == "failed"
    assert (
        failed.reason
        == "target did not start: target.hooks.apply failed for mbs16-r1 (exit code 3)"
    )
    assert "quota exceeded for mbs16-r1" in (failed.log_tail or "")
    for key in ("mbs8-r1-grpc-c8-rep0", "mbs8-r2-grpc-c8-rep0"):
        assert points[key].status == "ok" and points[key].metrics["requests"] > 0
    # The replica count reached the tooling: two servers for r2, and load went to both.
    servers = (out / "servers" / "mbs8-r2" / "servers.txt").read_text().splitlines()
    assert len(servers) == 2
    replicas = points["mbs8-r2-grpc-c8-rep0"].telemetry
    assert replicas, "the servers' metrics were read through the printed REST addresses"
    # Every deployment was torn down by its hook.
    for config in ("mbs8-r1", "mbs8-r2"):
        assert (out / "servers" / config / "hook-teardown.log").read_text().strip() == "stopped"
    batching = (out / "servers" / "mbs8-r2" / "batching_parameters.txt").read_text()
    assert "max_batch_size { value: 8 }" in batching


def _kill_leftovers(out: Path) -> None:
    """Servers a failed test left running (the hooks' teardown normally stops them)."""
    for listing in out.glob("servers/*/servers.txt"):
        for line in listing.read_text().splitlines():
            with contextlib.suppress(ProcessLookupError, ValueError, IndexError):
                os.kill(int(line.split()[0]), signal.SIGKILL)
