"""Search strategies: walk part of a space and stop when more points would not pay.

Both follow the strategy protocol (harness.plan.strategies): the loop measures what
``points()`` yields and reports it through ``observe``. Each point becomes an
:class:`Observation`: the objective metric per used window (so its noise is known), whether it
met the SLO, and by how much it missed.

- :class:`QuickSearch`, coordinate hill-climbing in the spirit of Triton Model Analyzer's quick
  search: from the centre of the space, along one axis at a time, step to the neighbour; while
  the move pays, double the step (the gradient holds), and when a long step fails fall back to
  one. A move is accepted only when the new point is better beyond the noise: the 95% interval
  of the relative difference (harness.decide.stats, a bootstrap over the windows) lies wholly on
  the better side. A full pass over the axes without an accepted move ends the search.
- :class:`BayesianSearch`: Optuna's TPE sampler, seeded, over the axes' value indices, with the
  SLO as Optuna constraints (``constraints_func``: a trial is feasible when every value is
  <= 0). It stops at the budget or after ``patience`` measured trials without a new best. The
  study lives in an Optuna storage the caller opens (a journal file in the run folder), so a
  resumed sweep continues it.

Points outside the space (the unbatched baseline) are measured first; the confirmation rounds
(harness.sweep.confirm) take the best few afterwards. No clocks and no I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.decide.stats import CONFIDENCE, bootstrap_change, finite_number, seed_for
from harness.metrics import metric, slo_misses
from harness.plan.points import Point
from harness.plan.space import Coordinate, Space
from harness.plan.spec import SweepSpec
from harness.store.layout import SEARCH_FILE

Summary = Mapping[str, float]
# A bayesian search with no budget given measures a tenth of the space (Model Analyzer's
# Optuna search defaults to 5-10%).
DEFAULT_BAYESIAN_FRACTION = 0.1


@dataclass(frozen=True)
class Goal:
    """What a search optimises: one metric and its direction, under the SLO."""

    metric_id: str
    higher_is_better: bool
    slo: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, metric_id: str, slo: Mapping[str, float], *, maximize: bool | None = None) -> Goal:
        """``maximize`` None: the metric's own direction from the registry."""
        higher = metric(metric_id).higher_is_better if maximize is None else maximize
        return cls(metric_id, higher, dict(slo))


@dataclass(frozen=True)
class Observation:
    """A measured point as a search sees it."""

    key: str
    estimate: float | None  # the point's figure of the objective metric; None: failed
    samples: tuple[float, ...]  # the objective metric in each used window
    misses: Mapping[str, float]  # SLO metric -> relative miss; {"failed": inf} for a failure
    # each SLO metric in each used window: two infeasible points are compared on these
    slo_samples: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        return self.estimate is not None and not self.misses

    @property
    def worst_miss(self) -> float:
        return max(self.misses.values(), default=0.0)


def observe_point(
    key: str, summary: Summary | None, windows: Sequence[Summary], goal: Goal
) -> Observation:
    """The observation of one point from its figures and its used windows' figures."""
    if summary is None or not finite_number(summary.get(goal.metric_id)):
        return Observation(key, None, (), {"failed": math.inf})
    samples = tuple(float(v) for w in windows if finite_number(v := w.get(goal.metric_id))) or (
        float(summary[goal.metric_id]),
    )
    return Observation(key, float(summary[goal.metric_id]), samples, slo_misses(summary, goal.slo))


def better(new: Observation, old: Observation, goal: Goal, confidence: float = CONFIDENCE) -> bool:
    """Is ``new`` better than ``old`` beyond the noise? Feasible beats infeasible. Between two
    feasible points, the interval (at ``confidence``) of new/old - 1 of the objective must lie
    wholly on the better side of zero; between two infeasible ones, the same holds for the
    figure ``old`` missed its SLO by most (a point closer to the SLO is a step towards it)."""
    if new.estimate is None:
        return False
    if old.estimate is None:
        return True
    if new.feasible != old.feasible:
        return new.feasible
    if new.feasible:
        return _beyond_noise(new, old, goal.metric_id, goal.higher_is_better, confidence)
    worst = max(old.misses, key=lambda m: old.misses[m])
    higher = metric(worst).higher_is_better
    return _beyond_noise(new, old, worst, higher, confidence)


def _beyond_noise(
    new: Observation, old: Observation, metric_id: str, higher: bool, confidence: float
) -> bool:
    def values(obs: Observation) -> tuple[float, ...]:
        return obs.slo_samples.get(metric_id, obs.samples)

    a, b = values(old), values(new)
    if not a or not b:
        return False
    change = bootstrap_change(
        [a], [b], seed=seed_for(f"{old.key}/{new.key}", metric_id), confidence=confidence
    )
    if change is None:  # old's figure is 0: only a rise can beat it
        return higher and sum(b) > 0
    return change.low > 0 if higher else change.high < 0


def best_of(observations: Sequence[Observation], goal: Goal) -> Observation | None:
    """The best feasible observation by its estimate (no noise test: the pick so far)."""
    feasible = [o for o in observations if o.feasible and o.estimate is not None]
    if not feasible:
        return None
    sign = 1.0 if goal.higher_is_better else -1.0
    return max(feasible, key=lambda o: sign * (o.estimate or 0.0))


