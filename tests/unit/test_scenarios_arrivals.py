"""scenarios.arrivals: stages, the plan's per-user share, open-loop send times."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from scenarios.arrivals import (
    ArrivalSpec,
    MmppArrivals,
    Plan,
    SendSchedule,
    Stage,
    StageError,
    make_arrivals,
    mmpp_gap_law,
    parse_duration,
    parse_stages,
    rate_at,
    stage_index_at,
)


def test_durations() -> None:
    assert [parse_duration(text) for text in ("90", "90s", "500ms", "2m", "1h")] == [
        90.0,
        90.0,
        0.5,
        120.0,
        3600.0,
    ]
    with pytest.raises(StageError, match="cannot read duration"):
        parse_duration("soon")


def test_steps_and_ramps() -> None:
    assert parse_stages("30s:10, 1m:20") == (Stage(30.0, 10), Stage(60.0, 20))
    assert parse_stages("20s:8:100,20s:8:100-400") == (
        Stage(20.0, 8, 100.0),
        Stage(20.0, 8, 100.0, 400.0),
    )
    assert Stage(20.0, 8, 100.0, 400.0).label() == "20s 8 users 100-400/s"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("30s", "DURATION:USERS"),
        ("30s:ten", "must be numbers"),
        ("0s:1", "duration > 0"),
        ("5s:0", "users >= 1"),
        ("5s:1:100,5s:2", "in every stage"),
    ],
)
def test_bad_stages(text: str, message: str) -> None:
    with pytest.raises(StageError, match=message):
        parse_stages(text)


def test_stage_at_elapsed_time() -> None:
    stages = parse_stages("10s:1,5s:2")
    assert [stage_index_at(stages, t) for t in (0.0, 9.99, 10.0, 14.9, 15.0)] == [0, 0, 1, 1, None]


def test_ramp_rate_is_linear_and_clamped() -> None:
    assert rate_at(100.0, 300.0, 10.0, 5.0) == 200.0
    assert rate_at(100.0, 300.0, 10.0, 20.0) == 300.0
    assert rate_at(100.0, None, 10.0, 5.0) == 100.0


def _plan(**changes: object) -> Plan:
    base = dict(
        version=1, stage=0, label="", staged=False, users=8, rate_rps=200.0,
        rate_end_rps=None, duration_s=None, warmup_s=0.0, max_outstanding=100,
    )  # fmt: skip
    return Plan(**(base | changes))


def test_each_user_gets_its_share_of_rate_and_cap() -> None:
    plan = _plan()
    assert plan.user_rate(0.0) == 25.0
    assert plan.user_cap() == 13  # ceil(100 / 8): the total cap is never undercut
    assert _plan(rate_rps=None).user_rate(0.0) == 0.0
    assert _plan(rate_end_rps=400.0, duration_s=10.0).user_rate(5.0) == 37.5


def test_plan_survives_a_message_and_compares_load_without_version() -> None:
    plan = _plan()
    assert Plan.from_message(plan.to_message()) == plan
    assert plan.same_load(_plan(version=5))
    assert not plan.same_load(_plan(users=9))
    assert not plan.same_load(None)


def test_constant_arrivals_are_evenly_spaced_after_a_random_phase() -> None:
    process = make_arrivals(ArrivalSpec("constant"), "1")
    first = process.first_gap(20.0)
    assert 0.0 <= first < 0.05
    assert {process.gap(20.0) for _ in range(5)} == {0.05}


def test_zero_rate_means_no_arrival() -> None:
    for kind in ("constant", "poisson", "gamma", "mmpp"):
        assert make_arrivals(ArrivalSpec(kind), "0").first_gap(0.0) == float("inf")
    with pytest.raises(ValueError, match="constant, poisson, gamma, mmpp"):
        ArrivalSpec("closed")
    with pytest.raises(ValueError, match="cv > 0"):
        ArrivalSpec("gamma", cv=0)


RATE = 200.0
GAPS = 10_000


def _gaps(spec: ArrivalSpec, seed: str, count: int = GAPS) -> np.ndarray:
    process = make_arrivals(spec, seed)
    return np.array([process.gap(RATE) for _ in range(count)])


@pytest.mark.parametrize("cv", [0.5, 1.0, 2.0, 4.0])
def test_gamma_gaps_have_the_asked_mean_cv_and_law(cv: float) -> None:
    gaps = _gaps(ArrivalSpec("gamma", cv=cv), f"gamma-{cv}")
    assert gaps.mean() == pytest.approx(1 / RATE, rel=0.02)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.05)
    law = stats.gamma(1 / cv**2, scale=cv**2 / RATE)
    assert stats.kstest(gaps, law.cdf).pvalue > 0.01
    # The same test tells a wrong law apart: these gaps are not exponential (unless cv 1).
    if cv != 1.0:
        assert stats.kstest(gaps, stats.expon(scale=1 / RATE).cdf).pvalue < 1e-6


def test_poisson_gaps_are_exponential() -> None:
    gaps = _gaps(ArrivalSpec("poisson"), "poisson")
    assert len(set(gaps.tolist())) > 9_900
    assert gaps.mean() == pytest.approx(1 / RATE, rel=0.02)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)
    assert stats.kstest(gaps, stats.expon(scale=1 / RATE).cdf).pvalue > 0.01


def test_mmpp_gaps_follow_the_two_state_law() -> None:
    spec = ArrivalSpec("mmpp", burst_ratio=10, base_dwell_s=0.1, burst_dwell_s=0.02)
    mean, cv, cdf = mmpp_gap_law(spec, RATE)
    assert mean == pytest.approx(1 / RATE)  # the plan's rate is the mean over both states
    gaps = _gaps(spec, "mmpp")
    assert gaps.mean() == pytest.approx(mean, rel=0.02)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.05)
    # Consecutive MMPP gaps are correlated (a burst's gaps are all short), and the KS test
    # needs independent samples: every 10th gap of a longer run is close enough to that.
    spaced = _gaps(spec, "mmpp-ks", 10 * GAPS)[::10]
    assert stats.kstest(spaced, cdf).pvalue > 0.01
    assert stats.kstest(spaced, stats.expon(scale=1 / RATE).cdf).pvalue < 1e-6


def test_mmpp_processes_seeded_alike_burst_together() -> None:
    spec = ArrivalSpec("mmpp", base_dwell_s=0.1, burst_dwell_s=0.02)
    one, two = make_arrivals(spec, "a", "run"), make_arrivals(spec, "b", "run")
    other_run = make_arrivals(spec, "a", "other run")
    assert isinstance(one, MmppArrivals) and isinstance(two, MmppArrivals)
    assert isinstance(other_run, MmppArrivals)
    assert (one.state, one.left) == (two.state, two.left)
    timeline = [[p.dwell_draws[s % 2].draw() for s in range(40)] for p in (one, two, other_run)]
    assert timeline[0] == timeline[1] != timeline[2]
    assert [one.arrivals.draw() for _ in range(5)] != [two.arrivals.draw() for _ in range(5)]


def test_a_send_schedule_is_shared_and_follows_new_plans() -> None:
    schedule = SendSchedule(make_arrivals(ArrivalSpec("constant"), "0"))
    assert schedule.claim(10.0) == float("inf")  # no plan yet
    schedule.follow(1, now=100.0, rate=10.0)
    first = schedule.claim(10.0)
    assert 100.0 <= first < 100.1
    assert schedule.claim(10.0) == pytest.approx(first + 0.1)
    schedule.follow(1, now=100.0, rate=1000.0)  # same version: nothing changes
    assert schedule.next_at == pytest.approx(first + 0.2)
    schedule.follow(2, now=100.0, rate=1000.0)  # a new plan can only bring the next send closer
    assert schedule.next_at <= 100.001
