"""``batchbench rollout``: steady load, a model version switched under it, what clients saw.

One roll-out: a server serves the old version (reference-server, or tensorflow_model_server
with the same flags and files; or an external deployment), Locust sends steady load through
the scenarios, and ``switch_after_s`` seconds into the load the new version is dropped into
the base path (or the user's switch command runs). The load goes on for ``after_s`` more
seconds. "Into the load" counts from the moment the server's Prometheus page counts requests
(Locust's start-up is not part of it); without such a page (an external deployment), after a
start-up allowance, and the load is made that much longer. Meanwhile the model's status
(``GET /v1/models/NAME``) is polled, so the run also records when the server made the new
version AVAILABLE and ended the old one. The result file's per-second timeline then gives the
figures (``harness.rollout.figures``).

With several ``warmup_records`` values, one roll-out per value, each on a fresh server: the
new version carries a TF Serving warm-up file of that many records (0: none), so the report
shows what warm-up buys.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.models.warmup_file import warmup_path, write_for_version
from harness.models.zoo import MODEL_JSON
from harness.rollout.figures import rollout_figures
from harness.servers.replicas import PROMETHEUS_PATH, ReplicaSet, start_replicas
from harness.servers.server_process import REFERENCE_SERVER
from harness.store.results import write_atomically
from harness.sweep.load_runner import LoadError, LoadPlan, run_locust

ROLLOUT_FILE = "rollout.json"
SCHEMA_VERSION = 1
STATUS_POLL_S = 0.1
SETTLE_S = 2.0  # the first seconds of load (connections, first calls) are not "before"
START_TIMEOUT_S = 60.0  # for the load to start sending
STARTUP_ALLOWANCE_S = 5.0  # Locust's start-up, when the server's request count cannot be read
REQUEST_COUNT = ":tensorflow:serving:request_count{"


@dataclass(frozen=True)
class RolloutSpec:
    """What to switch, where, and under which load."""

    target: str  # reference | tfserving | external
    protocol: str  # grpc | rest
    model_name: str
    load: LoadPlan  # targets filled in per roll-out; one stage of before + after seconds
    switch_after_s: float
    old_version_dir: Path | None = None  # served first (reference / tfserving)
    new_version_dir: Path | None = None  # dropped into the base path at the switch
    warmup_records: tuple[int, ...] = (0,)
    server_flags: tuple[str, ...] = ()
    binary: str = "tensorflow_model_server"
    endpoints: tuple[tuple[str, str], ...] = ()  # external: (grpc, rest) addresses
    switch_command: str | None = None
    poll_wait_s: int = 1


@dataclass
class StatusLog:
    """Model status readings: (seconds since the load started, {version: state})."""

    readings: list[tuple[float, dict[str, str]]] = field(default_factory=list)

    def first(self, version: str, state: str) -> float | None:
        return next((at for at, states in self.readings if states.get(version) == state), None)

    def serving(self, *, first: bool) -> str | None:
        """The newest AVAILABLE version in the first (or the last) reading."""
        if not self.readings:
            return None
        states = self.readings[0 if first else -1][1]
        available = [int(v) for v, state in states.items() if state == "AVAILABLE" and v.isdigit()]
        return str(max(available)) if available else None


def read_status(rest_url: str, model: str) -> dict[str, str]:
    """``GET /v1/models/NAME``: each version's state ({} when it cannot be read)."""
    try:
        with urllib.request.urlopen(f"{rest_url}/v1/models/{model}", timeout=2) as answer:
            body = json.loads(answer.read())
    except (OSError, ValueError):
        return {}
    return {
        str(entry.get("version")): str(entry.get("state"))
        for entry in body.get("model_version_status", [])
    }


def poll_status(
    rest_url: str, model: str, origin: float, stop: threading.Event, log: StatusLog
) -> None:
    while not stop.is_set():
        states = read_status(rest_url, model)
        if states and (not log.readings or log.readings[-1][1] != states):
            log.readings.append((round(time.time() - origin, 3), states))
        stop.wait(STATUS_POLL_S)


