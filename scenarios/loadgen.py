"""Locust glue shared by the gRPC and REST scenarios: options, payload, load models, recording.

Imports Locust (which monkey-patches the process with gevent): only locustfiles import this.

One `Run` per process owns the options, the prepared request, the current `Plan` and this
process's `Recorder`. On the master (or a single process) a `Conductor` also owns the run:
it publishes the plan (stage, users, rate) to every process, merges the workers' recordings
from Locust's `report_to_master` / `worker_report` events, collects each worker's final
report when the test stops, and writes the result file.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import random
import socket
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, Protocol

import gevent
from gevent.event import Event
from gevent.pool import Group
from locust import LoadTestShape, User, events, task
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import StatsEntry

from scenarios.arrivals import Plan, SendSchedule, make_arrivals, stage_index_at
from scenarios.mixes import MAX_KINDS, MixError, MixSampler, RequestKind, pick_value
from scenarios.options import (
    OptionError,
    ScenarioOptions,
    Target,
    add_arguments,
    arm_options,
    read_options,
)
from scenarios.payloads import Payload, PayloadError, PayloadSpec, build_payload
from scenarios.recording import Key, Recorder, Tags
from scenarios.results import StageSpan, build_result, kind_label, write_result
from scenarios.server_series import Reading, by_second, read_numbers
from scenarios.signatures import Signature, SignatureError, pick
from scenarios.trace import TraceEntry, TraceSchedule

log = logging.getLogger("batchbench.scenarios")

PLAN_MESSAGE = "batchbench_plan"
FLUSH_MESSAGE = "batchbench_flush"
REPORT_KEY = "batchbench"
SCRAPE_TIMEOUT_S = 5.0
PLAN_POLL_S = 0.1  # how often the master looks for a new stage or user count
PLAN_REPEAT_S = 2.0  # the master repeats the plan for workers that connected late
FINAL_REPORT_TIMEOUT_S = 15.0
SLEEP_SLICE_S = 0.25  # an open-loop user looks at the plan at least this often
# gevent's epoll loop waits whole milliseconds, rounded up: sleeping until the intended time
# wakes 0.8 ms late on average (measured), so a stream wakes this much early and sends then.
EARLY_WAKE_S = 0.001
DROPPED_NAME = "dropped (over --max-outstanding)"


class ScenarioError(Exception):
    """A problem the user can fix (target unreachable, no such model...); printed, no traceback."""


USER_ERRORS = (ScenarioError, OptionError, SignatureError, PayloadError, MixError)
SERIES_INTERVAL_S = 1.0  # how often the server's queue depth and batch size are read


class Backend(Protocol):
    """What differs between gRPC and REST: targets, metadata, request encoding, names."""

    protocol: str
    request_type: str
    request_name: str

    def target(self, text: str, options: ScenarioOptions) -> Target: ...

    def signatures(self, target: Target, options: ScenarioOptions) -> dict[str, Signature]: ...

    def encode(self, signature: Signature, payload: Payload, options: ScenarioOptions) -> bytes: ...


@dataclass(frozen=True)
class Prepared:
    """Everything a user needs to send: targets and the request bodies, encoded once.

    `requests` holds one body per request kind the mix or trace can send; `signature`,
    `payload` and `body` are those of the first kind (the only one without a mix or trace).
    """

    options: ScenarioOptions
    targets: tuple[Target, ...]
    signature: Signature
    payload: Payload
    body: bytes
    requests: dict[RequestKind, bytes] = dataclasses.field(default_factory=dict)
    payload_rows: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        options = self.options
        return {
            "targets": list(options.targets),
            "models": sorted({kind.model for kind in self.requests}),
            "model": {
                "name": options.model_name,
                "signature": options.signature,
                "version": options.model_version,
                "version_label": options.version_label,
                "version_split": (options.version_split.text() if options.version_split else None),
            },
            "payload": {
                **self.payload.describe(),
                "request_bytes": len(self.body),
                "kinds": len(self.requests),
            },
        }

    def kind_for(self, entry: TraceEntry | None, drawn: RequestKind) -> RequestKind:
        """A trace entry's request kind; what it leaves out comes from `drawn` (the mix)."""
        if entry is None:
            return drawn
        model = entry.model or drawn.model
        if entry.payload:
            return RequestKind(model, self.payload_rows[(model, entry.payload)], 0, entry.payload)
        return RequestKind(model, entry.rows or drawn.rows, entry.length or drawn.length)


def model_options(options: ScenarioOptions, model: str) -> ScenarioOptions:
    """The options as they apply to one model of a mix (the backends read `model_name`)."""
    if model == options.model_name:
        return options
    return dataclasses.replace(options, model_name=model)


