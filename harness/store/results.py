"""The run folder: ``run.json``, one ``points/<key>.json`` per point, and ``results.csv``.

One file per result (as asv does): a point's file is written atomically the moment it is done,
so a killed sweep loses at most the point in flight, ``--resume`` skips the keys on disk, and
two partial runs merge by copying files. Every file carries ``schema_version``; loaders refuse
files newer than this code understands. ``results.csv`` is regenerated from the point files.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from harness.errors import UserError
from harness.metrics import metric_ids
from harness.plan.batching_fields import AXIS_FIELDS
from harness.plan.points import Point
from harness.plan.spec import SweepSpec
from harness.store.layout import CSV_FILE, POINTS_DIR, RUN_FILE
from harness.store.schema import schema_problem
from harness.store.shapes import PointFile, StoredPoint, checked

SCHEMA_VERSION = 1

Status = Literal["ok", "failed"]


@dataclass
class PointResult:
    """Everything kept about one point.

    ``metrics`` maps metric IDs to the point's figures (from the windows the stability verdict
    used); ``windows`` holds every window (``{"index", "duration_s", "metrics", ...}``);
    ``histogram`` is the merged HDR histogram of the used windows, encoded (hdrhistogram's
    ``encode()``), so points can be merged again later; ``telemetry`` is what the server's
    Prometheus metrics said about the measured interval; a failed point keeps its ``reason``
    and the server's ``log_tail``. ``by_kind`` has the figures of each request kind (model,
    rows, length, payload: ``{"metrics": {metric ID: value}, "histogram"}``) when the point
    sent more than one, and ``by_model`` those of each model (``{"model", "metrics",
    "histogram"}``) when it sent to several; ``timeline`` one entry per second of each load
    run (warm-up included: ``run``, ``at_s`` from the first run's start, ``warmup``, and the
    scenario's ``offered``, ``sent``, ``ok``, ``errors``, ``late``, ``dropped``, ``latency_p50_ms``,
    ``latency_p99_ms``, ``queue_depth``, ``batch_size_mean``, and, when answers named their
    version, ``versions``); ``by_version`` the figures of each model version that answered (or
    version-split arm) when more than one did.
    """

    point: Point
    status: Status = "ok"
    metrics: dict[str, float | None] = field(default_factory=dict)
    windows: list[dict[str, Any]] = field(default_factory=list)
    histogram: str | None = None
    stability: dict[str, Any] | None = None
    valid: bool = True
    invalid_reasons: list[str] = field(default_factory=list)
    telemetry: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    log_tail: str | None = None
    by_kind: list[dict[str, Any]] = field(default_factory=list)
    by_model: list[dict[str, Any]] = field(default_factory=list)
    by_version: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    started_at: str | None = None
    finished_at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    placement: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return self.point.key

    @property
    def stable(self) -> bool:
        return self.stability is not None and self.stability.get("verdict") == "stable"

    @classmethod
    def failed(cls, point: Point, reason: str, log_tail: str | None = None) -> PointResult:
        """A point whose server crashed or never became ready: kept, with why."""
        return cls(point, status="failed", valid=False, reason=reason, log_tail=log_tail)

    def as_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["point"] = self.point.as_dict()
        return {"schema_version": SCHEMA_VERSION, "key": self.key, **data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PointResult:
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        values["point"] = Point.from_dict(data["point"])
        return cls(**values)


# --- files --------------------------------------------------------------------------------------


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None: strict JSON, readable everywhere."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_atomically(path: Path, text: str) -> Path:
    """Write ``text`` so that readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    """Atomically write ``data`` (with ``schema_version``) as indented, strict JSON."""
    body = {"schema_version": SCHEMA_VERSION, **data}
    return write_atomically(path, _dumps(body) + "\n")


def _dumps(data: Any) -> str:
    # default=str: YAML can hold dates and the like; they are kept as their text.
    return json.dumps(json_safe(data), indent=1, allow_nan=False, default=str)


def read_json(path: Path) -> dict[str, Any]:
    """Read a stored JSON file; UserError if unreadable, not ours, or from a newer version."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None
    check_schema(data, path)
    return data


def check_schema(data: Any, path: Path | str) -> None:
    """Refuse data without a schema_version, or newer than this code reads."""
    if problem := schema_problem(data, path, SCHEMA_VERSION):
        raise UserError(problem)


def new_run_id(name: str, now: datetime | None = None) -> str:
    """``20250101-120000-demo``: sortable by time, named after the spec."""
    now = now or datetime.now(UTC).astimezone()
    return f"{now:%Y%m%d-%H%M%S}-{name}"


def timestamp() -> str:
    """Now, as every stored file records a time: UTC, ISO 8601, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- the store ----------------------------------------------------------------------------------


