"""The access log (``--access_log_file``, our extension): one JSON line per request, for audits.

    {"time": "2025-01-02T03:04:05.678901Z", "peer": "ipv4:127.0.0.1:50122", "protocol": "grpc",
     "method": "/tensorflow.serving.PredictionService/Predict", "model": "mlp", "version": 1,
     "status": "OK", "latency_us": 912, "batch_size": 8, "rows": 1}

``status`` is the gRPC status code name on gRPC lines and the HTTP status on REST lines. ``version``
is the version that answered when the answer names it, else the version or label asked for.
``batch_size`` (rows executed, padding included, as the ``x-batch-size`` header) and ``rows`` (the
request's own rows) come from the InferenceCore's observers, the path that also feeds the metrics;
they are null for calls that ran no batch (errors, status, metadata).

Each front end opens an entry when a call arrives (a gRPC interceptor, an aiohttp middleware),
outside the bearer-token check, so refused calls are logged too. The entry travels with the call
in a context variable, which the core's observer fills in. Lines are kept in memory and written
about once a second, or once 64 KiB are waiting, and on stop: the event loop never waits for a
write per request. Calls gRPC refuses before any handler runs (a message over
``--max_request_bytes``) leave no line.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote

import grpc
from aiohttp import web

from reference_server.config_files import ConfigError
from reference_server.inference import InferenceCore, RequestRecord

log = logging.getLogger(__name__)

STDERR = "-"
FLUSH_INTERVAL_S = 1.0
FLUSH_BYTES = 64 * 1024
# HTTP's "client closed request" (TF Serving maps CANCELLED to it).
CLIENT_CLOSED = 499

_REST_MODEL = re.compile(r"/v1/models/([^/:]+)(?:/versions/([0-9]+)|/labels/([^/:]+))?", re.I)


@dataclass
class AccessEntry:
    """One call being served; completed by the front end and the core's observer."""

    peer: str
    protocol: str  # "grpc" or "rest"
    method: str  # gRPC: the full method name; REST: "POST /v1/models/m:predict"
    model: str = ""
    version: int | str | None = None
    batch_size: int | None = None
    rows: int | None = None
    wall_time: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)

    def line(self, status: int | str, finished: float) -> str:
        """The JSON line for this call, ended with ``status`` at ``finished`` (perf_counter)."""
        return json.dumps(
            {
                "time": _iso_utc(self.wall_time),
                "peer": self.peer,
                "protocol": self.protocol,
                "method": self.method,
                "model": self.model,
                "version": self.version,
                "status": status,
                "latency_us": round((finished - self.started) * 1e6),
                "batch_size": self.batch_size,
                "rows": self.rows,
            },
            ensure_ascii=False,
        )


# The entry of the call the current task serves (None outside a logged call).
CURRENT: contextvars.ContextVar[AccessEntry | None] = contextvars.ContextVar(
    "access_entry", default=None
)


def note_version(version: int) -> None:
    """Record the version that answered the current call (front ends call this)."""
    entry = CURRENT.get()
    if entry is not None:
        entry.version = version


