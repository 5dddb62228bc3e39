"""Measuring one point on a running target: windows until stable, then the point's figures.

A Locust run is a warm-up stage and then windows at the same load. After the first run the
stability rule (harness.sweep.stability) looks at the last windows; while it says "measuring"
another run adds windows (with its own short warm-up: a new generator process opens new
connections).
The point's figures come from the windows the verdict used: request counts added and latency
histograms merged exactly, and the server's Prometheus counters diffed at the same stage
boundaries (the scenario scrapes them as each stage starts), so client and server figures
cover the same interval.

The generator runs on its CPU set (the target's placement). A run whose load processes used
nearly all the CPU they can have there measured the generator, not the server: the point is
marked invalid with that reason. With ``load.processes: auto`` such a point is measured again
from scratch, once, with one process per generator core, when the set has more cores than
processes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.decide.stats import interval_figures
from harness.plan.placement import more_processes
from harness.plan.points import Point
from harness.plan.spec import MeasurementSpec, SweepSpec
from harness.servers.targets import RunningTarget, machine_cpus
from harness.store.results import PointResult, timestamp
from harness.sweep import telemetry
from harness.sweep.load_runner import (
    LoadError,
    LoadPlan,
    combine,
    dropped_workers,
    generator_bound,
    generator_cpu_percent,
    metric_figures,
    run_locust,
    window_stages,
    worker_records,
)
from harness.sweep.stability import StabilityVerdict, WindowFigures, judge, whole_pass
from scenarios.results import version_order
from scenarios.trace import read_trace

WindowHook = Callable[[int, Mapping[str, Any]], None]


@dataclass
class Window:
    """One measured window: its stage entry from the result file and its server deltas."""

    stage: dict[str, Any]
    server: list[telemetry.Samples] | None  # one delta per replica; None: not scraped

    def figures(self) -> WindowFigures:
        p99 = self.stage["latency_p99_ms"]
        return WindowFigures(
            throughput_rps=self.stage["throughput_rps"] or 0.0,
            latency_p99_ms=math.nan if p99 is None else p99,
            requests=self.stage["count"],
        )


@dataclass
class Measurement:
    """What the runs of one point produced so far."""

    windows: list[Window] = field(default_factory=list)
    invalid_reasons: list[str] = field(default_factory=list)
    cpu_percent: list[float] = field(default_factory=list)
    runs: int = 0
    kinds: dict[KindKey, list[dict[str, Any]]] = field(default_factory=dict)  # per run
    versions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # per run
    timeline: list[dict[str, Any]] = field(default_factory=list)  # every run's, in order
    elapsed_s: float = 0.0  # the runs' lengths so far: where the next run's timeline starts
    processes: int = 1
    set_aside: str | None = None  # why a first run was set aside (generator-bound)
    workers: list[dict[str, Any]] = field(default_factory=list)  # per run: its Locust processes


# A request kind as the result file's ``by_kind`` names it: model, rows, length, payload.
KindKey = tuple[str, int, int, str | None]


def load_plan(
    spec: SweepSpec,
    point: Point,
    target: RunningTarget,
    windows: int,
    processes: int | None = None,
) -> LoadPlan:
    m = spec.measurement
    placement = target.placement
    plan = LoadPlan(
        protocol=point.protocol,
        targets=target.addresses(point.protocol),
        model_name=spec.model_mix,
        signature=spec.model.signature,
        rows=point.traffic.rows,
        length=point.traffic.length,
        payload=str(Path(spec.model.payload).resolve()) if spec.model.payload else None,
        load_kind=point.load_kind,
        load=point.load,
        warmup_s=m.warmup_s,
        window_s=m.window_s,
        windows=windows,
        arrival=point.traffic.arrival,
        processes=first_processes(spec) if processes is None else processes,
        seed=spec.seed + point.repeat,
        scrape_urls=tuple(target.metrics),
        cpus=placement.generator if placement else (),
        version_split=spec.model.version_split,
        **_remote(spec),
    )
    if point.traffic.trace is None:
        return plan
    trace = Path(point.traffic.trace).resolve()
    duration_s, requests = trace_pass(str(trace))
    warmup_s, window_s, count = replay_windows(duration_s / point.load, m)
    return replace(
        plan,
        trace=str(trace),
        trace_rps=requests * point.load / duration_s,
        warmup_s=warmup_s,
        window_s=window_s,
        windows=count,
    )


@functools.lru_cache(maxsize=8)
def trace_pass(path: str) -> tuple[float, int]:
    """One pass of a trace at speed 1: its length in seconds and its number of requests."""
    trace = read_trace(path)
    return trace.duration_s, len(trace.entries)


def replay_windows(pass_s: float, m: MeasurementSpec) -> tuple[float, float, int]:
    """``(warm-up, window length, windows)`` covering one pass of a replay exactly: the
    spec's warm-up (a quarter of the pass at most), then windows of about ``window_s``."""
    warmup_s = min(m.warmup_s, pass_s / 4)
    rest = pass_s - warmup_s
    count = max(1, round(rest / m.window_s))
    return warmup_s, rest / count, count


