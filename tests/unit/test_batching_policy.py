"""The batching policy (TF Serving's SharedBatchScheduler semantics) driven by a fake clock."""

from __future__ import annotations

import grpc
import pytest

from reference_server.batching import (
    MAX_QUEUES_KEPT,
    Batch,
    BatchPolicy,
    BatchQueue,
    BatchStats,
    QueueLimits,
    combine_part_stats,
    padded_batch_size,
    split_sizes,
)
from reference_server.batching_params import BatchingParameters
from reference_server.errors import ServingError


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def limits(**overrides: object) -> QueueLimits:
    values = dict(
        input_limit=4, execution_limit=4, timeout=0.010, max_enqueued_batches=10, split=False
    )
    values.update(overrides)
    return QueueLimits(**values)  # type: ignore[arg-type]


def make_queue(**overrides: object) -> tuple[BatchQueue, FakeClock]:
    clock = FakeClock()
    return BatchQueue(limits(**overrides), clock), clock


def tickets(batch: Batch | None) -> list[object]:
    assert batch is not None
    return [piece.ticket for piece in batch.pieces]


def test_limits_from_params_follow_tf_serving_mapping() -> None:
    params = BatchingParameters(
        max_batch_size=64,
        batch_timeout_micros=2500,
        max_enqueued_batches=3,
        enable_large_batch_splitting=True,
        max_execution_batch_size=16,
    )
    assert QueueLimits.from_params(params) == QueueLimits(64, 16, 0.0025, 3, True)
    unsplit = BatchingParameters(max_batch_size=64, max_execution_batch_size=16)
    assert QueueLimits.from_params(unsplit).execution_limit == 64


def test_full_batch_is_runnable_before_its_timeout() -> None:
    queue, _ = make_queue(timeout=1.0)
    for name in "abc":
        queue.schedule(name, 1)
    assert queue.take() is None
    queue.schedule("d", 1)
    assert tickets(queue.take()) == ["a", "b", "c", "d"]


def test_task_that_does_not_fit_closes_the_open_batch() -> None:
    queue, _ = make_queue(timeout=1.0)
    queue.schedule("a", 3)
    queue.schedule("b", 2)
    # The closed batch runs now, though not full; "b" waits in the new open batch.
    assert tickets(queue.take()) == ["a"]
    assert queue.take() is None
    assert queue.num_tasks == 1


def test_timeout_is_measured_from_the_first_task_of_the_batch() -> None:
    queue, clock = make_queue(timeout=0.010)
    queue.schedule("a", 1)
    clock.advance(0.008)
    queue.schedule("b", 1)
    clock.advance(0.0019)
    assert queue.take() is None
    clock.advance(0.0001)
    assert tickets(queue.take()) == ["a", "b"]


def test_idle_thread_leaves_a_young_open_batch_alone_and_knows_how_long_to_wait() -> None:
    clock = FakeClock()
    policy = BatchPolicy(limits(timeout=0.010), clock)
    assert policy.wait_seconds() is None
    policy.schedule("m", "a", 1)
    clock.advance(0.004)
    assert policy.next_batch() is None
    assert policy.wait_seconds() == pytest.approx(0.006)
    clock.advance(0.006)
    assert tickets(policy.next_batch()) == ["a"]
    assert policy.wait_seconds() is None


def test_timeout_zero_runs_at_once_and_accumulates_while_threads_are_busy() -> None:
    queue, _ = make_queue(timeout=0.0)
    queue.schedule("a", 1)
    assert tickets(queue.take()) == ["a"]
    # No thread asks while "a" runs: arrivals pile up in the open batch and run together.
    for name in "bcd":
        queue.schedule(name, 1)
    assert tickets(queue.take()) == ["b", "c", "d"]


def test_queue_full_rejects_with_tf_message_counting_the_open_batch() -> None:
    queue, _ = make_queue(input_limit=2, execution_limit=2, max_enqueued_batches=2)
    queue.schedule("a", 2)
    queue.schedule("b", 2)  # closes a's batch: one closed + one open = 2 batches
    with pytest.raises(ServingError) as caught:
        queue.schedule("c", 1)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.message == (
        "The batch scheduling queue to which this task was submitted is full; "
        "currently 2 batches enqueued and max_enqueued_batches is 2"
    )
    assert tickets(queue.take()) == ["a"]  # a thread took one: room again
    queue.schedule("c", 1)


def test_task_that_fits_the_open_batch_is_accepted_even_when_the_queue_is_at_its_limit() -> None:
    queue, _ = make_queue(input_limit=2, execution_limit=2, max_enqueued_batches=1)
    queue.schedule("a", 1)
    queue.schedule("b", 1)
    with pytest.raises(ServingError):
        queue.schedule("c", 1)
    assert queue.num_tasks == 2


def test_oversize_task_is_invalid_argument_with_tf_message() -> None:
    queue, _ = make_queue(input_limit=4)
    with pytest.raises(ServingError) as caught:
        queue.schedule("a", 5)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.message == "Task size 5 is larger than maximum input batch size 4"
    assert queue.num_tasks == 0


def test_split_sizes_fill_open_room_then_chunks() -> None:
    assert split_sizes(10, 3, 4) == [3, 4, 3]
    assert split_sizes(8, 0, 4) == [4, 4]
    assert split_sizes(5, 1, 4) == [1, 4]


