"""Points: canonical keys (file names, dedup, resume) and the matrix with exclude/include rules."""

from __future__ import annotations

import re

import pytest

from harness.plan.batching_file import BatchingParams
from harness.plan.points import Point, ServerConfig, expand_matrix, format_number, server_configs
from harness.plan.spec import load_preset, validate_spec

MBS32 = BatchingParams(
    max_batch_size=32, batch_timeout_micros=2000, num_batch_threads=2, max_enqueued_batches=16
)


def spec(**sections):
    raw = {"model": {"builtin": "mlp"}, "load": {"concurrency": [16]}, **sections}
    return validate_spec(raw)


def axes(**batching):
    return {
        "replicas": batching.pop("replicas", [1]),
        "enable_batching": batching.pop("enable_batching", [True]),
        "batching": batching,
    }


# --- keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("point", "key"),
    [
        (
            Point(ServerConfig(MBS32, 2), "concurrency", 16, "grpc", 0),
            "mbs32-bt2000-nbt2-meb16-r2-grpc-c16-rep0",
        ),
        (Point(ServerConfig(None, 1), "rate", 137.5, "rest", 1), "nobatch-r1-rest-rps137.5-rep1"),
        (
            Point(ServerConfig(BatchingParams(), 1), "rate", 200.0, "grpc", 0),
            "bdefault-r1-grpc-rps200-rep0",
        ),
        (
            Point(
                ServerConfig(BatchingParams(max_batch_size=32, allowed_batch_sizes=(8, 16, 32)), 1),
                "concurrency",
                64,
                "grpc",
                2,
            ),
            "mbs32-abs8.16.32-r1-grpc-c64-rep2",
        ),
        (
            Point(
                ServerConfig(BatchingParams(batch_timeout_micros=0), 1), "rate", 0.125, "grpc", 0
            ),
            "bt0-r1-grpc-rps0.125-rep0",
        ),
    ],
)
def test_keys_are_canonical_and_fixed(point, key):
    # These strings are file names of stored results: changing them orphans every old run.
    assert point.key == key


def test_key_does_not_depend_on_how_numbers_were_written():
    as_int = Point(ServerConfig(MBS32, 1), "rate", 100, "grpc")
    as_float = Point(ServerConfig(MBS32, 1), "rate", 100.0, "grpc")
    assert as_int.key == as_float.key


def test_unset_fields_differ_from_set_ones():
    default = ServerConfig(BatchingParams(), 1)
    explicit = ServerConfig(BatchingParams(batch_timeout_micros=0), 1)
    assert default.key != explicit.key


def test_format_number_has_no_exponent_or_dash():
    assert format_number(8) == "8"
    assert format_number(8.0) == "8"
    assert format_number(1e-4) == "0"
    assert format_number(12345678.25) == "12345678.25"
    assert format_number(2 / 3) == "0.667"


def test_point_round_trips_through_its_dict():
    point = Point(
        ServerConfig(BatchingParams(max_batch_size=8, allowed_batch_sizes=(4, 8)), 2),
        "rate",
        50.5,
        "rest",
        1,
    )
    assert Point.from_dict(point.as_dict()) == point
    baseline = Point(ServerConfig(None, 3), "concurrency", 4, "grpc")
    assert Point.from_dict(baseline.as_dict()) == baseline


def test_every_preset_point_has_a_unique_file_safe_key():
    for name in ("default", "ci"):
        keys = [point.key for point in expand_matrix(load_preset(name))]
        assert len(keys) == len(set(keys))
        assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", key) for key in keys)


# --- the matrix ---------------------------------------------------------------------------------


def test_matrix_is_the_product_of_the_axes():
    points = expand_matrix(
        spec(
            server=axes(max_batch_size=[8, 32], batch_timeout_micros=[0, 500], replicas=[1, 2]),
            load={"concurrency": [4, 64]},
            protocol="both",
            repeats=2,
        )
    )
    assert len(points) == 2 * 2 * 2 * 2 * 2 * 2
    assert len({p.key for p in points}) == len(points)


