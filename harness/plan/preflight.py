"""Checks before anything runs: settings that cannot work, and a sweep longer than asked for.

Pure functions of the spec and its points. A *warning* is shown and the sweep goes on; a
*refusal* stops it before the first server starts (``raise_refusals``). The time estimate is
shown first, whatever the findings.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, cast

from harness.errors import UserError
from harness.plan.batching_fields import (
    ALLOWED_BATCH_SIZES,
    BATCH_TIMEOUT_MICROS,
    MAX_BATCH_SIZE,
    BatchingParams,
)
from harness.plan.placement import Placement, format_cpus
from harness.plan.points import Point
from harness.plan.spec import SweepSpec
from scenarios.trace import Trace, TraceError, read_trace

# Seconds per point outside the windows: replicas start (a TensorFlow import each) and become
# AVAILABLE, Locust starts, the server stops. A rough figure for a small model on a workstation.
STARTUP_S = {"reference": 6.0, "tfserving": 6.0, "external": 2.0, "command": 30.0}
# Refuse only when even the shortest possible sweep overshoots the limit by this factor.
FAR_BEYOND = 1.25


@dataclass(frozen=True)
class Finding:
    """One pre-flight result: ``code`` is stable (for tests and filters), ``message`` for people."""

    level: Literal["warning", "refusal"]
    code: str
    message: str


@dataclass(frozen=True)
class TimeEstimate:
    """The sweep's duration: every point stable as early as possible, or run to max_windows."""

    runs: int  # points, or for find_max_rate: searches x probes (a range)
    runs_max: int
    per_run_min_s: float
    per_run_max_s: float

    @property
    def total_min_s(self) -> float:
        return self.runs * self.per_run_min_s

    @property
    def total_max_s(self) -> float:
        return self.runs_max * self.per_run_max_s

    def describe(self) -> str:
        """``20 points × 9–11 s ≈ 3.0–3.7 min``."""
        runs = str(self.runs) if self.runs == self.runs_max else f"{self.runs}–{self.runs_max}"
        return (
            f"{runs} points × {self.per_run_min_s:.0f}–{self.per_run_max_s:.0f} s ≈ "
            f"{self.total_min_s / 60:.1f}–{_minutes(self.total_max_s)}"
        )


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def estimate_duration(
    spec: SweepSpec,
    points: Sequence[Point],
    startup_s: float | None = None,
    trace_s: float | None = None,
) -> TimeEstimate:
    """Estimate the wall time of running ``points`` (for find_max_rate: every probe of each).

    Each run costs start-up + warm-up + between ``stable_windows`` and ``max_windows`` windows.
    A search needs at least a pass, a fail and the bisection steps, at most ``max_probes``.
    A confirmation adds its rounds of the chosen configuration, up to the tied ones' too.
    A trace point is start-up and one pass of the trace (``trace_s`` at speed 1) at its speed.
    """
    m = spec.measurement
    startup = STARTUP_S[spec.target.kind] if startup_s is None else startup_s
    if trace_s is not None and points:
        speeds = [p.load for p in points]
        passes = (startup + trace_s / max(speeds), startup + trace_s / min(speeds))
        return TimeEstimate(len(points), len(points), *passes)
    fixed = startup + m.warmup_s
    runs_min = runs_max = len(points)
    if search := spec.load.find_max_rate:
        bisections = math.ceil(math.log2(1 / search.precision))
        runs_min = len(points) * min(2 + bisections, search.max_probes)
        runs_max = len(points) * search.max_probes
    if confirm := spec.confirm:  # the pick alone at least; the tied ones and the baseline at most
        runs_min += confirm.rounds
        runs_max += (confirm.top + 1) * confirm.rounds
    return TimeEstimate(
        runs_min,
        runs_max,
        fixed + m.stable_windows * m.window_s,
        fixed + m.max_windows * m.window_s,
    )


def check(
    spec: SweepSpec,
    points: Sequence[Point],
    estimate: TimeEstimate | None = None,
    placements: Mapping[int, Placement] | None = None,
    load_average: float | None = None,
) -> list[Finding]:
    """Every warning and refusal for running ``points`` of ``spec``; ``placements`` (CPU sets
    per replica count on this machine) adds the placement checks, ``load_average`` (the
    machine's 1-minute load before the sweep starts) the check for a busy machine."""
    estimate = estimate or estimate_duration(spec, points)
    batched = _distinct_servers(points)
    return [
        *_timeout_vs_slo(batched, spec.latency_slo_ms),
        *_batches_cannot_fill(points),
        *_allowed_sizes(batched),
        *_duration(estimate, spec.max_duration_s),
        *_placement(spec, placements or {}),
        *_busy_machine(placements or {}, load_average),
    ]


