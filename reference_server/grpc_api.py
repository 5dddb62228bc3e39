"""TF Serving's gRPC API (PredictionService and ModelService) on grpc.aio, over the InferenceCore.

Requests are decoded here (TensorProto → numpy), answered by the core and encoded back the way
TF Serving does it: Predict outputs in typed fields (``Tensor::AsProtoField``, TF Serving's
default ``kAsProtoField``), failures as the ServingError's status code and message, truncated
like TF Serving's ``ToGRPCStatus``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
import numpy as np
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError
from google.protobuf.message_factory import GetMessageClass
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from reference_server.batch_scheduler import REQUEST_DEADLINE
from reference_server.errors import ServingError, invalid_argument
from reference_server.inference import (
    SIGNATURE_DEF_FIELD,
    InferenceCore,
    ModelSpec,
    PredictResult,
)
from reference_server.metrics import notify_failure
from reference_server.model_registry import VersionRecord
from reference_server.security import RequestLimits
from reference_server.servable import Signature
from reference_server.tensor_codec import (
    DEFAULT_MAX_TENSOR_BYTES,
    TensorProtoError,
    tensor_proto_to_ndarray,
    write_tensor_proto,
)

log = logging.getLogger(__name__)

# TF Serving calls ServerBuilder::SetMaxMessageSize(kint32max): no practical limit either way.
# -1 is gRPC's "unlimited", the same limit in practice (a protobuf message is below 2 GiB).
GRPC_SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
]

# ToGRPCStatus (grpc_status_util.cc) cuts longer messages and appends this marker.
ERROR_MESSAGE_LIMIT = 1024
TRUNCATED_MARKER = "...TRUNCATED"

# tensorflow::strings::safe_strto32: optional sign, digits, surrounding whitespace allowed.
_INT_TEXT = re.compile(r"\s*[+-]?\d+\s*")
_INT32_RANGE = range(-(2**31), 2**31)
MAX_RECEIVE_LENGTH = "grpc.max_receive_message_length"


def parse_channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """``--grpc_channel_arguments`` as TF Serving parses it: ``key=value`` pairs split on ``,``.

    A value that reads as a 32-bit integer is passed as an int, anything else as a string. As in
    TF Serving, nothing is trimmed and a second ``=`` ends the value. Raises ValueError for an
    entry without ``=`` (TF Serving crashes on those).
    """
    if not text:
        return []
    arguments: list[tuple[str, int | str]] = []
    for entry in text.split(","):
        parts = entry.split("=")
        if len(parts) < 2:
            raise ValueError(f"--grpc_channel_arguments: expected key=value, got {entry!r}")
        arguments.append((parts[0], _channel_value(parts[1])))
    return arguments


def grpc_server_options(
    channel_arguments: str = "", max_request_bytes: int = 0
) -> list[tuple[str, int | str]]:
    """``grpc.aio.server(options=...)``: our defaults, overridden by ``--grpc_channel_arguments``.

    One entry per key, the user's winning. TF Serving appends the user's arguments after its
    own limits and gRPC core's ChannelArgs::FromC keeps the last of duplicate keys; gRPC Python
    (grpcio 1.85) keeps the first, so a plain concatenation would ignore the user's value.
    ``max_request_bytes`` (> 0) becomes gRPC's receive limit, so gRPC refuses a larger message
    with RESOURCE_EXHAUSTED before receiving it; an explicit channel argument still wins.
    """
    merged: dict[str, int | str] = dict(GRPC_SERVER_OPTIONS)
    if 0 < max_request_bytes < 2**31:  # a larger limit is no limit (a message is < 2 GiB)
        merged[MAX_RECEIVE_LENGTH] = max_request_bytes
    merged.update(parse_channel_arguments(channel_arguments))
    return list(merged.items())


def _channel_value(text: str) -> int | str:
    if _INT_TEXT.fullmatch(text) and int(text) in _INT32_RANGE:
        return int(text)
    return text


def add_grpc_services(
    server: grpc.aio.Server, core: InferenceCore, limits: RequestLimits | None = None
) -> None:
    """Register PredictionService and ModelService, answered by ``core``, on ``server``;
    ``limits`` bounds the rows and decoded tensor bytes of each request."""
    predictions = prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"]
    models = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"]
    server.add_generic_rpc_handlers(
        (
            service_handler(predictions, PredictionServicer(core, limits or RequestLimits())),
            service_handler(models, ModelServicer(core)),
        )
    )


def service_handler(service: ServiceDescriptor, servicer: Any) -> grpc.GenericRpcHandler:
    """What the generated ``add_*Servicer_to_server`` registers, but with request parsing that
    never raises: grpc.aio answers a deserializer's exception with UNKNOWN, a server error,
    for what is the client's malformed message (see UnparseableRequest)."""
    handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=_lenient_parser(GetMessageClass(method.input_type)),
            response_serializer=GetMessageClass(method.output_type).SerializeToString,
        )
        for method in service.methods
    }
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