def test_baseline_is_one_point_per_replica_count_not_per_batching_value():
    configs = server_configs(
        spec(
            server=axes(
                max_batch_size=[8, 32],
                batch_timeout_micros=[0, 1],
                replicas=[1, 2],
                enable_batching=[True, False],
            )
        )
    )
    baselines = [c for c in configs if c.batching is None]
    assert [c.replicas for c in baselines] == [1, 2]
    assert len(configs) == 2 * (4 + 1)


def test_unset_axes_stay_server_defaults():
    (point,) = expand_matrix(spec(server=axes(max_batch_size=[8])))
    assert point.batching == BatchingParams(max_batch_size=8)


def test_exclude_drops_every_point_matching_all_given_fields():
    points = expand_matrix(
        spec(
            server=axes(max_batch_size=[8, 32], batch_timeout_micros=[0, 5000], replicas=[1, 2]),
            matrix={"exclude": [{"max_batch_size": 8, "batch_timeout_micros": 5000}]},
        )
    )
    assert len(points) == (4 - 1) * 2
    assert not any(
        p.batching.max_batch_size == 8 and p.batching.batch_timeout_micros == 5000 for p in points
    )


def test_exclude_can_name_load_and_protocol():
    points = expand_matrix(
        spec(
            server=axes(max_batch_size=[8, 32]),
            protocol="both",
            load={"concurrency": [4, 64]},
            matrix={
                "exclude": [
                    {"concurrency": 64, "protocol": "rest"},
                    {"max_batch_size": 32, "concurrency": 4},
                ]
            },
        )
    )
    pairs = {(p.protocol, p.load, p.batching.max_batch_size) for p in points}
    assert pairs == {("grpc", 4, 8), ("rest", 4, 8), ("grpc", 64, 8), ("grpc", 64, 32)}


def test_exclude_on_a_batching_field_never_drops_the_baseline():
    points = expand_matrix(
        spec(
            server=axes(max_batch_size=[8], enable_batching=[True, False]),
            matrix={"exclude": [{"max_batch_size": 8}]},
        )
    )
    assert [p.key for p in points] == ["nobatch-r1-grpc-c16-rep0"]


def test_exclude_can_drop_baselines_by_replicas():
    points = expand_matrix(
        spec(
            server=axes(enable_batching=[True, False], replicas=[1, 2]),
            matrix={"exclude": [{"enable_batching": False, "replicas": 2}]},
        )
    )
    assert sorted(p.server.key for p in points) == ["bdefault-r1", "bdefault-r2", "nobatch-r1"]


def test_include_adds_a_configuration_with_server_defaults_for_the_rest():
    points = expand_matrix(
        spec(
            server=axes(max_batch_size=[8]),
            matrix={
                "include": [{"max_batch_size": 128, "replicas": 2}, {"enable_batching": False}]
            },
        )
    )
    assert [p.server.key for p in points] == ["mbs8-r1", "mbs128-r2", "nobatch-r1"]


def test_include_of_an_existing_configuration_is_not_duplicated():
    points = expand_matrix(
        spec(server=axes(max_batch_size=[8]), matrix={"include": [{"max_batch_size": 8}]})
    )
    assert len(points) == 1


def test_repeats_are_the_outermost_loop():
    points = expand_matrix(spec(server=axes(max_batch_size=[8, 32]), repeats=3))
    assert [p.repeat for p in points] == [0, 0, 1, 1, 2, 2]
    assert [p.batching.max_batch_size for p in points[:2]] == [8, 32]


def test_find_max_rate_points_are_the_first_probe_of_each_search():
    points = expand_matrix(
        spec(
            server=axes(max_batch_size=[8, 32]),
            load={"find_max_rate": {"slo": {"latency_p99_ms": 10}, "start_rps": 40}},
        )
    )
    assert [(p.load_kind, p.load) for p in points] == [("rate", 40), ("rate", 40)]
    assert points[0].lane_key == "mbs8-r1-grpc-rep0"
