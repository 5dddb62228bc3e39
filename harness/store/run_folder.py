"""A run folder, read once into typed objects: what the recommender, the report and compare
work from.

``load_run`` reads ``run.json`` (its spec validated again), every stored point, for a
``find_max_rate`` sweep ``max_rate.json``'s searches, and a confirmation's points
(``confirm/``). A spec that no longer validates (written by an older batchbench, say) does not
stop the folder from loading: the figures are still worth a report and a comparison; only what
needs the spec (the recommender) refuses, with the reason.
The files the decisions write (``recommendation.json``, ``compare.json``) are read by the
modules that write them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.plan.points import Point
from harness.plan.spec import SweepSpec, validate_spec
from harness.store.layout import CONFIRM_DIR, MAX_RATE_FILE, RUN_FILE
from harness.store.results import PointResult, ResultStore, read_json
from harness.store.shapes import MaxRateFile, checked


@dataclass(frozen=True)
class RunRecord:
    """What ``run.json`` says about the run besides its id and machine."""

    spec: dict[str, Any] = field(default_factory=dict)  # as given: the report shows it so
    spec_source: str | None = None
    created_at: str | None = None
    finished_at: str | None = None
    interrupted: bool | None = None
    planned: list[Point] = field(default_factory=list)  # every point, in run order


@dataclass(frozen=True)
class RunFolder:
    """A run: its spec, its stored points, its max-rate searches (or one a caller builds in
    memory from a spec and results)."""

    spec: SweepSpec | None  # None when run.json's spec no longer validates (see spec_error)
    results: list[PointResult]
    run_id: str = ""
    environment: dict[str, Any] = field(default_factory=dict)
    searches: list[dict[str, Any]] | None = None  # max_rate.json's "searches", if any
    root: Path | None = None
    record: RunRecord = field(default_factory=RunRecord)
    spec_error: str | None = None
    # A confirmation's points (``confirm/``): the tied-best re-measured in rounds; None: none.
    confirmation: list[PointResult] | None = None

    def checked_spec(self) -> SweepSpec:
        """The validated spec; UserError saying why when run.json's no longer validates."""
        if self.spec is None:
            raise UserError(self.spec_error or "the run has no spec")
        return self.spec


def load_run(run_dir: Path | str) -> RunFolder:
    """Read a run folder; UserError when it is not one or a file in it is unreadable."""
    store = ResultStore.open(Path(run_dir))
    info = store.run_info()
    spec, spec_error = _validated(info.get("spec"), f"{store.run_file} (spec)")
    return RunFolder(
        spec=spec,
        results=store.load_points(),
        run_id=info.get("run_id", store.root.name),
        environment=info.get("environment") or {},
        searches=_searches(store.root / MAX_RATE_FILE),
        root=store.root,
        record=_record(info),
        spec_error=spec_error,
        confirmation=_confirmation(store.root / CONFIRM_DIR),
    )


def _validated(given: Any, source: str) -> tuple[SweepSpec | None, str | None]:
    try:
        return validate_spec(given, source=source), None
    except UserError as exc:
        return None, str(exc)


def _confirmation(folder: Path) -> list[PointResult] | None:
    if not (folder / RUN_FILE).is_file():
        return None
    return ResultStore.open(folder).load_points()


def _searches(path: Path) -> list[dict[str, Any]] | None:
    return (
        list(checked(MaxRateFile, read_json(path), path).get("searches", []))
        if path.is_file()
        else None
    )


def _record(info: dict[str, Any]) -> RunRecord:
    return RunRecord(
        spec=info.get("spec") or {},
        spec_source=info.get("spec_source"),
        created_at=info.get("created_at"),
        finished_at=info.get("finished_at"),
        interrupted=info.get("interrupted"),
        planned=[Point.from_dict(data) for data in info.get("points", [])],
    )
