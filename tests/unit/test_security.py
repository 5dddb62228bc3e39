"""The pure parts of the server's security: token check, limits, TLS config checks, new flags,
and the access log's lines and buffering."""

from __future__ import annotations

import io
import json

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import (
    inference_pb2,
    input_pb2,
    model_pb2,
    predict_pb2,
)

from reference_server import access_log
from reference_server.access_log import AccessEntry, AccessLog
from reference_server.batching import BatchStats
from reference_server.config_files import ConfigError
from reference_server.flags import FlagError, parse_flags, usage
from reference_server.grpc_api import grpc_server_options
from reference_server.inference import RequestRecord
from reference_server.security import (
    MISSING_TOKEN,
    WRONG_TOKEN,
    BearerAuth,
    RequestLimits,
    ServerSecurity,
    example_count,
    input_rows,
    load_tls,
    load_token,
)
from tests.certificates import make_pki, ssl_config_text

TOKEN = "s3cr3t-Token_value"


@pytest.fixture(scope="module")
def pki():
    return make_pki()


# -- bearer token --------------------------------------------------------------------------------


def test_the_right_token_passes_in_any_scheme_case():
    auth = BearerAuth(TOKEN)
    assert auth.refusal(f"Bearer {TOKEN}") is None
    assert auth.refusal(f"bearer {TOKEN}") is None  # RFC 6750: the scheme is case-insensitive
    assert auth.refusal(f"  Bearer   {TOKEN} ") is None


@pytest.mark.parametrize("header", [None, "", "Basic dXNlcjpwdw==", TOKEN, "Bearer"])
def test_a_missing_token_is_unauthenticated(header):
    refusal = BearerAuth(TOKEN).refusal(header)
    assert refusal.code == grpc.StatusCode.UNAUTHENTICATED
    assert refusal.http_status == 401
    assert refusal.message == MISSING_TOKEN


@pytest.mark.parametrize(
    "sent", [TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "x" * len(TOKEN), "Bearer " + TOKEN]
)
def test_a_wrong_token_is_unauthenticated(sent):
    refusal = BearerAuth(TOKEN).refusal(f"Bearer {sent}")
    assert (refusal.code, refusal.message) == (grpc.StatusCode.UNAUTHENTICATED, WRONG_TOKEN)


def test_a_non_ascii_token_is_compared_as_bytes():
    assert BearerAuth("jeton-été").refusal("Bearer jeton-été") is None
    assert BearerAuth("jeton-été").refusal("Bearer jeton-ete").message == WRONG_TOKEN


def test_the_token_file_is_stripped(tmp_path):
    path = tmp_path / "token"
    path.write_text(f"\n  {TOKEN}\n")
    assert load_token(path) == TOKEN


@pytest.mark.parametrize(
    ("text", "detail"),
    [("  \n", "the file is empty"), ("two words", "one word")],
)
def test_an_unusable_token_file_names_the_flag(tmp_path, text, detail):
    path = tmp_path / "token"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"^--auth_token_file={path}: .*{detail}"):
        load_token(path)


def test_a_missing_token_file_names_the_flag(tmp_path):
    with pytest.raises(ConfigError, match=r"--auth_token_file=.*: cannot read file"):
        load_token(tmp_path / "absent")


# -- limits ---------------------------------------------------------------------------------------


def test_zero_limits_accept_anything():
    limits = RequestLimits()
    limits.check_rows(10**9)
    limits.check_body_size(2**40)
    limits.check_body_size(None)


def test_rows_over_the_limit_are_invalid_argument():
    limits = RequestLimits(max_rows=8)
    limits.check_rows(8)
    with pytest.raises(Exception) as caught:
        limits.check_rows(9)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.message == (
        "Request has 9 rows, more than this server's limit of 8 rows per request "
        "(--max_request_rows)"
    )


def test_a_body_over_the_limit_is_invalid_argument():
    limits = RequestLimits(max_bytes=100)
    limits.check_body_size(100)
    limits.check_body_size(None)  # not known yet: checked while reading
    with pytest.raises(Exception) as caught:
        limits.check_body_size(101)
    assert caught.value.http_status == 400
    assert "101 bytes" in caught.value.message and "(--max_request_bytes)" in caught.value.message
    assert "100 bytes" in limits.body_too_large().message


def test_input_rows_is_the_largest_first_dimension():
    assert input_rows({"a": np.zeros((3, 4)), "b": np.zeros((7,))}) == 7
    assert input_rows({"a": np.float32(1)}) == 1
    assert input_rows({}) == 0


