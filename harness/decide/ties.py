"""Ties and margins: which feasible configurations the data cannot tell apart, and which to pick.

A recommendation is a comparison, and a lead smaller than the noise is no lead. For the
objective's metric, each feasible candidate's figure is compared with the best one's: the 95%
interval of the relative difference (harness.decide.stats) — paired by round when the figures
come from a confirmation run (every candidate measured in every round), a two-level bootstrap
over repeats and windows otherwise. A candidate whose interval reaches the best's side of zero
is *tied* with it. Among the tied set the pick follows a fixed rule that favours the cheaper,
calmer setting: lower p99, then fewer replicas, then the smaller batch timeout, then the
smaller batch size (batching off counts as 0 for both). A candidate whose interval of a
constrained figure straddles the bound (a p99 interval around the SLO) is *marginal*: it met
the bound on its estimate, but the data cannot promise it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from harness.decide.compare import PointSamples, repeat_of
from harness.decide.stats import (
    Change,
    Interval,
    bootstrap_change,
    interval,
    paired_change,
    seed_for,
    tie_set,
)
from harness.metrics import INTERVAL_METRICS, interval_ids
from harness.plan.batching_fields import BATCH_TIMEOUT_MICROS, MAX_BATCH_SIZE
from harness.plan.points import Point

P99 = "latency_p99_ms"
Verdict = Literal["clear_winner", "tie", "single", "not_assessed"]


class Contender(Protocol):
    """What the tie analysis needs of a candidate (the recommender's Candidate has it)."""

    key: str
    point: Point
    metrics: dict[str, float | None]


@dataclass
class Decision:
    """The outcome: the tied set, the pick and why, each candidate's intervals and margins."""

    metric_id: str
    best: str  # best by the objective's estimate
    chosen: str  # the tie-break's pick among ``tied``
    tied: list[str]
    verdict: Verdict
    because: str
    paired: bool
    changes: dict[str, Change | None] = field(default_factory=dict)
    intervals: dict[str, dict[str, Interval]] = field(default_factory=dict)
    marginal: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "metric": self.metric_id,
            "best_by_estimate": self.best,
            "chosen": self.chosen,
            "tied": self.tied,
            "because": self.because,
            "paired_by_round": self.paired,
            "changes_vs_best": {k: c.as_dict() if c else None for k, c in self.changes.items()},
            "intervals": {
                key: {
                    m: {"estimate": i.estimate, "low": i.low, "high": i.high}
                    for m, i in ivs.items()
                }
                for key, ivs in self.intervals.items()
            },
            "marginal": self.marginal,
        }


def samples_by_repeat(members: Sequence[PointSamples], metric_id: str) -> dict[int, list[float]]:
    """The used windows' values of each repeat (or round), by its index."""
    return {repeat_of(p.key): s for p in members if (s := p.samples(metric_id))}


def candidate_intervals(key: str, members: Sequence[PointSamples]) -> dict[str, Interval]:
    """95% intervals of every interval metric, over the candidate's repeats and windows."""
    out = {}
    for metric_id in INTERVAL_METRICS:
        groups = list(samples_by_repeat(members, metric_id).values())
        found = interval(groups, seed=seed_for(key, metric_id))
        if found is not None:
            out[metric_id] = found
    return out


def interval_metrics(intervals: Mapping[str, Interval]) -> dict[str, float]:
    """The registry's interval-end figures (``throughput_ci_low_rps`` ...) for a candidate."""
    out = {}
    for metric_id, found in intervals.items():
        low, high = interval_ids(metric_id)
        out[low], out[high] = found.low, found.high
    return out


def difference(
    key: str,
    best: Sequence[PointSamples],
    other: Sequence[PointSamples],
    metric_id: str,
    paired: bool,
) -> Change | None:
    """The other candidate's figure relative to the best's, with its 95% interval."""
    b, o = samples_by_repeat(best, metric_id), samples_by_repeat(other, metric_id)
    if paired:
        rounds = sorted(set(b) & set(o))
        means = [[sum(b[r]) / len(b[r]) for r in rounds], [sum(o[r]) / len(o[r]) for r in rounds]]
        change = paired_change(*means)
        if change is not None:
            return change
    if not b or not o:
        return None
    return bootstrap_change(list(b.values()), list(o.values()), seed=seed_for(key, metric_id))


def marginal_bounds(
    intervals: Mapping[str, Interval], slo: Mapping[str, float]
) -> list[dict[str, Any]]:
    """The constraints whose bound lies inside the candidate's interval of that figure."""
    return [
        {"metric": m, "bound": bound, "low": intervals[m].low, "high": intervals[m].high}
        for m, bound in slo.items()
        if m in intervals and intervals[m].straddles(bound)
    ]


