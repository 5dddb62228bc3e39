"""(9) Independent yardstick: the same CPU-bound server measured by us and by ``h2load``.

``h2load`` is nghttp2's load generator, written in C (Debian's ``nghttp2-client``; installed
with apt-get when missing, and the check is skipped, saying why, when it cannot be). gRPC is
driven as HTTP/2 POSTs of the length-prefixed PredictRequest (``content-type:
application/grpc``, ``te: trailers``) on one connection with 16 streams, as one gRPC channel
with 16 callers; REST as HTTP/1.1 with 16 connections. h2load counts HTTP 200 as success even
when the gRPC status says otherwise, so its throughput is the server's own count of OK answers
(``:tensorflow:serving:request_count{status="OK"}``) over h2load's measured time.

The server is the ``mlp`` (overhead-bound: the server is CPU-bound) with batching off and on,
16 clients, and ``auto`` placement: server on one set of cores, each generator on the others.
Batching off is also measured with no placement (what sweeps did before), for the README's
table. Runs are interleaved per server, ours / h2load / h2load / ours, and each side's figure
is the mean of its two runs. Where ours falls short, the per-request CPU of the generator tells
why: our scenario's, h2load's and a bare grpc.aio / aiohttp client's (benchmarks.raw_client),
measured on the same core in the same run.
Run: python -m benchmarks.h2load_check
"""

from __future__ import annotations

import json
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    BenchResult,
    find_tool,
    finish,
    locust_run,
    model_path,
    reference_server,
    requests_sent,
    result,
)
from harness.plan.batching_file import BatchingParams
from harness.plan.placement import Placement, PlacementMode, plan_placement
from harness.servers.replicas import PROMETHEUS_PATH
from harness.servers.server_process import ServerProcess, child_argv
from harness.servers.targets import machine_cpus
from harness.sweep.load_runner import generator_runnable_percent
from scenarios.tfs_wire import PREDICT_METHOD, model_spec, predict_request_bytes

USERS = 16
SECONDS = 8
WARMUP_S = 1.0
TARGET = ">= 0.9"
MODEL = "mlp"
FEATURES = 16
BATCHING = BatchingParams(
    max_batch_size=16, batch_timeout_micros=0, num_batch_threads=1, max_enqueued_batches=16
)
_OK = re.compile(r'^:tensorflow:serving:request_count\{[^}]*status="OK"[^}]*\}\s+([\d.e+]+)', re.M)
_FINISHED = re.compile(r"finished in ([\d.]+)(m?s)")


# --- bodies and parsing (pure) --------------------------------------------------------------------


def grpc_frame(message: bytes) -> bytes:
    """One gRPC message frame: not compressed (0), 4-byte big-endian length, the message."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def ok_count(metrics_text: str) -> float:
    """Every OK answer the server counted (summed over models and APIs)."""
    return sum(float(value) for value in _OK.findall(metrics_text))


def finished_seconds(output: str) -> float | None:
    """h2load's measured duration (``finished in 8.00s``)."""
    match = _FINISHED.search(output)
    if not match:
        return None
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "ms" else value


def log_p50_ms(log_text: str) -> float | None:
    """The median of h2load's per-request log (third column: µs until the response ended),
    HTTP 200 answers only."""
    micros = [
        int(cols[2])
        for line in log_text.splitlines()
        if len(cols := line.split("\t")) >= 3 and cols[1] == "200"
    ]
    return statistics.median(micros) / 1000 if micros else None


def h2load_argv(h2load: str, protocol: str, url: str, body: Path, length: list[str]) -> list[str]:
    """h2load's command line for ``length`` (``["-D", "8"]`` or ``["-n", "500"]``): gRPC as one
    HTTP/2 connection with USERS streams, REST as USERS HTTP/1.1 connections."""
    common = [h2load, *length, "-d", str(body)]
    if protocol == "grpc":
        headers = ["-H", "content-type: application/grpc", "-H", "te: trailers"]
        return [*common, "-c", "1", "-m", str(USERS), *headers, url + PREDICT_METHOD]
    headers = ["-H", "content-type: application/json"]
    return [*common, "--h1", "-c", str(USERS), *headers, f"{url}/v1/models/{MODEL}:predict"]


# --- runs -----------------------------------------------------------------------------------------


def write_bodies(folder: Path) -> dict[str, Path]:
    row = np.random.default_rng(0).random((1, FEATURES), dtype=np.float32)
    message = predict_request_bytes(model_spec(MODEL, signature="serving_default"), {"x": row})
    grpc_body, rest_body = folder / "predict.grpc", folder / "predict.json"
    grpc_body.write_bytes(grpc_frame(message))
    rest_body.write_text(json.dumps({"instances": row.tolist()}))
    raw = folder / "predict.pb"
    raw.write_bytes(message)
    return {"grpc": grpc_body, "rest": rest_body, "raw_grpc": raw}


