"""When to stop measuring a point: perf_analyzer's stability rule, as a pure function.

A point is measured in consecutive windows. It is *stable* once the last ``stable_windows``
windows agree: each window's throughput and each window's p99 lie within ``tolerance`` of the
mean of those windows (and together they hold at least ``min_requests`` requests). Until then
the driver keeps measuring; at ``max_windows`` it stops and the point is *unstable* — kept and
flagged, not discarded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["stable", "measuring", "unstable"]


@dataclass(frozen=True)
class WindowFigures:
    """What one measurement window produced."""

    throughput_rps: float
    latency_p99_ms: float
    requests: int | None = None  # None: not counted (then min_requests is not enforced)


@dataclass(frozen=True)
class StabilityVerdict:
    """The verdict after some windows, and the evidence for it.

    ``windows_used`` are the indices of the windows the point's figures should come from (the
    last ``stable_windows``, or all when there are fewer). Spreads are the largest relative
    deviation from the mean among those windows (0.07 = 7%).
    """

    verdict: Verdict
    windows_used: tuple[int, ...]
    throughput_spread: float
    p99_spread: float
    requests: int | None
    reason: str

    @property
    def done(self) -> bool:
        """True when no more windows should be measured."""
        return self.verdict != "measuring"

    @property
    def stable(self) -> bool:
        return self.verdict == "stable"

    def as_dict(self) -> dict[str, object]:
        return {
            "verdict": self.verdict,
            "windows_used": list(self.windows_used),
            "throughput_spread": _finite(self.throughput_spread),
            "p99_spread": _finite(self.p99_spread),
            "requests": self.requests,
            "reason": self.reason,
        }


def spread(values: Sequence[float]) -> float:
    """Largest ``|v - mean| / mean``; 0 for identical values, inf when undefined (NaN, mean 0)."""
    if not values or any(math.isnan(v) or math.isinf(v) for v in values):
        return math.inf
    mean = sum(values) / len(values)
    if mean == 0:
        return 0.0 if all(v == 0 for v in values) else math.inf
    return max(abs(v - mean) for v in values) / abs(mean)


def judge(
    windows: Sequence[WindowFigures],
    *,
    tolerance: float = 0.10,
    stable_windows: int = 3,
    max_windows: int = 10,
    min_requests: int = 0,
) -> StabilityVerdict:
    """The verdict for the windows measured so far (oldest first)."""
    used = tuple(range(max(0, len(windows) - stable_windows), len(windows)))
    recent = [windows[i] for i in used]
    tput = spread([w.throughput_rps for w in recent])
    p99 = spread([w.latency_p99_ms for w in recent])
    requests = _total_requests(recent)
    problem = _problem(len(recent), stable_windows, tput, p99, tolerance, requests, min_requests)
    if problem is None:
        verdict: Verdict = "stable"
        reason = f"last {stable_windows} windows within {tolerance:.0%}"
    else:
        verdict = "unstable" if len(windows) >= max_windows else "measuring"
        reason = problem
    return StabilityVerdict(verdict, used, tput, p99, requests, reason)


def whole_pass(windows: Sequence[WindowFigures], *, min_requests: int = 0) -> StabilityVerdict:
    """The verdict on a trace replay: the figures are those of the whole pass (every window).

    A trace is a fixed workload, bursts included, so windows that differ are what it is made
    of, not noise that more windows would average out; only a pass with too few requests
    does not count.
    """
    used = tuple(range(len(windows)))
    tput = spread([w.throughput_rps for w in windows])
    p99 = spread([w.latency_p99_ms for w in windows])
    requests = _total_requests(windows)
    if not windows or (requests is not None and requests < min_requests):
        reason = f"{requests or 0} requests < min_requests {min_requests} in the trace's pass"
        return StabilityVerdict("unstable", used, tput, p99, requests, reason)
    reason = f"trace replay: the whole pass ({len(windows)} windows)"
    return StabilityVerdict("stable", used, tput, p99, requests, reason)


def _problem(
    count: int,
    needed: int,
    tput: float,
    p99: float,
    tolerance: float,
    requests: int | None,
    min_requests: int,
) -> str | None:
    """Why the windows do not (yet) count as stable; None when they do."""
    if count < needed:
        return f"{count} of {needed} windows"
    if tput > tolerance:
        return f"throughput spread {_pct(tput)} > {tolerance:.0%}"
    if p99 > tolerance:
        return f"p99 spread {_pct(p99)} > {tolerance:.0%}"
    if requests is not None and requests < min_requests:
        return f"{requests} requests < min_requests {min_requests}"
    return None


def _total_requests(windows: Sequence[WindowFigures]) -> int | None:
    counts = [w.requests for w in windows]
    known = [c for c in counts if c is not None]
    return sum(known) if len(known) == len(counts) else None


def _pct(value: float) -> str:
    return "undefined" if math.isinf(value) else f"{value:.1%}"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