def test_example_count_reads_both_input_kinds():
    plain = input_pb2.Input()
    plain.example_list.examples.add()
    plain.example_list.examples.add()
    with_context = input_pb2.Input()
    for _ in range(3):
        with_context.example_list_with_context.examples.add()
    assert (example_count(plain), example_count(with_context)) == (2, 3)
    assert example_count(input_pb2.Input()) == 0


def test_max_request_bytes_becomes_grpcs_receive_limit():
    options = dict(grpc_server_options("", 1000))
    assert options["grpc.max_receive_message_length"] == 1000
    assert options["grpc.max_send_message_length"] == -1
    assert dict(grpc_server_options("", 0))["grpc.max_receive_message_length"] == -1
    assert dict(grpc_server_options("", 2**40))["grpc.max_receive_message_length"] == -1
    explicit = dict(grpc_server_options("grpc.max_receive_message_length=50", 1000))
    assert explicit["grpc.max_receive_message_length"] == 50


# -- flags ----------------------------------------------------------------------------------------


def test_security_flags_parse():
    flags = parse_flags(
        [
            "--model_base_path=/m",
            "--auth_token_file=/t",
            "--max_request_bytes=1048576",
            "--max_request_rows=64",
            "--access_log_file=-",
        ]
    )
    assert (flags.auth_token_file, flags.max_request_bytes, flags.max_request_rows) == (
        "/t",
        1048576,
        64,
    )
    assert flags.access_log_file == "-"
    defaults = parse_flags(["--model_base_path=/m"])
    assert (defaults.max_request_bytes, defaults.max_request_rows) == (0, 0)
    assert (defaults.auth_token_file, defaults.access_log_file) == ("", "")


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("--max_request_bytes=1MB", "Couldn't interpret value 1MB for flag max_request_bytes"),
        ("--max_request_row=5", "did you mean --max_request_rows?"),
        ("--auth_token_file", "flags take their value after '='"),
    ],
)
def test_bad_security_flags_are_refused_with_the_flag_named(arg, message):
    with pytest.raises(FlagError) as caught:
        parse_flags(["--model_base_path=/m", arg])
    assert message in str(caught.value)


def test_negative_limits_mean_no_limit_as_tf_servings_timeouts():
    flags = parse_flags(["--model_base_path=/m", "--max_request_rows=-5", "--max_request_bytes=-1"])
    security = ServerSecurity.from_flags(flags)
    assert security.limits == RequestLimits()
    assert (security.tls, security.auth) == (None, None)


def test_usage_lists_the_security_flags():
    text = usage()
    for name in ("auth_token_file", "max_request_bytes", "max_request_rows", "access_log_file"):
        assert f"\t--{name}=" in text


# -- TLS config -----------------------------------------------------------------------------------


def write_ssl_config(tmp_path, text: str):
    path = tmp_path / "ssl.txt"
    path.write_text(text)
    return path


def test_an_ssl_config_loads_with_client_verification(tmp_path, pki):
    path = write_ssl_config(tmp_path, ssl_config_text(pki, client_verify=True))
    tls = load_tls(path)
    assert tls.client_verify
    context = tls.rest_context()
    assert context.verify_mode.name == "CERT_REQUIRED"
    assert tls.grpc_credentials() is not None


def test_client_verify_needs_custom_ca(tmp_path, pki):
    text = ssl_config_text(pki, client_verify=True).replace("custom_ca:", "# custom_ca:")
    with pytest.raises(ConfigError, match=r"client_verify: true needs custom_ca"):
        load_tls(write_ssl_config(tmp_path, text))


def test_an_empty_server_cert_is_refused(tmp_path, pki):
    text = ssl_config_text(pki).replace("server_cert:", "# server_cert:")
    with pytest.raises(ConfigError, match=r"^--ssl_config_file=.*: server_cert is empty"):
        load_tls(write_ssl_config(tmp_path, text))


def test_a_key_that_does_not_match_the_certificate_is_refused(tmp_path, pki):
    text = ssl_config_text(pki).replace(
        json.dumps(pki.server.key_pem)[1:-1], json.dumps(pki.client.key_pem)[1:-1]
    )
    with pytest.raises(ConfigError, match=r"unusable key, certificate or custom_ca"):
        load_tls(write_ssl_config(tmp_path, text))


def test_a_misspelt_ssl_field_is_a_parse_error_with_its_line(tmp_path):
    with pytest.raises(ConfigError, match=r'line 1:1: .*has no field named "server_keys"'):
        load_tls(write_ssl_config(tmp_path, 'server_keys: "x"\n'))


