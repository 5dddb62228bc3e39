"""CPU placement planning: machine cores, replicas, generator processes → CPU sets."""

from __future__ import annotations

import pytest

from harness.errors import UserError
from harness.plan.placement import (
    Placement,
    format_cpus,
    more_processes,
    parse_cpus,
    plan_placement,
    split_cores,
)
from harness.plan.spec import validate_spec

BASE = {"model": {"builtin": "mlp"}, "load": {"concurrency": [8]}}


def test_two_cores_auto_gives_one_core_to_the_server_and_one_to_the_generator():
    placement = plan_placement((0, 1), 1)
    assert placement.replicas == ((0,),)
    assert placement.generator == (1,)
    assert not placement.shared
    assert placement.threads(0) == 1


def test_two_cores_two_replicas_share_the_server_core():
    placement = plan_placement((0, 1), 2)
    assert placement.replicas == ((0,), (0,))
    assert placement.generator == (1,)
    assert placement.replicas_share_cores and not placement.shared
    assert [placement.threads(i) for i in range(2)] == [1, 1]


@pytest.mark.parametrize(
    ("cores", "replicas", "processes", "expected_replicas", "expected_generator"),
    [
        (8, 1, None, ((0, 1, 2, 3),), (4, 5, 6, 7)),
        (8, 2, None, ((0, 1), (2, 3)), (4, 5, 6, 7)),
        (8, 3, None, ((0, 1), (2,), (3,)), (4, 5, 6, 7)),
        (8, 2, 1, ((0, 1, 2, 3), (4, 5, 6)), (7,)),
        (8, 1, 2, ((0, 1, 2, 3, 4, 5),), (6, 7)),
        (3, 1, None, ((0, 1),), (2,)),
        (4, 4, None, ((0,), (1,), (0,), (1,)), (2, 3)),
    ],
)
def test_auto_sizes_disjoint_sets_from_the_machine(
    cores, replicas, processes, expected_replicas, expected_generator
):
    placement = plan_placement(range(cores), replicas, generator_processes=processes)
    assert placement.replicas == expected_replicas
    assert placement.generator == expected_generator
    assert not set(placement.servers) & set(placement.generator)
    assert set(placement.servers) | set(placement.generator) == set(range(cores))


def test_one_core_cannot_separate_them():
    placement = plan_placement((3,), 2)
    assert placement.replicas == ((3,), (3,))
    assert placement.generator == (3,)
    assert placement.shared


def test_none_pins_nothing_and_shares_everything():
    placement = plan_placement((0, 1), 2, mode="none")
    assert placement.replicas == () and placement.generator == ()
    assert placement.threads(0) is None
    assert placement.shared


def test_explicit_sets_are_split_between_replicas():
    placement = plan_placement(range(4), 2, mode="cpus", servers=(0, 1, 2), generator=(3,))
    assert placement.replicas == ((0, 1), (2,))
    assert placement.generator == (3,)
    overlapping = plan_placement(range(4), 1, mode="cpus", servers=(0, 1), generator=(1,))
    assert overlapping.shared


def test_external_target_places_only_the_generator():
    placement = plan_placement((0, 1), 1, start_servers=False)
    assert placement.replicas == () and placement.generator == (0, 1)
    assert not placement.shared


def test_machine_order_and_duplicates_do_not_matter():
    assert plan_placement((1, 0, 1), 1) == plan_placement((0, 1), 1)


def test_more_processes_only_while_generator_cores_remain():
    assert more_processes(plan_placement((0, 1), 1), 1) is None
    assert more_processes(plan_placement(range(8), 1), 1) == 4
    assert more_processes(plan_placement(range(8), 1), 4) is None
    assert more_processes(plan_placement((0, 1), 1, mode="none"), 1) == 2


def test_split_cores():
    assert split_cores((0, 1, 2, 3, 4), 2) == ((0, 1, 2), (3, 4))
    assert split_cores((5,), 3) == ((5,), (5,), (5,))
    assert split_cores((), 2) == ()


def test_record_uses_taskset_lists():
    record = plan_placement(range(6), 2).as_dict()
    assert record == {
        "mode": "auto",
        "machine": "0-5",
        "servers": "0-2",
        "replicas": ["0-1", "2"],
        "generator": "3-5",
        "shared": False,
    }
    assert Placement("none", (0, 1)).as_dict()["servers"] is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [("0-3,6", (0, 1, 2, 3, 6)), ("2", (2,)), (1, (1,)), ([3, 1, 1], (1, 3)), (" 0 , 2", (0, 2))],
)
def test_parse_cpus(given, expected):
    assert parse_cpus(given) == expected


@pytest.mark.parametrize("bad", ["", "a", "3-1", "1-", [], [-1], [True], "0,,1"])
def test_parse_cpus_refuses(bad):
    with pytest.raises(ValueError):
        parse_cpus(bad)


def test_format_cpus():
    assert format_cpus((0, 1, 2, 5, 7, 8)) == "0-2,5,7-8"
    assert format_cpus(()) == ""


