"""Search strategies against a synthetic objective with a known optimum and known noise."""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence

import optuna
import pytest

from harness.plan.batching_file import BatchingParams
from harness.plan.bayesian import BayesianSearch, journal_storage
from harness.plan.points import Point, ServerConfig
from harness.plan.search import Goal, QuickSearch, Summary, better, budget_points, drive
from harness.plan.search import Observation as Obs
from harness.plan.space import Space

MBS = [2**e for e in range(10)]  # 1 .. 512
TIMEOUTS = list(range(0, 20001, 2000))  # 11
THREADS = [1, 2, 3, 4]
NOISE = 0.03  # relative standard deviation of one window
WINDOWS = 5
GOAL = Goal("throughput_rps", True, {"latency_p99_ms": 50.0})


def points(threads: Sequence[int] = THREADS) -> list[Point]:
    return [
        Point(
            ServerConfig(
                BatchingParams(max_batch_size=m, batch_timeout_micros=t, num_batch_threads=n), 1
            ),
            "concurrency",
            32,
            "grpc",
        )
        for m in MBS
        for t in TIMEOUTS
        for n in threads
    ]


def peak(point: Point) -> float:
    """A single smooth peak at mbs 64, timeout 6000, 3 threads; p99 grows with the timeout."""
    b = point.batching
    assert b is not None and b.max_batch_size and b.num_batch_threads is not None
    x = math.log2(b.max_batch_size) - 6
    y = ((b.batch_timeout_micros or 0) - 6000) / 4000
    z = b.num_batch_threads - 3
    return 1000 * math.exp(-(x * x) / 8 - (y * y) / 4 - (z * z) / 4)


def p99(point: Point) -> float:
    b = point.batching
    assert b is not None
    return 10 + (b.batch_timeout_micros or 0) / 400  # over 50 ms above 16000 us


def noisy(
    objective: Callable[[Point], float], seed: int
) -> Callable[[Point], tuple[Summary, list[Summary]]]:
    rng = random.Random(seed)

    def measure(point: Point) -> tuple[Summary, list[Summary]]:
        windows = [
            {
                "throughput_rps": objective(point) * (1 + rng.gauss(0, NOISE)),
                "latency_p99_ms": p99(point),
            }
            for _ in range(WINDOWS)
        ]
        mean = statistics.fmean(w["throughput_rps"] for w in windows)
        return {"throughput_rps": mean, "latency_p99_ms": p99(point)}, windows

    return measure


def best_truth(strategy: QuickSearch | BayesianSearch) -> float:
    best = strategy.best()
    assert best is not None
    point = next(p for p in strategy.space.extras + points() if p.key == best.key)
    return peak(point)


OPTIMUM = max(peak(p) for p in points())


@pytest.mark.parametrize("seed", range(5))
def test_quick_finds_the_peak_within_a_tenth_of_the_space(seed: int) -> None:
    space = Space(points())
    budget = budget_points(len(space), None, 0.1)
    search = QuickSearch(space, GOAL, budget)
    measured = drive(search, noisy(peak, seed))
    assert measured <= budget
    assert best_truth(search) >= 0.95 * OPTIMUM
    assert search.stopped == "no significant improvement"


@pytest.mark.parametrize("seed", range(5))
def test_bayesian_finds_the_peak_within_its_budget(seed: int) -> None:
    space = Space(points())
    budget = budget_points(len(space), None, 0.1)
    search = BayesianSearch(space, GOAL, budget, patience=budget, seed=seed)
    measured = drive(search, noisy(peak, seed))
    assert measured <= budget
    assert best_truth(search) >= 0.9 * OPTIMUM
    assert search.best() is not None and search.best().feasible  # type: ignore[union-attr]


@pytest.mark.parametrize("seed", range(10))
def test_quick_never_moves_on_a_flat_objective(seed: int) -> None:
    """Every point is the same but for the noise: no move beats the noise."""
    search = QuickSearch(Space(points()), GOAL, budget=1000)
    drive(search, noisy(lambda point: 500.0, seed))
    assert search.moves == []
    assert search.stopped == "no significant improvement"
    # the start and its neighbourhood: one step each way on each of the 3 axes
    assert search.measured == 7