def budget_points(space_size: int, max_points: int | None, fraction: float | None) -> int:
    """The most points a search may measure: the smaller of ``max_points`` and ``fraction`` of
    the space (rounded down: a tenth is never more than a tenth), the whole space when neither
    is given; at least 1."""
    limits = [space_size]
    if max_points is not None:
        limits.append(max_points)
    if fraction is not None:
        limits.append(math.floor(fraction * space_size + 1e-9))
    return max(1, min(limits))


class BudgetSpent(Exception):
    """The budget is used up: the search ends where it stands."""


class SearchWalk:
    """What both searches share: visits, the budget, the pending point, the record."""

    strategy = ""

    def __init__(
        self,
        space: Space,
        goal: Goal,
        budget: int,
        known: Mapping[str, tuple[Summary | None, Sequence[Summary]]] | None = None,
    ) -> None:
        self.space, self.goal, self.budget = space, goal, budget
        self._known = {
            key: observe_point(key, summary, windows, goal)
            for key, (summary, windows) in (known or {}).items()
        }
        self._pending: Point | None = None
        self._visited: set[str] = set()  # distinct searched points measured (or replayed)
        self.trials: list[dict[str, Any]] = []
        self.stopped = "running"

    def points(self) -> Iterator[Point]:
        """The baseline first, then the strategy's walk until it stops or the budget is spent."""
        yield from self._extras()
        if not len(self.space):
            self.stopped = "empty space"
            return
        try:
            yield from self._walk()
        except BudgetSpent:
            self.stopped = "budget"

    def _walk(self) -> Iterator[Point]:
        """The strategy's own walk over the space; sets ``stopped`` when it ends by itself."""
        raise NotImplementedError

    def observe(
        self, point: Point, summary: Summary | None, windows: Sequence[Summary] = ()
    ) -> None:
        if self._pending is None or point.key != self._pending.key:
            raise ValueError(f"observe({point.key}) does not answer the pending point")
        self._known[point.key] = observe_point(point.key, summary, windows, self.goal)
        self._pending = None

    @property
    def measured(self) -> int:
        return len(self._visited)

    def _extras(self) -> Iterator[Point]:
        """The points outside the space (the unbatched baseline), measured first."""
        for point in self.space.extras:
            if point.key not in self._known:
                yield from self._measure(point)

    def _visit(self, coordinate: Coordinate) -> Iterator[Point]:
        """Measure the point at ``coordinate`` unless known; ``BudgetSpent`` past the budget."""
        point = self.space.point(coordinate)
        assert point is not None
        if point.key not in self._visited:
            if len(self._visited) >= self.budget:
                raise BudgetSpent
            self._visited.add(point.key)
            if point.key not in self._known:
                yield from self._measure(point)
            self._record(coordinate, self._known[point.key])

    def _measure(self, point: Point) -> Iterator[Point]:
        self._pending = point
        yield point
        if self._pending is not None:
            raise RuntimeError(f"no observe() for {point.key}")

    def observation(self, coordinate: Coordinate) -> Observation:
        point = self.space.point(coordinate)
        assert point is not None
        return self._known[point.key]

    def _record(self, coordinate: Coordinate, obs: Observation, **more: Any) -> None:
        seen = [self._known[t["key"]] for t in self.trials] + [obs]
        best = best_of(seen, self.goal)
        self.trials.append(
            {
                "trial": len(self.trials) + 1,
                "key": obs.key,
                "config": self.space.describe(coordinate),
                "objective": obs.estimate,
                "feasible": obs.feasible,
                "misses": {k: v for k, v in obs.misses.items() if math.isfinite(v)},
                "best_so_far": best.estimate if best else None,
                "best_key": best.key if best else None,
                **more,
            }
        )

    def best(self) -> Observation | None:
        return best_of([self._known[t["key"]] for t in self.trials], self.goal)

    def records(self) -> Mapping[str, Mapping[str, object]]:
        best = self.best()
        document = {
            "strategy": self.strategy,
            "metric": self.goal.metric_id,
            "higher_is_better": self.goal.higher_is_better,
            "slo": dict(self.goal.slo),
            "axes": [{"name": a.name, "values": list(a.values)} for a in self.space.axes],
            "space_size": len(self.space),
            "budget": self.budget,
            "measured": self.measured,
            "share_measured": self.measured / max(1, len(self.space)),
            "stopped": self.stopped,
            "best": best.key if best else None,
            "trials": self.trials,
        }
        return {SEARCH_FILE: document}


