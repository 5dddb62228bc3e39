"""The batching field table: what the spec, keys, CSV and defaults derive from it."""

from __future__ import annotations

from dataclasses import fields

import pytest

from harness.plan.batching_fields import (
    AXIS_FIELDS,
    FIELDS,
    PROTO_ORDER,
    BatchingParams,
    largest_batch,
    runs_tfserving_defaults,
    tfserving_default,
)
from harness.plan.batching_file import format_batching, parse_batching
from harness.plan.points import Point, ServerConfig
from harness.plan.spec import BatchingAxes, ExcludeRule, IncludeRule
from harness.store.results import PARAM_COLUMNS

EVERY_FIELD = BatchingParams(
    max_batch_size=32,
    batch_timeout_micros=2000,
    max_enqueued_batches=16,
    num_batch_threads=2,
    thread_pool_name="pool_a",
    allowed_batch_sizes=(8, 16, 32),
    pad_variable_length_inputs=True,
    enable_large_batch_splitting=False,
    max_execution_batch_size=16,
)


def test_the_dataclass_has_exactly_the_fields_of_the_table():
    assert sorted(f.name for f in fields(BatchingParams)) == sorted(f.name for f in FIELDS)
    assert [f.name for f in PROTO_ORDER] == [f.name for f in fields(BatchingParams)]


def test_names_and_key_prefixes_are_unique():
    assert len({f.name for f in FIELDS}) == len(FIELDS)
    assert len({f.prefix for f in FIELDS}) == len(FIELDS)


def test_a_key_with_every_field_set_is_unchanged():
    point = Point(ServerConfig(EVERY_FIELD, 1), "concurrency", 16, "grpc", 0)
    assert point.key == (
        "mbs32-bt2000-nbt2-meb16-abs8.16.32-mebs16-split0-pad1-tppool_a-r1-grpc-c16-rep0"
    )


def test_every_field_round_trips_through_the_text_format():
    assert parse_batching(format_batching(EVERY_FIELD)) == EVERY_FIELD
    assert BatchingParams.from_dict(EVERY_FIELD.as_dict()) == EVERY_FIELD


def test_spec_models_carry_the_axis_fields_in_table_order():
    axis_names = [f.name for f in AXIS_FIELDS]
    assert axis_names == [
        "max_batch_size",
        "batch_timeout_micros",
        "num_batch_threads",
        "max_enqueued_batches",
        "allowed_batch_sizes",
    ]
    assert list(BatchingAxes.model_fields) == axis_names
    assert list(IncludeRule.model_fields) == ["enable_batching", "replicas", *axis_names]
    assert list(ExcludeRule.model_fields) == [
        "enable_batching",
        "replicas",
        *axis_names,
        "protocol",
        "concurrency",
        "rate",
        "speed",
        "arrival",
    ]


def test_spec_defaults_leave_every_axis_at_the_server_default():
    axes = BatchingAxes()
    assert [getattr(axes, f.name) for f in AXIS_FIELDS] == [[None]] * 4 + [[[]]]
    include = IncludeRule()
    assert [getattr(include, f.name) for f in AXIS_FIELDS] == [None] * 4 + [[]]


def test_csv_parameter_columns_are_unchanged():
    assert PARAM_COLUMNS == (
        "key",
        "status",
        "valid",
        "stability",
        "repeat",
        "protocol",
        "replicas",
        "enable_batching",
        "max_batch_size",
        "batch_timeout_micros",
        "num_batch_threads",
        "max_enqueued_batches",
        "allowed_batch_sizes",
        "load_kind",
        "concurrency",
        "rate",
        "speed",
    )


@pytest.mark.parametrize(
    ("name", "values", "expected"),
    [
        ("max_batch_size", {}, 1000),
        ("batch_timeout_micros", {}, 0),
        ("max_enqueued_batches", {}, 10),
        ("num_batch_threads", {}, 6),
        ("allowed_batch_sizes", {}, ()),
        ("pad_variable_length_inputs", {}, False),
        ("enable_large_batch_splitting", {}, False),
        ("max_execution_batch_size", {}, 1000),
        ("max_execution_batch_size", {"max_batch_size": 64}, 64),
    ],
)
def test_tf_serving_defaults(name, values, expected):
    (field,) = [f for f in FIELDS if f.name == name]
    assert tfserving_default(field, values, cpu_count=6) == expected


def test_the_thread_count_default_is_unknown_without_a_cpu_count():
    explicit = BatchingParams(num_batch_threads=4)
    assert runs_tfserving_defaults(explicit, cpu_count=4)
    assert not runs_tfserving_defaults(explicit, cpu_count=None)


def test_every_default_written_out_is_still_the_default():
    written_out = BatchingParams(
        max_batch_size=1000,
        batch_timeout_micros=0,
        max_enqueued_batches=10,
        num_batch_threads=2,
        pad_variable_length_inputs=False,
        enable_large_batch_splitting=False,
        max_execution_batch_size=1000,
    )
    assert runs_tfserving_defaults(written_out, cpu_count=2)
    assert not runs_tfserving_defaults(BatchingParams(allowed_batch_sizes=(1000,)), cpu_count=2)


@pytest.mark.parametrize(
    ("params", "largest"),
    [
        (BatchingParams(), 1000),
        (BatchingParams(max_batch_size=32), 32),
        # The execution limit counts only when large batches are split.
        (BatchingParams(max_batch_size=32, max_execution_batch_size=8), 32),
        (
            BatchingParams(
                max_batch_size=32, enable_large_batch_splitting=True, max_execution_batch_size=8
            ),
            8,
        ),
        (BatchingParams(max_batch_size=32, enable_large_batch_splitting=True), 32),
    ],
)
def test_the_largest_batch_the_server_executes(params, largest):
    assert params.largest_batch == largest == largest_batch(params.as_dict())
