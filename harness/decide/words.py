"""The recommendation in words: a configuration and a load described, the one-sentence verdict
and the reasons behind a ranking, line by line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from harness.decide.ranking import (
    P99,
    THROUGHPUT,
    Candidate,
    Constraint,
    Gain,
    Mode,
    Ranked,
    figure_of,
    ratio,
)
from harness.decide.ties import decision_text
from harness.metrics import METRICS, metric
from harness.plan.batching_fields import BatchingParams
from harness.plan.points import Point, format_number
from harness.plan.spec import Objective, SweepSpec


def constraint_text(constraint: Constraint) -> str:
    """``p99 latency ≤ 50 ms``."""
    m = metric(constraint.metric_id)
    sign = "≥" if m.higher_is_better else "≤"
    unit = f" {m.unit}" if m.unit else ""
    return f"{m.header.lower()} {sign} {_num(constraint.bound)}{unit}"


def objective_text(objective: Objective) -> str:
    if objective.maximize:
        return f"maximise {objective.maximize}"
    if objective.minimize:
        return f"minimise {objective.minimize}"
    weights = ", ".join(f"{k}×{_num(w)}" for k, w in (objective.weights or {}).items())
    return f"weighted ({weights}; each metric scaled to the best candidate)"


def describe_config(point: Point) -> str:
    """The configuration in words: each set batching field as ``name=value``, then the replicas.

    ``batching off, 1 replica`` without batching.
    """
    batching = point.batching
    if batching is None:
        params = "batching off"
    elif not batching.as_dict():
        params = "batching with TF Serving's default parameters"
    else:
        params = _params_text(batching)
    # Models with parameters of their own (a multi-model sweep): ``; for mlp: ...``.
    own = "".join(f"; for {name}: {_params_text(p)}" for name, p in point.server.own)
    replicas = f"{point.replicas} replica{'s' if point.replicas != 1 else ''}"
    return f"{params}{own if batching is not None else ''}, {replicas}"


def _params_text(params: BatchingParams) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in params.as_dict().items()) or "defaults"


def describe_load(point: Point) -> str:
    protocol = "gRPC" if point.protocol == "grpc" else "REST"
    if point.load_kind == "trace":
        trace = point.traffic.label()
        return f"{trace} replayed at {format_number(point.load)}x speed over {protocol}"
    mix = "" if point.traffic.is_default else f", {point.traffic.label(point.load_kind == 'rate')}"
    if point.load_kind == "concurrency":
        return f"{format_number(point.load)} concurrent {protocol} clients{mix}"
    return f"{format_number(point.load)} req/s offered over {protocol} (open loop{mix})"


def sentence(rec: Ranked, total_points: int) -> str:
    """The recommendation in one sentence."""
    chosen = rec.chosen
    if chosen is None:
        return (
            f"No configuration can be recommended: all {total_points} point(s) were left out "
            "(failed, invalid or unstable); see `excluded`."
        )
    slo = " and ".join(constraint_text(c) for c in rec.constraints) or "no constraints"
    figures = figures_text(chosen, rec.mode)
    if not chosen.feasible:
        missed = ", ".join(f"{_miss_name(k)} by {_pct(v)}" for k, v in chosen.misses.items())
        return (
            f"No configuration met the SLO ({slo}); the closest is {describe_config(chosen.point)}"
            f" ({figures}), which missed {missed}."
        )
    decided = f" {decision_text(rec.decision)}" if rec.decision else ""
    return (
        f"Use {describe_config(chosen.point)}: {figures}, meeting {slo}{_gains_text(rec)}."
        + decided
    )


def unconfirmed_text(excluded: Sequence[Mapping[str, str]]) -> str:
    """Why a run's confirmation could not stand in for its sweep (every round left out)."""
    first = excluded[0]["reason"] if excluded else "no rounds recorded"
    return (
        f"Unconfirmed: all {len(excluded)} confirmation round point(s) were left out (first: "
        f"{first}), so the figures are the sweep's."
    )


