"""``batchbench sweep``: run every point of a spec and keep each result the moment it is done.

The loop is the same for every strategy (harness.plan.strategies): a point is measured on its
target (started per server configuration, kept running while consecutive points share that
configuration), written atomically to the run folder, and shown to the strategy, which picks
what comes next. A server that crashes or never becomes ready fails its point, with the reason
and its log tail, and the sweep goes on. The first Ctrl-C lets the current point finish and
stops; a second (or SIGTERM) stops at once. Either way every finished point is on disk and
``--resume`` carries on from there.
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.decide.ranking import exclusion_reason
from harness.decide.stats import finite_number
from harness.errors import UserError
from harness.models.zoo import ensure_model
from harness.plan import preflight
from harness.plan.placement import Placement
from harness.plan.points import Point, ServerConfig, expand_matrix
from harness.plan.search import describe_search, search_strategy, spec_budget
from harness.plan.space import Space
from harness.plan.spec import ModelSpec, SweepSpec
from harness.plan.strategies import GridStrategy, MaxRateSearch, Strategy
from harness.report import write_report
from harness.servers.targets import (
    ModelBase,
    RunningTarget,
    placement_for,
    server_command,
    start_target,
)
from harness.store.environment import collect_environment
from harness.store.layout import STUDY_FILE
from harness.store.results import PointResult, ResultStore, new_run_id, timestamp
from harness.sweep.measure import measure_point
from harness.sweep.progress import SweepProgress, make_progress

DEFAULT_REPORTS = Path("reports")


class Interrupt:
    """Ctrl-C handling for a sweep: the first asks to stop after the current point, the second
    (or SIGTERM) stops now. Installed only in the main thread (where signals arrive)."""

    def __init__(self, progress: SweepProgress) -> None:
        self.requested = False
        self._progress = progress
        self._previous: dict[int, Any] = {}

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._progress.message(
            "interrupt: finishing the current point, then stopping (Ctrl-C again to stop now)"
        )

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_sigint)
            self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


@dataclass
class Sweep:
    """One run in progress: the spec, its folder, and the target currently running."""

    spec: SweepSpec
    store: ResultStore
    progress: SweepProgress
    model_base: ModelBase | None = None
    command: tuple[str, ...] = ()
    batching_file: Path | None = None  # served instead of each configuration's own
    running: tuple[tuple[ServerConfig, int], RunningTarget] | None = None
    done: int = 0
    failed: list[str] = field(default_factory=list)

    @property
    def workdir(self) -> Path:
        return self.store.root / "work"

    def target_for(self, point: Point) -> RunningTarget:
        """The running target for ``point``: the current one if it serves the same
        configuration for the same repeat and is alive. Each repeat starts its own servers,
        so repeats also sample start-up to start-up variation."""
        wanted = (point.server, point.repeat)
        if self.running and self.running[0] == wanted and not self.running[1].exited():
            return self.running[1]
        self.stop_target()
        folder = self.store.root / "servers" / point.server.key
        target = start_target(
            self.spec,
            point.server,
            model_base=self.model_base,
            folder=folder,
            command=self.command,
            batching_file=self.batching_file,
        )
        self.running = (wanted, target)
        return target

    def stop_target(self) -> None:
        if self.running is not None:
            _, target = self.running
            self.running = None
            target.stop()

    def run_point(self, point: Point) -> PointResult:
        started = timestamp()
        try:
            target = self.target_for(point)
        except UserError as exc:
            reason = "target did not start: " + str(exc).splitlines()[0]
            result = PointResult.failed(point, reason, str(exc))
            result.started_at, result.finished_at = started, timestamp()
            return result
        result = measure_point(
            self.spec, point, target, self.workdir, on_window=self.progress.window
        )
        if result.status == "failed":
            self.stop_target()  # never measure on a server in an unknown state
        return result


def run_sweep(
    spec: SweepSpec,
    out: Path | None = None,
    *,
    resume: bool = False,
    live: bool | None = None,
    report: bool = True,
) -> Path:
    """Run ``spec`` into ``out`` (default ``reports/<run-id>``); ``resume`` continues the run
    already there. Returns the run folder. Raises KeyboardInterrupt after saving when stopped.
    """
    points = expand_matrix(spec)
    trace = preflight.check_trace(spec, points)  # a bad trace stops here, before any folder
    placements = planned_placements(spec, points)
    store = _open_store(spec, points, out, resume, placements)
    search = describe_search(spec, points)
    if search is not None:
        print(f"pre-flight: {search}", flush=True)
    estimate = preflight.estimate_duration(
        spec,
        points[: planned_count(spec, points)],
        trace_s=trace.duration_s if trace else None,
    )
    findings = preflight.check(spec, points, estimate, placements, _load_average())
    for finding in findings:
        print(f"pre-flight {finding.level}: {finding.message}", flush=True)
    preflight.raise_refusals(findings)
    models_dir = store.root.parent / "models"
    sweep = Sweep(spec, store, make_progress(planned_count(spec, points), live=live))
    bases = hosted_bases(spec, models_dir) if spec.multi_model else None
    sweep.model_base = bases or model_base(spec, models_dir)
    if spec.target.starts_servers:
        sweep.command = server_command(spec)
    print(f"run folder: {store.root}\n{estimate.runs} points, {estimate.describe()}", flush=True)
    interrupted = False
    try:
        with Interrupt(sweep.progress) as interrupt:
            total = planned_count(spec, points) - len(store.completed_keys())
            counted_only = spec.search.strategy != "grid"
            _loop(sweep, _strategy(spec, points, store), interrupt, total, counted_only)
            interrupted = interrupt.requested
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        sweep.stop_target()
        sweep.progress.close()
        finish_run(store, interrupted)
    if spec.confirm is not None and not interrupted:
        confirm(store.root, spec.confirm.top, spec.confirm.rounds, live=live)
    if report:
        path = write_report(store.root)
        print(f"report: {path}", flush=True)
    return store.root


def confirm(run_dir: Path, top: int, rounds: int, *, live: bool | None = None) -> None:
    """The spec's confirmation rounds (harness.sweep.confirm), after the sweep."""
    from harness.sweep.confirm import run_confirmation  # it runs sweeps itself: import late

    run_confirmation(run_dir, top, rounds, live=live)


