"""Where unbatched runs go: the pure run-cost policy behind inline session runs."""

from __future__ import annotations

from reference_server.run_costs import RunCosts

KEY = ("mlp", 1, "serving_default", ("y",))


def test_a_callable_never_seen_goes_to_a_thread():
    assert not RunCosts(0.001).runs_inline(KEY, 1)


def test_a_fast_callable_runs_inline_and_a_slow_one_does_not():
    costs = RunCosts(0.001)
    costs.record(KEY, 1, 0.0001)
    costs.record("slow", 1, 0.05)
    assert costs.runs_inline(KEY, 1)
    assert not costs.runs_inline("slow", 1)


def test_cost_grows_with_rows_so_a_big_request_goes_to_a_thread():
    costs = RunCosts(0.001)
    costs.record(KEY, 2, 0.0002)  # 0.1 ms per row
    assert costs.runs_inline(KEY, 10)
    assert not costs.runs_inline(KEY, 11)


def test_slow_runs_move_a_callable_off_the_loop_and_fast_runs_bring_it_back():
    costs = RunCosts(0.001, weight=0.5)
    costs.record(KEY, 1, 0.0001)
    for _ in range(2):
        costs.record(KEY, 1, 0.01)
    assert not costs.runs_inline(KEY, 1)
    for _ in range(6):
        costs.record(KEY, 1, 0.0001)
    assert costs.runs_inline(KEY, 1)
