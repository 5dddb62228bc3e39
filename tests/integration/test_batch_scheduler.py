"""BatchScheduler with real worker threads and a real asyncio loop, running a numpy model."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import grpc
import numpy as np
import pytest

from reference_server.batch_scheduler import BatchScheduler
from reference_server.batching import BatchStats
from reference_server.batching_params import BatchingParameters
from reference_server.errors import ServingError, invalid_argument

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")


class DoubleModel:
    """y = 2x, plus each row's index in the executed batch; records every batch it ran."""

    def __init__(self, delay: float = 0.003) -> None:
        self.delay = delay
        self.batch_sizes: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        with self.lock:
            self.batch_sizes.append(len(x))
        time.sleep(self.delay)
        return {"y": 2 * x, "row": np.arange(len(x))}


@contextmanager
def scheduler(**params: object) -> Iterator[BatchScheduler]:
    sched = BatchScheduler(BatchingParameters(**params))  # type: ignore[arg-type]
    try:
        yield sched
    finally:
        sched.close()


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await make()

    return asyncio.run(main())


def column(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32).reshape(-1, 1)


def test_burst_of_single_rows_runs_in_full_batches() -> None:
    model = DoubleModel()
    with scheduler(max_batch_size=8, num_batch_threads=1, batch_timeout_micros=50_000) as sched:
        results = run_async(
            lambda: asyncio.gather(*(sched.submit("m", {"x": column(i)}, model) for i in range(64)))
        )
    assert model.batch_sizes == [8] * 8
    for i, (outputs, stats) in enumerate(results):
        assert outputs["y"].tolist() == [[2.0 * i]]
        assert outputs["row"].tolist() == [i % 8]  # tasks keep their arrival order in a batch
        assert (stats.batch_size, stats.padding_rows, stats.task_rows) == (8, 0, 1)
        assert stats.compute_seconds >= model.delay
    assert sched.queue_depth() == 0


def test_lone_request_waits_for_the_batch_timeout() -> None:
    model = DoubleModel(delay=0.0)
    with scheduler(max_batch_size=8, num_batch_threads=2, batch_timeout_micros=100_000) as sched:
        start = time.monotonic()
        outputs, stats = run_async(lambda: sched.submit("m", {"x": column(3)}, model))
        elapsed = time.monotonic() - start
    assert outputs["y"].tolist() == [[6.0]]
    assert stats.queue_seconds >= 0.1
    assert 0.1 <= elapsed < 5.0
    assert model.batch_sizes == [1]


def test_every_caller_gets_exactly_its_own_rows_with_mixed_sizes() -> None:
    model = DoubleModel(delay=0.001)
    sizes = [1, 3, 2, 5, 1, 4, 2, 2, 3, 1, 5, 2] * 3
    requests = []
    first = 0
    for size in sizes:
        requests.append(column(*range(first, first + size)))
        first += size
    with scheduler(
        max_batch_size=8, max_enqueued_batches=64, num_batch_threads=2, batch_timeout_micros=2_000
    ) as sched:
        results = run_async(
            lambda: asyncio.gather(*(sched.submit("m", {"x": x}, model) for x in requests))
        )
    for x, (outputs, stats) in zip(requests, results, strict=True):
        np.testing.assert_array_equal(outputs["y"], 2 * x)
        assert stats.task_rows == len(x) <= stats.batch_size <= 8
    assert sum(model.batch_sizes) == first


