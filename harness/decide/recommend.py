"""The recommendation: which server configuration to run, and the files and commands to run it.

A pure ranking of a run's points. Only points that ran (``ok``), are valid and were judged
stable count; the rest are listed with why they were left out. Repeats of one configuration at
one load are combined by their *worst* figure per metric (lowest throughput, highest p99):
a recommendation is a promise, and a configuration that met the SLO in one repeat and missed it
in the next has not earned it. Among the combined candidates that meet every constraint, the
best by the objective wins. When none meets them all, candidates are ranked by their largest
relative miss — how much the SLO would have to be relaxed for each to pass — and the
recommendation says so plainly. For ``find_max_rate`` runs, configurations are ranked by the
highest rate they sustained within the search's SLO (``max_rate.json``), worst repeat again.

``recommend(run)`` builds a :class:`Recommendation`; ``write_recommendation`` puts
``recommendation.json`` and ``batching_parameters.txt`` into the run folder.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from harness.errors import UserError
from harness.metrics import METRICS, meets_bound, metric, slo_misses
from harness.models import zoo as model_zoo
from harness.plan.batching_fields import runs_tfserving_defaults
from harness.plan.batching_file import BatchingParams, format_batching
from harness.plan.points import Point, ServerConfig, format_number
from harness.plan.spec import Objective, SweepSpec, validate_spec
from harness.servers.replicas import replica_flags
from harness.store.results import PointResult, ResultStore, read_json, write_atomically, write_json

RECOMMENDATION_FILE = "recommendation.json"
BATCHING_FILE = "batching_parameters.txt"
MAX_RATE_FILE = "max_rate.json"
THROUGHPUT, P99 = "throughput_rps", "latency_p99_ms"
# Ports of the printed command lines: replica i serves gRPC on 8500 + 2i and REST on 8501 + 2i.
GRPC_PORT, REST_PORT = 8500, 8501

Status = Literal["met", "none_met", "no_candidates"]
Mode = Literal["grid", "max_rate"]


# --- the run, as the recommender sees it ---------------------------------------------------------


@dataclass
class RunData:
    """What the recommender reads from a run folder (or a caller builds in memory)."""

    spec: SweepSpec
    results: list[PointResult]
    run_id: str = ""
    environment: dict[str, Any] = field(default_factory=dict)
    searches: list[dict[str, Any]] | None = None  # max_rate.json's "searches", if any
    root: Path | None = None


def load_run(run_dir: Path | str) -> RunData:
    """Read a run folder: its spec (validated again), point results and max-rate searches."""
    store = ResultStore.open(Path(run_dir))
    info = store.run_info()
    spec = validate_spec(info.get("spec"), source=f"{store.run_file} (spec)")
    searches = None
    if (store.root / MAX_RATE_FILE).is_file():
        searches = read_json(store.root / MAX_RATE_FILE).get("searches", [])
    return RunData(
        spec=spec,
        results=store.load_points(),
        run_id=info.get("run_id", store.root.name),
        environment=info.get("environment") or {},
        searches=searches,
        root=store.root,
    )


def group_key(point: Point) -> str:
    """The point's key without its repeat: repeats of one configuration at one load share it."""
    return point.key.removesuffix(f"-rep{point.repeat}")


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


# --- constraints and objective -------------------------------------------------------------------


@dataclass(frozen=True)
class Constraint:
    """A bound on one metric: at most it (lower is better) or at least it (higher is better)."""

    metric_id: str
    bound: float

    @property
    def op(self) -> str:
        return ">=" if metric(self.metric_id).higher_is_better else "<="

    def text(self) -> str:
        m = metric(self.metric_id)
        sign = "≥" if m.higher_is_better else "≤"
        unit = f" {m.unit}" if m.unit else ""
        return f"{m.header.lower()} {sign} {_num(self.bound)}{unit}"

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


def objective_text(objective: Objective) -> str:
    if objective.maximize:
        return f"maximise {objective.maximize}"
    if objective.minimize:
        return f"minimise {objective.minimize}"
    weights = ", ".join(f"{k}×{_num(w)}" for k, w in (objective.weights or {}).items())
    return f"weighted ({weights}; each metric scaled to the best candidate)"


def _objective_dict(objective: Objective) -> dict[str, Any]:
    return {k: v for k, v in objective.model_dump().items() if v is not None}