def test_a_lead_inside_the_noise_is_no_move_and_one_beyond_it_is() -> None:
    rng = random.Random(1)
    base = Obs("a", 100.0, tuple(100 * (1 + rng.gauss(0, 0.05)) for _ in range(5)), {})
    inside = Obs("b", 101.0, tuple(101 * (1 + rng.gauss(0, 0.05)) for _ in range(5)), {})
    beyond = Obs("c", 130.0, tuple(130 * (1 + rng.gauss(0, 0.05)) for _ in range(5)), {})
    assert not better(inside, base, GOAL)
    assert better(beyond, base, GOAL)
    infeasible = Obs("d", 500.0, (500.0, 501.0), {"latency_p99_ms": 0.2})
    assert not better(infeasible, base, GOAL) and better(base, infeasible, GOAL)


def test_quick_respects_exclude_rules_and_the_budget() -> None:
    space = Space([p for p in points() if p.batching and p.batching.num_batch_threads != 2])
    search = QuickSearch(space, GOAL, budget=4)
    assert drive(search, noisy(peak, 0)) == 4
    assert search.stopped == "budget"
    assert all(t["config"]["num_batch_threads"] != 2 for t in search.trials)


def test_the_baseline_is_measured_first_outside_the_space() -> None:
    baseline = Point(ServerConfig(None, 1), "concurrency", 32, "grpc")
    space = Space([baseline, *points()])
    assert space.extras == [baseline] and len(space) == len(points())
    search = QuickSearch(space, GOAL, budget=3)
    first = next(iter(search.points()))
    assert first == baseline


def test_bayesian_stops_after_patience_without_a_new_best() -> None:
    search = BayesianSearch(Space(points()), GOAL, budget=400, patience=5, seed=0)
    drive(search, noisy(lambda point: 500.0 if point.batching else 0.0, 0))
    assert search.stopped == "no new best in 5 trials"
    assert search.measured < 400


def test_bayesian_constraints_keep_the_pick_inside_the_slo() -> None:
    """The raw objective grows with the timeout, but p99 passes 50 ms above 16000 us."""

    def rising(point: Point) -> float:
        return 100 + (point.batching.batch_timeout_micros or 0) / 10  # type: ignore[union-attr]

    search = BayesianSearch(Space(points()), GOAL, budget=40, patience=40, seed=3)
    drive(search, noisy(rising, 3))
    best = search.best()
    assert best is not None and best.feasible
    trials = search.study.get_trials()
    assert any(t.constraints.get("latency_p99_ms", 0) > 0 for t in trials)  # it met the SLO
    picked = [t for t in trials if t.user_attrs.get("key") == best.key]
    assert picked and all(t.constraints == {"failed": 0, "latency_p99_ms": 0} for t in picked)


def test_bayesian_learns_to_avoid_points_that_fail_and_excluded_ones() -> None:
    """Large batches fail (the server never starts, say) and one corner is excluded: each is
    an infeasible trial, so the search spends its budget instead of asking for them again."""

    def measure(point: Point) -> tuple[Summary | None, list[Summary]]:
        if (point.batching.max_batch_size or 0) >= 64:  # type: ignore[union-attr]
            return None, []
        return noisy(peak, 5)(point)

    def excluded(point: Point) -> bool:
        b = point.batching
        return b is not None and b.max_batch_size == 1 and (b.batch_timeout_micros or 0) >= 10000

    space = Space([p for p in points() if not excluded(p)])
    assert len(space) == len(points()) - 6 * len(THREADS)
    search = BayesianSearch(space, GOAL, budget=40, patience=40, seed=5)
    drive(search, measure)
    assert search.stopped == "budget" and search.measured == 40
    best = search.best()
    assert best is not None and best.feasible


def test_bayesian_resumes_its_study_after_a_kill(tmp_path) -> None:
    """A search killed while a point runs: the stored study and the stored points carry on."""
    study = tmp_path / "study.log"
    measure = noisy(peak, 4)
    first = BayesianSearch(
        Space(points()), GOAL, 20, patience=20, seed=4, storage=journal_storage(study)
    )
    done: dict[str, tuple[Summary | None, Sequence[Summary]]] = {}
    walk = first.points()
    for point in walk:
        if len(done) == 8:
            break  # killed while the 9th point runs: asked, never told, never written
        done[point.key] = measure(point)
        first.observe(point, *done[point.key])
    states = [
        t.state
        for t in optuna.load_study(study_name="search", storage=journal_storage(study)).trials
    ]
    assert states.count(optuna.trial.TrialState.RUNNING) == 1

    second = BayesianSearch(
        Space(points()), GOAL, 20, patience=20, seed=4, storage=journal_storage(study), known=done
    )
    again = drive(second, measure)
    assert second.measured == 20 and again == 12  # the 8 stored points are not run again
    assert [t["key"] for t in second.trials[:8]] == list(done)
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in second.study.trials)