def prepare_versions(spec: RolloutSpec, folder: Path, records: int) -> tuple[Path, Path]:
    """A fresh base path holding the old version, and the new version (with ``records``
    warm-up records, or none) ready beside it, to be moved in at the switch."""
    assert spec.old_version_dir is not None and spec.new_version_dir is not None
    base, staged = folder / "base", folder / "staged"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(spec.old_version_dir, base / spec.old_version_dir.name)
    new = staged / spec.new_version_dir.name
    shutil.copytree(spec.new_version_dir, new)
    declared = spec.new_version_dir.parent / MODEL_JSON  # a built-in model's signature
    if declared.is_file():
        shutil.copy(declared, staged / MODEL_JSON)
    warmup_path(new).unlink(missing_ok=True)
    if records:
        write_for_version(new, records, model_name=spec.model_name)
    return base, new


def _server_flags(spec: RolloutSpec, base: Path) -> list[str]:
    return [
        f"--model_name={spec.model_name}",
        f"--model_base_path={base.resolve()}",
        f"--file_system_poll_wait_seconds={spec.poll_wait_s}",
        "--enable_model_warmup=true",
        *spec.server_flags,
    ]


def start_target(spec: RolloutSpec, base: Path, folder: Path) -> ReplicaSet:
    command: Sequence[str] = REFERENCE_SERVER
    if spec.target == "tfserving":
        found = shutil.which(spec.binary)
        if found is None:
            raise UserError(f"{spec.binary} not found on PATH (target tfserving)")
        command = (found,)
    return start_replicas(
        _server_flags(spec, base), 1, command=command, config_dir=folder, cores=None
    )


def run_one(spec: RolloutSpec, folder: Path, records: int) -> dict[str, Any]:
    """One roll-out with ``records`` warm-up records in the new version: its figures, status
    readings and the scenario's result."""
    folder.mkdir(parents=True, exist_ok=True)
    servers: ReplicaSet | None = None
    metrics: str | None = None
    if spec.target == "external":
        grpc, rest = spec.endpoints[0]
        switch = _command_switch(spec.switch_command or "")
        # TF Serving's usual Prometheus path, when the deployment serves it
        page = f"{rest}{PROMETHEUS_PATH}" if rest else None
        metrics = page if page and _metrics_text(page) is not None else None
    else:
        base, new_dir = prepare_versions(spec, folder / "models", records)
        servers = start_target(spec, base, folder)
        grpc, rest = servers.grpc_targets[0], servers.rest_urls[0]
        metrics = servers.metrics_urls[0]
        switch = (
            _command_switch(spec.switch_command)
            if spec.switch_command
            else _drop_switch(new_dir, base / new_dir.name)
        )
    try:
        return _measure(spec, folder, records, grpc, rest, switch, metrics)
    finally:
        if servers is not None:
            servers.stop()


def _drop_switch(staged: Path, destination: Path) -> Callable[[], None]:
    def drop() -> None:
        staged.rename(destination)  # appears at once: the poller never sees half a version

    return drop


def _command_switch(command: str) -> Callable[[], None]:
    def run() -> None:
        done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise UserError(
                f"the switch command exited {done.returncode}: {command}\n"
                f"{(done.stderr or done.stdout)[-2000:]}"
            )

    return run


def _measure(
    spec: RolloutSpec,
    folder: Path,
    records: int,
    grpc: str,
    rest: str,
    switch: Callable[[], None],
    metrics_url: str | None,
) -> dict[str, Any]:
    address = grpc if "://" in grpc else f"grpc://{grpc}"
    plan = replace(spec.load, targets=(address,) if spec.protocol == "grpc" else (rest,))
    if metrics_url is None:  # the switch waits out a start-up allowance: so does the end
        plan = replace(plan, window_s=plan.window_s + STARTUP_ALLOWANCE_S)
    outcome: dict[str, Any] = {}
    status = StatusLog()
    origin = time.time()
    switched_at = _load_and_switch(
        spec, plan, folder / "result.json", outcome, (rest, status, origin), switch, metrics_url
    )
    if "error" in outcome:
        raise UserError(f"the load generator failed: {outcome['error']}")
    result = outcome["result"]
    started = datetime.fromisoformat(result["started_at"]).timestamp()
    figures = rollout_figures(result.get("timeline", []), switched_at - started, SETTLE_S)
    readings = StatusLog([(round(at + origin - started, 3), st) for at, st in status.readings])
    # Over REST the answers do not name their version: the server's states still do.
    old = figures.old_version or readings.serving(first=True)
    new = figures.new_version or readings.serving(first=False)
    new = None if new == old else new
    return {
        "warmup_records": records,
        "protocol": spec.protocol,
        "figures": figures.as_dict(),
        "server": {
            "old_version": old,
            "new_version": new,
            "new_available_at_s": readings.first(new, "AVAILABLE") if new else None,
            "old_ended_at_s": readings.first(old, "END") if old else None,
            "status_readings": [{"at_s": at, "states": st} for at, st in readings.readings],
        },
        "result_file": str((folder / "result.json").relative_to(folder.parent)),
        "timeline": result.get("timeline", []),
        "by_version": result.get("by_version", []),
        "valid": result.get("valid", False),
        "invalid_reasons": result.get("invalid_reasons", []),
    }