def first_processes(spec: SweepSpec) -> int:
    """Local load processes of a point's first run: the spec's count, or one for ``auto``."""
    fixed = spec.load.fixed_processes
    return 1 if fixed is None else fixed


def _remote(spec: SweepSpec) -> dict[str, Any]:
    workers = spec.load.workers
    if workers is None:
        return {}
    return {
        "remote_workers": workers.remote,
        "master_bind": workers.bind,
        "workers_wait_s": workers.wait_s,
    }


def measure_point(
    spec: SweepSpec,
    point: Point,
    target: RunningTarget,
    workdir: Path,
    *,
    on_window: WindowHook | None = None,
) -> PointResult:
    """Measure ``point`` on a running ``target``; a failed PointResult when the server died
    or the load generator could not run."""
    started_at = timestamp()
    m = spec.measurement
    measurement = Measurement(processes=first_processes(spec))
    verdict: StabilityVerdict | None = None
    while verdict is None or not verdict.done:
        remaining = m.max_windows - len(measurement.windows)
        # First run: just enough windows for a verdict; later ones add up to that many more.
        count = m.stable_windows if verdict is None else min(m.stable_windows - 1, remaining)
        plan = load_plan(spec, point, target, max(1, count), measurement.processes)
        result_file = workdir / f"{point.key}.run{measurement.runs}.json"
        try:
            result = run_locust(plan, result_file)
        except LoadError as exc:
            return _failed(point, target, f"load generator failed: {exc}", started_at)
        finally:
            result_file.unlink(missing_ok=True)
        if died := target.exited():
            codes = ", ".join(f"replica {i} exit code {code}" for i, code in died)
            return _failed(point, target, f"server exited during the point ({codes})", started_at)
        if retry := _retry_with_more_processes(spec, target, measurement, result, plan):
            measurement, verdict = retry, None
            continue
        before = len(measurement.windows)
        add_run(measurement, result, plan, len(target.metrics))
        for i in range(before, len(measurement.windows)):
            if on_window:
                on_window(i, measurement.windows[i].stage)
        verdict = _verdict(point, measurement, m)
    measured = point_result(point, measurement, verdict, started_at)
    measured.placement = _placement_record(target, measurement)
    return measured


def _verdict(point: Point, measurement: Measurement, m: MeasurementSpec) -> StabilityVerdict:
    """A replay is judged on its whole pass; other points by the stability rule."""
    figures = [w.figures() for w in measurement.windows]
    if point.load_kind == "trace":
        return whole_pass(figures, min_requests=m.min_requests)
    return judge(
        figures,
        tolerance=m.stability_tolerance,
        stable_windows=m.stable_windows,
        max_windows=m.max_windows,
        min_requests=m.min_requests,
    )


def _retry_with_more_processes(
    spec: SweepSpec,
    target: RunningTarget,
    measurement: Measurement,
    result: Mapping[str, Any],
    plan: LoadPlan,
) -> Measurement | None:
    """A fresh measurement with more load processes when this first run was generator-bound,
    processes are ``auto`` and the generator's CPU set has cores to spare; else None."""
    if spec.load.fixed_processes is not None or measurement.runs or measurement.set_aside:
        return None
    reason = generator_bound(result, plan, len(machine_cpus()))
    more = more_processes(target.placement, plan.processes) if target.placement else None
    if reason is None or more is None:
        return None
    return Measurement(processes=more, set_aside=reason)


