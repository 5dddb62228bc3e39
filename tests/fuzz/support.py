"""What every fuzz test shares: the servers' clients, the allowed answers, the tally, settings.

The properties (README "Reliability"): every answer is a client error or a success (no 5xx,
INTERNAL or UNKNOWN: the ``mlp``'s own graph errors are INVALID_ARGUMENT), a valid request
right after each malformed one gets the right answer, and with batching on the valid requests
sent together with a malformed one are answered correctly.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from tensorflow_serving.apis import predict_pb2

from harness.servers.server_process import ServerProcess
from reference_server.tensor_codec import ndarray_to_tensor_proto, tensor_proto_to_ndarray
from tests.helpers import fuzz_settings

# Examples per fuzz test: small in `make test`, >= 10,000 per protocol in the long profile.
FUZZ = fuzz_settings(20)
EXAMPLES = FUZZ.max_examples
# RSS a server may gain over one module's fuzzing, whatever the example count: caches and
# allocator pools fill early; a leak per request would pass this in the long profile.
RSS_BOUND_BYTES = 96 * 2**20
TIMEOUT_S = 30.0

ALLOWED_REST = {200, 400, 404}
ALLOWED_GRPC = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # over --max_request_bytes, refused by gRPC itself
}
PREDICT = "/tensorflow.serving.PredictionService/Predict"


# -- REST ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestAnswer:
    status: int
    body: bytes
    content_type: str | None
    batch_size: str | None = None  # x-batch-size: how many rows ran together with this one


class RestClient:
    """HTTP/1.1 keep-alive connections to one server, one per thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._local = threading.local()
        self._opened: list[http.client.HTTPConnection] = []  # to close them all at the end

    def close(self) -> None:
        for connection in self._opened:
            connection.close()

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict | None = None,
        chunked: bool = False,
    ) -> RestAnswer:
        """One request; ``chunked`` sends ``body`` (an iterable) without a Content-Length."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = http.client.HTTPConnection(
                "127.0.0.1", self.port, timeout=TIMEOUT_S
            )
            self._opened.append(connection)
        try:
            connection.request(
                method, path, body=body, headers=headers or {}, encode_chunked=chunked
            )
            response = connection.getresponse()
            answer = RestAnswer(
                response.status,
                response.read(),
                response.getheader("content-type"),
                response.getheader("x-batch-size"),
            )
        except (ConnectionError, http.client.HTTPException):
            self._local.connection = None  # the next call reconnects; this one failed
            connection.close()
            raise
        if response.will_close:
            self._local.connection = None
            connection.close()
        return answer


def check_rest_answer(answer: RestAnswer) -> str:
    """The answer's tally code; fails unless it is allowed and shaped like TF Serving's."""
    # Not always UTF-8: TF Serving echoes the request's bytes in messages, and so do we.
    document = json.loads(answer.body.decode("utf-8", "surrogateescape"))
    assert answer.content_type == "application/json"
    assert answer.status in ALLOWED_REST, f"{answer.status}: {document}"
    if answer.status != 200:
        assert isinstance(document.get("error"), str), document
    return str(answer.status)


# -- servers -------------------------------------------------------------------------------------


@dataclass
class FuzzServer:
    name: str
    process: ServerProcess
    rest: RestClient
    channel: grpc.Channel
    # The batch sizes valid requests ran in: evidence that malformed ones had company.
    batch_sizes: Counter = field(default_factory=Counter)

    @classmethod
    def ready(cls, name: str, process: ServerProcess) -> FuzzServer:
        channel = grpc.insecure_channel(
            process.grpc_target, options=[("grpc.max_send_message_length", -1)]
        )
        return cls(name, process, RestClient(process.rest_port), channel)

    def close(self) -> None:
        self.rest.close()
        self.channel.close()

    @property
    def pid(self) -> int:
        return self.process.process.pid

    @property
    def batched(self) -> bool:
        return self.name == "batched"

    def grpc_raw(self, method: str, payload: bytes) -> tuple[grpc.StatusCode, str]:
        """Send ``payload`` as the message of ``method`` (a full path); (code, details)."""
        call = self.channel.unary_unary(method)
        try:
            call(payload, timeout=TIMEOUT_S)
        except grpc.RpcError as error:
            return error.code(), error.details() or ""
        return grpc.StatusCode.OK, ""

    def valid_rest(self, rows: np.ndarray) -> np.ndarray:
        body = json.dumps({"instances": rows.tolist()}).encode()
        answer = self.rest.call("POST", "/v1/models/mlp:predict", body)
        assert answer.status == 200, answer.body
        self.batch_sizes[answer.batch_size] += 1
        return np.array(json.loads(answer.body)["predictions"], np.float32)

    def valid_grpc(self, rows: np.ndarray) -> np.ndarray:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "mlp"
        request.inputs["x"].CopyFrom(ndarray_to_tensor_proto(rows, as_content=True))
        call = self.channel.unary_unary(
            PREDICT,
            request_serializer=predict_pb2.PredictRequest.SerializeToString,
            response_deserializer=predict_pb2.PredictResponse.FromString,
        )
        response, state = call.with_call(request, timeout=TIMEOUT_S)
        trailers = dict(state.trailing_metadata() or ())
        self.batch_sizes[trailers.get("x-batch-size")] += 1
        return tensor_proto_to_ndarray(response.outputs["y"])

    def assert_serves(self, rows: np.ndarray, expected: np.ndarray) -> None:
        """A valid request on each protocol gets the model's answer."""
        assert self.process.process.poll() is None, self.process.log_text()
        for answer in (self.valid_rest(rows), self.valid_grpc(rows)):
            np.testing.assert_allclose(answer, expected, rtol=1e-5, atol=1e-6)


_NEIGHBOURS = ThreadPoolExecutor(4, thread_name_prefix="fuzz")
GOOD_NEIGHBOURS = 3


def beside_good_requests(
    server: FuzzServer,
    valid: Callable[[np.ndarray], np.ndarray],
    rows: np.ndarray,
    expected: np.ndarray,
    bad: Callable[[], Any],
) -> Any:
    """``bad()`` sent at the same time as valid requests (with batching on, within one batch
    timeout of each other); every valid one must get its right answer. Returns ``bad()``."""
    goods = [_NEIGHBOURS.submit(valid, rows) for _ in range(GOOD_NEIGHBOURS)]
    result = _NEIGHBOURS.submit(bad).result()
    for good in goods:
        np.testing.assert_allclose(good.result(), expected, rtol=1e-5, atol=1e-6)
    return result


# -- the record ----------------------------------------------------------------------------------


@dataclass
class Tally:
    codes: Counter = field(default_factory=Counter)
    rss: dict[str, dict[str, int]] = field(default_factory=dict)
    batch_sizes: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, protocol: str, category: str, server: str, code: str) -> None:
        self.codes[(protocol, category, server, code)] += 1

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "examples_per_test": EXAMPLES,
            "rss_bound_bytes": RSS_BOUND_BYTES,
            "rss": self.rss,
            "valid_request_batch_sizes": self.batch_sizes,
            "protocols": {},
        }
        for (protocol, category, server, code), count in sorted(self.codes.items()):
            entry = out["protocols"].setdefault(protocol, {"cases": 0, "categories": {}})
            entry["cases"] += count
            codes = entry["categories"].setdefault(f"{category} ({server})", {})
            codes[code] = codes.get(code, 0) + count
        return out