def _load_and_switch(
    spec: RolloutSpec,
    plan: LoadPlan,
    result_file: Path,
    outcome: dict[str, Any],
    polling: tuple[str, StatusLog, float],
    switch: Callable[[], None],
    metrics_url: str | None,
) -> float:
    """Run the load (in a thread) and the status poller, make the switch ``switch_after_s``
    into the load; return when the switch was made (time.time())."""
    load = threading.Thread(target=_run_load, args=(plan, result_file, outcome), daemon=True)
    stop = threading.Event()
    rest, status, origin = polling
    poller = threading.Thread(
        target=poll_status, args=(rest, spec.model_name, origin, stop, status), daemon=True
    )
    load.start()
    poller.start()
    try:
        _wait_for_load(metrics_url, load)
        time.sleep(spec.switch_after_s)
        switched_at = time.time()
        if load.is_alive():
            switch()
        load.join()
    except KeyboardInterrupt:  # Locust got the terminal's SIGINT too: do not wait for it
        raise
    except BaseException:
        load.join()  # the load's duration is bounded: a failed switch still lets it end
        raise
    finally:
        stop.set()
        poller.join(5)
    return switched_at


def _run_load(plan: LoadPlan, result_file: Path, outcome: dict[str, Any]) -> None:
    try:
        outcome["result"] = run_locust(plan, result_file)
    except (LoadError, OSError) as exc:
        outcome["error"] = str(exc)


def _wait_for_load(metrics_url: str | None, load: threading.Thread) -> None:
    """Until Locust sends (its start-up is not part of the schedule): until the server counts
    requests, or, without its metrics (an external target), a fixed start-up allowance. The
    switch's moment in the load's own seconds is taken from the result afterwards."""
    if metrics_url is None:
        time.sleep(STARTUP_ALLOWANCE_S)
        return
    deadline = time.time() + START_TIMEOUT_S
    while time.time() < deadline and load.is_alive() and not _requests_counted(metrics_url):
        time.sleep(0.1)


def _metrics_text(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.read().decode()
    except (OSError, ValueError):
        return None


def _requests_counted(metrics_url: str) -> bool:
    text = _metrics_text(metrics_url) or ""
    return any(
        line.startswith(REQUEST_COUNT) and float(line.rsplit(" ", 1)[1]) > 0
        for line in text.splitlines()
    )


def run_rollout(spec: RolloutSpec, out: Path) -> dict[str, Any]:
    """Every roll-out of ``spec`` (one per warm-up records value), written to
    ``out/rollout.json``; returns what was written."""
    runs = []
    for records in spec.warmup_records:
        runs.append(run_one(spec, out / f"warmup-{records}", records))
    document = {
        "schema_version": SCHEMA_VERSION,
        "kind": "batchbench.rollout",
        "spec": _describe(spec),
        "runs": runs,
    }
    write_atomically(out / ROLLOUT_FILE, json.dumps(document, indent=1) + "\n")
    return document


def _describe(spec: RolloutSpec) -> dict[str, Any]:
    load = spec.load
    return {
        "target": spec.target,
        "protocol": spec.protocol,
        "model_name": spec.model_name,
        "load": {"kind": load.load_kind, "value": load.load, "duration_s": load.duration_s},
        "switch_after_s": spec.switch_after_s,
        "old_version_dir": str(spec.old_version_dir) if spec.old_version_dir else None,
        "new_version_dir": str(spec.new_version_dir) if spec.new_version_dir else None,
        "warmup_records": list(spec.warmup_records),
        "server_flags": list(spec.server_flags),
        "switch_command": spec.switch_command,
    }