class UnparseableRequest:
    """Stands in for a request message whose bytes did not parse; ``rpc`` refuses it."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name


def _lenient_parser(message_class: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except DecodeError:
            return UnparseableRequest(message_class.DESCRIPTOR.full_name)

    return parse


def unparseable_request(request: UnparseableRequest) -> ServingError:
    # TF Serving's C++ gRPC answers INTERNAL with the type name; it is the client's error.
    return invalid_argument(f"Failed to parse request message as {request.type_name}")


# -- error mapping -----------------------------------------------------------------------------

Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Any]]


def status_message(message: str) -> str:
    """The message as TF Serving's ToGRPCStatus sends it (at most 1024 characters + marker)."""
    if len(message) > ERROR_MESSAGE_LIMIT:
        return message[:ERROR_MESSAGE_LIMIT] + TRUNCATED_MARKER
    return message


def rpc(method: Handler) -> Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    """Turn ``method(self, request) -> response`` into a grpc.aio handler.

    A ServingError becomes its status code and message; any other exception becomes INTERNAL
    with its message (the traceback goes to the log, never to the client).
    """

    @functools.wraps(method)
    async def handler(self, request, context: grpc.aio.ServicerContext):
        # TF Serving's enforce_session_run_timeout: the client's deadline bounds the run, so
        # work nobody waits for any more is dropped from the batch queue.
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        token = REQUEST_DEADLINE.set(deadline)
        try:
            if type(request) is UnparseableRequest:
                raise unparseable_request(request)
            return await method(self, request, context)
        except ServingError as exc:
            if deadline is not None and time.monotonic() >= deadline:
                # Past its deadline a client only ever sees gRPC's own DEADLINE_EXCEEDED (as
                # with TF Serving, which answers later); say the same if we are first.
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
            await context.abort(exc.code, status_message(exc.message))
        except Exception as exc:
            log.exception("%s failed", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, status_message(str(exc)))
        finally:
            REQUEST_DEADLINE.reset(token)

    return handler


# -- request decoding / response encoding (pure) ------------------------------------------------


def request_model_spec(request: Any) -> ModelSpec:
    """The request's ModelSpec; TF Serving refuses requests without one."""
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    return ModelSpec.from_proto(request.model_spec)


def decode_inputs(
    signature: Signature,
    tensors: Mapping[str, tensor_pb2.TensorProto],
    max_bytes: int = DEFAULT_MAX_TENSOR_BYTES,
) -> dict[str, np.ndarray]:
    """A PredictRequest's inputs as arrays, with predict_util.cc's alias and parsing errors.

    Names, dtypes and shapes against the signature are the core's check; here only what TF
    Serving reports while turning protos into tensors: an unknown alias (when the count matches)
    and an unparseable TensorProto. The tensors together may take at most ``max_bytes``: a
    tensor that would overrun what is left is unparseable, as one TensorFlow cannot allocate.
    """
    count_matches = len(tensors) == len(signature.inputs)
    inputs = {}
    for alias in sorted(tensors):
        if count_matches and alias not in signature.inputs:
            expected = ",".join(sorted(signature.inputs))
            raise invalid_argument(
                f"input tensor alias not found in signature: {alias}. "
                f"Inputs expected to be in the set {{{expected}}}."
            )
        inputs[alias] = decode_input(alias, tensors[alias], max_bytes)
        max_bytes -= inputs[alias].nbytes
    return inputs


