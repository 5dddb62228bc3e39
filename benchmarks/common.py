"""What every benchmark shares: results with their verdicts, the table, servers, Locust runs.

A benchmark is a ``main()`` that measures, builds :class:`BenchResult` rows and hands them to
:func:`finish`, which writes ``reports/bench/<name>.json`` and prints the rows as a table. The
verdict logic and the table are pure, so they are unit-tested; everything with a socket or a
process lives below them and reuses the harness (``start_server``, ``run_locust``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from harness.models.zoo import ensure_model
from harness.plan.batching_file import BatchingParams, write_batching_file
from harness.plan.spec import LoadKind
from harness.servers.replicas import write_monitoring_config
from harness.servers.server_process import ServerProcess, free_port, start_server
from harness.sweep.load_runner import LoadPlan, run_locust
from scenarios.arrivals import ArrivalSpec

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "reports" / "bench"
MODELS_DIR = ROOT / "reports" / "models"
SCHEMA_VERSION = 1
NOOP_SERVER = (sys.executable, "-m", "benchmarks.noop_server")
# A target is a comparison with a threshold; "report" rows have none (met is None).
COMPARISONS = (">=", "<=", "<")


# --- results and verdicts (pure) -----------------------------------------------------------------


@dataclass(frozen=True)
class BenchResult:
    """One row of the table: a measured figure, its target and whether it was met."""

    metric: str
    value: float | None
    unit: str = ""
    target: str = ""  # e.g. ">= 0.9"; empty: reported only
    met: bool | None = None
    notes: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verdict(value: float | None, target: str) -> bool | None:
    """Whether ``value`` meets ``target`` (``">= 0.9"``, ``"<= 200"``, ``"< 0.01"``).

    None when there is no target or no value (nothing measured is not a pass). ValueError for
    a target that is not one of the comparisons, naming the valid ones.
    """
    if not target:
        return None
    op, _, threshold = target.partition(" ")
    if op not in COMPARISONS or not threshold:
        raise ValueError(f"target {target!r}: expected '<op> <number>' with op in {COMPARISONS}")
    limit = float(threshold)
    if value is None or math.isnan(value):
        return None
    return {">=": value >= limit, "<=": value <= limit, "<": value < limit}[op]


def result(
    metric: str, value: float | None, target: str = "", unit: str = "", notes: str = ""
) -> BenchResult:
    """A row with its verdict filled in from ``target``."""
    return BenchResult(metric, value, unit, target, verdict(value, target), notes)


def relative_error(measured: float | None, truth: float | None) -> float | None:
    """``|measured - truth| / truth``; None when either is missing or the truth is 0."""
    if measured is None or truth is None or truth == 0:
        return None
    return abs(measured - truth) / truth


def spread(values: Sequence[float]) -> float | None:
    """(max - min) / median of ``values``: the relative range of repeated measurements."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if len(finite) < 2 or statistics.median(finite) == 0:
        return None
    return (max(finite) - min(finite)) / statistics.median(finite)


def format_value(value: float | None) -> str:
    """Figures with 3 significant digits, thousands separated; "-" for nothing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


MET_TEXT = {True: "yes", False: "NO", None: "-"}


def table(rows: Sequence[BenchResult]) -> str:
    """The rows as a plain aligned table: metric, value (with unit), target, met."""
    header = ("metric", "value", "target", "met")
    body = [
        (
            row.metric,
            f"{format_value(row.value)} {row.unit}".rstrip(),
            row.target or "(report)",
            MET_TEXT[row.met],
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in (header, *body)) for i in range(4)]
    lines = [
        "  ".join(
            cell.ljust(w) if i != 1 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in (header, *body)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


# --- writing and reading results -----------------------------------------------------------------


def write_results(
    name: str, rows: Sequence[BenchResult], extra: Mapping[str, Any] | None = None
) -> Path:
    """``reports/bench/<name>.json``: the rows plus whatever raw figures back them."""
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    path = BENCH_DIR / f"{name}.json"
    data = {
        "schema_version": SCHEMA_VERSION,
        "benchmark": name,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "results": [row.as_dict() for row in rows],
        "details": dict(extra or {}),
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


def read_results(name: str) -> list[BenchResult]:
    data = json.loads((BENCH_DIR / f"{name}.json").read_text())
    return [BenchResult(**row) for row in data["results"]]


def finish(name: str, rows: Sequence[BenchResult], extra: Mapping[str, Any] | None = None) -> int:
    """Write and print one benchmark's rows; the exit status of its ``main``."""
    path = write_results(name, rows, extra)
    print(table(rows))
    for row in rows:
        if row.notes:
            print(f"  {row.metric}: {row.notes}")
    print(f"written: {path.relative_to(ROOT)}")
    return 0


# --- servers -------------------------------------------------------------------------------------


def model_path(name: str, **options: Any) -> Path:
    """A built-in model's base path under reports/models, built on first use."""
    return ensure_model(MODELS_DIR, name, options).resolve()


