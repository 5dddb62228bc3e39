"""TLS, mutual TLS, the bearer token, request limits and the access log on real servers.

Certificates are made for the test (``tests.certificates``). One server (module scope) runs
with TLS, a token, limits, an access log and Prometheus; a second one requires client
certificates. Refusals are counted on the server's own metrics: a refused call must never
reach the model.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from harness.models.zoo import build_model
from tests.certificates import Pki, make_pki, ssl_config_text
from tests.conftest import start_server

pytestmark = pytest.mark.timeout(180)

TOKEN = "bb-7f3c1e9a2d"
METRICS_PATH = "/monitoring/prometheus/metrics"
MAX_BYTES = 20_000
MAX_ROWS = 64
REFUSED_CALLS = 50
TIMEOUT = 30.0
SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
ACCESS_FIELDS = {
    "time",
    "peer",
    "protocol",
    "method",
    "model",
    "version",
    "status",
    "latency_us",
    "batch_size",
    "rows",
}


@dataclass
class Secured:
    server: Any
    pki: Pki
    files: dict[str, Path]
    access_log: Path

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.server.rest_port}"

    def channel(self, *, with_client_cert: bool = False) -> grpc.Channel:
        return secure_channel(self.server.grpc_target, self.pki, with_client_cert=with_client_cert)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return make_pki()


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("mlp") / "mlp"
    build_model("mlp", base)
    return base


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, pki: Pki, mlp: Path) -> Iterator[Secured]:
    """TLS (no client certificates), a token, limits, access log, Prometheus, batching."""
    tmp = tmp_path_factory.mktemp("secured")
    files = pki.write(tmp)
    (tmp / "ssl.txt").write_text(ssl_config_text(pki))
    (tmp / "token").write_text(TOKEN + "\n")
    (tmp / "monitoring.txt").write_text(
        f'prometheus_config: {{ enable: true, path: "{METRICS_PATH}" }}\n'
    )
    access_log = tmp / "access.log"
    flags = [
        "--model_name=mlp",
        f"--model_base_path={mlp}",
        "--enable_batching",
        f"--ssl_config_file={tmp / 'ssl.txt'}",
        f"--auth_token_file={tmp / 'token'}",
        f"--monitoring_config_file={tmp / 'monitoring.txt'}",
        f"--max_request_bytes={MAX_BYTES}",
        f"--max_request_rows={MAX_ROWS}",
        f"--access_log_file={access_log}",
    ]
    with start_server(flags) as server:
        yield Secured(server, pki, files, access_log)


# -- clients -------------------------------------------------------------------------------------


def secure_channel(target: str, pki: Pki, *, with_client_cert: bool = False) -> grpc.Channel:
    client = pki.client if with_client_cert else None
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.cert_pem.encode(),
        private_key=client.key_pem.encode() if client else None,
        certificate_chain=client.cert_pem.encode() if client else None,
    )
    return grpc.secure_channel(target, credentials)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def predict_request(rows: int) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mlp"
    x = np.arange(rows * 16, dtype=np.float32).reshape(rows, 16)
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    return request


def rest_context(pki: Pki, client_files: dict[str, Path] | None = None) -> ssl.SSLContext:
    """Trusts ``pki``'s CA; presents the client certificate in ``client_files`` if given."""
    context = ssl.create_default_context(cadata=pki.ca.cert_pem)
    if client_files is not None:
        context.load_cert_chain(client_files["client.pem"], client_files["client.key"])
    return context