def _placement_record(target: RunningTarget, measurement: Measurement) -> dict[str, Any] | None:
    record = target.placement_record()
    if record is None:
        return None
    record["generator_processes"] = measurement.processes
    if measurement.set_aside:
        record["first_run_generator_bound"] = measurement.set_aside
    return record


def add_run(
    measurement: Measurement, result: Mapping[str, Any], plan: LoadPlan, scraped: int
) -> None:
    stages = window_stages(result, plan)
    deltas = stage_deltas(result, scraped)
    first = len(result.get("stages", [])) - len(stages)
    for offset, stage in enumerate(stages):
        measurement.windows.append(Window(dict(stage), deltas.get(first + offset)))
    _add_kinds_and_timeline(measurement, result, plan)
    measurement.runs += 1
    measurement.invalid_reasons += [r for r in result.get("invalid_reasons", []) if r]
    if bound := generator_bound(result, plan, len(machine_cpus())):
        measurement.invalid_reasons.append(bound)
    if dropped := dropped_workers(result, plan):
        measurement.invalid_reasons.append(dropped)
    measurement.workers.append(
        {
            "run": measurement.runs - 1,
            "sent": result.get("total", {}).get("sent"),  # the run's merged count
            "processes": worker_records(result),
        }
    )
    cpu = generator_cpu_percent(result, plan.duration_s)
    if cpu is not None:
        measurement.cpu_percent.append(cpu)


def _add_kinds_and_timeline(
    measurement: Measurement, result: Mapping[str, Any], plan: LoadPlan
) -> None:
    for entry in result.get("by_kind", []):
        kind = (entry["model"], entry["rows"], entry["length"], entry.get("payload"))
        measurement.kinds.setdefault(kind, []).append({**entry, "run": measurement.runs})
    for entry in result.get("by_version", []):
        measurement.versions.setdefault(entry["version"], []).append(dict(entry))
    seconds = result.get("timeline", [])
    for entry in seconds:
        second = entry["second"]
        measurement.timeline.append(
            {
                "run": measurement.runs,
                "at_s": round(measurement.elapsed_s + second, 3),
                "warmup": second < plan.warmup_s,
                **entry,
            }
        )
    measurement.elapsed_s += max(float(len(seconds)), math.ceil(plan.duration_s))