def wanted_kinds(options: ScenarioOptions) -> tuple[list[RequestKind], set[tuple[str, str]]]:
    """The kinds to encode before the test (mix, or trace entries completed by the mix), and
    the (model, payload file) pairs of a trace's payload references."""
    mix = options.request_mix()
    if options.trace is None:
        return mix.kinds(), set()
    kinds: set[RequestKind] = set()
    files: set[tuple[str, str]] = set()
    shapes = {(e.model, e.rows, e.length, e.payload) for e in options.trace.entries}
    for model, rows, length, payload in shapes:
        for name in [model] if model else mix.models.values:
            if payload:
                files.add((name, payload))
                continue
            for r in [str(rows)] if rows else mix.rows.values:
                for n in [str(length)] if length else mix.lengths.values:
                    kinds.add(RequestKind(name, int(r), int(n)))
        if len(kinds) + len(files) > MAX_KINDS:
            raise MixError(f"--trace: more than {MAX_KINDS} different requests to encode")
    return sorted(kinds), files


def prepare(backend: Backend, options: ScenarioOptions) -> Prepared:
    """Read each model's signature from the first target and build every request once."""
    if not options.targets:
        raise OptionError("no target: give --host (or --targets)")
    targets = tuple(backend.target(text, options) for text in options.targets)
    kinds, files = wanted_kinds(options)
    models = sorted({kind.model for kind in kinds} | {model for model, _ in files})
    signatures = {model: _signature(backend, targets[0], options, model) for model in models}
    requests: dict[RequestKind, bytes] = {}
    payloads: dict[RequestKind, Payload] = {}
    for kind in kinds:
        payloads[kind] = _payload(options, signatures[kind.model], kind)
    payload_rows = {}
    for model, path in sorted(files):
        payload = build_payload(signatures[model], PayloadSpec(file=path), model)
        rows = _rows(payload)
        if options.max_batch_size and rows > options.max_batch_size:
            raise OptionError(
                f"--trace: payload {path} has {rows} rows, over --max-batch-size "
                f"{options.max_batch_size}"
            )
        payload_rows[(model, path)] = rows
        payloads[RequestKind(model, rows, 0, path)] = payload
    arms = options.version_split.values if options.version_split else ("",)
    for kind, payload in payloads.items():
        per_model = model_options(options, kind.model)
        for arm in arms:
            body = backend.encode(signatures[kind.model], payload, arm_options(per_model, arm))
            requests[dataclasses.replace(kind, arm=arm)] = body
    first = next(iter(payloads))
    signature = signatures[first.model]
    first_body = requests[dataclasses.replace(first, arm=arms[0])]
    return Prepared(
        options, targets, signature, payloads[first], first_body, requests, payload_rows
    )


def _signature(backend: Backend, target: Target, options: ScenarioOptions, model: str) -> Signature:
    model_opts = model_options(options, model)
    try:
        signatures = backend.signatures(target, model_opts)
    except ScenarioError as exc:
        if options.trace is not None and model in options.trace.models():
            raise ScenarioError(f"--trace {options.trace.path}: model {model!r}: {exc}") from None
        raise
    return pick(signatures, options.signature, model)


def _payload(options: ScenarioOptions, signature: Signature, kind: RequestKind) -> Payload:
    spec = dataclasses.replace(options.payload, rows=kind.rows, fill_dim=kind.length)
    return build_payload(signature, spec, kind.model)


def _rows(payload: Payload) -> int:
    shapes = [array.shape for array in payload.inputs.values() if array.ndim]
    return int(shapes[0][0]) if shapes else 1


