"""The sweep spec: presets, defaults, and validation errors that name the key at fault."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from harness.errors import UserError
from harness.plan.presets import preset_names, preset_path
from harness.plan.spec import format_path, load_preset, load_spec, parse_spec, validate_spec

MINIMAL = {"model": {"builtin": "mlp"}, "load": {"concurrency": [4]}}


def spec_with(**sections):
    return {**MINIMAL, **sections}


def problems_of(raw) -> str:
    with pytest.raises(UserError) as err:
        validate_spec(raw, "s.yaml")
    return str(err.value)


# --- presets ------------------------------------------------------------------------------------


def test_presets_are_shipped_and_valid():
    assert {"default", "ci"} <= set(preset_names())
    for name in preset_names():
        spec = load_preset(name)
        assert spec.source == f"preset:{name}"
        assert spec.as_given == yaml.safe_load(preset_path(name).read_text())


def test_default_preset_shows_the_batching_trade_off_on_mlp_over_grpc():
    spec = load_preset("default")
    axes = spec.server.batching
    assert spec.model.builtin == "mlp" and spec.protocols == ("grpc",)
    assert len(axes.max_batch_size) >= 3 and len(axes.batch_timeout_micros) >= 3
    assert len(spec.server.replicas) >= 2
    assert False in spec.server.enable_batching  # the unbatched baseline
    assert spec.load.kind == "concurrency"


def test_ci_preset_repeats_points_so_noise_can_be_estimated():
    spec = load_preset("ci")
    assert spec.repeats >= 2
    assert spec.load.kind == "concurrency"


def test_unknown_preset_lists_the_presets():
    with pytest.raises(UserError, match=r"unknown preset 'nope'; presets: .*default"):
        load_preset("nope")


# --- defaults and shapes ------------------------------------------------------------------------


def test_minimal_spec_gets_documented_defaults():
    spec = validate_spec(MINIMAL)
    assert spec.target.kind == "reference"
    assert spec.protocols == ("grpc",)
    assert spec.measurement.stability_tolerance == 0.10
    assert spec.measurement.stable_windows == 3
    assert spec.repeats == 1
    assert spec.server.batching.max_batch_size == [None]  # server default
    assert spec.recommend.objective.maximize == "throughput_rps"
    assert spec.model.served_name == "mlp"


def test_a_scalar_axis_means_a_one_value_axis():
    spec = validate_spec(
        spec_with(server={"replicas": 2, "batching": {"max_batch_size": 8}}, load={"rate": 100})
    )
    assert spec.server.replicas == [2]
    assert spec.server.batching.max_batch_size == [8]
    assert spec.load.kind == "rate" and spec.load.values == (100,)


def test_protocol_both_means_grpc_and_rest():
    assert validate_spec(spec_with(protocol="both")).protocols == ("grpc", "rest")


def test_as_given_keeps_the_mapping_as_written(tmp_path):
    text = "model: {builtin: mlp}\nload: {concurrency: 4}\n"
    path = tmp_path / "s.yaml"
    path.write_text(text)
    spec = load_spec(path)
    assert spec.as_given == {"model": {"builtin": "mlp"}, "load": {"concurrency": 4}}
    assert spec.source == str(path)


def test_latency_slo_prefers_the_search_slo():
    search = {"find_max_rate": {"slo": {"latency_p99_ms": 20}}}
    spec = validate_spec(spec_with(load=search, recommend={"slo": {"latency_p99_ms": 50}}))
    assert spec.latency_slo_ms == 20
    assert validate_spec(spec_with(recommend={"slo": {"latency_p99_ms": 50}})).latency_slo_ms == 50


def test_spec_objects_are_frozen():
    spec = validate_spec(MINIMAL)
    with pytest.raises(ValueError, match="frozen"):
        spec.repeats = 3


# --- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            spec_with(server={"batching": {"max_batch_size": [8, 32, -4]}}),
            "server.batching.max_batch_size[2]: must be > 0 (got -4)",
        ),
        (
            spec_with(server={"batching": {"batch_timeout_micros": ["2ms"]}}),
            "server.batching.batch_timeout_micros[0]: must be an integer (got '2ms')",
        ),
        (
            spec_with(server={"batching": {"allowed_batch_sizes": [[8, 4]]}}),
            "server.batching.allowed_batch_sizes[0]: entries must be strictly increasing",
        ),
        (spec_with(server={"replicas": [1, 1]}), "server.replicas: 1 is listed twice"),
        (
            spec_with(model={"builtin": "mlp", "version_split": "stable:0.9"}),
            "model.version_split: use ARM=WEIGHT,ARM=WEIGHT with labels or version numbers "
            "(e.g. stable=0.9,canary=0.1), got 'stable:0.9'",
        ),
        (spec_with(protocol="udp"), "protocol: must be 'grpc', 'rest' or 'both' (got 'udp')"),
        (spec_with(load={"concurrency": [0]}), "load.concurrency[0]: must be > 0 (got 0)"),
        (
            spec_with(load={"concurrency": [4], "rate": [10]}),
            "load: give exactly one of concurrency (closed loop), rate (open loop), "
            "find_max_rate or trace",
        ),
        (
            spec_with(load={"find_max_rate": {"slo": {}}}),
            "load.find_max_rate.slo: must have at least 1 item(s)",
        ),
        (
            spec_with(load={"find_max_rate": {"slo": {"latency_p98_ms": 5}}}),
            "load.find_max_rate.slo: unknown metric 'latency_p98_ms'; valid metric IDs: ",
        ),
        (
            spec_with(measurement={"stability_tolerance": 1.5}),
            "measurement.stability_tolerance: must be <= 1 (got 1.5)",
        ),
        (
            spec_with(measurement={"stable_windows": 4, "max_windows": 3}),
            "measurement.max_windows: must be >= stable_windows (4) (got 3)",
        ),
        (spec_with(repeats=0), "repeats: must be > 0 (got 0)"),
        ({"load": {"concurrency": [4]}}, "model: required"),
        (
            spec_with(model={"builtin": "mlp", "base_path": "/m"}),
            "model: give exactly one of builtin (a built-in model) or base_path",
        ),
        (spec_with(model={"builtin": "resnet"}), "model.builtin: unknown built-in model 'resnet'"),
        (
            spec_with(model={"builtin": "mlp", "options": {"hiden": 3}}),
            "model.options: unknown option(s) hiden for model 'mlp'; valid options: features",
        ),
        (spec_with(target={"binary": "/bin/tfs"}), "target.binary: only for kind tfserving"),
        (
            spec_with(target={"kind": "external"}),
            "target.endpoints: kind external needs at least one endpoint",
        ),
        (
            spec_with(target={"kind": "external", "endpoints": [{"grpc": "h:1"}]}, protocol="both"),
            "target.endpoints[0].rest: required: protocol is both",
        ),
        (
            spec_with(
                target={"kind": "external", "endpoints": [{"grpc": "h:1"}]},
                server={"replicas": [2]},
            ),
            "server: kind external takes load axes only",
        ),
        (
            spec_with(matrix={"exclude": [{"max_batch_size": 64}]}),
            "matrix.exclude[0].max_batch_size: 64 is not a value of max_batch_size",
        ),
        (
            spec_with(matrix={"exclude": [{"rate": 10.0}]}),
            "matrix.exclude[0].rate: 10.0 is not a value of rate in load",
        ),
        (
            spec_with(
                recommend={
                    "objective": {"maximize": "throughput_rps", "minimize": "latency_p99_ms"}
                }
            ),
            "recommend.objective: give exactly one of maximize, minimize or weights",
        ),
        (spec_with(name="my run"), "name: must match"),
    ],
)
def test_each_problem_is_named_by_its_path(raw, expected):
    assert expected in problems_of(raw)


def test_unknown_keys_are_listed_with_the_valid_keys_at_their_level():
    message = problems_of(spec_with(server={"batching": {"max_batch_sise": [8]}}, bogus=1))
    assert (
        "server.batching.max_batch_sise: unknown key (did you mean 'max_batch_size'?); valid keys: "
        "max_batch_size, batch_timeout_micros, num_batch_threads, max_enqueued_batches, "
        "allowed_batch_sizes"
    ) in message
    assert "bogus: unknown key; valid keys: name, description, target, model," in message


def test_unknown_key_inside_a_list_item_names_the_item():
    raw = spec_with(target={"kind": "external", "endpoints": [{"grcp": "h:1"}]})
    assert (
        "target.endpoints[0].grcp: unknown key (did you mean 'grpc'?); valid keys: grpc, rest"
        in problems_of(raw)
    )


def test_every_problem_is_reported_at_once():
    raw = spec_with(
        server={"replicas": [0], "batching": {"max_batch_size": [-1]}}, protocol="udp", repeats=-2
    )
    message = problems_of(raw)
    assert message.startswith("s.yaml: 4 problem(s) in the spec:")
    for path in ("server.replicas[0]", "server.batching.max_batch_size[0]", "protocol", "repeats"):
        assert f"  {path}: " in message


def test_invalid_yaml_names_the_line():
    with pytest.raises(UserError, match=r"s.yaml: not valid YAML: .*\(line 3"):
        parse_spec(
            textwrap.dedent("""\
            model: {builtin: mlp}
            load:
              concurrency: 4: 5
            """),
            "s.yaml",
        )


def test_a_spec_must_be_a_mapping():
    with pytest.raises(UserError, match="a spec is a mapping"):
        parse_spec("- 1\n- 2\n")


def test_missing_spec_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot read spec"):
        load_spec(tmp_path / "missing.yaml")


def test_format_path():
    assert format_path(("server", "batching", "max_batch_size", 2)) == (
        "server.batching.max_batch_size[2]"
    )
    assert format_path(("matrix", "exclude", 0, "rate")) == "matrix.exclude[0].rate"
    assert format_path(()) == "(top level)"