class ResultStore:
    """A run folder. ``create`` starts one; ``open`` reads (or resumes) an existing one."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def points_dir(self) -> Path:
        return self.root / POINTS_DIR

    @property
    def run_file(self) -> Path:
        return self.root / RUN_FILE

    @classmethod
    def create(
        cls, root: Path, spec: SweepSpec, points: Sequence[Point], environment: Mapping[str, Any]
    ) -> ResultStore:
        """Start a run folder; UserError if it already holds a run (resume it instead)."""
        store = cls(root)
        if store.run_file.exists():
            raise UserError(f"{store.root} already holds a run; resume it or choose another --out")
        write_json(
            store.run_file,
            {
                "run_id": store.root.name,
                "created_at": timestamp(),
                "spec_source": spec.source,
                "spec": spec.as_given,
                "points": [point.as_dict() for point in points],
                "environment": dict(environment),
            },
        )
        store.points_dir.mkdir(parents=True, exist_ok=True)
        return store

    @classmethod
    def open(cls, root: Path) -> ResultStore:
        """An existing run folder; UserError when there is none (or it is too new)."""
        store = cls(root)
        if not store.run_file.is_file():
            raise UserError(f"{store.root} is not a batchbench run folder (no {RUN_FILE})")
        store.run_info()
        return store

    def run_info(self) -> dict[str, Any]:
        return read_json(self.run_file)

    def write_run_info(self, info: Mapping[str, Any]) -> Path:
        """Replace run.json (e.g. to add ``finished_at``); atomic like every other file."""
        return write_json(self.run_file, {k: v for k, v in info.items() if k != "schema_version"})

    def check_resumable(self, spec: SweepSpec) -> None:
        """Refuse to resume with a spec other than the one the run started with."""
        if self.run_info().get("spec") != json.loads(_dumps(spec.as_given)):
            raise UserError(
                f"{self.root} was started with a different spec; resume with the same spec "
                "(see its run.json) or start a new run"
            )

    def planned_points(self) -> list[Point]:
        """The points run.json lists, in run order."""
        points = self.run_info().get("points")
        if not isinstance(points, list):
            raise UserError(f"{self.run_file}: points: a list of the planned points is required")
        try:
            return [Point.from_dict(checked(StoredPoint, data, self.run_file)) for data in points]
        except ValueError as exc:  # a traffic description the spec's parser refuses
            raise UserError(f"{self.run_file}: {exc} (a planned point's traffic)") from None

    def write_point(self, result: PointResult) -> Path:
        """Store one point's result atomically as ``points/<key>.json``."""
        return write_json(self.point_path(result.key), result.as_dict())

    def point_path(self, key: str) -> Path:
        return self.points_dir / f"{key}.json"

    def completed_keys(self) -> set[str]:
        """Keys of every stored point, failed ones included (``--resume`` skips them)."""
        return {path.stem for path in self._point_files()}

    def load_point(self, key: str) -> PointResult:
        return _point_from(self.point_path(key))

    def load_points(self) -> list[PointResult]:
        """Every stored point: in run.json's order first, then any others by key."""
        order = {point.key: i for i, point in enumerate(self.planned_points())}
        results = [_point_from(path) for path in self._point_files()]
        return sorted(results, key=lambda r: (order.get(r.key, len(order)), r.key))

    def write_csv(self) -> Path:
        """Regenerate ``results.csv``: one row per stored point, metric IDs as columns."""
        return write_atomically(self.root / CSV_FILE, results_csv(self.load_points()))

    def write_extra(self, name: str, data: Mapping[str, Any]) -> Path:
        """Another versioned JSON file in the run folder (e.g. ``max_rate.json``)."""
        return write_json(self.root / name, data)

    def _point_files(self) -> list[Path]:
        if not self.points_dir.is_dir():
            return []
        return sorted(p for p in self.points_dir.glob("*.json") if not p.name.startswith("."))


def _point_from(path: Path) -> PointResult:
    data = checked(PointFile, read_json(path), path)
    try:
        return PointResult.from_dict(data)
    except ValueError as exc:  # a traffic description the spec's parser refuses
        raise UserError(f"{path}: {exc} (a point's traffic)") from None


# --- results.csv ---------------------------------------------------------------------------------

PARAM_COLUMNS = (
    "key",
    "status",
    "valid",
    "stability",
    "repeat",
    "protocol",
    "replicas",
    "enable_batching",
    *(field.name for field in AXIS_FIELDS),
    "load_kind",
    "concurrency",
    "rate",
    "speed",
)


def csv_columns() -> tuple[str, ...]:
    return (*PARAM_COLUMNS, *metric_ids(), "reason", "server_cpus", "generator_cpus")


def results_csv(results: Iterable[PointResult]) -> str:
    """CSV text with one row per result; empty cells where a figure is missing."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=csv_columns(), lineterminator="\n")
    writer.writeheader()
    for result in results:
        writer.writerow(csv_row(result))
    return out.getvalue()


def csv_row(result: PointResult) -> dict[str, Any]:
    point, batching = result.point, result.point.batching
    row: dict[str, Any] = {
        "key": result.key,
        "status": result.status,
        "valid": result.valid,
        "stability": (result.stability or {}).get("verdict", ""),
        "repeat": point.repeat,
        "protocol": point.protocol,
        "replicas": point.replicas,
        "enable_batching": batching is not None,
        "load_kind": point.load_kind,
        point.load_axis: point.load,
        # A failed point's reason, else why it is invalid (e.g. generator-bound); on one line,
        # so that results.csv keeps one point per line (a gRPC error's text may span several).
        "reason": " ".join((result.reason or "; ".join(result.invalid_reasons)).split()),
        "server_cpus": (result.placement or {}).get("servers") or "",
        "generator_cpus": (result.placement or {}).get("generator") or "",
    }
    if batching is not None:
        for field in AXIS_FIELDS:
            value = field.of(batching)
            row[field.name] = " ".join(map(str, value)) if field.repeated else value
    for metric_id in metric_ids():
        row[metric_id] = json_safe(result.metrics.get(metric_id))
    return row