def test_large_task_is_split_and_first_fills_the_open_batch() -> None:
    queue, _ = make_queue(input_limit=10, execution_limit=4, split=True, timeout=1.0)
    queue.schedule("small", 1)
    parts, _ = queue.schedule("big", 10)
    assert parts == 3
    first, second = queue.take(), queue.take()
    assert first is not None and second is not None
    assert [(p.ticket, p.start, p.stop, p.part) for p in first.pieces] == [
        ("small", 0, 1, 0),
        ("big", 0, 3, 0),
    ]
    assert [(p.ticket, p.start, p.stop, p.part) for p in second.pieces] == [("big", 3, 7, 1)]
    assert first.size == second.size == 4
    assert queue.take() is None  # rows 7..10 wait in the open batch for its timeout
    assert queue.num_tasks == 1


def test_splitting_bounds_task_by_max_batch_size_and_batches_by_execution_size() -> None:
    queue, _ = make_queue(input_limit=10, execution_limit=4, split=True)
    with pytest.raises(ServingError) as caught:
        queue.schedule("a", 11)
    assert caught.value.message == "Task size 11 is larger than maximum input batch size 10"


def test_splitting_rejects_task_beyond_remaining_capacity() -> None:
    queue, _ = make_queue(input_limit=10, execution_limit=4, split=True, max_enqueued_batches=2)
    queue.schedule("a", 1)
    with pytest.raises(ServingError) as caught:
        queue.schedule("b", 8)  # capacity: 1 more batch of 4 + 3 left in the open one = 7
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.message == (
        "The batch scheduling queue to which this task was submitted is full; task size is 8 "
        "but scheduling capacity is only 7 (num_enqueued_batches=1, max_enqueued_batches=2, "
        "open_batch_size=1, max_execution_batch_size=4)"
    )
    queue.schedule("b", 7)


def test_without_splitting_a_task_that_does_not_fit_is_never_split() -> None:
    queue, _ = make_queue(timeout=1.0)
    queue.schedule("a", 3)
    parts, _ = queue.schedule("b", 3)
    assert parts == 1
    assert tickets(queue.take()) == ["a"]


def test_allowed_batch_sizes_pad_up_to_the_smallest_allowed_size() -> None:
    assert padded_batch_size([2, 4, 8], 3) == 4
    assert padded_batch_size([2, 4, 8], 4) == 4
    assert padded_batch_size([2, 4, 8], 1) == 2
    assert padded_batch_size([2, 4, 8], 9) == 9  # above all sizes: TF runs it unpadded
    assert padded_batch_size([], 3) == 3


def test_queues_are_served_round_robin_and_oldest_batch_first() -> None:
    clock = FakeClock()
    policy = BatchPolicy(limits(input_limit=1, execution_limit=1, timeout=1.0), clock)
    for name in ("a1", "a2", "a3"):
        policy.schedule("A", name, 1)
    for name in ("b1", "b2"):
        policy.schedule("B", name, 1)
    order = []
    while (batch := policy.next_batch()) is not None:
        order.extend(tickets(batch))
    # Open batches (a3, b2) are full, hence runnable, and are closed when taken.
    assert order == ["a1", "b1", "a2", "b2", "a3"]


def test_schedule_wakes_a_thread_only_when_work_or_a_deadline_appears() -> None:
    queue, clock = make_queue(timeout=0.010)
    assert queue.schedule("a", 1) == (1, True)  # new open batch: a new deadline
    assert queue.schedule("b", 1) == (1, False)
    clock.advance(0.010)
    assert queue.schedule("c", 2) == (1, False)  # already due: threads know from their timer
    assert queue.schedule("d", 1) == (1, True)  # opens the next batch


def test_policy_counts_waiting_tasks_and_drains_them() -> None:
    clock = FakeClock()
    policy = BatchPolicy(limits(timeout=1.0), clock)
    policy.schedule("A", "a", 3)
    policy.schedule("A", "b", 3)
    policy.schedule("B", "c", 1)
    assert policy.num_tasks == 3
    assert policy.has_work()  # A has a closed batch
    assert sorted(str(p.ticket) for p in policy.drain()) == ["a", "b", "c"]
    assert policy.num_tasks == 0
    assert policy.next_batch() is None


def test_split_task_stats_combine_over_its_batches() -> None:
    parts = [BatchStats(4, 0, 3, 0.002, 0.010), BatchStats(8, 1, 7, 0.005, 0.020)]
    assert combine_part_stats(parts) == BatchStats(12, 1, 10, 0.002, 0.030)
    assert combine_part_stats(parts[:1]) == parts[0]


def test_idle_queues_are_dropped_beyond_the_kept_number() -> None:
    """Keys that come and go (one per malformed shape) must not grow the scheduler forever."""
    clock = FakeClock()
    policy = BatchPolicy(limits(timeout=0.0), clock)
    for key in range(MAX_QUEUES_KEPT):
        policy.schedule(key, f"t{key}", 1)
    while policy.next_batch() is not None:
        pass
    policy.schedule("busy", "waiting", 1)
    assert policy.num_queues == 1
    policy.schedule("another", "t", 1)
    assert policy.num_queues == 2
    assert sorted(map(str, tickets(policy.next_batch()) + tickets(policy.next_batch()))) == [
        "t",
        "waiting",
    ]
