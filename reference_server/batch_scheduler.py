"""BatchScheduler: runs the batching policy with worker threads for asyncio callers.

``submit`` (on the server's event loop) enqueues a task under one lock and awaits a future;
``num_batch_threads`` workers wait on a Condition (with a timeout equal to the next batch
deadline, never polling), take runnable batches, run them, and hand each result back to its
caller's loop with one ``call_soon_threadsafe`` per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from typing import cast

import grpc
import numpy as np

from reference_server.batch_tensors import (
    concat_parts,
    merge_inputs,
    slice_rows,
    split_outputs,
    task_rows,
)
from reference_server.batching import (
    Batch,
    BatchPolicy,
    BatchRecord,
    BatchStats,
    Piece,
    QueueLimits,
    combine_part_stats,
    padded_batch_size,
)
from reference_server.batching_params import BatchingParameters
from reference_server.errors import ServingError, unavailable

log = logging.getLogger(__name__)

Tensors = dict[str, np.ndarray]
RunFn = Callable[[Tensors], Tensors]
BatchHook = Callable[[BatchRecord], None]
Outcome = tuple[Tensors, BatchStats] | BaseException

_CLOSED = "The batch scheduler is shut down"
# TF Serving's answers when a task's RunOptions.timeout_in_ms runs out: while it waits in the
# queue (batching_session.cc) and while its batch runs (DirectSession's WaitForNotification).
_EXPIRED_IN_QUEUE = "Run() timeout exceeded while waiting in batching queue"
_EXPIRED_IN_RUN = "Timed out waiting for notification"

# When the current request must be answered by (``time.monotonic()``), or None: TF Serving's
# RunOptions.timeout_in_ms. A front end sets it (REST: --rest_api_timeout_in_ms; gRPC: the
# client's deadline) in the request's context, so ``submit`` and unbatched runs see it.
REQUEST_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "request_deadline", default=None
)


def deadline_expired() -> ServingError:
    """The error of a task whose deadline passed before its batch started."""
    return ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, _EXPIRED_IN_QUEUE)


def deadline_exceeded() -> ServingError:
    """The error of a task whose deadline passed while it ran."""
    return ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, _EXPIRED_IN_RUN)


class _Ticket:
    """One submitted task: its inputs, its run function, and where its result goes.

    A split task completes when all its parts have; parts may finish on different threads,
    hence the lock (created only for split tasks).
    """

    __slots__ = (
        "deadline",
        "future",
        "inputs",
        "key",
        "lock",
        "loop",
        "outcomes",
        "params",
        "remaining",
        "rows",
        "run",
        "started",
    )

    def __init__(
        self,
        key: Hashable,
        inputs: Tensors,
        run: RunFn,
        rows: int,
        deadline: float | None,
        params: BatchingParameters,
    ) -> None:
        self.key = key
        self.params = params  # its queue's parameters (padding happens by them)
        self.inputs = inputs
        self.run = run
        self.rows = rows
        self.deadline = deadline
        self.started = False  # set by the worker whose batch takes (a part of) it
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[tuple[Tensors, BatchStats]] = self.loop.create_future()
        self.remaining = 1
        self.lock: threading.Lock | None = None
        self.outcomes: list[Outcome | None] = []

    def expect_parts(self, parts: int) -> None:
        self.remaining = parts
        if parts > 1:
            self.lock = threading.Lock()
            self.outcomes = [None] * parts

    def piece_inputs(self, piece: Piece) -> Tensors:
        if piece.rows == self.rows:
            return self.inputs
        return slice_rows(self.inputs, piece.start, piece.stop)

    def finish_part(self, part: int, outcome: Outcome) -> Outcome | None:
        """Record one part's outcome; return the task's outcome once every part is in."""
        if self.lock is None:
            return outcome
        with self.lock:
            self.outcomes[part] = outcome
            self.remaining -= 1
            if self.remaining:
                return None
        return _combine(self.outcomes)


def _ticket(piece: Piece) -> _Ticket:
    return cast(_Ticket, piece.ticket)


def _combine(outcomes: list[Outcome | None]) -> Outcome:
    """A split task fails with its first part's error, else gets its parts concatenated."""
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            return outcome
    results = [o for o in outcomes if isinstance(o, tuple)]
    try:
        outputs = concat_parts([outputs for outputs, _ in results])
    except ValueError as exc:
        return exc
    return outputs, combine_part_stats([stats for _, stats in results])


