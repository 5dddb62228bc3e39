"""TF Serving's HTTP/REST API on aiohttp (model_servers/http_rest_api_handler.cc).

    POST /v1/models/NAME[/versions/N | /labels/L]:(predict|classify|regress)
    GET  /v1/models/NAME[/versions/N | /labels/L][/metadata]

Every answer is JSON; a failure is ``{"error": "<message>"}`` with the HTTP status TF Serving
maps the canonical code to. Paths and messages follow TF Serving's handler and its
http_rest_api_util.cc; the request/response bodies are converted by ``json_tensor``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote

from aiohttp import web
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from reference_server import json_tensor
from reference_server.access_log import note_version
from reference_server.batch_scheduler import REQUEST_DEADLINE
from reference_server.errors import ServingError, invalid_argument
from reference_server.inference import SIGNATURE_DEF_FIELD, InferenceCore, ModelSpec
from reference_server.metrics import ENTRYPOINT, REST_ENTRYPOINT, notify_failure
from reference_server.model_registry import VersionRecord
from reference_server.security import RequestLimits
from reference_server.servable import DEFAULT_SIGNATURE, TensorInfo

log = logging.getLogger(__name__)

# TF Serving's kPathRegex "(?i)/v1/.*": everything under /v1/ is this API's to answer (or
# refuse as malformed); other paths stay free for routes such as the metrics endpoint.
# aiohttp matches the decoded path, where "." would stop at a %0A: [\s\S] takes any character.
API_ROUTE = "/{prefix:[vV]1}/{path:[\\s\\S]*}"
# TF Serving reads bodies of any size; aiohttp's default limit is 1 MiB.
MAX_BODY_BYTES = 2**31 - 1
MAX_VERSION = 2**63 - 1

_PREDICTION_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?"
    r":(classify|regress|predict)",
    re.IGNORECASE,
)
_MODEL_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
_JSON_OPTIONS: dict[str, Any] = {
    "always_print_fields_with_no_presence": True,
    "preserving_proto_field_name": True,
}

T = TypeVar("T")


def build_rest_app(
    core: InferenceCore,
    *,
    timeout_ms: int = 30000,
    limits: RequestLimits | None = None,
    middlewares: Iterable = (),
) -> web.Application:
    """The REST API of ``core`` as an aiohttp application.

    ``timeout_ms`` (``--rest_api_timeout_in_ms``) bounds each predict/classify/regress call;
    0 or less means no limit. ``limits`` bounds body bytes and rows per request;
    ``middlewares`` (e.g. access log, token check) wrap every route. Further routes (e.g.
    Prometheus metrics) may be added to ``app.router`` by the caller, at any path outside ``/v1/``.
    """
    limits = limits or RequestLimits()
    api = RestApi(core, timeout_ms=timeout_ms, limits=limits)
    app = web.Application(
        client_max_size=limits.max_bytes if limits.max_bytes > 0 else MAX_BODY_BYTES,
        middlewares=list(middlewares),
    )
    app.router.add_route("*", API_ROUTE, api.handle)
    return app


# -- request routing (pure) ---------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """What a request path asks for: an action on a model, version or label."""

    action: str  # "predict", "classify", "regress", "status" or "metadata"
    spec: ModelSpec


def parse_route(method: str, path: str) -> Route:
    """The Route of a request, with TF Serving's errors (ParseModelInfo + dispatch)."""
    malformed = invalid_argument(f"Malformed request: {method} {path}")
    pattern = {"POST": _PREDICTION_PATH, "GET": _MODEL_PATH}.get(method)
    match = pattern.fullmatch(path) if pattern else None
    if match is None:
        raise malformed
    name, version_text, label, action = match.groups()
    name = unquote(name or "")
    version = _parse_version(version_text) if version_text else None
    label = unquote(label) if label else None
    spec = ModelSpec(name=name, version=version, label=label)
    if method == "POST":
        if action not in ("predict", "classify", "regress"):  # matched case-insensitively
            raise malformed
        return Route(action, spec)
    if not name:
        raise invalid_argument("Missing model name in request.")
    return Route("metadata" if action == "metadata" else "status", spec)


def _parse_version(text: str) -> int:
    version = int(text)
    if version > MAX_VERSION:
        raise invalid_argument(f"Failed to convert version: {text} to numeric.")
    return version


# -- status and metadata bodies (pure) ------------------------------------------------------------


def status_json(records: Sequence[VersionRecord]) -> bytes:
    """GetModelStatusResponse as TF Serving prints it (default values included)."""
    response = get_model_status_pb2.GetModelStatusResponse()
    for record in records:
        entry = response.model_version_status.add()
        entry.version = record.version
        entry.state = int(record.state)
        entry.status.SetInParent()  # TF Serving always sets it, so "OK" and "" are printed
        if record.error is not None:
            entry.status.error_code = record.error.code.value[0]
            entry.status.error_message = record.error.message
    return json.dumps(json_format.MessageToDict(response, **_JSON_OPTIONS)).encode()


def metadata_json(
    spec: model_pb2.ModelSpec, signatures: get_model_metadata_pb2.SignatureDefMap
) -> bytes:
    """GetModelMetadataResponse with the signature map unpacked, as TF Serving's ToJsonString."""
    document = {
        "model_spec": json_format.MessageToDict(spec, **_JSON_OPTIONS),
        "metadata": {SIGNATURE_DEF_FIELD: json_format.MessageToDict(signatures, **_JSON_OPTIONS)},
    }
    return json.dumps(document).encode()


