"""``batchbench serve --replicas N``: N reference servers presented as one service."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.models.zoo import ensure_model
from harness.sweep import telemetry

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def read_until(process: subprocess.Popen, marker: str, lines: list[str]) -> None:
    for line in process.stdout:
        lines.append(line)
        if marker in line:
            return
    raise AssertionError("serve ended early:\n" + "".join(lines))


def test_replicas_share_uniform_load_evenly_and_stop_on_sigterm(tmp_path, models_dir):
    base = ensure_model(models_dir, "mlp")
    serve = subprocess.Popen(
        [sys.executable, "-m", "harness", "serve", "--replicas", "2",
         "--model_name=mlp", f"--model_base_path={base}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        read_until(serve, "AVAILABLE", lines)
        text = "".join(lines)
        pids = [int(p) for p in re.findall(r"replica \d: pid (\d+)", text)]
        metrics = re.findall(r"metrics (\S+)", text)
        targets = re.search(r"grpc targets: (\S+)", text).group(1)
        assert len(pids) == 2 and len(metrics) == 2 and targets.count("grpc://") == 2
        for pid in pids:  # two replicas on this machine's cores: each gets its share
            cores = os.cpu_count() or 1
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            assert f"--tensorflow_intra_op_parallelism={max(1, cores // 2)}" in cmdline

        before = [telemetry.scrape(url) for url in metrics]
        subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(REPO / "scenarios/tfserving_grpc.py"),
             "--headless", "--only-summary", "--host", targets.split(",")[0],
             "--targets", targets, "--model-name", "mlp", "-u", "8", "-r", "100", "-t", "3s"],
            cwd=REPO, capture_output=True, timeout=120, check=False,
        )  # fmt: skip
        after = [telemetry.scrape(url) for url in metrics]
        counts = [
            telemetry.total(telemetry.delta(b, a), telemetry.REQUEST_COUNT, status="OK")
            for b, a in zip(before, after, strict=True)
        ]
        assert min(counts) > 100, counts
        assert max(counts) <= 1.2 * min(counts), counts  # within 20% of each other
    finally:
        serve.send_signal(signal.SIGTERM)
        output, _ = serve.communicate(timeout=60)
    assert serve.returncode == 0, "".join(lines) + output
    assert "stopping" in output
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), f"replica {pid} still runs"


def _zombie(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    return "State:\tZ" in status


def test_serve_refuses_fixed_ports(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "harness", "serve", "--replicas", "2", "--port=8500",
         "--model_name=m", "--model_base_path=/nonexistent"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert completed.returncode == 2
    assert "--port=8500" in completed.stderr and "own free ports" in completed.stderr


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="placement needs 2 usable CPUs")
def test_serve_with_auto_placement_pins_the_replica_and_names_the_generator_cores(models_dir):
    from harness.plan.placement import format_cpus, plan_placement
    from harness.servers.server_process import cpus_allowed

    base = ensure_model(models_dir, "mlp")
    expected = plan_placement(sorted(os.sched_getaffinity(0)), 1)
    serve = subprocess.Popen(
        [sys.executable, "-m", "harness", "serve", "--placement", "auto",
         "--model_name=mlp", f"--model_base_path={base}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        read_until(serve, "AVAILABLE", lines)
        text = "".join(lines)
        pid = int(re.search(r"replica 0: pid (\d+)", text).group(1))
        servers, generator = format_cpus(expected.servers), format_cpus(expected.generator)
        assert cpus_allowed(pid) == servers
        assert f"replica 0: cpus {servers}" in text
        assert f"load generator cpus: {generator} (e.g. taskset -c {generator} locust" in text
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        assert f"--tensorflow_intra_op_parallelism={len(expected.servers)}" in cmdline
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.communicate(timeout=60)
    assert serve.returncode == 0
