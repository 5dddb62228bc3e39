"""Golden run folders for ties and margins: ``python -m tests.golden.make_decision_runs``.

Three small sweeps (three batching configurations and the unbatched baseline at 32 clients,
two repeats, three windows each), seeded:
- ``decide-clear``: one configuration is 15% ahead of the next, with 1% window noise: a clear
  winner.
- ``decide-tie``: three configurations within 3% of each other, with 4% window noise: they
  tie, and the tie-break picks the one with the lowest p99, not the highest throughput.
- ``decide-marginal``: the fastest configuration's p99 windows lie around the 50 ms SLO
  (its merged p99 just under it): it is chosen, and marked marginal.
- ``decide-confirmed``: ``decide-tie`` with a confirmation (``confirm/``): the two tied
  configurations with the lowest p99 and the unbatched baseline re-measured in 4 rounds. The
  machine's speed swings by up to 15% from round to round, but in every round
  mbs32-bt0 is 4% ahead of mbs8-bt0: paired by round, that is a clear winner.
"""

from __future__ import annotations

import numpy as np

from harness.plan.points import Point, expand_matrix
from harness.plan.rounds import plan_confirmation
from harness.plan.spec import validate_spec
from harness.store.results import PointResult, ResultStore
from harness.sweep.stability import WindowFigures
from tests.golden.make_golden import ENVIRONMENT, RUNS, fresh_store, point_result, windows_for

SPEC = {
    "model": {"builtin": "mlp"},
    "server": {
        "enable_batching": [True, False],
        "batching": {
            "max_batch_size": [8, 32],
            "batch_timeout_micros": [0, 2000],
            "num_batch_threads": [2],
            "max_enqueued_batches": [16],
        },
    },
    "matrix": {"exclude": [{"max_batch_size": 8, "batch_timeout_micros": 2000}]},
    "load": {"concurrency": [32]},
    "repeats": 2,
    "recommend": {"slo": {"latency_p99_ms": 50, "error_rate": 0.01}},
}

# config key -> (throughput req/s, p99 ms, window noise) per run.
TRUTH = {
    "decide-clear": {
        "nobatch-r1": (2000, 30.0, 0.01),
        "mbs8-bt0-nbt2-meb16-r1": (4400, 16.0, 0.01),
        "mbs32-bt0-nbt2-meb16-r1": (5200, 14.0, 0.01),
        "mbs32-bt2000-nbt2-meb16-r1": (6000, 18.0, 0.01),
    },
    "decide-tie": {
        "nobatch-r1": (2000, 30.0, 0.04),
        "mbs8-bt0-nbt2-meb16-r1": (5650, 15.0, 0.04),
        "mbs32-bt0-nbt2-meb16-r1": (5700, 17.0, 0.04),
        "mbs32-bt2000-nbt2-meb16-r1": (5800, 22.0, 0.04),
    },
    "decide-marginal": {
        "nobatch-r1": (2000, 60.0, 0.01),
        "mbs8-bt0-nbt2-meb16-r1": (4200, 30.0, 0.01),
        "mbs32-bt0-nbt2-meb16-r1": (5000, 32.0, 0.01),
        "mbs32-bt2000-nbt2-meb16-r1": (6000, 48.0, 0.01),
    },
}
# decide-marginal's fastest configuration: p99 windows on both sides of the 50 ms SLO, per repeat.
MARGINAL_P99 = {0: [47.0, 52.5, 48.0], 1: [49.0, 51.5, 46.5]}


def make(name: str, seed: int) -> None:
    truth = TRUTH["decide-tie" if name == "decide-confirmed" else name]
    spec = validate_spec({"name": name, **SPEC}, f"{name}.yaml")
    points = expand_matrix(spec)
    store = fresh_store(name, spec, points)
    rng = np.random.default_rng(seed)
    for point in points:
        result = measured(point, truth[point.server.key], rng)
        if name == "decide-marginal" and point.server.key == "mbs32-bt2000-nbt2-meb16-r1":
            result = around_the_slo(point, rng)
        store.write_point(result)
    store.write_csv()


def measured(
    point: Point, truth: tuple[float, float, float], rng: np.random.Generator
) -> PointResult:
    throughput, p99, noise = truth
    windows = windows_for(throughput, p99, rng, noise=noise)
    result = point_result(point, windows)
    # The merged histogram's p99 sits among the windows' p99s, not at their maximum.
    used = [windows[i] for i in result.stability["windows_used"]]  # type: ignore[index]
    result.metrics["latency_p99_ms"] = round(float(np.median([w.latency_p99_ms for w in used])), 2)
    return result


def around_the_slo(point: Point, rng: np.random.Generator) -> PointResult:
    p99s = MARGINAL_P99[point.repeat]
    windows = [WindowFigures(round(6000 * (1 + rng.normal(0, 0.01)), 1), p, 12000) for p in p99s]
    result = point_result(point, windows)
    result.metrics["latency_p99_ms"] = float(np.median(p99s))
    return result


# Per round: the machine's speed factor; per configuration: its true throughput and p99.
ROUND_SPEED = [1.0, 0.85, 1.1, 0.92]
CONFIRMED = {
    "mbs8-bt0-nbt2-meb16-r1": (5500, 15.0),
    "mbs32-bt0-nbt2-meb16-r1": (5720, 17.0),
    "nobatch-r1": (2000, 30.0),
}


def make_confirmed() -> None:
    make("decide-confirmed", 41)
    root = RUNS / "decide-confirmed"
    spec = validate_spec({"name": "decide-confirmed", **SPEC}, "decide-confirmed.yaml")
    by_config = {p.server.key: p for p in expand_matrix(spec) if p.repeat == 0}
    steps = plan_confirmation([by_config[k] for k in CONFIRMED], len(ROUND_SPEED))
    store = ResultStore.create(root / "confirm", spec, [s.point for s in steps], ENVIRONMENT)
    rng = np.random.default_rng(7)
    for step in steps:
        throughput, p99 = CONFIRMED[step.point.server.key]
        speed = ROUND_SPEED[step.round]
        windows = windows_for(throughput * speed, p99 / speed, rng, noise=0.005)
        store.write_point(point_result(step.point, windows))
    store.write_csv()


def main() -> None:
    for seed, name in enumerate(TRUTH, start=40):
        make(name, seed)
        print(name)
    make_confirmed()
    print("decide-confirmed")


if __name__ == "__main__":
    main()