def kind_figures(kinds: Mapping[KindKey, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Per request kind, its figures over every measured window of the point (each run's
    ``by_kind`` added up, histograms merged); empty when only one kind was sent."""
    if len(kinds) < 2:
        return []
    out = []
    for (model, rows, length, payload), entries in sorted(kinds.items(), key=_kind_order):
        combined = combine(entries)
        out.append(
            {
                "model": model,
                "rows": rows,
                "length": length,
                "payload": payload,
                "metrics": metric_figures(combined, None),
                "histogram": combined["histogram"] or None,
            }
        )
    return out


def model_figures(kinds: Mapping[KindKey, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Per model, its figures over every measured window of the point (its kinds' entries
    added up, histograms merged); empty when the point sent to one model only."""
    by_model: dict[str, list[Mapping[str, Any]]] = {}
    for (model, *_), entries in kinds.items():
        by_model.setdefault(model, []).extend(entries)
    if len(by_model) < 2:
        return []
    out = []
    for model, entries in sorted(by_model.items()):
        # A model's kinds share each run's measured time: count it once per run.
        runs = {entry["run"]: entry["window_s"] for entry in entries}
        combined = combine(entries, sum(runs.values()))
        out.append(
            {
                "model": model,
                "metrics": metric_figures(combined, None),
                "histogram": combined["histogram"] or None,
            }
        )
    return out


def version_figures(versions: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Per model version that answered (or version-split arm), its figures over every run of
    the point (each run's ``by_version`` added up, histograms merged); empty when fewer than
    two versions answered."""
    if len(versions) < 2:
        return []
    out = []
    for version in sorted(versions, key=version_order):
        combined = combine(versions[version])
        out.append({"version": version, **{k: combined[k] for k in _VERSION_FIELDS}})
    return out


_VERSION_FIELDS = (
    "count",
    "error_count",
    "errors",
    "error_rate",
    "throughput_rps",
    "latency_p50_ms",
    "latency_p99_ms",
    "histogram",
)


def _kind_order(item: tuple[KindKey, Any]) -> tuple[str, int, int, str]:
    model, rows, length, payload = item[0]
    return (model, rows, length, payload or "")


def stage_deltas(result: Mapping[str, Any], replicas: int) -> dict[int, list[telemetry.Samples]]:
    """Per stage index, each replica's Prometheus delta between that stage's start and the
    next boundary; stages with a failed scrape at either end are left out."""
    scrapes = result.get("scrapes", [])
    if not replicas or not scrapes:
        return {}
    parsed = [
        None if None in s["texts"] else [telemetry.parse_samples(t) for t in s["texts"]]
        for s in scrapes
    ]
    out: dict[int, list[telemetry.Samples]] = {}
    for i, scrape in enumerate(scrapes[:-1]):
        before, after = parsed[i], parsed[i + 1]
        if isinstance(scrape["stage"], int) and before and after:
            out[scrape["stage"]] = [
                telemetry.delta(b, a) for b, a in zip(before, after, strict=True)
            ]
    return out


def point_result(
    point: Point, measurement: Measurement, verdict: StabilityVerdict, started_at: str
) -> PointResult:
    """The stored result: the used windows' figures, every window, the server telemetry."""
    used = [measurement.windows[i] for i in verdict.windows_used]
    combined = combine([w.stage for w in used])
    offered = point.load if point.load_kind == "rate" else None
    metrics = metric_figures(combined, offered)
    metrics["generator_cpu_percent"] = max(measurement.cpu_percent, default=None)
    server = _server_telemetry(used)
    if server is not None:
        metrics.update(server[1])
    windows = [
        _window_entry(i, w, i in verdict.windows_used) for i, w in enumerate(measurement.windows)
    ]
    used_figures = [w["metrics"] for w in windows if w["used"]]
    metrics.update(interval_figures(point.key, [used_figures]))
    return PointResult(
        point,
        metrics=metrics,
        windows=windows,
        histogram=combined["histogram"] or None,
        stability=verdict.as_dict(),
        valid=not measurement.invalid_reasons,
        invalid_reasons=sorted(set(measurement.invalid_reasons)),
        telemetry={} if server is None else server[0],
        by_kind=kind_figures(measurement.kinds),
        by_model=model_figures(measurement.kinds),
        by_version=version_figures(measurement.versions),
        timeline=measurement.timeline,
        started_at=started_at,
        finished_at=timestamp(),
        extra={
            "locust_runs": measurement.runs,
            "locust": _locust_figures(used),
            "generator_workers": measurement.workers,
        },
    )


def _server_telemetry(
    windows: Sequence[Window],
) -> tuple[dict[str, Any], dict[str, float | None]] | None:
    if not windows or any(w.server is None for w in windows):
        return None
    replicas = len(windows[0].server or [])
    per_replica = [
        telemetry.merge([w.server[r] for w in windows if w.server]) for r in range(replicas)
    ]
    return telemetry.summarize(per_replica)


def _window_entry(index: int, window: Window, used: bool) -> dict[str, Any]:
    stage = window.stage
    metrics = metric_figures(stage, stage.get("rate_rps"))
    if window.server is not None:
        metrics.update(telemetry.summarize(window.server)[1])
    return {
        "index": index,
        "duration_s": stage["window_s"],
        "used": used,
        "metrics": metrics,
        "errors": stage.get("errors", {}),
        "locust_p99_ms": stage.get("locust", {}).get("p99_ms"),
    }


def _locust_figures(windows: Sequence[Window]) -> dict[str, Any]:
    """Locust's own percentiles for the used windows (the worst window's, as Locust cannot
    merge its rounded figures exactly), to show beside ours."""
    entries = [w.stage.get("locust", {}) for w in windows]
    out: dict[str, Any] = {"count": sum(e.get("count", 0) for e in entries)}
    for name in ("p50_ms", "p99_ms", "max_ms"):
        values = [e[name] for e in entries if e.get(name) is not None]
        out[name] = max(values) if values else None
    return out


def _failed(point: Point, target: RunningTarget, reason: str, started_at: str) -> PointResult:
    result = PointResult.failed(point, reason, target.log_tail())
    result.started_at, result.finished_at = started_at, timestamp()
    return result