def _all_expired(tickets: list[_Ticket], now: float) -> bool:
    """Whether every task's deadline has passed (TF's all_tasks_timeout_exceeded)."""
    return all(t.deadline is not None and t.deadline <= now for t in tickets)


def _resolve(results: list[tuple[asyncio.Future, Outcome]]) -> None:
    """Runs on the event loop: complete the futures whose callers still wait."""
    for future, outcome in results:
        if future.done():  # the caller was cancelled
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


class BatchScheduler:
    """TF Serving's shared batch scheduler for one set of BatchingParameters.

    Tasks with equal ``key`` share a queue and may run together; all queues share the
    ``num_batch_threads`` worker threads, which take batches round-robin across queues.
    """

    def __init__(
        self,
        params: BatchingParameters,
        *,
        clock: Callable[[], float] = time.monotonic,
        name: str = "",
        on_batch: BatchHook | None = None,
    ) -> None:
        """``on_batch``, when given, is called once per executed batch (in its worker thread,
        after the batch ran or failed); an exception it raises is logged and ignored."""
        params.validate()
        self._params = params
        self._clock = clock
        self._on_batch = on_batch
        self._rejected_full = 0
        self._policy = BatchPolicy(QueueLimits.from_params(params), clock)
        self._cond = threading.Condition()
        self._closed = False
        prefix = name or params.thread_pool_name
        self._threads = [
            threading.Thread(target=self._work, name=f"{prefix}_{i}", daemon=True)
            for i in range(params.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    async def submit(
        self,
        key: Hashable,
        inputs: dict[str, np.ndarray],
        run: RunFn,
        params: BatchingParameters | None = None,
    ) -> tuple[dict[str, np.ndarray], BatchStats]:
        """Run ``inputs`` as part of a batch of ``key``'s queue; return its outputs and stats.

        Called on the server's asyncio loop. ``run`` (blocking, thread-safe, the same for every
        task of a key) is called in a worker thread with the merged inputs. Raises ServingError
        for oversize/queue-full/mismatch; an exception raised by ``run`` goes to every task of
        that batch.

        With a ``REQUEST_DEADLINE`` in the caller's context, the wait ends there, with TF
        Serving's error for where the task was: RESOURCE_EXHAUSTED while still queued,
        DEADLINE_EXCEEDED while its batch ran (the batch itself runs on for its other tasks).
        A batch whose tasks have all expired when a thread takes it is not run at all.

        `params` (validated) are the queue's own parameters, as with TF Serving's per-model
        batching parameters: a key's queue takes the limits of its first task's `params`, and
        its batches are padded by them; the scheduler's threads stay shared. None: the
        scheduler's parameters.
        """
        deadline = REQUEST_DEADLINE.get()
        params = params or self._params
        ticket = _Ticket(key, inputs, run, task_rows(inputs), deadline, params)
        with self._cond:
            if self._closed:
                raise unavailable(_CLOSED)
            parts, wake = self._schedule(self._queue_key(key, inputs, params), ticket, params)
            ticket.expect_parts(parts)
            if wake:
                self._cond.notify()
        if deadline is None:
            return await ticket.future
        try:
            # On timeout the future is cancelled, so a late result is dropped (see _resolve).
            return await asyncio.wait_for(ticket.future, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise (deadline_exceeded() if ticket.started else deadline_expired()) from None

    def _queue_key(self, key: Hashable, inputs: Tensors, params: BatchingParameters) -> Hashable:
        """``key`` plus what tasks must share to be merged: dtypes and, without padding, the
        shapes past dim 0 (with padding, the ranks). TF Serving queues by signature alone and
        fails the whole batch when one task's tensors do not fit the others'; a malformed
        request in its own queue fails alone, never the requests it would have joined."""
        pad = params.pad_variable_length_inputs
        return key, tuple(
            (t.dtype.str, t.ndim if pad else t.shape[1:]) for _, t in sorted(inputs.items())
        )

    def _schedule(
        self, key: Hashable, ticket: _Ticket, params: BatchingParameters
    ) -> tuple[int, bool]:
        """The policy's schedule (under the lock), counting queue-full rejections."""
        limits = None if params is self._params else QueueLimits.from_params(params)
        try:
            return self._policy.schedule(key, ticket, ticket.rows, limits)
        except ServingError as exc:
            if exc.code == grpc.StatusCode.UNAVAILABLE:  # the policy's only UNAVAILABLE: queue full
                self._rejected_full += 1
            raise

    def rejected_full(self) -> int:
        """Tasks refused so far because their queue was full (UNAVAILABLE)."""
        with self._cond:
            return self._rejected_full

    def queue_depth(self) -> int:
        """Tasks waiting to run, all queues (split parts count separately, as in TF)."""
        with self._cond:
            return self._policy.num_tasks

    def close(self, timeout: float | None = None) -> bool:
        """Stop the threads; waiting tasks fail with UNAVAILABLE, running batches may finish.

        Waits up to ``timeout`` seconds (None: as long as the running batches take) and returns
        whether every thread has ended. The threads are daemons, so a batch still running after
        the timeout does not keep the process alive.
        """
        with self._cond:
            if not self._closed:
                self._closed = True
                waiting = self._policy.drain()
                self._cond.notify_all()
            else:
                waiting = []
        self._deliver((p, unavailable(_CLOSED)) for p in waiting)
        deadline = None if timeout is None else time.monotonic() + timeout
        others = [t for t in self._threads if t is not threading.current_thread()]
        for thread in others:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in others)

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._deliver(self._execute(batch))

    def _report(self, key: Hashable, batch: Batch, size: int, compute: float) -> None:
        if self._on_batch is None:
            return
        record = BatchRecord(key, size, size - batch.size, len(batch.pieces), compute)
        try:
            self._on_batch(record)
        except Exception:  # an observer's bug must not fail the batch's callers
            log.exception("on_batch hook failed")

    def _next_batch(self) -> Batch | None:
        with self._cond:
            while not self._closed:
                batch = self._policy.next_batch()
                if batch is not None:
                    if self._policy.has_work():
                        self._cond.notify()  # let another idle thread take the next one
                    return batch
                self._cond.wait(self._policy.wait_seconds())
            return None

    def _execute(self, batch: Batch) -> list[tuple[Piece, Outcome]]:
        """Run one batch; pair each of its pieces with its outputs and stats, or the error."""
        started = self._clock()
        pieces = batch.pieces
        tickets = [_ticket(p) for p in pieces]
        for ticket in tickets:
            ticket.started = True
        if _all_expired(tickets, time.monotonic()):  # TF runs no batch that nobody awaits
            return [(p, deadline_expired()) for p in pieces]
        params = tickets[0].params
        size = padded_batch_size(params.allowed_batch_sizes, batch.size)
        compute = 0.0
        try:
            merged = merge_inputs(
                [_ticket(p).piece_inputs(p) for p in pieces],
                size,
                pad_variable_length=params.pad_variable_length_inputs,
            )
            run = _ticket(pieces[0]).run
            run_start = self._clock()
            outputs = run(merged)
            compute = self._clock() - run_start
            per_task = split_outputs(outputs, [p.rows for p in pieces], size)
        except Exception as exc:  # the whole batch fails together, as in TF
            self._report(_ticket(pieces[0]).key, batch, size, compute)
            return [(p, exc) for p in pieces]
        self._report(_ticket(pieces[0]).key, batch, size, compute)
        padding = size - batch.size
        return [
            (p, (out, BatchStats(size, padding, p.rows, started - p.enqueued_at, compute)))
            for p, out in zip(pieces, per_task, strict=True)
        ]

    def _deliver(self, finished: Iterable[tuple[Piece, Outcome]]) -> None:
        """Hand completed tasks to their loops, one thread-safe call per loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, Outcome]]] = {}
        for piece, outcome in finished:
            ticket = _ticket(piece)
            result = ticket.finish_part(piece.part, outcome)
            if result is not None:
                by_loop.setdefault(ticket.loop, []).append((ticket.future, result))
        for loop, results in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop has nobody waiting
                loop.call_soon_threadsafe(_resolve, results)
