"""The report's data, built from the golden run folders: sections, figures, flags, inputs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from harness.decide import recommend
from harness.errors import UserError
from harness.report import build_report_data
from harness.report.data import versions_section
from harness.report.render import render_html, write_report
from harness.store.results import write_json
from harness.store.run_folder import load_run

RUNS = Path(__file__).resolve().parents[1] / "golden" / "runs"
SECTIONS = (
    "run",
    "summary",
    "tradeoff",
    "heatmaps",
    "latency",
    "batching",
    "points",
    "environment",
    "spec",
)


def point_files(run: str) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (RUNS / run / "points").glob("*.json")}


@pytest.fixture(scope="module")
def grid() -> dict:
    return build_report_data(RUNS / "report-grid")


@pytest.fixture(scope="module")
def maxrate() -> dict:
    return build_report_data(RUNS / "report-maxrate")


@pytest.fixture(scope="module")
def single() -> dict:
    return build_report_data(RUNS / "report-single")


@pytest.mark.parametrize("run", ["report-grid", "report-maxrate", "report-single"])
def test_every_section_is_there_and_the_data_is_strict_json(run):
    data = build_report_data(RUNS / run)
    assert set(SECTIONS) <= set(data)
    text = json.dumps(data, allow_nan=False)  # no NaN or infinity reaches report.json
    assert json.loads(text) == data


def test_every_point_is_a_row_with_its_own_figures(grid):
    files = point_files("report-grid")
    rows = {row["key"]: row for row in grid["points"]}
    assert set(rows) == set(files)
    for key, stored in files.items():
        for metric_id, value in stored["metrics"].items():
            assert rows[key]["metrics"][metric_id] == value


def test_failed_unstable_and_invalid_points_are_flagged_with_their_reasons(grid):
    rows = {row["key"]: row for row in grid["points"]}
    failed = rows["mbs32-bt2000-nbt2-meb16-r2-grpc-c64-rep0"]
    assert failed["status"] == "failed"
    assert "exited with status 1" in failed["reason"]
    assert "Address already in use" in failed["log_tail"]
    assert rows["mbs8-bt2000-nbt2-meb16-r1-grpc-c64-rep0"]["stability"] == "unstable"
    invalid = rows["mbs8-bt0-nbt2-meb16-r2-grpc-c16-rep0"]
    assert invalid["valid"] is False
    assert "generator" in invalid["invalid_reasons"][0]
    assert (
        grid["counts"] | {"planned": 22, "stored": 22, "failed": 1, "unstable": 1} == grid["counts"]
    )
    assert grid["counts"]["invalid"] == 1


def test_slo_misses_are_judged_with_the_registry(grid):
    rows = {row["key"]: row for row in grid["points"]}
    baseline = rows["nobatch-r1-grpc-c64-rep0"]
    assert baseline["meets_slo"] is False
    assert baseline["slo_misses"]["latency_p99_ms"] > 0
    assert rows["mbs32-bt2000-nbt2-meb16-r1-grpc-c64-rep0"]["meets_slo"] is True


def test_the_summary_is_the_recommenders(grid):
    expected = recommend.recommend(recommend.load_run(RUNS / "report-grid"))
    summary = grid["summary"]
    assert summary["sentence"] == expected.sentence
    assert summary["recommendation"]["point_keys"] == expected.chosen.point_keys
    assert summary["recommendation"]["batching_parameters"] == expected.batching_text
    against = {g["name"] for g in summary["gains"]}
    assert against == {"unbatched", "tfserving_default"}
    chosen = [d for d in grid["tradeoff"]["points"] if d["recommended"]]
    assert [d["config"] for d in chosen] == [summary["setting"]["config"]]


def test_a_stored_recommendation_json_is_shown_as_written(tmp_path):
    run = shutil.copytree(RUNS / "report-grid", tmp_path / "run")
    rec = recommend.recommend(recommend.load_run(run), slo={"latency_p99_ms": 5.0})
    recommend.write_recommendation(rec, run)
    data = build_report_data(run)
    assert data["summary"]["sentence"] == rec.sentence
    assert data["summary"]["recommendation"]["source"] == "recommendation.json"
    assert data["slo"] == {"latency_p99_ms": 5.0}


def test_pareto_front_comes_from_the_recommender(grid):
    expected = recommend.recommend(recommend.load_run(RUNS / "report-grid"))
    front = {c.key for c in expected.pareto}
    marked = {f"{d['config']}-c{d['load']:g}" for d in grid["tradeoff"]["points"] if d["pareto"]}
    assert marked == front


def test_heatmap_cells_are_the_best_throughput_under_the_slo(grid):
    files = point_files("report-grid")
    one_replica = next(h for h in grid["heatmaps"] if h["replicas"] == 1)
    row = one_replica["max_batch_size"].index(32)
    col = one_replica["batch_timeout_micros"].index(2000)
    candidates = [
        p["metrics"]["throughput_rps"]
        for key, p in files.items()
        if key.startswith("mbs32-bt2000-nbt2-meb16-r1-")
        and p["valid"]
        and p["metrics"]["latency_p99_ms"] <= 20
    ]
    assert one_replica["cells"][row][col] == max(candidates)
    assert {h["replicas"] for h in grid["heatmaps"]} == {1, 2}
    assert one_replica["baseline"] is None  # the unbatched baseline never met the SLO


def test_when_no_point_meets_the_slo_heatmaps_show_throughput_at_the_top_load(tmp_path):
    run = shutil.copytree(RUNS / "report-grid", tmp_path / "run")
    rec = recommend.recommend(recommend.load_run(run), slo={"latency_p99_ms": 0.001})
    recommend.write_recommendation(rec, run)
    heatmaps = build_report_data(run)["heatmaps"]
    assert heatmaps and all(h["quantity"].startswith("no point met the SLO") for h in heatmaps)
    assert all("throughput at 64 clients" in h["quantity"] for h in heatmaps)
    assert any(cell is not None for h in heatmaps for row in h["cells"] for cell in row)


def test_latency_curves_for_the_recommendation_and_the_baseline(grid):
    latency = grid["latency"]
    assert latency["mode"] == "curves"
    configs = [s["config"] for s in latency["series"]]
    assert configs[0] == grid["summary"]["setting"]["config"]
    assert "nobatch-r1-grpc" in configs
    for series in latency["series"]:
        assert series["loads"] == [16, 64]
        assert all(len(series[p]) == 2 for p in latency["percentiles"])


def test_batching_rows_come_from_telemetry(grid):
    files = point_files("report-grid")
    row = next(
        r
        for r in grid["batching"]["rows"]
        if r["config"] == "mbs32-bt2000-nbt2-meb16-r1-grpc" and r["load"] == 64
    )
    telemetry = files["mbs32-bt2000-nbt2-meb16-r1-grpc-c64-rep0"]["telemetry"]
    assert row["batches"] == telemetry["batches"]
    assert sum(b["count"] for b in row["batch_size_buckets"]) == sum(
        b["count"] for b in telemetry["batch_size_buckets"]
    )
    assert row["batch_size_buckets"][-1]["label"] == "17–32"
    assert all(
        r["config"].startswith("mbs") or "bdefault" in r["config"] for r in grid["batching"]["rows"]
    )


def test_max_rate_runs_map_the_searched_rate_and_average_repeats(maxrate):
    searches = json.loads((RUNS / "report-maxrate" / "max_rate.json").read_text())["searches"]
    batched = [s["max_rate_rps"] for s in searches if s["lane_key"].startswith("mbs32")]
    (grid,) = maxrate["heatmaps"]
    assert grid["quantity"].startswith("max rate under the SLO")
    assert grid["cells"] == [[sum(batched) / len(batched)]]
    assert len(maxrate["max_rate"]) == len(searches) == 4
    assert maxrate["latency"]["mode"] == "curves"
    assert maxrate["latency"]["load_kind"] == "rate"
    assert (
        "max rate" in maxrate["summary"]["sentence"] or "sustains" in maxrate["summary"]["sentence"]
    )


def test_repeats_are_averaged_into_one_setting(maxrate):
    files = point_files("report-maxrate")
    both = [
        files[k]["metrics"]["throughput_rps"]
        for k in ("nobatch-r1-grpc-rps400-rep0", "nobatch-r1-grpc-rps400-rep1")
    ]
    dot = next(
        d
        for d in maxrate["tradeoff"]["points"]
        if d["config"] == "nobatch-r1-grpc" and d["load"] == 400
    )
    assert dot["throughput_rps"] == pytest.approx(sum(both) / 2)


def test_a_single_external_point_without_telemetry_or_slo(single):
    assert len(single["points"]) == 1
    assert single["slo"] == {}
    assert single["points"][0]["meets_slo"] is None
    assert single["points"][0]["label"].startswith("external server")
    assert single["heatmaps"] == []
    assert single["batching"]["rows"] == []
    assert single["latency"]["mode"] == "bars"
    assert single["comparison"] is None


def test_points_not_measured_are_counted(tmp_path):
    run = shutil.copytree(RUNS / "report-single", tmp_path / "run")
    for path in (run / "points").glob("*.json"):
        path.unlink()
    data = build_report_data(run)
    assert data["counts"]["not_measured"] == 1
    assert data["points"] == []
    assert data["tradeoff"]["points"] == []
    assert (
        "No recommendation" in data["summary"]["sentence"]
        or "No configuration" in data["summary"]["sentence"]
    )
    assert "<svg" not in render_html(data)


def test_compare_json_is_shown_as_a_table(tmp_path):
    run = shutil.copytree(RUNS / "report-single", tmp_path / "run")
    rows = [
        {
            "key": "a",
            "metric": "throughput_rps",
            "base": 100.0,
            "current": 80.0,
            "change": -0.2,
            "verdict": "regression",
            "base_samples": [1, 2],
        },
        {"key": "b", "metric": None, "verdict": "missing_in_current", "note": "gone"},
    ]
    write_json(run / "compare.json", {"verdict": "regression", "rows": rows, "points": [{}]})
    comparison = build_report_data(run)["comparison"]
    assert comparison["summary"] == {"verdict": "regression"}
    assert comparison["columns"] == [
        "key",
        "metric",
        "base",
        "current",
        "change",
        "verdict",
        "note",
    ]
    assert comparison["rows"][0] == ["a", "throughput_rps", 100.0, 80.0, -0.2, "regression", None]
    assert comparison["verdicts"] == ["regression", "missing_in_current"]


def test_the_html_is_self_contained_and_deterministic(tmp_path):
    run = shutil.copytree(RUNS / "report-grid", tmp_path / "run")
    html = write_report(run)
    text = html.read_text()
    assert "http:" not in text and "https:" not in text
    links = re.findall(r'(?:href|src)="([^"]*)"', text)
    # In-page anchors, and the heatmaps' pixels as data: URLs inside their SVG.
    assert links and all(link.startswith(("#", "data:image/png")) for link in links)
    assert json.loads((run / "report.json").read_text()) == build_report_data(run)
    assert write_report(run).read_text() == text


def test_not_a_run_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a batchbench run folder"):
        build_report_data(tmp_path)


# --- traffic: arrivals and mixes (a real 4-point sweep: Poisson and gamma CV 4, rows 1 or 4) ---


@pytest.fixture(scope="module")
def traffic() -> dict:
    return build_report_data(RUNS / "report-traffic")


def test_each_traffic_is_its_own_setting_and_heatmap(traffic):
    labels = sorted(row["label"] for row in traffic["batching"]["rows"])
    assert labels == [
        "mbs 16 · 0 ms · 1 replica · Poisson · rows 1:0.7, 4:0.3",
        "mbs 16 · 0 ms · 1 replica · gamma CV 4 · rows 1:0.7, 4:0.3",
        "mbs 16 · 2 ms · 1 replica · Poisson · rows 1:0.7, 4:0.3",
        "mbs 16 · 2 ms · 1 replica · gamma CV 4 · rows 1:0.7, 4:0.3",
    ]
    titles = [grid["title"] for grid in traffic["heatmaps"]]
    assert titles == [
        "1 replica, Poisson · rows 1:0.7, 4:0.3",
        "1 replica, gamma CV 4 · rows 1:0.7, 4:0.3",
    ]


def test_padding_waste_and_its_compute_come_from_the_points_telemetry(traffic):
    files = point_files("report-traffic")
    key = "mbs16-bt2000-nbt2-meb16-abs4.8.16-r1-grpc-rps200-gamma4-rows1w0.7_4w0.3-rep0"
    telemetry, metrics = files[key]["telemetry"], files[key]["metrics"]
    config = "mbs16-bt2000-nbt2-meb16-abs4.8.16-r1-grpc-gamma4-rows1w0.7_4w0.3"
    row = next(r for r in traffic["batching"]["rows"] if r["config"] == config)
    assert row["padding_rows"] == telemetry["padding_rows"] > 0
    assert row["padding_ratio"] == pytest.approx(telemetry["padding_rows"] / telemetry["rows"])
    compute = telemetry["batches"] * telemetry["compute_time_mean_ms"]
    spent = compute * telemetry["padding_rows"] / telemetry["rows"]
    assert row["padding_compute_ms"] == pytest.approx(spent)
    assert row["padding_compute_ms_per_1k"] == pytest.approx(1000 * spent / metrics["requests"])


def test_timelines_of_the_top_configurations_are_in_the_report(traffic):
    files = point_files("report-traffic")
    assert traffic["timelines"]
    for series in traffic["timelines"]:
        stored = files[series["key"]]["timeline"]
        assert series["at_s"] == [entry["at_s"] for entry in stored]
        assert series["latency_p99_ms"] == [entry["latency_p99_ms"] for entry in stored]
        assert series["warmup"][0] is True
    html = render_html(traffic)
    assert html.count('id="timelines"') == 1
    assert html.count("<svg") >= len(traffic["timelines"]) + 1


def test_a_point_answered_by_two_versions_shows_them_side_by_side(tmp_path, traffic):
    """A point file with ``by_version`` (an A/B of versions) gets a Versions table: each
    version's share and p99 with intervals over the timeline's seconds."""
    run = shutil.copytree(RUNS / "report-traffic", tmp_path / "run")
    path = next((run / "points").glob("*.json"))
    point = json.loads(path.read_text())
    for entry in point["timeline"]:
        ok = entry["ok"]
        entry["versions"] = {
            "1": {"ok": ok - ok // 10, "errors": {}, "latency_p99_ms": 10.0 + entry["at_s"] % 2},
            "2": {"ok": ok // 10, "errors": {}, "latency_p99_ms": 30.0 + entry["at_s"] % 3},
        }
    point["by_version"] = [
        {"version": "1", "count": 900, "error_count": 0, "latency_p99_ms": 11.0},
        {"version": "2", "count": 100, "error_count": 2, "errors": {"INTERNAL": 2}},
    ]
    path.write_text(json.dumps(point))
    (shown,) = versions_section(load_run(run))
    assert shown["key"] == point["key"]
    rows = {row["version"]: row for row in shown["rows"]}
    assert rows["2"]["share"] == pytest.approx(102 / 1002) and rows["2"]["error_count"] == 2
    assert rows["2"]["p99_change"]["ci_low"] > 1.0  # 30-32 ms against 10-11 ms
    assert traffic["versions"] == []  # no point of the stored run has two versions
    html = render_html({**traffic, "versions": [shown]})
    assert html.count('id="versions"') == 1 and 'href="#versions"' in html
