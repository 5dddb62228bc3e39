"""tensorflow_model_server's command line: every flag its main.cc defines, parsed the same way.

Syntax follows TensorFlow's flag parser (``tsl/util/command_line_flags.cc``): ``--name=value``
only (no ``--name value``); bool flags also as bare ``--name`` or ``--name=true|false|1|0``
(case-insensitive); integers are decimal, with optional sign and surrounding ASCII blanks; a
flag given twice keeps its last value; everything from a bare ``--`` on is an unknown argument.
The checks tensorflow_model_server makes while starting (``Server::BuildAndStart``) are run here
too, with its wording, so a bad command line fails before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

FlagKind = Literal["int32", "int64", "bool", "string", "float"]


class FlagError(ValueError):
    """The command line cannot be used; the message says which flag and why."""

    def __init__(self, message: str, flag: str | None = None) -> None:
        super().__init__(message)
        self.flag = flag


def schedulable_cpus() -> int:
    """CPUs this process may run on (TensorFlow's ``port::NumSchedulableCPUs``)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _threads_per_cpu(n: int) -> int:
    return n * schedulable_cpus()


@dataclass(frozen=True)
class ServerFlags:
    """The parsed command line: one field per tensorflow_model_server flag, in main.cc's order.

    Defaults are TF Serving's (``Server::Options`` in server.h/server.cc); the CPU-dependent ones
    are computed when the instance is made. ``help`` is not a flag of TF Serving: it records that
    ``--help`` was given (TF's parser treats that argument specially).
    """

    port: int = 8500
    grpc_socket_path: str = ""
    rest_api_port: int = 0
    rest_api_num_threads: int = field(default_factory=lambda: _threads_per_cpu(4))
    rest_api_timeout_in_ms: int = 30000
    rest_api_enable_cors_support: bool = False
    enable_batching: bool = False
    allow_version_labels_for_unavailable_models: bool = False
    batching_parameters_file: str = ""
    enable_per_model_batching_parameters: bool = False
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    model_name: str = "default"
    model_base_path: str = ""
    num_load_threads: int = 0
    num_unload_threads: int = 0
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60 * 1000 * 1000
    file_system_poll_wait_seconds: int = 1
    flush_filesystem_caches: bool = True
    tensorflow_session_parallelism: int = 0
    tensorflow_session_config_file: str = ""
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    use_alts_credentials: bool = False
    ssl_config_file: str = ""
    platform_config_file: str = ""
    per_process_gpu_memory_fraction: float = 0.0
    saved_model_tags: str = "serve"
    grpc_channel_arguments: str = ""
    grpc_max_threads: int = field(default_factory=lambda: _threads_per_cpu(4))
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 0
    version: bool = False
    monitoring_config_file: str = ""
    remove_unused_fields_from_bundle_metagraph: bool = True
    prefer_tflite_model: bool = False
    num_tflite_pools: int = field(default_factory=schedulable_cpus)
    num_tflite_interpreters_per_pool: int = 1
    enable_signature_method_name_check: bool = False
    xla_cpu_compilation_enabled: bool = False
    xla_gpu_compilation_enabled: bool = False
    enable_profiler: bool = True
    thread_pool_factory_config_file: str = ""
    mixed_precision: str = ""
    skip_initialize_tpu: bool = False
    enable_grpc_healthcheck_service: bool = False
    enable_serialization_as_tensor_content: bool = False
    # Our extensions (not tensorflow_model_server flags): security and request limits.
    auth_token_file: str = ""
    max_request_bytes: int = 0
    max_request_rows: int = 0
    access_log_file: str = ""
    shutdown_grace_seconds: float = 5.0  # ours too: SIGTERM's grace period
    help: bool = False


@dataclass(frozen=True)
class FlagSpec:
    """One flag as TF Serving declares it: name, C++ type and usage text."""

    name: str
    kind: FlagKind
    usage: str


# main.cc's flag list, in its order (which is also the order of `--help`).
FLAG_SPECS: tuple[FlagSpec, ...] = (
    FlagSpec("port", "int32", "TCP port for the gRPC API."),
    FlagSpec("grpc_socket_path", "string", "If non-empty, also serve gRPC on this UNIX socket."),
    FlagSpec("rest_api_port", "int32", "TCP port for the HTTP/REST API; 0 disables REST."),
    FlagSpec("rest_api_num_threads", "int32", "Threads for HTTP/REST request processing."),
    FlagSpec("rest_api_timeout_in_ms", "int32", "Timeout of an HTTP/REST call, in ms."),
    FlagSpec("rest_api_enable_cors_support", "bool", "Add CORS headers to REST responses."),
    FlagSpec("enable_batching", "bool", "Batch requests across clients."),
    FlagSpec(
        "allow_version_labels_for_unavailable_models",
        "bool",
        "Allow a version label to point at a version that is not loaded yet.",
    ),
    FlagSpec(
        "batching_parameters_file",
        "string",
        "Text BatchingParameters proto to use instead of the defaults.",
    ),
    FlagSpec(
        "enable_per_model_batching_parameters",
        "bool",
        "Read batching_params.pbtxt from each SavedModel directory (a version without one "
        "does not batch).",
    ),
    FlagSpec(
        "model_config_file",
        "string",
        "Text ModelServerConfig proto listing the models to serve "
        "(--model_name and --model_base_path are then ignored).",
    ),
    FlagSpec(
        "model_config_file_poll_wait_seconds",
        "int32",
        "Seconds between re-reads of --model_config_file; 0 reads it once.",
    ),
    FlagSpec("model_name", "string", "Name of the single model (without --model_config_file)."),
    FlagSpec(
        "model_base_path",
        "string",
        "Directory holding the single model's numbered versions (without --model_config_file).",
    ),
    FlagSpec("num_load_threads", "int32", "Threads that load servables; 0 loads serially."),
    FlagSpec("num_unload_threads", "int32", "Threads that unload servables; 0 unloads serially."),
    FlagSpec("max_num_load_retries", "int32", "Retries of a failed model load."),
    FlagSpec("load_retry_interval_micros", "int64", "Microseconds between load retries."),
    FlagSpec(
        "file_system_poll_wait_seconds",
        "int32",
        "Seconds between scans for new model versions; 0 scans once.",
    ),
    FlagSpec("flush_filesystem_caches", "bool", "Flush file system caches after servables load."),
    FlagSpec(
        "tensorflow_session_parallelism",
        "int64",
        "Threads for a TensorFlow session (both pools); 0 lets TensorFlow choose.",
    ),
    FlagSpec(
        "tensorflow_session_config_file", "string", "Text TensorFlow ConfigProto for sessions."
    ),
    FlagSpec(
        "tensorflow_intra_op_parallelism",
        "int64",
        "Threads inside one op; 0 lets TensorFlow choose.",
    ),
    FlagSpec(
        "tensorflow_inter_op_parallelism",
        "int64",
        "Ops run at the same time; 0 lets TensorFlow choose.",
    ),
    FlagSpec("use_alts_credentials", "bool", "Use Google ALTS credentials for gRPC."),
    FlagSpec("ssl_config_file", "string", "Text SSLConfig proto: serve gRPC over TLS."),
    FlagSpec(
        "platform_config_file",
        "string",
        "Text PlatformConfigMap proto to use instead of the TensorFlow platform.",
    ),
    FlagSpec(
        "per_process_gpu_memory_fraction",
        "float",
        "Fraction of GPU memory to claim; 0 lets TensorFlow choose.",
    ),
    FlagSpec("saved_model_tags", "string", "Comma-separated tags of the MetaGraph to load."),
    FlagSpec(
        "grpc_channel_arguments",
        "string",
        "Comma-separated key=value gRPC server arguments, e.g. grpc.max_connection_age_ms=2000.",
    ),
    FlagSpec("grpc_max_threads", "int32", "Most threads serving gRPC requests."),
    FlagSpec("enable_model_warmup", "bool", "Replay assets.extra/tf_serving_warmup_requests."),
    FlagSpec(
        "num_request_iterations_for_warmup",
        "int32",
        "Times each warm-up request is replayed (used when > 0).",
    ),
    FlagSpec("version", "bool", "Print the version and exit."),
    FlagSpec("monitoring_config_file", "string", "Text MonitoringConfig proto (Prometheus)."),
    FlagSpec(
        "remove_unused_fields_from_bundle_metagraph",
        "bool",
        "Drop unused MetaGraphDef fields to save memory.",
    ),
    FlagSpec("prefer_tflite_model", "bool", "EXPERIMENTAL: serve model.tflite when present."),
    FlagSpec("num_tflite_pools", "int32", "EXPERIMENTAL: TFLite interpreter pools."),
    FlagSpec(
        "num_tflite_interpreters_per_pool", "int32", "EXPERIMENTAL: TFLite interpreters per pool."
    ),
    FlagSpec(
        "enable_signature_method_name_check",
        "bool",
        "Check SignatureDef method names (off for native TF2 classify/regress models).",
    ),
    FlagSpec("xla_cpu_compilation_enabled", "bool", "EXPERIMENTAL: enable XLA:CPU JIT."),
    FlagSpec(
        "xla_gpu_compilation_enabled", "bool", "EXPERIMENTAL: enable XLA:CPU and XLA:GPU JIT."
    ),
    FlagSpec("enable_profiler", "bool", "Serve the TensorFlow profiler service."),
    FlagSpec(
        "thread_pool_factory_config_file", "string", "Text ThreadPoolConfig proto for sessions."
    ),
    FlagSpec("mixed_precision", "string", "Mixed-precision mode, e.g. bfloat16."),
    FlagSpec("skip_initialize_tpu", "bool", "Do not initialise the TPU system."),
    FlagSpec("enable_grpc_healthcheck_service", "bool", "Serve grpc.health.v1.Health."),
    FlagSpec(
        "enable_serialization_as_tensor_content",
        "bool",
        "Serialise Predict response tensors into tensor_content.",
    ),
    # Our extensions, after TF Serving's own flags.
    FlagSpec(
        "auth_token_file",
        "string",
        "File holding a bearer token; gRPC and REST calls must then send "
        "'authorization: Bearer TOKEN' (the Prometheus path stays open).",
    ),
    FlagSpec(
        "max_request_bytes",
        "int64",
        "Largest request message/body in bytes; 0 or less = no limit.",
    ),
    FlagSpec(
        "max_request_rows", "int64", "Most rows (batch entries) per request; 0 or less = no limit."
    ),
    FlagSpec(
        "access_log_file",
        "string",
        "Append one JSON line per request to this file ('-' = stderr); empty = off.",
    ),
    FlagSpec(
        "shutdown_grace_seconds",
        "float",
        "On SIGTERM/SIGINT: stop accepting, give in-flight requests this long, then exit 0.",
    ),
)

SPECS_BY_NAME: Mapping[str, FlagSpec] = {spec.name: spec for spec in FLAG_SPECS}

# Flags the reference server accepts (so any tensorflow_model_server command line runs) but does
# not act on: they concern TPUs, TFLite, XLA, GPUs, the profiler, load/unload thread pools,
# platform plug-ins, ALTS, or wire details a Python server does not reproduce.
ACCEPTED_WITHOUT_EFFECT: frozenset[str] = frozenset(
    {
        "rest_api_enable_cors_support",
        "num_load_threads",
        "num_unload_threads",
        "flush_filesystem_caches",
        "tensorflow_session_config_file",
        "use_alts_credentials",
        "platform_config_file",
        "saved_model_tags",
        "remove_unused_fields_from_bundle_metagraph",
        "prefer_tflite_model",
        "num_tflite_pools",
        "num_tflite_interpreters_per_pool",
        "enable_signature_method_name_check",
        "xla_cpu_compilation_enabled",
        "xla_gpu_compilation_enabled",
        "enable_profiler",
        "thread_pool_factory_config_file",
        "mixed_precision",
        "skip_initialize_tpu",
        "enable_grpc_healthcheck_service",
        "enable_serialization_as_tensor_content",
    }
)

_INT_BITS = {"int32": 32, "int64": 64}
_ASCII_BLANKS = " \t\n\v\f\r"
_DECIMAL_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf(?:inity)?|nan(?:\(\w*\))?)",
    re.IGNORECASE,
)
_EXPECTED = {
    "int32": "a decimal int32",
    "int64": "a decimal int64",
    "bool": "true, false, 1 or 0",
    "float": "a decimal number",
}


