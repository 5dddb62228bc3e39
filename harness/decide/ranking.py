"""The ranking: which configuration of a run is best, as a pure function of its points.

Only points that ran (``ok``), are valid and were judged stable count; the rest are listed with
why they were left out. Repeats of one configuration at one load are combined by their *worst*
figure per metric (lowest throughput, highest p99): a recommendation is a promise, and a
configuration that met the SLO in one repeat and missed it in the next has not earned it. Among
the combined candidates that meet every constraint, the best by the objective wins. When none
meets them all, candidates are ranked by their largest relative miss — how much the SLO would
have to be relaxed for each to pass. For ``find_max_rate`` runs, configurations are ranked by the
highest rate they sustained within the search's SLO (``max_rate.json``), worst repeat again.

``rank_run`` gives a :class:`Ranked`; the words about it are ``harness.decide.words``', the files
and command lines to deploy it ``harness.decide.deploy``'s.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from harness.decide.compare import samples_from_result
from harness.decide.ties import Decision, candidate_intervals, decide, interval_metrics
from harness.errors import UserError
from harness.metrics import METRICS, meets_bound, metric, slo_misses
from harness.plan.batching_fields import BatchingParams, runs_tfserving_defaults
from harness.plan.points import Point, ServerConfig, without_repeat
from harness.plan.spec import Objective, SweepSpec
from harness.store.results import PointResult

THROUGHPUT, P99 = "throughput_rps", "latency_p99_ms"

Status = Literal["met", "none_met", "no_candidates"]
Mode = Literal["grid", "max_rate"]


def exclusion_reason(result: PointResult) -> str | None:
    """Why a point cannot be recommended (failed, invalid, unstable); None when it counts."""
    if result.status != "ok":
        return f"failed: {result.reason or 'no reason recorded'}"
    if not result.valid:
        return "invalid: " + ("; ".join(result.invalid_reasons) or "no reason recorded")
    if not result.stable:
        verdict = result.stability or {}
        return f"{verdict.get('verdict', 'not judged')}: {verdict.get('reason', 'no verdict')}"
    return None


@dataclass(frozen=True)
class Constraint:
    """A bound on one metric: at most it (lower is better) or at least it (higher is better)."""

    metric_id: str
    bound: float

    @property
    def op(self) -> str:
        return ">=" if metric(self.metric_id).higher_is_better else "<="

    def as_dict(self) -> dict[str, Any]:
        label = metric(self.metric_id).label()
        return {"metric": self.metric_id, "label": label, "op": self.op, "bound": self.bound}


_CONSTRAINT = re.compile(r"^\s*([a-z0-9_]+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


def parse_constraint(text: str) -> tuple[str, float]:
    """``latency_p95_ms<=20`` → ``("latency_p95_ms", 20.0)``; the operator must match the
    metric's direction (a bound is a floor on what is better when higher, a ceiling otherwise)."""
    match = _CONSTRAINT.match(text)
    if not match:
        raise UserError(f"--constraint expects METRIC<=X or METRIC>=X, got {text!r}")
    metric_id, op, raw = match.groups()
    if metric_id not in METRICS:
        raise UserError(
            f"--constraint: unknown metric {metric_id!r}; valid metric IDs: {', '.join(METRICS)}"
        )
    try:
        bound = float(raw)
    except ValueError:
        raise UserError(f"--constraint {text!r}: {raw!r} is not a number") from None
    expected = ">=" if metric(metric_id).higher_is_better else "<="
    if op != expected:
        better = "higher" if expected == ">=" else "lower"
        raise UserError(
            f"--constraint {text!r}: {better} {metric_id} is better, so its bound is "
            f"{metric_id}{expected}X"
        )
    return metric_id, bound


def parse_objective(text: str) -> Objective:
    """``maximize:ID``, ``minimize:ID`` or ``weights:ID=W,ID=W`` (positive weights)."""
    kind, sep, rest = text.partition(":")
    try:
        if sep and kind in ("maximize", "minimize"):
            return Objective.model_validate({kind: rest})
        if sep and kind == "weights":
            pairs = [item.partition("=") for item in rest.split(",") if item]
            weights = {name.strip(): float(value) for name, eq, value in pairs if eq}
            if len(weights) != len(pairs) or not weights:
                raise ValueError("weights:ID=W,ID=W")
            return Objective.model_validate({"weights": weights})
    except ValidationError as exc:
        raise UserError(f"--objective {text!r}: {exc.errors()[0]['msg']}") from None
    except ValueError:
        pass
    raise UserError(
        f"--objective expects maximize:METRIC, minimize:METRIC or weights:METRIC=W,..., "
        f"got {text!r}"
    )


