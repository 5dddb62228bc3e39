"""One measurement run: a ``locust`` process with our scenarios, read back as windows.

The harness drives load through the same locustfiles a user runs by hand, so what a sweep
measures is what ``locust -f scenarios/...`` measures. A run is a warm-up stage followed by
equal window stages at the same load (``--stages``); each stage's figures come back in the
result file, and stage ``i >= 1`` becomes window ``i - 1``.
"""

from __future__ import annotations

import collections
import math
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.plan.spec import LoadKind
from harness.plan.traffic import ONE_ROW, POISSON, Sizes, arrival_argv
from harness.servers.server_process import child_argv
from scenarios.arrivals import ArrivalSpec
from scenarios.recording import Tally
from scenarios.results import MAX_CPU_PERCENT, ResultError, figures, load_result

SCENARIOS_DIR = Path(__file__).resolve().parents[2] / "scenarios"
SCENARIO_FILES = {"grpc": "tfserving_grpc.py", "rest": "tfserving_rest.py"}
# Open loop: one arrival stream per this many requests/s, within these bounds. More streams
# than needed only cost the generator CPU; too few cap the requests each can keep in flight.
RATE_PER_STREAM = 100.0
STREAMS = (4, 64)
LOG_TAIL_LINES = 40
# Tally fields a stage entry carries (its "message" form).
_TALLY_KEYS = ("histogram", "sent", "errors", "late", "dropped", "incomplete")


# Locust's master logs these (at INFO) while it waits for workers to connect.
_WORKER_READY = re.compile(r"(\S+) \(index \d+\) reported as ready\.")
_GAVE_UP = "Gave up waiting for workers to connect"
# A remote worker's name, set by `batchbench worker`; the scenario reports it (as "remote").
REMOTE_WORKER_ENV = "BATCHBENCH_REMOTE_WORKER"
LOCAL_WORKER_EXIT_S = 10.0


class LoadError(RuntimeError):
    """The load generator failed: it could not start, or wrote no result."""


class WorkersMissing(UserError):
    """The Locust master gave up waiting for the workers of ``load.workers`` to connect."""


@dataclass(frozen=True)
class LoadPlan:
    """What one Locust run does: the target, the request, the load and the windows."""

    protocol: str  # grpc | rest
    targets: tuple[str, ...]  # grpc://host:port or http://host:port
    model_name: str
    load_kind: LoadKind
    load: float  # users, or requests/s
    warmup_s: float
    window_s: float
    windows: int
    signature: str = "serving_default"
    rows: Sizes = ONE_ROW  # rows per request: fixed, a range, or weights
    length: Sizes | None = None  # the other -1 dimensions; None: the scenario's default
    payload: str | None = None
    arrival: ArrivalSpec = POISSON  # open loop only
    processes: int = 1
    seed: int = 0
    scrape_urls: tuple[str, ...] = ()  # Prometheus pages read at every stage boundary
    cpus: tuple[int, ...] = ()  # the generator's CPU set; empty: anywhere
    trace: str | None = None  # a trace replayed at ``load`` times its speed
    trace_rps: float = 0.0  # the trace's mean request rate at that speed (sizes the users)
    version_split: str | None = None  # A/B of versions (scenarios' --version-split)
    remote_workers: int = 0  # Locust workers started elsewhere (batchbench worker)
    master_bind: str = "0.0.0.0:5557"  # HOST:PORT the master listens on for workers
    workers_wait_s: float = 120.0  # how long the master waits for every worker

    @property
    def distributed(self) -> bool:
        """Whether remote workers take part (then local processes are workers we start)."""
        return self.remote_workers > 0

    @property
    def load_workers(self) -> int:
        """Processes that send requests: the local ones and the remote workers."""
        return self.processes + self.remote_workers

    @property
    def open_loop(self) -> bool:
        return self.load_kind != "concurrency"

    @property
    def users(self) -> int:
        if not self.open_loop:
            return int(self.load)
        rate = self.trace_rps if self.trace is not None else self.load
        low, high = STREAMS
        return max(low, min(high, math.ceil(rate / RATE_PER_STREAM)))

    @property
    def duration_s(self) -> float:
        return self.warmup_s + self.windows * self.window_s