def _parse_int(text: str, kind: FlagKind) -> int | None:
    """absl::SimpleAtoi: decimal, optional sign, ASCII blanks around, in range; else None."""
    text = text.strip(_ASCII_BLANKS)
    if not _DECIMAL_INT.fullmatch(text):
        return None
    value = int(text)
    limit = 1 << (_INT_BITS[kind] - 1)
    return value if -limit <= value < limit else None


def _parse_bool(text: str) -> bool | None:
    lowered = text.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    return None


def _parse_float(text: str) -> float | None:
    """absl::SimpleAtof: decimal or inf/nan, optional sign, ASCII blanks around; else None."""
    text = text.strip(_ASCII_BLANKS)
    if not _FLOAT.fullmatch(text):
        return None
    if "nan" in text.lower():
        return math.nan
    return float(text)


def _parse_value(spec: FlagSpec, text: str) -> int | float | bool | str:
    """The typed value of ``--name=text``; FlagError with TF's wording when it is malformed."""
    if spec.kind == "string":
        return text
    if spec.kind == "bool":
        value: int | float | bool | None = _parse_bool(text)
    elif spec.kind == "float":
        value = _parse_float(text)
    else:
        value = _parse_int(text, spec.kind)
    if value is None:
        raise FlagError(
            f"Couldn't interpret value {text} for flag {spec.name}. "
            f"Expected {_EXPECTED[spec.kind]}, as in --{spec.name}=VALUE.",
            flag=spec.name,
        )
    return value