class Usage:
    """This process's CPU use since the test started, how much of that time its main thread
    was runnable (on a CPU or waiting for one), and whether Locust warned about CPU."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.cpu_start = time.process_time()
        self.wall_start = time.perf_counter()
        self.runnable_start = runnable_seconds()
        self.cpu_percent_max = 0.0
        self.cpu_warning = False

    def report(self, final: bool) -> dict[str, Any]:
        cpu = time.process_time() - self.cpu_start
        wall = max(time.perf_counter() - self.wall_start, 1e-9)
        runnable = runnable_seconds()
        return {
            "cpu_seconds": round(cpu, 6),
            "cpu_percent": round(100.0 * cpu / wall, 1),
            "cpu_percent_max": self.cpu_percent_max,
            "cpu_warning": self.cpu_warning,
            "runnable_percent": (
                None
                if runnable is None or self.runnable_start is None
                else round(100.0 * (runnable - self.runnable_start) / wall, 1)
            ),
            "final_report": final,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            # Set by `batchbench worker` on a load host: this process is a remote worker.
            "remote": os.environ.get("BATCHBENCH_REMOTE_WORKER") or None,
        }


def runnable_seconds() -> float | None:
    """Seconds the main thread has been on a CPU or waiting in a run queue for one (Linux's
    /proc/self/schedstat); None where it is not available. A generator that is runnable
    nearly all the time is CPU-bound, even when other processes took part of its CPU."""
    try:
        with open("/proc/self/schedstat", encoding="ascii") as stat:
            on_cpu, waiting = stat.read().split()[:2]
    except (OSError, ValueError):
        return None
    return (int(on_cpu) + int(waiting)) / 1e9


class Run:
    """This process's part of the test: options, prepared request, plan, recorder."""

    def __init__(self, environment: Any, backend: Backend, scenario: str) -> None:
        self.environment = environment
        self.backend = backend
        self.scenario = scenario
        self.options: ScenarioOptions | None = None
        self.prepared: Prepared | None = None
        self.recorder = Recorder()
        self.usage = Usage()
        self.run_id = ""
        self.plan: Plan | None = None
        self.stage_started_at = 0.0
        self.plan_ready = Event()
        self.stream_ids = itertools.count()
        self.run_started_at = 0.0
        self.schedule: SendSchedule | None = None
        self.trace_schedule: TraceSchedule | None = None
        self.sampler: MixSampler | None = None
        self.streams_options: ScenarioOptions | None = None  # what the streams were made from
        self.trace_done = False
        self.claimed = 0  # trace requests claimed by users and not yet sent
        # With --raw-latency-dir: (intended, actual) send times, seconds since the run started.
        self.sends: list[tuple[float, float]] | None = None
        self.arm_versions: dict[str, str] = {}  # the version each split arm answered from last
        runner = environment.runner
        self.is_worker = isinstance(runner, WorkerRunner)
        self.conductor = None if self.is_worker else Conductor(self)

    # --- options and request -------------------------------------------------------------
    def read_options(self) -> ScenarioOptions:
        return read_options(self.environment.parsed_options, self.environment.host)

    def ensure_prepared(self) -> Prepared:
        """(Re)build the request if the options changed (workers get the master's options)."""
        options = self.read_options()
        if self.prepared is None or self.prepared.options != options:
            self.prepared = prepare(self.backend, options)
            log.info("%s: %s", self.scenario, _describe_prepared(self.prepared))
        self.options = options
        return self.prepared

    # --- the plan ------------------------------------------------------------------------
    def apply_plan(self, run_id: str, plan: Plan) -> None:
        """Follow `plan` (a newer one of this run, or the first of a new run)."""
        newer = run_id != self.run_id or self.plan is None or plan.version > self.plan.version
        if not newer:
            return
        if run_id != self.run_id or self.plan is None or plan.stage != self.plan.stage:
            self.stage_started_at = time.perf_counter()
        if run_id != self.run_id or self.plan is None:
            self.start_streams(run_id, plan)
        self.run_id, self.plan = run_id, plan
        self.plan_ready.set()

    def start_streams(self, run_id: str, plan: Plan) -> None:
        """A new run: fresh send schedule (or trace share) and request-kind sampler."""
        options = self.options
        self.run_started_at = time.perf_counter()
        self.schedule = self.trace_schedule = self.sampler = None
        self.trace_done = False
        self.streams_options = options
        if options is None:
            return
        seed = f"{options.payload.seed}:{os.getpid()}:{run_id}"
        self.sampler = MixSampler(options.request_mix(), random.Random(seed))
        if options.trace is not None:
            index = getattr(self.environment.runner, "worker_index", 0) if self.is_worker else 0
            self.trace_schedule = TraceSchedule(
                options.trace,
                index,
                plan.processes,
                options.trace_speed,
                options.trace_loop,
                self.run_started_at,
            )
        elif options.arrival_spec is not None:
            arrivals = make_arrivals(options.arrival_spec, seed, f"{options.payload.seed}:{run_id}")
            self.schedule = SendSchedule(arrivals)

    def process_rate(self) -> float:
        """This process's share of the plan's rate now (its users' shares together)."""
        plan = self.plan
        if plan is None:
            return 0.0
        users = int(getattr(self.environment.runner, "user_count", 0) or 0)
        return plan.user_rate(time.perf_counter() - self.stage_started_at) * max(users, 1)

    def tags(self, kind: RequestKind, intended: float) -> Tags:
        """Where a request is counted besides its stage: its kind and its second of the run."""
        second = max(int(intended - self.run_started_at), 0)
        return Tags(kind_label(kind.model, kind.rows, kind.length, kind.payload), second)

    def draw_kind(self, entry: TraceEntry | None = None) -> RequestKind:
        """The next request's kind, and its version-split arm when there is a split."""
        assert self.sampler is not None and self.prepared is not None
        kind = self.prepared.kind_for(entry, self.sampler.draw())
        split = self.options.version_split if self.options else None
        if split is None:
            return kind
        arm = pick_value(split.values, split.cumulative(), self.sampler.rng)
        return dataclasses.replace(kind, arm=arm)

    def version_of(self, kind: RequestKind, answered: int | None) -> str:
        """What a request counts under by version: the version that answered; for a failure
        (or an answer that does not say), the version its arm was last answered by, else the
        arm itself ("" without a split)."""
        if answered is not None:
            if kind.arm:
                self.arm_versions[kind.arm] = str(answered)
            return str(answered)
        return self.arm_versions.get(kind.arm, kind.arm)

    def key_for(self, intended: float) -> Key:
        """Where a request intended at `intended` is recorded: its stage, warm-up or not."""
        plan = self.plan
        if plan is None:
            return Key(0, warmup=True)
        warmup = plan.warmup_stage or intended < self.stage_started_at + plan.warmup_s
        return Key(plan.stage, warmup=warmup)

    def request_name(self, key: Key) -> str:
        """The name Locust's statistics show: one row per stage, warm-up apart."""
        name = self.backend.request_name
        if self.plan is not None and self.plan.staged:
            name += f" [stage {key.stage + 1}]"
        return name + (" [warm-up]" if key.warmup else "")

    # --- window and reports --------------------------------------------------------------
    def start_window(self) -> None:
        options = self.options
        keep_raw = bool(options and options.raw_latency_dir)
        self.recorder = Recorder(keep_raw=keep_raw)
        self.sends = [] if keep_raw else None
        self.usage.reset()

    def close_window(self) -> None:
        """End this process's measurement; dump raw samples if asked."""
        if self.recorder.closed:
            return
        self.recorder.close()
        if self.recorder.raw_us is not None and self.options and self.options.raw_latency_dir:
            folder = Path(self.options.raw_latency_dir)
            folder.mkdir(parents=True, exist_ok=True)
            text = "".join(f"{value}\n" for value in self.recorder.raw_us)
            (folder / f"latency-us-{os.getpid()}.txt").write_text(text)
            sends = "".join(f"{intended:.6f} {sent:.6f}\n" for intended, sent in self.sends or [])
            (folder / f"sends-{os.getpid()}.txt").write_text(sends)

    def report(self) -> dict[str, Any]:
        """A worker's report: the recording since the last report, and its CPU use."""
        final = self.recorder.closed
        return {
            "run": self.run_id,
            "delta": self.recorder.take_delta(),
            **self.usage.report(final),
        }