def _stage(seconds: float, plan: LoadPlan) -> str:
    text = f"{round(seconds * 1000)}ms:{plan.users}"
    return f"{text}:{plan.load:g}" if plan.load_kind == "rate" else text


def locust_argv(plan: LoadPlan, result_file: Path) -> list[str]:
    """The ``locust`` command line for ``plan`` (headless, one warm-up stage, then windows)."""
    stages = [_stage(plan.warmup_s, plan)] if plan.warmup_s > 0 else []
    stages += [_stage(plan.window_s, plan)] * plan.windows
    argv = [
        sys.executable, "-m", "locust",
        "-f", str(SCENARIOS_DIR / SCENARIO_FILES[plan.protocol]),
        "--headless", "--only-summary",
        # INFO on a master with remote workers: its lines say which workers connected.
        "--loglevel", "INFO" if plan.distributed else "WARNING",
        "--host", plan.targets[0],
        "--targets", ",".join(plan.targets),
        "--model-name", plan.model_name,
        "--signature", plan.signature,
        "--rows", plan.rows.scenario_text(),
        "--seed", str(plan.seed),
        "--stages", ",".join(stages),
        "--result-file", str(result_file),
    ]  # fmt: skip
    if plan.trace is not None:
        # One pass: the run ends once it has been sent and answered, even if that is a little
        # before the last window was due to end (that window is then shorter).
        argv += ["--trace", plan.trace, "--trace-speed", f"{plan.load:g}", "--trace-loop", "false"]
    elif plan.open_loop:
        argv += [*arrival_argv(plan.arrival), "--rate", f"{plan.load:g}"]
    else:
        argv += ["--arrival", "closed"]
    if plan.warmup_s > 0:  # the warm-up stage's requests stay out of by_kind and the totals
        argv += ["--warmup-stages", "1"]
    if plan.length is not None:
        argv += ["--fill-dim", plan.length.scenario_text()]
    if plan.payload:
        argv += ["--payload", plan.payload]
    if plan.scrape_urls:
        argv += ["--scrape-urls", ",".join(plan.scrape_urls)]
    if plan.distributed:
        host, port = split_address(plan.master_bind)
        argv += [
            "--master", "--master-bind-host", host, "--master-bind-port", str(port),
            "--expect-workers", str(plan.load_workers),
            "--expect-workers-max-wait", f"{plan.workers_wait_s:g}",
        ]  # fmt: skip
    elif plan.processes > 1:
        argv += ["--processes", str(plan.processes)]
    if plan.version_split:
        argv += ["--version-split", plan.version_split]
    return argv


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:5557`` for IPv6) as (host, port)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def local_worker_argv(plan: LoadPlan) -> list[str]:
    """A Locust worker on this machine for a distributed ``plan``; it takes the options from
    the master, as a remote one does."""
    host, port = split_address(plan.master_bind)
    connect = "127.0.0.1" if host in ("*", "0.0.0.0", "") else ("::1" if host == "::" else host)
    return [
        sys.executable, "-m", "locust", "--worker",
        "-f", str(SCENARIOS_DIR / SCENARIO_FILES[plan.protocol]),
        "--master-host", connect, "--master-port", str(port), "--loglevel", "WARNING",
    ]  # fmt: skip


def run_locust(plan: LoadPlan, result_file: Path, *, grace_s: float = 60.0) -> dict[str, Any]:
    """Run ``plan`` and return its result file's content; LoadError with the output tail when
    Locust fails to produce one (exit code 1 only means some requests failed: that is data)."""
    result_file.parent.mkdir(parents=True, exist_ok=True)
    result_file.unlink(missing_ok=True)
    argv = locust_argv(plan, result_file)
    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
    connected: list[str] = []
    gave_up = False
    if plan.distributed:
        grace_s += plan.workers_wait_s
    with subprocess.Popen(
        child_argv(argv, plan.cpus, die_with_parent=False),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=locust_env(),
    ) as process:
        workers = _start_local_workers(plan) if plan.distributed else []
        try:
            assert process.stdout is not None  # started with stdout=PIPE
            for line in process.stdout:
                tail.append(line)
                if ready := _WORKER_READY.search(line):
                    connected.append(ready.group(1))
                gave_up = gave_up or _GAVE_UP in line
            process.wait(timeout=plan.duration_s + grace_s)
        except BaseException:
            process.kill()
            raise
        finally:
            _stop_local_workers(workers)
    if gave_up:
        raise WorkersMissing(_missing_message(plan, connected))
    if not result_file.exists():
        output = "".join(tail)
        raise LoadError(f"locust exited {process.returncode} without a result\n{output}")
    try:
        return load_result(result_file)
    except ResultError as exc:
        raise LoadError(str(exc)) from None


