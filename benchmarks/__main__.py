"""``make bench``: every benchmark in turn, then one table of all their rows.

Each benchmark writes reports/bench/<name>.json; the table is read back from those files, so
it shows exactly what was recorded. A benchmark that fails is reported as a failed row and the
others still run. ``--skip-demo`` leaves the demo sweep's wall time out (~3-4 min);
``--only NAME[,NAME]`` runs a subset.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback

from benchmarks.common import BenchResult, read_results, table

# Order matters: repeatability reuses the ci run that sweep_wall_time has just made.
BENCHMARKS = (
    "batcher_choice",
    "serving_efficiency",
    "transport_efficiency",
    "batching_overhead",
    "generator_capacity",
    "worker_scaling",
    "truth_synthetic",
    "search_replay",
    "traffic_shapes",
    "stall",
    "wrk_check",
    "h2load_check",
    "sweep_wall_time",
    "repeatability",
)


def run_one(name: str, skip_demo: bool, reused_ci: bool) -> list[BenchResult]:
    module = importlib.import_module(f"benchmarks.{name}")
    print(f"\n=== {name} ===", flush=True)
    try:
        if name == "sweep_wall_time":
            module.main(["--skip-demo"] if skip_demo else [])
        elif name == "repeatability":
            module.main(reuse_first=reused_ci)
        else:
            module.main()
        return read_results(name)
    except Exception as exc:  # one broken benchmark must not hide the others' figures
        traceback.print_exc()
        return [BenchResult(f"{name}: failed", None, met=False, notes=repr(exc)[:200])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--skip-demo", action="store_true", help="do not time the demo sweep")
    parser.add_argument("--only", help="comma-separated benchmark names: " + ", ".join(BENCHMARKS))
    args = parser.parse_args(argv)
    names = BENCHMARKS
    if args.only:
        names = tuple(n.strip() for n in args.only.split(","))
        unknown = [n for n in names if n not in BENCHMARKS]
        if unknown:
            parser.error(f"--only: unknown {', '.join(unknown)}; valid: {', '.join(BENCHMARKS)}")
    started = time.perf_counter()
    rows: list[BenchResult] = []
    for name in names:
        rows += run_one(name, args.skip_demo, reused_ci="sweep_wall_time" in names)
    minutes = (time.perf_counter() - started) / 60
    print(f"\n=== batchbench benchmarks ({minutes:.1f} min) ===")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