def refusals(findings: Sequence[Finding]) -> list[Finding]:
    return [finding for finding in findings if finding.level == "refusal"]


def raise_refusals(findings: Sequence[Finding]) -> None:
    """One UserError listing every refusal; nothing when there is none."""
    refused = refusals(findings)
    if refused:
        lines = "\n".join(f"  {finding.message}" for finding in refused)
        raise UserError(f"the sweep was refused before it started:\n{lines}")


def _distinct_servers(points: Sequence[Point]) -> list[BatchingParams]:
    seen: dict[BatchingParams, None] = {}
    for point in points:
        if point.batching is not None:
            seen.setdefault(point.batching)
    return list(seen)


def _timeout_vs_slo(servers: Sequence[BatchingParams], slo_ms: float | None) -> Iterator[Finding]:
    if slo_ms is None:
        return
    timeouts = sorted({t for p in servers if (t := BATCH_TIMEOUT_MICROS.of(p))})
    for micros in timeouts:
        if micros / 1000 >= slo_ms:
            yield Finding(
                "warning",
                "timeout_vs_slo",
                (
                    f"{BATCH_TIMEOUT_MICROS.name} {micros} ({micros / 1000:g} ms) is at least "
                    f"the p99 SLO ({slo_ms:g} ms): a batch that does not fill holds its first "
                    "request that long, so those points meet the SLO only when their batches fill"
                ),
            )


def _batches_cannot_fill(points: Sequence[Point]) -> Iterator[Finding]:
    combos = sorted(
        {
            (int(p.load), p.replicas, p.batching.largest_batch)
            for p in points
            if p.load_kind == "concurrency" and p.batching is not None
        }
    )
    for users, replicas, size in combos:
        share = users / replicas
        if users < size:
            how = "can never fill"
        elif share < size:
            how = f"fill only when one replica gets more than its share ({share:g} users)"
        else:
            continue
        yield Finding(
            "warning",
            "batches_cannot_fill",
            (
                f"closed-loop concurrency {users} over {replicas} replica(s) with "
                f"{MAX_BATCH_SIZE.name} {size}: batches {how}; each batch then waits the full "
                f"{BATCH_TIMEOUT_MICROS.name}"
            ),
        )


def _allowed_sizes(servers: Sequence[BatchingParams]) -> Iterator[Finding]:
    for params in servers:
        sizes = ALLOWED_BATCH_SIZES.of(params)
        expected = params.largest_batch
        if sizes and sizes[-1] != expected:
            yield Finding(
                "refusal",
                ALLOWED_BATCH_SIZES.name,
                (
                    f"{ALLOWED_BATCH_SIZES.name} {list(sizes)}: the last entry must match "
                    f"{MAX_BATCH_SIZE.name} (TF Serving refuses to start); "
                    f"last entry was {sizes[-1]}; expected {expected}"
                ),
            )


def _duration(estimate: TimeEstimate, limit_s: float | None) -> Iterator[Finding]:
    if limit_s is None:
        return
    if estimate.total_min_s > FAR_BEYOND * limit_s:
        yield Finding(
            "refusal",
            "too_long",
            (
                f"estimated {estimate.describe()}, far beyond max_duration_s {limit_s:g} s "
                f"({_minutes(limit_s)}): fewer points, shorter windows, or a larger max_duration_s"
            ),
        )
    elif estimate.total_max_s > limit_s:
        yield Finding(
            "warning",
            "may_be_long",
            (
                f"estimated {estimate.describe()}: may exceed max_duration_s {limit_s:g} s if "
                "points need more windows to become stable"
            ),
        )


# What sharing the cores cost, measured on 2 cores (mlp, 16 clients, batching off): our
# throughput over an independent C client's (h2load) with the server and generator unpinned.
SHARED_COST = "on 2 cores an unpinned sweep measured 0.59-0.69 of what h2load saw (README)"


