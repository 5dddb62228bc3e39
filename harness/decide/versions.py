"""A/B of model versions: each version's figures side by side, with 95% intervals.

Pure. The input is what a scenario result (or a point file) keeps: ``by_version`` (each
version's measured figures, its histogram merged over the run) and the per-second
``timeline`` whose entries hold each version's answers, failures and p99 that second. The
seconds are the samples the intervals are drawn from (``harness.decide.stats``): a version's
traffic share and p99 get a bootstrap interval over the seconds, and each version's p99 is
compared with the version that took the most traffic (its relative change, bootstrapped on
both sides), so a canary's p99 is reported with the noise that comes with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.decide.stats import bootstrap_change, finite_number, interval, seed_for

MIN_SECONDS = 2  # an interval needs at least two samples


def second_samples(
    timeline: Sequence[Mapping[str, Any]], version: str
) -> tuple[list[float], list[float]]:
    """Per second in which any version answered: ``version``'s share of the answers, and its
    p99 in the seconds it answered."""
    shares, p99s = [], []
    for entry in timeline:
        versions = entry.get("versions") or {}
        answered = sum(int(v.get("ok", 0)) for v in versions.values())
        if not answered or entry.get("warmup"):
            continue
        mine = versions.get(version, {})
        shares.append(int(mine.get("ok", 0)) / answered)
        if finite_number(p99 := mine.get("latency_p99_ms")):
            p99s.append(float(p99))
    return shares, p99s


def version_rows(
    by_version: Sequence[Mapping[str, Any]],
    timeline: Sequence[Mapping[str, Any]],
    name: str = "",
) -> list[dict[str, Any]]:
    """One row per version: requests, share (and its interval over the seconds), errors,
    p50/p99 (and p99's interval over the seconds), and p99's change against the version that
    answered most. Empty when fewer than two versions answered."""
    answered = [v for v in by_version if v.get("count")]
    if len(answered) < 2:
        return []
    total = sum(int(v["count"]) + int(v.get("error_count", 0)) for v in by_version)
    reference = max(answered, key=lambda v: int(v["count"]))["version"]
    _, reference_p99s = second_samples(timeline, reference)
    rows = []
    for entry in by_version:
        version = str(entry["version"])
        shares, p99s = second_samples(timeline, version)
        requests = int(entry["count"]) + int(entry.get("error_count", 0))
        share = interval([shares], seed=seed_for(f"{name}/{version}", "share"))
        p99 = interval([p99s], seed=seed_for(f"{name}/{version}", "latency_p99_ms"))
        change = None
        if version != reference and len(p99s) >= MIN_SECONDS and len(reference_p99s) >= 2:
            change = bootstrap_change(
                [reference_p99s], [p99s], seed=seed_for(f"{name}/{version}", "p99_change")
            )
        rows.append(
            {
                "version": version,
                "reference": version == reference,
                "requests": requests,
                "share": requests / total if total else None,
                "share_ci": [share.low, share.high] if share else None,
                "error_count": int(entry.get("error_count", 0)),
                "errors": dict(entry.get("errors", {})),
                "error_rate": entry.get("error_rate"),
                "latency_p50_ms": entry.get("latency_p50_ms"),
                "latency_p99_ms": entry.get("latency_p99_ms"),
                "latency_p99_ci_ms": [p99.low, p99.high] if p99 else None,
                "p99_change": change.as_dict() if change else None,
            }
        )
    return rows
