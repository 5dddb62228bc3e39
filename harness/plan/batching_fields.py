"""The batching fields: one declaration that the rest of the harness derives from.

Each field of TF Serving's BatchingParameters is one row of :data:`FIELDS`: its proto name, its
point-key prefix, TF Serving's default, its value type, how the text format writes it, its
label in the report, and whether the spec sweeps it. The spec's batching axes and matrix
rules, point keys, the ``--batching_parameters_file`` writer and parser, the CSV columns,
pre-flight, the recommender and the report are all built from this table, so a new field is a
new row here plus a field of :class:`BatchingParams` (a unit test checks they agree) — and the
reference server, which keeps its own declaration because it never imports the harness.

:data:`FIELDS` is in point-key order (the order of the spec's axes, the CSV columns and the
report's labels); :class:`BatchingParams` is in the proto's declaration order (the order of the
text format and of stored JSON).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Generic, TypeVar, cast

T = TypeVar("T")


class Derived(enum.Enum):
    """A TF Serving default that depends on the machine or on another field."""

    CPU_COUNT = "the machine's CPU count"
    MAX_BATCH_SIZE = "max_batch_size"


@dataclass(frozen=True)
class BatchingField(Generic[T]):
    """One batching field; ``T`` is the type of its value in :class:`BatchingParams`."""

    name: str  # the proto field name: also the spec key, the CSV column and the JSON key
    prefix: str  # in point keys: ``mbs32``
    kind: type  # int, bool or str; of each item for a repeated field
    default: object  # TF Serving's value when the field is not set (or a Derived rule)
    short: str  # the report's short label: ``mbs 32``, ``threads 4``
    wrapped: bool = True  # text format `name { value: X }` (a wrapper message), else `name: X`
    repeated: bool = False  # a list of values: `name: X` once per item
    axis: bool = False  # swept by the spec (server.batching, matrix include/exclude rules)
    minimum: int = 1  # the smallest value a spec accepts for an int axis

    def of(self, params: BatchingParams) -> T:
        """The field's value in ``params`` (``None`` or ``()`` when not set)."""
        return cast(T, getattr(params, self.name))


MAX_BATCH_SIZE: BatchingField[int | None] = BatchingField(
    "max_batch_size", "mbs", int, 1000, "mbs", axis=True
)
BATCH_TIMEOUT_MICROS: BatchingField[int | None] = BatchingField(
    "batch_timeout_micros", "bt", int, 0, "timeout", axis=True, minimum=0
)
NUM_BATCH_THREADS: BatchingField[int | None] = BatchingField(
    "num_batch_threads", "nbt", int, Derived.CPU_COUNT, "threads", axis=True
)
MAX_ENQUEUED_BATCHES: BatchingField[int | None] = BatchingField(
    "max_enqueued_batches", "meb", int, 10, "queue", axis=True
)
ALLOWED_BATCH_SIZES: BatchingField[tuple[int, ...]] = BatchingField(
    "allowed_batch_sizes", "abs", int, (), "sizes", wrapped=False, repeated=True, axis=True
)
MAX_EXECUTION_BATCH_SIZE: BatchingField[int | None] = BatchingField(
    "max_execution_batch_size", "mebs", int, Derived.MAX_BATCH_SIZE, "exec"
)
ENABLE_LARGE_BATCH_SPLITTING: BatchingField[bool | None] = BatchingField(
    "enable_large_batch_splitting", "split", bool, False, "split"
)
PAD_VARIABLE_LENGTH_INPUTS: BatchingField[bool | None] = BatchingField(
    "pad_variable_length_inputs", "pad", bool, False, "pad", wrapped=False
)
THREAD_POOL_NAME: BatchingField[str | None] = BatchingField(
    "thread_pool_name", "tp", str, "batch_threads", "pool"
)

# Point-key order: changing it renames every stored point.
FIELDS: tuple[BatchingField[Any], ...] = (
    MAX_BATCH_SIZE,
    BATCH_TIMEOUT_MICROS,
    NUM_BATCH_THREADS,
    MAX_ENQUEUED_BATCHES,
    ALLOWED_BATCH_SIZES,
    MAX_EXECUTION_BATCH_SIZE,
    ENABLE_LARGE_BATCH_SPLITTING,
    PAD_VARIABLE_LENGTH_INPUTS,
    THREAD_POOL_NAME,
)
# The fields a spec sweeps, in the spec's (and the CSV's) order.
AXIS_FIELDS: tuple[BatchingField[Any], ...] = tuple(f for f in FIELDS if f.axis)
BY_NAME: dict[str, BatchingField[Any]] = {f.name: f for f in FIELDS}


@dataclass(frozen=True)
class BatchingParams:
    """The batching knobs of one server configuration; ``None`` means "server default".

    In the proto's declaration order (positional arguments follow it).
    """

    max_batch_size: int | None = None
    batch_timeout_micros: int | None = None
    max_enqueued_batches: int | None = None
    num_batch_threads: int | None = None
    thread_pool_name: str | None = None
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool | None = None
    enable_large_batch_splitting: bool | None = None
    max_execution_batch_size: int | None = None

    def as_dict(self) -> dict[str, object]:
        """The fields that are set, by proto field name, in proto order (JSON-ready)."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and value != ():
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> BatchingParams:
        """Inverse of :meth:`as_dict`; a repeated field may be any sequence (kept as a tuple)."""
        values = {
            name: tuple(cast(Iterable[int], value)) if BY_NAME[name].repeated else value
            for name, value in data.items()
        }
        return cls(**values)  # type: ignore[arg-type]  # each value has its field's type (table)

    @property
    def largest_batch(self) -> int:
        """The largest batch the server executes (TF Serving's defaults filled in)."""
        return largest_batch(self.as_dict())


# The proto's order, for the text format.
PROTO_ORDER: tuple[BatchingField[Any], ...] = tuple(BY_NAME[f.name] for f in fields(BatchingParams))


def tfserving_default(
    field: BatchingField[Any], values: Mapping[str, object], cpu_count: int | None
) -> object:
    """What TF Serving uses for ``field`` when it is not set, given the fields that are.

    ``values`` is :meth:`BatchingParams.as_dict`; ``cpu_count`` is the server machine's
    (``None`` when unknown, and then the default thread count is unknown too).
    """
    if field.default is Derived.CPU_COUNT:
        return cpu_count
    if field.default is Derived.MAX_BATCH_SIZE:
        return values.get(MAX_BATCH_SIZE.name, MAX_BATCH_SIZE.default)
    return field.default


def largest_batch(values: Mapping[str, object]) -> int:
    """The largest batch the server executes: the execution limit when splitting, else the max.

    ``values`` is :meth:`BatchingParams.as_dict`; unset fields take TF Serving's defaults.
    """
    size = values.get(MAX_BATCH_SIZE.name, MAX_BATCH_SIZE.default)
    if values.get(ENABLE_LARGE_BATCH_SPLITTING.name, ENABLE_LARGE_BATCH_SPLITTING.default):
        size = values.get(MAX_EXECUTION_BATCH_SIZE.name, size)
    return cast(int, size)


def runs_tfserving_defaults(params: BatchingParams, cpu_count: int | None) -> bool:
    """True when every field that ``params`` sets equals TF Serving's default for it."""
    values = params.as_dict()
    return all(
        value == tfserving_default(BY_NAME[name], values, cpu_count)
        for name, value in values.items()
    )
