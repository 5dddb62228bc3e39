"""The statistics every decision uses: intervals, paired differences, ties, balanced orders.

Pure functions of numbers, seeded, so the same inputs always give the same verdict.

- :func:`interval`: a 95% interval for a point's figure, the mean over repeats of the mean over
  the windows the stability rule used. One repeat: ``scipy.stats.bootstrap`` over its windows;
  several: a two-level bootstrap (repeats drawn with replacement, then windows within each),
  which scipy does not offer.
- :func:`bootstrap_change`: the relative difference of two such figures measured apart (two
  runs, two configurations of one sweep), with a two-level bootstrap on each side.
- :func:`paired_change`: the relative difference of two arms measured in the same rounds. Each
  round gives one log ratio, so what moved both arms in that round (the machine's other load,
  a slow minute) cancels; a paired t-test (``scipy.stats.ttest_rel`` on the logs) gives the
  interval, which the few rounds of a job need rather than a bootstrap's optimism.
- :func:`tied`, :func:`tie_set`: which candidates cannot be told apart from the best.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard, TypeVar

import numpy as np
from scipy import stats as scipy_stats

from harness.metrics import INTERVAL_METRICS, interval_ids

CONFIDENCE = 0.95
DRAWS = 4000
SEED = 20240601

T = TypeVar("T")


@dataclass(frozen=True)
class Interval:
    """An estimate and its confidence interval (same unit as the estimate)."""

    estimate: float
    low: float
    high: float

    def straddles(self, bound: float) -> bool:
        """True when ``bound`` lies inside the interval: the data cannot say which side it is."""
        return self.low <= bound <= self.high

    def half_width(self) -> float:
        return (self.high - self.low) / 2


@dataclass(frozen=True)
class Change:
    """The relative change CURRENT/BASE - 1 and its confidence interval."""

    base: float
    current: float
    change: float
    low: float
    high: float
    paired: bool = False
    pairs: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "current": self.current,
            "change": self.change,
            "ci_low": self.low,
            "ci_high": self.high,
            "paired": self.paired,
            "pairs": self.pairs,
        }


def seed_for(name: str, metric_id: str, seed: int = SEED) -> int:
    """A seed per point (or group) and metric: a verdict does not depend on what else exists."""
    return seed ^ zlib.crc32(f"{name}/{metric_id}".encode())


# --- one figure -----------------------------------------------------------------------------------


def centre(groups: Sequence[Sequence[float]]) -> float:
    """Mean over repeats of each repeat's mean: every repeat weighs the same."""
    return float(np.mean([np.mean(g) for g in groups]))


def resampled_centres(
    groups: Sequence[Sequence[float]], rng: np.random.Generator, draws: int
) -> np.ndarray:
    """``draws`` bootstrap replicates of :func:`centre`: repeats drawn with replacement, then
    windows drawn with replacement within each drawn repeat."""
    counts = np.array([len(g) for g in groups])
    values = np.full((len(groups), counts.max()), np.nan)
    for i, g in enumerate(groups):
        values[i, : len(g)] = g
    picks = rng.integers(0, len(groups), size=(draws, len(groups)))
    n = counts[picks]  # windows in each drawn repeat
    slots = np.arange(counts.max())
    index = np.floor(rng.random((draws, len(groups), counts.max())) * n[..., None]).astype(int)
    drawn = values[picks[..., None], index]
    drawn = np.where(slots < n[..., None], drawn, 0.0)
    return (drawn.sum(axis=2) / n).mean(axis=1)


def interval(
    groups: Sequence[Sequence[float]],
    *,
    seed: int = SEED,
    confidence: float = CONFIDENCE,
    draws: int = DRAWS,
) -> Interval | None:
    """The :func:`centre` of ``groups`` (one list of window values per repeat) with its
    percentile bootstrap interval; None with fewer than two values (no noise to measure)."""
    groups = [[float(v) for v in g if math.isfinite(v)] for g in groups]
    groups = [g for g in groups if g]
    if sum(map(len, groups)) < 2:
        return None
    estimate = centre(groups)
    if len(groups) == 1:
        low, high = _scipy_interval(groups[0], seed, confidence, draws)
    else:
        replicates = resampled_centres(groups, np.random.default_rng(seed), draws)
        low, high = _percentiles(replicates, confidence)
    return Interval(estimate, low, high)


