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
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import BENCH_DIR, ROOT, BenchResult, finish, model_path, result
from harness.decide.compare import compare_sides, load_side, round_figures, write_baseline
from harness.decide.recommend import load_run, recommend

OUT = BENCH_DIR / "decisions"
BATCHBENCH = (sys.executable, "-m", "harness")
PARTS = ("aa", "power", "baseline", "consistency")
TALLY_ONLY = False  # --tally: count the jobs already done, run none
SLOWDOWN = 0.15
# The synthetic model sleeps fixed_ms + per_item_ms x rows per batch. A batch of 8 takes 48 ms,
# so 2 batch threads serve at most ~330 req/s and the service time, not the CPU, bounds the
# throughput: a longer service time then shows as less throughput. (With 10 ms + 0.5 ms/row a
# loaded 2-core machine's CPU was the bound, and a 15% longer sleep did not show at all.)
SYNTHETIC = {"fixed_ms": 40.0, "per_item_ms": 1.0}
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
    if not compare.is_file() and not TALLY_ONLY:
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
    noise = round_noise([OUT / j["job"] for j in done])
    spread = result(
        "A/A noise: sd of one round's log throughput ratio",
        noise,
        notes="pooled over the A/A jobs' rounds; the paired interval's half-width is about "
        f"t(0.975, {rounds - 1}) x sd / sqrt({rounds})",
    )
    return [row, spread], jobs


def round_noise(folders: Sequence[Path]) -> float | None:
    """The standard deviation of log(HEAD/BASE) of one round's throughput, over every round
    of the given A/B folders (identical arms: all of it is noise)."""
    logs = []
    for folder in folders:
        base, head = load_side(folder / "base").groups(), load_side(folder / "head").groups()
        for group in base.keys() & head.keys():
            b, h = round_figures(base[group], head[group], "throughput_rps")
            logs += [math.log(y / x) for x, y in zip(b, h, strict=True) if x > 0 and y > 0]
    return statistics.stdev(logs) if len(logs) > 1 else None


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


# --- the stored baseline -------------------------------------------------------------------------


def ci_runs(count: int) -> list[Path]:
    """``count`` unchanged runs of the ci preset (each swept unless already finished)."""
    model_path("mlp")
    folders = [OUT / f"ci-{n}" for n in range(1, count + 1)]
    for folder in folders:
        if not _finished(folder) and not TALLY_ONLY:
            if folder.exists():
                _remove(folder)
            started = time.perf_counter()
            code = run(
                ["sweep", "--preset", "ci", "--no-report", "--out", str(folder)],
                folder.with_suffix(".log"),
            )
            print(
                f"{folder.name}: exit {code} in {time.perf_counter() - started:.0f} s", flush=True
            )
    return [f for f in folders if _finished(f)]


def _finished(folder: Path) -> bool:
    info = folder / "run.json"
    return info.is_file() and bool(json.loads(info.read_text()).get("finished_at"))


def baseline_alarms(folders: Sequence[Path], keep: int) -> list[dict[str, Any]]:
    """Each run against a baseline of the ``keep`` runs before it (wrapping around): the
    regressions it reports, all false alarms."""
    out = []
    for i, current in enumerate(folders):
        others = [folders[(i - k) % len(folders)] for k in range(keep, 0, -1)]
        path = OUT / "baselines" / f"keep{keep}-without-{current.name}.json"
        path.unlink(missing_ok=True)
        for folder in others:
            write_baseline(folder, path, keep=keep)
        comparison = compare_sides(load_side(path), load_side(current))
        out.append(
            {
                "current": current.name,
                "baseline_runs": [f.name for f in others],
                "regressions": [p.key for p in comparison.regressions],
            }
        )
    return out


