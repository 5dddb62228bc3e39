"""A measurement run: the locust command line, windows from stages, combined figures."""

from __future__ import annotations

import pytest

from harness.sweep.load_runner import (
    LoadPlan,
    combine,
    generator_bound,
    locust_argv,
    metric_figures,
    window_stages,
)
from harness.sweep.measure import stage_deltas
from harness.sweep.telemetry import REQUEST_COUNT, total
from scenarios.arrivals import ArrivalSpec
from scenarios.recording import Tally, encode_histogram


def plan(**overrides) -> LoadPlan:
    values = dict(
        protocol="grpc",
        targets=("grpc://127.0.0.1:1", "grpc://127.0.0.1:2"),
        model_name="mlp",
        load_kind="concurrency",
        load=16,
        warmup_s=2,
        window_s=1.5,
        windows=3,
    )
    return LoadPlan(**{**values, **overrides})


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_closed_loop_run_is_a_warmup_stage_then_equal_windows(tmp_path):
    argv = locust_argv(plan(), tmp_path / "r.json")
    assert argv[argv.index("-f") + 1].endswith("scenarios/tfserving_grpc.py")
    assert option(argv, "--stages") == "2000ms:16,1500ms:16,1500ms:16,1500ms:16"
    assert option(argv, "--targets") == "grpc://127.0.0.1:1,grpc://127.0.0.1:2"
    assert option(argv, "--arrival") == "closed" and "--rate" not in argv
    assert option(argv, "--result-file") == str(tmp_path / "r.json")
    assert "--scrape-urls" not in argv and "--processes" not in argv


def test_open_loop_run_carries_the_rate_in_every_stage(tmp_path):
    p = plan(
        load_kind="rate",
        load=750,
        arrival=ArrivalSpec("constant"),
        processes=2,
        scrape_urls=("u1", "u2"),
    )
    argv = locust_argv(p, tmp_path / "r.json")
    assert p.users == 8  # one arrival stream per 100 requests/s
    assert option(argv, "--stages").split(",")[1] == "1500ms:8:750"
    assert option(argv, "--arrival") == "constant" and option(argv, "--rate") == "750"
    assert option(argv, "--processes") == "2"
    assert option(argv, "--scrape-urls") == "u1,u2"


def test_rest_run_uses_the_rest_scenario(tmp_path):
    argv = locust_argv(plan(protocol="rest", targets=("http://h:1",)), tmp_path / "r.json")
    assert argv[argv.index("-f") + 1].endswith("scenarios/tfserving_rest.py")


def stage(latencies_us: list[int], window_s: float, **counts) -> dict:
    tally = Tally()
    for value in latencies_us:
        tally.histogram.record_value(value)
    entry = {
        "histogram": encode_histogram(tally.histogram) if latencies_us else "",
        "sent": counts.get("sent", len(latencies_us)),
        "errors": counts.get("errors", {}),
        "late": counts.get("late", 0),
        "dropped": counts.get("dropped", 0),
        "incomplete": 0,
        "window_s": window_s,
    }
    return entry


def test_windows_combine_exactly():
    first = stage([1000] * 90 + [50_000] * 10, 1.0)
    second = stage([2000] * 100, 1.0, sent=104, errors={"UNAVAILABLE": 4})
    both = combine([first, second])
    assert both["count"] == 200 and both["sent"] == 204
    assert both["throughput_rps"] == pytest.approx(100.0)
    assert both["latency_p90_ms"] == pytest.approx(2.0, rel=0.01)
    assert both["latency_p99_ms"] == pytest.approx(50.0, rel=0.01)
    assert both["error_rate"] == pytest.approx(4 / 204)
    figures = metric_figures(both, offered_rps=None)
    assert figures["requests"] == 200 and figures["late_send_rate"] == 0


def test_open_loop_figures_count_late_and_dropped():
    entry = combine([stage([1000] * 100, 2.0, sent=100, late=5, dropped=25)])
    figures = metric_figures(entry, offered_rps=60.0)
    assert figures["offered_rate_rps"] == 60.0
    assert figures["late_send_rate"] == pytest.approx(0.05)
    assert figures["dropped_rate"] == pytest.approx(25 / 125)


def test_the_warmup_stage_is_not_a_window():
    result = {"stages": [{"index": 0}, {"index": 1}, {"index": 2}]}
    assert [s["index"] for s in window_stages(result, plan(windows=2))] == [1, 2]
    assert len(window_stages(result, plan(warmup_s=0, windows=3))) == 3


def scrape(count: int) -> str:
    return (
        "# TYPE :tensorflow:serving:request_count counter\n"
        f':tensorflow:serving:request_count{{model_name="m",status="OK"}} {count}\n'
    )


def test_server_deltas_follow_the_stage_boundaries():
    result = {
        "scrapes": [
            {"stage": 0, "texts": [scrape(0), scrape(0)]},
            {"stage": 1, "texts": [scrape(50), scrape(40)]},
            {"stage": 2, "texts": [scrape(150), scrape(150)]},
            {"stage": "end", "texts": [scrape(160), None]},
        ]
    }
    deltas = stage_deltas(result, replicas=2)
    assert set(deltas) == {0, 1}  # stage 2's end was not read from every replica
    assert [total(d, REQUEST_COUNT) for d in deltas[1]] == [100, 110]


# --- generator-bound runs ------------------------------------------------------------------------


def run_with(**processes: dict) -> dict:
    return {"generator": {"processes": processes}}


def test_a_run_within_its_generator_cpu_is_not_generator_bound():
    result = run_with(local={"cpu_percent": 60.0, "runnable_percent": 70.0})
    assert generator_bound(result, plan(cpus=(1,)), machine_cores=2) is None


def test_a_process_near_its_core_is_generator_bound():
    reason = generator_bound(run_with(local={"cpu_percent": 95.0}), plan(cpus=(1,)), 2)
    assert reason is not None and reason.startswith("generator-bound: 1 load process(es) used 95%")
    assert "on CPUs 1" in reason


def test_capacity_is_one_core_per_process_and_no_more_than_the_set():
    # Two processes sharing one core can each use only half of it.
    two_on_one = run_with(a={"cpu_percent": 47.0}, b={"cpu_percent": 47.0})
    assert generator_bound(two_on_one, plan(cpus=(1,), processes=2), 2) is not None
    assert generator_bound(two_on_one, plan(cpus=(0, 1), processes=2), 2) is None
    # Unpinned: the machine's cores are the set.
    assert generator_bound(two_on_one, plan(processes=2), machine_cores=2) is None
    on_one_core = generator_bound(two_on_one, plan(processes=2), machine_cores=1)
    assert on_one_core is not None and "on 1 CPU(s), unpinned" in on_one_core


def test_a_process_runnable_nearly_all_the_time_is_generator_bound():
    # Little CPU, but queued for it: other processes on its cores took it.
    result = run_with(local={"cpu_percent": 25.0, "runnable_percent": 98.0})
    reason = generator_bound(result, plan(cpus=(1,)), 2)
    assert reason is not None and "runnable 98% of the time" in reason
    # The master of a distributed run generates no load: its figure does not count.
    master_only = run_with(master={"cpu_percent": 5.0, "runnable_percent": 99.0})
    assert generator_bound(master_only, plan(cpus=(1,)), 2) is None


def test_no_generator_figures_is_not_a_verdict():
    assert generator_bound({}, plan(), 2) is None
