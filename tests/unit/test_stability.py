"""The stability rule on synthetic windows: when a point's measurement can stop."""

from __future__ import annotations

import math

import pytest

from harness.sweep.stability import WindowFigures, judge, spread


def windows(*pairs, requests=None):
    return [WindowFigures(t, p, requests) for t, p in pairs]


def test_three_agreeing_windows_are_stable():
    verdict = judge(windows((1000, 20), (1040, 21), (980, 19.5)))
    assert verdict.verdict == "stable" and verdict.done and verdict.stable
    assert verdict.windows_used == (0, 1, 2)
    assert verdict.throughput_spread == pytest.approx((1040 - 3020 / 3) / (3020 / 3))


def test_fewer_windows_than_needed_keep_measuring():
    verdict = judge(windows((1000, 20), (1000, 20)))
    assert verdict.verdict == "measuring" and not verdict.done
    assert verdict.reason == "2 of 3 windows"


def test_only_the_last_windows_count():
    # A slow first window (warm-up spill-over) does not hold the verdict back.
    verdict = judge(windows((300, 90), (1000, 20), (1010, 20), (990, 20.5)))
    assert verdict.verdict == "stable"
    assert verdict.windows_used == (1, 2, 3)


def test_throughput_drift_beyond_tolerance_keeps_measuring():
    verdict = judge(windows((800, 20), (1000, 20), (1200, 20)), tolerance=0.10)
    assert verdict.verdict == "measuring"
    assert "throughput spread 20.0% > 10%" in verdict.reason


def test_p99_alone_can_make_a_point_unsettled():
    verdict = judge(windows((1000, 20), (1000, 30), (1000, 20)))
    assert verdict.verdict == "measuring" and "p99 spread" in verdict.reason
    assert verdict.p99_spread == pytest.approx((30 - 70 / 3) / (70 / 3))


def test_unsettled_at_max_windows_is_unstable_not_discarded():
    drifting = windows(*[(1000 + 150 * i, 20) for i in range(5)])
    verdict = judge(drifting, max_windows=5)
    assert verdict.verdict == "unstable" and verdict.done
    assert verdict.windows_used == (2, 3, 4)


def test_tolerance_and_window_count_are_configurable():
    figures = windows((1000, 20), (1200, 20), (1000, 20), (1000, 20), (1000, 20))
    assert judge(figures[:3], tolerance=0.10).verdict == "measuring"
    assert judge(figures[:3], tolerance=0.15).verdict == "stable"
    assert judge(figures, stable_windows=5).verdict == "measuring"
    assert judge(figures, stable_windows=3).verdict == "stable"


def test_too_few_requests_are_not_stable():
    few = windows((10, 5), (10, 5), (10, 5), requests=20)
    assert judge(few, min_requests=100).verdict == "measuring"
    assert "60 requests < min_requests 100" in judge(few, min_requests=100).reason
    assert judge(few, min_requests=50).verdict == "stable"


def test_no_requests_at_all_is_never_stable():
    dead = windows((0, math.nan), (0, math.nan), (0, math.nan))
    assert judge(dead, max_windows=3).verdict == "unstable"


def test_spread():
    assert spread([5, 5, 5]) == 0
    assert spread([90, 110]) == pytest.approx(0.1)
    assert spread([0, 0]) == 0
    assert math.isinf(spread([]))
    assert math.isinf(spread([1, math.nan]))


def test_verdict_dict_is_strict_json():
    data = judge(windows((0, math.nan)), max_windows=1).as_dict()
    assert data["verdict"] == "unstable" and data["p99_spread"] is None
    assert data["windows_used"] == [0]
