"""The REST API of a real reference-server process, held to TF Serving's own expectations.

Expected bodies come from TF Serving's tensorflow_model_server_test.py and
http_rest_api_handler_test.cc; messages from http_rest_api_handler.cc and json_tensor.cc.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.servers.server_process import ServerProcess
from tests.conftest import shared_testdata as shared_data
from tests.conftest import start_server

pytestmark = pytest.mark.timeout(180)

HALF_PLUS_TWO = "saved_model_half_plus_two_cpu"


def call(url: str, body: object = None, method: str | None = None) -> tuple[int, object]:
    """(HTTP status, decoded JSON body); ``body`` is sent as JSON unless it is bytes."""
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method or ("GET" if data is None else "POST")
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.headers["Content-Type"] == "application/json"
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:  # an HTTPError holds the connection open until closed
            return error.code, json.loads(error.read())


def config_entry(name: str, base_path: Path, extra: str = "") -> str:
    return (
        f'config {{ name: "{name}" base_path: "{base_path}" model_platform: "tensorflow" '
        f"{extra} }}\n"
    )


def build_typed_model(base_path: Path) -> None:
    """A SavedModel with int32 and string inputs, and a ``_bytes`` string output."""
    import tensorflow as tf

    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        ids = tf.compat.v1.placeholder(tf.int32, [None], name="ids")
        text = tf.compat.v1.placeholder(tf.string, [None], name="text")
        outputs = {
            "doubled": tf.identity(ids * 2, name="doubled"),
            "text": tf.identity(text, name="text_out"),
            "text_bytes": tf.identity(text, name="text_bytes_out"),
        }
        signature = tf.compat.v1.saved_model.predict_signature_def(
            {"ids": ids, "text": text}, outputs
        )
        builder = tf.compat.v1.saved_model.Builder(str(base_path / "1"))
        builder.add_meta_graph_and_variables(
            session, ["serve"], signature_def_map={"serving_default": signature}
        )
        builder.save()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server with every model the tests need, from a --model_config_file."""
    half_plus_two = shared_data(HALF_PLUS_TWO)
    tmp = tmp_path_factory.mktemp("rest_models")
    broken = tmp / "broken"
    shutil.copytree(half_plus_two / "00000123", broken / "1")
    (broken / "2").mkdir()
    (broken / "2" / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    build_typed_model(tmp / "typed")
    labels = (
        'version_labels { key: "stable" value: 123 } version_labels { key: "canary" value: 124 }'
    )
    config = tmp / "models.config"
    config.write_text(
        "model_config_list {\n"
        + config_entry("half_plus_two", half_plus_two)
        + config_entry(
            "two_versions",
            shared_data("saved_model_half_plus_two_2_versions"),
            "model_version_policy { all {} } " + labels,
        )
        + config_entry("tf2", shared_data("saved_model_half_plus_two_tf2_cpu"))
        + config_entry("half_plus_three", shared_data("saved_model_half_plus_three"))
        + config_entry("broken", broken, "model_version_policy { all {} }")
        + config_entry("typed", tmp / "typed")
        + "}\n"
    )
    with start_server([f"--model_config_file={config}"]) as srv:
        yield srv


@pytest.fixture(scope="module")
def url(server: ServerProcess) -> str:
    return server.rest_url


# -- TF Serving's own expectations for half_plus_two ----------------------------------------------


def test_predict_row_format(url):
    assert call(f"{url}/v1/models/half_plus_two:predict", {"instances": [2.0, 3.0, 4.0]}) == (
        200,
        {"predictions": [3.0, 3.5, 4.0]},
    )


def test_predict_columnar_format(url):
    assert call(f"{url}/v1/models/half_plus_two:predict", {"inputs": [2.0, 3.0, 4.0]}) == (
        200,
        {"outputs": [3.0, 3.5, 4.0]},
    )


def test_predict_batches_of_rows_keep_their_shape(url):
    body = {"signature_name": "serving_default", "instances": [[1.0], [2.0]]}
    assert call(f"{url}/v1/models/half_plus_two:predict", body) == (
        200,
        {"predictions": [[2.5], [3.0]]},
    )


def test_classify(url):
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}
    assert call(f"{url}/v1/models/half_plus_two:classify", body) == (
        200,
        {"results": [[["", 3.0]]]},
    )


def test_regress(url):
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}, {"x": 80.0}]}
    assert call(f"{url}/v1/models/half_plus_two:regress", body) == (200, {"results": [3.0, 42.0]})