def decode_input(
    alias: str, proto: tensor_pb2.TensorProto, max_bytes: int = DEFAULT_MAX_TENSOR_BYTES
) -> np.ndarray:
    try:
        return tensor_proto_to_ndarray(proto, max_bytes)
    except TensorProtoError as exc:
        log.debug("tensor parsing error: %s: %s", alias, exc)
        raise invalid_argument(f"tensor parsing error: {alias}") from None


def predict_response(result: PredictResult) -> predict_pb2.PredictResponse:
    response = predict_pb2.PredictResponse()
    response.model_spec.CopyFrom(result.model_spec_proto())
    for alias, value in result.outputs.items():
        write_tensor_proto(response.outputs[alias], value)  # in place: no copy of big outputs
    return response


def model_status_response(
    records: list[VersionRecord],
) -> get_model_status_pb2.GetModelStatusResponse:
    response = get_model_status_pb2.GetModelStatusResponse()
    for record in records:
        entry = response.model_version_status.add()
        entry.version = record.version
        entry.state = int(record.state)
        if record.error is not None:
            # tensorflow.error.Code numbers are the canonical gRPC code numbers.
            entry.status.error_code = record.error.code.value[0]
            entry.status.error_message = record.error.message
        else:
            entry.status.SetInParent()  # OK, "" — present, as TF Serving's ToStatusProto
    return response


# -- services ------------------------------------------------------------------------------------


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """tensorflow.serving.PredictionService."""

    def __init__(self, core: InferenceCore, limits: RequestLimits | None = None) -> None:
        self._core = core
        self._limits = limits or RequestLimits()

    @rpc
    async def Predict(
        self, request: predict_pb2.PredictRequest, context
    ) -> predict_pb2.PredictResponse:
        started = time.perf_counter()
        try:
            spec = request_model_spec(request)
            # Resolve before parsing tensors: TF Serving reports a bad model/signature first.
            _, signature = self._core.resolve(spec)
            inputs = decode_inputs(signature, request.inputs, self._limits.max_tensor_bytes)
            self._limits.check_inputs(inputs)
        except ServingError as exc:  # never reached the core: count it here, as TF Serving does
            notify_failure(self._core.observers, request.model_spec.name, "Predict", exc, started)
            raise
        result = await self._core.predict(spec, inputs, tuple(request.output_filter))
        context.set_trailing_metadata(result.stats.as_metadata())
        return predict_response(result)

    @rpc
    async def Classify(self, request: classification_pb2.ClassificationRequest, context):
        self._limits.check_examples(request.input)
        spec_proto, result = await self._core.classify(request_model_spec(request), request.input)
        return classification_pb2.ClassificationResponse(model_spec=spec_proto, result=result)

    @rpc
    async def Regress(self, request: regression_pb2.RegressionRequest, context):
        self._limits.check_examples(request.input)
        spec_proto, result = await self._core.regress(request_model_spec(request), request.input)
        return regression_pb2.RegressionResponse(model_spec=spec_proto, result=result)

    @rpc
    async def MultiInference(self, request, context):
        self._limits.check_examples(request.input)
        return await self._core.multi_inference(request)

    @rpc
    async def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context
    ):
        spec = request_model_spec(request)
        spec_proto, signature_map = self._core.metadata(spec, list(request.metadata_field))
        response = get_model_metadata_pb2.GetModelMetadataResponse(model_spec=spec_proto)
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
        return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """tensorflow.serving.ModelService."""

    def __init__(self, core: InferenceCore) -> None:
        self._core = core

    @rpc
    async def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest, context):
        return model_status_response(self._core.status(request_model_spec(request)))

    @rpc
    async def HandleReloadConfigRequest(
        self, request: model_management_pb2.ReloadConfigRequest, context
    ) -> model_management_pb2.ReloadConfigResponse:
        """Apply a new ModelServerConfig; loading runs in a thread, off the serving loop.

        TF Serving (model_service_impl.cc) writes the outcome into the response's status and
        also returns it as the RPC status; gRPC drops the body of a failed call, so a client
        sees an error as the RPC error (our ``rpc`` wrapper) and success as status OK.
        """
        await asyncio.to_thread(self._core.registry.apply_config, request.config)
        response = model_management_pb2.ReloadConfigResponse()
        response.status.SetInParent()  # OK, "" — present, as TF Serving's ToStatusProto
        return response
