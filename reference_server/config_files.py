"""Read TF Serving's text-format config files into typed values.

Each loader reads one file named by a flag and parses it with protobuf's ``text_format`` into
TF Serving's own message type, so the syntax accepted is TF Serving's. Every failure is a
ConfigError whose message starts with ``--<flag>=<path>:`` and, for a parse error, carries the
line and column, e.g. ``--batching_parameters_file=/x/b.txt: line 2:1: Message type
"tensorflow.serving.BatchingParameters" has no field named "max_batch_sizes".``
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf import text_format
from google.protobuf.message import Message
from tensorflow_serving.config import model_server_config_pb2

from reference_server import config_protos
from reference_server.batching_params import BatchingParameters

# PrometheusExporter::kPrometheusPath: where metrics are served when the config names no path.
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"

_MessageT = TypeVar("_MessageT", bound=Message)
# text_format prefixes its messages with "LINE:COLUMN : "; we report the position our own way.
_POSITION_PREFIX = re.compile(r"^\d+:\d+ : ")


class ConfigError(ValueError):
    """A config file cannot be read, parsed or used; the message names flag, path and line."""

    def __init__(self, flag: str, path: str | Path, detail: str) -> None:
        super().__init__(f"--{flag}={path}: {detail}")
        self.flag = flag
        self.path = str(path)
        self.detail = detail


@dataclass(frozen=True)
class MonitoringConfig:
    """What ``--monitoring_config_file`` asks for: whether and where to export Prometheus."""

    prometheus_enabled: bool = False
    prometheus_path: str = DEFAULT_PROMETHEUS_PATH


@dataclass(frozen=True)
class SslConfig:
    """``--ssl_config_file``'s SSLConfig: PEM texts (not file names) and client verification."""

    server_key: str = ""
    server_cert: str = ""
    custom_ca: str = ""
    client_verify: bool = False


def _read_text(path: str | Path, flag: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(flag, path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise ConfigError(flag, path, f"cannot read file: {exc.strerror or exc}") from exc


def _parse_error_detail(exc: text_format.ParseError) -> str:
    message = _POSITION_PREFIX.sub("", str(exc))
    line, column = exc.GetLine(), exc.GetColumn()
    if line is None:
        return message
    return f"line {line}:{column}: {message}"


def parse_text_proto(text: str, message: _MessageT, *, flag: str, path: str | Path) -> _MessageT:
    """Parse ``text`` into ``message`` (TextFormat::Parse semantics); ConfigError on failure."""
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise ConfigError(flag, path, _parse_error_detail(exc)) from exc


def _load(path: str | Path, message: _MessageT, flag: str) -> _MessageT:
    return parse_text_proto(_read_text(path, flag), message, flag=flag, path=path)


def load_model_server_config(
    path: str | Path, flag: str = "model_config_file"
) -> model_server_config_pb2.ModelServerConfig:
    """The ModelServerConfig in a text file. Raises ConfigError."""
    return _load(path, model_server_config_pb2.ModelServerConfig(), flag)


def batching_parameters_from_proto(proto: Any) -> BatchingParameters:
    """The dataclass for a BatchingParameters proto; fields it leaves unset keep TF's defaults."""
    values: dict[str, Any] = {}
    for name in (
        "max_batch_size",
        "batch_timeout_micros",
        "max_enqueued_batches",
        "num_batch_threads",
        "thread_pool_name",
        "enable_large_batch_splitting",
        "max_execution_batch_size",
    ):
        if proto.HasField(name):
            values[name] = getattr(proto, name).value
    values["allowed_batch_sizes"] = tuple(proto.allowed_batch_sizes)
    values["pad_variable_length_inputs"] = proto.pad_variable_length_inputs
    return BatchingParameters(**values)


def load_batching_parameters(
    path: str | Path, flag: str = "batching_parameters_file"
) -> BatchingParameters:
    """Validated BatchingParameters from a text file. Raises ConfigError."""
    proto = _load(path, config_protos.BatchingParameters(), flag)
    params = batching_parameters_from_proto(proto)
    try:
        params.validate()
    except ValueError as exc:
        raise ConfigError(flag, path, str(exc)) from exc
    return params


def load_monitoring_config(
    path: str | Path, flag: str = "monitoring_config_file"
) -> MonitoringConfig:
    """The Prometheus settings from a MonitoringConfig text file. Raises ConfigError."""
    prometheus = _load(path, config_protos.MonitoringConfig(), flag).prometheus_config
    return MonitoringConfig(
        prometheus_enabled=prometheus.enable,
        prometheus_path=prometheus.path or DEFAULT_PROMETHEUS_PATH,
    )


def load_ssl_config(path: str | Path, flag: str = "ssl_config_file") -> SslConfig:
    """The SSLConfig in a text file. Raises ConfigError."""
    proto = _load(path, config_protos.SSLConfig(), flag)
    return SslConfig(
        server_key=proto.server_key,
        server_cert=proto.server_cert,
        custom_ca=proto.custom_ca,
        client_verify=proto.client_verify,
    )
