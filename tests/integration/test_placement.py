"""CPU placement with real processes: replicas and the load generator run on their CPU sets
(as the kernel reports them in /proc/PID/status), and a point whose throughput the generator
limited is marked invalid, saying so.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from benchmarks.common import NOOP_SERVER, ROOT
from harness.models.zoo import ensure_model
from harness.plan.placement import format_cpus, plan_placement
from harness.plan.points import expand_matrix
from harness.plan.spec import validate_spec
from harness.servers.replicas import start_replicas
from harness.servers.server_process import ServerProcess, cpus_allowed, free_port, start_server
from harness.servers.targets import start_target
from harness.store.results import csv_row
from harness.sweep.load_runner import LoadPlan, run_locust
from harness.sweep.measure import measure_point
from tests.helpers import wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
        reason="placement needs at least 2 usable CPUs and Linux's affinity calls",
    ),
]

MACHINE = tuple(sorted(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else ()


def _locust_pid() -> int | None:
    """The pid of our running ``locust`` child, once it has exec'd (and so is pinned)."""
    for child in psutil.Process().children(recursive=True):
        try:
            if child.cmdline()[1:3] == ["-m", "locust"]:
                return child.pid
        except psutil.Error:
            continue
    return None


def test_replicas_and_the_generator_run_on_their_cpu_sets(tmp_path, models_dir):
    base = ensure_model(models_dir, "mlp", {})
    placement = plan_placement(MACHINE, 2)
    flags = ["--model_name=mlp", f"--model_base_path={base}"]
    with start_replicas(flags, 2, config_dir=tmp_path, placement=placement) as replicas:
        assert replicas.cpus_allowed() == [format_cpus(cpus) for cpus in placement.replicas]
        for server, cpus in zip(replicas.servers, placement.replicas, strict=True):
            assert f"--tensorflow_intra_op_parallelism={len(cpus)}" in server.command
            assert f"--tensorflow_inter_op_parallelism={len(cpus)}" in server.command
        plan = LoadPlan(
            protocol="grpc",
            targets=tuple(f"grpc://{t}" for t in replicas.grpc_targets),
            model_name="mlp",
            load_kind="concurrency",
            load=4,
            warmup_s=0,
            window_s=3,
            windows=1,
            cpus=placement.generator,
        )
        done: dict[str, Any] = {}
        runner = threading.Thread(
            target=lambda: done.update(result=run_locust(plan, tmp_path / "run.json"))
        )
        runner.start()
        try:
            pid = wait_for(_locust_pid, 60, "the locust process")
            generator_cpus = cpus_allowed(pid)
        finally:
            runner.join(120)
    assert generator_cpus == format_cpus(placement.generator)
    assert not set(placement.generator) & set(placement.servers)
    assert done["result"]["total"]["count"] > 0


@pytest.fixture(scope="module")
def noop_on_first_core() -> Iterator[ServerProcess]:
    """The no-op Predict server (benchmarks.noop_server) pinned to the first usable CPU."""
    flags = [f"--port={free_port()}", f"--rest_api_port={free_port()}", "--model_name=mlp"]
    env = {"PYTHONPATH": str(ROOT)}
    with start_server(flags, command=NOOP_SERVER, env=env, cpus=MACHINE[:1]) as server:
        assert cpus_allowed(server.process.pid) == str(MACHINE[0])
        yield server


def _external_spec(server: ServerProcess, generator: str, processes: int | str) -> Any:
    return validate_spec(
        {
            "target": {"kind": "external", "endpoints": [{"rest": server.rest_url}]},
            "protocol": "rest",
            "model": {"name": "mlp"},
            "load": {"concurrency": [64], "processes": processes},
            "placement": {"generator": generator},
            "measurement": {
                "warmup_s": 1,
                "window_s": 2,
                "stable_windows": 2,
                "max_windows": 2,
                "min_requests": 0,
            },
        }
    )


def _measure(spec: Any, tmp_path: Path):
    point = expand_matrix(spec)[0]
    target = start_target(spec, point.server, model_base=None, folder=tmp_path)
    return measure_point(spec, point, target, tmp_path / "work")


def test_a_generator_bound_point_is_invalid_with_the_reason(noop_on_first_core, tmp_path):
    # One Locust process with 64 users against a server that does nothing (over REST its
    # floor is ~50 µs a call, a quarter of the generator's): the generator, alone on the
    # second CPU, is the bottleneck.
    spec = _external_spec(noop_on_first_core, str(MACHINE[1]), processes=1)
    result = _measure(spec, tmp_path)
    assert result.status == "ok"
    assert not result.valid
    bound = [r for r in result.invalid_reasons if r.startswith("generator-bound:")]
    assert bound, result.invalid_reasons
    assert f"CPUs {MACHINE[1]}" in bound[0]
    assert result.placement is not None
    assert result.placement["generator"] == str(MACHINE[1])
    assert result.placement["generator_processes"] == 1
    assert "generator-bound" in csv_row(result)["reason"]
    assert csv_row(result)["generator_cpus"] == str(MACHINE[1])


def test_auto_processes_measure_a_generator_bound_point_again_with_more(
    noop_on_first_core, tmp_path
):
    spec = _external_spec(noop_on_first_core, format_cpus(MACHINE[:2]), processes="auto")
    result = _measure(spec, tmp_path)
    assert result.status == "ok"
    assert result.placement is not None
    assert result.placement["first_run_generator_bound"].startswith("generator-bound:")
    assert result.placement["generator_processes"] == 2
    assert result.extra["locust_runs"] >= 1