def _iso_utc(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


# -- what a request names (pure) ------------------------------------------------------------------


def grpc_requested(request: Any) -> tuple[str, int | str | None]:
    """Model name and version (or label) a gRPC request asks for; ("", None) when it names none
    (e.g. a refused call, whose request is never parsed)."""
    spec = getattr(request, "model_spec", None)
    tasks = getattr(request, "tasks", None)
    if spec is None and tasks:
        spec = tasks[0].model_spec
    if spec is None:
        return "", None
    return spec.name, _spec_version(spec)


def grpc_answered_version(response: Any) -> int | None:
    """The version a gRPC answer names (its model_spec, or its first result's), if any."""
    spec = getattr(response, "model_spec", None)
    results = getattr(response, "results", None)
    if spec is None and results:
        spec = getattr(results[0], "model_spec", None)
    if spec is None or not spec.HasField("version"):
        return None
    return spec.version.value


def _spec_version(spec: Any) -> int | str | None:
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return spec.version.value
    if choice == "version_label":
        return spec.version_label
    return None


def rest_requested(path: str) -> tuple[str, int | str | None]:
    """Model name and version (or label) a REST path names; ("", None) for other paths."""
    match = _REST_MODEL.match(path)
    if match is None:
        return "", None
    name, version, label = match.groups()
    return unquote(name), int(version) if version else (unquote(label) if label else None)


def rest_peer(request: web.Request) -> str:
    """The client's address written as gRPC writes peers: ``ipv4:HOST:PORT``, ``ipv6:[H]:P``."""
    peername = request.transport.get_extra_info("peername") if request.transport else None
    if not peername:
        return request.remote or ""
    host, port = peername[0], peername[1]
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


# -- the log -------------------------------------------------------------------------------------


class AccessLog:
    """Collects access lines and writes them in batches to a stream (a file, or stderr)."""

    def __init__(self, stream: TextIO | None, *, owns_stream: bool = False) -> None:
        self._stream = stream
        self._owns_stream = owns_stream
        self._pending: list[str] = []
        self._pending_bytes = 0
        self._lock = threading.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._write_failed = False

    @classmethod
    def disabled(cls) -> AccessLog:
        return cls(None)

    @classmethod
    def open(cls, target: str, flag: str = "access_log_file") -> AccessLog:
        """A log appending to the file ``target``, or writing to stderr for ``-``."""
        if target == STDERR:
            return cls(sys.stderr)
        try:
            stream = Path(target).open("a", encoding="utf-8")  # noqa: SIM115 (closed by close())
        except OSError as exc:
            raise ConfigError(flag, target, f"cannot open for appending: {exc.strerror}") from exc
        return cls(stream, owns_stream=True)

    @classmethod
    def from_flags(cls, flags) -> AccessLog:
        return cls.open(flags.access_log_file) if flags.access_log_file else cls.disabled()

    @property
    def enabled(self) -> bool:
        return self._stream is not None

    # -- wiring ------------------------------------------------------------------------------------

    def attach(self, core: InferenceCore) -> None:
        """Learn batch sizes from ``core``'s observers and start the periodic flush (call from
        the serving loop)."""
        if not self.enabled:
            return
        core.observers.append(self.observe_request)
        self._timer = asyncio.get_running_loop().call_later(FLUSH_INTERVAL_S, self._tick)

    def grpc_interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return [GrpcAccessInterceptor(self)] if self.enabled else []

    def rest_middlewares(self) -> list:
        return [rest_access_middleware(self)] if self.enabled else []

    # -- recording ---------------------------------------------------------------------------------

    def observe_request(self, record: RequestRecord) -> None:
        """InferenceCore observer: the batch the current call went through."""
        entry = CURRENT.get()
        if entry is None:
            return
        entry.model = entry.model or record.model_name
        if record.stats is not None:
            entry.batch_size = record.stats.batch_size
            entry.rows = record.stats.task_rows

    def record(self, entry: AccessEntry, status: int | str) -> None:
        if not self.enabled:
            return
        line = entry.line(status, time.perf_counter()) + "\n"
        with self._lock:
            self._pending.append(line)
            self._pending_bytes += len(line)
            full = self._pending_bytes >= FLUSH_BYTES
        if full:
            self.flush()

    def flush(self) -> None:
        """Write the waiting lines; a failing stream is reported once, then lines are dropped."""
        with self._lock:
            text, self._pending, self._pending_bytes = "".join(self._pending), [], 0
        if not text or self._stream is None:
            return
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError) as exc:
            if not self._write_failed:
                log.error("access log: cannot write: %s", exc)
            self._write_failed = True

    def _tick(self) -> None:
        self.flush()
        self._timer = asyncio.get_running_loop().call_later(FLUSH_INTERVAL_S, self._tick)

    def close(self) -> None:
        """Write what is waiting and close the file (stderr stays open)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()
        if self._owns_stream and self._stream is not None:
            self._stream.close()
        self._stream = None


# -- the front ends' hooks ------------------------------------------------------------------------


class GrpcAccessInterceptor(grpc.aio.ServerInterceptor):
    """Logs every unary-response call, whatever handler answers it (a refusal included)."""

    def __init__(self, access_log: AccessLog) -> None:
        self._log = access_log

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.response_streaming:
            return handler  # TF Serving's services have no streaming answers
        method = handler_call_details.method
        make = (
            grpc.stream_unary_rpc_method_handler
            if handler.request_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        inner = handler.stream_unary if handler.request_streaming else handler.unary_unary
        return make(
            self._logged(inner, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _logged(self, inner: Callable[..., Awaitable[Any]], method: str):
        async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
            entry = AccessEntry(peer=context.peer(), protocol="grpc", method=method)
            entry.model, entry.version = grpc_requested(request)
            token = CURRENT.set(entry)
            status = grpc.StatusCode.UNKNOWN
            try:
                response = await inner(request, context)
                status = context.code() or grpc.StatusCode.OK
                answered = grpc_answered_version(response)
                entry.version = entry.version if answered is None else answered
                return response
            except asyncio.CancelledError:
                status = grpc.StatusCode.CANCELLED
                raise
            except BaseException:
                status = context.code() or grpc.StatusCode.UNKNOWN  # set by context.abort
                raise
            finally:
                CURRENT.reset(token)
                self._log.record(entry, status.name)

        return behavior


def rest_access_middleware(access_log: AccessLog):
    """aiohttp middleware logging every HTTP request with its status."""

    @web.middleware
    async def log_access(request: web.Request, handler) -> web.StreamResponse:
        entry = AccessEntry(
            peer=rest_peer(request), protocol="rest", method=f"{request.method} {request.path}"
        )
        entry.model, entry.version = rest_requested(request.path)
        token = CURRENT.set(entry)
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            raise
        finally:
            CURRENT.reset(token)
            access_log.record(entry, status)

    return log_access
