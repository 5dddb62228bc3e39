"""The regression gate on golden ci runs and on synthetic samples: verdicts, noise, outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest

from harness.ci import check_baseline, default_baseline_path, gate
from harness.decide.compare import (
    JUNIT_FILE,
    MARKDOWN_FILE,
    PointSamples,
    Side,
    compare_point,
    compare_sides,
    junit_xml,
    load_side,
    markdown,
    parse_thresholds,
    write_baseline,
)
from harness.decide.stats import bootstrap_change, resampled_centres
from harness.errors import UserError
from harness.store.layout import COMPARE_FILE
from harness.store.results import PointResult, ResultStore

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "runs"
THRESHOLDS = {"throughput_rps": 0.05, "latency_p99_ms": 0.10}


def compare_golden(current: str, base: str = "ci-base"):
    return compare_sides(load_side(GOLDEN / base), load_side(GOLDEN / current), THRESHOLDS)


def samples(key: str, throughput: list[list[float]], status: str = "ok") -> list[PointSamples]:
    """One PointSamples per repeat, with the given window throughputs."""
    return [
        PointSamples(
            key=f"{key}-rep{i}",
            group=key,
            status=status,
            stable=True,
            valid=True,
            reason=None if status == "ok" else "server exited with code 1",
            metrics={"throughput_rps": float(np.mean(windows))},
            windows={"throughput_rps": windows},
        )
        for i, windows in enumerate(throughput)
    ]


def test_an_unchanged_run_passes():
    result = compare_golden("ci-rerun")
    assert result.passed
    assert {p.status for p in result.points} == {"ok"}
    assert len(result.points) == 5  # two repeats per point key are pooled


def test_a_20_percent_throughput_drop_is_a_regression_at_every_point():
    result = compare_golden("ci-slower")
    assert not result.passed
    for point in result.points:
        throughput = next(m for m in point.metrics if m.metric_id == "throughput_rps")
        assert throughput.verdict == "regression"
        assert throughput.change.change == pytest.approx(-0.2, abs=0.05)
        assert throughput.change.high < -0.05  # even the favourable end is past the threshold


def test_a_3_percent_wobble_passes():
    result = compare_golden("ci-wobble")
    assert result.passed
    changes = [m.change.change for p in result.points for m in p.metrics]
    assert any(abs(c) > 0.02 for c in changes)  # the wobble is there, and is let through


def test_a_change_past_the_threshold_but_within_the_noise_is_not_a_regression():
    noisy_base = samples("p", [[1000, 1150, 870], [1080, 930, 1010]])
    noisy_now = samples("p", [[940, 1060, 830], [1000, 880, 950]])  # 6% lower, windows ±12%
    verdict = compare_point("p", noisy_base, noisy_now, {"throughput_rps": 0.05})
    metric = verdict.metrics[0]
    assert metric.change.change < -0.05
    assert metric.verdict == "ok" and "within the noise" in metric.note
    quiet_base = samples("p", [[1000, 1002, 998], [1001, 999, 1000]])
    quiet_now = samples("p", [[900, 902, 898], [901, 899, 900]])  # 10% lower, windows ±0.2%
    verdict = compare_point("p", quiet_base, quiet_now, {"throughput_rps": 0.05})
    assert verdict.status == "regression" and verdict.metrics[0].verdict == "regression"


def test_lower_is_better_metrics_regress_upwards():
    base = [[10.0, 10.1, 9.9], [10.0, 10.05, 9.95]]
    worse = [[12.0, 12.1, 11.9], [12.0, 12.05, 11.95]]

    def p99_samples(windows):
        return [
            PointSamples(f"p-rep{i}", "p", "ok", True, True, None, {}, {"latency_p99_ms": w})
            for i, w in enumerate(windows)
        ]

    up = compare_point("p", p99_samples(base), p99_samples(worse), {"latency_p99_ms": 0.1})
    down = compare_point("p", p99_samples(worse), p99_samples(base), {"latency_p99_ms": 0.1})
    assert up.metrics[0].verdict == "regression"
    assert down.metrics[0].verdict == "improvement" and down.status == "ok"


def test_the_bootstrap_is_seeded_and_resamples_repeats_then_windows():
    base, current = [[1.0, 2.0, 3.0], [2.0, 3.0]], [[2.0, 2.5], [3.0, 3.5, 4.0]]
    first = bootstrap_change(base, current, seed=7)
    assert first == bootstrap_change(base, current, seed=7)
    assert first != bootstrap_change(base, current, seed=8)
    assert first.low < first.change < first.high
    # A replicate can only hold values of one repeat when it draws that repeat twice.
    centres = resampled_centres([[1.0, 1.0], [5.0, 5.0]], np.random.default_rng(0), 2000)
    assert set(np.round(centres, 6)) == {1.0, 3.0, 5.0}


def test_a_point_failed_in_current_is_a_regression():
    base = samples("p", [[1000.0, 1001.0]])
    now = samples("p", [[1000.0, 1001.0]], status="failed")
    verdict = compare_point("p", base, now, THRESHOLDS)
    assert verdict.status == "regression" and "failed in CURRENT" in verdict.note
    assert {m.verdict for m in verdict.metrics} == {"failed_in_current"}


def test_points_on_one_side_only_are_reported_not_failed():
    base = Side("base", "run", samples("a", [[1.0]]) + samples("b", [[1.0]]))
    now = Side("now", "run", samples("a", [[1.0]]) + samples("c", [[1.0]]))
    result = compare_sides(base, now, THRESHOLDS)
    statuses = {p.key: p.status for p in result.points}
    assert statuses == {"a": "ok", "b": "missing_in_current", "c": "new_in_current"}
    assert result.passed
    assert "missing in current" in markdown(result).replace("_", " ")


def test_runs_with_no_point_in_common_are_a_data_error():
    base = Side("base", "run", samples("a", [[1.0]]))
    now = Side("now", "run", samples("b", [[1.0]]))
    with pytest.raises(UserError, match="no point key in common"):
        compare_sides(base, now)


def test_junit_has_one_case_per_point_and_metric():
    result = compare_golden("ci-slower")
    suite = ET.fromstring(junit_xml(result)).find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == 5 * 2 == int(suite.get("tests"))
    assert int(suite.get("failures")) == len([c for c in cases if c.find("failure") is not None])
    assert {c.get("name") for c in cases} == {"throughput_rps", "latency_p99_ms"}


def test_compare_json_has_points_and_flat_rows(tmp_path):
    result = compare_golden("ci-slower")
    data = result.as_dict()
    assert data["verdict"] == "regression" and data["counts"]["regression"] == 5
    row = data["rows"][0]
    assert {"key", "metric", "base", "current", "change", "ci_low", "ci_high", "verdict"} <= set(
        row
    )
    json.dumps(data, allow_nan=False)


def test_a_baseline_file_compares_like_the_run_it_was_made_from(tmp_path):
    baseline = write_baseline(GOLDEN / "ci-base", tmp_path / "baseline.json")
    from_file = compare_sides(load_side(baseline), load_side(GOLDEN / "ci-slower"), THRESHOLDS)
    from_run = compare_golden("ci-slower")
    assert from_file.as_dict()["rows"] == from_run.as_dict()["rows"]
    assert json.loads(baseline.read_text())["kind"] == "batchbench-baseline"


def test_a_run_with_failed_points_is_not_kept_as_baseline(tmp_path):
    run = shutil.copytree(GOLDEN / "ci-base", tmp_path / "run")
    store = ResultStore.open(run)
    point = store.load_points()[0].point
    store.write_point(PointResult.failed(point, "server never became ready"))
    with pytest.raises(UserError, match=r"1 point\(s\) of .* failed"):
        write_baseline(run, tmp_path / "baseline.json")


def test_not_a_baseline_file_is_a_data_error(tmp_path):
    other = tmp_path / "x.json"
    other.write_text('{"schema_version": 1, "points": {}}')
    with pytest.raises(UserError, match="not a batchbench baseline"):
        load_side(other)
    with pytest.raises(UserError, match="does not exist"):
        load_side(tmp_path / "missing.json")


def test_gate_needs_a_baseline_and_says_how_to_make_one(tmp_path):
    with pytest.raises(UserError, match="batchbench ci --update-baseline"):
        check_baseline(tmp_path / ".batchbench" / "ci-baseline.json")


def test_gate_updates_then_compares(tmp_path, capsys):
    baseline = tmp_path / ".batchbench" / "ci-baseline.json"
    base_run = shutil.copytree(GOLDEN / "ci-base", tmp_path / "base")
    assert gate(base_run, baseline, update=True) == 0 and baseline.is_file()
    summary = tmp_path / "step-summary.md"
    summary.write_text("earlier step\n")
    same = shutil.copytree(GOLDEN / "ci-rerun", tmp_path / "rerun")
    assert gate(same, baseline, thresholds=THRESHOLDS, step_summary=summary) == 0
    slower = shutil.copytree(GOLDEN / "ci-slower", tmp_path / "slower")
    assert gate(slower, baseline, thresholds=THRESHOLDS) == 1
    for name in (COMPARE_FILE, MARKDOWN_FILE, JUNIT_FILE):
        assert (slower / name).is_file()
    text = summary.read_text()
    assert text.startswith("earlier step\n") and "no regression" in text
    assert "REGRESSION" in capsys.readouterr().out


def test_default_baseline_is_at_the_top_of_the_repo(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert default_baseline_path(tmp_path / "a" / "b") == tmp_path / ".batchbench/ci-baseline.json"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((None, None, ["p99=0.1"]), "METRIC=FRACTION"),
        ((None, None, ["latency_p50_ms=abc"]), "latency_p50_ms: expects a fraction"),
        ((-0.1, None, []), "threshold for throughput_rps"),
    ],
)
def test_bad_thresholds_name_the_problem(args, message):
    with pytest.raises(UserError, match=message):
        parse_thresholds(*args)


def test_thresholds_default_and_extend():
    assert parse_thresholds(None, 0.2, ["latency_p50_ms=0.15"]) == {
        "throughput_rps": 0.05,
        "latency_p99_ms": 0.2,
        "latency_p50_ms": 0.15,
    }


def test_a_baseline_keeps_the_last_k_runs_of_the_same_points(tmp_path):
    path = tmp_path / "baseline.json"
    for run in ("ci-base", "ci-rerun", "ci-wobble", "ci-base"):
        write_baseline(GOLDEN / run, path, keep=3)
    data = json.loads(path.read_text())
    history = [h["source"]["run_id"] for h in data["history"]]
    assert history == ["ci-wobble", "ci-rerun"]  # newest first, the oldest dropped
    side = load_side(path)
    assert side.runs() == 3
    # The drop is larger than what three unchanged runs vary by: still caught.
    slower = compare_sides(side, load_side(GOLDEN / "ci-slower"), THRESHOLDS)
    assert not slower.passed
    assert all(m.run_noise for p in slower.points for m in p.metrics)


def test_a_single_run_baseline_file_without_history_still_loads(tmp_path):
    path = tmp_path / "old.json"
    write_baseline(GOLDEN / "ci-base", path)
    data = json.loads(path.read_text())
    data.pop("history")
    path.write_text(json.dumps(data))
    side = load_side(path)
    assert side.runs() == 1 and side.run_noise(side.points[0].group, "throughput_rps") is None


def run_side(runs: list[list[list[float]]]) -> Side:
    """A baseline of several runs of point ``p``: per run, per repeat, window throughputs."""
    points = [
        PointSamples(f"p-rep{i}", "p", "ok", True, True, None, {}, {"throughput_rps": w}, run=r)
        for r, repeats in enumerate(runs)
        for i, w in enumerate(repeats)
    ]
    return Side("baseline", "baseline", points)


def test_a_run_level_dip_inside_the_baselines_between_run_spread_passes():
    # Each run is quiet inside (windows within 1%), but whole runs differ by up to 10%.
    quiet = [[[1000.0, 1005.0, 995.0], [1002.0, 998.0, 1000.0]]]
    runs = [[[v * level for v in w] for w in quiet[0]] for level in (1.0, 0.92, 1.08)]
    current = Side("current", "run", [p for p in run_side([[[880.0, 885.0, 878.0]] * 2]).points])
    one_run = compare_sides(run_side(runs[:1]), current, THRESHOLDS)
    assert not one_run.passed  # -12% against one quiet run: beyond its own noise
    three_runs = compare_sides(run_side(runs), current, THRESHOLDS)
    assert three_runs.passed  # against runs that themselves vary by 8%: inside the noise
    assert three_runs.points[0].metrics[0].run_noise == pytest.approx(0.08, rel=0.02)
