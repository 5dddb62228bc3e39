"""The one registry of metric IDs: config, stored results, CSV columns and the report all use them.

An ID is snake_case and ends with its unit (``_ms``, ``_rps``) unless it is a ratio or a count.
Each metric knows whether higher or lower is better, so constraints (``latency_p99_ms: 50`` means
"at most 50", ``throughput_rps: 100`` means "at least 100") and comparisons need no other table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Direction = Literal["higher", "lower"]


@dataclass(frozen=True)
class Metric:
    """One measured figure: its ID, a human header, its unit and which way is better."""

    id: str
    header: str
    unit: str
    direction: Direction
    description: str

    @property
    def higher_is_better(self) -> bool:
        return self.direction == "higher"

    def label(self) -> str:
        """The header with its unit, for axis labels and table headers: ``p99 latency (ms)``."""
        return f"{self.header} ({self.unit})" if self.unit else self.header


def _m(id: str, header: str, unit: str, direction: Direction, description: str) -> Metric:
    return Metric(id, header, unit, direction, description)


# Order matters: it is the column order of results.csv and of the report's tables.
_ALL: tuple[Metric, ...] = (
    _m("throughput_rps", "Throughput", "req/s", "higher", "successful responses per second"),
    _m(
        "offered_rate_rps",
        "Offered rate",
        "req/s",
        "higher",
        "requests per second the generator meant to send (open loop)",
    ),
    _m("send_rate_rps", "Send rate", "req/s", "higher", "requests per second actually sent"),
    _m("requests", "Requests", "", "higher", "requests answered in the measured windows"),
    _m("latency_p50_ms", "p50 latency", "ms", "lower", "median latency"),
    _m("latency_p90_ms", "p90 latency", "ms", "lower", "90th percentile latency"),
    _m("latency_p95_ms", "p95 latency", "ms", "lower", "95th percentile latency"),
    _m("latency_p99_ms", "p99 latency", "ms", "lower", "99th percentile latency"),
    _m("latency_p999_ms", "p99.9 latency", "ms", "lower", "99.9th percentile latency"),
    _m("latency_max_ms", "Max latency", "ms", "lower", "largest latency seen"),
    _m("latency_mean_ms", "Mean latency", "ms", "lower", "mean latency"),
    _m("error_rate", "Error rate", "", "lower", "failed requests / all requests"),
    _m(
        "late_send_rate",
        "Late sends",
        "",
        "lower",
        "open loop: requests sent later than intended / all requests",
    ),
    _m(
        "dropped_rate",
        "Dropped",
        "",
        "lower",
        "open loop: requests not sent because too many were outstanding / all requests",
    ),
    _m(
        "generator_cpu_percent",
        "Generator CPU",
        "%",
        "lower",
        "CPU use of the load generator (near 100% means it, not the server, was the limit)",
    ),
    # Server-side figures, from the Prometheus scrape around the measured interval. For batch
    # sizes "higher is better" is about amortisation only; the report shows them, the
    # recommender ranks by throughput and latency.
    _m("batch_size_mean", "Mean batch size", "rows", "higher", "rows per executed batch"),
    _m(
        "batch_size_p50",
        "Median batch size",
        "rows",
        "higher",
        "median rows per batch: the upper bound of its power-of-two bucket (TF Serving's)",
    ),
    _m("padding_ratio", "Padding", "", "lower", "padding rows / executed rows"),
    _m(
        "queue_time_mean_ms",
        "Mean queue time",
        "ms",
        "lower",
        "time a request waited for its batch to start",
    ),
    _m(
        "queue_time_p95_ms",
        "p95 queue time",
        "ms",
        "lower",
        "95th percentile of the time a request waited for its batch",
    ),
    _m("compute_time_mean_ms", "Mean compute time", "ms", "lower", "time to run one batch"),
    _m(
        "rejected_rate",
        "Rejected (queue full)",
        "",
        "lower",
        "requests refused because the batch queue was full / all requests",
    ),
)

# The figures a point gets a 95% interval for (harness.decide.stats.interval: bootstrap over the
# used windows, and over repeats where there are several). Each adds two IDs, the interval's
# ends, in the same unit and direction, placed after the figures above; like every ID they end
# with the unit: ``throughput_ci_low_rps``, ``latency_p99_ci_high_ms``.
INTERVAL_METRICS = ("throughput_rps", "latency_p50_ms", "latency_p99_ms")
_UNIT_SUFFIXES = ("_ms", "_rps")


def interval_ids(metric_id: str) -> tuple[str, str]:
    """``throughput_rps`` → ``("throughput_ci_low_rps", "throughput_ci_high_rps")``."""
    suffix = next((u for u in _UNIT_SUFFIXES if metric_id.endswith(u)), "")
    stem = metric_id.removesuffix(suffix) if suffix else metric_id
    return f"{stem}_ci_low{suffix}", f"{stem}_ci_high{suffix}"


def _interval_metrics(base: Metric) -> tuple[Metric, Metric]:
    low, high = interval_ids(base.id)
    what = f"of {base.description}: the mean over windows and repeats (bootstrap)"
    return (
        _m(low, f"{base.header} 95% CI low", base.unit, base.direction, f"lower end {what}"),
        _m(high, f"{base.header} 95% CI high", base.unit, base.direction, f"upper end {what}"),
    )


_BY_ID = {m.id: m for m in _ALL}
METRICS: Mapping[str, Metric] = {
    **_BY_ID,
    **{m.id: m for base in INTERVAL_METRICS for m in _interval_metrics(_BY_ID[base])},
}


def metric(metric_id: str) -> Metric:
    """The metric with this ID; KeyError naming the valid IDs when there is none."""
    try:
        return METRICS[metric_id]
    except KeyError:
        valid = ", ".join(METRICS)
        raise KeyError(f"unknown metric {metric_id!r}; valid metric IDs: {valid}") from None


def metric_ids() -> tuple[str, ...]:
    """Every metric ID, in registry (column) order."""
    return tuple(METRICS)


def is_better(metric_id: str, candidate: float, reference: float) -> bool:
    """True when ``candidate`` is strictly better than ``reference`` for this metric."""
    if metric(metric_id).higher_is_better:
        return candidate > reference
    return candidate < reference


def meets_bound(metric_id: str, value: float | None, bound: float) -> bool:
    """True when ``value`` satisfies the bound: at most it (lower is better) or at least it.

    A missing or NaN value never meets a bound: what was not measured cannot be promised.
    """
    if value is None or math.isnan(value):
        return False
    if metric(metric_id).higher_is_better:
        return value >= bound
    return value <= bound


def slo_misses(summary: Mapping[str, float | None], slo: Mapping[str, float]) -> dict[str, float]:
    """The constraints of ``slo`` that ``summary`` misses, each with how far it missed.

    The miss is relative to the bound (0.2 = 20% past it); ``inf`` for a missing figure or a
    zero bound. An empty result means every constraint is met.
    """
    misses: dict[str, float] = {}
    for metric_id, bound in slo.items():
        value = summary.get(metric_id)
        if not meets_bound(metric_id, value, bound):
            misses[metric_id] = _relative_miss(value, bound)
    return misses


def _relative_miss(value: float | None, bound: float) -> float:
    if value is None or math.isnan(value) or bound == 0:
        return math.inf
    return abs(value - bound) / abs(bound)