def _loop(
    sweep: Sweep, strategy: Strategy, interrupt: Interrupt, total: int, counted_only: bool
) -> None:
    """Measure what ``strategy`` asks for; ``counted_only``: it learns only from points the
    recommender counts (a search must not climb towards an unstable or invalid point)."""
    observed = _counted if counted_only else _summary
    for number, point in enumerate(strategy.points(), start=1):
        if interrupt.requested:
            break
        sweep.progress.point_started(number, max(total, number), point)
        result = sweep.run_point(point)
        sweep.store.write_point(result)
        sweep.store.write_csv()
        sweep.progress.point_done(result)
        strategy.observe(point, observed(result), used_windows(result))
        _write_records(sweep.store, strategy)
    _write_records(sweep.store, strategy)  # e.g. a search's outcome is set after its last probe


def _summary(result: PointResult) -> dict[str, float] | None:
    """What a strategy learns from a point: its figures, or None when it failed."""
    if result.status != "ok":
        return None
    return {k: v for k, v in result.metrics.items() if v is not None}


def _counted(result: PointResult) -> dict[str, float] | None:
    """The figures of a point the recommender counts; None for one it leaves out."""
    return None if exclusion_reason(result) is not None else _summary(result)


def planned_count(spec: SweepSpec, points: list[Point]) -> int:
    """How many points the sweep will measure at most: all, or a search's budget (and the
    baseline points outside its space)."""
    if spec.search.strategy == "grid":
        return len(points)
    space = Space(points)
    return spec_budget(spec, space) + len(space.extras)


