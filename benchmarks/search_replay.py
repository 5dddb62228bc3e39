"""(13) Search strategies replayed against a fully measured grid: how close to the grid's best
they get, on how much of the space.

benchmarks/data/search_grid.json holds every window of 160 batching configurations of the
built-in mlp model, each measured once by ``batchbench sweep benchmarks/data/search_grid.yaml``
on this project's 2-core machine (regenerate with ``make bench-grid``, about an hour on a
loaded machine; the run folder goes to reports/bench/runs/search-grid). A replay drives a
strategy as the sweep loop does, but each visit to a point draws that point's stored windows
again (as many, with replacement), so the noise a strategy sees is the noise that was measured.
A point's figures are the means of its windows: its throughput, p99 and error rate. The truth
of a configuration is the same over all its stored windows; the grid's optimum is the best
configuration meeting the SLO by those truths.

Per strategy, over 20 seeds: the share of the optimum's objective reached by the strategy's
pick (0 when the pick misses the SLO by its truth), and the share of the space measured. The
grid strategy, replayed the same way (every point once), is its cost: 100% of the points.
Run: python -m benchmarks.search_replay [--measure]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, finish, result
from harness.metrics import slo_misses
from harness.plan.bayesian import BayesianSearch
from harness.plan.points import Point
from harness.plan.search import Goal, QuickSearch, SearchWalk, Summary, budget_points, drive
from harness.plan.space import Space
from harness.store.results import ResultStore

DATA = ROOT / "benchmarks" / "data"
SPEC = DATA / "search_grid.yaml"
GRID = DATA / "search_grid.json"
RUN = ROOT / "reports" / "bench" / "runs" / "search-grid"
METRICS = ("throughput_rps", "latency_p99_ms", "error_rate")
SEEDS = 20
FRACTION = 0.1
# The objectives replayed: the grid spec's own (throughput under p99 <= 50 ms, which few
# points of a loaded machine meet), and throughput with the error-rate bound alone.
GOALS = {
    "p99 SLO": Goal("throughput_rps", True, {"latency_p99_ms": 50.0, "error_rate": 0.01}),
    "no p99 SLO": Goal("throughput_rps", True, {"error_rate": 0.01}),
}


# --- the stored grid ----------------------------------------------------------------------------


def measure_grid(run: Path = RUN) -> None:
    """Sweep the grid spec into ``run`` (resuming it when it is there)."""
    command = [sys.executable, "-m", "harness", "sweep", str(SPEC), "--out", str(run)]
    command += ["--no-report"] + (["--resume", str(run)] if (run / "run.json").exists() else [])
    subprocess.run(command, check=True, cwd=ROOT)


def extract(run: Path) -> dict[str, Any]:
    """The grid file's content from a run folder: each point and its windows' figures."""
    points = []
    for stored in ResultStore.open(run).load_points():
        windows = [
            {m: w["metrics"].get(m) for m in METRICS} for w in stored.windows if w.get("metrics")
        ]
        points.append(
            {"point": stored.point.as_dict(), "status": stored.status, "windows": windows}
        )
    return {
        "made_by": f"batchbench sweep {SPEC.relative_to(ROOT)}, then {__name__} --extract",
        "points": points,
    }


def load_grid(path: Path = GRID) -> dict[str, tuple[Point, list[Summary]]]:
    """Point key -> (point, its windows' figures); failed points have no windows."""
    data = json.loads(path.read_text())
    grid: dict[str, tuple[Point, list[Summary]]] = {}
    for entry in data["points"]:
        point = Point.from_dict(entry["point"])
        windows: list[Summary] = [
            {k: float(v) for k, v in w.items() if v is not None} for w in entry["windows"]
        ]
        grid[point.key] = (point, windows if entry["status"] == "ok" else [])
    return grid


def figures(windows: Sequence[Summary]) -> dict[str, float] | None:
    """A point's figures from its windows: each metric's mean; None with no windows."""
    if not windows:
        return None
    return {
        m: statistics.fmean(values)
        for m in METRICS
        if (values := [w[m] for w in windows if m in w])
    }


def truth(windows: Sequence[Summary], goal: Goal) -> float | None:
    """The objective of a configuration over all its windows; None when it misses the SLO."""
    summary = figures(windows)
    if summary is None or slo_misses(summary, goal.slo):
        return None
    return summary.get(goal.metric_id)


# --- replays --------------------------------------------------------------------------------------


class Replay:
    """Visits answered from the stored windows, drawn again with replacement."""

    def __init__(self, grid: Mapping[str, tuple[Point, list[Summary]]], seed: int) -> None:
        self.grid, self.rng = grid, random.Random(seed)

    def __call__(self, point: Point) -> tuple[Summary | None, Sequence[Summary]]:
        stored = self.grid[point.key][1]
        drawn = [self.rng.choice(stored) for _ in stored]
        return figures(drawn), drawn


def make_strategy(name: str, space: Space, goal: Goal, seed: int) -> SearchWalk | None:
    budget = budget_points(len(space), None, FRACTION)
    if name == "quick":
        return QuickSearch(space, goal, len(space))  # no budget: it stops on its own
    if name == "bayesian, budget 10%":
        return BayesianSearch(space, goal, budget, patience=budget, seed=seed)
    return None  # the grid


def replay(
    name: str, grid: Mapping[str, tuple[Point, list[Summary]]], goal: Goal, seed: int
) -> dict[str, Any]:
    """One replay: the pick, the share of the optimum it reached, the share measured."""
    space = Space([point for point, _ in grid.values()])
    measure = Replay(grid, seed)
    strategy = make_strategy(name, space, goal, seed)
    if strategy is None:
        observed = {key: measure(point) for key, (point, _) in grid.items()}
        pick = _grid_pick(observed, goal)
        measured = len(grid)
    else:
        drive(strategy, measure)
        best = strategy.best()
        pick, measured = (best.key if best else None), strategy.measured
    optimum = max(t for _, w in grid.values() if (t := truth(w, goal)) is not None)
    reached = (truth(grid[pick][1], goal) or 0.0) / optimum if pick else 0.0
    return {"seed": seed, "pick": pick, "reached": reached, "measured": measured / len(space)}


def _grid_pick(
    observed: Mapping[str, tuple[Summary | None, Sequence[Summary]]], goal: Goal
) -> str | None:
    feasible = {
        key: summary[goal.metric_id]
        for key, (summary, _) in observed.items()
        if summary is not None and not slo_misses(summary, goal.slo)
    }
    return max(feasible, key=lambda key: feasible[key]) if feasible else None


STRATEGIES = ("quick", "bayesian, budget 10%", "grid")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search_replay")
    parser.add_argument("--measure", action="store_true", help="sweep the grid first (~1 h)")
    parser.add_argument(
        "--extract", type=Path, metavar="RUN", help="rewrite the grid file from RUN"
    )
    args = parser.parse_args(argv)
    if args.measure:
        measure_grid()
        args.extract = RUN
    if args.extract:
        GRID.write_text(json.dumps(extract(args.extract), indent=1) + "\n")
    grid = load_grid()
    rows, runs = [], {}
    for label, goal in GOALS.items():
        for name in STRATEGIES:
            found = [replay(name, grid, goal, seed) for seed in range(SEEDS)]
            runs[f"{name} ({label})"] = found
            rows += _rows(f"{name} ({label})", found, len(grid), goal)
    return finish("search_replay", rows, {"replays": runs, "space": len(grid)})


def _rows(name: str, runs: Sequence[Mapping[str, Any]], size: int, goal: Goal) -> list[Any]:
    reached = [r["reached"] for r in runs]
    measured = [r["measured"] for r in runs]
    worst = min(runs, key=lambda r: r["reached"])
    feasible = sum(1 for _, windows in load_grid().values() if truth(windows, goal) is not None)
    target = "" if name.startswith("grid") else ">= 0.95"
    cost = "" if name.startswith("grid") else "<= 0.10"
    return [
        result(
            f"search {name}: median share of the grid's best",
            statistics.median(reached),
            target,
            notes=f"{SEEDS} seeds over {size} configurations ({feasible} meet the SLO); "
            f"worst seed {worst['seed']}: {worst['reached']:.2f} ({worst['pick']})",
        ),
        result(
            f"search {name}: median share of the space measured", statistics.median(measured), cost
        ),
    ]


if __name__ == "__main__":
    sys.exit(main())