def _start_local_workers(plan: LoadPlan) -> list[subprocess.Popen[bytes]]:
    argv = local_worker_argv(plan)
    return [
        subprocess.Popen(
            child_argv(argv, plan.cpus),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=locust_env(),
        )
        for _ in range(plan.processes)
    ]


def _stop_local_workers(workers: Sequence[subprocess.Popen[bytes]]) -> None:
    """Local workers leave when the master tells them to; any still there are ended."""
    for worker in workers:
        try:
            worker.wait(timeout=LOCAL_WORKER_EXIT_S)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _missing_message(plan: LoadPlan, connected: Sequence[str]) -> str:
    port = split_address(plan.master_bind)[1]
    names = f": {', '.join(connected)}" if connected else ""
    return (
        f"load.workers: the Locust master on {plan.master_bind} waited {plan.workers_wait_s:g} s "
        f"for {plan.load_workers} worker(s) ({plan.remote_workers} remote, {plan.processes} "
        f"local) and {len(connected)} connected{names}. Start each remote one with "
        f"`batchbench worker --master ADDRESS:{port}` (ADDRESS: this machine as the load hosts "
        f"reach it), or lower load.workers.remote"
    )


def locust_env() -> dict[str, str]:
    """Locust's environment: our package importable, and no settings from the user's shell
    that would change the run behind the spec's back."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    root = str(SCENARIOS_DIR.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


# --- reading a result ----------------------------------------------------------------------------


def window_stages(result: Mapping[str, Any], plan: LoadPlan) -> list[dict[str, Any]]:
    """The stage entries that are windows (the warm-up stage left out)."""
    stages = list(result.get("stages", []))
    return stages[1:] if plan.warmup_s > 0 else stages


def combine(stages: Sequence[Mapping[str, Any]], window_s: float | None = None) -> dict[str, Any]:
    """The figures of several windows together: counts added, histograms merged exactly;
    over ``window_s`` when the entries share their time (kinds of one run), else the sum."""
    tally = Tally()
    for stage in stages:
        tally.add_message({key: stage[key] for key in _TALLY_KEYS})
    return figures(tally, sum(s["window_s"] for s in stages) if window_s is None else window_s)


def metric_figures(entry: Mapping[str, Any], offered_rps: float | None) -> dict[str, float | None]:
    """Metric IDs (harness.metrics) from a result's figures entry."""
    sent, dropped = entry["sent"], entry["dropped"]
    out = {
        "throughput_rps": entry["throughput_rps"],
        "offered_rate_rps": offered_rps,
        "send_rate_rps": entry["send_rate_rps"],
        "requests": float(entry["count"]),
        "error_rate": entry["error_rate"],
        "late_send_rate": entry["late"] / sent if sent else 0.0,
        "dropped_rate": dropped / (sent + dropped) if sent + dropped else 0.0,
    }
    for name in ("p50", "p90", "p95", "p99", "p999", "max", "mean"):
        out[f"latency_{name}_ms"] = entry[f"latency_{name}_ms"]
    return out


def generator_cpu_percent(result: Mapping[str, Any], wall_s: float) -> float | None:
    """Average CPU use of the busiest load process over the run, in % of one core."""
    processes = result.get("generator", {}).get("processes", {})
    percents = [p.get("cpu_percent") for p in processes.values() if p.get("cpu_percent")]
    if percents:
        return max(percents)
    seconds = result.get("generator", {}).get("cpu_seconds")
    return 100.0 * seconds / wall_s if seconds and wall_s > 0 else None