def used_windows(result: PointResult) -> list[dict[str, float]]:
    """The figures of each window the point's verdict used (a search weighs its noise)."""
    return [
        {k: v for k, v in window.get("metrics", {}).items() if finite_number(v)}
        for window in result.windows
        if window.get("used")
    ]


def _strategy(spec: SweepSpec, points: list[Point], store: ResultStore) -> Strategy:
    done = store.completed_keys()
    if spec.search.strategy != "grid":
        results = [store.load_point(key) for key in done]
        known = {r.key: (_counted(r), used_windows(r)) for r in results}
        return search_strategy(spec, points, known, store.root / STUDY_FILE)
    if spec.load.find_max_rate is None:
        return GridStrategy(points, skip=done)
    return MaxRateSearch(
        points, spec.load.find_max_rate, {k: _summary(store.load_point(k)) for k in done}
    )


def _write_records(store: ResultStore, strategy: Strategy) -> None:
    for name, document in strategy.records().items():
        store.write_extra(name, document)


def planned_placements(spec: SweepSpec, points: list[Point]) -> dict[int, Placement]:
    """The CPU sets each replica count of the sweep gets on this machine."""
    return {r: placement_for(spec, r) for r in sorted({p.replicas for p in points})}


def placement_environment(placements: dict[int, Placement]) -> dict[str, Any]:
    """run.json's record of the placement: the mode, the usable CPUs, the sets per replica
    count."""
    first = next(iter(placements.values()), None)
    if first is None:
        return {}
    by_replicas = {}
    for replicas, placement in placements.items():
        record = placement.as_dict()
        by_replicas[str(replicas)] = {k: record[k] for k in ("replicas", "generator", "shared")}
    return {"mode": first.mode, "machine": first.as_dict()["machine"], "by_replicas": by_replicas}


def _open_store(
    spec: SweepSpec,
    points: list[Point],
    out: Path | None,
    resume: bool,
    placements: dict[int, Placement],
) -> ResultStore:
    if resume:
        if out is None:
            raise UserError("--resume needs the run folder to resume")
        store = ResultStore.open(out)
        store.check_resumable(spec)
        print(f"resuming: {len(store.completed_keys())} points already done", flush=True)
        return store
    root = out or DEFAULT_REPORTS / new_run_id(spec.name)
    environment = {**collect_environment(), "placement": placement_environment(placements)}
    return ResultStore.create(root, spec, points, environment)


def model_base(spec: SweepSpec, models_dir: Path) -> Path | None:
    """The SavedModel base path the servers load: the spec's, or a built-in built on first
    use under ``models_dir``; None for an external target (and a command target given only
    the served model's name)."""
    model = spec.model
    if spec.target.kind == "external" or not (model.base_path or model.builtin):
        return None
    return _model_path(spec.model, models_dir)


def hosted_bases(spec: SweepSpec, models_dir: Path) -> dict[str, Path] | None:
    """Each hosted model's base path, by served name (built-in ones built on first use);
    None for an external target."""
    if spec.target.kind == "external":
        return None
    return {model.served_name: _model_path(model, models_dir) for model in spec.hosted_models}


def _model_path(model: ModelSpec, models_dir: Path) -> Path:
    if model.base_path:
        base = Path(model.base_path)
        if not base.is_dir():
            raise UserError(f"model.base_path: {base} is not a folder")
        return base
    assert model.builtin is not None
    try:
        return ensure_model(models_dir, model.builtin, model.resolved_options())
    except ValueError as exc:
        raise UserError(f"model: {exc}") from None


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def finish_run(store: ResultStore, interrupted: bool) -> None:
    """Regenerate results.csv and record in run.json when (and whether fully) the run ended."""
    store.write_csv()
    info = store.run_info()
    info.update(finished_at=timestamp(), interrupted=interrupted)
    store.write_run_info(info)