def _placement(spec: SweepSpec, placements: Mapping[int, Placement]) -> Iterator[Finding]:
    if not spec.target.starts_servers or not placements:
        return
    any_placement = next(iter(placements.values()))
    machine = set(any_placement.machine)
    yield from _cpus_exist(spec, machine)
    if any_placement.mode == "none":
        yield Finding(
            "warning",
            "placement_none",
            (
                f"placement none: the servers and the load generator share all {len(machine)} "
                f"cores, so the generator's CPU is taken from the server's ({SHARED_COST})"
            ),
        )
        return
    yield from _shared_cores(placements)


def _cpus_exist(spec: SweepSpec, machine: set[int]) -> Iterator[Finding]:
    for name in ("servers", "generator"):
        cpus = getattr(spec.placement, name) or ()
        if missing := sorted(set(cpus) - machine):
            yield Finding(
                "refusal",
                "placement_cpus",
                (
                    f"placement.{name}: CPU(s) {format_cpus(missing)} are not usable here; "
                    f"usable CPUs: {format_cpus(machine)}"
                ),
            )


def _shared_cores(placements: Mapping[int, Placement]) -> Iterator[Finding]:
    shared = [p for p in placements.values() if p.shared]
    if shared:
        yield Finding(
            "warning",
            "placement_shared",
            (
                f"only {len(shared[0].machine)} usable core(s) for servers "
                f"({shared[0].as_dict()['servers']}) and generator "
                f"({shared[0].as_dict()['generator']}): they cannot be separated and compete "
                f"for CPU ({SHARED_COST})"
            ),
        )
    for replicas, placement in sorted(placements.items()):
        if placement.replicas_share_cores:
            yield Finding(
                "warning",
                "replicas_share_cores",
                (
                    f"{replicas} replicas on {len(placement.servers)} server core(s) "
                    f"({format_cpus(placement.servers)}): replicas share cores, one TF thread "
                    "per pool each; those points show what extra processes cost on the same "
                    "cores, not how replicas scale"
                ),
            )


def _busy_machine(
    placements: Mapping[int, Placement], load_average: float | None
) -> Iterator[Finding]:
    """Before the sweep starts, any load is other processes': they take CPU from ours, and
    more so from processes pinned to a few cores (the scheduler is fair per thread, and a
    pinned server's threads all queue on its cores)."""
    placement = next(iter(placements.values()), None)
    if placement is None or load_average is None:
        return
    cores = len(placement.machine)
    if load_average < max(1.0, cores / 2):
        return
    yield Finding(
        "warning",
        "busy_machine",
        (
            f"the machine is busy before the sweep starts (load average {load_average:.1f} on "
            f"{cores} usable cores): other processes will take CPU from the servers and the "
            "generator, and throughput will reflect them"
            + (
                "; pinned to fixed cores (placement auto), ours lose more of it: with a load "
                "of ~11 on 2 cores the demo measured 0.32 of its unpinned throughput (README)"
                if placement.mode != "none"
                else ""
            )
        ),
    )


# --- the trace of a replay sweep ----------------------------------------------------------------


def check_trace(spec: SweepSpec, points: Sequence[Point]) -> Trace | None:
    """Read ``load.trace`` and check it against the sweep: times in order, every model one the
    servers host, no request with more rows than a configuration's max_batch_size for its
    model. UserError with one line naming the file, line, key and valid values otherwise;
    None for a sweep without a trace. (I/O: it reads the trace.)"""
    if spec.load.trace is None:
        return None
    served = [model.served_name for model in spec.hosted_models]
    # An external server may host more than the spec names: the scenario asks the server.
    known = None if spec.target.kind == "external" else served
    limits = rows_limits(points, served)
    overall = min(limits.values(), default=None)
    try:
        trace = read_trace(spec.load.trace)
        trace.check(known, overall, limits)
    except TraceError as exc:
        raise UserError(f"load.trace: {exc}") from None
    return trace


def rows_limits(points: Sequence[Point], models: Sequence[str]) -> dict[str, int]:
    """Per model, the most rows a request may have on every batched configuration of
    ``points`` (its smallest max_batch_size; TF Serving's default when unset)."""
    limits: dict[str, int] = {}
    for point in points:
        for model in models:
            params = point.server.params_for(model)
            if params is not None:
                size = params.max_batch_size or cast(int, MAX_BATCH_SIZE.default)
                limits[model] = min(limits.get(model, size), size)
    return limits
