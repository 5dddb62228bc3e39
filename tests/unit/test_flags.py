"""tensorflow_model_server's command line: flag set, defaults, syntax, errors and combinations."""

from __future__ import annotations

import dataclasses

import pytest

from reference_server.flags import (
    ACCEPTED_WITHOUT_EFFECT,
    FLAG_SPECS,
    SPECS_BY_NAME,
    FlagError,
    ServerFlags,
    combination_warnings,
    ignored_flags,
    parse_flags,
    schedulable_cpus,
    usage,
)

MODEL = "--model_base_path=/models/m"

# Flags the reference server must act on (so they must not be listed as without effect).
EFFECTIVE = {
    "port",
    "grpc_socket_path",
    "rest_api_port",
    "rest_api_timeout_in_ms",
    "model_name",
    "model_base_path",
    "model_config_file",
    "model_config_file_poll_wait_seconds",
    "enable_batching",
    "batching_parameters_file",
    "file_system_poll_wait_seconds",
    "monitoring_config_file",
    "ssl_config_file",
    "tensorflow_intra_op_parallelism",
    "tensorflow_inter_op_parallelism",
    "tensorflow_session_parallelism",
    "grpc_channel_arguments",
    "grpc_max_threads",
    "enable_model_warmup",
    "allow_version_labels_for_unavailable_models",
    "max_num_load_retries",
    "load_retry_interval_micros",
    "rest_api_num_threads",
    "per_process_gpu_memory_fraction",
    "shutdown_grace_seconds",
    "version",
}


def parse(*args: str) -> ServerFlags:
    return parse_flags([MODEL, *args])


def test_defaults_are_tf_servings():
    flags = parse()
    cpus = schedulable_cpus()
    expected = {
        "port": 8500,
        "rest_api_port": 0,
        "rest_api_num_threads": 4 * cpus,
        "rest_api_timeout_in_ms": 30000,
        "model_name": "default",
        "model_config_file": "",
        "model_config_file_poll_wait_seconds": 0,
        "enable_batching": False,
        "batching_parameters_file": "",
        "max_num_load_retries": 5,
        "load_retry_interval_micros": 60_000_000,
        "file_system_poll_wait_seconds": 1,
        "flush_filesystem_caches": True,
        "tensorflow_session_parallelism": 0,
        "tensorflow_intra_op_parallelism": 0,
        "tensorflow_inter_op_parallelism": 0,
        "per_process_gpu_memory_fraction": 0.0,
        "saved_model_tags": "serve",
        "grpc_channel_arguments": "",
        "grpc_max_threads": 4 * cpus,
        "enable_model_warmup": True,
        "num_request_iterations_for_warmup": 0,
        "version": False,
        "remove_unused_fields_from_bundle_metagraph": True,
        "num_tflite_pools": cpus,
        "num_tflite_interpreters_per_pool": 1,
        "enable_profiler": True,
        "help": False,
    }
    assert {name: getattr(flags, name) for name in expected} == expected
    assert flags == ServerFlags(model_base_path="/models/m")


def test_every_flag_is_a_field_and_every_field_a_flag():
    fields = {f.name for f in dataclasses.fields(ServerFlags)}
    assert fields - {"help"} == set(SPECS_BY_NAME)
    assert len(FLAG_SPECS) == len(SPECS_BY_NAME)  # no name declared twice


def _other_value(kind: str, default: object) -> tuple[str, object]:
    """A command-line text and the value it must parse to, different from the default."""
    if kind == "bool":
        return ("false", False) if default else ("true", True)
    if kind == "string":
        return "x=y,z", "x=y,z"
    if kind == "float":
        return "0.25", 0.25
    return "-7", -7


@pytest.mark.parametrize("spec", FLAG_SPECS, ids=lambda spec: spec.name)
def test_every_flag_can_be_set(spec):
    default = getattr(ServerFlags(), spec.name)
    text, value = _other_value(spec.kind, default)
    base = ["--model_config_file=/c.txt", "--enable_batching"]  # so no combination is refused
    flags = parse_flags([*base, f"--{spec.name}={text}"])
    assert getattr(flags, spec.name) == value


def test_value_syntax():
    flags = parse(
        "--port=9000",
        "--model_name=half",
        "--rest_api_port= 8501 ",  # SimpleAtoi allows surrounding blanks
        "--load_retry_interval_micros=+5000000000",  # int64 range
        "--per_process_gpu_memory_fraction=5e-1",
        "--grpc_channel_arguments=grpc.max_connection_age_ms=2000",
    )
    assert (flags.port, flags.model_name, flags.rest_api_port) == (9000, "half", 8501)
    assert flags.load_retry_interval_micros == 5_000_000_000
    assert flags.per_process_gpu_memory_fraction == 0.5
    assert flags.grpc_channel_arguments == "grpc.max_connection_age_ms=2000"


def test_last_occurrence_wins_and_empty_string_is_a_value():
    flags = parse("--port=1", "--port=2", "--model_name=")
    assert flags.port == 2
    assert flags.model_name == ""


@pytest.mark.parametrize(
    ("arg", "value"),
    [
        ("--enable_batching", True),
        ("--enable_batching=true", True),
        ("--enable_batching=TRUE", True),
        ("--enable_batching=1", True),
        ("--enable_batching=false", False),
        ("--enable_batching=False", False),
        ("--enable_batching=0", False),
    ],
)
def test_bool_forms(arg, value):
    assert parse("--enable_batching=false", arg).enable_batching is value


def test_bare_bool_flag_turns_off_nothing_else():
    flags = parse("--enable_model_warmup=false", "--enable_batching")
    assert flags.enable_model_warmup is False
    assert flags.enable_batching is True


