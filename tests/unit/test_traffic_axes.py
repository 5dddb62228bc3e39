"""Traffic in a sweep spec: the arrival axis and request mixes, their checks and point keys."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.plan.points import Point, ServerConfig, expand_matrix
from harness.plan.spec import MeasurementSpec, validate_spec
from harness.plan.traffic import Sizes, Traffic, arrival_argv, parse_arrival, parse_sizes
from harness.servers.targets import RunningTarget
from harness.sweep.load_runner import LoadPlan, locust_argv
from harness.sweep.measure import (
    Measurement,
    add_run,
    kind_figures,
    load_plan,
    replay_windows,
    version_figures,
)
from harness.sweep.stability import WindowFigures, whole_pass
from scenarios.arrivals import ArrivalSpec
from tests.unit.test_load_runner import stage

OPEN = {"model": {"builtin": "mlp"}, "load": {"rate": [200]}}


def spec(**changes):
    raw = json.loads(json.dumps(OPEN))
    for section, values in changes.items():
        raw[section] = {**raw.get(section, {}), **values}
    return validate_spec(raw, "s.yaml")


def problems_of(**changes) -> str:
    with pytest.raises(UserError) as err:
        spec(**changes)
    return str(err.value)


# --- the arrival axis ---------------------------------------------------------------------------


def test_arrival_axis_gives_one_point_per_process_with_canonical_keys():
    arrivals = ["poisson", "constant", {"kind": "gamma", "cv": 4}, {"kind": "mmpp"}]
    s = spec(load={"arrival": arrivals}, server={"enable_batching": [False]})
    keys = [p.key for p in expand_matrix(s)]
    assert keys == [
        "nobatch-r1-grpc-rps200-rep0",
        "nobatch-r1-grpc-rps200-const-rep0",
        "nobatch-r1-grpc-rps200-gamma4-rep0",
        "nobatch-r1-grpc-rps200-mmpp10x1x0.2-rep0",
    ]


def test_default_traffic_leaves_keys_and_point_files_as_they_were():
    point = Point(ServerConfig(None, 1), "rate", 200, "grpc")
    assert point.key == "nobatch-r1-grpc-rps200-rep0"
    assert "traffic" not in point.as_dict()
    # a spec without traffic options, and one with a fixed number of rows, keep their keys
    fixed_rows = spec(model={"rows_per_request": 4})
    assert [p.key for p in expand_matrix(fixed_rows)] == ["bdefault-r1-grpc-rps200-rep0"]


def test_a_scalar_arrival_is_a_one_value_axis_and_its_parameters_are_checked():
    assert spec(load={"arrival": {"kind": "gamma", "cv": 0.5}}).load.arrival == [
        ArrivalSpec("gamma", cv=0.5)
    ]
    mmpp = spec(load={"arrival": {"kind": "mmpp", "burst_ratio": 5, "burst_dwell_s": 0.5}})
    assert mmpp.load.arrival[0] == ArrivalSpec("mmpp", burst_ratio=5, burst_dwell_s=0.5)


@pytest.mark.parametrize(
    ("arrival", "expected"),
    [
        ("bursty", "load.arrival[0]: must be one of poisson, constant, {kind: gamma, cv: X}"),
        ("gamma", "load.arrival[0]: gamma needs cv"),
        ({"kind": "gamma", "cv": 4, "burst_ratio": 3}, "gamma takes no 'burst_ratio'; valid keys"),
        ({"kind": "gamma", "cv": "4"}, "load.arrival[0]: gamma: cv must be a number"),
        ({"kind": "gamma", "cv": -1}, "load.arrival[0]: gamma: needs cv > 0"),
        ({"kind": "mmpp", "base_dwell_s": 0}, "mmpp: mmpp dwell times must be > 0"),
        (["poisson", "poisson"], "load.arrival: ArrivalSpec(kind='poisson'"),
    ],
)
def test_a_bad_arrival_is_one_line_naming_the_key_and_the_valid_forms(arrival, expected):
    message = problems_of(load={"arrival": arrival})
    assert "1 problem(s)" in message and expected in message


def test_closed_loop_refuses_an_arrival_process_it_would_ignore():
    message = problems_of(load={"rate": None, "concurrency": [8], "arrival": ["poisson", "mmpp"]})
    assert "load.arrival: only for open loop" in message
    # the one value older specs carried there is still accepted
    assert spec(load={"rate": None, "concurrency": [8], "arrival": "constant"})


def test_each_arrival_gets_its_own_max_rate_search_lane():
    s = spec(
        load={
            "rate": None,
            "find_max_rate": {"slo": {"latency_p99_ms": 50}},
            "arrival": ["poisson", {"kind": "gamma", "cv": 2}],
        },
        server={"enable_batching": [False]},
    )
    lanes = [p.lane_key for p in expand_matrix(s)]
    assert lanes == ["nobatch-r1-grpc-rep0", "nobatch-r1-grpc-gamma2-rep0"]


# --- request mixes ------------------------------------------------------------------------------


def test_rows_and_length_mixes_are_canonical_in_keys_whatever_the_weights_add_up_to():
    a = spec(model={"rows_per_request": {16: 1, 1: 7, 4: 2}, "length": "8-64"})
    b = spec(model={"rows_per_request": {1: 0.7, 4: 0.2, 16: 0.1}, "length": "8-64"})
    assert a.model.rows_per_request == b.model.rows_per_request
    [point] = expand_matrix(a)
    assert point.key == "bdefault-r1-grpc-rps200-rows1w0.7_4w0.2_16w0.1-len8to64-rep0"
    assert Point.from_dict(json.loads(json.dumps(point.as_dict()))) == point


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "model.rows_per_request: must be a whole number, a range 'LOW-HIGH'"),
        ("16-4", "a range goes up from 1 or more (got '16-4')"),
        ({1: 0.5, "four": 0.5}, "'four' is not a whole number >= 1"),
        ({1: -1, 4: 1}, "the weight of 1 must be a number >= 0"),
        ({1: 0, 4: 0}, "the weights add up to 0"),
    ],
)
def test_a_bad_mix_is_one_line_naming_the_key_and_the_valid_forms(value, expected):
    message = problems_of(model={"rows_per_request": value})
    assert "1 problem(s)" in message and expected in message


def test_rows_over_a_max_batch_size_on_the_axes_are_refused_before_any_load():
    message = problems_of(
        model={"rows_per_request": {1: 0.9, 16: 0.1}},
        server={"batching": {"max_batch_size": [8, 16, 32]}},
    )
    assert "model.rows_per_request: requests of up to 16 rows are over max_batch_size 8" in message


def test_sizes_parse_the_three_forms():
    assert parse_sizes(4) == Sizes.fixed(4)
    assert parse_sizes("8-64").scenario_text() == "8-64"
    assert parse_sizes("8-8") == Sizes.fixed(8)
    assert parse_sizes({1: 3, 4: 1}).scenario_text() == "1:0.75,4:0.25"
    assert parse_sizes({1: 1, 4: 0}) == Sizes.fixed(1)


# --- what Locust is told ------------------------------------------------------------------------


def test_load_plan_passes_the_arrival_process_and_the_mix_to_the_scenario(tmp_path):
    traffic = Traffic(
        parse_arrival({"kind": "mmpp", "burst_ratio": 8}),
        parse_sizes({1: 0.7, 4: 0.3}),
        Sizes.fixed(32),
    )
    plan = LoadPlan(
        protocol="grpc",
        targets=("grpc://127.0.0.1:1",),
        model_name="transformer",
        load_kind="rate",
        load=300,
        warmup_s=1,
        window_s=1,
        windows=2,
        rows=traffic.rows,
        length=traffic.length,
        arrival=traffic.arrival,
    )
    argv = locust_argv(plan, tmp_path / "r.json")
    assert " ".join(argv).count("--arrival ") == 1
    text = " ".join(argv)
    assert "--arrival mmpp --burst-ratio 8 --base-dwell 1 --burst-dwell 0.2 --rate 300" in text
    assert "--rows 1:0.7,4:0.3" in text and "--fill-dim 32" in text
    closed = locust_argv(
        LoadPlan("grpc", ("grpc://h:1",), "mlp", "concurrency", 4, 0, 1, 1), tmp_path / "r.json"
    )
    assert closed[closed.index("--arrival") + 1] == "closed" and "--fill-dim" not in closed


def test_arrival_argv_names_only_the_kinds_parameters():
    assert arrival_argv(ArrivalSpec("gamma", cv=4)) == ["--arrival", "gamma", "--arrival-cv", "4"]
    assert arrival_argv(ArrivalSpec("constant")) == ["--arrival", "constant"]


# --- what a point file keeps --------------------------------------------------------------------


def _kind_entry(rows: int, latencies_us: list[int]) -> dict:
    return {"model": "mlp", "rows": rows, "length": 8, "payload": None, **stage(latencies_us, 3.0)}


def _run(kinds: list[dict], seconds: int) -> dict:
    timeline = [{"second": s, "offered": 10, "sent": 10, "ok": 10} for s in range(seconds)]
    return {"stages": [], "by_kind": kinds, "timeline": timeline}


def test_each_runs_kinds_add_up_and_timelines_follow_each_other():
    plan = LoadPlan("grpc", ("grpc://h:1",), "mlp", "rate", 100, 1.0, 1.0, 3)
    measurement = Measurement()
    first = _run([_kind_entry(1, [1000] * 90), _kind_entry(4, [3000] * 10)], 4)
    add_run(measurement, first, plan, 0)
    add_run(measurement, _run([_kind_entry(1, [2000] * 80)], 4), plan, 0)
    by_kind = kind_figures(measurement.kinds)
    assert [(k["rows"], k["metrics"]["requests"]) for k in by_kind] == [(1, 170), (4, 10)]
    assert by_kind[0]["metrics"]["latency_p99_ms"] == pytest.approx(2.0, rel=0.01)
    assert by_kind[1]["metrics"]["throughput_rps"] == pytest.approx(10 / 3)
    seconds = [(e["run"], e["at_s"], e["warmup"]) for e in measurement.timeline]
    assert seconds[:2] == [(0, 0, True), (0, 1, False)]
    assert seconds[4:6] == [(1, 4, True), (1, 5, False)]


def test_one_kind_of_request_keeps_no_per_kind_figures():
    measurement = Measurement()
    plan = LoadPlan("grpc", ("grpc://h:1",), "mlp", "rate", 100, 1.0, 1.0, 3)
    add_run(measurement, _run([_kind_entry(1, [1000] * 10)], 4), plan, 0)
    assert kind_figures(measurement.kinds) == []


# --- a trace as the load axis -------------------------------------------------------------------

TRACE = {"trace": "day.jsonl", "speed": [1, 2.5]}


def trace_spec(**changes):
    raw = {"model": {"builtin": "mlp"}, "load": TRACE, **changes}
    return validate_spec(raw, "s.yaml")


def test_a_trace_load_gives_one_point_per_speed_keyed_by_it():
    points = expand_matrix(trace_spec(server={"batching": {"max_batch_size": [8]}}))
    assert [p.key for p in points] == ["mbs8-r1-grpc-trace1-rep0", "mbs8-r1-grpc-trace2.5-rep0"]
    assert all(p.load_kind == "trace" and p.traffic.trace == "day.jsonl" for p in points)
    assert Point.from_dict(points[1].as_dict()) == points[1]
    assert points[1].values()["speed"] == 2.5 and "arrival" not in points[1].values()


@pytest.mark.parametrize(
    ("load", "expected"),
    [
        ({"rate": [10], "speed": [2]}, "load.speed: the replay speeds of load.trace"),
        ({**TRACE, "rate": [10]}, "load: give exactly one of"),
        (
            {**TRACE, "arrival": [{"kind": "gamma", "cv": 2}]},
            "load.arrival: not with load.trace: the trace's times are the arrivals",
        ),
        ({**TRACE, "speed": [0]}, "load.speed[0]: must be > 0"),
    ],
)
def test_a_bad_trace_load_is_one_line_naming_the_key(load, expected):
    with pytest.raises(UserError, match=re.escape(expected)):
        validate_spec({"model": {"builtin": "mlp"}, "load": load}, "s.yaml")


def test_a_replay_plan_sends_the_trace_once_at_its_speed_in_windows_of_its_pass(tmp_path):
    (tmp_path / "day.jsonl").write_text("".join(f'{{"t": {i / 10}}}\n' for i in range(100)))
    trace = str(tmp_path / "day.jsonl")
    s = validate_spec({"model": {"builtin": "mlp"}, "load": {"trace": trace, "speed": [2]},
                       "measurement": {"warmup_s": 1, "window_s": 1}}, "s.yaml")  # fmt: skip
    point = expand_matrix(s)[0]
    target = RunningTarget(grpc=["grpc://h:1"], rest=[], metrics=[])
    plan = load_plan(s, point, target, windows=3)
    # One pass is 10 s at 1x (the last time plus one mean gap): 5 s at 2x, 1 s of it warm-up.
    assert (plan.warmup_s, plan.window_s, plan.windows) == (1, 1, 4)
    assert plan.trace_rps == pytest.approx(20) and plan.users == 4
    argv = " ".join(locust_argv(plan, tmp_path / "r.json"))
    assert f"--trace {trace} --trace-speed 2 --trace-loop false" in argv
    assert "--stages 1000ms:4,1000ms:4,1000ms:4,1000ms:4,1000ms:4" in argv
    assert "--warmup-stages 1" in argv and "--rate" not in argv and "--arrival" not in argv


def test_replay_windows_cover_the_pass_exactly():
    m = MeasurementSpec(warmup_s=5, window_s=5)
    assert replay_windows(60, m) == (5, 5, 11)
    assert replay_windows(63, m) == (5, pytest.approx(58 / 12), 12)  # the nearest count
    assert replay_windows(8, m) == (2, 6, 1)  # a short pass: a quarter of it warms up


def test_a_replay_is_judged_on_its_whole_pass():
    windows = [WindowFigures(100, 5, 200), WindowFigures(300, 40, 600)]  # a burst
    verdict = whole_pass(windows, min_requests=100)
    assert verdict.stable and verdict.windows_used == (0, 1)
    assert verdict.throughput_spread == pytest.approx(0.5)
    assert not whole_pass(windows, min_requests=1000).stable


# --- exclude rules on the traffic axes ----------------------------------------------------------


def test_exclude_rules_can_name_an_arrival_process_or_a_speed():
    arrivals = ["poisson", {"kind": "gamma", "cv": 4}]
    s = validate_spec(
        {
            "model": {"builtin": "mlp"},
            "server": {"batching": {"batch_timeout_micros": [0, 2000]}},
            "load": {"rate": [100], "arrival": arrivals},
            "matrix": {
                "exclude": [{"arrival": {"kind": "gamma", "cv": 4}, "batch_timeout_micros": 0}]
            },
        },
        "s.yaml",
    )
    keys = [p.key for p in expand_matrix(s)]
    assert keys == ["bt0-r1-grpc-rps100-rep0", "bt2000-r1-grpc-rps100-rep0",
                    "bt2000-r1-grpc-rps100-gamma4-rep0"]  # fmt: skip
    s = trace_spec(matrix={"exclude": [{"speed": 2.5}]})
    assert [p.key for p in expand_matrix(s)] == ["bdefault-r1-grpc-trace1-rep0"]


def test_an_exclude_rule_on_an_arrival_not_swept_is_a_typo():
    with pytest.raises(UserError) as err:
        spec(load={"arrival": ["poisson"]}, matrix={"exclude": [{"arrival": "constant"}]})
    assert (
        "matrix.exclude[0].arrival: {'kind': 'constant'} is not a value of arrival in load "
        "([{'kind': 'poisson'}])"
    ) in str(err.value)


def test_versions_add_up_over_runs_and_reach_locust():
    plan = LoadPlan("grpc", ("grpc://h:1",), "m", "concurrency", 4, 1.0, 1.0, 3)
    measurement = Measurement()
    for _ in range(2):
        versions = [
            {"version": "2", **stage([2000] * 10, 3.0)},
            {"version": "1", **stage([1000] * 90, 3.0)},
        ]
        add_run(measurement, {"stages": [], "by_version": versions, "timeline": []}, plan, 0)
    rows = version_figures(measurement.versions)
    assert [(r["version"], r["count"]) for r in rows] == [("1", 180), ("2", 20)]
    assert rows[1]["latency_p99_ms"] == pytest.approx(2.0, rel=0.01) and rows[1]["histogram"]
    one = Measurement()
    add_run(one, {"stages": [], "by_version": versions[:1], "timeline": []}, plan, 0)
    assert version_figures(one.versions) == []  # one version: nothing side by side
    split = LoadPlan(
        "grpc", ("grpc://h:1",), "m", "concurrency", 4, 1.0, 1.0, 3, version_split="a=1,b=1"
    )
    argv = locust_argv(split, Path("r.json"))
    assert argv[argv.index("--version-split") + 1] == "a=1,b=1"