# -- the handler ---------------------------------------------------------------------------------


# A JSON body and extra response headers.
Reply = tuple[bytes, Sequence[tuple[str, str]]]


class RestApi:
    """Answers /v1/ requests from an InferenceCore."""

    def __init__(
        self, core: InferenceCore, *, timeout_ms: int, limits: RequestLimits | None = None
    ) -> None:
        self.core = core
        self.limits = limits or RequestLimits()
        self.timeout_s = timeout_ms / 1000 if timeout_ms > 0 else None
        self._actions: Mapping[str, Callable[[ModelSpec, bytes], Awaitable[Reply]]] = {
            "predict": self.predict,
            "classify": self.classify,
            "regress": self.regress,
            "status": self.status,
            "metadata": self.metadata,
        }

    async def handle(self, request: web.Request) -> web.Response:
        path = request.raw_path.partition("?")[0]
        ENTRYPOINT.set(REST_ENTRYPOINT)  # this handler's task only: labels request_latency
        try:
            body = await self._read_body(request)
            route = parse_route(request.method, path)
            payload, headers = await self._actions[route.action](route.spec, body)
            status = 200
        except ServingError as exc:
            payload, headers = json_tensor.encode_error(exc.message), ()
            status = exc.http_status
        except Exception as exc:  # a bug must cost one request, never the connection
            log.exception("REST request %s %s failed", request.method, path)
            payload, headers = json_tensor.encode_error(f"Internal error: {exc}"), ()
            status = 500
        return web.Response(
            body=payload, status=status, content_type="application/json", headers=headers
        )

    async def _read_body(self, request: web.Request) -> bytes:
        """The body, refused from its Content-Length before reading when over the limit (and
        by aiohttp's ``client_max_size`` while reading when the length was not sent)."""
        self.limits.check_body_size(request.content_length)
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise self.limits.body_too_large() from None

    async def predict(self, spec: ModelSpec, body: bytes) -> Reply:
        def input_infos(signature_name: str) -> Mapping[str, TensorInfo]:
            return self._signature_inputs(spec, signature_name)

        def decode() -> json_tensor.PredictJsonRequest:
            request = json_tensor.decode_predict_request(body, input_infos)
            self.limits.check_inputs(request.inputs)
            return request

        request = self._decode(spec, "Predict", decode)
        spec = dataclasses.replace(spec, signature_name=request.signature_name)
        result = await self._bounded(self.core.predict(spec, request.inputs))
        note_version(result.servable.version)
        payload = json_tensor.encode_predict_response(result.outputs, row_format=request.row_format)
        return payload, result.stats.as_metadata()

    async def classify(self, spec: ModelSpec, body: bytes) -> Reply:
        signature_name, request_input = self._decode(
            spec, "Classify", lambda: self._examples_request(body)
        )
        spec = dataclasses.replace(spec, signature_name=signature_name)
        spec_proto, result = await self._bounded(self.core.classify(spec, request_input))
        note_version(spec_proto.version.value)
        return json_tensor.encode_classification_result(result), ()

    async def regress(self, spec: ModelSpec, body: bytes) -> Reply:
        signature_name, request_input = self._decode(
            spec, "Regress", lambda: self._examples_request(body)
        )
        spec = dataclasses.replace(spec, signature_name=signature_name)
        spec_proto, result = await self._bounded(self.core.regress(spec, request_input))
        note_version(spec_proto.version.value)
        return json_tensor.encode_regression_result(result), ()

    async def status(self, spec: ModelSpec, body: bytes) -> Reply:
        return status_json(self.core.status(spec)), ()

    async def metadata(self, spec: ModelSpec, body: bytes) -> Reply:
        model_spec, signatures = self.core.metadata(spec, [SIGNATURE_DEF_FIELD])
        note_version(model_spec.version.value)
        return metadata_json(model_spec, signatures), ()

    def _examples_request(self, body: bytes):
        signature_name, request_input = json_tensor.decode_examples_request(body)
        self.limits.check_examples(request_input)
        return signature_name, request_input

    def _decode(self, spec: ModelSpec, api: str, decode: Callable[[], T]) -> T:
        """``decode()``; a failure never reaches the core, so it is reported to the core's
        observers here (request_count counts it, as TF Serving does)."""
        started = time.perf_counter()
        try:
            return decode()
        except ServingError as exc:
            notify_failure(self.core.observers, spec.name, api, exc, started)
            raise

    def _signature_inputs(self, spec: ModelSpec, signature_name: str) -> Mapping[str, TensorInfo]:
        """The inputs JSON is decoded against (TF Serving's GetInfoMap, with its messages)."""
        servable = self.core.registry.resolve(spec.name, spec.version, spec.label)
        key = signature_name or DEFAULT_SIGNATURE
        signature = servable.signatures.get(key)
        if signature is None:
            raise invalid_argument(f'Serving signature name: "{key}" not found in signature def')
        return signature.inputs

    async def _bounded(self, call: Awaitable[T]) -> T:
        """Await ``call`` with the REST timeout as the request's deadline, as TF Serving's
        RunOptions.timeout_in_ms: the core stops waiting there, answering RESOURCE_EXHAUSTED
        (still queued) or DEADLINE_EXCEEDED (running), as TF Serving does."""
        if self.timeout_s is None:
            return await call
        token = REQUEST_DEADLINE.set(time.monotonic() + self.timeout_s)
        try:
            return await call
        finally:
            REQUEST_DEADLINE.reset(token)