# --- candidates ----------------------------------------------------------------------------------


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

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "config_key": self.point.server.key,
            "server": self.point.server.as_dict(),
            "protocol": self.point.protocol,
            "load_kind": self.point.load_kind,
            "load": self.point.load,
            "point_keys": self.point_keys,
            "repeats": len(self.point_keys),
            "metrics": self.metrics,
            "meets_constraints": self.feasible,
            "misses": self.misses,
            "worst_miss": self.worst_miss,
            "score": self.score,
            "max_rate_rps": self.max_rate_rps,
            "description": describe_config(self.point),
        }


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
        combined[metric_id] = worst(values)  # type: ignore[type-var]
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
            groups.setdefault(group_key(result.point), []).append(result)
        else:
            excluded.append({"key": result.key, "reason": reason})
    candidates = []
    for key, members in groups.items():
        members.sort(key=lambda r: r.point.repeat)
        metrics = combine_worst([m.metrics for m in members])
        candidate = Candidate(key, members[0].point, [m.key for m in members], metrics)
        candidate.misses = slo_misses(metrics, slo)
        candidates.append(candidate)
    return candidates, excluded


def score_candidates(candidates: Sequence[Candidate], objective: Objective) -> None:
    """Set each candidate's score (higher is better) under the objective."""
    if objective.maximize or objective.minimize:
        metric_id = objective.maximize or objective.minimize
        sign = 1.0 if objective.maximize else -1.0
        for c in candidates:
            value = c.metrics.get(metric_id)  # type: ignore[arg-type]
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
        terms = [w * _share(c.metrics.get(m), best[m], m) for m, w in weights.items()]
        c.score = None if any(t is None for t in terms) else sum(terms)  # type: ignore[misc]


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
    return ta >= tb and pa <= pb and (ta > tb or pa < pb)  # type: ignore[operator]


# --- max-rate runs -------------------------------------------------------------------------------


def max_rate_candidates(
    searches: Sequence[Mapping[str, Any]], by_key: Mapping[str, PointResult]
) -> list[Candidate]:
    """One candidate per configuration and protocol: its max rate, worst over repeats.

    A configuration whose search found no passing rate (in any repeat) carries the misses of
    its closest probe, so it can still be ranked by how far it missed.
    """
    lanes: dict[str, list[Mapping[str, Any]]] = {}
    for search in searches:
        lane = re.sub(r"-rep\d+$", "", search["lane_key"])
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
        candidate.max_rate_rps = min(rates)  # type: ignore[type-var]
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


# --- the recommendation --------------------------------------------------------------------------


@dataclass
class Recommendation:
    """The ranked outcome of a run. ``as_dict()`` is ``recommendation.json``."""

    run_id: str
    mode: Mode
    status: Status
    constraints: list[Constraint]
    objective: Objective
    sentence: str
    chosen: Candidate | None
    runners_up: list[Candidate]
    ranking: list[Candidate]
    excluded: list[dict[str, str]]
    pareto: list[Candidate]
    baselines: dict[str, Any]
    why: list[str]
    margins: list[dict[str, Any]]
    batching_text: str | None = None
    commands: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "mode": self.mode,
            "status": self.status,
            "sentence": self.sentence,
            "constraints": [c.as_dict() for c in self.constraints],
            "objective": _objective_dict(self.objective),
            "chosen": self.chosen.as_dict() if self.chosen else None,
            "margins": self.margins,
            "why": self.why,
            "runners_up": [c.as_dict() for c in self.runners_up],
            "baselines": self.baselines,
            "pareto_front": [_pareto_entry(c) for c in self.pareto],
            "ranking": [c.as_dict() for c in self.ranking],
            "excluded": self.excluded,
            "batching_parameters": self.batching_text,
            "commands": self.commands,
        }