def test_model_status(url):
    assert call(f"{url}/v1/models/half_plus_two") == (
        200,
        {
            "model_version_status": [
                {
                    "version": "123",
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                }
            ]
        },
    )


def test_model_names_in_paths_are_percent_decoded(url):
    status, body = call(f"{url}/v1/models/half%5Fplus%5Ftwo")
    assert status == 200 and body["model_version_status"][0]["version"] == "123"


def test_model_metadata_is_tf_servings_document(url):
    expected = json.loads((shared_data("half_plus_two_model_metadata.json")).read_text())
    expected["model_spec"]["name"] = "half_plus_two"
    assert call(f"{url}/v1/models/half_plus_two/metadata") == (200, expected)


# -- versions and labels --------------------------------------------------------------------------


def test_versions_and_labels_address_one_version(url):
    base = f"{url}/v1/models/two_versions"
    for suffix in ("", "/versions/123", "/versions/124", "/labels/stable", "/labels/canary"):
        assert call(f"{base}{suffix}:predict", {"instances": [[1.0], [2.0]]}) == (
            200,
            {"predictions": [[2.5], [3.0]]},
        ), suffix
    for suffix, version in (("/versions/123", "123"), ("/labels/canary", "124")):
        status, body = call(f"{base}{suffix}")
        assert status == 200 and [s["version"] for s in body["model_version_status"]] == [version]
        status, body = call(f"{base}{suffix}/metadata")
        assert status == 200 and body["model_spec"]["version"] == version


def test_status_lists_every_version_newest_first(url):
    status, body = call(f"{url}/v1/models/two_versions")
    assert status == 200
    assert [(s["version"], s["state"]) for s in body["model_version_status"]] == [
        ("124", "AVAILABLE"),
        ("123", "AVAILABLE"),
    ]


def test_metadata_of_the_2_versions_model(url):
    expected = json.loads(
        shared_data("saved_model_half_plus_two_2_versions_metadata.json").read_text()
    )
    expected["model_spec"]["name"] = "two_versions"
    assert call(f"{url}/v1/models/two_versions/versions/123/metadata") == (200, expected)


def test_regress_and_classify_by_label(url):
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]}
    assert call(f"{url}/v1/models/two_versions/labels/stable:regress", body) == (
        200,
        {"results": [42.0]},
    )
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 10.0}]}
    assert call(f"{url}/v1/models/two_versions/versions/124:classify", body) == (
        200,
        {"results": [[["", 7.0]]]},
    )


# -- other models ---------------------------------------------------------------------------------


def test_tf2_model(url):
    # Its serving_default declares x as [1]; TF Serving feeds whatever shape arrives.
    predict = f"{url}/v1/models/tf2:predict"
    assert call(predict, {"instances": [2.0]}) == (200, {"predictions": [3.0]})
    assert call(predict, {"instances": [2.0, 3.0, 4.0]}) == (200, {"predictions": [3.0, 3.5, 4.0]})
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}
    assert call(f"{url}/v1/models/tf2:classify", body) == (200, {"results": [[["", 3.0]]]})
    status, metadata = call(f"{url}/v1/models/tf2/metadata")
    assert status == 200
    assert "__saved_model_init_op" in metadata["metadata"]["signature_def"]["signature_def"]


def test_half_plus_three(url):
    assert call(f"{url}/v1/models/half_plus_three:predict", {"instances": [2.0]}) == (
        200,
        {"predictions": [4.0]},
    )


def test_named_inputs_b64_and_bytes_outputs(url):
    body = {"instances": [{"ids": 1, "text": {"b64": "aGVsbG8="}}, {"ids": 5, "text": "tf"}]}
    assert call(f"{url}/v1/models/typed:predict", body) == (
        200,
        {
            "predictions": [
                {"doubled": 2, "text": "hello", "text_bytes": {"b64": "aGVsbG8="}},
                {"doubled": 10, "text": "tf", "text_bytes": {"b64": "dGY="}},
            ]
        },
    )
    body = {"inputs": {"ids": [3], "text": ["x"]}}
    assert call(f"{url}/v1/models/typed:predict", body) == (
        200,
        {"outputs": {"doubled": [6], "text": ["x"], "text_bytes": [{"b64": "eA=="}]}},
    )