def scrape_ok(server: ServerProcess) -> float:
    with urllib.request.urlopen(server.rest_url + PROMETHEUS_PATH, timeout=10) as answer:
        return ok_count(answer.read().decode())


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_h2load(
    h2load: str, server: ServerProcess, protocol: str, body: Path, cpus: Sequence[int]
) -> dict[str, Any]:
    """One h2load run (a short warm-up run first): OK answers/s as the server counted them
    over h2load's measured time, the p50 from its request log, its CPU per request."""
    url = f"http://{server.grpc_target}" if protocol == "grpc" else server.rest_url

    def h2load_run(length: list[str], log: Path | None = None) -> str:
        argv = h2load_argv(h2load, protocol, url, body, length)
        argv += [f"--log-file={log}"] if log else []
        done = subprocess.run(
            child_argv(argv, cpus, die_with_parent=False),
            capture_output=True, text=True, timeout=SECONDS + 60,
        )  # fmt: skip
        return done.stdout + done.stderr

    h2load_run(["-n", str(USERS * 50)])  # warm-up: connections up, server warm
    with tempfile.TemporaryDirectory(prefix="bench-h2load-") as tmp:
        log = Path(tmp) / "requests.tsv"
        before, cpu = scrape_ok(server), children_cpu_s()
        output = h2load_run(["-D", str(SECONDS)], log)
        cpu, ok = children_cpu_s() - cpu, scrape_ok(server) - before
        log_text = log.read_text() if log.exists() else ""
    seconds = finished_seconds(output)
    return {
        "throughput_rps": ok / seconds if seconds else None,
        "server_ok": ok,
        "seconds": seconds,
        "p50_ms": log_p50_ms(log_text),
        "cpu_us_per_request": 1e6 * cpu / ok if ok else None,
        "output": output[-1500:],
    }


def run_ours(server: ServerProcess, protocol: str, cpus: Sequence[int]) -> dict[str, Any]:
    run = locust_run(
        server, protocol, MODEL, load=USERS, seconds=SECONDS, warmup_s=WARMUP_S, cpus=cpus
    )
    generator = run["result"]["generator"]
    return {
        "throughput_rps": run["throughput_rps"],
        "p50_ms": run["latency_p50_ms"],
        "valid": run["result"]["valid"],
        "invalid_reasons": run["result"]["invalid_reasons"],
        "cpu_us_per_request": 1e6 * generator["cpu_seconds"] / max(1, requests_sent(run)),
        "generator_cpu_percent": max(
            (p.get("cpu_percent") or 0.0 for p in generator["processes"].values()), default=None
        ),
        "generator_runnable_percent": generator_runnable_percent(run["result"]),
    }


def run_raw(
    server: ServerProcess, protocol: str, bodies: dict[str, Path], cpus: Sequence[int]
) -> dict[str, Any]:
    """The bare client's CPU per request (benchmarks.raw_client) on the generator's cores."""
    if protocol == "grpc":
        address, body = server.grpc_target, bodies["raw_grpc"]
    else:
        address, body = f"{server.rest_url}/v1/models/{MODEL}:predict", bodies["rest"]
    argv = [sys.executable, "-m", "benchmarks.raw_client", protocol, address, str(body)]
    argv += [str(SECONDS), str(USERS)]
    done = subprocess.run(
        child_argv(argv, cpus, die_with_parent=False),
        capture_output=True, text=True, timeout=SECONDS + 60, check=True,
    )  # fmt: skip
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["cpu_us_per_request"] = 1e6 * figures["cpu_s"] / max(1, figures["requests"])
    figures["throughput_rps"] = figures["requests"] / figures["wall_s"]
    return figures


# --- one set-up, interleaved ----------------------------------------------------------------------

SETUPS: tuple[tuple[str, bool, PlacementMode], ...] = (
    ("grpc", False, "none"),
    ("grpc", False, "auto"),
    ("grpc", True, "auto"),
    ("rest", False, "none"),
    ("rest", False, "auto"),
    ("rest", True, "auto"),
)


def measure_setup(
    h2load: str, protocol: str, batching: bool, placement: Placement, bodies: dict[str, Path]
) -> dict[str, Any]:
    """One server, then ours / h2load / h2load / ours (and the bare client with placement)."""
    servers = placement.replicas[0] if placement.replicas else ()
    threads = [f"--tensorflow_{k}_op_parallelism={len(servers)}" for k in ("intra", "inter")]
    extra = threads if servers else []
    base = model_path(MODEL)
    with reference_server(
        MODEL, base, BATCHING if batching else None, *extra, cpus=servers, metrics=True
    ) as server:
        cpus = placement.generator
        first = run_ours(server, protocol, cpus)
        yardstick = [run_h2load(h2load, server, protocol, bodies[protocol], cpus) for _ in "ab"]
        second = run_ours(server, protocol, cpus)
        raw = run_raw(server, protocol, bodies, cpus) if placement.mode == "auto" else None
    return {
        "placement": placement.as_dict(),
        "ours": [first, second],
        "h2load": yardstick,
        "raw": raw,
        "ours_rps": _mean(r["throughput_rps"] for r in (first, second)),
        "h2load_rps": _mean(r["throughput_rps"] for r in yardstick),
        "ours_p50_ms": _mean(r["p50_ms"] for r in (first, second)),
        "h2load_p50_ms": _mean(r["p50_ms"] for r in yardstick),
    }


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