def _local_processes(result: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The result's processes on this machine (all but the remote workers)."""
    processes = result.get("generator", {}).get("processes", {})
    return {name: info for name, info in processes.items() if not info.get("remote")}


def generator_cores_used(result: Mapping[str, Any]) -> float | None:
    """The local load processes' CPU use together over the run, in cores (1.0 = one core)."""
    processes = _local_processes(result)
    percents = [p["cpu_percent"] for p in processes.values() if p.get("cpu_percent") is not None]
    return sum(percents) / 100.0 if percents else None


def runnable_worker(result: Mapping[str, Any]) -> tuple[float, str, bool] | None:
    """The load-generating process (local or remote) that was runnable the largest share of
    the run: that share (%), its label and whether it is a remote worker."""
    processes = result.get("generator", {}).get("processes", {})
    shares = [
        (info["runnable_percent"], worker_label(name, info), bool(info.get("remote")))
        for name, info in processes.items()
        if name != "master" and info.get("runnable_percent") is not None
    ]
    return max(shares, default=None)


def generator_runnable_percent(result: Mapping[str, Any]) -> float | None:
    """The highest share of the run (%) any load-generating process was runnable."""
    found = runnable_worker(result)
    return found[0] if found else None


def worker_label(name: str, info: Mapping[str, Any]) -> str:
    """How a report names a process: a remote worker by its name and host."""
    remote = info.get("remote")
    return f"remote worker {remote} on {info.get('host', '?')} ({name})" if remote else name


def worker_records(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each Locust process of a run, what it was and its CPU figures, for the point file."""
    out = []
    for name, info in sorted(result.get("generator", {}).get("processes", {}).items()):
        role = _role(name, info)
        keys = ("host", "remote", "pid", "cpu_seconds", "cpu_percent", "runnable_percent")
        record = {"id": name, "role": role, **{k: info.get(k) for k in keys}}
        record.update(sent=info.get("sent"), final_report=info.get("final_report", False))
        out.append(record)
    return out


def _role(name: str, info: Mapping[str, Any]) -> str:
    """master, local or remote; ``unreported`` for a worker Locust knew of but whose reports
    never reached the master (so nothing says where it ran)."""
    if name == "master":
        return "master"
    if "host" not in info:
        return "unreported"
    return "remote" if info.get("remote") else "local"


def dropped_workers(result: Mapping[str, Any], plan: LoadPlan) -> str | None:
    """Why a distributed run lost a worker (fewer final reports than workers), or None."""
    if not plan.distributed:
        return None
    processes = result.get("generator", {}).get("processes", {})
    reported = [n for n, info in processes.items() if n != "master" and info.get("final_report")]
    if len(reported) >= plan.load_workers:
        return None
    silent = sorted(n for n, info in processes.items() if n != "master" and n not in reported)
    names = f" (no final report from {', '.join(silent)})" if silent else ""
    return (
        f"worker dropped out: {len(reported)} of {plan.load_workers} Locust workers "
        f"({plan.remote_workers} remote, {plan.processes} local) finished the run{names}: "
        "its requests are missing from the figures"
    )


def generator_bound(result: Mapping[str, Any], plan: LoadPlan, machine_cores: int) -> str | None:
    """Why the run's throughput was limited by the generator, or None.

    Two signs, each against Locust's CPU warning threshold: the processes used nearly all the
    CPU they can use on their set (one core per process at most, no more than the set has),
    or one of them was runnable (on a CPU or queued for one) nearly all the time, which also
    catches a generator whose CPU was taken by other processes on its cores.
    """
    cores = len(plan.cpus) or machine_cores
    where = f"CPUs {','.join(map(str, plan.cpus))}" if plan.cpus else f"{cores} CPU(s), unpinned"
    used = generator_cores_used(result)
    capacity = float(min(max(1, plan.processes), max(1, cores)))
    if used is not None and 100.0 * used / capacity > MAX_CPU_PERCENT:
        return (
            f"generator-bound: {plan.processes} load process(es) used {used / capacity:.0%} of "
            f"the CPU they can use on {where} (limit {MAX_CPU_PERCENT:g}%): the point measured "
            "the generator, not the server"
        )
    runnable = runnable_worker(result)
    if runnable is not None and runnable[0] > MAX_CPU_PERCENT:
        share, label, remote = runnable
        return (
            f"generator-bound: load process {label} was runnable {share:.0f}% of the time "
            f"{'' if remote else f'on {where} '}(limit {MAX_CPU_PERCENT:g}%): it was short of "
            "CPU, so the point measured the generator, not the server"
        )
    return None