def server_flags(
    model: str,
    base: Path,
    folder: Path,
    batching: BatchingParams | None = None,
    *extra: str,
) -> list[str]:
    """reference-server flags for one model on free ports, batching on when ``batching``."""
    flags = [
        f"--port={free_port()}",
        f"--rest_api_port={free_port()}",
        f"--model_name={model}",
        f"--model_base_path={base}",
        *extra,
    ]
    if batching is not None:
        path = write_batching_file(folder / f"batching-{free_port()}.txt", batching)
        flags += ["--enable_batching", f"--batching_parameters_file={path}"]
    return flags


@contextlib.contextmanager
def reference_server(
    model: str,
    base: Path,
    batching: BatchingParams | None = None,
    *extra: str,
    cpus: Sequence[int] = (),
    metrics: bool = False,
) -> Iterator[ServerProcess]:
    """A reference server on free ports (pinned to ``cpus`` when given; with Prometheus at
    TF Serving's usual path when ``metrics``)."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        if metrics:
            config = write_monitoring_config(Path(tmp))
            extra = (*extra, f"--monitoring_config_file={config}")
        flags = server_flags(model, base, Path(tmp), batching, *extra)
        with start_server(flags, cpus=cpus) as server:
            yield server


@contextlib.contextmanager
def noop_server(model: str = "mlp") -> Iterator[ServerProcess]:
    flags = [f"--port={free_port()}", f"--rest_api_port={free_port()}", f"--model_name={model}"]
    env = {"PYTHONPATH": str(ROOT)}
    with start_server(flags, command=NOOP_SERVER, env=env) as server:
        yield server


def target_of(server: ServerProcess, protocol: str) -> str:
    return f"grpc://{server.grpc_target}" if protocol == "grpc" else server.rest_url


# --- load ----------------------------------------------------------------------------------------


def locust_run(
    server: ServerProcess,
    protocol: str,
    model: str,
    *,
    load_kind: LoadKind = "concurrency",
    load: float,
    seconds: float,
    warmup_s: float = 1.0,
    arrival: str = "constant",
    payload: str | None = None,
    cpus: Sequence[int] = (),
) -> dict[str, Any]:
    """One Locust run (a warm-up stage, then one window) against ``server`` (on ``cpus`` when
    given): the window's figures (the result file's stage entry) plus the whole result under
    ``"result"``."""
    plan = LoadPlan(
        protocol=protocol,
        targets=(target_of(server, protocol),),
        model_name=model,
        load_kind=load_kind,
        load=load,
        warmup_s=warmup_s,
        window_s=seconds,
        windows=1,
        arrival=ArrivalSpec(arrival),
        payload=payload,
        cpus=tuple(cpus),
    )
    with tempfile.TemporaryDirectory(prefix="bench-locust-") as tmp:
        run = run_locust(plan, Path(tmp) / "result.json")
    window = dict(run["stages"][-1])
    window["result"] = run
    return window


def generator_cpu_percent(run: Mapping[str, Any]) -> float | None:
    """CPU use of the (single) load process over the run, in % of one core."""
    processes = run["result"].get("generator", {}).get("processes", {})
    percents = [p.get("cpu_percent") for p in processes.values() if p.get("cpu_percent")]
    return max(percents) if percents else None


def server_cpu_seconds(server: ServerProcess) -> float:
    """CPU time (user + system, all threads) the server process has used so far."""
    times = psutil.Process(server.process.pid).cpu_times()
    return times.user + times.system


def requests_sent(run: Mapping[str, Any]) -> int:
    """Every request of a ``locust_run``, warm-up stage included."""
    return sum(stage.get("count", 0) for stage in run["result"]["stages"])


def median_seconds(call, repeats: int) -> float:
    """The median wall time of ``call()`` over ``repeats`` calls (after one untimed call)."""
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


# --- tools from Debian ---------------------------------------------------------------------------

APT_TIMEOUT_S = 600


def find_tool(binary: str, package: str) -> tuple[str | None, str]:
    """``binary``'s path, installing Debian's ``package`` with apt-get when it is missing:
    (path, "" or "installed with apt-get"), or (None, why it cannot be had)."""
    if path := shutil.which(binary):
        return path, ""
    if not shutil.which("apt-get") or os.geteuid() != 0:
        return None, f"{binary} is not installed and apt-get needs root: apt-get install {package}"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", package]
    problem = ""
    # A fresh machine may have no package lists yet: update once, then try again.
    for argv in (install, ["apt-get", "update", "-q"], install):
        try:
            done = subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            return None, f"{' '.join(argv)} took more than {APT_TIMEOUT_S} s"
        if argv is install and done.returncode == 0 and shutil.which(binary):
            return shutil.which(binary), "installed with apt-get"
        problem = (done.stderr or done.stdout).strip()[-200:]
    return None, f"apt-get install {package} failed: {problem}"
