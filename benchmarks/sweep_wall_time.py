"""(5) Wall time of the default ``ci`` sweep and of the demo sweep on this machine.

Both run as a user runs them (``batchbench sweep --preset ci``, ``batchbench demo``), in a
subprocess, timed from start to exit; models are built beforehand so the figure is the
sweep's own. The ci run folder is kept under reports/bench/runs/ so that the repeatability
benchmark can count it as one of its three runs. ``--skip-demo`` leaves the demo out (~3-4 min).
Run: python -m benchmarks.sweep_wall_time [--skip-demo]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import BENCH_DIR, ROOT, finish, model_path, result

RUNS_DIR = BENCH_DIR / "runs"
BATCHBENCH = (sys.executable, "-m", "harness")


def timed_sweep(args: list[str], log: Path) -> tuple[float, int]:
    """(wall seconds, exit code) of ``batchbench ARGS``, its output kept in ``log``."""
    started = time.perf_counter()
    with log.open("w") as out:
        code = subprocess.call([*BATCHBENCH, *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    return time.perf_counter() - started, code


def run_ci(run_dir: Path) -> tuple[float, int]:
    """One ``batchbench sweep --preset ci`` into ``run_dir`` (replaced if it exists)."""
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log = run_dir.parent / f"{run_dir.name}.log"
    return timed_sweep(["sweep", "--preset", "ci", "--out", str(run_dir)], log)


def wall_time_rows(skip_demo: bool) -> list:
    model_path("mlp")
    ci_s, ci_code = run_ci(RUNS_DIR / "ci-1")
    rows = [
        result(
            "sweep wall time: ci preset",
            ci_s,
            unit="s",
            notes=f"batchbench sweep --preset ci, exit {ci_code}, 5 configs x 2 repeats",
        )
    ]
    if skip_demo:
        rows.append(result("sweep wall time: demo", None, unit="s", notes="skipped (--skip-demo)"))
        return rows
    demo_dir = RUNS_DIR / "demo"
    shutil.rmtree(demo_dir, ignore_errors=True)
    demo_dir.mkdir(parents=True)
    demo_s, demo_code = timed_sweep(["demo", "--out", str(demo_dir)], RUNS_DIR / "demo.log")
    rows.append(
        result(
            "sweep wall time: demo",
            demo_s,
            unit="s",
            notes=f"batchbench demo (default preset, 20 points), exit {demo_code}",
        )
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep_wall_time")
    parser.add_argument("--skip-demo", action="store_true", help="time only the ci sweep")
    args = parser.parse_args(argv)
    return finish("sweep_wall_time", wall_time_rows(args.skip_demo))


if __name__ == "__main__":
    sys.exit(main())
