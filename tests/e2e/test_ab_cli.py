"""``batchbench ab`` as a user runs it: two arms on real servers, interleaved, compared paired."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.models.zoo import ensure_model
from harness.store.results import ResultStore

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

# The synthetic model sleeps fixed_ms per call: unbatched, 4 clients can get at most
# 4 / fixed_ms answers a second, so HEAD's 10x longer service time is a known ~90% drop.
SPEC = {
    "name": "ab-e2e",
    "model": {"builtin": "synthetic", "options": {"fixed_ms": 5.0, "per_item_ms": 0.0}},
    "server": {"enable_batching": [False]},
    "load": {"concurrency": [4]},
    "measurement": {
        "warmup_s": 0.5,
        "window_s": 1,
        "stability_tolerance": 0.5,
        "stable_windows": 2,
        "max_windows": 2,
        "min_requests": 10,
    },
}


def test_ab_detects_a_known_slowdown_and_writes_compare_outputs(tmp_path, models_dir):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    slow = ensure_model(models_dir, "synthetic", {"fixed_ms": 50.0, "per_item_ms": 0.0})
    out = tmp_path / "ab"
    command = [sys.executable, "-m", "harness", "ab", str(spec), "--rounds", "3"]
    completed = subprocess.run(
        [*command, "--out", str(out), "--head-model", str(slow)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 1, output  # a regression
    assert "REGRESSION in nobatch-r1-grpc-c4" in completed.stdout

    # Interleaved A B / B A / B A, each arm's results a run folder with the round as repeat.
    plan = json.loads((out / "ab.json").read_text())
    assert [(s["round"], s["arm"]) for s in plan["steps"]] == [
        (0, "base"), (0, "head"), (1, "head"), (1, "base"), (2, "head"), (2, "base"),
    ]  # fmt: skip
    assert plan["arms"][1]["model_base_path"] == str(slow)
    head = ResultStore.open(out / "head").load_points()
    assert [r.key for r in head] == [f"nobatch-r1-grpc-c4-rep{r}" for r in range(3)]
    first = head[0].metrics
    assert first["throughput_ci_low_rps"] <= first["throughput_ci_high_rps"]
    assert "latency_p99_ci_high_ms" in (out / "head" / "results.csv").read_text()

    compare = json.loads((out / "compare.json").read_text())
    assert compare["paired"] is True and compare["verdict"] == "regression"
    throughput = compare["points"][0]["metrics"][0]
    assert throughput["metric"] == "throughput_rps"
    # The true change is -90%; the 4 clients and the server share 2 busy cores, so the base
    # arm reaches less than its 800 req/s ceiling: the measured drop is smaller, never gone.
    assert -0.95 < throughput["change"] < -0.5
    assert throughput["ci_high"] < -0.05
    assert (out / "compare.md").read_text().startswith("## batchbench compare: ❌")
    assert "<failure" in (out / "compare-junit.xml").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ab", "--preset", "ci", "--rounds", "1"], "needs at least 2 rounds"),
        (["ab"], "give a spec file or --preset NAME"),
        (["ci", "--ab", "base/bin/reference-server", "--update-baseline"], "takes no --baseline"),
    ],
)
def test_ab_usage_errors_exit_2_before_measuring(args, message):
    completed = subprocess.run(
        [sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=REPO
    )
    assert completed.returncode == 2
    assert message in completed.stderr