def baseline_rows(runs: int, keep: int) -> tuple[list[BenchResult], dict[str, Any]]:
    folders = ci_runs(runs)
    if len(folders) <= keep:
        row = result("stored baseline: false alarms", None, "<= 0", notes=f"{len(folders)} runs")
        return [row], {}
    multi = baseline_alarms(folders, keep)
    single = baseline_alarms(folders, 1)
    alarms = sum(len(j["regressions"]) for j in multi)
    old = sum(len(j["regressions"]) for j in single)
    rows = [
        result(
            f"stored baseline of {keep} runs: false alarms ({len(multi)} unchanged runs)",
            alarms,
            "<= 0",
            notes="ci preset; each run against the 3 before it; "
            + "; ".join(f"{j['current']}: {', '.join(j['regressions']) or 'none'}" for j in multi),
        ),
        result(
            f"stored baseline of 1 run: false alarms ({len(single)} unchanged runs)",
            old,
            notes="the same runs, each against the one before it (the old single-run baseline)",
        ),
    ]
    return rows, {"multi": multi, "single": single}


# --- recommendation consistency -------------------------------------------------------------------


def demo_runs(count: int) -> list[Path]:
    """``count`` runs of the demo preset (sweep and confirmation), each run unless finished."""
    model_path("mlp")
    folders = [OUT / f"demo-{n}" for n in range(1, count + 1)]
    for folder in folders:
        confirmed = (folder / "confirm" / "run.json").is_file()
        if not (_finished(folder) and confirmed) and not TALLY_ONLY:
            if folder.exists():
                _remove(folder)
            started = time.perf_counter()
            code = run(
                ["sweep", "--preset", "default", "--out", str(folder)], folder.with_suffix(".log")
            )
            print(
                f"{folder.name}: exit {code} in {time.perf_counter() - started:.0f} s", flush=True
            )
    return [f for f in folders if _finished(f)]


def decisions_of(folder: Path, confirmed: bool) -> tuple[str | None, list[str]]:
    """The run's pick and tied-best set (from its sweep alone, or from its confirmation)."""
    data = load_run(folder)
    rec = recommend(data if confirmed else replace(data, confirmation=None))
    if rec.chosen is None:
        return None, []
    return rec.chosen.key, rec.decision.tied if rec.decision else [rec.chosen.key]


def consistent(picks: Sequence[tuple[str | None, list[str]]]) -> int:
    """How many runs' picks lie in every other run's tied-best set."""
    return sum(
        pick is not None and all(pick in tied for j, (_, tied) in enumerate(picks) if j != i)
        for i, (pick, _) in enumerate(picks)
    )


def consistency_rows(runs: int) -> tuple[list[BenchResult], dict[str, Any]]:
    folders = demo_runs(runs)
    rows, raw = [], {}
    for confirmed in (False, True):
        picks = [decisions_of(f, confirmed) for f in folders]
        label = "with confirmation" if confirmed else "sweep alone"
        raw[label] = [
            {"run": f.name, "pick": p, "tied": t} for f, (p, t) in zip(folders, picks, strict=True)
        ]
        rows.append(
            result(
                f"recommendation consistency, {label} (runs in every other's tied set)",
                consistent(picks),
                f">= {len(folders)}",
                notes=f"demo preset x {len(folders)}; "
                + "; ".join(
                    f"{f.name}: {pick} (tied {len(tied)})"
                    for f, (pick, tied) in zip(folders, picks, strict=True)
                ),
            )
        )
    return rows, raw


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
    parser.add_argument("--ci-runs", type=int, default=4, help="unchanged ci runs (default 4)")
    parser.add_argument("--tally", action="store_true", help="count the jobs done; run none")
    args = parser.parse_args(argv)
    global TALLY_ONLY
    TALLY_ONLY = args.tally
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
    if "baseline" in parts:
        found, raw["baseline"] = baseline_rows(args.ci_runs, keep=3)
        rows += found
    if "consistency" in parts:
        found, raw["consistency"] = consistency_rows(3)
        rows += found
    # A part run alone keeps its own results file, so parts can run side by side.
    name = "decisions" if set(parts) == set(PARTS) else "decisions-" + "-".join(parts)
    return finish(name, rows, raw)


if __name__ == "__main__":
    sys.exit(main())