def _stage_plan(options: ScenarioOptions, index: int, processes: int) -> Plan:
    stage = options.stages[index]
    return Plan(
        version=0,
        stage=index,
        label=f"stage {index + 1}: {stage.label()}",
        staged=True,
        users=stage.users,
        rate_rps=stage.rate_rps,
        rate_end_rps=stage.rate_end_rps,
        duration_s=stage.duration_s,
        # A warm-up stage is warm-up from start to end (its figures stay empty).
        warmup_s=stage.duration_s if index < options.warmup_stages else options.warmup_s,
        warmup_stage=index < options.warmup_stages,
        max_outstanding=options.max_outstanding,
        processes=processes,
    )


def _single_plan(options: ScenarioOptions, users: int, processes: int) -> Plan:
    rate = options.rate_rps if options.arrival_spec is not None else None
    return Plan(
        version=0,
        stage=0,
        label=f"{users} users" + (f" {rate:g}/s" if rate else ""),
        staged=False,
        users=users,
        rate_rps=rate,
        rate_end_rps=None,
        duration_s=None,
        warmup_s=options.warmup_s,
        max_outstanding=options.max_outstanding,
        processes=processes,
    )


def _describe_prepared(prepared: Prepared) -> str:
    inputs = ", ".join(
        f"{alias} {array.dtype}{list(array.shape)}"
        for alias, array in prepared.payload.inputs.items()
    )
    models = sorted({kind.model for kind in prepared.requests})
    return (
        f"model(s) {', '.join(models)} signature {prepared.signature.name!r}, "
        f"payload {prepared.payload.source} ({inputs}), request {len(prepared.body)} bytes, "
        f"{len(prepared.requests)} request kind(s)"
    )