@dataclass
class Candidate:
    """One configuration at one load (repeats combined), or one configuration's max rate."""

    key: str
    point: Point  # the first repeat's point: the configuration, protocol and load
    point_keys: list[str]
    metrics: dict[str, float | None]
    misses: dict[str, float] = field(default_factory=dict)
    score: float | None = None
    max_rate_rps: float | None = None  # find_max_rate runs only

    @property
    def feasible(self) -> bool:
        return not self.misses

    @property
    def worst_miss(self) -> float:
        """The largest relative miss (0 when every constraint is met)."""
        return max(self.misses.values(), default=0.0)


def combine_worst(summaries: Sequence[Mapping[str, float | None]]) -> dict[str, float | None]:
    """Per metric, the worst value among repeats (None when any repeat lacks it)."""
    ids = [m for m in METRICS if any(m in s for s in summaries)]
    combined: dict[str, float | None] = {}
    for metric_id in ids:
        values = [s.get(metric_id) for s in summaries]
        if any(v is None or v != v for v in values):  # v != v: NaN
            combined[metric_id] = None
            continue
        worst = min if metric(metric_id).higher_is_better else max
        combined[metric_id] = worst(v for v in values if v is not None)
    return combined


def build_candidates(
    results: Iterable[PointResult], slo: Mapping[str, float]
) -> tuple[list[Candidate], list[dict[str, str]]]:
    """Counted points grouped by configuration and load; and the points left out, with why."""
    groups: dict[str, list[PointResult]] = {}
    excluded = []
    for result in results:
        reason = exclusion_reason(result)
        if reason is None:
            groups.setdefault(result.point.group_key, []).append(result)
        else:
            excluded.append({"key": result.key, "reason": reason})
    candidates = []
    for key, members in groups.items():
        members.sort(key=lambda r: r.point.repeat)
        metrics = combine_worst([m.metrics for m in members])
        candidate = Candidate(key, members[0].point, [m.key for m in members], metrics)
        candidate.misses = slo_misses(metrics, slo) | model_misses(members, slo)
        candidates.append(candidate)
    return candidates, excluded


def model_misses(members: Sequence[PointResult], slo: Mapping[str, float]) -> dict[str, float]:
    """A multi-model point's misses model by model (``latency_p99_ms (synthetic)``): each
    model's requests must meet the SLO's bounds on latency and errors too, or a busy model's
    requests would hide a slow one's. Bounds on totals (throughput) stay with all requests."""
    per_request = {m: bound for m, bound in slo.items() if not metric(m).higher_is_better}
    figures: dict[str, list[Mapping[str, float | None]]] = {}
    for member in members:
        for entry in member.by_model:
            figures.setdefault(entry["model"], []).append(entry["metrics"])
    misses = {}
    for model, summaries in sorted(figures.items()):
        for metric_id, miss in slo_misses(combine_worst(summaries), per_request).items():
            misses[f"{metric_id} ({model})"] = miss
    return misses


def score_candidates(candidates: Sequence[Candidate], objective: Objective) -> None:
    """Set each candidate's score (higher is better) under the objective."""
    if objective.maximize or objective.minimize:
        metric_id = objective.maximize or objective.minimize or ""
        sign = 1.0 if objective.maximize else -1.0
        for c in candidates:
            value = c.metrics.get(metric_id)
            c.score = None if value is None else sign * value
        return
    # Weighted: each metric as a share of the best candidate's value (best = 1), so weights are
    # plain importances and units (req/s against ms) do not decide the outcome.
    weights = objective.weights or {}
    bad = [k for k, w in weights.items() if w <= 0]
    if bad:
        raise UserError(
            f"objective weights must be > 0 (got {bad[0]}: {weights[bad[0]]}); whether higher "
            "or lower is better comes from the metric itself"
        )
    best = {m: _best_value(candidates, m) for m in weights}
    for c in candidates:
        shares = [(w, _share(c.metrics.get(m), best[m], m)) for m, w in weights.items()]
        terms = [w * share for w, share in shares if share is not None]
        c.score = sum(terms) if len(terms) == len(shares) else None


