"""The batching parameters file in TF Serving's text format: written, read, round-tripped."""

from __future__ import annotations

import pytest

from harness.errors import UserError
from harness.plan.batching_file import (
    BatchingParams,
    format_batching,
    parse_batching,
    read_batching_file,
    write_batching_file,
)

FULL = BatchingParams(
    max_batch_size=32,
    batch_timeout_micros=2000,
    max_enqueued_batches=16,
    num_batch_threads=2,
    thread_pool_name='pool "a"',
    allowed_batch_sizes=(8, 16, 32),
    pad_variable_length_inputs=True,
    enable_large_batch_splitting=False,
    max_execution_batch_size=16,
)


def test_writes_tf_serving_text_format_for_set_fields_only():
    params = BatchingParams(
        max_batch_size=128, batch_timeout_micros=0, allowed_batch_sizes=(64, 128)
    )
    assert format_batching(params) == (
        "max_batch_size { value: 128 }\n"
        "batch_timeout_micros { value: 0 }\n"
        "allowed_batch_sizes: 64\n"
        "allowed_batch_sizes: 128\n"
    )


def test_wrapper_and_plain_fields_use_their_proto_syntax():
    text = format_batching(FULL)
    assert "enable_large_batch_splitting { value: false }" in text
    assert "pad_variable_length_inputs: true" in text
    assert 'thread_pool_name { value: "pool \\"a\\"" }' in text


@pytest.mark.parametrize(
    "params",
    [
        FULL,
        BatchingParams(),
        BatchingParams(num_batch_threads=4),
        BatchingParams(max_batch_size=1, batch_timeout_micros=0, allowed_batch_sizes=(1,)),
    ],
)
def test_round_trip(params, tmp_path):
    path = write_batching_file(tmp_path / "sub" / "batching_parameters.txt", params)
    assert read_batching_file(path) == params


def test_reads_tf_serving_own_test_config(tfserving_testdata):
    assert read_batching_file(tfserving_testdata / "batching_config.txt") == BatchingParams(
        max_batch_size=128,
        batch_timeout_micros=0,
        max_enqueued_batches=1000000,
        num_batch_threads=8,
    )


def test_parses_multiline_blocks_comments_and_angle_brackets():
    text = """
    # tuned for CPU
    max_batch_size {
      value: 64
    }
    batch_timeout_micros: { value: 500 }  # colon form
    num_batch_threads < value: 3 >
    allowed_batch_sizes: 32 allowed_batch_sizes: 64
    """
    assert parse_batching(text) == BatchingParams(
        max_batch_size=64,
        batch_timeout_micros=500,
        num_batch_threads=3,
        allowed_batch_sizes=(32, 64),
    )


def test_unknown_field_is_named_with_line_and_valid_fields():
    with pytest.raises(UserError) as err:
        parse_batching("max_batch_size { value: 8 }\nmax_batch_sise { value: 8 }\n", "f.txt")
    message = str(err.value)
    assert "f.txt:2" in message and "'max_batch_sise'" in message
    assert "valid fields: max_batch_size, batch_timeout_micros" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max_batch_size: 8", "max_batch_size is written as `max_batch_size { value: ... }`"),
        ("allowed_batch_sizes { value: 8 }", "allowed_batch_sizes is written as"),
        ("max_batch_size { value: eight }", "max_batch_size expects int, got eight"),
        ("pad_variable_length_inputs: maybe", "expects bool"),
        (
            "max_batch_size { value: 8 }\nmax_batch_size { value: 9 }",
            ":2: max_batch_size is given more",
        ),
        ("num_batch_threads {", "cannot parse 'num_batch_threads {'"),
    ],
)
def test_malformed_files_are_refused_clearly(text, expected):
    with pytest.raises(UserError) as err:
        parse_batching(text)
    assert expected in str(err.value)


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot read batching parameters file"):
        read_batching_file(tmp_path / "nope.txt")


def test_as_dict_round_trip_keeps_only_set_fields():
    params = BatchingParams(max_batch_size=8, allowed_batch_sizes=(4, 8))
    assert params.as_dict() == {"max_batch_size": 8, "allowed_batch_sizes": [4, 8]}
    assert BatchingParams.from_dict(params.as_dict()) == params