class Conductor:
    """The master's (or single process's) side: plan, stage spans, merge, result file."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.environment = run.environment
        self.is_master = isinstance(self.environment.runner, MasterRunner)
        self.merged = Recorder()
        self.spans: list[StageSpan] = []
        self.processes: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.started = 0.0
        self.started_at = ""
        self.loop: gevent.Greenlet | None = None
        self.series_loop: gevent.Greenlet | None = None
        self.scrapes: list[dict[str, Any]] = []
        self.readings: list[Reading] = []

    def start(self) -> None:
        self.run.run_id = uuid.uuid4().hex
        self.run.plan = None
        self.merged = Recorder()
        self.spans, self.processes, self.version = [], {}, 0
        self.scrapes, self.readings = [], []
        self.started = time.perf_counter()
        self.started_at = _now_iso()
        self.publish(force=True)
        self.loop = gevent.spawn(self._plan_loop)
        options = self.run.options
        if options is not None and options.scrape_urls:
            self.series_loop = gevent.spawn(self._series_loop, options.scrape_urls)

    def _series_loop(self, urls: tuple[str, ...]) -> None:
        """Read the server's queue depth and batch sizes about once a second (the timeline)."""
        while True:
            at_s = time.perf_counter() - self.started
            self.readings.append(read_numbers(_read_pages(urls), at_s))
            gevent.sleep(max(0.0, SERIES_INTERVAL_S - (time.perf_counter() - self.started - at_s)))

    def _plan_loop(self) -> None:
        last_sent = time.perf_counter()
        while True:
            gevent.sleep(PLAN_POLL_S)
            repeat = self.is_master and time.perf_counter() - last_sent > PLAN_REPEAT_S
            if self.publish(force=repeat):
                last_sent = time.perf_counter()

    def publish(self, *, force: bool) -> bool:
        """Send the plan if it changed (or `force`); returns whether it was sent."""
        plan = self.desired_plan()
        current = self.run.plan
        if plan.same_load(current) and not force:
            return False
        if not plan.same_load(current):
            self.version += 1
            self._note_span(plan)
        plan = dataclasses.replace(plan, version=self.version)
        self.run.apply_plan(self.run.run_id, plan)
        if self.is_master:
            self.environment.runner.send_message(
                PLAN_MESSAGE, {"run": self.run.run_id, "plan": plan.to_message()}
            )
        return True

    def desired_plan(self) -> Plan:
        """The load asked for now: the current --stages stage, or -u users at --rate."""
        options = self.run.options
        assert options is not None
        shape = self.environment.shape_class
        runner = self.environment.runner
        processes = max(int(runner.worker_count), 1) if self.is_master else 1
        if options.stages and isinstance(shape, StagesShape):
            index = stage_index_at(options.stages, shape.get_run_time())
            last = len(options.stages) - 1
            return _stage_plan(options, last if index is None else index, processes)
        users = max(int(runner.target_user_count or 0), 1)
        return _single_plan(options, users, processes)

    def _note_span(self, plan: Plan) -> None:
        now = time.perf_counter() - self.started
        if self.spans and self.spans[-1].index == plan.stage:
            return
        self._end_span(now)
        span = StageSpan(
            index=plan.stage,
            label=plan.label,
            users=plan.users,
            rate_rps=plan.rate_rps,
            rate_end_rps=plan.rate_end_rps,
            started_s=now,
            ended_s=now,
            warmup_s=plan.warmup_s,
        )
        self.spans.append(span)
        self._scrape(plan.stage, now)

    def _scrape(self, stage: int | str, at_s: float) -> None:
        """Read every --scrape-urls page now (a stage boundary); failures are noted, not fatal."""
        options = self.run.options
        if options is None or not options.scrape_urls:
            return
        texts = _read_pages(options.scrape_urls)
        self.scrapes.append({"stage": stage, "at_s": round(at_s, 6), "texts": texts})

    def _end_span(self, now: float) -> None:
        if self.spans:
            self.spans[-1] = dataclasses.replace(self.spans[-1], ended_s=now)

    def stopping(self) -> None:
        """The test is stopping: end the window here and collect what workers recorded."""
        for loop in (self.loop, self.series_loop):
            if loop is not None:
                loop.kill(block=True)
        self.loop = self.series_loop = None
        now = time.perf_counter() - self.started
        self._end_span(now)
        self._scrape("end", now)
        if self.is_master:
            self._collect_final_reports()
        else:
            self.run.close_window()

    def _collect_final_reports(self) -> None:
        runner = self.environment.runner
        expected = {client.id for client in runner.clients.all} | set(self.processes)
        runner.send_message(FLUSH_MESSAGE, {"run": self.run.run_id})
        deadline = time.monotonic() + FINAL_REPORT_TIMEOUT_S
        while time.monotonic() < deadline:
            missing = [cid for cid in expected if not self._final_from(cid)]
            if not missing:
                return
            gevent.sleep(0.05)
        for cid in expected:
            self.processes.setdefault(cid, {"final_report": False})
        log.error("no final report from worker(s) %s", ", ".join(sorted(missing)))

    def _final_from(self, client_id: str) -> bool:
        return bool(self.processes.get(client_id, {}).get("final_report"))

    def worker_report(self, client_id: str, data: dict[str, Any]) -> None:
        """Merge one worker report (Locust's worker_report event) of this run."""
        report = data.get(REPORT_KEY)
        if not report or report["run"] != self.run.run_id or not self.run.run_id:
            return
        self.merged.merge(report["delta"])
        info = {key: value for key, value in report.items() if key not in ("delta", "run")}
        info["sent"] = self.processes.get(client_id, {}).get("sent", 0)
        info["sent"] += sum(
            part["sent"] for key, part in report["delta"].items() if key.endswith(":measure")
        )
        self.processes[client_id] = info

    def finish(self) -> dict[str, Any] | None:
        """Build the result, write it if --result-file was given, log a summary line."""
        run = self.run
        if run.prepared is None or not self.spans:
            return None
        recorder = self.merged if self.is_master else run.recorder
        result = build_result(
            self._meta(),
            self.spans,
            recorder.tallies(),
            self._locust_figures(),
            self._generator(),
            kinds=recorder.kinds(),
            seconds=recorder.seconds(),
            server_seconds=by_second(self.readings),
            versions=recorder.versions(),
            second_versions=recorder.second_versions(),
        )
        if run.options and run.options.result_file:
            write_result(Path(run.options.result_file), result)
        log.info("%s", _summary(result))
        return result

    def _meta(self) -> dict[str, Any]:
        options = self.run.options
        assert options is not None and self.run.prepared is not None
        return {
            "scenario": self.run.scenario,
            "protocol": self.run.backend.protocol,
            "started_at": self.started_at,
            "ended_at": _now_iso(),
            **self.run.prepared.describe(),
            "load": {
                "model": "open" if options.open_loop else "closed",
                "arrival": options.arrival,
                "rate_rps": options.rate_rps if options.open_loop else None,
                "stages": [stage.label() for stage in options.stages],
                "users": self.environment.runner.target_user_count,
                "think_time_s": options.think_time_s,
                "max_outstanding": options.max_outstanding,
                "late_tolerance_ms": options.late_tolerance_s * 1000.0,
                "warmup_s": options.warmup_s,
                "request_timeout_s": options.request_timeout_s,
                **_load_extras(options),
            },
            **({"scrapes": self.scrapes} if self.scrapes else {}),
        }

    def _generator(self) -> dict[str, Any]:
        own = self.run.usage.report(final=True)
        processes = dict(self.processes)
        if self.is_master:
            own["sent"] = 0  # the master sends nothing; it is listed for its CPU use
            processes["master"] = own
        else:
            own["sent"] = sum(
                tally.sent for key, tally in self.run.recorder.tallies().items() if not key.warmup
            )
            processes["local"] = own
        return {
            "workers": len(processes) - (1 if self.is_master else 0),
            "processes": processes,
            "locust_version": _locust_version(),
        }

    def _locust_figures(self) -> dict[str, Any]:
        stats = self.environment.stats
        method = self.run.backend.request_type
        figures: dict[str, Any] = {}
        total = StatsEntry(stats, "batchbench total", method)
        for span in self.spans:
            entry = stats.entries.get((self.run.request_name(Key(span.index)), method))
            if entry is not None:
                figures[str(span.index)] = _locust_entry(entry)
                total.extend(entry)
        figures["total"] = _locust_entry(total)
        return figures


