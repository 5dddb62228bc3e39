"""What the server says about a measured interval: Prometheus scrapes before and after, diffed.

Counters and histograms are cumulative, so ``after - before`` is exactly the interval's share,
whatever happened earlier (warm-up, previous points on the same server). The figures come
from TF Serving's batching metrics (processed batch size, padding, queuing latency) and ours
(per-batch compute time, queue-full rejections); ``summarize`` turns the per-replica deltas
into the point's ``telemetry`` and its server-side metric IDs.
"""

from __future__ import annotations

import math
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

_TF = ":tensorflow:serving:"
_BATCHING = _TF + "batching_session:"
_OURS = ":batchbench:serving:"
REQUEST_COUNT = _TF + "request_count"
PROCESSED_BATCH_SIZE = _BATCHING + "processed_batch_size"
PADDING_SIZE = _BATCHING + "padding_size"
QUEUING_LATENCY = _BATCHING + "queuing_latency"
COMPUTE_LATENCY = _OURS + "batch_compute_latency"
REJECTED = _OURS + "batch_queue_rejected_count"

Labels = tuple[tuple[str, str], ...]
# sample name (counters without prometheus-client's "_total") -> labels -> value
Samples = dict[str, dict[Labels, float]]


def parse_samples(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, by name and labels."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if family.type == "counter" and not family.name.endswith("_total"):
                name = name.removesuffix("_total")  # the parser adds it; TF Serving has none
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(name, {})[labels] = float(sample.value)
    return samples


def scrape(url: str, timeout: float = 5.0) -> Samples:
    """Read and parse one server's metrics page."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return parse_samples(response.read().decode("utf-8"))


def delta(before: Samples, after: Samples) -> Samples:
    """``after - before`` for every sample in ``after`` (absent before: counted from 0)."""
    return {
        name: {
            labels: value - before.get(name, {}).get(labels, 0.0)
            for labels, value in series.items()
        }
        for name, series in after.items()
    }


# --- reading a delta ----------------------------------------------------------------------------


def total(samples: Samples, name: str, **match: str) -> float:
    """The sum of ``name``'s series whose labels include ``match``."""
    return sum(
        value
        for labels, value in samples.get(name, {}).items()
        if all(dict(labels).get(k) == v for k, v in match.items())
    )


def bucket_counts(samples: Samples, histogram: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of a histogram, summed over its label sets, ascending."""
    by_bound: dict[float, float] = {}
    for labels, value in samples.get(histogram + "_bucket", {}).items():
        bound = float(dict(labels)["le"])
        by_bound[bound] = by_bound.get(bound, 0.0) + value
    return sorted(by_bound.items())


def histogram_quantile(
    buckets: Sequence[tuple[float, float]], q: float, *, interpolate: bool = True
) -> float | None:
    """Prometheus's histogram_quantile: linear within the bucket holding the q-th observation;
    without ``interpolate``, that bucket's upper bound (for coarse buckets such as batch
    sizes, where a point inside a bucket would be made up)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if not interpolate:
                return bound
            inside = count - lower_count
            fraction = (rank - lower_count) / inside if inside else 1.0
            return lower_bound + (bound - lower_bound) * fraction
        lower_bound, lower_count = bound, count
    return lower_bound


def _mean(samples: Samples, histogram: str, scale: float = 1.0) -> float | None:
    count = total(samples, histogram + "_count")
    return total(samples, histogram + "_sum") / count * scale if count else None


def _non_cumulative(buckets: Sequence[tuple[float, float]]) -> list[dict[str, Any]]:
    out, previous = [], 0.0
    for bound, count in buckets:
        le: float | str = (
            "+Inf" if math.isinf(bound) else int(bound) if bound.is_integer() else bound
        )
        out.append({"le": le, "count": round(count - previous)})
        previous = count
    return out


def summarize(deltas: Sequence[Samples]) -> tuple[dict[str, Any], dict[str, float | None]]:
    """The interval's telemetry (for the point file) and its server-side metric figures.

    ``deltas`` holds one delta per replica. Batch figures are absent (None) without batching.
    """
    merged = merge(deltas)
    requests_by_status: dict[str, int] = {}
    for labels, value in merged.get(REQUEST_COUNT, {}).items():
        status = dict(labels).get("status", "")
        if round(value):
            requests_by_status[status] = requests_by_status.get(status, 0) + round(value)
    requests = sum(requests_by_status.values())
    batches = total(merged, PROCESSED_BATCH_SIZE + "_count")
    rows = total(merged, PROCESSED_BATCH_SIZE + "_sum")
    padding = total(merged, PADDING_SIZE + "_sum")
    rejected = total(merged, REJECTED)
    size_buckets = bucket_counts(merged, PROCESSED_BATCH_SIZE)
    queue_buckets = bucket_counts(merged, QUEUING_LATENCY)
    queue_p95_us = histogram_quantile(queue_buckets, 0.95)
    telemetry: dict[str, Any] = {
        "batches": int(batches),
        "rows": int(rows),
        "padding_rows": int(padding),
        "batch_size_buckets": _non_cumulative(size_buckets),
        "queue_time_mean_ms": _mean(merged, QUEUING_LATENCY, 1e-3),
        "compute_time_mean_ms": _mean(merged, COMPUTE_LATENCY, 1e-3),
        "requests_by_status": requests_by_status,
        "rejected": int(rejected),
        "replica_requests": [int(total(d, REQUEST_COUNT)) for d in deltas],
    }
    figures: dict[str, float | None] = {
        "batch_size_mean": rows / batches if batches else None,
        "batch_size_p50": histogram_quantile(size_buckets, 0.5, interpolate=False),
        "padding_ratio": padding / rows if rows else None,
        "queue_time_mean_ms": telemetry["queue_time_mean_ms"],
        "queue_time_p95_ms": None if queue_p95_us is None else queue_p95_us * 1e-3,
        "compute_time_mean_ms": telemetry["compute_time_mean_ms"],
        "rejected_rate": rejected / requests if requests else None,
    }
    return telemetry, figures


def merge(deltas: Sequence[Mapping[str, Mapping[Labels, float]]]) -> Samples:
    """Samples of several replicas added up, series by series."""
    merged: Samples = {}
    for samples in deltas:
        for name, series in samples.items():
            target = merged.setdefault(name, {})
            for labels, value in series.items():
                target[labels] = target.get(labels, 0.0) + value
    return merged
