"""Strategies against fake servers with known capacities: the grid, and the max-rate search."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from harness.metrics import METRICS, metric, slo_misses
from harness.plan.batching_file import BatchingParams
from harness.plan.points import Point, ServerConfig
from harness.plan.spec import MaxRateSpec
from harness.plan.strategies import GridStrategy, MaxRateSearch, Strategy

SLO = {"latency_p99_ms": 50.0, "error_rate": 0.01}


def lane(mbs: int = 8, start: float = 50.0) -> Point:
    return Point(ServerConfig(BatchingParams(max_batch_size=mbs), 1), "rate", start, "grpc")


def step_server(capacity: float) -> Callable[[Point], dict[str, float]]:
    """Answers in 5 ms up to its capacity; beyond it queues grow without bound."""

    def measure(point: Point) -> dict[str, float]:
        if point.load <= capacity:
            return {"latency_p99_ms": 5.0, "error_rate": 0.0, "throughput_rps": point.load}
        return {"latency_p99_ms": 2000.0, "error_rate": 0.0, "throughput_rps": capacity}

    return measure


def mm1_server(service_rate: float) -> Callable[[Point], dict[str, float]]:
    """An M/M/1 queue: the sojourn time is exponential with rate (mu - lambda)."""

    def measure(point: Point) -> dict[str, float]:
        headroom = service_rate - point.load
        p99 = math.inf if headroom <= 0 else 1000 * math.log(100) / headroom
        return {
            "latency_p99_ms": p99,
            "error_rate": 0.0,
            "throughput_rps": min(point.load, service_rate),
        }

    return measure


def drive(strategy: Strategy, server: Callable[[Point], dict[str, float] | None]) -> list[Point]:
    """The sweep's driver loop, with a fake server in place of real measurement."""
    ran = []
    for point in strategy.points():
        ran.append(point)
        strategy.observe(point, server(point))
    return ran


def search(**settings) -> MaxRateSpec:
    return MaxRateSpec(slo=SLO, **settings)


# --- grid ---------------------------------------------------------------------------------------


def test_grid_runs_every_point_in_order_and_skips_completed_keys():
    points = [lane(mbs) for mbs in (8, 16, 32)]
    strategy = GridStrategy(points, skip={points[1].key})
    ran = drive(strategy, step_server(1000))
    assert ran == [points[0], points[2]]
    assert set(strategy.observed) == {points[0].key, points[2].key}


# --- max-rate search ----------------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [37.0, 50.0, 333.0, 1234.5, 20_000.0])
def test_search_finds_a_step_capacity_within_five_percent(capacity):
    strategy = MaxRateSearch([lane()], search())
    drive(strategy, step_server(capacity))
    (result,) = strategy.results
    assert result.outcome == "found"
    assert 0.95 * capacity <= result.max_rate <= capacity


def test_search_finds_the_analytic_slo_rate_of_an_mm1_queue():
    mu = 800.0
    analytic = mu - 1000 * math.log(100) / SLO["latency_p99_ms"]  # p99 == SLO here
    strategy = MaxRateSearch([lane()], search())
    drive(strategy, mm1_server(mu))
    (result,) = strategy.results
    assert 0.95 * analytic <= result.max_rate <= analytic


def test_search_doubles_then_bisects_and_records_every_probe():
    strategy = MaxRateSearch([lane(start=50)], search(precision=0.05))
    ran = drive(strategy, step_server(300))
    rates = [p.load for p in ran]
    assert rates[:4] == [50, 100, 200, 400]  # doubling until the first failure
    assert rates[4] == 300  # then bisection between the last pass and the first fail
    (result,) = strategy.results
    assert [probe.rate for probe in result.probes] == rates
    assert [probe.passed for probe in result.probes][:5] == [True, True, True, False, True]
    assert result.probes[3].misses["latency_p99_ms"] > 0
    assert [probe.key for probe in result.probes] == [p.key for p in ran]


def test_search_halves_when_the_first_probe_fails():
    strategy = MaxRateSearch([lane(start=1000)], search())
    ran = drive(strategy, step_server(90))
    assert [p.load for p in ran][:5] == [1000, 500, 250, 125, 62.5]
    assert 0.95 * 90 <= strategy.results[0].max_rate <= 90


def test_search_stops_at_max_rps_when_everything_passes():
    strategy = MaxRateSearch([lane(start=100)], search(max_rps=1000))
    ran = drive(strategy, step_server(1e9))
    assert ran[-1].load == 1000
    assert strategy.results[0].max_rate == 1000
    assert strategy.results[0].outcome == "capped"