def _locust_entry(entry: StatsEntry) -> dict[str, Any]:
    """Locust's own figures for a stats row (its percentiles are rounded to ~2 digits)."""
    if not entry.num_requests:
        return {"count": 0, "failures": entry.num_failures}
    figures = {
        f"{name}_ms": float(entry.get_response_time_percentile(percent / 100.0))
        for name, percent in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99), ("p999", 99.9))
    }
    return {
        "count": entry.num_requests,
        "failures": entry.num_failures,
        **figures,
        "max_ms": float(entry.max_response_time),
        "mean_ms": float(entry.avg_response_time),
    }


def _summary(result: dict[str, Any]) -> str:
    total = result["total"]
    verdict = "valid" if result["valid"] else "INVALID: " + "; ".join(result["invalid_reasons"])
    p99 = total["latency_p99_ms"]
    p99_text = "-" if p99 is None else f"{p99:.3f} ms"
    return (
        f"batchbench result: {total['count']} ok, {total['error_count']} errors, "
        f"{total['late']} late, {total['dropped']} dropped, p99 {p99_text}, "
        f"{total['throughput_rps'] or 0:.1f}/s ({verdict})"
    )


def _load_extras(options: ScenarioOptions) -> dict[str, Any]:
    """The result file's description of the arrival process, the request mix and the trace."""
    extras: dict[str, Any] = {"mix": options.request_mix().describe()}
    if options.arrival_spec is not None:
        extras["arrival_params"] = options.arrival_spec.describe(options.rate_rps or None)
    trace = options.trace
    if trace is not None:
        extras["trace"] = {
            "path": trace.path,
            "requests": len(trace.entries),
            "duration_s": round(trace.duration_s, 6),
            "speed": options.trace_speed,
            "loop": options.trace_loop,
        }
    return extras


def _read_pages(urls: tuple[str, ...]) -> list[str | None]:
    """The text of each Prometheus page (None where it cannot be read: noted, not fatal)."""
    texts: list[str | None] = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:
                texts.append(response.read().decode("utf-8"))
        except OSError as exc:
            log.warning("cannot scrape %s: %s", url, exc)
            texts.append(None)
    return texts


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _locust_version() -> str:
    from locust import __version__

    return __version__


# --- users ----------------------------------------------------------------------------------


class DroppedRequest(Exception):
    """An open-loop arrival over the outstanding cap: counted, never sent."""