def rest_call(
    url: str,
    context: ssl.SSLContext,
    *,
    body: Any = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a GET (no body) or POST; HTTP errors are answers too."""
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    if body is not None and not isinstance(body, bytes | Iterator):
        body = json.dumps(body).encode()
    request = urllib.request.Request(url, data=body, headers=all_headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT, context=context) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


def request_count(secured: Secured) -> float:
    """All :tensorflow:serving:request_count samples, read without a token (metrics are open)."""
    status, _, body = rest_call(secured.https_url + METRICS_PATH, rest_context(secured.pki))
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    # The parser names a counter's samples NAME_total; the family keeps TF Serving's name.
    return sum(s.value for s in families[":tensorflow:serving:request_count"].samples)


def access_lines(secured: Secured, *wanted: Callable[[dict], bool]) -> list[dict[str, Any]]:
    """Every access-log line, read again until each ``wanted`` predicate matches one (the log
    is written about once a second) or 15 s have passed."""
    deadline = time.monotonic() + 15
    while True:
        text = secured.access_log.read_text() if secured.access_log.exists() else ""
        lines = [json.loads(line) for line in text.splitlines()]
        found = all(any(want(line) for line in lines) for want in wanted)
        if found or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)


def only(lines: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """The one line with these field values."""
    (line,) = [line for line in lines if all(line[k] == v for k, v in fields.items())]
    return line


# -- TLS with the token --------------------------------------------------------------------------


def test_grpc_predict_over_tls_with_the_token(secured: Secured) -> None:
    with secured.channel() as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response, call = stub.Predict.with_call(
            predict_request(3), timeout=TIMEOUT, metadata=bearer(TOKEN)
        )
    assert tf.make_ndarray(response.outputs["y"]).shape == (3, 1)
    assert response.model_spec.version.value == 1
    assert "x-batch-size" in dict(call.trailing_metadata())


def test_rest_predict_over_https_with_the_token(secured: Secured) -> None:
    body = {"instances": [[0.5] * 16, [1.0] * 16]}
    status, headers, answer = rest_call(
        secured.https_url + "/v1/models/mlp:predict",
        rest_context(secured.pki),
        body=body,
        token=TOKEN,
    )
    assert status == 200, answer
    assert len(json.loads(answer)["predictions"]) == 2
    assert int(headers["x-batch-size"]) >= 2


def test_a_plaintext_grpc_client_gets_no_answer(secured: Secured) -> None:
    with grpc.insecure_channel(secured.server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(predict_request(1), timeout=10, metadata=bearer(TOKEN))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


# -- the token -----------------------------------------------------------------------------------


def test_every_grpc_call_without_the_right_token_is_refused_before_the_model(
    secured: Secured,
) -> None:
    before = request_count(secured)
    refused = []
    with secured.channel() as channel:
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict
        for metadata in ((), bearer("wrong-" + TOKEN), bearer(TOKEN[:-1])):
            for _ in range(REFUSED_CALLS):
                with pytest.raises(grpc.RpcError) as caught:
                    predict(predict_request(1), timeout=TIMEOUT, metadata=metadata)
                refused.append((caught.value.code(), caught.value.details()))
    assert len(refused) == 3 * REFUSED_CALLS
    assert {code for code, _ in refused} == {grpc.StatusCode.UNAUTHENTICATED}
    assert {details for _, details in refused} == {
        "Missing bearer token: this server requires the header 'authorization: Bearer <token>'",
        "Invalid bearer token",
    }
    assert request_count(secured) == before  # not one of them reached the model


def test_every_rest_call_without_the_right_token_is_refused_before_the_model(
    secured: Secured,
) -> None:
    before = request_count(secured)
    url = secured.https_url + "/v1/models/mlp:predict"
    body = {"instances": [[1.0] * 16]}
    context = rest_context(secured.pki)
    answers = [
        rest_call(url, context, body=body, token=token)
        for token in (None, "wrong", TOKEN + "x")
        for _ in range(REFUSED_CALLS)
    ]
    assert {status for status, _, _ in answers} == {401}
    assert {headers["WWW-Authenticate"] for _, headers, _ in answers} == {
        'Bearer realm="reference-server"'
    }
    errors = {json.loads(payload)["error"] for _, _, payload in answers}
    assert errors == {
        "Missing bearer token: this server requires the header 'authorization: Bearer <token>'",
        "Invalid bearer token",
    }
    assert request_count(secured) == before


def test_model_status_and_metadata_need_the_token_too(secured: Secured) -> None:
    context = rest_context(secured.pki)
    for path in ("/v1/models/mlp", "/v1/models/mlp/metadata"):
        assert rest_call(secured.https_url + path, context)[0] == 401
        assert rest_call(secured.https_url + path, context, token=TOKEN)[0] == 200
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "mlp"
    metadata_request = get_model_metadata_pb2.GetModelMetadataRequest(
        metadata_field=["signature_def"]
    )
    metadata_request.model_spec.name = "mlp"
    with secured.channel() as channel:
        calls = (
            (model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus, status_request),
            (
                prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata,
                metadata_request,
            ),
        )
        for method, request in calls:
            with pytest.raises(grpc.RpcError) as caught:
                method(request, timeout=TIMEOUT)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            method(request, timeout=TIMEOUT, metadata=bearer(TOKEN))


# -- limits --------------------------------------------------------------------------------------


def test_a_grpc_message_over_max_request_bytes_is_resource_exhausted(secured: Secured) -> None:
    request = predict_request(400)  # gRPC refuses it on its size, before anything reads it
    assert request.ByteSize() > MAX_BYTES
    with secured.channel() as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(request, timeout=TIMEOUT, metadata=bearer(TOKEN))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"vs. {MAX_BYTES}" in caught.value.details()


def test_a_grpc_request_over_max_request_rows_is_invalid_argument(secured: Secured) -> None:
    before = request_count(secured)
    with secured.channel() as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        stub.Predict(predict_request(MAX_ROWS), timeout=TIMEOUT, metadata=bearer(TOKEN))
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(predict_request(MAX_ROWS + 1), timeout=TIMEOUT, metadata=bearer(TOKEN))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == (
        f"Request has {MAX_ROWS + 1} rows, more than this server's limit of {MAX_ROWS} rows "
        "per request (--max_request_rows)"
    )
    assert request_count(secured) == before + 2  # counted like any invalid request


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_rest_body_over_max_request_bytes_is_400(secured: Secured, chunked: bool) -> None:
    body = json.dumps({"instances": [[1.0] * 16] * 2000}).encode()
    assert len(body) > MAX_BYTES
    sent: Any = iter([body[i : i + 4096] for i in range(0, len(body), 4096)]) if chunked else body
    status, _, answer = rest_call(
        secured.https_url + "/v1/models/mlp:predict",
        rest_context(secured.pki),
        body=sent,
        token=TOKEN,
        headers={"Content-Type": "application/json"},
    )
    assert status == 400
    error = json.loads(answer)["error"]
    assert "(--max_request_bytes)" in error
    assert (f"{len(body)} bytes" in error) != chunked  # the size is known only from the header


def test_a_rest_request_over_max_request_rows_is_400(secured: Secured) -> None:
    status, _, answer = rest_call(
        secured.https_url + "/v1/models/mlp:predict",
        rest_context(secured.pki),
        body={"instances": [[0.0] * 16] * (MAX_ROWS + 1)},
        token=TOKEN,
    )
    assert status == 400
    assert json.loads(answer)["error"] == (
        f"Request has {MAX_ROWS + 1} rows, more than this server's limit of {MAX_ROWS} rows "
        "per request (--max_request_rows)"
    )


# -- access log ----------------------------------------------------------------------------------


def test_the_access_log_has_one_json_line_per_call(secured: Secured) -> None:
    rows = 5  # no other test sends 5 rows: it marks this test's gRPC line
    ok_path, refused_path = "/v1/models/mlp/versions/1:predict", "/v1/models/mlp/labels/x:regress"
    with secured.channel() as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        stub.Predict(predict_request(rows), timeout=TIMEOUT, metadata=bearer(TOKEN))
        with pytest.raises(grpc.RpcError):
            stub.Predict(predict_request(1), timeout=TIMEOUT)
    context = rest_context(secured.pki)
    rest_call(secured.https_url + ok_path, context, body={"instances": [[1.0] * 16]}, token=TOKEN)
    rest_call(secured.https_url + refused_path, context, body={})
    lines = access_lines(
        secured,
        lambda line: line["rows"] == rows,
        lambda line: line["method"] == f"POST {ok_path}",
        lambda line: line["method"] == f"POST {refused_path}",
    )
    assert all(set(line) == ACCESS_FIELDS for line in lines)
    assert all(line["latency_us"] >= 0 and line["time"].endswith("Z") for line in lines)

    ok_grpc = only(lines, rows=rows)
    assert (ok_grpc["protocol"], ok_grpc["status"]) == ("grpc", "OK")
    assert ok_grpc["method"] == "/tensorflow.serving.PredictionService/Predict"
    assert (ok_grpc["model"], ok_grpc["version"]) == ("mlp", 1)
    assert ok_grpc["batch_size"] >= rows
    assert ok_grpc["peer"].startswith("ipv4:127.0.0.1:")
    # The same connection's refused call: logged, with nothing read from its request.
    refused_grpc = only(lines, peer=ok_grpc["peer"], status="UNAUTHENTICATED")
    assert (refused_grpc["model"], refused_grpc["batch_size"]) == ("", None)

    ok_rest = only(lines, method=f"POST {ok_path}")
    assert (ok_rest["protocol"], ok_rest["status"]) == ("rest", 200)
    assert (ok_rest["model"], ok_rest["version"], ok_rest["batch_size"]) == ("mlp", 1, 1)
    refused_rest = only(lines, method=f"POST {refused_path}")
    assert (refused_rest["status"], refused_rest["model"], refused_rest["version"]) == (
        401,
        "mlp",
        "x",
    )


# -- the Locust scenarios' --tls-ca and --token --------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["tfserving_grpc", "tfserving_rest"])
def test_the_scenarios_tls_ca_and_token_options_work(
    secured: Secured, scenario: str, tmp_path: Path
) -> None:
    port = secured.server.grpc_port if scenario == "tfserving_grpc" else secured.server.rest_port
    scheme = "grpcs" if scenario == "tfserving_grpc" else "https"
    result_file = tmp_path / "result.json"
    argv = [sys.executable, "-m", "locust", "-f", str(SCENARIOS / f"{scenario}.py"),
            "--headless", "--host", f"{scheme}://127.0.0.1:{port}", "--model-name", "mlp",
            "--tls-ca", str(secured.files["ca.pem"]), "--token", TOKEN,
            "-u", "2", "-r", "2", "-t", "3s", "--result-file", str(result_file)]  # fmt: skip
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=90)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    total = json.loads(result_file.read_text())["total"]
    assert total["error_count"] == 0, total["errors"]
    assert total["count"] > 0


# -- mutual TLS ----------------------------------------------------------------------------------


@dataclass
class Mutual:
    server: Any
    files: dict[str, Path]


@pytest.fixture(scope="module")
def mutual(tmp_path_factory: pytest.TempPathFactory, pki: Pki, mlp: Path) -> Iterator[Mutual]:
    """TLS with client_verify: every client must present a certificate signed by the CA."""
    tmp = tmp_path_factory.mktemp("mutual")
    files = pki.write(tmp)
    (tmp / "ssl.txt").write_text(ssl_config_text(pki, client_verify=True))
    flags = ["--model_name=mlp", f"--model_base_path={mlp}", f"--ssl_config_file={tmp / 'ssl.txt'}"]
    with start_server(flags) as server:
        yield Mutual(server, files)


def test_mutual_tls_serves_grpc_and_rest_to_a_client_with_a_certificate(
    mutual: Mutual, pki: Pki
) -> None:
    with secure_channel(mutual.server.grpc_target, pki, with_client_cert=True) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(predict_request(1), timeout=TIMEOUT)
    assert tf.make_ndarray(response.outputs["y"]).shape == (1, 1)
    status, _, _ = rest_call(
        f"https://127.0.0.1:{mutual.server.rest_port}/v1/models/mlp",
        rest_context(pki, mutual.files),
    )
    assert status == 200


def test_mutual_tls_refuses_grpc_without_a_trusted_client_certificate(
    mutual: Mutual, pki: Pki
) -> None:
    stranger = make_pki().client  # signed by a CA the server does not trust
    clients = [
        secure_channel(mutual.server.grpc_target, pki),  # no client certificate at all
        grpc.secure_channel(
            mutual.server.grpc_target,
            grpc.ssl_channel_credentials(
                root_certificates=pki.ca.cert_pem.encode(),
                private_key=stranger.key_pem.encode(),
                certificate_chain=stranger.cert_pem.encode(),
            ),
        ),
    ]
    for channel in clients:
        with channel, pytest.raises(grpc.RpcError) as caught:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            stub.Predict(predict_request(1), timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_refuses_rest_without_a_client_certificate(mutual: Mutual, pki: Pki) -> None:
    url = f"https://127.0.0.1:{mutual.server.rest_port}/v1/models/mlp"
    with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
        rest_call(url, rest_context(pki))
