"""The batching policy of TF Serving's SharedBatchScheduler, as pure state with an injected clock.

No threads and no I/O here: ``BatchScheduler`` (batch_scheduler.py) drives this policy from its
worker threads under one lock. The semantics follow tensorflow/core/kernels/batching_util/
shared_batch_scheduler.h (TF 2.21) and TF Serving's BatchingSession:

- Each key has a queue: a deque of batches whose back-most batch is *open* and the rest *closed*.
  A task goes into the open batch; when it does not fit, the open batch is closed and a new one
  opened. Closed batches are runnable at once.
- The open batch is runnable when full, or ``batch_timeout_micros`` after its first task arrived
  (with timeout 0: as soon as a thread asks). Otherwise an idle thread leaves it alone and waits.
- ``max_enqueued_batches`` counts the closed-waiting batches plus the open one; batches already
  handed to a thread no longer count.
- Threads take work round-robin across queues, oldest batch first within a queue.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from reference_server.batching_params import BatchingParameters
from reference_server.errors import invalid_argument, unavailable

Clock = Callable[[], float]

_QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"


@dataclass(frozen=True)
class BatchStats:
    """What one task experienced in the batcher (the server's batching metrics come from this).

    ``batch_size`` counts the rows executed, padding included; ``queue_seconds`` runs from enqueue
    to the start of batch execution; ``compute_seconds`` is the duration of the ``run`` call.
    """

    batch_size: int
    padding_rows: int
    task_rows: int
    queue_seconds: float
    compute_seconds: float

    def as_metadata(self) -> tuple[tuple[str, str], ...]:
        """The per-request telemetry both front ends attach to Predict answers (REST headers,
        gRPC trailing metadata), so a client can see what its request went through."""
        return (
            ("x-batch-size", str(self.batch_size)),
            ("x-batch-padding", str(self.padding_rows)),
            ("x-batch-queue-us", str(round(self.queue_seconds * 1e6))),
            ("x-batch-compute-us", str(round(self.compute_seconds * 1e6))),
        )


@dataclass(frozen=True)
class BatchRecord:
    """One executed batch, reported once per batch (per-batch metrics come from this).

    ``batch_size`` counts the rows executed, padding included; ``compute_seconds`` is the
    duration of the ``run`` call (0 when the batch failed before it ran).
    """

    key: Hashable
    batch_size: int
    padding_rows: int
    task_count: int
    compute_seconds: float


def padded_batch_size(allowed_batch_sizes: Sequence[int], size: int) -> int:
    """The smallest allowed size >= ``size`` (TF's RoundToLowestAllowedBatchSize).

    With no allowed sizes, or a size above all of them, the batch runs unpadded, as in TF.
    An empty batch is never padded: there is no row to repeat.
    """
    if size == 0:
        return 0
    for allowed in allowed_batch_sizes:
        if allowed >= size:
            return allowed
    return size


def split_sizes(rows: int, open_room: int, limit: int) -> list[int]:
    """Row counts of the parts a large task is split into (TF's InputSplitMetadata).

    The first part fills the open batch's remaining room (a whole ``limit`` when there is none);
    the rest are chunks of ``limit`` rows, the last one shorter.
    """
    head = min(rows, open_room if open_room > 0 else limit)
    sizes = [head]
    left = rows - head
    while left > 0:
        sizes.append(min(left, limit))
        left -= limit
    return sizes


def combine_part_stats(parts: Sequence[BatchStats]) -> BatchStats:
    """One task's stats from those of its split parts, in part order.

    Rows and padding are summed over the batches the parts ran in, the queue time is the wait
    until the first part started, and the compute time is the sum of those batches' run calls.
    """
    if len(parts) == 1:
        return parts[0]
    return BatchStats(
        batch_size=sum(p.batch_size for p in parts),
        padding_rows=sum(p.padding_rows for p in parts),
        task_rows=sum(p.task_rows for p in parts),
        queue_seconds=min(p.queue_seconds for p in parts),
        compute_seconds=sum(p.compute_seconds for p in parts),
    )


@dataclass(frozen=True)
class QueueLimits:
    """The per-queue knobs, in TF's QueueOptions terms (rows and seconds)."""

    input_limit: int  # largest task accepted (TF: input_batch_size_limit = max_batch_size)
    execution_limit: int  # largest batch executed (TF: max_execution_batch_size)
    timeout: float  # seconds an open batch may wait for more tasks after its first
    max_enqueued_batches: int
    split: bool  # enable_large_batch_splitting

    @classmethod
    def from_params(cls, params: BatchingParameters) -> QueueLimits:
        return cls(
            input_limit=params.max_batch_size,
            execution_limit=params.execution_batch_size,
            timeout=params.batch_timeout_micros / 1e6,
            # TF treats 0 as 1 (a queue that can hold the open batch only).
            max_enqueued_batches=max(params.max_enqueued_batches, 1),
            split=params.enable_large_batch_splitting,
        )


@dataclass(slots=True, eq=False)
class Piece:
    """A task, or one part of a split task, placed in a batch: rows [start, stop) of ``ticket``."""

    ticket: object  # the driver's handle for the submitted request
    start: int
    stop: int
    part: int  # index among the task's parts (0 when not split)
    enqueued_at: float

    @property
    def rows(self) -> int:
        return self.stop - self.start


class Batch:
    """Pieces executed together; ``opened_at`` is when its first piece arrived."""

    __slots__ = ("opened_at", "pieces", "size")

    def __init__(self) -> None:
        self.pieces: list[Piece] = []
        self.size = 0
        self.opened_at = 0.0

    def add(self, piece: Piece) -> None:
        if not self.pieces:
            self.opened_at = piece.enqueued_at
        self.pieces.append(piece)
        self.size += piece.rows


class BatchQueue:
    """One key's queue (TF's internal::Queue): accepts tasks, hands out runnable batches."""

    def __init__(self, limits: QueueLimits, clock: Clock) -> None:
        self._limits = limits
        self._clock = clock
        self._batches: deque[Batch] = deque([Batch()])
        self.num_tasks = 0  # pieces waiting, as TF's NumEnqueuedTasks

    def schedule(self, ticket: object, rows: int) -> tuple[int, bool]:
        """Enqueue a task of ``rows`` rows; return (number of parts, whether to wake a thread).

        Raises ServingError: INVALID_ARGUMENT when the task is too large, UNAVAILABLE when the
        queue is full. A thread needs waking when work became runnable or a new deadline began.
        """
        self._check_capacity(rows)
        now = self._clock()
        had_work = self.has_work(now)
        new_deadline = False
        start = 0
        sizes = self._part_sizes(rows)
        for part, size in enumerate(sizes):
            if self._batches[-1].size + size > self._limits.execution_limit:
                self._batches.append(Batch())
            new_deadline = new_deadline or not self._batches[-1].pieces
            self._batches[-1].add(Piece(ticket, start, start + size, part, now))
            start += size
        self.num_tasks += len(sizes)
        return len(sizes), new_deadline or (not had_work and self.has_work(now))

    def take(self) -> Batch | None:
        """The oldest runnable batch, closing the open one if it is due (TF's ScheduleBatch)."""
        if len(self._batches) == 1 and self._open_batch_due(self._clock()):
            self._batches.append(Batch())
        if len(self._batches) < 2:
            return None
        batch = self._batches.popleft()
        self.num_tasks -= len(batch.pieces)
        return batch

    def has_work(self, now: float) -> bool:
        return len(self._batches) > 1 or self._open_batch_due(now)

    def deadline(self) -> float | None:
        """When ``take`` will next return a batch if nothing else arrives (None: never)."""
        first = self._batches[0]
        if not first.pieces:
            return None
        if len(self._batches) > 1 or first.size >= self._limits.execution_limit:
            return first.opened_at
        return first.opened_at + self._limits.timeout

    def drain(self) -> list[Piece]:
        """Remove and return every waiting piece."""
        pieces = [p for batch in self._batches for p in batch.pieces]
        self._batches = deque([Batch()])
        self.num_tasks = 0
        return pieces

    def _open_batch_due(self, now: float) -> bool:
        open_batch = self._batches[-1]
        if not open_batch.pieces:
            return False
        return (
            open_batch.size >= self._limits.execution_limit
            or now >= open_batch.opened_at + self._limits.timeout
        )

    def _part_sizes(self, rows: int) -> list[int]:
        room = self._limits.execution_limit - self._batches[-1].size
        if rows <= room or not self._limits.split:
            return [rows]
        return split_sizes(rows, room, self._limits.execution_limit)

    def _check_capacity(self, rows: int) -> None:
        # Same checks, order and messages as ValidateBatchTaskQueueCapacity in TF 2.21.
        limits = self._limits
        if rows > limits.input_limit:
            raise invalid_argument(
                f"Task size {rows} is larger than maximum input batch size {limits.input_limit}"
            )
        enqueued = len(self._batches)
        open_size = self._batches[-1].size
        if limits.split:
            capacity = (limits.max_enqueued_batches - enqueued) * limits.execution_limit + (
                limits.execution_limit - open_size
            )
            if rows > capacity:
                raise unavailable(
                    f"{_QUEUE_FULL}; task size is {rows} but scheduling capacity is only "
                    f"{capacity} (num_enqueued_batches={enqueued}, max_enqueued_batches="
                    f"{limits.max_enqueued_batches}, open_batch_size={open_size}, "
                    f"max_execution_batch_size={limits.execution_limit})"
                )
        elif open_size + rows > limits.input_limit and enqueued >= limits.max_enqueued_batches:
            raise unavailable(
                f"{_QUEUE_FULL}; currently {enqueued} batches enqueued and max_enqueued_batches "
                f"is {limits.max_enqueued_batches}"
            )


# Idle queues are dropped once a scheduler has more queues than this, so keys that come and
# go (e.g. one per malformed shape) cannot grow the scheduler without bound.
MAX_QUEUES_KEPT = 64


class BatchPolicy:
    """All queues of one scheduler (TF's SharedBatchScheduler without its threads).

    Queues are created on a key's first task. ``next_batch`` visits them round-robin from where
    the previous call stopped, so one busy key cannot starve the others. Beyond
    MAX_QUEUES_KEPT queues, the idle ones (no task waiting) are dropped when a new one is made.
    """

    def __init__(self, limits: QueueLimits, clock: Clock) -> None:
        self._limits = limits
        self._clock = clock
        self._queues: dict[Hashable, BatchQueue] = {}
        self._order: list[BatchQueue] = []
        self._next = 0

    def schedule(
        self, key: Hashable, ticket: object, rows: int, limits: QueueLimits | None = None
    ) -> tuple[int, bool]:
        """Enqueue a task on ``key``'s queue; see BatchQueue.schedule. A new queue takes
        ``limits`` (a model's own batching parameters), or the policy's."""
        queue = self._queues.get(key)
        if queue is None:
            if len(self._queues) >= MAX_QUEUES_KEPT:
                self._drop_idle_queues()
            queue = self._queues[key] = BatchQueue(limits or self._limits, self._clock)
            self._order.append(queue)
        return queue.schedule(ticket, rows)

    def _drop_idle_queues(self) -> None:
        self._queues = {k: q for k, q in self._queues.items() if q.num_tasks}
        self._order = [q for q in self._order if q.num_tasks]
        self._next = 0

    @property
    def num_queues(self) -> int:
        return len(self._queues)

    def next_batch(self) -> Batch | None:
        """A runnable batch from the next queue in turn that has one, or None."""
        count = len(self._order)
        for _ in range(count):
            queue = self._order[self._next]
            self._next = (self._next + 1) % count
            batch = queue.take()
            if batch is not None:
                return batch
        return None

    def has_work(self) -> bool:
        now = self._clock()
        return any(queue.has_work(now) for queue in self._order)

    def wait_seconds(self) -> float | None:
        """How long an idle thread may sleep before a batch falls due (None: until woken)."""
        deadlines = [d for q in self._order if (d := q.deadline()) is not None]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - self._clock())

    @property
    def num_tasks(self) -> int:
        return sum(queue.num_tasks for queue in self._order)

    def drain(self) -> list[Piece]:
        """Remove and return every waiting piece of every queue."""
        return [piece for queue in self._order for piece in queue.drain()]
