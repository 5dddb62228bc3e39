"""The shapes of the files a run folder holds (a point, max_rate.json's searches, a baseline
file), checked when they are read back.

They are ours, but they are files: an editor, a full disk or a copy cut short can leave any
value in them. Reading one checks every field the harness relies on against the type it writes,
so a damaged file is refused with its path and the key that is wrong instead of being half read
into a crash three modules later. Keys not listed here are kept as they are (``extra``, and
figures a newer writer adds).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.errors import UserError
from harness.plan.batching_fields import BatchingParams
from harness.plan.spec import LoadKind, ProtocolName, describe_error

Figures = dict[str, float | None]  # metric ID -> value; None where it could not be measured


class _Open(BaseModel):
    # Finite numbers only: the writer stores NaN and infinities as null (store.results.json_safe).
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class _Server(_Open):
    enable_batching: bool
    batching: BatchingParams | None = None
    replicas: int = Field(ge=1)


class StoredPoint(_Open):
    """A planned point, as ``Point.as_dict()`` writes it."""

    server: _Server
    load_kind: LoadKind
    load: float = Field(gt=0)
    protocol: ProtocolName
    repeat: int = Field(default=0, ge=0)
    traffic: dict[str, Any] | None = None


class _Window(_Open):
    index: int
    duration_s: float | None = None
    used: bool = True
    metrics: Figures = {}


class _Stability(_Open):
    verdict: str
    reason: str | None = None
    windows_used: list[int] = []


class _Bucket(_Open):
    le: float | Literal["+Inf"]
    count: float


class _Telemetry(_Open):
    batches: float | None = None
    rows: float | None = None
    padding_rows: float | None = None
    rejected: float | None = None
    queue_time_mean_ms: float | None = None
    compute_time_mean_ms: float | None = None
    batch_size_buckets: list[_Bucket] = []
    requests_by_status: dict[str, float] = {}
    replica_requests: list[float] = []


class _Kind(_Open):
    metrics: Figures = {}
    histogram: str | None = None


class PointFile(_Open):
    """A point's result file, as ``PointResult.as_dict()`` writes it."""

    point: StoredPoint
    status: Literal["ok", "failed"] = "ok"
    metrics: Figures = {}
    windows: list[_Window] = []
    histogram: str | None = None
    stability: _Stability | None = None
    valid: bool = True
    invalid_reasons: list[str] = []
    telemetry: _Telemetry = _Telemetry()
    reason: str | None = None
    log_tail: str | None = None
    by_kind: list[_Kind] = []
    timeline: list[dict[str, Any]] = []
    started_at: str | None = None
    finished_at: str | None = None
    extra: dict[str, Any] = {}
    placement: dict[str, Any] | None = None


class _Probe(_Open):
    rate: float
    passed: bool
    misses: dict[str, float] = {}
    key: str | None = None


class Search(_Open):
    """One configuration's max-rate search in ``max_rate.json``."""

    lane_key: str
    server: _Server
    protocol: ProtocolName
    repeat: int = Field(default=0, ge=0)
    max_rate_rps: float | None = None
    outcome: str | None = None
    probes: list[_Probe] = []


class MaxRateFile(_Open):
    """``max_rate.json``: every configuration's search."""

    searches: list[Search] = []


class _BaselinePoint(_Open):
    status: Literal["ok", "failed"]
    stable: bool = True
    valid: bool = True
    reason: str | None = None
    metrics: Figures = {}
    windows: dict[str, list[float]] = {}


class _BaselineRun(_Open):
    points: dict[str, _BaselinePoint]


class _Source(_Open):
    run_id: str = ""
    environment: dict[str, Any] = {}


class BaselineFile(_BaselineRun):
    """``compare.write_baseline``'s file: the newest run's points and the earlier runs kept."""

    source: _Source = _Source()
    history: list[_BaselineRun] = []


def checked(model: type[BaseModel], data: Any, path: object) -> dict[str, Any]:
    """``data`` as ``model`` reads it (the keys it was given, numbers as numbers); UserError
    naming ``path`` and the first wrong key otherwise."""
    try:
        return model.model_validate(data).model_dump(exclude_unset=True)
    except ValidationError as exc:
        raise UserError(f"{path}: {describe_error(exc.errors()[0])}") from None