class PredictUser(User):
    """A Locust user that sends Predict requests, in a closed or an open loop.

    Closed loop (--arrival closed): send, wait for the answer, think, repeat; latency is
    measured from the send. Open loop (constant/poisson): this user is one arrival stream at
    its share of --rate; each request goes out at its intended time whatever the answers
    do, and latency is measured from the intended time. Subclasses implement `send`.
    """

    abstract = True

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.bench: Run = environment.batchbench
        self.in_flight = Group()

    def wait_time(self) -> float:
        options = self.bench.options
        if options is None or options.open_loop:
            return 0.0
        return options.think_time_s

    def send(self, key: Key, kind: RequestKind) -> tuple[str | None, int | None]:
        """Send the prepared request of `kind` once; fire Locust's request event; return the
        status (None if OK, else the gRPC code name, HTTP_<status>, or the exception's name)
        and the model version the answer names (None when it names none)."""
        raise NotImplementedError

    @task
    def drive(self) -> None:
        self.bench.plan_ready.wait()
        options = self.bench.options
        if options is not None and options.trace is not None:
            self.replay()
        elif options is not None and options.open_loop:
            self.open_loop(options)
        else:
            now = time.perf_counter()
            key, kind = self.bench.key_for(now), self.bench.draw_kind()
            tags = self.bench.tags(kind, now)
            self.bench.recorder.started(key, tags)
            self.request(key, now, kind, tags)

    def request(self, key: Key, intended: float, kind: RequestKind, tags: Tags) -> None:
        """Send one (already counted as started) request and record how it ended, timed from
        its intended send time (or from its actual one, if that was earlier)."""
        recorder, now = self.bench.recorder, time.perf_counter()
        since = min(intended, now)
        if self.bench.sends is not None:
            origin = self.bench.run_started_at
            self.bench.sends.append((intended - origin, now - origin))
        try:
            status, answered = self.send(key, kind)
        except gevent.GreenletExit:
            recorder.abandoned(key)
            raise
        except Exception as exc:
            recorder.failed(key, type(exc).__name__, tags, self.bench.version_of(kind, None))
            raise
        version = self.bench.version_of(kind, answered)
        if status is None:
            recorder.succeeded(key, (time.perf_counter() - since) * 1e6, tags, version)
        else:
            recorder.failed(key, status, tags, version)

    def open_loop(self, options: ScenarioOptions) -> None:
        """Claim the next send time of this process's schedule, wait for it, send; again."""
        run = self.bench
        mine, claimed_version = float("inf"), -1
        while True:
            plan, schedule = run.plan, run.schedule
            assert plan is not None and schedule is not None  # set with the first plan
            rate = run.process_rate()
            schedule.follow(plan.version, time.perf_counter(), rate)
            if plan.version != claimed_version and mine > schedule.next_at:
                mine = float("inf")  # claimed under an older plan, later than the new one
            if mine == float("inf"):
                mine, claimed_version = schedule.claim(rate), plan.version
            wait = mine - time.perf_counter() - EARLY_WAKE_S
            if wait > 0:
                gevent.sleep(min(wait, SLEEP_SLICE_S))
                continue
            self.arrive(mine, run.draw_kind(), plan.user_cap(), options.late_tolerance_s)
            mine = float("inf")

    def replay(self) -> None:
        """Send this process's share of the trace at its times; a single process stops its
        test once a non-looping trace has been sent by all users and answered."""
        run = self.bench
        assert run.plan is not None and run.options is not None
        while (claimed := run.trace_schedule.claim() if run.trace_schedule else None) is not None:
            run.claimed += 1
            try:
                intended, entry = claimed
                while (wait := intended - time.perf_counter() - EARLY_WAKE_S) > 0:
                    gevent.sleep(min(wait, SLEEP_SLICE_S))
                cap = run.plan.user_cap()
                self.arrive(intended, run.draw_kind(entry), cap, run.options.late_tolerance_s)
            finally:
                run.claimed -= 1
        if not run.is_worker and not run.trace_done and run.claimed == 0:
            run.trace_done = True
            gevent.spawn(self._quit_when_answered, run.options.request_timeout_s)
        gevent.sleep(SLEEP_SLICE_S)

    def _quit_when_answered(self, timeout_s: float) -> None:
        """End the test once no request is in flight (or after `timeout_s`)."""
        deadline = time.perf_counter() + timeout_s
        while self.bench.recorder.in_flight() and time.perf_counter() < deadline:
            gevent.sleep(0.01)
        self.environment.runner.quit()

    def arrive(self, intended: float, kind: RequestKind, cap: int, tolerance_s: float) -> None:
        """An arrival: send it (late or not), or drop it when `cap` requests are in flight."""
        run, key = self.bench, self.bench.key_for(intended)
        tags = run.tags(kind, intended)
        if len(self.in_flight) >= cap:
            run.recorder.dropped(key, tags)
            self.environment.events.request.fire(
                request_type="open-loop",
                name=DROPPED_NAME,
                response_time=0.0,
                response_length=0,
                exception=DroppedRequest(DROPPED_NAME),
                context={},
            )
            return
        if time.perf_counter() - intended > tolerance_s:
            run.recorder.late(key, tags)
        run.recorder.started(key, tags)  # counted now: the window may close before it runs
        self.in_flight.spawn(self.request, key, intended, kind, tags)

    def on_stop(self) -> None:
        self.in_flight.kill(block=True, timeout=5)


# --- load shape -----------------------------------------------------------------------------