def recommend(
    run: RunData | Path | str,
    *,
    slo: Mapping[str, float] | None = None,
    objective: Objective | None = None,
    top: int = 3,
) -> Recommendation:
    """Rank a run (a folder, or a :class:`RunData`) and pick the configuration to deploy.

    ``slo`` (metric ID → bound) and ``objective`` default to the spec's ``recommend`` section;
    ``top`` is how many runners-up to name (the best of each other configuration).
    """
    data = run if isinstance(run, RunData) else load_run(run)
    slo = dict(default_slo(data.spec) if slo is None else slo)
    objective = objective or data.spec.recommend.objective
    constraints = [Constraint(k, v) for k, v in slo.items()]
    candidates, excluded = build_candidates(data.results, slo)
    score_candidates([c for c in candidates if c.feasible] or candidates, objective)
    mode: Mode = "max_rate" if data.searches is not None else "grid"
    ranked = rank(candidates)
    if mode == "max_rate":
        by_key = {r.key: r for r in data.results}
        ranked = rank(max_rate_candidates(data.searches or [], by_key))
    chosen = ranked[0] if ranked else None
    status: Status = "no_candidates" if chosen is None else "met" if chosen.feasible else "none_met"
    baselines = compare_baselines(chosen, candidates, ranked, mode, data.environment)
    rec = Recommendation(
        run_id=data.run_id,
        mode=mode,
        status=status,
        constraints=constraints,
        objective=objective,
        sentence="",
        chosen=chosen,
        runners_up=runners_up(ranked, top),
        ranking=ranked,
        excluded=excluded,
        pareto=pareto_front(candidates),
        baselines=baselines,
        why=[],
        margins=margins(chosen, constraints) if chosen else [],
    )
    rec.sentence = sentence(rec, len(data.results))
    rec.why = reasons(rec, data.spec)
    if chosen is not None and data.spec.target.kind != "external":
        rec.batching_text = batching_text(chosen, rec)
        rec.commands = server_commands(chosen.point, data.spec, data.root, data.environment)
    return rec


def default_slo(spec: SweepSpec) -> dict[str, float]:
    """The spec's constraints: a max-rate search's SLO, then ``recommend.slo`` over it."""
    search = spec.load.find_max_rate
    return {**(search.slo if search else {}), **spec.recommend.slo}


def runners_up(ranked: Sequence[Candidate], top: int) -> list[Candidate]:
    """The best candidate of each other configuration (and protocol), in rank order."""
    if not ranked:
        return []
    seen = {_config_of(ranked[0])}
    out = []
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


def _pareto_entry(candidate: Candidate) -> dict[str, Any]:
    return {
        "key": candidate.key,
        "description": describe_config(candidate.point),
        THROUGHPUT: candidate.metrics.get(THROUGHPUT),
        P99: candidate.metrics.get(P99),
        "meets_constraints": candidate.feasible,
    }


# --- baselines -----------------------------------------------------------------------------------


def is_tfserving_default(batching: BatchingParams | None, cpu_count: int | None) -> bool:
    """True for batching on with TF Serving's default parameters (set explicitly or not)."""
    return batching is not None and runs_tfserving_defaults(batching, cpu_count)


def compare_baselines(
    chosen: Candidate | None,
    candidates: Sequence[Candidate],
    ranked: Sequence[Candidate],
    mode: Mode,
    environment: Mapping[str, Any],
) -> dict[str, Any]:
    """The chosen candidate against the unbatched baseline and TF Serving's default batching,
    at the same replicas, protocol and load (same replicas and protocol for max-rate runs)."""
    out: dict[str, Any] = {"unbatched": None, "tfserving_default": None}
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
    if mode == "max_rate":
        return same
    return same and a.point.load_kind == b.point.load_kind and a.point.load == b.point.load


def _gain(chosen: Candidate, base: Candidate, mode: Mode) -> dict[str, Any]:
    figure = "max_rate_rps" if mode == "max_rate" else THROUGHPUT
    ours, theirs = _figure(chosen, figure), _figure(base, figure)
    p99_ours, p99_theirs = chosen.metrics.get(P99), base.metrics.get(P99)
    return {
        "key": base.key,
        "description": describe_config(base.point),
        "same_as_chosen": base.key == chosen.key,
        "meets_constraints": base.feasible,
        "figure": figure,
        "chosen_value": ours,
        "baseline_value": theirs,
        "gain": _ratio(ours, theirs),
        "chosen_p99_ms": p99_ours,
        "baseline_p99_ms": p99_theirs,
        "p99_change": _ratio(p99_ours, p99_theirs),
    }


def _figure(candidate: Candidate, figure: str) -> float | None:
    return candidate.max_rate_rps if figure == "max_rate_rps" else candidate.metrics.get(figure)


def _ratio(new: float | None, old: float | None) -> float | None:
    """Relative change ``new / old - 1`` (0.42 = 42% more); None when undefined."""
    if new is None or old is None or old == 0:
        return None
    return new / old - 1


