"""The pure parts of the benchmarks: verdicts, the table, the wrk script, the computed truths."""

from __future__ import annotations

import json

import pytest

from benchmarks.common import BenchResult, result, spread, table, verdict
from benchmarks.stall import stall_truth_ms
from benchmarks.truth_synthetic import (
    deterministic_sojourns,
    md1_sojourn_quantile,
    md1_wait_cdf,
    nearest_rank,
)
from benchmarks.wrk_check import lua_string, parse_wrk, predict_body, wrk_script


@pytest.mark.parametrize(
    ("value", "target", "met"),
    [
        (0.95, ">= 0.9", True),
        (0.9, ">= 0.9", True),
        (0.89, ">= 0.9", False),
        (150.0, "<= 200", True),
        (201.0, "<= 200", False),
        (0.01, "< 0.01", False),
        (None, ">= 0.9", None),
        (float("nan"), "<= 200", None),
        (3.0, "", None),
    ],
)
def test_verdict(value, target, met):
    assert verdict(value, target) is met


def test_verdict_refuses_an_unknown_comparison_naming_the_valid_ones():
    with pytest.raises(ValueError, match=r"'>=', '<=', '<'"):
        verdict(1.0, "== 1")


def test_result_fills_in_the_verdict():
    assert result("x", 0.5, ">= 0.7").met is False
    assert result("x", 0.5).met is None


def test_table_aligns_columns_and_marks_misses():
    rows = [
        BenchResult("serving efficiency", 0.97123, "x", ">= 0.9", True),
        BenchResult("generator capacity grpc", 1500.0, "req/s", ">= 2000", False),
        BenchResult("demo wall time", None, "s"),
    ]
    lines = table(rows).splitlines()
    assert lines[0].split() == ["metric", "value", "target", "met"]
    assert len({len(line) for line in lines[:2]}) == 1  # header and rule equally wide
    assert "0.971 x" in lines[2] and lines[2].endswith("yes")
    assert "1,500 req/s" in lines[3] and lines[3].endswith("NO")
    assert "(report)" in lines[4] and lines[4].rstrip().endswith("-")


def test_spread_is_range_over_median():
    assert spread([90.0, 100.0, 110.0]) == pytest.approx(0.2)
    assert spread([5.0]) is None


def test_wrk_script_posts_the_body_as_a_lua_string():
    body = predict_body(2, 3)
    assert json.loads(body) == {"instances": [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]}
    script = wrk_script(body)
    assert 'wrk.method = "POST"' in script
    assert 'wrk.headers["Content-Type"] = "application/json"' in script
    assert 'wrk.body = "{\\"instances\\": [[0.5' in script