# -- access log -----------------------------------------------------------------------------------


def test_an_entry_is_one_json_line_with_every_field():
    entry = AccessEntry(peer="ipv4:127.0.0.1:5000", protocol="grpc", method="/x.Y/Predict")
    entry.model, entry.version, entry.batch_size, entry.rows = "mlp", 3, 8, 2
    entry.wall_time, entry.started = 1_700_000_000.25, 10.0
    line = entry.line("OK", 10.0015)
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2023-11-14T22:13:20.250000Z",
        "peer": "ipv4:127.0.0.1:5000",
        "protocol": "grpc",
        "method": "/x.Y/Predict",
        "model": "mlp",
        "version": 3,
        "status": "OK",
        "latency_us": 1500,
        "batch_size": 8,
        "rows": 2,
    }


def test_grpc_requests_name_model_and_version_or_label():
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "mlp"
    assert access_log.grpc_requested(request) == ("mlp", None)
    request.model_spec.version.value = 2
    assert access_log.grpc_requested(request) == ("mlp", 2)
    request.model_spec.version_label = "stable"
    assert access_log.grpc_requested(request) == ("mlp", "stable")
    multi = inference_pb2.MultiInferenceRequest()
    multi.tasks.add().model_spec.name = "m2"
    assert access_log.grpc_requested(multi) == ("m2", None)
    assert access_log.grpc_requested(b"unparsed") == ("", None)


def test_grpc_answers_name_the_version_that_served():
    response = predict_pb2.PredictResponse()
    assert access_log.grpc_answered_version(response) is None
    response.model_spec.version.value = 7
    assert access_log.grpc_answered_version(response) == 7
    multi = inference_pb2.MultiInferenceResponse()
    multi.results.add().model_spec.CopyFrom(model_pb2.ModelSpec(name="m"))
    multi.results[0].model_spec.version.value = 4
    assert access_log.grpc_answered_version(multi) == 4


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/models/mlp:predict", ("mlp", None)),
        ("/v1/models/mlp/versions/12:predict", ("mlp", 12)),
        ("/v1/models/my%20model/labels/canary/metadata", ("my model", "canary")),
        ("/monitoring/prometheus/metrics", ("", None)),
    ],
)
def test_rest_paths_name_model_and_version(path, expected):
    assert access_log.rest_requested(path) == expected


def test_lines_wait_in_memory_until_flushed_and_close_flushes():
    stream = io.StringIO()
    log = AccessLog(stream)
    log.record(AccessEntry("p", "rest", "GET /"), 200)
    log.record(AccessEntry("p", "rest", "GET /"), 401)
    assert stream.getvalue() == ""  # no write per request
    log.close()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["status"] for line in lines] == [200, 401]


def test_a_full_buffer_is_written_without_waiting_for_the_timer():
    stream = io.StringIO()
    log = AccessLog(stream)
    entry = AccessEntry("p", "rest", "POST /" + "x" * 1000)
    for _ in range(access_log.FLUSH_BYTES // 1000 + 1):
        log.record(entry, 200)
    written = stream.getvalue()
    assert len(written) >= access_log.FLUSH_BYTES
    assert written.endswith("\n")  # whole lines only


def test_a_disabled_log_hooks_nothing():
    log = AccessLog.disabled()
    assert not log.enabled
    assert (log.grpc_interceptors(), log.rest_middlewares()) == ([], [])
    log.record(AccessEntry("p", "rest", "GET /"), 200)
    log.close()


def test_the_observer_fills_the_current_calls_batch():
    log = AccessLog(io.StringIO())
    entry = AccessEntry("p", "grpc", "/x.Y/Predict")
    stats = BatchStats(
        batch_size=8, padding_rows=1, task_rows=3, queue_seconds=0, compute_seconds=0
    )
    token = access_log.CURRENT.set(entry)
    try:
        log.observe_request(RequestRecord("mlp", "Predict", "OK", 0.001, stats))
    finally:
        access_log.CURRENT.reset(token)
    assert (entry.model, entry.batch_size, entry.rows) == ("mlp", 8, 3)
    log.observe_request(RequestRecord("other", "Predict", "OK", 0.001, stats))  # no current call
    assert entry.model == "mlp"


def test_an_unopenable_log_file_names_the_flag(tmp_path):
    with pytest.raises(ConfigError, match=r"^--access_log_file=.*: cannot open for appending"):
        AccessLog.open(str(tmp_path / "no" / "such" / "dir" / "log"))
