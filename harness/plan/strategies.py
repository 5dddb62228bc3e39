"""How to walk a sweep: a strategy yields points and is told what each one measured.

The driver loop is then the same for every strategy::

    for point in strategy.points():
        summary = run(point)            # metric ID -> value, or None when the point failed
        strategy.observe(point, summary, windows)  # and each used window's figures

``GridStrategy`` runs a fixed list (the searches of harness.plan.search walk part of a space).
``MaxRateSearch`` finds, per server configuration, the highest open-loop rate that meets an SLO:
it doubles the rate until a probe fails, then bisects between the last pass and the first fail
until they are within ``precision`` (MLPerf LoadGen's peak-performance search). Both are pure:
no clocks, no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from harness.metrics import slo_misses
from harness.plan.points import Point
from harness.plan.spec import MaxRateSpec
from harness.store.layout import MAX_RATE_FILE

Summary = Mapping[str, float]


class Strategy(Protocol):
    """Yields the points to run; learns each result through ``observe`` before the next."""

    def points(self) -> Iterator[Point]: ...

    def observe(
        self, point: Point, summary: Summary | None, windows: Sequence[Summary] = ()
    ) -> None: ...

    def records(self) -> Mapping[str, Mapping[str, object]]:
        """What the strategy has learned so far, to keep in the run folder: file name → JSON
        document. The loop writes them after every point and once more at the end."""
        ...


class GridStrategy:
    """Every point of a fixed list, in order, except those already done (``--resume``)."""

    def __init__(self, points: Sequence[Point], skip: Collection[str] = ()) -> None:
        self._points = list(points)
        self._skip = set(skip)
        self.observed: dict[str, Summary | None] = {}

    def points(self) -> Iterator[Point]:
        return (point for point in self._points if point.key not in self._skip)

    def observe(
        self, point: Point, summary: Summary | None, windows: Sequence[Summary] = ()
    ) -> None:
        self.observed[point.key] = summary

    def records(self) -> Mapping[str, Mapping[str, object]]:
        return {}  # the points themselves are the whole record


# --- the max-rate search ------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """One probe of a search: the rate tried, whether it met the SLO, and why not."""

    rate: float
    passed: bool
    misses: dict[str, float]  # metric ID -> relative miss; {"failed": inf} for a failed point
    key: str


@dataclass
class MaxRateResult:
    """The outcome of one search (one server configuration, protocol and repeat)."""

    lane: Point  # the first probe; its lane_key names the search
    probes: list[Probe] = field(default_factory=list)
    max_rate: float | None = None  # highest passing rate; None when even min_rps failed
    outcome: str = "searching"  # found | capped (max_rps passed) | none | probe_limit

    def as_dict(self) -> dict[str, object]:
        return {
            "lane_key": self.lane.lane_key,
            "server": self.lane.server.as_dict(),
            "protocol": self.lane.protocol,
            "repeat": self.lane.repeat,
            "max_rate_rps": self.max_rate,
            "outcome": self.outcome,
            "probes": [vars(probe) for probe in self.probes],
        }


def probe_misses(rate: float, summary: Summary | None, search: MaxRateSpec) -> dict[str, float]:
    """Why a probe at ``rate`` fails: SLO misses, or too little achieved throughput. Empty: pass."""
    if summary is None:
        return {"failed": float("inf")}
    misses = slo_misses(summary, search.slo)
    achieved = summary.get("throughput_rps")
    if achieved is not None and achieved < search.min_achieved * rate:
        misses["throughput_rps"] = 1 - achieved / rate
    return misses


class MaxRateSearch:
    """Per lane (a first-probe point), the highest rate meeting ``search.slo``.

    Each search starts at its lane's rate (``expand_matrix`` sets it to ``start_rps``).
    ``known`` holds summaries of probes already measured (by point key, ``--resume``): those
    probes are replayed without being yielded again.
    """

    def __init__(
        self,
        lanes: Sequence[Point],
        search: MaxRateSpec,
        known: Mapping[str, Summary | None] | None = None,
    ) -> None:
        self._lanes = list(lanes)
        self._search = search
        self._known = dict(known or {})
        self._pending: Point | None = None
        self.results: list[MaxRateResult] = []

    def points(self) -> Iterator[Point]:
        for lane in self._lanes:
            result = MaxRateResult(lane)
            self.results.append(result)
            yield from self._walk(result)

    def observe(
        self, point: Point, summary: Summary | None, windows: Sequence[Summary] = ()
    ) -> None:
        if self._pending is None or point.key != self._pending.key:
            raise ValueError(f"observe({point.key}) does not answer the pending probe")
        self._known[point.key] = summary
        self._pending = None

    def records(self) -> Mapping[str, Mapping[str, object]]:
        return {MAX_RATE_FILE: {"searches": [result.as_dict() for result in self.results]}}

    def _walk(self, result: MaxRateResult) -> Iterator[Point]:
        steps = _PeakSteps(self._search)
        rate: float | None = _round(result.lane.load)
        while rate is not None:
            point = result.lane.with_load(rate)
            if point.key not in self._known:
                self._pending = point
                yield point
                if self._pending is not None:
                    raise RuntimeError(f"no observe() for probe {point.key}")
            misses = probe_misses(rate, self._known[point.key], self._search)
            result.probes.append(Probe(rate, not misses, misses, point.key))
            rate = steps.next(rate, passed=not misses)
        result.max_rate, result.outcome = steps.lo, steps.outcome


class _PeakSteps:
    """The rate sequence: double (or halve) to bracket the peak, then bisect to ``precision``."""

    def __init__(self, search: MaxRateSpec) -> None:
        self.search = search
        self.lo: float | None = None  # highest rate that passed
        self.hi: float | None = None  # lowest rate that failed
        self.count = 0
        self.outcome = "searching"

    def next(self, rate: float, *, passed: bool) -> float | None:
        self.count += 1
        if passed:
            self.lo = rate if self.lo is None else max(self.lo, rate)
        else:
            self.hi = rate if self.hi is None else min(self.hi, rate)
        proposal = self._propose()
        if proposal is not None and self.count >= self.search.max_probes:
            self.outcome = "probe_limit"
            return None
        return proposal

    def _propose(self) -> float | None:
        s, lo, hi = self.search, self.lo, self.hi
        if hi is None:  # everything passed so far: double, up to max_rps
            if lo is not None and lo >= s.max_rps:
                return self._stop("capped")
            return _round(min(2 * lo, s.max_rps)) if lo is not None else None
        if lo is None:  # everything failed so far: halve, down to min_rps
            if hi <= s.min_rps:
                return self._stop("none")
            return _round(max(hi / 2, s.min_rps))
        if hi - lo <= s.precision * lo:
            return self._stop("found")
        return _round((lo + hi) / 2)

    def _stop(self, outcome: str) -> float | None:
        """End the search with ``outcome``; None, the proposal that ends it."""
        self.outcome = outcome
        return None


def _round(rate: float) -> float:
    """Rates to a thousandth of a request per second: keys stay short and exact."""
    return round(rate, 3)
