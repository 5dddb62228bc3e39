"""(11) Decisions that survive the noise: the gate's false alarms and detection rate.

- A/A: ``batchbench ab`` with two identical arms, N times (each a full interleaved job: the
  spec's points on both arms in R rounds, fresh servers per measurement). Any regression is a
  false alarm; the target is none.
- Power: the same A/B with the head arm's ``synthetic`` model given a longer service time
  (``fixed_ms`` and ``per_item_ms`` both x 1.15, i.e. a 15% slowdown), N times: detected
  (exit 1) in at least 9 of 10. Other slowdowns (``--ladder``) find the smallest one detected
  at least 90% of the time.
- Stored baseline: the ``ci`` preset run several times unchanged; each run is compared with
  a baseline of the others (the last K runs, their between-run spread in the noise model):
  the target is no false alarm.
- Recommendation consistency: the demo preset run 3 times; every run's recommendation must be
  in every other run's tied-best set.

Every job runs as a user runs it (``python -m harness ...``) into reports/bench/decisions/;
a job whose files are there already is counted, not run again, so an interrupted benchmark
carries on. Run: python -m benchmarks.decisions [--part aa,power,baseline,consistency]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import BENCH_DIR, ROOT, BenchResult, finish, model_path, result

OUT = BENCH_DIR / "decisions"
BATCHBENCH = (sys.executable, "-m", "harness")
PARTS = ("aa", "power", "baseline", "consistency")
SLOWDOWN = 0.15
# The synthetic model sleeps fixed_ms + per_item_ms x rows per batch: little CPU of its own,
# so what the gate sees is the machine's noise, not the model's.
SYNTHETIC = {"fixed_ms": 10.0, "per_item_ms": 0.5}
AB_SPEC = {
    "name": "decisions-ab",
    "model": {"builtin": "synthetic", "options": SYNTHETIC},
    "server": {
        "enable_batching": [True],
        "batching": {
            "max_batch_size": [8],
            "batch_timeout_micros": [2000],
            "num_batch_threads": [2],
            "max_enqueued_batches": [16],
        },
    },
    "load": {"concurrency": [16]},
    "measurement": {
        "warmup_s": 1,
        "window_s": 1,
        "stability_tolerance": 0.2,
        "stable_windows": 3,
        "max_windows": 5,
        "min_requests": 200,
    },
}


def run(args: Sequence[str], log: Path) -> int:
    """``batchbench ARGS`` in a subprocess, its output kept in ``log``; the exit code."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        return subprocess.call([*BATCHBENCH, *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def ab_spec() -> Path:
    path = OUT / "ab-spec.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(AB_SPEC, sort_keys=False))
    return path


def slowed_model(slowdown: float) -> Path:
    """The synthetic model with every service time ``1 + slowdown`` times as long."""
    options = {k: round(v * (1 + slowdown), 6) for k, v in SYNTHETIC.items()}
    return model_path("synthetic", **options)


def ab_job(folder: Path, rounds: int, head_model: Path | None) -> dict[str, Any]:
    """One A/B job (run unless its compare.json is there): its verdict and throughput change."""
    compare = folder / "compare.json"
    if not compare.is_file():
        model_path("synthetic", **SYNTHETIC)
        args = ["ab", str(ab_spec()), "--rounds", str(rounds), "--out", str(folder)]
        if head_model is not None:
            args += ["--head-model", str(head_model)]
        if folder.exists():  # an interrupted job: its folders would refuse a new start
            _remove(folder)
        started = time.perf_counter()
        code = run(args, folder.with_suffix(".log"))
        print(f"{folder.name}: exit {code} in {time.perf_counter() - started:.0f} s", flush=True)
    if not compare.is_file():
        return {"job": folder.name, "verdict": "error", "change": None}
    data = json.loads(compare.read_text())
    rows = [r for r in data["rows"] if r.get("metric") == "throughput_rps"]
    row = rows[0] if rows else {}
    return {
        "job": folder.name,
        "verdict": data["verdict"],
        "change": row.get("change"),
        "ci": [row.get("ci_low"), row.get("ci_high")],
        "regressed": [p["key"] for p in data["points"] if p["status"] == "regression"],
    }