def tie_break_key(candidate: Contender) -> tuple[float, int, int, int]:
    """Lower p99, then fewer replicas, then smaller batch timeout, then smaller batch size."""
    p99 = candidate.metrics.get(P99)
    batching = candidate.point.batching
    timeout = (BATCH_TIMEOUT_MICROS.of(batching) or 0) if batching else 0
    size = (MAX_BATCH_SIZE.of(batching) or 0) if batching else 0
    return (float("inf") if p99 is None else p99, candidate.point.replicas, timeout, size)


def decide(
    feasible: Sequence[Contender],
    members: Mapping[str, Sequence[PointSamples]],
    metric_id: str,
    slo: Mapping[str, float],
    *,
    higher_is_better: bool,
    paired: bool = False,
) -> Decision | None:
    """The tie analysis of ``feasible`` candidates (best by the objective first) on
    ``metric_id``, better when higher or lower as the objective says (it may minimise a
    metric whose registry direction is "higher"); None when there is no candidate."""
    if not feasible:
        return None
    best = feasible[0]
    changes = {
        c.key: difference(c.key, members[best.key], members[c.key], metric_id, paired)
        for c in feasible[1:]
    }
    tied_keys = tie_set(best.key, changes, higher_is_better)
    tied = [c for c in feasible if c.key in tied_keys]
    chosen = min(tied, key=tie_break_key)
    intervals = {c.key: candidate_intervals(c.key, members[c.key]) for c in feasible}
    decision = Decision(
        metric_id,
        best.key,
        chosen.key,
        [c.key for c in sorted(tied, key=tie_break_key)],
        _verdict(len(feasible), len(tied)),
        tie_reason(chosen, tied),
        paired,
        changes,
        intervals,
    )
    decision.marginal = {
        key: found for key, ivs in intervals.items() if (found := marginal_bounds(ivs, slo))
    }
    return decision


def _verdict(feasible: int, tied: int) -> Verdict:
    if feasible == 1:
        return "single"
    return "clear_winner" if tied == 1 else "tie"


def tie_reason(chosen: Contender, tied: Sequence[Contender]) -> str:
    """Why the tie-break picked ``chosen``: the first rule that separated it from the others."""
    if len(tied) == 1:
        return "it is ahead of every other candidate beyond the noise"
    names = ("the lowest p99", "the fewest replicas", "the smallest batch timeout")
    mine = tie_break_key(chosen)
    others = [tie_break_key(c) for c in tied if c is not chosen]
    for i, name in enumerate((*names, f"the smallest {MAX_BATCH_SIZE.name}")):
        if all(o[:i] != mine[:i] or o[i] > mine[i] for o in others):
            value = f" ({mine[0]:.3g} ms)" if i == 0 else ""
            return f"it has {name}{value} of the tied set"
    return "it is first by the tie-break rule"


# --- words ----------------------------------------------------------------------------------------


def decision_text(decision: Decision) -> str:
    """The verdict in a sentence or two, with the intervals behind it."""
    m = decision.metric_id
    if decision.verdict == "single":
        figure = _interval_text(decision, decision.chosen, m)
        text = f"The only configuration meeting the constraints ({figure})."
    elif decision.verdict == "clear_winner":
        runner = _runner_up(decision)
        versus = ""
        if runner is not None and (change := decision.changes.get(runner)) is not None:
            versus = f"; the runner-up {runner} is {_signed(change.change)} ({_ci(change)})"
        text = (
            f"Clear winner at 95% on {m}: {_interval_text(decision, decision.chosen, m)}{versus}."
        )
    else:
        members = ", ".join(f"{k} {_interval_text(decision, k, m)}" for k in decision.tied)
        text = (
            f"{len(decision.tied)} configurations tie at 95% on {m} ({members}); chose "
            f"{decision.chosen} because {decision.because}."
        )
    return text + "".join(
        f" Marginal: its {b['metric']} 95% CI {_n(b['low'])}..{_n(b['high'])} straddles the "
        f"bound {_n(b['bound'])}, so the data cannot promise it."
        for b in decision.marginal.get(decision.chosen, [])
    )


def _runner_up(decision: Decision) -> str | None:
    others = {k: abs(c.change) for k, c in decision.changes.items() if c is not None}
    return min(others, key=others.__getitem__) if others else None


def _interval_text(decision: Decision, key: str, metric_id: str) -> str:
    found = decision.intervals.get(key, {}).get(metric_id)
    if found is None:
        return "no interval"
    return f"{_n(found.estimate)} (95% CI {_n(found.low)}..{_n(found.high)})"


def _ci(change: Change) -> str:
    kind = "paired over rounds" if change.paired else "bootstrap"
    return f"95% CI {_signed(change.low)}..{_signed(change.high)}, {kind}"


def _signed(value: float) -> str:
    return f"{value:+.1%}"


def _n(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