def test_queue_full_is_unavailable_while_a_slow_batch_runs() -> None:
    started, release = threading.Event(), threading.Event()

    def slow(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        started.set()
        release.wait(10)
        return {"y": 2 * inputs["x"]}

    async def scenario(sched: BatchScheduler) -> tuple[list[BatchStats], ServingError]:
        running = asyncio.ensure_future(sched.submit("m", {"x": column(0)}, slow))
        await asyncio.to_thread(started.wait, 10)
        waiting = [asyncio.ensure_future(sched.submit("m", {"x": column(i)}, slow)) for i in (1, 2)]
        await asyncio.sleep(0)  # let both enqueue: they fill the only batch allowed to wait
        with pytest.raises(ServingError) as caught:
            await sched.submit("m", {"x": column(3)}, slow)
        assert sched.queue_depth() == 2
        release.set()
        done = await asyncio.gather(running, *waiting)
        return [stats for _, stats in done], caught.value

    with scheduler(max_batch_size=2, max_enqueued_batches=1, num_batch_threads=1) as sched:
        stats, error = run_async(lambda: scenario(sched))
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.message.startswith(
        "The batch scheduling queue to which this task was submitted is full"
    )
    assert [s.batch_size for s in stats] == [1, 2, 2]  # timeout 0: the two that waited ran together


def test_oversize_request_is_rejected_without_running() -> None:
    model = DoubleModel()
    with (
        scheduler(max_batch_size=4, num_batch_threads=1) as sched,
        pytest.raises(ServingError) as caught,
    ):
        run_async(lambda: sched.submit("m", {"x": column(1, 2, 3, 4, 5)}, model))
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.message == "Task size 5 is larger than maximum input batch size 4"
    assert model.batch_sizes == []


def test_padding_to_allowed_sizes_reaches_run_and_is_reported() -> None:
    model = DoubleModel(delay=0.0)
    with scheduler(max_batch_size=8, allowed_batch_sizes=(2, 4, 8), num_batch_threads=1) as sched:
        outputs, stats = run_async(lambda: sched.submit("m", {"x": column(1, 2, 3)}, model))
    assert model.batch_sizes == [4]
    assert outputs["y"].tolist() == [[2.0], [4.0], [6.0]]
    assert (stats.batch_size, stats.padding_rows, stats.task_rows) == (4, 1, 3)


def test_large_request_is_split_and_reassembled_in_order() -> None:
    model = DoubleModel(delay=0.0)
    x = column(*range(10))
    with scheduler(
        max_batch_size=16,
        enable_large_batch_splitting=True,
        max_execution_batch_size=4,
        num_batch_threads=2,
    ) as sched:
        outputs, stats = run_async(lambda: sched.submit("m", {"x": x}, model))
    assert sorted(model.batch_sizes) == [2, 4, 4]
    np.testing.assert_array_equal(outputs["y"], 2 * x)
    assert outputs["row"].tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert (stats.batch_size, stats.padding_rows, stats.task_rows) == (10, 0, 10)


def test_run_errors_reach_every_task_of_the_batch() -> None:
    def broken(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise invalid_argument("model says no")

    def wrong_rows(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": inputs["x"][:1]}

    async def burst(sched: BatchScheduler, run: Callable) -> list[object]:
        calls = (sched.submit("m", {"x": column(i)}, run) for i in range(4))
        return await asyncio.gather(*calls, return_exceptions=True)

    with scheduler(max_batch_size=4, num_batch_threads=1, batch_timeout_micros=1_000_000) as s:
        failures = run_async(lambda: burst(s, broken))
        mismatches = run_async(lambda: burst(s, wrong_rows))
    assert [str(e) for e in failures] == ["model says no"] * 4
    assert all(isinstance(e, ServingError) for e in mismatches)
    assert {e.code for e in mismatches} == {grpc.StatusCode.FAILED_PRECONDITION}  # type: ignore[union-attr]


def test_keys_batch_separately_but_share_the_threads() -> None:
    model = DoubleModel(delay=0.0)
    with scheduler(max_batch_size=4, num_batch_threads=1, batch_timeout_micros=1_000_000) as sched:
        calls = [sched.submit(key, {"x": column(i)}, model) for key in "ab" for i in range(4)]
        results = run_async(lambda: asyncio.gather(*calls))
    assert model.batch_sizes == [4, 4]
    assert [out["y"][0, 0] for out, _ in results] == [0, 2, 4, 6, 0, 2, 4, 6]


def test_close_fails_waiting_tasks_with_unavailable() -> None:
    model = DoubleModel(delay=0.0)

    async def scenario(sched: BatchScheduler) -> BaseException:
        pending = asyncio.ensure_future(sched.submit("m", {"x": column(1)}, model))
        await asyncio.sleep(0)
        sched.close()
        with pytest.raises(ServingError) as after:
            await sched.submit("m", {"x": column(2)}, model)
        assert after.value.code == grpc.StatusCode.UNAVAILABLE
        return (await asyncio.gather(pending, return_exceptions=True))[0]

    sched = BatchScheduler(
        BatchingParameters(max_batch_size=4, num_batch_threads=1, batch_timeout_micros=10**7)
    )
    error = run_async(lambda: scenario(sched))
    assert isinstance(error, ServingError) and error.code == grpc.StatusCode.UNAVAILABLE
    assert model.batch_sizes == []


def test_a_task_whose_tensors_do_not_fit_the_batch_fails_alone() -> None:
    """Fuzzing found one malformed request failing every request batched with it."""
    model = DoubleModel(delay=0.0)

    def one_column(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if inputs["x"].shape[1:] != (1,):
            raise invalid_argument(f"bad shape {list(inputs['x'].shape)}")
        return model(inputs)

    async def burst(sched: BatchScheduler) -> list[object]:
        bad = [np.zeros((1, 2), np.float32), np.zeros((1,), np.float32), column(9).astype(int)]
        calls = [sched.submit("m", {"x": column(i)}, one_column) for i in range(3)]
        calls += [sched.submit("m", {"x": x}, one_column) for x in bad]
        return await asyncio.gather(*calls, return_exceptions=True)

    with scheduler(max_batch_size=8, num_batch_threads=1, batch_timeout_micros=50_000) as s:
        results = run_async(lambda: burst(s))
    assert [out["y"].tolist() for out, _ in results[:3]] == [[[0.0]], [[2.0]], [[4.0]]]
    assert [str(e) for e in results[3:5]] == ["bad shape [1, 2]", "bad shape [1]"]
    assert results[5][0]["y"].dtype == np.int64  # another dtype: its own batch, not a cast
    assert sorted(model.batch_sizes) == [1, 3]


def test_with_padding_tasks_of_other_lengths_still_share_a_batch() -> None:
    model = DoubleModel(delay=0.0)
    params = dict(max_batch_size=8, num_batch_threads=1, batch_timeout_micros=50_000)
    with scheduler(**params, pad_variable_length_inputs=True) as sched:
        xs = [np.ones((1, 2), np.float32), np.ones((1, 3), np.float32)]
        results = run_async(
            lambda: asyncio.gather(*(sched.submit("m", {"x": x}, model) for x in xs))
        )
    assert model.batch_sizes == [2]
    assert [out["y"].shape for out, _ in results] == [(1, 3), (1, 3)]