@pytest.mark.parametrize(
    ("arg", "flag"),
    [
        ("--port=abc", "port"),
        ("--port=", "port"),
        ("--port=0x10", "port"),
        ("--port=1.5", "port"),
        ("--port=2147483648", "port"),  # past int32
        ("--load_retry_interval_micros=9223372036854775808", "load_retry_interval_micros"),
        ("--enable_batching=yes", "enable_batching"),
        ("--per_process_gpu_memory_fraction=half", "per_process_gpu_memory_fraction"),
    ],
)
def test_malformed_value_names_flag_and_expectation(arg, flag):
    value = arg.partition("=")[2]
    with pytest.raises(FlagError) as info:
        parse(arg)
    assert str(info.value).startswith(f"Couldn't interpret value {value} for flag {flag}.")
    assert "Expected" in str(info.value)
    assert info.value.flag == flag


def test_malformed_value_is_a_value_error():
    with pytest.raises(ValueError, match="flag port"):
        parse("--port=abc")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus=1"], "unknown argument: --bogus=1"),
        (["--prot=9000"], "did you mean --port?"),
        (["models/m"], "unknown argument: models/m"),
        (["-port=9000"], "unknown argument: -port=9000"),
        (["--enable_batchingX"], "unknown argument: --enable_batchingX"),
        (["--", "--port=1"], "unknown argument: --"),
    ],
)
def test_unknown_and_positional_arguments(args, message):
    with pytest.raises(FlagError, match="unknown argument") as info:
        parse(*args)
    assert message in str(info.value)


def test_separated_value_is_refused_with_a_hint():
    with pytest.raises(FlagError) as info:
        parse("--port", "9000")
    assert str(info.value).startswith("unknown argument: --port ")
    assert "--port=VALUE" in str(info.value)


def test_help_wins_over_unknown_arguments_and_missing_model():
    flags = parse_flags(["--help", "stray", "--port=9"])
    assert flags.help is True
    assert flags.port == 9


def test_malformed_value_wins_over_help():
    with pytest.raises(FlagError, match="flag port"):
        parse_flags(["--help", "--port=x"])


def test_version_needs_no_model_and_ignores_stray_arguments():
    flags = parse_flags(["--version", "stray"])
    assert flags.version is True


def test_no_model_is_refused_with_tf_wording():
    with pytest.raises(FlagError) as info:
        parse_flags(["--port=9000"])
    assert str(info.value) == (
        "Both server_options.model_base_path and server_options.model_config_file are empty!"
    )


def test_model_config_file_with_base_path_is_accepted():
    # TF Serving does not refuse this: --model_config_file wins and the others are ignored.
    flags = parse_flags(["--model_config_file=/c.txt", MODEL])
    assert flags.model_config_file == "/c.txt"


def test_batching_file_without_batching_is_refused():
    with pytest.raises(FlagError, match=r"without setting server_options\.enable_batching"):
        parse("--batching_parameters_file=/b.txt")
    assert parse("--batching_parameters_file=/b.txt", "--enable_batching").enable_batching


def test_all_three_parallelism_flags_are_refused():
    three = (
        "--tensorflow_session_parallelism=2",
        "--tensorflow_intra_op_parallelism=2",
        "--tensorflow_inter_op_parallelism=2",
    )
    with pytest.raises(FlagError, match=r"You cannot configure all\.$"):
        parse(*three)
    assert parse(*three[1:]).tensorflow_intra_op_parallelism == 2


def test_platform_config_file_skips_session_checks():
    # Inside TF Serving these checks only run for the built-in TensorFlow platform.
    flags = parse("--platform_config_file=/p.txt", "--batching_parameters_file=/b.txt")
    assert flags.platform_config_file == "/p.txt"


def test_port_zero_is_accepted_for_an_ephemeral_port():
    assert parse("--port=0").port == 0


def test_rest_port_equal_to_grpc_port_warns():
    (warning,) = combination_warnings(parse("--port=9000", "--rest_api_port=9000"))
    assert "Skipped exporting HTTP/REST API" in warning
    assert combination_warnings(parse("--port=9000", "--rest_api_port=9001")) == ()


def test_accepted_without_effect_lists_only_real_flags_that_we_do_not_act_on():
    assert ACCEPTED_WITHOUT_EFFECT.issubset(SPECS_BY_NAME)
    assert not ACCEPTED_WITHOUT_EFFECT & EFFECTIVE


def test_ignored_flags_names_those_set_away_from_default():
    flags = parse("--enable_profiler=false", "--use_alts_credentials", "--port=1")
    assert ignored_flags(flags) == ("use_alts_credentials", "enable_profiler")
    assert ignored_flags(parse()) == ()


def test_usage_lists_every_flag_with_type_and_default():
    text = usage("reference-server")
    lines = text.splitlines()
    assert lines[:2] == ["usage: reference-server", "Flags:"]
    assert len(lines) == 2 + len(FLAG_SPECS)
    assert "\t--port=8500                      \tint32\t" in text
    assert '\t--model_name="default"' in text
    assert "\t--enable_model_warmup=true" in text
    assert "\t--per_process_gpu_memory_fraction=0.000000\tfloat\t" in text


@pytest.mark.parametrize("text", ["-1", "nan", "inf"])
def test_shutdown_grace_must_be_a_finite_number_of_seconds(text):
    assert parse("--shutdown_grace_seconds=2.5").shutdown_grace_seconds == 2.5
    with pytest.raises(FlagError) as info:
        parse(f"--shutdown_grace_seconds={text}")
    assert info.value.flag == "shutdown_grace_seconds"
    assert "expected 0 or more seconds" in str(info.value)