# --- the spec section ---------------------------------------------------------------------------


def test_spec_placement_defaults_to_auto_and_takes_short_forms():
    assert validate_spec(BASE).placement.mode == "auto"
    assert validate_spec({**BASE, "placement": "none"}).placement.mode == "none"
    explicit = validate_spec({**BASE, "placement": {"servers": "0-2", "generator": [3]}})
    assert explicit.placement.mode == "cpus"
    assert explicit.placement.servers == (0, 1, 2) and explicit.placement.generator == (3,)


@pytest.mark.parametrize(
    ("placement", "message"),
    [
        ("sometimes", "placement.mode: must be 'auto', 'none' or 'cpus'"),
        ({"servers": "0-1"}, "placement: mode cpus needs both servers and generator"),
        ({"mode": "auto", "generator": "1"}, "placement.generator: CPU lists only with mode cpus"),
        ({"servers": "x", "generator": "1"}, "placement.servers: expected a CPU list"),
        ({"cores": 2}, "placement.cores: unknown key; valid keys: mode, servers, generator"),
    ],
)
def test_spec_placement_problems_are_named(placement, message):
    with pytest.raises(UserError) as caught:
        validate_spec({**BASE, "placement": placement})
    assert message in str(caught.value)


def test_processes_auto_is_the_default():
    assert validate_spec(BASE).load.fixed_processes is None
    spec = validate_spec({**BASE, "load": {"concurrency": [8], "processes": 3}})
    assert spec.load.fixed_processes == 3


def test_external_target_takes_a_generator_set_only():
    external = {
        **BASE,
        "target": {"kind": "external", "endpoints": [{"grpc": "127.0.0.1:8500"}]},
        "model": {"name": "mlp"},
    }
    spec = validate_spec({**external, "placement": {"generator": "1"}})
    assert spec.placement.mode == "cpus" and spec.placement.servers is None
    with pytest.raises(UserError, match="kind external: the harness does not start the server"):
        validate_spec({**external, "placement": {"servers": "0", "generator": "1"}})
    with pytest.raises(UserError, match="mode cpus needs the generator CPU list"):
        validate_spec({**external, "placement": {"mode": "cpus"}})


def test_command_line_placement_replaces_the_spec_and_is_recorded_as_given():
    from harness.plan.spec import with_placement

    spec = validate_spec({**BASE, "placement": "none"})
    assert with_placement(spec) is spec
    auto = with_placement(spec, "auto")
    assert auto.placement.mode == "auto" and auto.as_given["placement"] == {"mode": "auto"}
    cpus = with_placement(spec, None, "0", "1")
    assert (cpus.placement.mode, cpus.placement.servers, cpus.placement.generator) == (
        "cpus",
        (0,),
        (1,),
    )
    with pytest.raises(UserError, match="placement: mode cpus needs both"):
        with_placement(spec, None, "0")


def test_run_json_records_the_sets_per_replica_count_and_the_report_shows_them():
    from harness.report.data import placement_section
    from harness.sweep.loop import placement_environment

    placements = {r: plan_placement((0, 1), r) for r in (1, 2)}
    environment = placement_environment(placements)
    assert environment == {
        "mode": "auto",
        "machine": "0-1",
        "by_replicas": {
            "1": {"replicas": ["0"], "generator": "1", "shared": False},
            "2": {"replicas": ["0", "0"], "generator": "1", "shared": False},
        },
    }
    section = placement_section({"placement": environment})
    assert section == {
        "mode": "auto",
        "machine": "0-1",
        "rows": [
            {"replicas": 1, "servers": "0", "generator": "1", "shared": False},
            {"replicas": 2, "servers": "0 | 0", "generator": "1", "shared": False},
        ],
    }
    assert placement_section({}) is None
    unpinned = placement_environment({1: plan_placement((0, 1), 1, mode="none")})
    row = placement_section({"placement": unpinned})["rows"][0]  # type: ignore[index]
    assert row == {"replicas": 1, "servers": "any CPU", "generator": "any CPU", "shared": True}


def test_serve_placement():
    from harness.servers.serve import describe_placement, serve_placement

    assert serve_placement(2, None, None, (0, 1)) is None
    assert serve_placement(2, "none", None, (0, 1)) is None
    auto = serve_placement(1, "auto", None, (0, 1, 2, 3))
    assert auto is not None and auto.replicas == ((0, 1),) and auto.generator == (2, 3)
    assert "load generator cpus: 2-3 (e.g. taskset -c 2-3 locust ...)" in describe_placement(auto)
    given = serve_placement(2, None, "1-2", (0, 1, 2, 3))
    assert given is not None and given.replicas == ((1,), (2,)) and given.generator == (0, 3)
    with pytest.raises(UserError, match="--server-cpus: CPU\\(s\\) 9 not usable: 0-3"):
        serve_placement(1, None, "9", (0, 1, 2, 3))
    with pytest.raises(UserError, match="--placement cpus needs --server-cpus"):
        serve_placement(1, "cpus", None, (0, 1))