def _scipy_interval(
    values: Sequence[float], seed: int, confidence: float, draws: int
) -> tuple[float, float]:
    if min(values) == max(values):  # scipy warns on degenerate data; the answer is plain
        return values[0], values[0]
    result = scipy_stats.bootstrap(
        (np.asarray(values),),
        np.mean,
        confidence_level=confidence,
        n_resamples=draws,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _percentiles(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(replicates[np.isfinite(replicates)], [tail, 100 - tail])
    return float(low), float(high)


def interval_figures(
    name: str, repeats: Sequence[Sequence[Mapping[str, float | None]]], seed: int = SEED
) -> dict[str, float | None]:
    """The interval ends (:func:`harness.metrics.interval_ids`) of every interval metric, from
    the used windows' figures (one list of window metric mappings per repeat); None where a
    metric has fewer than two window values."""
    out: dict[str, float | None] = {}
    for metric_id in INTERVAL_METRICS:
        groups = [
            [float(v) for w in windows if finite_number(v := w.get(metric_id))]
            for windows in repeats
        ]
        found = interval(groups, seed=seed_for(name, metric_id, seed))
        low_id, high_id = interval_ids(metric_id)
        out[low_id], out[high_id] = (found.low, found.high) if found else (None, None)
    return out


def finite_number(value: object) -> TypeGuard[float]:
    """A real, finite number (not a bool, None, NaN or infinity): a figure that can be used."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --- differences ----------------------------------------------------------------------------------


def bootstrap_change(
    base: Sequence[Sequence[float]],
    current: Sequence[Sequence[float]],
    *,
    seed: int = SEED,
    draws: int = DRAWS,
    confidence: float = CONFIDENCE,
) -> Change | None:
    """The relative change of the centre between two independent measurements, with its
    two-level bootstrap interval; None when BASE is 0."""
    b, c = centre(base), centre(current)
    if b == 0:
        return None
    rng = np.random.default_rng(seed)
    # A replicate whose base windows all drew zeros (a stalled window) has no ratio; it is
    # left out of the percentiles with the other non-finite ones.
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = resampled_centres(current, rng, draws) / resampled_centres(base, rng, draws) - 1
    low, high = _percentiles(ratios, confidence)
    return Change(b, c, c / b - 1, low, high)


def paired_change(
    base: Sequence[float], current: Sequence[float], *, confidence: float = CONFIDENCE
) -> Change | None:
    """The relative change between arms measured in the same rounds (``base[i]`` and
    ``current[i]`` from round i): the geometric mean of the per-round ratios, with the paired
    t-interval of their logs. None with fewer than two rounds or a value that is not > 0."""
    b, c = np.asarray(base, dtype=float), np.asarray(current, dtype=float)
    if len(b) != len(c) or len(b) < 2 or (b <= 0).any() or (c <= 0).any():
        return None
    logs = np.log(c) - np.log(b)
    mean = float(logs.mean())
    if float(logs.std()) == 0:  # identical ratios: no spread to build an interval from
        low = high = mean
    else:
        test = scipy_stats.ttest_rel(np.log(c), np.log(b))
        ci = test.confidence_interval(confidence_level=confidence)
        low, high = float(ci.low), float(ci.high)
    return Change(
        float(b.mean()),
        float(c.mean()),
        math.expm1(mean),
        math.expm1(low),
        math.expm1(high),
        paired=True,
        pairs=len(b),
    )


def with_run_noise(change: Change, sigma: float, z: float = 1.96) -> Change:
    """The interval widened by a run-to-run noise the two sides' own samples cannot show.

    ``sigma`` is the relative standard deviation of a run's figure between runs (what a stored
    baseline of several runs has seen): the current run's own offset is unknown by that much,
    so ``z * sigma`` is added to each half of the interval in quadrature."""
    if not sigma > 0:
        return change
    extra = (z * sigma) ** 2
    low = change.change - math.sqrt((change.change - change.low) ** 2 + extra)
    high = change.change + math.sqrt((change.high - change.change) ** 2 + extra)
    return Change(
        change.base, change.current, change.change, low, high, change.paired, change.pairs
    )


def run_spread(runs: Sequence[Sequence[Sequence[float]]]) -> float | None:
    """The relative standard deviation of :func:`centre` between runs (each a list of repeats'
    window values); None with fewer than two runs or a zero mean."""
    centres = [centre(groups) for groups in runs if groups and any(groups)]
    if len(centres) < 2 or np.mean(centres) == 0:
        return None
    return float(np.std(centres, ddof=1) / abs(np.mean(centres)))


# --- ties -----------------------------------------------------------------------------------------


def tied(change: Change, higher_is_better: bool) -> bool:
    """True when a candidate cannot be told apart from the best: the interval of its change
    against the best (candidate / best - 1) reaches the best's side of zero."""
    return change.high >= 0 if higher_is_better else change.low <= 0


def tie_set(best: str, changes: Mapping[str, Change | None], higher_is_better: bool) -> list[str]:
    """``best`` and every candidate whose change against it is :func:`tied`; a candidate
    without a change (nothing to compare) is not tied. Order: ``best`` first, then as given."""
    return [best] + [
        key
        for key, change in changes.items()
        if key != best and change is not None and tied(change, higher_is_better)
    ]


def tie_break(candidates: Sequence[T], key: Callable[[T], tuple[Any, ...]]) -> T:
    """The candidate with the smallest tie-break key (see the recommender's rule)."""
    return min(candidates, key=key)
