"""Ranges in a spec, the space a search walks, and the search section's checks."""

from __future__ import annotations

import pytest

from harness.errors import UserError
from harness.plan.points import expand_matrix
from harness.plan.search import budget_points, describe_search
from harness.plan.space import Space
from harness.plan.spec import SweepSpec, validate_spec

BASE = {"model": {"builtin": "mlp"}, "load": {"concurrency": [16]}}


def spec_with(batching: dict, **more) -> SweepSpec:
    return validate_spec({**BASE, "server": {"batching": batching}, **more})


def problems(raw: dict) -> str:
    with pytest.raises(UserError) as caught:
        validate_spec(raw)
    return str(caught.value)


@pytest.mark.parametrize(
    ("given", "values"),
    [
        ({"min": 1, "max": 256, "scale": "pow2"}, [1, 2, 4, 8, 16, 32, 64, 128, 256]),
        ({"min": 3, "max": 40, "scale": "pow2"}, [4, 8, 16, 32]),
        ({"min": 0, "max": 2000, "step": 500}, [0, 500, 1000, 1500, 2000]),
        ({"min": 100, "max": 10000, "scale": "log", "count": 3}, [100, 1000, 10000]),
        ({"min": 1, "max": 4}, [1, 2, 3, 4]),
    ],
)
def test_a_range_stands_for_its_list(given: dict, values: list[int]) -> None:
    field = "max_batch_size" if given["min"] > 0 else "batch_timeout_micros"
    spec = spec_with({field: given})
    assert getattr(spec.server.batching, field) == values


def test_ranges_on_replicas_and_concurrency_and_excludes_still_apply() -> None:
    spec = validate_spec(
        {
            **BASE,
            "server": {"replicas": {"min": 1, "max": 2}, "batching": {"max_batch_size": [8, 16]}},
            "load": {"concurrency": {"min": 8, "max": 32, "scale": "pow2"}},
            "matrix": {"exclude": [{"replicas": 2, "max_batch_size": 16}]},
        }
    )
    assert spec.server.replicas == [1, 2] and spec.load.concurrency == [8, 16, 32]
    space = Space(expand_matrix(spec))
    assert [a.name for a in space.axes] == ["replicas", "concurrency", "max_batch_size"]
    assert len(space) == 3 * 3  # 4 configurations x 3 loads, minus 1 x 3 excluded
    assert space.point((1, 0, 1)) is None  # replicas 2, mbs 16: excluded


@pytest.mark.parametrize(
    ("batching", "message"),
    [
        (
            {"max_batch_size": {"min": 0, "max": 8}},
            "server.batching.max_batch_size: range min must be an integer >= 1 (got 0)",
        ),
        (
            {"max_batch_size": {"min": 8, "max": 2}},
            "server.batching.max_batch_size: range needs min <= max (got min 8, max 2)",
        ),
        (
            {"max_batch_size": {"min": 1, "max": 8, "scale": "cubic"}},
            "server.batching.max_batch_size: range scale must be one of linear, pow2, log "
            "(got 'cubic')",
        ),
        (
            {"max_batch_size": {"min": 1, "max": 8, "stride": 2}},
            "server.batching.max_batch_size: unknown range key 'stride'; a range takes min, "
            "max, step, scale, count",
        ),
        (
            {"batch_timeout_micros": {"max": 8}},
            "server.batching.batch_timeout_micros: range needs min (an integer >= 0)",
        ),
        (
            {"batch_timeout_micros": {"min": 0, "max": 20000, "scale": "log", "count": 5}},
            "server.batching.batch_timeout_micros: range scale log needs min >= 1 (got 0); "
            "list 0 separately",
        ),
        (
            {"batch_timeout_micros": {"min": 0, "max": 100000}},
            "server.batching.batch_timeout_micros: range of 100001 values; at most 1000",
        ),
        (
            {"max_batch_size": {"min": 1, "max": 8, "scale": "pow2", "step": 2}},
            "server.batching.max_batch_size: range step is for a linear scale, not scale pow2",
        ),
        (
            {"max_batch_size": {"min": 5, "max": 7, "scale": "pow2"}},
            "server.batching.max_batch_size: range scale pow2 has no power of two in [5, 7]",
        ),
    ],
)
def test_a_bad_range_is_one_line_naming_its_key_and_what_is_allowed(
    batching: dict, message: str
) -> None:
    text = problems({**BASE, "server": {"batching": batching}})
    assert "1 problem(s)" in text and message in text


@pytest.mark.parametrize(
    ("more", "message"),
    [
        ({"search": {"strategy": "quick"}, "repeats": 2}, "repeats: strategy quick measures"),
        (
            {
                "search": {"strategy": "bayesian"},
                "recommend": {"objective": {"weights": {"throughput_rps": 1}}},
            },
            "recommend.objective: strategy bayesian needs maximize or minimize",
        ),
        ({"search": {"max_points": 5}}, "search: a budget (max_points, fraction) is for"),
        ({"search": {"strategy": "random"}}, "search.strategy: must be 'grid', 'quick' or"),
        ({"search": {"strategy": "quick", "fraction": 1.5}}, "search.fraction: must be <= 1"),
    ],
)
def test_the_search_section_is_checked(more: dict, message: str) -> None:
    assert message in problems({**BASE, **more})


def test_preflight_line_names_the_space_and_the_budget() -> None:
    spec = spec_with(
        {"max_batch_size": {"min": 1, "max": 8, "scale": "pow2"}, "num_batch_threads": [1, 2]},
        server={
            "enable_batching": [True, False],
            "batching": {
                "max_batch_size": {"min": 1, "max": 8, "scale": "pow2"},
                "num_batch_threads": [1, 2],
            },
        },
        search={"strategy": "bayesian", "fraction": 0.5},
    )
    line = describe_search(spec, expand_matrix(spec))
    assert line == (
        "search bayesian: a space of 8 configurations (max_batch_size 4 × num_batch_threads 2)"
        " (+1 baseline); budget 4 points (50% of the space)"
    )


def test_budget_is_the_smaller_of_points_and_fraction() -> None:
    assert budget_points(160, None, None) == 160
    assert budget_points(160, 30, 0.1) == 16
    assert budget_points(160, 10, 0.1) == 10
    assert budget_points(5, None, 0.01) == 1
