"""Where an unbatched session run goes: inline on the event loop, or to a session thread.

Handing a run to a thread and its result back to the loop costs two thread wake-ups, a
concurrent and an asyncio future and a GIL hand-over each way, and TensorFlow then hands the
graph to its inter-op pool and back again: for the mlp on 2 cores that is more than the run
itself (~13 µs executed in the calling thread, ~50 µs through TensorFlow's pool). A run that
short is cheaper done inline; it blocks the loop for less time than the hops would cost.
A run of unknown or larger cost still goes to a thread, so a heavy model never
stalls the loop and runs of several requests still overlap.

The policy is pure: it learns each callable's recent seconds per row from the runs it is told
about and answers whether the next run, of so many rows, is expected to stay under the limit.
"""

from __future__ import annotations

from collections.abc import Hashable

# A run expected to take longer than this goes to a session thread. Well above a tiny model's
# run (tens of µs) and below anything a user would notice as a loop stall.
INLINE_LIMIT_SECONDS = 0.00025
# The weight of the newest run in the moving average: a few slow runs move a callable off
# the loop quickly; a few fast ones bring it back.
NEWEST_WEIGHT = 0.25


class RunCosts:
    """Recent seconds per row of each callable (a moving average), learned from its runs.

    ``record`` may be called from any thread: each key's value is replaced in one dict store.
    """

    def __init__(
        self, inline_limit_seconds: float = INLINE_LIMIT_SECONDS, weight: float = NEWEST_WEIGHT
    ) -> None:
        self.inline_limit_seconds = inline_limit_seconds
        self._weight = weight
        self._seconds_per_row: dict[Hashable, float] = {}

    def record(self, key: Hashable, rows: int, seconds: float) -> None:
        """One finished run of ``key`` over ``rows`` rows took ``seconds``."""
        per_row = seconds / max(rows, 1)
        previous = self._seconds_per_row.get(key)
        if previous is not None:
            per_row = previous + self._weight * (per_row - previous)
        self._seconds_per_row[key] = per_row

    def runs_inline(self, key: Hashable, rows: int) -> bool:
        """Whether a run of ``key`` over ``rows`` rows is expected to stay under the limit.

        Never for a callable not yet seen: its first run goes to a thread and is measured.
        Cost is taken as proportional to rows, which overestimates larger requests (a run's
        fixed cost is counted once per row), so a big request errs towards the thread.
        """
        per_row = self._seconds_per_row.get(key)
        return per_row is not None and per_row * max(rows, 1) <= self.inline_limit_seconds