class StagesShape(LoadTestShape):
    """Runs the --stages steps/ramps: each stage's users (started within about a second);
    the rate of each stage reaches the users through the published plan. Stops after the
    last stage. Used only when --stages is given."""

    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None  # Locust attaches the runner before it calls tick()
        run: Run | None = getattr(self.runner.environment, "batchbench", None)
        stages = run.options.stages if run and run.options else ()
        index = stage_index_at(stages, self.get_run_time())
        if index is None:
            return None
        users = stages[index].users
        return users, float(users)


# --- event wiring ---------------------------------------------------------------------------


def fail(scenario: str, message: str) -> NoReturn:
    """Stop the process on a user error, with the message and no traceback (exit code 2)."""
    log.error("%s: %s", scenario, message)
    print(f"{scenario}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def install(backend: Backend, scenario: str) -> None:
    """Register the scenario's options and event listeners (once per process)."""
    if _INSTALLED:
        return
    _INSTALLED.append(scenario)
    events.init_command_line_parser.add_listener(lambda parser, **_: add_arguments(parser))
    events.init.add_listener(lambda environment, **_: _on_init(environment, backend, scenario))
    events.test_start.add_listener(_with_run(_on_test_start))
    events.test_stopping.add_listener(_with_run(_on_test_stopping))
    events.test_stop.add_listener(_with_run(_on_test_stop))
    events.report_to_master.add_listener(_on_report_to_master)
    events.worker_report.add_listener(_on_worker_report)
    events.cpu_warning.add_listener(_with_run(_on_cpu_warning))
    events.usage_monitor.add_listener(_with_run(_on_usage))


_ENVIRONMENT: list[Any] = []  # this process's Locust Environment, once `init` has fired
_INSTALLED: list[str] = []


def _current_run(environment: Any = None) -> Run | None:
    environment = environment or (_ENVIRONMENT[0] if _ENVIRONMENT else None)
    return getattr(environment, "batchbench", None)


def _with_run(handler: Callable[..., None]) -> Callable[..., None]:
    """A listener that calls `handler(run, ...)` once this process has its Run."""

    def listener(environment: Any = None, **kwargs: Any) -> None:
        run = _current_run(environment)
        if run is not None:
            handler(run, **kwargs)

    return listener


def _on_init(environment: Any, backend: Backend, scenario: str) -> None:
    run = Run(environment, backend, scenario)
    environment.batchbench = run
    _ENVIRONMENT[:] = [environment]
    try:
        options = run.options = run.read_options()
        if options.targets:
            run.ensure_prepared()
    except USER_ERRORS as exc:
        fail(scenario, str(exc))
    if not run.is_worker and not options.stages:
        environment.shape_class = None  # StagesShape only runs when --stages is given
    if not environment.host and options.targets:
        environment.host = options.targets[0]  # FastHttpUser insists on a host
    runner = environment.runner
    if run.is_worker:
        runner.register_message(PLAN_MESSAGE, lambda msg, **_: _on_plan_message(run, msg))
        runner.register_message(FLUSH_MESSAGE, lambda msg, **_: _on_flush_message(run, msg))


def _on_test_start(run: Run) -> None:
    try:
        run.ensure_prepared()
    except USER_ERRORS as exc:
        log.error("%s: %s", run.scenario, exc)
        run.environment.process_exit_code = 2
        gevent.spawn(run.environment.runner.quit)
        return
    if run.is_worker and run.plan is not None and run.streams_options != run.options:
        # A worker started without the test's options (`locust --worker -f -`) gets them with
        # its first spawn, which can come after the plan: make the streams from them.
        run.start_streams(run.run_id, run.plan)
    run.start_window()
    if run.conductor is not None:
        run.conductor.start()


def _on_test_stopping(run: Run) -> None:
    if run.conductor is not None:
        run.conductor.stopping()


def _on_test_stop(run: Run) -> None:
    if run.conductor is not None:
        run.conductor.finish()
    else:
        run.close_window()


def _on_plan_message(run: Run, msg: Any) -> None:
    run.apply_plan(msg.data["run"], Plan.from_message(msg.data["plan"]))


def _on_flush_message(run: Run, msg: Any) -> None:
    """The master ends the window: close it and send the final report right away."""
    if msg.data["run"] != run.run_id:
        return
    run.close_window()
    runner = run.environment.runner
    data: dict[str, Any] = {}
    run.environment.events.report_to_master.fire(client_id=runner.client_id, data=data)
    runner.send_message("stats", data)


def _on_report_to_master(client_id: str, data: dict[str, Any], **_: Any) -> None:
    run = _current_run()
    if run is not None and run.run_id:
        data[REPORT_KEY] = run.report()


def _on_worker_report(client_id: str, data: dict[str, Any], **_: Any) -> None:
    run = _current_run()
    if run is not None and run.conductor is not None:
        run.conductor.worker_report(client_id, data)


def _on_cpu_warning(run: Run, **_: Any) -> None:
    run.usage.cpu_warning = True


def _on_usage(run: Run, cpu_usage: float = 0.0, **_: Any) -> None:
    run.usage.cpu_percent_max = max(run.usage.cpu_percent_max, float(cpu_usage))