def test_status_of_a_version_that_failed_to_load(url):
    status, body = call(f"{url}/v1/models/broken")
    assert status == 200
    newest, oldest = body["model_version_status"]
    assert (newest["version"], newest["state"]) == ("2", "END")
    assert newest["status"]["error_code"] != "OK" and newest["status"]["error_message"]
    assert oldest == {
        "version": "1",
        "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""},
    }
    assert call(f"{url}/v1/models/broken:predict", {"instances": [[2.0]]}) == (
        200,
        {"predictions": [[3.0]]},
    )


# -- bad requests ---------------------------------------------------------------------------------

PREDICT = "/v1/models/half_plus_two:predict"


def element_error(index: int, message: str) -> str:
    return (
        f"Failed to process element: {index} of 'instances' list. "
        f"Error: INVALID_ARGUMENT: {message}"
    )


BAD_PREDICTS = [
    (PREDICT, b"", 400, "JSON Parse error: The document is empty"),
    (PREDICT, b"instances = [1, 2]", 400, "JSON Parse error: Invalid value. at offset: 0"),
    (
        PREDICT,
        {"instances": ["x", "y"]},
        400,
        element_error(0, 'JSON Value: "x" Type: String is not of expected type: float'),
    ),
    (
        PREDICT,
        {"instances": [1.0], "inputs": [1.0]},
        400,
        'JSON Value: {\n    "instances": [\n        1.0\n    ],\n    "inputs": [\n        1.0\n'
        "    ]\n} Not formatted correctly expecting only one of 'inputs' or 'instances' keys to "
        "exist ",
    ),
    (PREDICT, {"signature_name": "serving_default"}, 400, "Missing 'inputs' or 'instances' key"),
    (
        PREDICT,
        {"instances": []},
        400,
        "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array",
    ),
    (
        PREDICT,
        {"instances": [[1.0], [2.0, 3.0]]},
        400,
        element_error(1, "Expecting tensor size: 1 but got: 2"),
    ),
    (
        PREDICT,
        {"instances": [1.0, [2.0]]},
        400,
        element_error(1, "Expecting shape [] but got: [1]"),
    ),
    (
        PREDICT,
        {"instances": [{"z": 1.0}]},
        400,
        "Failed to process element: 0 key: z of 'instances' list. Error: INVALID_ARGUMENT: "
        "JSON object: does not have named input: z",
    ),
    (PREDICT, {"inputs": {"z": [1.0]}}, 400, "Missing named input: x in 'inputs' object."),
    (
        PREDICT,
        {"signature_name": "nope", "instances": [1.0]},
        400,
        'Serving signature name: "nope" not found in signature def',
    ),
    (
        PREDICT,
        {"signature_name": 7, "instances": [1.0]},
        400,
        'JSON Value: {\n    "signature_name": 7,\n    "instances": [\n        1.0\n    ]\n} '
        "not formatted correctly. 'signature_name' key must be a string value.",
    ),
    (
        "/v1/models/typed:predict",
        {"instances": [{"ids": 1.5, "text": "a"}]},
        400,
        "Failed to process element: 0 key: ids of 'instances' list. Error: INVALID_ARGUMENT: "
        "JSON Value: 1.5 Type: Number is not of expected type: int32",
    ),
    (
        "/v1/models/typed:predict",
        {"instances": [{"ids": 1, "text": "a"}, {"ids": 2}]},
        400,
        "Failed to process element: 1 of 'instances' list. JSON object: {\n    \"ids\": 2\n} "
        "must only have keys: ids,text",
    ),
    (
        "/v1/models/nope:predict",
        {"instances": [1.0]},
        404,
        "Servable not found for request: Latest(nope)",
    ),
    (
        "/v1/models/half_plus_two/versions/99:predict",
        {"instances": [1.0]},
        404,
        "Servable not found for request: Specific(half_plus_two, 99)",
    ),
    (
        "/v1/models/two_versions/labels/nope:predict",
        {"instances": [1.0]},
        400,
        "Unrecognized servable version label: nope",
    ),
    (
        "/v1/models/half_plus_two:regress",
        {"signature_name": "regress_x_to_y"},
        400,
        'JSON Value: {\n    "signature_name": "regress_x_to_y"\n} When method is classify, key '
        "'examples' is expected and was not found",
    ),
    (
        "/v1/models/half_plus_two:classify",
        {"examples": [{"x": [1, 1.5]}]},
        400,
        "Unexpected element type in feature: x expecting type: int64",
    ),
    # Found by tests/fuzz: 500 "maximum supported dimension for an ndarray is currently 64".
    (
        "/v1/models/half_plus_two:predict",
        ('{"instances": [' + "[" * 101 + "1.0" + "]" * 101 + "]}").encode(),
        400,
        "tensor parsing error: x",
    ),
    # Found by tests/fuzz: 500 "maximum recursion depth exceeded" writing this message.
    (
        "/v1/models/half_plus_two:predict",
        ('{"instances": [1.0], "signature_name": ' + "[" * 900 + "]" * 900 + "}").encode(),
        400,
        'JSON Value: {\n    "instances": [\n        1.0\n    ],\n    "signature_name": '
        + "".join("[\n" + " " * 4 * (depth + 2) for depth in range(899))
        + "[]"
        + "".join("\n" + " " * 4 * (depth + 1) + "]" for depth in reversed(range(899)))
        + "\n} not formatted correctly. 'signature_name' key must be a string value.",
    ),
]


