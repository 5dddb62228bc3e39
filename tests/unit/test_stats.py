"""The decision statistics on synthetic samples whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.decide.stats import (
    Change,
    bootstrap_change,
    interval,
    interval_figures,
    paired_change,
    run_spread,
    tie_break,
    tie_set,
    tied,
    with_run_noise,
)

# scipy.stats.t.ppf(0.975, 3): the two-sided 95% quantile of Student's t with 3 degrees of freedom.
T_975_DF3 = 3.182446305284263


def test_interval_of_identical_windows_is_the_value_itself():
    found = interval([[5.0, 5.0, 5.0]])
    assert (found.estimate, found.low, found.high) == (5.0, 5.0, 5.0)


def test_interval_needs_two_values():
    assert interval([[5.0]]) is None
    assert interval([[], [math.nan]]) is None


def test_interval_of_many_windows_matches_the_normal_theory_width():
    # 400 windows with sd 10: the mean's 95% interval is about ±1.96 * 10 / 20 = ±0.98.
    values = np.random.default_rng(1).normal(100.0, 10.0, 400)
    found = interval([list(values)], seed=3)
    assert found.estimate == pytest.approx(values.mean())
    assert found.low < found.estimate < found.high
    assert found.half_width() == pytest.approx(1.96 * values.std(ddof=1) / 20, rel=0.15)


def test_interval_over_repeats_sees_the_spread_between_repeats():
    # Quiet windows, repeats far apart: resampling repeats gives centres of 1, 3 or 5.
    found = interval([[1.0, 1.0, 1.0], [5.0, 5.0, 5.0]], seed=0)
    assert found.estimate == 3.0
    assert (found.low, found.high) == (1.0, 5.0)


def test_interval_is_seeded():
    groups = [list(np.random.default_rng(2).normal(10.0, 1.0, 20))]
    assert interval(groups, seed=4) == interval(groups, seed=4)
    assert interval(groups, seed=4) != interval(groups, seed=5)


def test_interval_figures_name_the_registry_ids():
    windows = [{"throughput_rps": v, "latency_p99_ms": 10.0} for v in (100.0, 110.0, 90.0)]
    figures = interval_figures("mbs8-r1-grpc-c16-rep0", [windows])
    assert figures["throughput_ci_low_rps"] < 100.0 < figures["throughput_ci_high_rps"]
    assert figures["latency_p99_ci_low_ms"] == figures["latency_p99_ci_high_ms"] == 10.0
    assert figures["latency_p50_ci_low_ms"] is None  # not measured: no interval


def test_paired_change_cancels_what_moved_both_arms():
    # Every round the machine is 30% faster or slower; B is always exactly 10% slower than A.
    rounds = np.array([1.3, 0.7, 1.0, 1.25, 0.75])
    base = 1000.0 * rounds
    change = paired_change(base, base * 0.9)
    assert change.change == pytest.approx(-0.1)
    assert (change.low, change.high) == pytest.approx((-0.1, -0.1))
    assert change.paired and change.pairs == 5
    # The same figures measured apart: the round effect is noise, the interval spans it.
    apart = bootstrap_change([list(base)], [list(base * 0.9)], seed=1)
    assert apart.low < -0.3 and apart.high > 0.1


def test_paired_change_is_the_t_interval_of_the_log_ratios():
    log_ratios = np.array([0.1, -0.1, 0.1, -0.1])  # mean 0, sd sqrt(0.04 / 3)
    change = paired_change([100.0] * 4, list(100.0 * np.exp(log_ratios)))
    half = T_975_DF3 * math.sqrt(0.04 / 3) / 2
    assert change.change == pytest.approx(0.0, abs=1e-12)
    assert change.low == pytest.approx(math.expm1(-half))
    assert change.high == pytest.approx(math.expm1(half))


def test_paired_change_refuses_what_it_cannot_pair():
    assert paired_change([100.0], [90.0]) is None  # one round: no spread
    assert paired_change([100.0, 0.0], [90.0, 80.0]) is None  # a zero: no ratio
    assert paired_change([100.0, 90.0], [90.0]) is None


def test_paired_aa_false_alarm_rate_is_the_confidence_level():
    # 2000 A/A comparisons of 6 rounds: the 95% interval misses 0 about 5% of the time.
    rng = np.random.default_rng(11)
    misses = 0
    for _ in range(2000):
        machine = rng.normal(1.0, 0.1, 6)
        a = 500.0 * machine * rng.normal(1.0, 0.03, 6)
        b = 500.0 * machine * rng.normal(1.0, 0.03, 6)
        change = paired_change(list(a), list(b))
        misses += not change.low <= 0 <= change.high
    assert 0.035 < misses / 2000 < 0.065


def test_run_noise_widens_the_interval_in_quadrature():
    change = Change(100.0, 95.0, -0.05, -0.08, -0.02)
    wider = with_run_noise(change, 0.02)  # z * sigma = 0.0392
    assert wider.change == -0.05
    assert wider.low == pytest.approx(-0.05 - math.hypot(0.03, 0.0392))
    assert wider.high == pytest.approx(-0.05 + math.hypot(0.03, 0.0392))
    assert with_run_noise(change, 0.0) is change


def test_run_spread_is_the_relative_sd_of_run_centres():
    runs = [[[90.0, 90.0], [90.0]], [[100.0], [100.0]], [[110.0, 110.0]]]
    assert run_spread(runs) == pytest.approx(10.0 / 100.0)
    assert run_spread(runs[:1]) is None


def test_tied_depends_on_which_way_is_better():
    straddles = Change(100.0, 94.0, -0.06, -0.15, 0.03)
    clearly_lower = Change(100.0, 80.0, -0.20, -0.25, -0.15)
    assert tied(straddles, higher_is_better=True)
    assert not tied(clearly_lower, higher_is_better=True)
    # For a latency, 20% lower than the best is not worse: an interval below 0 is a tie or better.
    assert tied(clearly_lower, higher_is_better=False)
    assert not tied(Change(10.0, 13.0, 0.3, 0.2, 0.4), higher_is_better=False)


def test_tie_set_keeps_the_best_first_and_drops_the_unknown():
    changes = {
        "b": Change(100.0, 94.0, -0.06, -0.15, 0.03),
        "c": Change(100.0, 80.0, -0.20, -0.25, -0.15),
        "d": None,
        "e": Change(100.0, 99.0, -0.01, -0.02, 0.00),
    }
    assert tie_set("a", changes, higher_is_better=True) == ["a", "b", "e"]


def test_tie_break_takes_the_smallest_key():
    candidates = [
        {"key": "big", "p99": 12.0, "replicas": 2},
        {"key": "calm", "p99": 9.0, "replicas": 2},
        {"key": "cheap", "p99": 9.0, "replicas": 1},
    ]
    chosen = tie_break(candidates, key=lambda c: (c["p99"], c["replicas"]))
    assert chosen["key"] == "cheap"