# --- rows -----------------------------------------------------------------------------------------


def setup_name(protocol: str, batching: bool, mode: str) -> str:
    where = "auto placement" if mode == "auto" else "no placement"
    return f"{protocol}, batching {'on' if batching else 'off'}, {where}"


def setup_rows(name: str, mode: str, figures: dict[str, Any]) -> list[BenchResult]:
    ours = figures["ours"]
    cpu = [f"{r['generator_cpu_percent'] or 0:.0f}%" for r in ours]
    runnable = [f"{r['generator_runnable_percent'] or 0:.0f}%" for r in ours]
    notes = (
        f"ours {figures['ours_rps'] or 0:,.0f} req/s, h2load {figures['h2load_rps'] or 0:,.0f} "
        f"req/s (server-counted OK); p50 ours {figures['ours_p50_ms'] or 0:.2f} ms, h2load "
        f"{figures['h2load_p50_ms'] or 0:.2f} ms; our generator used {', '.join(cpu)} of a "
        f"core, runnable {', '.join(runnable)} of the time; "
        f"servers on {figures['placement']['servers'] or 'any CPU'}, generators on "
        f"{figures['placement']['generator'] or 'any CPU'}; "
        f"valid: {', '.join(str(r['valid']) for r in ours)}"
    )
    ratio = _ratio(figures["ours_rps"], figures["h2load_rps"])
    return [
        result(
            f"h2load check {name}: throughput ours / h2load",
            ratio,
            TARGET if mode == "auto" else "",
            "×",
            notes,
        ),
        result(
            f"h2load check {name}: p50 ours / h2load",
            _ratio(figures["ours_p50_ms"], figures["h2load_p50_ms"]),
            unit="×",
        ),
    ]


def profile_rows(protocol: str, figures: dict[str, Any]) -> list[BenchResult]:
    """Generator CPU per request on its core: our scenario, the bare client, h2load."""
    ours = _mean(r["cpu_us_per_request"] for r in figures["ours"])
    raw = (figures["raw"] or {}).get("cpu_us_per_request")
    h2 = _mean(r["cpu_us_per_request"] for r in figures["h2load"])
    notes = (
        f"bare {'grpc.aio' if protocol == 'grpc' else 'aiohttp'} client "
        f"{(figures['raw'] or {}).get('throughput_rps') or 0:,.0f} req/s; "
        "ours minus the bare client is the scenario's own work per request "
        "(timing, histogram, request loop)"
    )
    return [
        result(f"generator CPU per request {protocol}: our scenario", ours, unit="µs"),
        result(f"generator CPU per request {protocol}: bare client", raw, unit="µs", notes=notes),
        result(f"generator CPU per request {protocol}: h2load", h2, unit="µs"),
    ]


def gain_rows(protocol: str, none: dict[str, Any], auto: dict[str, Any]) -> list[BenchResult]:
    notes = (
        f"ours {none['ours_rps'] or 0:,.0f} → {auto['ours_rps'] or 0:,.0f} req/s; "
        f"h2load {none['h2load_rps'] or 0:,.0f} → {auto['h2load_rps'] or 0:,.0f} req/s"
    )
    return [
        result(
            f"placement gain {protocol}, batching off: ours auto / none",
            _ratio(auto["ours_rps"], none["ours_rps"]),
            unit="×",
            notes=notes,
        )
    ]


def main() -> int:
    h2load, how = find_tool("h2load", "nghttp2-client")
    if h2load is None:
        name = "h2load check: throughput ours / h2load"
        row = result(name, None, TARGET, notes=f"skipped: {how}")
        return finish("h2load_check", [row])
    started = time.perf_counter()
    figures: dict[tuple[str, bool, str], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-bodies-") as tmp:
        bodies = write_bodies(Path(tmp))
        for protocol, batching, mode in SETUPS:
            placement = plan_placement(machine_cpus(), 1, mode=mode)
            figures[(protocol, batching, mode)] = measure_setup(
                h2load, protocol, batching, placement, bodies
            )
    rows: list[BenchResult] = []
    for (protocol, batching, setup_mode), entry in figures.items():
        rows += setup_rows(setup_name(protocol, batching, setup_mode), setup_mode, entry)
    for protocol in ("grpc", "rest"):
        rows += profile_rows(protocol, figures[(protocol, False, "auto")])
        none, auto = figures[(protocol, False, "none")], figures[(protocol, False, "auto")]
        rows += gain_rows(protocol, none, auto)
    details = {
        "h2load": how or h2load,
        "minutes": (time.perf_counter() - started) / 60,
        "setups": {setup_name(*key): value for key, value in figures.items()},
    }
    return finish("h2load_check", rows, details)


if __name__ == "__main__":
    sys.exit(main())