def _remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder)


def aa_rows(comparisons: int, rounds: int) -> tuple[list[BenchResult], list[dict[str, Any]]]:
    jobs = [ab_job(OUT / f"aa-{n:02d}", rounds, None) for n in range(1, comparisons + 1)]
    done = [j for j in jobs if j["verdict"] != "error"]
    alarms = [j for j in done if j["verdict"] == "regression"]
    changes = ", ".join(f"{j['change']:+.1%}" for j in done if j["change"] is not None)
    notes = (
        f"batchbench ab, identical arms, synthetic mbs8-bt2000 c16, {rounds} rounds; "
        f"{len(done)} of {comparisons} jobs completed; throughput changes {changes}"
    )
    row = result(f"A/A false alarms ({len(done)} interleaved jobs)", len(alarms), "<= 0", "", notes)
    return [row], jobs


def power_rows(
    comparisons: int, rounds: int, ladder: Sequence[float]
) -> tuple[list[BenchResult], list[dict[str, Any]]]:
    rows, jobs, rates = [], [], {}
    for slowdown in ladder:
        level = [
            ab_job(OUT / f"slow{slowdown * 100:g}-{n:02d}", rounds, slowed_model(slowdown))
            for n in range(1, comparisons + 1)
        ]
        jobs += level
        done = [j for j in level if j["verdict"] != "error"]
        hits = sum(j["verdict"] == "regression" for j in done)
        rates[slowdown] = hits / len(done) if done else None
        changes = ", ".join(f"{j['change']:+.1%}" for j in done if j["change"] is not None)
        target = ">= 0.9" if slowdown == SLOWDOWN else ""
        rows.append(
            result(
                f"power: {slowdown:.0%} longer service time detected",
                rates[slowdown],
                target,
                notes=f"{hits} of {len(done)} jobs; synthetic fixed_ms and per_item_ms x"
                f"{1 + slowdown:g}, {rounds} rounds; throughput changes {changes}",
            )
        )
    detected = [s for s, rate in rates.items() if rate is not None and rate >= 0.9]
    rows.append(
        result(
            "power: smallest slowdown detected >= 90%",
            min(detected) if detected else None,
            notes="of "
            + ", ".join(f"{s:.0%}" for s in ladder)
            + ("" if detected else "; none reached 90%"),
        )
    )
    return rows, jobs


def interleave(comparisons: int, rounds: int, ladder: Sequence[float]) -> None:
    """Run the A/A and power jobs alternately, so that a benchmark cut short still has some
    of each, measured under the same conditions."""
    for n in range(1, comparisons + 1):
        ab_job(OUT / f"aa-{n:02d}", rounds, None)
        for slowdown in ladder:
            ab_job(OUT / f"slow{slowdown * 100:g}-{n:02d}", rounds, slowed_model(slowdown))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decisions")
    parser.add_argument(
        "--part", default=",".join(PARTS), help="comma-separated: " + ", ".join(PARTS)
    )
    parser.add_argument("--comparisons", type=int, default=10, help="A/A and power jobs each")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per A/B job")
    parser.add_argument(
        "--ladder", default="0.15", help="slowdowns for power, e.g. 0.075,0.1,0.15 (default 0.15)"
    )
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.part.split(",") if p.strip()]
    rows: list[BenchResult] = []
    raw: dict[str, Any] = {}
    ladder = sorted(float(x) for x in args.ladder.split(","))
    if "aa" in parts and "power" in parts:
        interleave(args.comparisons, args.rounds, ladder)
    if "aa" in parts:
        found, raw["aa"] = aa_rows(args.comparisons, args.rounds)
        rows += found
    if "power" in parts:
        found, raw["power"] = power_rows(args.comparisons, args.rounds, ladder)
        rows += found
    return finish("decisions", rows, raw)


if __name__ == "__main__":
    sys.exit(main())