def test_search_reports_none_when_even_min_rps_fails():
    strategy = MaxRateSearch([lane(start=8)], search(min_rps=1))
    drive(strategy, step_server(0.5))
    assert strategy.results[0].max_rate is None
    assert strategy.results[0].outcome == "none"


def test_failed_probe_counts_as_a_miss():
    def crashes_above_100(point):
        return None if point.load > 100 else step_server(1e9)(point)

    strategy = MaxRateSearch([lane(start=50)], search())
    drive(strategy, crashes_above_100)
    assert 95 <= strategy.results[0].max_rate <= 100
    assert strategy.results[0].probes[2].misses == {"failed": math.inf}


def test_a_probe_that_cannot_reach_its_rate_fails_whatever_its_latency():
    def saturated(point):  # fast answers, but never more than 400/s get through
        return {"latency_p99_ms": 1.0, "error_rate": 0.0, "throughput_rps": min(point.load, 400)}

    strategy = MaxRateSearch([lane(start=50)], search(min_achieved=0.9))
    drive(strategy, saturated)
    assert 400 <= strategy.results[0].max_rate <= 400 / 0.9


def test_search_stops_at_max_probes():
    strategy = MaxRateSearch([lane(start=1)], search(max_probes=4))
    ran = drive(strategy, step_server(1e6))
    assert len(ran) == 4
    assert strategy.results[0].outcome == "probe_limit"
    assert strategy.results[0].max_rate == 8


def test_each_lane_gets_its_own_search():
    lanes = [lane(mbs=8), lane(mbs=64)]
    capacities = {8: 200.0, 64: 700.0}
    strategy = MaxRateSearch(lanes, search())
    drive(strategy, lambda p: step_server(capacities[p.batching.max_batch_size])(p))
    found = [r.max_rate for r in strategy.results]
    assert 190 <= found[0] <= 200 and 665 <= found[1] <= 700
    assert [r.lane for r in strategy.results] == lanes


def test_resume_replays_known_probes_without_running_them_again():
    server = step_server(300)
    first = MaxRateSearch([lane()], search())
    ran = drive(first, server)
    known = {p.key: server(p) for p in ran[:3]}  # the sweep was killed after three probes
    resumed = MaxRateSearch([lane()], search(), known=known)
    rerun = drive(resumed, server)
    assert rerun == ran[3:]
    assert resumed.results[0].max_rate == first.results[0].max_rate
    assert len(resumed.results[0].probes) == len(ran)


def test_observe_must_answer_the_pending_probe():
    strategy = MaxRateSearch([lane()], search())
    points = strategy.points()
    next(points)
    with pytest.raises(ValueError, match="does not answer the pending probe"):
        strategy.observe(lane().with_load(999), {})
    with pytest.raises(RuntimeError, match="no observe"):
        next(points)


def test_result_dict_is_json_ready():
    strategy = MaxRateSearch([lane()], search())
    drive(strategy, step_server(100))
    data = strategy.results[0].as_dict()
    assert data["lane_key"] == "mbs8-r1-grpc-rep0" and data["outcome"] == "found"
    assert data["probes"][0] == {
        "rate": 50,
        "passed": True,
        "misses": {},
        "key": "mbs8-r1-grpc-rps50-rep0",
    }


# --- SLO checks (metrics registry directions) ---------------------------------------------------


def test_slo_bounds_follow_each_metrics_direction():
    summary = {"latency_p99_ms": 60.0, "error_rate": 0.0, "throughput_rps": 900.0}
    misses = slo_misses(summary, {"latency_p99_ms": 50, "error_rate": 0.01, "throughput_rps": 1000})
    assert misses == {"latency_p99_ms": pytest.approx(0.2), "throughput_rps": pytest.approx(0.1)}
    assert slo_misses(summary, {"latency_p99_ms": 60, "throughput_rps": 900}) == {}


def test_a_missing_or_nan_figure_never_meets_a_bound():
    assert slo_misses({"latency_p99_ms": math.nan}, {"latency_p99_ms": 50}) == {
        "latency_p99_ms": math.inf
    }
    assert slo_misses({}, {"error_rate": 0.01}) == {"error_rate": math.inf}


def test_metric_registry_ids_are_snake_case_and_unknown_ids_list_the_valid_ones():
    for metric_id, m in METRICS.items():
        assert m.id == metric_id and metric_id == metric_id.lower()
        assert m.direction in ("higher", "lower")
        if m.unit == "ms":
            assert metric_id.endswith("_ms")
    assert metric("latency_p99_ms").label() == "p99 latency (ms)"
    with pytest.raises(KeyError, match="valid metric IDs: throughput_rps"):
        metric("p99")
