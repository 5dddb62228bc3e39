"""What clients saw while a model version was switched: pure figures of a per-second timeline.

The input is a scenario result's ``timeline`` (one entry per second of the run: answers,
failures by code, the second's latency histogram, and each answering version's counts) and
the moment the switch was made, in the same seconds. The figures:

- the old and the new version (the one answering most before the switch, and most at the end);
- when the new version answered its first request and the old one its last, counted from the
  switch (to the second: the timeline's resolution);
- every failed request, by code, and the seconds they fell in;
- p99 before the switch, during it (from the switch's second to the last second the old
  version answered, or the new one's first, whichever is later) and after it, each from the
  merged histograms of its seconds;
- the excess latency area: over the seconds from the switch on, how far each second's p99 rose
  above the p99 before, added up (ms × s). It is 0 when the switch cost nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from scenarios.recording import BREAKDOWN_DIGITS, decode_histogram, new_histogram

PERCENTILE = 99.0


@dataclass(frozen=True)
class RolloutFigures:
    """The figures of one roll-out (seconds count from the start of the load run)."""

    switch_at_s: float
    old_version: str | None
    new_version: str | None
    first_new_at_s: float | None  # start of the first second the new version answered in
    last_old_at_s: float | None  # end of the last second the old version answered in
    first_new_after_s: float | None  # first_new_at_s - switch_at_s, at least 0
    last_old_after_s: float | None
    requests: int
    failed: int
    failures: dict[str, int] = field(default_factory=dict)
    failed_seconds: list[dict[str, Any]] = field(default_factory=list)
    p99_before_ms: float | None = None
    p99_during_ms: float | None = None
    p99_after_ms: float | None = None
    excess_p99_ms_s: float | None = None
    answers_by_version: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def dominant_version(entries: Iterable[Mapping[str, Any]]) -> str | None:
    """The version with the most answers over ``entries`` (None when none named one)."""
    counts: dict[str, int] = {}
    for entry in entries:
        for version, figures in entry.get("versions", {}).items():
            counts[version] = counts.get(version, 0) + int(figures.get("ok", 0))
    counts = {version: count for version, count in counts.items() if count}
    return max(counts, key=lambda version: (counts[version], version)) if counts else None


def phase_p99(entries: Iterable[Mapping[str, Any]]) -> float | None:
    """p99 (ms) of every answer in ``entries``: their histograms merged exactly (at the
    seconds' own precision, so a phase and its seconds read the same values alike)."""
    merged = new_histogram(BREAKDOWN_DIGITS)
    for entry in entries:
        if entry.get("histogram"):
            merged.add(decode_histogram(entry["histogram"]))
    if not merged.get_total_count():
        return None
    return merged.get_value_at_percentile(PERCENTILE) / 1000.0


def _answering(entries: Sequence[Mapping[str, Any]], version: str | None) -> list[int]:
    if version is None:
        return []
    return [
        int(e["second"]) for e in entries if e.get("versions", {}).get(version, {}).get("ok", 0)
    ]


def excess_area(entries: Iterable[Mapping[str, Any]], baseline_ms: float | None) -> float | None:
    """Sum over ``entries`` of (p99 of the second - baseline), where positive, × 1 s."""
    if baseline_ms is None:
        return None
    area = 0.0
    for entry in entries:
        p99 = entry.get("latency_p99_ms")
        if isinstance(p99, (int, float)) and math.isfinite(p99):
            area += max(0.0, p99 - baseline_ms)
    return area


def rollout_figures(
    timeline: Sequence[Mapping[str, Any]], switch_at_s: float, settle_s: float = 0.0
) -> RolloutFigures:
    """The roll-out figures of ``timeline`` for a switch at ``switch_at_s``; the first
    ``settle_s`` seconds (the load starting up) are left out of the p99 before."""
    switch_second = math.floor(switch_at_s)
    before = [e for e in timeline if settle_s <= e["second"] < switch_second]
    after_switch = [e for e in timeline if e["second"] >= switch_second]
    old = dominant_version(before)
    new = dominant_version(after_switch[-3:])
    new = None if new == old else new
    new_seconds = [s for s in _answering(timeline, new) if s >= switch_second]
    old_seconds = _answering(timeline, old)
    first_new = float(min(new_seconds)) if new_seconds else None
    last_old = float(max(old_seconds) + 1) if old_seconds and new is not None else None
    end_of_switch = max(
        [switch_second + 1, *([int(first_new) + 1] if first_new is not None else []),
         *([int(last_old)] if last_old is not None else [])]
    )  # fmt: skip
    during = [e for e in after_switch if e["second"] < end_of_switch]
    after = [e for e in after_switch if e["second"] >= end_of_switch]
    p99_before = phase_p99(before)
    failures, failed_seconds = _failures(timeline)
    return RolloutFigures(
        switch_at_s=round(switch_at_s, 3),
        old_version=old,
        new_version=new,
        first_new_at_s=first_new,
        last_old_at_s=last_old,
        first_new_after_s=_after(first_new, switch_at_s),
        last_old_after_s=_after(last_old, switch_at_s),
        requests=sum(int(e.get("ok", 0)) + int(e.get("errors", 0)) for e in timeline),
        failed=sum(failures.values()),
        failures=failures,
        failed_seconds=failed_seconds,
        p99_before_ms=p99_before,
        p99_during_ms=phase_p99(during),
        p99_after_ms=phase_p99(after),
        excess_p99_ms_s=excess_area(after_switch, p99_before),
        answers_by_version=_answers(timeline),
    )


def _after(at_s: float | None, switch_at_s: float) -> float | None:
    return None if at_s is None else round(max(0.0, at_s - switch_at_s), 3)


def _failures(timeline: Sequence[Mapping[str, Any]]) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Failed requests by code over the run, and each second that had some."""
    total: dict[str, int] = {}
    seconds = []
    for entry in timeline:
        codes = {code: int(n) for code, n in entry.get("error_codes", {}).items() if n}
        if not codes:
            continue
        seconds.append({"second": entry["second"], "codes": codes})
        for code, count in codes.items():
            total[code] = total.get(code, 0) + count
    return dict(sorted(total.items())), seconds


def _answers(timeline: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in timeline:
        for version, figures in entry.get("versions", {}).items():
            counts[version] = counts.get(version, 0) + int(figures.get("ok", 0))
    return dict(sorted(counts.items()))
