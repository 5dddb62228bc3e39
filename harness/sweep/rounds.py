"""Running an interleaved plan (harness.plan.rounds): A/B arms or a confirmation's candidates.

Every step is measured on servers started for it alone and stopped right after: a comparison
must not hand one side a warm server the other side lacks. Each arm's results go into its own
run folder (``OUT/<arm>/``, the same layout as a sweep's, the round as the repeat), written the
moment each measurement ends, so compare, recommend and the report read them as they read any
run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.plan.points import Point, expand_matrix
from harness.plan.rounds import Arm, Step
from harness.plan.spec import SweepSpec
from harness.servers.targets import ModelBase, server_command
from harness.store.environment import collect_environment
from harness.store.results import PointResult, ResultStore
from harness.sweep.loop import Interrupt, Sweep, finish_run, hosted_bases, model_base
from harness.sweep.progress import SweepProgress, make_progress

PLAN_FILE = "rounds.json"


@dataclass
class ArmRun:
    """An arm and the sweep (spec, run folder, server program) its measurements use."""

    arm: Arm
    sweep: Sweep


def arm_spec(spec: SweepSpec, arm: Arm) -> SweepSpec:
    """The spec with the arm's extra server flags added to ``target.server_flags``."""
    if not arm.server_flags:
        return spec
    target = spec.target.model_copy(
        update={"server_flags": [*spec.target.server_flags, *arm.server_flags]}
    )
    return spec.model_copy(update={"target": target})  # keeps the spec as given and its source


def open_arm(
    spec: SweepSpec,
    arm: Arm,
    steps: Sequence[Step],
    out: Path,
    progress: SweepProgress,
    environment: Mapping[str, Any],
) -> ArmRun:
    """The arm's run folder (``out/<arm>``) and the sweep that measures its steps."""
    points = [s.point for s in steps if s.arm == arm.name]
    store = ResultStore.create(out / arm.name, spec, points, environment)
    info = store.run_info()
    store.write_run_info({**info, "arm": {"name": arm.name, **arm.differences()}})
    sweep = Sweep(arm_spec(spec, arm), store, progress, batching_file=arm.batching_file)
    sweep.model_base = _arm_model(spec, arm, out)
    sweep.command = arm.command or server_command(spec)
    return ArmRun(arm, sweep)


def _arm_model(spec: SweepSpec, arm: Arm, out: Path) -> ModelBase | None:
    if spec.multi_model:
        if arm.model_base_path is not None:
            raise UserError(
                f"arm {arm.name}: a model base path replaces the model of a one-model spec; "
                "this spec hosts several (models:)"
            )
        return hosted_bases(spec, out.parent / "models")
    if arm.model_base_path is None:
        return model_base(spec, out.parent / "models")
    if not Path(arm.model_base_path).is_dir():
        raise UserError(f"arm {arm.name}: model base path {arm.model_base_path} is not a folder")
    return Path(arm.model_base_path)


def run_steps(
    spec: SweepSpec,
    arms: Sequence[Arm],
    steps: Sequence[Step],
    out: Path,
    *,
    live: bool | None = None,
) -> dict[str, Path]:
    """Measure every step in order, each on fresh servers; returns each arm's run folder.
    KeyboardInterrupt after the measurement in flight when stopped (the first Ctrl-C): what
    was measured is saved, but a plan cut short is no longer order-balanced."""
    out.mkdir(parents=True, exist_ok=True)
    progress = make_progress(len(steps), live=live)
    environment = collect_environment()
    runs = {a.name: open_arm(spec, a, steps, out, progress, environment) for a in arms}
    try:
        with Interrupt(progress) as interrupt:
            for number, step in enumerate(steps, start=1):
                if interrupt.requested:
                    # A partial plan is not balanced: stop without comparing anything.
                    raise KeyboardInterrupt
                _measure(runs[step.arm], step, number, len(steps), progress)
    finally:
        progress.close()
        for run in runs.values():
            run.sweep.stop_target()
            _finish(run.sweep.store)
    return {name: run.sweep.store.root for name, run in runs.items()}


def _measure(
    run: ArmRun, step: Step, number: int, total: int, progress: SweepProgress
) -> PointResult:
    progress.message(f"round {step.round + 1}, {run.arm.name}: {step.point.key}")
    progress.point_started(number, total, step.point)
    result = run.sweep.run_point(step.point)
    run.sweep.stop_target()  # fresh servers for every measurement
    run.sweep.store.write_point(result)
    progress.point_done(result)
    return result


def _finish(store: ResultStore) -> None:
    finish_run(store, interrupted=len(store.completed_keys()) < len(store.planned_points()))


def steps_as_dicts(steps: Sequence[Step]) -> list[dict[str, Any]]:
    """The plan as stored in ``rounds.json``: round, arm and point key of each measurement."""
    return [{"round": s.round, "arm": s.arm, "key": s.point.key} for s in steps]


def fixed_points(spec: SweepSpec) -> list[Point]:
    """The spec's points of repeat 0: rounds take the place of repeats. UserError for a
    max-rate search, whose points are not fixed in advance."""
    if spec.load.find_max_rate is not None:
        raise UserError(
            "load.find_max_rate: interleaved rounds measure fixed points; give load.concurrency "
            "or load.rate"
        )
    return [p for p in expand_matrix(spec) if p.repeat == 0]