@pytest.mark.parametrize(("path", "body", "status", "message"), BAD_PREDICTS)
def test_bad_requests_get_tf_servings_code_and_message(url, path, body, status, message):
    assert call(url + path, body) == (status, {"error": message})


BAD_URLS = [
    # Found by tests/fuzz: aiohttp's own text/plain 404 answered a path with an encoded newline.
    ("GET", "/v1/models/%0A", 404, "Could not find any versions of model \n"),
    ("GET", "/v1/%0A", 400, "Malformed request: GET /v1/%0A"),
    ("GET", "/v1/foo", 400, "Malformed request: GET /v1/foo"),
    ("POST", "/v1/foo", 400, "Malformed request: POST /v1/foo"),
    ("GET", "/v1/models", 400, "Missing model name in request."),
    ("POST", "/v1/models", 400, "Malformed request: POST /v1/models"),
    (
        "GET",
        "/v1/models/half_plus_two:predict",
        400,
        "Malformed request: GET /v1/models/half_plus_two:predict",
    ),
    (
        "POST",
        "/v1/models/half_plus_two/version/1:predict",
        400,
        "Malformed request: POST /v1/models/half_plus_two/version/1:predict",
    ),
    (
        "POST",
        "/v1/models/half_plus_two/versions/HELLO:regress",
        400,
        "Malformed request: POST /v1/models/half_plus_two/versions/HELLO:regress",
    ),
    (
        "POST",
        "/v1/models/half_plus_two/versions/18446744073709551615:regress",
        400,
        "Failed to convert version: 18446744073709551615 to numeric.",
    ),
    (
        "POST",
        "/v1/models/half_plus_two/metadata",
        400,
        "Malformed request: POST /v1/models/half_plus_two/metadata",
    ),
    ("PUT", "/v1/models/half_plus_two", 400, "Malformed request: PUT /v1/models/half_plus_two"),
    ("GET", "/v1/models/nope", 404, "Could not find any versions of model nope"),
    ("GET", "/v1/models/nope/metadata", 404, "Servable not found for request: Latest(nope)"),
]


@pytest.mark.parametrize(("method", "path", "status", "message"), BAD_URLS)
def test_bad_urls_and_methods(url, method, path, status, message):
    body = b"{}" if method in ("POST", "PUT") else None
    assert call(url + path, body, method=method) == (status, {"error": message})


def test_paths_outside_v1_are_not_the_apis(url):
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{url}/v2/models/half_plus_two", timeout=30)
    with caught.value:
        assert caught.value.code == 404


def test_the_server_still_serves_after_the_bad_requests(url):
    assert call(f"{url}{PREDICT}", {"instances": [[2.0]]}) == (200, {"predictions": [[3.0]]})


# -- --rest_api_timeout_in_ms ---------------------------------------------------------------------


def test_a_request_queued_past_the_rest_timeout_is_resource_exhausted(tmp_path):
    # The batch waits 5 s for company; the request's deadline passes after 300 ms, in the queue.
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 64 }\nbatch_timeout_micros { value: 5000000 }\n")
    flags = [
        "--model_name=half_plus_two",
        f"--model_base_path={shared_data(HALF_PLUS_TWO)}",
        "--enable_batching",
        f"--batching_parameters_file={batching}",
        "--rest_api_timeout_in_ms=300",
    ]
    with start_server(flags) as srv:
        assert call(f"{srv.rest_url}{PREDICT}", {"instances": [[2.0]]}) == (
            429,
            {"error": "Run() timeout exceeded while waiting in batching queue"},
        )
        assert call(f"{srv.rest_url}/v1/models/half_plus_two")[0] == 200
