"""(4b) Load generator scaling: the open-loop gRPC rate 1, 2 and 3 Locust workers sustain
together, started as `batchbench worker` processes for a master as a sweep with
``load.workers`` runs them (the path a multi-host sweep takes), against the no-op server.

For each worker count the rate is stepped up (as in generator_capacity: < 1% late sends, a
valid run, no errors or drops, at least 97% answered) until a step fails; the figure is the
last rate that passed. Scaling efficiency = rate(N) / (N x rate(1)): how much of another
worker process's capacity a sweep gets. On a 2-core machine the no-op server shares the
cores, so 2 and 3 workers also show what contention costs; the rate per worker CPU-second
(and its ratio to one worker's) is what a worker core sustains whatever else runs, the figure
to size a multi-host sweep with.
Run: python -m benchmarks.worker_scaling
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, finish, noop_server, result, target_of
from benchmarks.generator_capacity import step_passed
from harness.servers.server_process import ServerProcess, free_port
from harness.sweep.load_runner import LoadPlan, run_locust
from scenarios.arrivals import ArrivalSpec

WORKERS = (1, 2, 3)
STEP_RPS = 250.0  # per worker
FIRST_RPS = 250.0  # per worker
MAX_STEPS = 16
SECONDS = 4.0
SHARED = "below 1: the workers share the cores with each other and with the server"


@contextlib.contextmanager
def workers(master: str, count: int) -> Iterator[None]:
    """``count`` `batchbench worker` processes for ``master``, each in its own session."""
    argv = [sys.executable, "-m", "harness", "worker", "--master", master]
    started = [
        subprocess.Popen(
            [*argv, "--name", f"bench-{i}"],
            cwd=ROOT,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(count)
    ]
    try:
        yield
    finally:
        for process in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in started:
            process.wait(timeout=30)


def run_step(server: ServerProcess, master: str, count: int, rate: float) -> dict[str, Any]:
    plan = LoadPlan(
        protocol="grpc",
        targets=(target_of(server, "grpc"),),
        model_name="mlp",
        load_kind="rate",
        load=rate,
        warmup_s=1.0,
        window_s=SECONDS,
        windows=1,
        arrival=ArrivalSpec("constant"),
        processes=0,
        remote_workers=count,
        master_bind=master,
        workers_wait_s=60.0,
    )
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        run = run_locust(plan, Path(tmp) / "result.json")
    window = dict(run["stages"][-1])
    window["result"] = run
    return window


def step(run: Mapping[str, Any], rate: float) -> dict[str, Any]:
    processes = run["result"]["generator"]["processes"]
    load = [info for name, info in processes.items() if name != "master"]
    return {
        "rate_rps": rate,
        "throughput_rps": run["throughput_rps"],
        "late_fraction": run["late"] / (run["sent"] or 1),
        "invalid_reasons": run["result"]["invalid_reasons"],
        "worker_cpu_percent": [info.get("cpu_percent") for info in load],
        "passed": step_passed(run, rate),
    }


def scale(server: ServerProcess, count: int) -> list[dict[str, Any]]:
    master = f"127.0.0.1:{free_port()}"
    steps = []
    with workers(master, count):
        rate = FIRST_RPS * count
        for _ in range(MAX_STEPS):
            steps.append(step(run_step(server, master, count, rate), rate))
            if not steps[-1]["passed"]:
                break
            rate += STEP_RPS * count
    return steps


def best_step(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    passed = [s for s in steps if s["passed"]]
    return passed[-1] if passed else None


def best_rate(steps: list[dict[str, Any]]) -> float | None:
    best = best_step(steps)
    return best["rate_rps"] if best else None


def per_worker_core(steps: list[dict[str, Any]]) -> float | None:
    """Requests/s per core the workers used, at the step that answered the most: what one
    worker core sustains, even when the machine's other load left the workers less."""
    if not steps:
        return None
    top = max(steps, key=lambda s: s["throughput_rps"] or 0.0)
    cores = sum(c or 0 for c in top["worker_cpu_percent"]) / 100
    return top["throughput_rps"] / cores if cores else None


def rows(details: Mapping[int, list[dict[str, Any]]]) -> list:
    single = best_rate(details.get(1, []))
    out = []
    for count, steps in details.items():
        best = best_rate(steps)
        tried = ", ".join(
            f"{s['rate_rps']:g}/s {'ok' if s['passed'] else 'failed'} "
            f"({s['late_fraction']:.1%} late, CPU "
            f"{'+'.join(f'{c or 0:.0f}' for c in s['worker_cpu_percent'])}%)"
            for s in steps
        )
        out.append(
            result(
                f"generator capacity grpc, {count} remote worker process(es)",
                best,
                unit="req/s",
                notes=f"steps: {tried}",
            )
        )
        out.append(
            result(
                f"generator capacity grpc per worker CPU-second, {count} worker(s)",
                per_worker_core(steps),
                unit="req/s",
                notes="throughput / the workers' CPU shares together, at the busiest step",
            )
        )
        if count > 1:
            cost = per_worker_core(steps)
            one = per_worker_core(details.get(1, []))
            out.append(
                result(
                    f"worker scaling per CPU-second, {count} workers (vs 1 worker)",
                    cost / one if cost and one else None,
                    unit="x",
                    notes="1: a request costs the workers as much CPU with more of them",
                )
            )
            efficiency = best / (count * single) if best and single else None
            out.append(
                result(
                    f"worker scaling efficiency, {count} workers (rate / {count} x 1 worker)",
                    efficiency,
                    unit="x",
                    notes=SHARED,
                )
            )
    return out


def main() -> int:
    details: dict[int, list[dict[str, Any]]] = {}
    with noop_server() as server:
        for count in WORKERS:
            details[count] = scale(server, count)
    return finish("worker_scaling", rows(details), {str(k): v for k, v in details.items()})


if __name__ == "__main__":
    sys.exit(main())