# --- words ---------------------------------------------------------------------------------------


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
        params = ", ".join(f"{k}={_value(v)}" for k, v in batching.as_dict().items())
    replicas = f"{point.replicas} replica{'s' if point.replicas != 1 else ''}"
    return f"{params}, {replicas}"


def describe_load(point: Point) -> str:
    protocol = "gRPC" if point.protocol == "grpc" else "REST"
    if point.load_kind == "concurrency":
        return f"{format_number(point.load)} concurrent {protocol} clients"
    return f"{format_number(point.load)} req/s offered over {protocol} (open loop)"


def sentence(rec: Recommendation, total_points: int) -> str:
    """The recommendation in one sentence."""
    chosen = rec.chosen
    if chosen is None:
        return (
            f"No configuration can be recommended: all {total_points} point(s) were left out "
            "(failed, invalid or unstable); see `excluded`."
        )
    slo = " and ".join(c.text() for c in rec.constraints) or "no constraints"
    figures = _figures_text(chosen, rec.mode)
    if not chosen.feasible:
        missed = ", ".join(f"{_miss_name(k)} by {_pct(v)}" for k, v in chosen.misses.items())
        return (
            f"No configuration met the SLO ({slo}); the closest is {describe_config(chosen.point)}"
            f" ({figures}), which missed {missed}."
        )
    return f"Use {describe_config(chosen.point)}: {figures}, meeting {slo}{_gains_text(rec)}."


def _figures_text(chosen: Candidate, mode: Mode) -> str:
    p99 = chosen.metrics.get(P99)
    p99_text = f"p99 {_num(p99)} ms" if p99 is not None else "p99 not measured"
    if mode == "max_rate":
        rate = chosen.max_rate_rps
        head = f"sustains {_num(rate)} req/s" if rate is not None else "no passing rate"
        return f"{head} over {_protocol(chosen.point)} with {p99_text} at that rate"
    tput = chosen.metrics.get(THROUGHPUT)
    return f"{_num(tput)} req/s at {p99_text} under {describe_load(chosen.point)}"


def _gains_text(rec: Recommendation) -> str:
    """`` (2.87× the unbatched baseline's throughput, +3.1% over TF Serving's defaults)``."""
    parts = []
    unbatched, default = rec.baselines.get("unbatched"), rec.baselines.get("tfserving_default")
    what = "max rate" if rec.mode == "max_rate" else "throughput"
    if _differs(unbatched):
        parts.append(f"{unbatched['gain'] + 1:.2f}× the unbatched baseline's {what}")  # type: ignore[index]
    if _differs(default):
        parts.append(f"{_change(default['gain'])} over TF Serving's default batching")  # type: ignore[index]
    return f" ({', '.join(parts)})" if parts else ""


def _differs(base: Mapping[str, Any] | None) -> bool:
    return bool(base) and base["gain"] is not None and not base["same_as_chosen"]  # type: ignore[index]


def reasons(rec: Recommendation, spec: SweepSpec) -> list[str]:
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
    if rec.runners_up and rec.chosen is not None:
        lines.append(_runner_up_text(rec.chosen, rec.runners_up[0], rec.mode))
    for name, base in rec.baselines.items():
        if base and not base["same_as_chosen"] and base["gain"] is not None:
            what = "unbatched" if name == "unbatched" else "TF Serving's default batching"
            lines.append(f"Against {what} ({base['key']}): {_change(base['gain'])} {_pname(base)}.")
    return lines


def _runner_up_text(chosen: Candidate, runner: Candidate, mode: Mode) -> str:
    figure = "max_rate_rps" if mode == "max_rate" else THROUGHPUT
    ours, theirs = _figure(chosen, figure), _figure(runner, figure)
    delta = _ratio(ours, theirs)
    versus = f"{_change(delta)} {figure}" if delta is not None else "no comparable figure"
    return f"Runner-up: {describe_config(runner.point)} ({runner.key}); the choice has {versus}."


def _pname(base: Mapping[str, Any]) -> str:
    p99 = base.get("p99_change")
    p99_text = f", {_change(p99)} p99" if p99 is not None else ""
    return f"{base['figure']}{p99_text}"


def _change(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1%}"


def _pct(value: float) -> str:
    return "an unmeasured amount" if value == float("inf") else f"{value:.0%}"


