"""The two command lines as a user runs them: exit codes and messages."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.models.zoo import ensure_model
from harness.store.results import ResultStore
from tests.conftest import shared_testdata

REPO = Path(__file__).resolve().parents[2]


def run(*argv: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def reference_server(*flags: str) -> subprocess.CompletedProcess:
    return run(sys.executable, "-m", "reference_server", *flags)


def batchbench(*args: str) -> subprocess.CompletedProcess:
    return run(sys.executable, "-m", "harness", *args)


def test_unknown_flag_exits_non_zero_naming_it():
    result = reference_server("--model_name=m", "--model_base_path=/x", "--batch_size=3")
    assert result.returncode == 1
    assert "unknown argument: --batch_size=3" in result.stderr


def test_malformed_flag_value_names_the_flag():
    result = reference_server("--model_base_path=/x", "--port=abc")
    assert result.returncode == 1
    assert "Couldn't interpret value abc for flag port" in result.stderr


def test_bad_batching_file_names_flag_file_and_line(tmp_path):
    bad = tmp_path / "batching.txt"
    bad.write_text("max_batch_size { value: 8 }\nmax_batch_sizes { value: 8 }\n")
    result = reference_server(
        "--model_name=m",
        f"--model_base_path={tmp_path}",
        "--enable_batching",
        f"--batching_parameters_file={bad}",
        "--port=0",
    )
    assert result.returncode == 1
    assert f"--batching_parameters_file={bad}: line 2:1" in result.stderr
    assert 'no field named "max_batch_sizes"' in result.stderr


def test_bad_model_config_file_names_the_file(tmp_path):
    bad = shared_testdata("bad_model_config.txt")
    result = reference_server(f"--model_config_file={bad}", "--port=0")
    assert result.returncode == 1
    assert f"--model_config_file={bad}: line 1" in result.stderr


def test_version_and_help_need_no_model():
    assert reference_server("--version").returncode == 0
    help_text = reference_server("--help")
    assert help_text.returncode == 0
    assert "--batching_parameters_file" in help_text.stdout


def test_make_model_writes_a_versioned_saved_model(tmp_path):
    result = batchbench("make-model", "mlp", str(tmp_path / "mlp"), "--option", "features=8")
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == tmp_path / "mlp" / "1"
    assert (tmp_path / "mlp" / "1" / "saved_model.pb").is_file()
    described = json.loads((tmp_path / "mlp" / "model.json").read_text())
    assert described["options"]["features"] == 8


def test_make_model_rejects_an_unknown_model_with_the_valid_names(tmp_path):
    result = batchbench("make-model", "resnet", str(tmp_path))
    assert result.returncode == 2
    assert "resnet" in result.stderr
    for name in ("mlp", "cnn", "transformer", "synthetic"):
        assert name in result.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)  # the session's demo run (3-6 min) is set up inside it
def test_demo_runs_the_default_sweep_and_ends_with_the_run_folder(demo_run):
    completed, run_dir = demo_run
    assert completed.returncode == 0, completed.stdout + completed.stderr
    last_lines = completed.stdout.strip().splitlines()[-2:]
    assert any(line == f"run folder: {run_dir.resolve()}" for line in last_lines)
    points = ResultStore.open(run_dir).load_points()
    planned = ResultStore.open(run_dir).planned_points()
    assert len(points) == len(planned) == 20  # 3 x 3 x 2 batched + 2 baselines
    ok = [p for p in points if p.status == "ok"]
    assert len(ok) == 20, [(p.key, p.reason) for p in points if p.status != "ok"]
    batched = [p for p in ok if p.point.batching is not None]
    assert all(p.metrics["batch_size_mean"] >= 1 for p in batched)
    assert all(p.telemetry["replica_requests"] for p in ok)


@pytest.mark.slow
@pytest.mark.timeout(900)  # the session's demo run (4-7 min) is set up inside it
def test_the_demo_confirms_its_recommendation_in_interleaved_rounds(demo_run):
    """The demo preset's confirmation: the tied-best configurations (at most 2) and the
    unbatched baseline measured again in 3 rounds, the order rotated and reversed, and the
    recommendation taken from those rounds, paired. (On a machine so loaded that no
    configuration meets the demo's SLO there is nothing to confirm, and the demo says so.)"""
    from dataclasses import replace

    from harness.decide.recommend import recommend
    from harness.store.run_folder import load_run

    completed, run_dir = demo_run
    swept = recommend(replace(load_run(run_dir), confirmation=None))
    if swept.status != "met":
        assert "confirmation: no configuration met the constraints" in completed.stdout
        assert not (run_dir / "confirm").exists()
        return
    store = ResultStore.open(run_dir / "confirm")
    planned = store.planned_points()
    groups = list(dict.fromkeys(p.key.rsplit("-rep", 1)[0] for p in planned))
    assert 1 <= len(groups) <= 3 and any(g.startswith("nobatch-") for g in groups)
    rounds = [[p.key.rsplit("-rep", 1)[0] for p in planned if p.repeat == r] for r in range(3)]
    assert rounds[0] == groups and rounds[1] == groups[::-1]  # reversed in the second round
    assert len(store.load_points()) == len(groups) * 3
    rec = recommend(load_run(run_dir))
    if not rec.confirmed:  # every round left out (a machine busy throughout): said so
        assert rec.chosen.key == swept.chosen.key and "Unconfirmed: all" in rec.sentence
        return
    if rec.status == "none_met":  # re-measured, none met the SLO: the rounds overrule the sweep
        assert rec.sentence.startswith("No configuration met the SLO") and rec.decision is None
        return
    assert rec.decision is not None and rec.decision.paired
    assert rec.chosen.key in groups
    assert 'id="confirmation-table"' in (run_dir / "report.html").read_text()


@pytest.mark.slow
@pytest.mark.timeout(900)  # the session's demo run (3-6 min) is set up inside it
def test_the_demo_report_renders_cleanly_in_a_browser(demo_run, chromium):
    completed, run_dir = demo_run
    report = run_dir / "report.html"
    assert completed.stdout.strip().splitlines()[-1] == f"report: {report.resolve()}"
    result = batchbench("report", str(run_dir), "--screenshot")
    assert result.returncode == 0, result.stdout + result.stderr
    png = run_dir / "report.png"
    assert png.stat().st_size > 50_000
    html = report.read_text()
    for section in ("Summary", "Throughput vs p99", "Heatmaps", "Every point"):
        assert section in html
    assert html.count("<svg") >= 4
    assert "http://" not in html and "https://" not in html


def test_a_bad_spec_is_refused_naming_the_key(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "model: {builtin: mlp}\n"
        "server: {batching: {max_batch_size: [8, -1]}, replica: [2]}\n"
        "load: {concurrency: [4]}\n"
    )
    result = batchbench("sweep", str(spec), "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "server.batching.max_batch_size[1]" in result.stderr
    assert "server.replica" in result.stderr and "replicas" in result.stderr  # valid keys
    assert not (tmp_path / "run").exists()  # nothing started


def test_warmup_file_from_a_payload_and_its_mistakes(tmp_path, models_dir):
    """``batchbench warmup-file`` turns a payload file into a version's warm-up file; a
    payload that does not fit the signature is one line naming it."""
    version = ensure_model(models_dir, "mlp") / "1"
    target = tmp_path / "mlp" / "1"
    shutil.copytree(version, target)
    shutil.copy(version.parent / "model.json", target.parent / "model.json")
    payload = tmp_path / "x.npy"
    np.save(payload, np.ones((3, 16), np.float32))
    done = batchbench("warmup-file", str(target), "--payload", str(payload), "--records", "2")
    assert done.returncode == 0, done.stderr
    written = target / "assets.extra" / "tf_serving_warmup_requests"
    assert done.stdout.strip() == str(written) and written.stat().st_size > 2 * 3 * 16 * 4
    np.save(payload, np.ones((3, 5), np.float32))
    bad = batchbench("warmup-file", str(target), "--payload", str(payload))
    assert bad.returncode == 2 and str(payload) in bad.stderr and len(bad.stderr.splitlines()) == 1