def test_lua_string_escapes_quotes_backslashes_and_newlines():
    assert lua_string('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'


def test_parse_wrk_reads_rate_and_non_2xx():
    output = (
        "Running 8s test @ http://127.0.0.1:1/v1/models/m:predict\n"
        "  6648 requests in 8.00s, 1.2MB read\n"
        "  Non-2xx or 3xx responses: 12\n"
        "Requests/sec:    831.02\n"
    )
    assert parse_wrk(output) == (831.02, 12)
    assert parse_wrk("connection refused") == (None, 0)


def test_md1_waits_zero_with_probability_one_minus_load():
    assert md1_wait_cdf(0.0, rate=10.0, service=0.05) == pytest.approx(0.5)
    # Almost idle: the time in system is the service time.
    assert md1_sojourn_quantile(0.5, rate=0.01, service=0.05) == pytest.approx(0.05)


def test_md1_quantiles_grow_with_load():
    light = md1_sojourn_quantile(0.99, rate=4.0, service=0.05)
    heavy = md1_sojourn_quantile(0.99, rate=16.0, service=0.05)
    assert 0.05 < light < heavy


def test_deterministic_sojourns_queue_behind_the_request_before():
    # Service 1: the second arrives while the first runs, the third finds the server idle.
    assert deterministic_sojourns([0.0, 0.5, 3.0], service=1.0) == [1.0, 1.5, 1.0]
    # A burst of three at once: each waits for all before it.
    assert deterministic_sojourns([2.0, 2.0, 2.0], service=1.0) == [1.0, 2.0, 3.0]


def test_nearest_rank_matches_hdr_histogram_rule():
    values = list(range(1, 66))  # 65 samples, as at 4 requests/s for 15 s
    assert nearest_rank(values, 0.99) == 64  # rank int(64.35 + 0.5) = 64, not the maximum
    assert nearest_rank(values, 0.5) == 33
    assert nearest_rank([7.0], 0.99) == 7.0


def test_stall_truth_adds_the_wait_until_the_stall_ends():
    truth = stall_truth_ms(window=(0.0, 10.0), stall=(4.0, 5.0), rate=10.0, usual_ms=1.0)
    assert len(truth) == 100
    assert truth[39] == pytest.approx(1.0)  # intended at 3.9 s, before the stall
    assert truth[40] == pytest.approx(1001.0)  # at 4.0 s: waits the whole second
    assert truth[45] == pytest.approx(501.0)
    assert truth[50] == pytest.approx(1.0)  # at 5.0 s: the server is back


def test_h2load_grpc_frame_and_parsers():
    from benchmarks.h2load_check import finished_seconds, grpc_frame, log_p50_ms, ok_count

    assert grpc_frame(b"abc") == b"\x00\x00\x00\x00\x03abc"
    metrics = (
        ':tensorflow:serving:request_count{model_name="mlp",status="OK"} 120\n'
        ':tensorflow:serving:request_count{model_name="mlp",status="UNAVAILABLE"} 7\n'
        ':tensorflow:serving:request_count{model_name="other",status="OK"} 3\n'
    )
    assert ok_count(metrics) == 123
    assert finished_seconds("finished in 8.00s, 1890.12 req/s, 1MB/s") == 8.0
    assert finished_seconds("finished in 950.5ms, 10 req/s") == 0.9505
    assert finished_seconds("nothing") is None
    log = "1\t200\t1000\n2\t200\t3000\n3\t500\t9000\n4\t200\t2000\n"
    assert log_p50_ms(log) == 2.0
    assert log_p50_ms("") is None


def test_h2load_command_lines():
    from pathlib import Path

    from benchmarks.h2load_check import h2load_argv

    grpc = h2load_argv("h2load", "grpc", "http://h:1", Path("b"), ["-D", "8"])
    assert grpc[:5] == ["h2load", "-D", "8", "-d", "b"]
    assert "te: trailers" in grpc and "content-type: application/grpc" in grpc
    assert grpc[-1] == "http://h:1/tensorflow.serving.PredictionService/Predict"
    assert grpc[grpc.index("-c") + 1] == "1" and grpc[grpc.index("-m") + 1] == "16"
    rest = h2load_argv("h2load", "rest", "http://h:2", Path("b"), ["-n", "5"])
    assert "--h1" in rest and rest[rest.index("-c") + 1] == "16"
    assert rest[-1] == "http://h:2/v1/models/mlp:predict"


def test_consistency_counts_runs_whose_pick_every_other_run_ties():
    from benchmarks.decisions import consistent

    picks = [("a", ["a", "b"]), ("b", ["b", "a"]), ("a", ["a"])]
    assert consistent(picks) == 2  # run 2 picked b, which run 3 does not tie with a
    assert consistent([("a", ["a"]), (None, [])]) == 0


def test_search_replay_draws_only_stored_windows_and_scores_the_pick(tmp_path):
    import json

    from benchmarks.search_replay import GOALS, Replay, load_grid, replay, truth
    from harness.plan.batching_file import BatchingParams
    from harness.plan.points import Point, ServerConfig

    def entry(mbs: int, rps: float, p99: float) -> dict:
        point = Point(ServerConfig(BatchingParams(max_batch_size=mbs), 1), "concurrency", 8, "grpc")
        windows = [
            {"throughput_rps": rps + d, "latency_p99_ms": p99, "error_rate": 0.0}
            for d in (-1, 0, 1)
        ]
        return {"point": point.as_dict(), "status": "ok", "windows": windows}

    path = tmp_path / "grid.json"
    rows = [entry(1, 100, 10), entry(2, 200, 20), entry(4, 300, 60), entry(8, 150, 90)]
    path.write_text(json.dumps({"points": rows}))
    grid = load_grid(path)
    goal = GOALS["p99 SLO"]
    assert truth(grid["mbs4-r1-grpc-c8-rep0"][1], goal) is None  # p99 60 > 50
    assert truth(grid["mbs2-r1-grpc-c8-rep0"][1], goal) == 200
    summary, drawn = Replay(grid, seed=0)(grid["mbs2-r1-grpc-c8-rep0"][0])
    assert len(drawn) == 3 and all(w in grid["mbs2-r1-grpc-c8-rep0"][1] for w in drawn)
    assert summary is not None and 199 <= summary["throughput_rps"] <= 201
    found = replay("grid", grid, goal, seed=0)
    assert found["pick"] == "mbs2-r1-grpc-c8-rep0" and found["reached"] == 1.0
    assert found["measured"] == 1.0
