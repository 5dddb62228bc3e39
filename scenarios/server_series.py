"""The server's side of the timeline: queue depth and executed batch size, second by second.

The load generator reads each --scrape-urls page about once a second while a test runs; from
each reading it keeps three numbers (summed over the pages): the batch queue depth gauge, and
the sum and count of TF Serving's processed batch size histogram. Pure but for nothing.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

QUEUE_DEPTH = ":batchbench:serving:batch_queue_depth"
BATCH_SIZE = ":tensorflow:serving:batching_session:processed_batch_size"
_SAMPLE = re.compile(r"^(?P<name>[:\w]+)(?:\{[^}]*\})?\s+(?P<value>\S+)")


@dataclass(frozen=True)
class Reading:
    """One scrape: seconds since the run started, and the three numbers (None: not exposed)."""

    at_s: float
    queue_depth: float | None
    batch_rows: float | None  # processed batch size histogram: sum
    batches: float | None  # ... and count


def read_numbers(texts: Iterable[str | None], at_s: float) -> Reading:
    """The reading of the pages `texts` (None: a page that could not be read) at `at_s`."""
    sums: dict[str, float] = {}
    for text in texts:
        for line in (text or "").splitlines():
            match = _SAMPLE.match(line)
            if match and match["name"] in (QUEUE_DEPTH, BATCH_SIZE + "_sum", BATCH_SIZE + "_count"):
                try:
                    value = float(match["value"])
                except ValueError:
                    continue
                sums[match["name"]] = sums.get(match["name"], 0.0) + value
    return Reading(
        at_s, sums.get(QUEUE_DEPTH), sums.get(BATCH_SIZE + "_sum"), sums.get(BATCH_SIZE + "_count")
    )


def by_second(readings: Sequence[Reading]) -> dict[int, dict[str, float | None]]:
    """Per second of the run (the second a reading was taken in): the queue depth read then,
    and the mean executed batch size of the batches run since the reading before."""
    series: dict[int, dict[str, float | None]] = {}
    for before, after in itertools.pairwise(readings):
        mean = None
        counts = (before.batches, after.batches, before.batch_rows, after.batch_rows)
        if all(count is not None for count in counts):
            b0, b1, r0, r1 = (float(count or 0) for count in counts)
            batches, rows = b1 - b0, r1 - r0
            mean = rows / batches if batches > 0 else None
        second = max(int(after.at_s) - 1, 0) if after.at_s >= 1 else 0
        series[second] = {"queue_depth": after.queue_depth, "batch_size_mean": mean}
    return series