def _match(arg: str) -> tuple[FlagSpec, str] | None:
    """The flag an argument sets and its value text, or None when no flag claims it."""
    if not arg.startswith("--"):
        return None
    name, equals, text = arg[2:].partition("=")
    spec = SPECS_BY_NAME.get(name)
    if spec is None:
        return None
    if equals:
        return spec, text
    # A bare name sets a bool flag; any other flag needs `=value` (TF has no `--name value`).
    return (spec, "true") if spec.kind == "bool" else None


def _unknown_argument(arg: str) -> FlagError:
    """TF Serving's "unknown argument" message, with a hint at what was probably meant."""
    message = f"unknown argument: {arg}"
    name = arg[2:].partition("=")[0] if arg.startswith("--") else ""
    if name in SPECS_BY_NAME:
        message += f" (write --{name}=VALUE: flags take their value after '=')"
    elif name:
        close = difflib.get_close_matches(name, SPECS_BY_NAME, n=1)
        if close:
            message += f" (did you mean --{close[0]}?)"
    return FlagError(message, flag=name or None)


def _scan(argv: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """Split argv into flag values (last one wins) and the arguments no flag claimed."""
    values: dict[str, Any] = {}  # each value has its flag's type (_parse_value)
    unknown: list[str] = []
    for index, arg in enumerate(argv):
        if arg == "--":
            unknown.extend(argv[index:])
            break
        matched = _match(arg)
        if matched is None:
            unknown.append(arg)
        else:
            spec, text = matched
            values[spec.name] = _parse_value(spec, text)
    return values, unknown


def parse_flags(argv: Sequence[str]) -> ServerFlags:
    """Parse tensorflow_model_server's arguments (without the program name).

    Order of checks follows TF Serving: a malformed value fails first; ``--help`` (among the
    unclaimed arguments) returns flags with ``help=True``; ``--version`` returns at once; then an
    unknown or positional argument fails; then the start-up combination checks run.
    Raises FlagError.
    """
    values, unknown = _scan(argv)
    if "--help" in unknown:
        return ServerFlags(help=True, **values)
    flags = ServerFlags(**values)
    if flags.version:
        return flags
    if unknown:
        raise _unknown_argument(unknown[0])
    check_combinations(flags)
    return flags


def check_combinations(flags: ServerFlags) -> None:
    """Reject what ``Server::BuildAndStart`` rejects, with its wording. Raises FlagError.

    TF Serving also refuses ``--port=0`` without ``--grpc_socket_path``; that check is left out
    on purpose: the reference server binds an ephemeral port for ``--port=0``.
    """
    if not flags.model_base_path and not flags.model_config_file:
        raise FlagError(
            "Both server_options.model_base_path and server_options.model_config_file are empty!",
            flag="model_base_path",
        )
    grace = flags.shutdown_grace_seconds
    if not math.isfinite(grace) or grace < 0:
        raise FlagError(
            f"--shutdown_grace_seconds={grace}: expected 0 or more seconds, e.g. 5",
            flag="shutdown_grace_seconds",
        )
    fraction = flags.per_process_gpu_memory_fraction
    if not math.isfinite(fraction) or fraction < 0:  # TF would fail later, at the first session
        raise FlagError(
            f"--per_process_gpu_memory_fraction={fraction}: expected 0 (grow as needed) "
            "or a fraction of the GPU's memory above 0, e.g. 0.5",
            flag="per_process_gpu_memory_fraction",
        )
    if flags.platform_config_file:
        return  # TF Serving skips the session checks below when a platform config is given
    if flags.batching_parameters_file and not flags.enable_batching:
        raise FlagError(
            "server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true.",
            flag="batching_parameters_file",
        )
    parallelism = (
        flags.tensorflow_intra_op_parallelism,
        flags.tensorflow_inter_op_parallelism,
        flags.tensorflow_session_parallelism,
    )
    if all(p > 0 for p in parallelism):
        raise FlagError(
            "Either configure server_options.tensorflow_session_parallelism or "
            "(server_options.tensorflow_intra_op_parallelism, "
            "server_options.tensorflow_inter_op_parallelism) separately. "
            "You cannot configure all.",
            flag="tensorflow_session_parallelism",
        )


def combination_warnings(flags: ServerFlags) -> tuple[str, ...]:
    """Messages TF Serving logs (without failing) for questionable combinations.

    TF Serving skips the REST API when ``--rest_api_port`` equals ``--port``.
    """
    if flags.rest_api_port != 0 and flags.rest_api_port == flags.port:
        return (
            "server_options.http_port cannot be same as grpc_port. Please use a different port "
            "for HTTP/REST API. Skipped exporting HTTP/REST API.",
        )
    return ()


def ignored_flags(flags: ServerFlags) -> tuple[str, ...]:
    """Names of flags in ACCEPTED_WITHOUT_EFFECT set to something other than their default."""
    defaults = ServerFlags()
    return tuple(
        spec.name
        for spec in FLAG_SPECS
        if spec.name in ACCEPTED_WITHOUT_EFFECT
        and getattr(flags, spec.name) != getattr(defaults, spec.name)
    )


def _shown_default(spec: FlagSpec, value: object) -> str:
    """A default as TF's usage text prints it (printf %d, %f, true/false, quoted string)."""
    if spec.kind == "string":
        return f'"{value}"'
    if spec.kind == "bool":
        return "true" if value else "false"
    if spec.kind == "float":
        return f"{value:f}"
    return str(value)


def usage(program: str = "tensorflow_model_server") -> str:
    """The ``--help`` text, laid out as TensorFlow's ``Flags::Usage`` lays it out."""
    defaults = dataclasses.asdict(ServerFlags())
    lines = [f"usage: {program}", "Flags:"]
    for spec in FLAG_SPECS:
        shown = f"--{spec.name}={_shown_default(spec, defaults[spec.name])}"
        lines.append(f"\t{shown:<33}\t{spec.kind}\t{spec.usage}")
    return "\n".join(lines) + "\n"
