"""(9) Repeatability: the ``ci`` preset run 3 times; the spread of throughput and p99 per point,
and whether the regression gate's noise model covers it.

Every point of the ci preset is measured 2 times per run (its own repeats), so 3 runs give 6
figures per point: the spread is (max - min) / median of those. The gate (``batchbench
compare``, default thresholds 5% throughput / 10% p99, bootstrap over repeats and windows)
is then run between run 1 and each later run: unchanged code, so every regression it reports
is a false alarm, and the target is none.
In ``make bench`` the sweep_wall_time benchmark's ci run (reports/bench/runs/ci-1) is run 1.
Run: python -m benchmarks.repeatability
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import finish, model_path, result, spread
from benchmarks.sweep_wall_time import RUNS_DIR, run_ci
from harness.decide.compare import compare_sides, load_side

RUNS = 3
METRICS = {"throughput_rps": "throughput", "latency_p99_ms": "p99"}


def ensure_runs(reuse_first: bool) -> list[Path]:
    """The run folders ci-1..ci-3, each swept now; with ``reuse_first`` ci-1 is the one the
    sweep_wall_time benchmark has just made (``make bench`` runs them in that order)."""
    model_path("mlp")
    folders = [RUNS_DIR / f"ci-{n}" for n in range(1, RUNS + 1)]
    for n, folder in enumerate(folders, start=1):
        if not (reuse_first and n == 1 and (folder / "points").is_dir()):
            run_ci(folder)
    return folders


def spreads(folders: Sequence[Path]) -> dict[str, dict[str, float | None]]:
    """Per point group and metric, the spread of the point figures over every run's repeats."""
    values: dict[str, dict[str, list[float]]] = {}
    for folder in folders:
        for point in load_side(folder).points:
            for metric in METRICS:
                figure = point.metrics.get(metric)
                if figure is not None:
                    values.setdefault(point.group, {}).setdefault(metric, []).append(figure)
    return {
        group: {metric: spread(figures) for metric, figures in by_metric.items()}
        for group, by_metric in values.items()
    }


def false_alarms(folders: Sequence[Path]) -> list[str]:
    base = load_side(folders[0])
    found = []
    for folder in folders[1:]:
        comparison = compare_sides(base, load_side(folder))
        found += [f"{folder.name}: {p.key}" for p in comparison.regressions]
    return found


def main(reuse_first: bool = False) -> int:
    folders = ensure_runs(reuse_first)
    per_point = spreads(folders)
    rows = []
    for metric, label in METRICS.items():
        measured = [(g, v) for g, s in per_point.items() if (v := s.get(metric)) is not None]
        worst_group, worst = max(measured, key=lambda item: item[1])
        listing = ", ".join(f"{s.get(metric) or 0:.1%}" for s in per_point.values())
        rows.append(
            result(
                f"repeatability: worst {label} spread over 3 ci runs",
                worst,
                unit="",
                notes=f"(max-min)/median of 6 figures a point; worst {worst_group}; all: {listing}",
            )
        )
    alarms = false_alarms(folders)
    rows.append(
        result(
            "repeatability: gate false alarms (run 1 vs 2, 1 vs 3)",
            float(len(alarms)),
            "<= 0",
            notes="; ".join(alarms) or "none: the noise model covers the spread",
        )
    )
    return finish("repeatability", rows, {"spreads": per_point, "false_alarms": alarms})


if __name__ == "__main__":
    sys.exit(main())