def _miss_name(metric_id: str) -> str:
    return metric_id if metric_id not in METRICS else metric(metric_id).header.lower()


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


# --- files and command lines ---------------------------------------------------------------------


def batching_text(chosen: Candidate, rec: Recommendation) -> str | None:
    """The batching_parameters.txt for the chosen configuration (None: batching off)."""
    if chosen.point.batching is None:
        return None
    verdict = "meets the constraints" if chosen.feasible else "does NOT meet the constraints"
    header = (
        f"# batchbench recommendation for run {rec.run_id or '(unnamed)'}: {chosen.key}\n"
        f"# {verdict}; {_figures_text(chosen, rec.mode)}\n"
    )
    return header + format_batching(chosen.point.batching)


def server_commands(
    point: Point, spec: SweepSpec, run_dir: Path | None, environment: Mapping[str, Any]
) -> dict[str, Any]:
    """The exact command lines that serve the model as the chosen point was measured.

    ``replicas`` processes on consecutive port pairs (gRPC 8500+2i, REST 8501+2i), each with the
    thread share the sweep gave it on the measured machine.
    """
    folder = (run_dir or Path(".")).resolve()
    base_path = _model_base_path(spec, folder)  # the sweep's own copy of a built-in model
    flags = [f"--model_name={spec.model.served_name}", f"--model_base_path={base_path}"]
    if point.batching is not None:
        flags += ["--enable_batching=true", f"--batching_parameters_file={folder / BATCHING_FILE}"]
    flags = replica_flags(
        [*flags, *spec.target.server_flags], point.replicas, cores=environment.get("cpu_count")
    )
    ports = [(GRPC_PORT + 2 * i, REST_PORT + 2 * i) for i in range(point.replicas)]
    tfs = [
        shlex.join(["tensorflow_model_server", f"--port={g}", f"--rest_api_port={r}", *flags])
        for g, r in ports
    ]
    if point.replicas == 1:
        ports_flags = [f"--port={GRPC_PORT}", f"--rest_api_port={REST_PORT}"]
        reference = shlex.join(["reference-server", *ports_flags, *flags])
    else:
        # `batchbench serve` gives each replica its own free ports and prints them.
        reference = shlex.join(["batchbench", "serve", f"--replicas={point.replicas}", *flags])
    return {
        "setup": _setup_commands(spec, base_path),
        "tensorflow_model_server": tfs,
        "reference_server": reference,
        "ports": [{"grpc": g, "rest": r} for g, r in ports],
    }


def _model_base_path(spec: SweepSpec, run_dir: Path) -> str:
    if spec.model.base_path:
        return str(Path(spec.model.base_path).expanduser().resolve())
    return str(run_dir.parent / "models" / builtin_folder(spec))


def builtin_folder(spec: SweepSpec) -> str:
    """The folder the sweep builds a built-in model in, beside the run folders (the model
    zoo's rule: the model's name for default options, ``name-<hash>`` otherwise)."""
    if spec.model.builtin is None:  # an external target: no model of ours
        return spec.model.served_name
    return model_zoo.model_folder(spec.model.builtin, spec.model.resolved_options())


def _setup_commands(spec: SweepSpec, base_path: str) -> list[str]:
    """How to build a built-in model where the commands expect it, if it is not there."""
    if spec.model.base_path or not spec.model.builtin:
        return []
    options = [f"--option={k}={v}" for k, v in sorted(spec.model.options.items())]
    return [shlex.join(["batchbench", "make-model", spec.model.builtin, base_path, *options])]


def write_recommendation(rec: Recommendation, run_dir: Path | str) -> dict[str, Path]:
    """Write ``recommendation.json`` and (batching on) ``batching_parameters.txt``."""
    run_dir = Path(run_dir)
    paths = {"recommendation": write_json(run_dir / RECOMMENDATION_FILE, rec.as_dict())}
    batching = run_dir / BATCHING_FILE
    if rec.batching_text is not None:
        paths["batching_parameters"] = write_atomically(batching, rec.batching_text)
    else:
        # A file left from an earlier recommendation would contradict this one.
        batching.unlink(missing_ok=True)
    return paths


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


__all__ = [
    "Candidate",
    "Constraint",
    "Recommendation",
    "RunData",
    "load_run",
    "merged_slo",
    "parse_constraint",
    "parse_objective",
    "recommend",
    "write_recommendation",
]
