"""Ties and margins on golden runs (tests/golden/make_decision_runs.py): a clear winner, a tie,
a marginal SLO."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from harness.decide.recommend import load_run, recommend, write_recommendation
from harness.decide.ties import tie_break_key
from harness.metrics import interval_ids

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "runs"


def rec_of(name: str):
    return recommend(load_run(GOLDEN / name))


def test_a_clear_winner_is_said_to_be_one_with_the_runner_ups_interval():
    rec = rec_of("decide-clear")
    decision = rec.decision
    assert decision.verdict == "clear_winner"
    assert decision.tied == [rec.chosen.key] == ["mbs32-bt2000-nbt2-meb16-r1-grpc-c32"]
    runner = decision.changes["mbs32-bt0-nbt2-meb16-r1-grpc-c32"]
    assert runner.high < 0  # 13% behind, beyond the noise
    assert "Clear winner at 95% on throughput_rps" in rec.sentence
    assert "the runner-up mbs32-bt0-nbt2-meb16-r1-grpc-c32 is -13" in rec.sentence


def test_a_tie_is_broken_by_the_lowest_p99_not_the_highest_throughput():
    rec = rec_of("decide-tie")
    decision = rec.decision
    assert decision.verdict == "tie"
    assert set(decision.tied) == {
        "mbs8-bt0-nbt2-meb16-r1-grpc-c32",
        "mbs32-bt0-nbt2-meb16-r1-grpc-c32",
        "mbs32-bt2000-nbt2-meb16-r1-grpc-c32",
    }
    assert decision.best == "mbs32-bt2000-nbt2-meb16-r1-grpc-c32"  # highest throughput
    assert rec.chosen.key == decision.chosen == "mbs8-bt0-nbt2-meb16-r1-grpc-c32"
    assert rec.ranking[0] is rec.chosen
    assert "3 configurations tie at 95% on throughput_rps" in rec.sentence
    assert "because it has the lowest p99" in rec.sentence
    for key in decision.tied:  # every tied member's change interval reaches zero
        change = decision.changes.get(key)
        assert change is None or change.low <= 0 <= change.high


def test_a_p99_interval_around_the_slo_is_marginal():
    rec = rec_of("decide-marginal")
    chosen = rec.chosen
    assert chosen.key == "mbs32-bt2000-nbt2-meb16-r1-grpc-c32" and chosen.feasible
    low, high = chosen.metrics["latency_p99_ci_low_ms"], chosen.metrics["latency_p99_ci_high_ms"]
    assert low < 50 < high
    assert rec.decision.marginal[chosen.key] == [
        {"metric": "latency_p99_ms", "bound": 50, "low": low, "high": high}
    ]
    assert "Marginal: its latency_p99_ms 95% CI" in rec.sentence
    # A candidate comfortably inside the SLO is not marginal.
    assert "mbs32-bt0-nbt2-meb16-r1-grpc-c32" not in rec.decision.marginal


def test_recommendation_json_carries_the_decision_and_the_intervals(tmp_path):
    rec = rec_of("decide-tie")
    data = json.loads(write_recommendation(rec, tmp_path)["recommendation"].read_text())
    decision = data["decision"]
    assert decision["verdict"] == "tie" and decision["chosen"] == data["chosen"]["key"]
    assert decision["changes_vs_best"][decision["chosen"]]["paired"] is False
    chosen = data["chosen"]["metrics"]
    assert chosen["throughput_ci_low_rps"] < chosen["throughput_ci_high_rps"]


def test_the_decision_is_the_same_every_time():
    assert rec_of("decide-tie").as_dict() == rec_of("decide-tie").as_dict()


def test_tie_break_order_is_p99_then_replicas_then_timeout_then_batch_size():
    rec = rec_of("decide-tie")
    keys = {c.key: tie_break_key(c) for c in rec.ranking}
    unbatched = keys["nobatch-r1-grpc-c32"]
    assert unbatched[1:] == (1, 0, 0)  # batching off counts as timeout 0 and size 0
    assert keys["mbs8-bt0-nbt2-meb16-r1-grpc-c32"][1:] == (1, 0, 8)
    tied = [keys[k] for k in rec.decision.tied]
    assert keys[rec.chosen.key] == min(tied)


@pytest.mark.parametrize("name", ["decide-clear", "decide-tie", "decide-marginal"])
def test_every_golden_candidate_has_its_intervals(name):
    for candidate in rec_of(name).ranking:
        for metric_id in ("throughput_rps", "latency_p99_ms"):
            low_id, high_id = interval_ids(metric_id)
            low, high = candidate.metrics[low_id], candidate.metrics[high_id]
            assert low <= high


def test_a_confirmation_decides_paired_by_round():
    # decide-confirmed: the sweep tied three configurations; the confirmation measured two of
    # them and the unbatched baseline in 4 rounds whose speed swings by 15%, one 4% ahead in
    # every round. Paired by round, that is a clear winner.
    run = load_run(GOLDEN / "decide-confirmed")
    assert run.confirmation is not None and len(run.confirmation) == 12
    rec = recommend(run)
    assert rec.confirmed and rec.decision.paired
    assert rec.decision.verdict == "clear_winner"
    assert rec.chosen.key == "mbs32-bt0-nbt2-meb16-r1-grpc-c32"
    change = rec.decision.changes["mbs8-bt0-nbt2-meb16-r1-grpc-c32"]
    assert change.paired and change.pairs == 4 and change.high < 0
    assert "paired over rounds" in rec.sentence
    assert any("confirmation run" in line for line in rec.why)
    # The same rounds taken as unpaired repeats: their swings hide the 4%.
    unpaired = replace(run, results=run.confirmation, confirmation=None)
    assert recommend(unpaired).decision.verdict == "tie"


def test_a_confirmation_whose_rounds_were_all_left_out_keeps_the_sweeps_pick_unconfirmed():
    # A machine busy through every round: each round point judged unstable. That confirms
    # nothing and refutes nothing, so the sweep's decision stands and says it is unconfirmed.
    run = load_run(GOLDEN / "decide-confirmed")
    verdict = {"verdict": "unstable", "reason": "throughput drifted 40% over the windows"}
    rounds = [replace(r, stability=verdict) for r in run.confirmation]
    rec = recommend(replace(run, confirmation=rounds))
    swept = recommend(replace(run, confirmation=None))
    assert rec.status == "met" and not rec.confirmed
    assert rec.chosen.key == swept.chosen.key and rec.decision.as_dict() == swept.decision.as_dict()
    assert rec.sentence.startswith(swept.sentence)
    assert "Unconfirmed: all 12 confirmation round point(s) were left out" in rec.sentence
    assert "throughput drifted 40%" in rec.why[-1]


def test_what_a_confirmation_measures():
    from harness.sweep.confirm import confirmation_points

    run = load_run(GOLDEN / "decide-tie")
    rec = recommend(run)
    swept = [r.point for r in run.results]
    keys = [p.key for p in confirmation_points(rec, 2, swept)]
    assert keys[0].startswith("mbs8-bt0") and rec.chosen.point.key == keys[0]
    assert len(keys) == 3 and keys[-1] == "nobatch-r1-grpc-c32-rep0"  # the baseline last
    # The baseline is measured again even when the sweep left its point out (unstable).
    unstable = [p for p in swept if p.batching is not None]
    assert [p.key for p in confirmation_points(rec, 2, unstable)] == keys[:2]


def test_the_report_shows_ties_intervals_and_the_confirmation_rounds(tmp_path):
    import shutil

    from harness.report.data import build_report_data
    from harness.report.render import render_html

    run = tmp_path / "run"
    shutil.copytree(GOLDEN / "decide-confirmed", run)
    data = build_report_data(run)
    decision = data["decision"]
    assert decision["confirmed"] and decision["verdict"] == "clear_winner"
    chosen = [r for r in decision["rows"] if r["chosen"]]
    assert [r["key"] for r in chosen] == ["mbs32-bt0-nbt2-meb16-r1-grpc-c32"]
    assert [len(c["rounds"]) for c in decision["rounds"]] == [4, 4, 4]
    dots = {d["config"]: d for d in data["tradeoff"]["points"]}
    assert all(d["throughput_ci"][0] < d["throughput_ci"][1] for d in dots.values())
    assert all(d["p99_ci"][0] < d["p99_ci"][1] for d in dots.values())
    html = render_html(data)
    assert 'id="decision-table"' in html and 'id="confirmation-table"' in html
    assert "95% interval" in html  # the chart's error bars are in its legend
