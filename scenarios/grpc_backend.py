"""The gRPC side of the Predict scenario: gevent-safe channels that carry request bytes.

Import only after `locust` (gevent must have patched the process) and before any channel
exists: importing this module runs `grpc.experimental.gevent.init_gevent()`.

Requests are serialized once (`tfs_wire`) and sent through a generic method with no
serializers, so the hot loop does no protobuf work and TensorFlow is never imported.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from grpc.experimental import gevent as grpc_gevent

from scenarios.loadgen import Backend, PredictUser, Prepared, ScenarioError
from scenarios.mixes import RequestKind
from scenarios.options import ScenarioOptions, Target, grpc_target
from scenarios.payloads import Payload
from scenarios.recording import Key
from scenarios.signatures import Signature, from_signature_def_map
from scenarios.tfs_wire import (
    METADATA_METHOD,
    PREDICT_METHOD,
    answer_version,
    decode_signature_defs,
    metadata_request_bytes,
    model_spec,
    predict_request_bytes,
)

grpc_gevent.init_gevent()

METADATA_TIMEOUT_S = 30.0
_UNLIMITED = (("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1))

Caller = Callable[..., bytes]


class GrpcStatusError(Exception):
    """A failed RPC, as Locust shows it: `CODE_NAME: details`."""


def open_channel(target: Target, options: ScenarioOptions, *, own_connection: bool) -> grpc.Channel:
    """A channel to `target`; `own_connection` keeps it off gRPC's process-wide subchannel
    pool, so that it opens its own TCP connection instead of sharing one."""
    channel_options = list(_UNLIMITED)
    if own_connection:
        channel_options.append(("grpc.use_local_subchannel_pool", 1))
    if not target.tls:
        return grpc.insecure_channel(target.address, options=channel_options)
    roots = Path(options.tls_ca).read_bytes() if options.tls_ca else None
    credentials = grpc.ssl_channel_credentials(root_certificates=roots)
    return grpc.secure_channel(target.address, credentials, options=channel_options)


def call_metadata(options: ScenarioOptions) -> tuple[tuple[str, str], ...] | None:
    return (("authorization", f"Bearer {options.token}"),) if options.token else None


def _spec(options: ScenarioOptions, signature: str = "") -> Any:
    return model_spec(
        options.model_name,
        signature=signature,
        version=options.model_version,
        label=options.version_label,
    )


class GrpcBackend(Backend):
    """gRPC targets, GetModelMetadata, PredictRequest bytes; and this process's channels."""

    protocol = "grpc"
    request_type = "grpc"
    request_name = "Predict"

    def __init__(self) -> None:
        self._shared: tuple[Prepared, Iterator[Caller]] | None = None

    def target(self, text: str, options: ScenarioOptions) -> Target:
        return grpc_target(text, options.tls_ca)

    def signatures(self, target: Target, options: ScenarioOptions) -> dict[str, Signature]:
        request = metadata_request_bytes(_spec(options))
        channel = open_channel(target, options, own_connection=True)
        try:
            answer = channel.unary_unary(METADATA_METHOD)(
                request, timeout=METADATA_TIMEOUT_S, metadata=call_metadata(options)
            )
        except grpc.RpcError as error:
            raise ScenarioError(
                f"GetModelMetadata for model {options.model_name!r} at {target.address} "
                f"failed: {error.code().name}: {error.details()}"
            ) from None
        finally:
            channel.close()
        try:
            return from_signature_def_map(decode_signature_defs(answer))
        except ValueError as exc:
            raise ScenarioError(f"GetModelMetadata at {target.address}: {exc}") from None

    def encode(self, signature: Signature, payload: Payload, options: ScenarioOptions) -> bytes:
        return predict_request_bytes(_spec(options, signature.name), payload.inputs)

    def channels(self, prepared: Prepared, count: int) -> list[grpc.Channel]:
        """`count` channels per target, each with its own connection."""
        return [
            open_channel(target, prepared.options, own_connection=True)
            for _ in range(count)
            for target in prepared.targets
        ]

    def shared_callers(self, prepared: Prepared) -> Iterator[Caller]:
        """This process's channel pool (--grpc-channels per target), round robin."""
        if self._shared is None or self._shared[0] is not prepared:
            pool = self.channels(prepared, prepared.options.grpc_channels)
            self._shared = (prepared, itertools.cycle(predict_callers(pool)))
        return self._shared[1]


def predict_callers(channels: list[grpc.Channel]) -> list[Caller]:
    """The generic Predict method of each channel: bytes in, bytes out."""
    return [channel.unary_unary(PREDICT_METHOD) for channel in channels]


BACKEND = GrpcBackend()


class GrpcPredictUser(PredictUser):
    """Sends the prepared PredictRequest over gRPC (see PredictUser for the load models)."""

    abstract = False

    def on_start(self) -> None:
        prepared = self.bench.prepared
        if prepared is None:
            raise ScenarioError("the request was not prepared (see the log for why)")
        self.metadata = call_metadata(prepared.options)
        self.timeout = prepared.options.request_timeout_s
        self.bodies = prepared.requests
        self.own_channels: list[grpc.Channel] = []
        if prepared.options.grpc_channels > 0:
            self.callers = BACKEND.shared_callers(prepared)
        else:
            self.own_channels = BACKEND.channels(prepared, 1)
            self.callers = itertools.cycle(predict_callers(self.own_channels))

    def on_stop(self) -> None:
        super().on_stop()
        for channel in self.own_channels:
            channel.close()

    def send(self, key: Key, kind: RequestKind) -> tuple[str | None, int | None]:
        caller = next(self.callers)
        started = time.perf_counter()
        status, error, length, version = None, None, 0, None
        try:
            answer = caller(self.bodies[kind], timeout=self.timeout, metadata=self.metadata)
            length, version = len(answer), answer_version(answer)
        except grpc.RpcError as rpc_error:
            status = rpc_error.code().name
            error = GrpcStatusError(f"{status}: {rpc_error.details()}")
        self.environment.events.request.fire(
            request_type="grpc",
            name=self.bench.request_name(key),
            response_time=(time.perf_counter() - started) * 1000.0,
            response_length=length,
            exception=error,
            context={},
        )
        return status, version
