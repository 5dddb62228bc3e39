"""The recommender on golden run folders (tests/golden/runs, from tests/golden/make_golden.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.decide.ranking import (
    is_tfserving_default,
    merged_slo,
    parse_constraint,
    parse_objective,
)
from harness.decide.recommend import recommend, write_recommendation
from harness.errors import UserError
from harness.plan.batching_file import BatchingParams, read_batching_file
from harness.plan.points import Point, ServerConfig
from harness.plan.spec import validate_spec
from harness.store.layout import BATCHING_FILE, RECOMMENDATION_FILE
from harness.store.results import PointResult
from harness.store.run_folder import RunFolder as RunData
from harness.store.run_folder import load_run
from harness.sweep.stability import WindowFigures, judge

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "runs"
CHOSEN = "mbs32-bt0-nbt2-meb16-r1-grpc-c64"


@pytest.fixture(scope="module")
def grid():
    return load_run(GOLDEN / "grid")


@pytest.fixture(scope="module")
def grid_rec(grid):
    return recommend(grid)


def by_key(rec):
    return {c.key: c for c in rec.ranking}


def test_best_throughput_meeting_every_constraint_is_chosen(grid_rec):
    assert grid_rec.status == "met"
    assert grid_rec.chosen.key == CHOSEN
    feasible = [c for c in grid_rec.ranking if c.feasible]
    best = max(c.metrics["throughput_rps"] for c in feasible)
    assert grid_rec.chosen.metrics["throughput_rps"] == best
    assert grid_rec.sentence.startswith("Use max_batch_size=32, batch_timeout_micros=0")
    assert "p99 latency ≤ 50 ms" in grid_rec.sentence


def test_repeats_combine_by_their_worst_figure(grid_rec, grid):
    # mbs32-bt5000 at 64 clients met the p99 SLO in repeat 0 only: it is not recommended.
    risky = by_key(grid_rec)["mbs32-bt5000-nbt2-meb16-r1-grpc-c64"]
    repeats = [r for r in grid.results if r.key.startswith(risky.key + "-rep")]
    p99s = [r.metrics["latency_p99_ms"] for r in repeats]
    assert min(p99s) <= 50 < max(p99s)
    assert risky.metrics["latency_p99_ms"] == max(p99s)
    assert risky.metrics["throughput_rps"] == min(r.metrics["throughput_rps"] for r in repeats)
    assert not risky.feasible and set(risky.misses) == {"latency_p99_ms"}
    assert risky.metrics["throughput_rps"] > grid_rec.chosen.metrics["throughput_rps"]


def test_failed_invalid_and_unstable_points_are_left_out_with_why(grid_rec):
    reasons = {e["key"]: e["reason"] for e in grid_rec.excluded}
    assert reasons["mbs8-bt0-nbt2-meb16-r1-grpc-c16-rep1"].startswith("failed: server exited")
    assert reasons["mbs8-bt0-nbt2-meb16-r1-grpc-c64-rep0"].startswith("invalid: load generator")
    assert reasons["mbs8-bt5000-nbt2-meb16-r1-grpc-c64-rep1"].startswith("unstable:")
    counted = {key for c in grid_rec.ranking for key in c.point_keys}
    assert not counted & set(reasons)
    # The other repeat of the unstable configuration still counts, alone.
    assert by_key(grid_rec)["mbs8-bt5000-nbt2-meb16-r1-grpc-c64"].point_keys == [
        "mbs8-bt5000-nbt2-meb16-r1-grpc-c64-rep0"
    ]


def test_runners_up_are_other_configurations_in_rank_order(grid_rec):
    keys = [c.key for c in grid_rec.runners_up]
    assert keys[0] == "bdefault-r1-grpc-c64"
    configs = [c.point.server.key for c in grid_rec.runners_up]
    assert len(set(configs)) == len(configs) and grid_rec.chosen.point.server.key not in configs
    ranks = [grid_rec.ranking.index(c) for c in grid_rec.runners_up]
    assert ranks == sorted(ranks)


def test_margins_give_the_headroom_to_each_bound(grid_rec):
    margins = {m["metric"]: m for m in grid_rec.margins}
    p99 = grid_rec.chosen.metrics["latency_p99_ms"]
    assert margins["latency_p99_ms"]["headroom"] == pytest.approx((50 - p99) / 50)
    assert margins["error_rate"]["met"] is True


def test_baselines_unbatched_and_tfserving_defaults_at_the_same_load(grid_rec):
    unbatched = grid_rec.baselines["unbatched"]
    assert unbatched["key"] == "nobatch-r1-grpc-c64"
    nobatch = by_key(grid_rec)["nobatch-r1-grpc-c64"].metrics["throughput_rps"]
    assert unbatched["gain"] == pytest.approx(
        grid_rec.chosen.metrics["throughput_rps"] / nobatch - 1
    )
    assert grid_rec.baselines["tfserving_default"]["key"] == "bdefault-r1-grpc-c64"
    assert "× the unbatched baseline's throughput" in grid_rec.sentence
    assert "over TF Serving's default batching" in grid_rec.sentence


def test_when_none_passes_candidates_are_ranked_by_how_far_they_missed(grid):
    rec = recommend(grid, slo={"latency_p99_ms": 5.0})
    assert rec.status == "none_met"
    assert all(not c.feasible for c in rec.ranking)
    misses = [c.worst_miss for c in rec.ranking]
    assert misses == sorted(misses)
    closest = rec.chosen
    assert closest.misses["latency_p99_ms"] == pytest.approx(
        closest.metrics["latency_p99_ms"] / 5.0 - 1
    )
    assert rec.sentence.startswith("No configuration met the SLO (p99 latency ≤ 5 ms)")
    assert f"missed p99 latency by {closest.worst_miss:.0%}" in rec.sentence
    assert "does NOT meet" in rec.batching_text


def test_pareto_front_holds_exactly_the_undominated_candidates(grid_rec):
    front = {c.key for c in grid_rec.pareto}

    def dominated(c, by):
        t, p = c.metrics["throughput_rps"], c.metrics["latency_p99_ms"]
        bt, bp = by.metrics["throughput_rps"], by.metrics["latency_p99_ms"]
        return bt >= t and bp <= p and (bt > t or bp < p)

    for c in grid_rec.ranking:
        beaten = any(dominated(c, other) for other in grid_rec.ranking)
        assert (c.key in front) == (not beaten), c.key
    # The fastest point is on the front although it misses the SLO; the front says so.
    entries = {e["key"]: e for e in grid_rec.as_dict()["pareto_front"]}
    assert entries["mbs32-bt5000-nbt2-meb16-r1-grpc-c64"]["meets_constraints"] is False


def test_objective_minimise_p99_and_weights(grid):
    fastest = recommend(grid, objective=parse_objective("minimize:latency_p99_ms"))
    feasible = [c for c in fastest.ranking if c.feasible]
    assert fastest.chosen.metrics["latency_p99_ms"] == min(
        c.metrics["latency_p99_ms"] for c in feasible
    )
    weighted = recommend(grid, objective=parse_objective("weights:throughput_rps=1"))
    assert weighted.chosen.key == CHOSEN  # throughput alone: the same as maximising it


def test_weights_must_be_positive(grid):
    with pytest.raises(UserError, match="weights must be > 0"):
        recommend(grid, objective=parse_objective("weights:latency_p99_ms=-1"))


def test_constraint_on_any_metric(grid):
    rec = recommend(grid, slo=merged_slo({}, constraints=["latency_p50_ms<=4"]))
    assert rec.status == "met" and rec.chosen.metrics["latency_p50_ms"] <= 4
    passing = [c for c in rec.ranking if c.metrics["latency_p50_ms"] <= 4]
    assert rec.chosen.metrics["throughput_rps"] == max(c.metrics["throughput_rps"] for c in passing)
    assert [c["metric"] for c in rec.as_dict()["constraints"]] == ["latency_p50_ms"]


def test_an_unbatched_choice_has_no_batching_file_or_flags(grid):
    rec = recommend(grid, objective=parse_objective("minimize:batch_size_mean"))
    assert rec.chosen.point.batching is None
    assert rec.batching_text is None
    assert "enable_batching" not in rec.commands["reference_server"]


def test_max_rate_runs_rank_configurations_by_their_worst_repeat_max_rate():
    rec = recommend(GOLDEN / "max-rate")
    assert rec.mode == "max_rate" and rec.status == "met"
    assert rec.chosen.key == "mbs32-bt2000-r1-grpc"
    searches = json.loads((GOLDEN / "max-rate" / "max_rate.json").read_text())["searches"]
    rates = {}
    for s in searches:
        rates.setdefault(s["lane_key"].rsplit("-rep", 1)[0], []).append(s["max_rate_rps"])
    assert rec.chosen.max_rate_rps == min(rates["mbs32-bt2000-r1-grpc"])
    assert rec.runners_up[0].max_rate_rps == min(rates["nobatch-r1-grpc"])
    assert rec.baselines["unbatched"]["gain"] == pytest.approx(
        min(rates["mbs32-bt2000-r1-grpc"]) / min(rates["nobatch-r1-grpc"]) - 1
    )
    assert "sustains 2,500 req/s" in rec.sentence


def test_written_files_are_the_recommendation(tmp_path):
    run = shutil.copytree(GOLDEN / "grid", tmp_path / "grid")
    rec = recommend(run)
    paths = write_recommendation(rec, run)
    data = json.loads(paths["recommendation"].read_text())
    assert data["schema_version"] == 1 and data["chosen"]["key"] == CHOSEN
    assert read_batching_file(run / BATCHING_FILE) == rec.chosen.point.batching
    command = data["commands"]["tensorflow_model_server"][0]
    assert f"--batching_parameters_file={run.resolve() / BATCHING_FILE}" in command
    # Recommending again without batching removes the stale batching file.
    unbatched = recommend(run, objective=parse_objective("minimize:batch_size_mean"))
    write_recommendation(unbatched, run)
    assert not (run / BATCHING_FILE).exists() and (run / RECOMMENDATION_FILE).exists()


def test_replicated_commands_use_consecutive_ports_and_batchbench_serve():
    spec = validate_spec(
        {"model": {"base_path": "/models/m", "name": "m"}, "load": {"concurrency": [8]}}, "s"
    )
    point = Point(ServerConfig(BatchingParams(max_batch_size=16), 2), "concurrency", 8, "grpc")
    figures = [WindowFigures(1000, 10, 2000)] * 3
    result = PointResult(
        point,
        metrics={"throughput_rps": 1000.0, "latency_p99_ms": 10.0},
        stability=judge(figures).as_dict(),
    )
    data = RunData(spec, [result], run_id="r", environment={"cpu_count": 4})
    commands = recommend(data).commands
    tfs = commands["tensorflow_model_server"]
    assert [c.split()[1:3] for c in tfs] == [
        ["--port=8500", "--rest_api_port=8501"],
        ["--port=8502", "--rest_api_port=8503"],
    ]
    # Each replica gets half of the 4 cores, as the sweep gave it.
    assert all("--tensorflow_intra_op_parallelism=2" in c for c in tfs)
    assert commands["reference_server"].startswith("batchbench serve --replicas=2 --model_name=m")
    assert "--port" not in commands["reference_server"]
    assert commands["setup"] == []


def test_a_run_with_nothing_to_count_says_so(grid):
    data = RunData(grid.spec, [r for r in grid.results if r.status == "failed"])
    rec = recommend(data)
    assert rec.status == "no_candidates" and rec.chosen is None
    assert "all 1 point(s) were left out" in rec.sentence


def test_tfserving_defaults_are_recognised_written_out_or_not():
    assert is_tfserving_default(BatchingParams(), cpu_count=2)
    explicit = BatchingParams(1000, 0, 10, num_batch_threads=2)
    assert is_tfserving_default(explicit, cpu_count=2)
    assert not is_tfserving_default(explicit, cpu_count=8)
    assert not is_tfserving_default(BatchingParams(max_batch_size=32), cpu_count=2)
    assert not is_tfserving_default(None, cpu_count=2)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("latency_p99_ms>=3", "its bound is latency_p99_ms<=X"),
        ("p99<=3", "unknown metric 'p99'; valid metric IDs: throughput_rps"),
        ("latency_p99_ms=3", "expects METRIC<=X or METRIC>=X"),
    ],
)
def test_bad_constraints_name_the_problem(text, message):
    with pytest.raises(UserError, match=message):
        parse_constraint(text)


@pytest.mark.parametrize("text", ["fastest", "maximize:nope", "weights:throughput_rps"])
def test_bad_objectives_name_the_forms(text):
    with pytest.raises(UserError, match="--objective"):
        parse_objective(text)


def test_command_line_bounds_override_the_specs():
    slo = merged_slo(
        {"latency_p99_ms": 50, "error_rate": 0.01}, p99_ms=20, constraints=["latency_p95_ms<=9"]
    )
    assert slo == {"latency_p99_ms": 20, "error_rate": 0.01, "latency_p95_ms": 9}