def figures_text(chosen: Candidate, mode: Mode) -> str:
    p99 = chosen.metrics.get(P99)
    p99_text = f"p99 {_num(p99)} ms" if p99 is not None else "p99 not measured"
    if mode == "max_rate":
        rate = chosen.max_rate_rps
        head = f"sustains {_num(rate)} req/s" if rate is not None else "no passing rate"
        return f"{head} over {_protocol(chosen.point)} with {p99_text} at that rate"
    tput = chosen.metrics.get(THROUGHPUT)
    return f"{_num(tput)} req/s at {p99_text} under {describe_load(chosen.point)}"


def _gains_text(rec: Ranked) -> str:
    """`` (2.87× the unbatched baseline's throughput, +3.1% over TF Serving's defaults)``."""
    parts = []
    unbatched, default = rec.baselines.get("unbatched"), rec.baselines.get("tfserving_default")
    what = "max rate" if rec.mode == "max_rate" else "throughput"
    if unbatched and unbatched.differs and unbatched.gain is not None:
        parts.append(f"{unbatched.gain + 1:.2f}× the unbatched baseline's {what}")
    if default and default.differs:
        parts.append(f"{_change(default.gain)} over TF Serving's default batching")
    return f" ({', '.join(parts)})" if parts else ""


def reasons(rec: Ranked, spec: SweepSpec) -> list[str]:
    """Why this choice, line by line: what counted, the rule applied, what it beat."""
    counted = len(rec.ranking)
    lines = [
        f"{counted} candidate(s) counted (repeats combined by their worst figure); "
        f"{len(rec.excluded)} point(s) left out as failed, invalid or unstable."
    ]
    if rec.mode == "max_rate":
        slo = spec.load.find_max_rate.slo if spec.load.find_max_rate else {}
        lines.append(f"Ranked by the highest open-loop rate within the search's SLO {dict(slo)}.")
    else:
        lines.append(f"Objective: {objective_text(rec.objective)}.")
    feasible = sum(c.feasible for c in rec.ranking)
    if rec.status == "met":
        lines.append(f"{feasible} candidate(s) met every constraint; the best was chosen.")
    elif rec.status == "none_met":
        lines.append(
            "None met every constraint: ranked by the largest relative miss (how far the SLO "
            "would have to be relaxed for each to pass)."
        )
    if rec.confirmed:
        lines.append(
            "Figures from the confirmation run: the tied-best candidates (and the unbatched "
            "baseline) re-measured in interleaved rounds, compared paired by round."
        )
    if rec.decision is not None:
        lines.append(
            "Ties: a feasible candidate whose 95% interval of the difference from the best "
            "reaches zero is tied with it; among tied ones the lowest p99 wins, then fewer "
            "replicas, then the smaller batch timeout, then the smaller batch size."
        )
    if rec.runners_up and rec.chosen is not None:
        lines.append(_runner_up_text(rec.chosen, rec.runners_up[0], rec.mode))
    for name, base in rec.baselines.items():
        if base and base.differs:
            what = "unbatched" if name == "unbatched" else "TF Serving's default batching"
            lines.append(f"Against {what} ({base.base.key}): {_change(base.gain)} {_pname(base)}.")
    return lines


def _runner_up_text(chosen: Candidate, runner: Candidate, mode: Mode) -> str:
    figure = "max_rate_rps" if mode == "max_rate" else THROUGHPUT
    ours, theirs = figure_of(chosen, figure), figure_of(runner, figure)
    delta = ratio(ours, theirs)
    versus = f"{_change(delta)} {figure}" if delta is not None else "no comparable figure"
    return f"Runner-up: {describe_config(runner.point)} ({runner.key}); the choice has {versus}."


def _pname(base: Gain) -> str:
    p99 = base.p99_change
    p99_text = f", {_change(p99)} p99" if p99 is not None else ""
    return f"{base.figure}{p99_text}"


def _change(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1%}"


def _pct(value: float) -> str:
    return "an unmeasured amount" if value == float("inf") else f"{value:.0%}"


def _miss_name(miss: str) -> str:
    """A miss's name in words: a metric's header, with its model for a per-model miss."""
    metric_id, _, model = miss.partition(" (")
    if metric_id not in METRICS:
        return miss
    return metric(metric_id).header.lower() + (f" of {model.rstrip(')')}" if model else "")


def _protocol(point: Point) -> str:
    return "gRPC" if point.protocol == "grpc" else "REST"


def _num(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _value(value: object) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value).lower()