def _best_value(candidates: Sequence[Candidate], metric_id: str) -> float | None:
    values = [c.metrics.get(metric_id) for c in candidates]
    present = [v for v in values if v is not None]
    if not present:
        return None
    return max(present) if metric(metric_id).higher_is_better else min(present)


def _share(value: float | None, best: float | None, metric_id: str) -> float | None:
    if value is None or best is None:
        return None
    high, low = (value, best) if metric(metric_id).higher_is_better else (best, value)
    if low == 0:
        return 1.0 if high == 0 else 0.0
    return high / low


def rank(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Feasible first, best score first; then the rest by smallest largest-miss, then score."""
    feasible = sorted(
        (c for c in candidates if c.feasible),
        key=lambda c: (c.score is None, -(c.score or 0.0), _p99(c)),
    )
    missing = sorted(
        (c for c in candidates if not c.feasible),
        key=lambda c: (c.worst_miss, sum(c.misses.values()), -(c.score or 0.0)),
    )
    return feasible + missing


def _p99(candidate: Candidate) -> float:
    value = candidate.metrics.get(P99)
    return float("inf") if value is None else value


def pareto_front(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Candidates no other beats on both throughput (higher) and p99 (lower); by throughput."""
    points = [c for c in candidates if c.metrics.get(THROUGHPUT) is not None and c.metrics.get(P99)]
    front = [c for c in points if not any(_dominates(o, c) for o in points)]
    return sorted(front, key=lambda c: (c.metrics[THROUGHPUT], c.key))


def _dominates(a: Candidate, b: Candidate) -> bool:
    ta, tb, pa, pb = a.metrics[THROUGHPUT], b.metrics[THROUGHPUT], a.metrics[P99], b.metrics[P99]
    if ta is None or tb is None or pa is None or pb is None:
        return False  # the front is built from points with both figures
    return ta >= tb and pa <= pb and (ta > tb or pa < pb)


def max_rate_candidates(
    searches: Sequence[Mapping[str, Any]], by_key: Mapping[str, PointResult]
) -> list[Candidate]:
    """One candidate per configuration and protocol: its max rate, worst over repeats.

    A configuration whose search found no passing rate (in any repeat) carries the misses of
    its closest probe, so it can still be ranked by how far it missed.
    """
    lanes: dict[str, list[Mapping[str, Any]]] = {}
    for search in searches:
        lane = without_repeat(search["lane_key"])
        lanes.setdefault(lane, []).append(search)
    return [_lane_candidate(key, group, by_key) for key, group in lanes.items()]


def _lane_candidate(
    key: str, searches: Sequence[Mapping[str, Any]], by_key: Mapping[str, PointResult]
) -> Candidate:
    rates = [s.get("max_rate_rps") for s in searches]
    found = all(r is not None for r in rates)
    probes = [_chosen_probe(s) for s in searches]
    points = [by_key[p["key"]] for p in probes if p and p["key"] in by_key]
    metrics = combine_worst([p.metrics for p in points]) if points else {}
    first = points[0].point if points else _lane_point(searches[0])
    candidate = Candidate(key, first, [p.key for p in points], metrics)
    if found:
        candidate.max_rate_rps = min(rate for rate in rates if rate is not None)
        candidate.score = candidate.max_rate_rps
    else:
        candidate.misses = _closest_misses(searches)
    return candidate


def _chosen_probe(search: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The probe at the search's max rate; the closest miss when nothing passed."""
    probes = search.get("probes") or []
    passing = [p for p in probes if p.get("passed") and p["rate"] == search.get("max_rate_rps")]
    if passing:
        return passing[0]
    return min(probes, key=lambda p: max(p["misses"].values(), default=0), default=None)


def _closest_misses(searches: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    for search in searches:
        if search.get("max_rate_rps") is None:
            probe = _chosen_probe(search)
            return dict(probe["misses"]) if probe else {"failed": float("inf")}
    return {}


def _lane_point(search: Mapping[str, Any]) -> Point:
    server = ServerConfig.from_dict(search["server"])
    rate = search.get("max_rate_rps") or 0.0
    return Point(server, "rate", rate, search["protocol"], search.get("repeat", 0))


@dataclass(frozen=True)
class Ranked:
    """A run's candidates ranked under constraints and an objective, and what the choice beat."""

    mode: Mode
    status: Status
    constraints: list[Constraint]
    objective: Objective
    chosen: Candidate | None
    runners_up: list[Candidate]
    ranking: list[Candidate]
    excluded: list[dict[str, str]]
    pareto: list[Candidate]
    baselines: dict[str, Gain | None]
    margins: list[dict[str, Any]]
    decision: Decision | None = None  # ties and margins (grid runs, single-metric objective)
    confirmed: bool = False  # the points are a confirmation run's (harness.sweep.confirm)


def rank_run(
    results: Sequence[PointResult],
    searches: Sequence[Mapping[str, Any]] | None,
    environment: Mapping[str, Any],
    slo: Mapping[str, float],
    objective: Objective,
    top: int = 3,
    *,
    confirmed: bool = False,
) -> Ranked:
    """Rank a run's points (or, with ``searches``, its max-rate searches) under ``slo`` and
    ``objective``; ``top`` is how many runners-up to name (the best of each other configuration).
    A grid run's feasible candidates also get the tie analysis (harness.decide.ties), and the
    tie-break's pick leads the ranking; ``confirmed``: the points are a confirmation's rounds,
    so differences are paired by round.
    """
    constraints = [Constraint(k, v) for k, v in slo.items()]
    candidates, excluded = build_candidates(results, slo)
    score_candidates([c for c in candidates if c.feasible] or candidates, objective)
    mode: Mode = "max_rate" if searches is not None else "grid"
    ranked = rank(candidates)
    decision = None
    if searches is not None:
        ranked = rank(max_rate_candidates(searches, {r.key: r for r in results}))
    else:
        decision = decide_ties(ranked, results, slo, objective, paired=confirmed)
        ranked = _chosen_first(ranked, decision)
    chosen = ranked[0] if ranked else None
    status: Status = "no_candidates" if chosen is None else "met" if chosen.feasible else "none_met"
    return Ranked(
        mode=mode,
        status=status,
        constraints=constraints,
        objective=objective,
        chosen=chosen,
        runners_up=runners_up(ranked, top),
        ranking=ranked,
        excluded=excluded,
        pareto=pareto_front(candidates),
        baselines=compare_baselines(chosen, candidates, ranked, mode, environment),
        margins=margins(chosen, constraints) if chosen else [],
        decision=decision,
        confirmed=confirmed,
    )


def decide_ties(
    ranked: Sequence[Candidate],
    results: Sequence[PointResult],
    slo: Mapping[str, float],
    objective: Objective,
    *,
    paired: bool,
) -> Decision | None:
    """Give every candidate its intervals and run the tie analysis on the feasible ones; None
    for a weighted objective (no single figure to compare)."""
    by_key = {r.key: samples_from_result(r) for r in results}
    members = {c.key: [by_key[k] for k in c.point_keys] for c in ranked}
    for c in ranked:
        c.metrics.update(interval_metrics(candidate_intervals(c.key, members[c.key])))
    metric_id = objective.maximize or objective.minimize
    if metric_id is None:
        return None
    feasible = [c for c in ranked if c.feasible]
    higher = objective.maximize is not None
    return decide(feasible, members, metric_id, slo, higher_is_better=higher, paired=paired)


def _chosen_first(ranked: list[Candidate], decision: Decision | None) -> list[Candidate]:
    """The ranking with the tie-break's pick moved to the front."""
    if decision is None or decision.chosen == ranked[0].key:
        return ranked
    return sorted(ranked, key=lambda c: c.key != decision.chosen)


def default_slo(spec: SweepSpec) -> dict[str, float]:
    """The spec's constraints: a max-rate search's SLO, then ``recommend.slo`` over it."""
    search = spec.load.find_max_rate
    return {**(search.slo if search else {}), **spec.recommend.slo}


def runners_up(ranked: Sequence[Candidate], top: int) -> list[Candidate]:
    """The best candidate of each other configuration (and protocol), in rank order."""
    if not ranked:
        return []
    seen = {_config_of(ranked[0])}
    out: list[Candidate] = []
    for candidate in ranked[1:]:
        if _config_of(candidate) not in seen and len(out) < top:
            seen.add(_config_of(candidate))
            out.append(candidate)
    return out


def _config_of(candidate: Candidate) -> tuple[str, str]:
    return candidate.point.server.key, candidate.point.protocol


def margins(chosen: Candidate, constraints: Sequence[Constraint]) -> list[dict[str, Any]]:
    """Per constraint: the chosen value, the bound, and the headroom (negative: a miss)."""
    out = []
    for c in constraints:
        value = chosen.metrics.get(c.metric_id)
        headroom = None
        if value is not None and c.bound != 0:
            gap = value - c.bound if metric(c.metric_id).higher_is_better else c.bound - value
            headroom = gap / abs(c.bound)
        met = meets_bound(c.metric_id, value, c.bound)
        out.append({**c.as_dict(), "value": value, "headroom": headroom, "met": met})
    return out


def is_tfserving_default(batching: BatchingParams | None, cpu_count: int | None) -> bool:
    """True for batching on with TF Serving's default parameters (set explicitly or not)."""
    return batching is not None and runs_tfserving_defaults(batching, cpu_count)


def compare_baselines(
    chosen: Candidate | None,
    candidates: Sequence[Candidate],
    ranked: Sequence[Candidate],
    mode: Mode,
    environment: Mapping[str, Any],
) -> dict[str, Gain | None]:
    """The chosen candidate against the unbatched baseline and TF Serving's default batching,
    at the same replicas, protocol and load (same replicas and protocol for max-rate runs)."""
    out: dict[str, Gain | None] = {"unbatched": None, "tfserving_default": None}
    if chosen is None:
        return out
    pool = ranked if mode == "max_rate" else candidates
    cpus = environment.get("cpu_count")
    tests = {
        "unbatched": lambda c: c.point.batching is None,
        "tfserving_default": lambda c: is_tfserving_default(c.point.batching, cpus),
    }
    for name, test in tests.items():
        match = [c for c in pool if test(c) and _same_setting(c, chosen, mode)]
        if match:
            out[name] = _gain(chosen, match[0], mode)
    return out


def _same_setting(a: Candidate, b: Candidate, mode: Mode) -> bool:
    same = a.point.replicas == b.point.replicas and a.point.protocol == b.point.protocol
    same = same and a.point.traffic == b.point.traffic  # gains under the same traffic only
    if mode == "max_rate":
        return same
    return same and a.point.load_kind == b.point.load_kind and a.point.load == b.point.load


@dataclass(frozen=True)
class Gain:
    """The chosen candidate against a reference (``base``) on the run's figure and on p99."""

    base: Candidate
    same_as_chosen: bool
    figure: str  # throughput_rps, or max_rate_rps for max-rate runs
    chosen_value: float | None
    baseline_value: float | None
    chosen_p99_ms: float | None
    baseline_p99_ms: float | None

    @property
    def gain(self) -> float | None:
        return ratio(self.chosen_value, self.baseline_value)

    @property
    def p99_change(self) -> float | None:
        return ratio(self.chosen_p99_ms, self.baseline_p99_ms)

    @property
    def differs(self) -> bool:
        """A reference other than the choice itself, with a comparable figure."""
        return self.gain is not None and not self.same_as_chosen


def _gain(chosen: Candidate, base: Candidate, mode: Mode) -> Gain:
    figure = "max_rate_rps" if mode == "max_rate" else THROUGHPUT
    return Gain(
        base=base,
        same_as_chosen=base.key == chosen.key,
        figure=figure,
        chosen_value=figure_of(chosen, figure),
        baseline_value=figure_of(base, figure),
        chosen_p99_ms=chosen.metrics.get(P99),
        baseline_p99_ms=base.metrics.get(P99),
    )


def figure_of(candidate: Candidate, figure: str) -> float | None:
    return candidate.max_rate_rps if figure == "max_rate_rps" else candidate.metrics.get(figure)


def ratio(new: float | None, old: float | None) -> float | None:
    """Relative change ``new / old - 1`` (0.42 = 42% more); None when undefined."""
    if new is None or old is None or old == 0:
        return None
    return new / old - 1


def merged_slo(
    spec_slo: Mapping[str, float],
    *,
    p99_ms: float | None = None,
    error_rate: float | None = None,
    constraints: Iterable[str] = (),
) -> dict[str, float]:
    """The spec's constraints, overridden per metric by the command line's."""
    slo = dict(spec_slo)
    if p99_ms is not None:
        slo[P99] = p99_ms
    if error_rate is not None:
        slo["error_rate"] = error_rate
    slo.update(parse_constraint(text) for text in constraints)
    return slo