class QuickSearch(SearchWalk):
    """Noise-aware coordinate hill-climbing (see the module docstring)."""

    strategy = "quick"

    def __init__(
        self,
        space: Space,
        goal: Goal,
        budget: int,
        known: Mapping[str, tuple[Summary | None, Sequence[Summary]]] | None = None,
        start: Coordinate | None = None,
    ) -> None:
        super().__init__(space, goal, budget, known)
        self.home = start if start is not None else space.centre()
        self.moves: list[dict[str, Any]] = []
        self._left: set[Coordinate] = set()
        # A pass compares the home with up to two neighbours per axis: Bonferroni over them
        # keeps the chance of any move on noise alone at 5% per pass, not 5% per neighbour.
        self.confidence = 1 - (1 - CONFIDENCE) / max(1, 2 * len(space.axes))

    def _walk(self) -> Iterator[Point]:
        yield from self._visit(self.home)
        self.trials[-1]["home"] = True
        while (yield from self._pass()):
            pass
        self.stopped = "no significant improvement"

    def _pass(self) -> Generator[Point, None, bool]:
        """One pass over the axes; whether any move was accepted. Generator's return value."""
        moved = False
        for axis in range(len(self.space.axes)):
            for direction in (1, -1):
                if (yield from self._line(axis, direction)):
                    moved = True
                    break  # the axis improved one way: no need to try the other
        return moved

    def _line(self, axis: int, direction: int) -> Generator[Point, None, bool]:
        """Move along one axis while it pays; whether the home moved."""
        step, moved = 1, False
        while True:
            target = list(self.home)
            target[axis] += direction * step
            coordinate = tuple(target)
            if self.space.point(coordinate) is None:
                if step == 1:
                    return moved
                step = 1
                continue
            yield from self._visit(coordinate)
            new, home = self.observation(coordinate), self.observation(self.home)
            # A home once left is never taken again: no cycles between two infeasible points
            # each closer to the SLO on the other's worst figure.
            if coordinate not in self._left and better(new, home, self.goal, self.confidence):
                self._accept(coordinate)
                moved, step = True, step * 2
            elif step > 1:
                step = 1
            else:
                return moved

    def _accept(self, coordinate: Coordinate) -> None:
        self._left.add(self.home)
        self.moves.append(
            {
                "from": self.observation(self.home).key,
                "to": self.observation(coordinate).key,
            }
        )
        for trial in self.trials:
            if trial["key"] == self.observation(coordinate).key:
                trial["accepted"] = True
        self.home = coordinate

    def records(self) -> Mapping[str, Mapping[str, object]]:
        records = dict(super().records())
        document = dict(records[SEARCH_FILE])
        document["moves"] = self.moves
        document["confidence"] = self.confidence
        document["home"] = self.observation(self.home).key if self.trials else None
        records[SEARCH_FILE] = document
        return records


# --- from a spec ----------------------------------------------------------------------------------


def goal_of(spec: SweepSpec) -> Goal:
    """The spec's objective (maximize or minimize one metric) under ``recommend.slo``."""
    objective = spec.recommend.objective
    metric_id = objective.maximize or objective.minimize or "throughput_rps"
    return Goal.of(metric_id, spec.recommend.slo, maximize=objective.minimize is None)


def spec_budget(spec: SweepSpec, space: Space) -> int:
    """The spec's budget over ``space``; a bayesian search without one takes a tenth."""
    search = spec.search
    fraction = search.fraction
    if search.strategy == "bayesian" and search.max_points is None and fraction is None:
        fraction = DEFAULT_BAYESIAN_FRACTION
    return budget_points(len(space), search.max_points, fraction)


def describe_search(spec: SweepSpec, points: Sequence[Point]) -> str | None:
    """Pre-flight's line on a search: the size of the space and the budget; None for a grid."""
    if spec.search.strategy == "grid":
        return None
    space = Space(points)
    budget = spec_budget(spec, space)
    axes = " × ".join(f"{a.name} {len(a.values)}" for a in space.axes) or "one point"
    extra = f" (+{len(space.extras)} baseline)" if space.extras else ""
    return (
        f"search {spec.search.strategy}: a space of {len(space)} configurations ({axes}){extra}; "
        f"budget {budget} points ({budget / max(1, len(space)):.0%} of the space)"
    )


def search_strategy(
    spec: SweepSpec,
    points: Sequence[Point],
    known: Mapping[str, tuple[Summary | None, Sequence[Summary]]],
    study_file: Path,
) -> SearchWalk:
    """The spec's search over ``points``; ``known`` are the points already measured (resume);
    a bayesian study is kept in ``study_file``."""
    space = Space(points)
    goal, budget = goal_of(spec), spec_budget(spec, space)
    if spec.search.strategy == "quick":
        return QuickSearch(space, goal, budget, known)
    from harness.plan.bayesian import BayesianSearch, journal_storage  # Optuna: import late

    return BayesianSearch(
        space,
        goal,
        budget,
        patience=spec.search.patience,
        seed=spec.seed,
        storage=journal_storage(study_file),
        known=known,
    )


Measure = Callable[[Point], tuple[Summary | None, Sequence[Summary]]]


def drive(strategy: SearchWalk, measure: Measure) -> int:
    """Run ``strategy`` against ``measure`` (a point's figures and window figures) as the
    sweep loop would, without servers: for tests and the offline benchmark. Points measured."""
    count = 0
    for point in strategy.points():
        summary, windows = measure(point)
        strategy.observe(point, summary, windows)
        count += 1
    return count
