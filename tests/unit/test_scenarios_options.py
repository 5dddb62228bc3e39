"""scenarios.options: Locust custom arguments, typed and checked."""

from __future__ import annotations

import argparse

import pytest

from scenarios.arrivals import Stage
from scenarios.options import (
    OptionError,
    Target,
    add_arguments,
    arm_options,
    grpc_target,
    read_options,
    rest_target,
)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser, locust=False)
    return parser.parse_args(argv)


def test_defaults_are_a_closed_loop_on_the_default_model() -> None:
    options = read_options(parse(), "grpc://127.0.0.1:8500")
    assert options.targets == ("grpc://127.0.0.1:8500",)
    assert (options.model_name, options.signature) == ("default", "serving_default")
    assert (options.model_version, options.version_label) == (None, None)
    assert not options.open_loop and options.stages == ()
    assert (options.payload.rows, options.payload.file) == (1, None)
    assert options.grpc_channels == 1


def test_values_from_the_web_ui_arrive_as_strings() -> None:
    namespace = parse()
    namespace.rate, namespace.rows, namespace.model_version = "250", "4", "3"
    namespace.arrival, namespace.late_tolerance_ms = "poisson", "5"
    options = read_options(namespace, "h:1")
    assert (options.rate_rps, options.payload.rows, options.model_version) == (250.0, 4, 3)
    assert options.late_tolerance_s == 0.005


def test_targets_override_the_host() -> None:
    options = read_options(parse("--targets", "grpc://a:1, grpc://b:2/"), "grpc://h:9")
    assert options.targets == ("grpc://a:1", "grpc://b:2")


def test_open_loop_stages() -> None:
    options = read_options(parse("--arrival", "constant", "--stages", "5s:2:10,5s:4:10-20"), None)
    assert options.stages == (Stage(5.0, 2, 10.0), Stage(5.0, 4, 10.0, 20.0))
    assert options.targets == ()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--model-version", "1", "--version-label", "x"), "not both"),
        (("--model-version", "v1"), "--model-version must be an integer"),
        (("--arrival", "poisson"), "needs --rate > 0"),
        (("--arrival", "sometimes"), "--arrival must be one of closed, constant, poisson"),
        (("--stages", "5s:2:100"), "use --arrival constant or poisson"),
        (("--arrival", "constant", "--stages", "5s:2"), "need a rate in each stage"),
        (("--stages", "5s"), "--stages: stage '5s'"),
        (("--rows", "0"), "--rows: 0 must be >= 1"),
        (("--rows", "1:0.5,x:1"), "--rows: .x. is not a whole number"),
        (("--arrival", "gamma", "--rate", "5", "--arrival-cv", "0"), "cv > 0"),
        (("--trace", "/nonexistent.jsonl"), "--trace: cannot read trace"),
        (("--rows", "64", "--max-batch-size", "32"), "over --max-batch-size 32"),
        (("--rest-format", "csv"), "--rest-format must be one of row, columnar"),
        (("--request-timeout", "soon"), "--request-timeout must be float"),
        (("--version-split", "stable:0.9"), "--version-split: use ARM=WEIGHT"),
        (("--version-split", "a=1,a=2"), "--version-split: values must differ"),
        (("--version-split", "a=x"), "--version-split: weight 'x' is not a number"),
        (("--version-split", "1=1", "--model-version", "2"), "leave out --model-version"),
    ],
)
def test_bad_options_are_named(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(OptionError, match=message):
        read_options(parse(*argv), "h:1")


def test_target_forms() -> None:
    assert grpc_target("grpc://h:8500", None) == Target("h:8500", False)
    assert grpc_target("h:8500", None) == Target("h:8500", False)
    assert grpc_target("grpcs://h:8500", None) == Target("h:8500", True)
    assert grpc_target("grpc://h:8500", "ca.pem").tls
    assert rest_target("http://h:8501/") == Target("http://h:8501", False)
    assert rest_target("h:8501") == Target("http://h:8501", False)
    assert rest_target("https://h/prefix") == Target("https://h/prefix", True)
    with pytest.raises(OptionError, match="use grpc://HOST:PORT"):
        grpc_target("http://h:8501", None)
    with pytest.raises(OptionError, match="use http://HOST:PORT"):
        rest_target("grpc://h:8500")


def test_a_trace_takes_stages_without_rates_as_its_windows(tmp_path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"t": 0}\n{"t": 1}\n')
    options = read_options(
        parse("--trace", str(trace), "--stages", "1s:4,2s:4", "--warmup-stages", "1"), "h:1"
    )
    assert options.arrival == "trace" and options.stages == (Stage(1.0, 4), Stage(2.0, 4))
    assert options.warmup_stages == 1
    with pytest.raises(OptionError, match="--stages with a trace only split the replay"):
        read_options(parse("--trace", str(trace), "--stages", "1s:4:100"), "h:1")
    with pytest.raises(OptionError, match="leave out --arrival"):
        read_options(parse("--trace", str(trace), "--arrival", "poisson", "--rate", "5"), "h:1")


def test_a_version_split_names_labels_or_versions() -> None:
    options = read_options(parse("--version-split", "stable=9,canary=1"), "h:1")
    assert options.version_split is not None
    assert options.version_split.values == ("stable", "canary")
    assert options.version_split.weights == pytest.approx((0.9, 0.1))
    by_label = arm_options(options, "canary")
    assert (by_label.model_version, by_label.version_label) == (None, "canary")
    by_number = arm_options(options, "2")
    assert (by_number.model_version, by_number.version_label) == (2, None)
    assert arm_options(options, "") is options
