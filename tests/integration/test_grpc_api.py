"""The gRPC API of a real reference-server process, spoken to like TF Serving, with its test models.

Expected values and messages are TF Serving's: half_plus_two computes y = 0.5·x + 2,
y2 = 0.5·x + 3 and y3 = 0.5·x2 + 3 (saved_model_half_plus_two.py); half_plus_three y = 0.5·x + 3.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from reference_server.errors import ServingError
from reference_server.grpc_api import ModelServicer, parse_channel_arguments, status_message
from tests.conftest import shared_testdata as tfserving_path
from tests.conftest import start_server

UNLIMITED = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
TIMEOUT = 30.0
AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE

MODEL_CONFIG = """
model_config_list {{
  config {{ name: "half_plus_two" base_path: "{two}" model_platform: "tensorflow" }}
  config {{
    name: "versions" base_path: "{versions}" model_platform: "tensorflow"
    model_version_policy {{ all {{}} }}
    version_labels {{ key: "stable" value: 123 }}
    version_labels {{ key: "canary" value: 124 }}
  }}
  config {{ name: "half_plus_three" base_path: "{three}" model_platform: "tensorflow" }}
}}
"""


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server: half_plus_two (TF1, 5 signatures), 2 labelled versions, half_plus_three."""
    config = tmp_path_factory.mktemp("grpc_api") / "models.config"
    config.write_text(
        MODEL_CONFIG.format(
            two=tfserving_path("saved_model_half_plus_two_cpu"),
            versions=tfserving_path("saved_model_half_plus_two_2_versions"),
            three=tfserving_path("saved_model_half_plus_three"),
        )
    )
    with start_server([f"--model_config_file={config}"], rest=False) as srv:
        yield srv.grpc_target


@pytest.fixture(scope="module")
def channel(server: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server, options=UNLIMITED) as chan:
        yield chan


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel: grpc.Channel) -> model_service_pb2_grpc.ModelServiceStub:
    return model_service_pb2_grpc.ModelServiceStub(channel)


# -- request builders ------------------------------------------------------------------------------


def model_spec(name: str = "half_plus_two", **fields) -> model_pb2.ModelSpec:
    version = fields.pop("version", None)
    spec = model_pb2.ModelSpec(name=name, **fields)
    if version is not None:
        spec.version.value = version
    return spec


def float_tensor(values, shape) -> tensor_pb2.TensorProto:
    """A float TensorProto in float_val, as hand-written clients send it."""
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=values)
    for size in shape:
        proto.tensor_shape.dim.add().size = size
    return proto


def predict_request(x=None, spec=None, **fields) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest(model_spec=spec or model_spec(), **fields)
    x = float_tensor([2.0, 3.0, 4.0], [3, 1]) if x is None else x
    request.inputs["x"].CopyFrom(x)
    return request


def example(**features: float) -> example_pb2.Example:
    return example_pb2.Example(
        features=feature_pb2.Features(
            feature={
                k: feature_pb2.Feature(float_list=feature_pb2.FloatList(value=[v]))
                for k, v in features.items()
            }
        )
    )


def example_list(*xs: float) -> input_pb2.Input:
    return input_pb2.Input(example_list=input_pb2.ExampleList(examples=[example(x=x) for x in xs]))


def output(response: predict_pb2.PredictResponse, alias: str) -> np.ndarray:
    return tf.make_ndarray(response.outputs[alias])


def assert_rpc_error(call, code: grpc.StatusCode, message: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == code, caught.value.details()
    assert message in caught.value.details()


# -- Predict -------------------------------------------------------------------------------------


def test_predict_half_plus_two_with_float_val(stub) -> None:
    response = stub.Predict(predict_request(), TIMEOUT)
    y = response.outputs["y"]
    # TF Serving answers in typed fields (Tensor::AsProtoField), shape [3,1].
    assert y.dtype == types_pb2.DT_FLOAT and not y.tensor_content
    assert list(y.float_val) == [3.0, 3.5, 4.0]
    assert [d.size for d in y.tensor_shape.dim] == [3, 1]
    assert response.model_spec == model_spec(version=123, signature_name="serving_default")


def test_predict_with_tensor_content_from_make_tensor_proto(stub) -> None:
    x = tf.make_tensor_proto(np.array([[2.0], [3.0], [4.0]], np.float32))
    assert x.tensor_content  # the fast path clients use for numpy arrays
    response = stub.Predict(predict_request(x), TIMEOUT)
    np.testing.assert_array_equal(output(response, "y"), [[3.0], [3.5], [4.0]])


def test_a_single_value_fills_the_whole_input_shape(stub) -> None:
    response = stub.Predict(predict_request(float_tensor([2.0], [3, 1])), TIMEOUT)
    np.testing.assert_array_equal(output(response, "y"), [[3.0], [3.0], [3.0]])


def test_predict_half_plus_three_tf1_model(stub) -> None:
    # Its signature gives no shapes at all (unknown, not scalars); the graph's x is [?, 1].
    request = predict_request(float_tensor([1.0, 2.0], [2, 1]), model_spec("half_plus_three"))
    response = stub.Predict(request, TIMEOUT)
    np.testing.assert_array_equal(output(response, "y"), [[3.5], [4.0]])
    assert response.model_spec.name == "half_plus_three"


def test_output_filter_selects_outputs(stub) -> None:
    response = stub.Predict(predict_request(output_filter=["y"]), TIMEOUT)
    assert list(response.outputs) == ["y"]


def test_output_filter_errors(stub) -> None:
    assert_rpc_error(
        lambda: stub.Predict(predict_request(output_filter=["z"]), TIMEOUT),
        grpc.StatusCode.INVALID_ARGUMENT,
        "output tensor alias not found in signature: z Outputs expected to be in the set {y}.",
    )
    assert_rpc_error(
        lambda: stub.Predict(predict_request(output_filter=["y", "y"]), TIMEOUT),
        grpc.StatusCode.INVALID_ARGUMENT,
        "duplicate output tensor alias: y",
    )


@pytest.mark.parametrize(
    ("spec_fields", "version"),
    [
        ({}, 124),  # latest
        ({"version": 123}, 123),
        ({"version": 124}, 124),
        ({"version_label": "stable"}, 123),
        ({"version_label": "canary"}, 124),
    ],
)
def test_version_and_label_select_the_servable(stub, spec_fields, version) -> None:
    response = stub.Predict(predict_request(spec=model_spec("versions", **spec_fields)), TIMEOUT)
    assert response.model_spec == model_spec(
        "versions", version=version, signature_name="serving_default"
    )
    np.testing.assert_array_equal(output(response, "y"), [[3.0], [3.5], [4.0]])


def test_signature_name_selects_the_signature(stub) -> None:
    """As TF Serving's own predict test: regress_x2_to_y3 through Predict, y3 = 0.5·x2 + 3."""
    request = predict_pb2.PredictRequest(model_spec=model_spec(signature_name="regress_x2_to_y3"))
    request.inputs["inputs"].CopyFrom(float_tensor([2.0], [1, 1]))
    response = stub.Predict(request, TIMEOUT)
    np.testing.assert_array_equal(output(response, "outputs"), [[4.0]])
    assert response.model_spec == model_spec(version=123, signature_name="regress_x2_to_y3")


def test_concurrent_predicts_each_get_their_own_answer(stub) -> None:
    def call(i: int) -> np.ndarray:
        x = float_tensor([float(i), float(i + 1)], [2, 1])
        return output(stub.Predict(predict_request(x), TIMEOUT), "y")

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(call, range(100)))
    for i, y in enumerate(results):
        np.testing.assert_array_equal(y, [[0.5 * i + 2], [0.5 * (i + 1) + 2]])


def test_a_64_mb_request_and_response_are_accepted(stub) -> None:
    x = np.full((16 * 1024 * 1024, 1), 2.0, np.float32)  # 64 MiB, far above gRPC's 4 MiB default
    response = stub.Predict(predict_request(tf.make_tensor_proto(x)), 120.0)
    y = output(response, "y")
    assert y.shape == x.shape
    assert np.all(y == 3.0)


# -- Classify / Regress / MultiInference -----------------------------------------------------------


def test_classify_with_example_list(stub) -> None:
    request = classification_pb2.ClassificationRequest(
        model_spec=model_spec(signature_name="classify_x_to_y"), input=example_list(1.0, 2.0)
    )
    response = stub.Classify(request, TIMEOUT)
    scores = [[c.score for c in item.classes] for item in response.result.classifications]
    assert scores == [[2.5], [3.0]]
    assert response.model_spec == model_spec(version=123, signature_name="classify_x_to_y")


def test_classify_with_context_merges_context_features(stub) -> None:
    with_context = input_pb2.ExampleListWithContext(
        context=example(x=10.0), examples=[example_pb2.Example(), example(x=4.0)]
    )
    request = classification_pb2.ClassificationRequest(
        model_spec=model_spec(signature_name="classify_x_to_y"),
        input=input_pb2.Input(example_list_with_context=with_context),
    )
    response = stub.Classify(request, TIMEOUT)
    scores = [item.classes[0].score for item in response.result.classifications]
    assert scores == [7.0, 4.0]  # the context's x, then the example's own x


@pytest.mark.parametrize(
    ("signature", "expected"),
    [("regress_x_to_y", [2.5, 3.0]), ("regress_x_to_y2", [3.5, 4.0])],
)
def test_regress(stub, signature: str, expected: list[float]) -> None:
    request = regression_pb2.RegressionRequest(
        model_spec=model_spec(signature_name=signature), input=example_list(1.0, 2.0)
    )
    response = stub.Regress(request, TIMEOUT)
    assert [r.value for r in response.result.regressions] == expected
    assert response.model_spec == model_spec(version=123, signature_name=signature)


def test_regress_x2_to_y3_takes_a_float_tensor_not_examples(stub) -> None:
    """Its input is the float tensor x2, so serialized examples cannot be fed to it."""
    request = regression_pb2.RegressionRequest(
        model_spec=model_spec(signature_name="regress_x2_to_y3"), input=example_list(1.0)
    )
    assert_rpc_error(
        lambda: stub.Regress(request, TIMEOUT),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Expects arg[0] to be float but string is provided",  # TF's call-frame check
    )


def test_multi_inference_classify_and_regress(stub) -> None:
    request = inference_pb2.MultiInferenceRequest(input=example_list(1.0, 3.0))
    for signature, method in (
        ("classify_x_to_y", "tensorflow/serving/classify"),
        ("regress_x_to_y2", "tensorflow/serving/regress"),
    ):
        request.tasks.add(model_spec=model_spec(signature_name=signature), method_name=method)
    response = stub.MultiInference(request, TIMEOUT)
    classify, regress = response.results
    assert [c.classes[0].score for c in classify.classification_result.classifications] == [
        2.5,
        3.5,
    ]
    assert [r.value for r in regress.regression_result.regressions] == [3.5, 4.5]
    assert classify.model_spec == model_spec(version=123, signature_name="classify_x_to_y")
    assert regress.model_spec == model_spec(version=123, signature_name="regress_x_to_y2")


# -- metadata and status ---------------------------------------------------------------------------


def test_get_model_metadata_matches_tf_servings_golden_file(stub) -> None:
    golden = json.loads(Path(tfserving_path("half_plus_two_model_metadata.json")).read_text())
    expected = json_format.ParseDict(
        golden["metadata"]["signature_def"], get_model_metadata_pb2.SignatureDefMap()
    )
    request = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=model_spec(), metadata_field=["signature_def"]
    )
    response = stub.GetModelMetadata(request, TIMEOUT)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    assert signature_map == expected
    assert response.model_spec == model_spec(version=123)


def test_get_model_status(model_stub) -> None:
    request = get_model_status_pb2.GetModelStatusRequest(model_spec=model_spec("versions"))
    response = model_stub.GetModelStatus(request, TIMEOUT)
    assert [(s.version, s.state) for s in response.model_version_status] == [
        (124, AVAILABLE),
        (123, AVAILABLE),
    ]
    for status in response.model_version_status:
        assert status.HasField("status")
        assert (status.status.error_code, status.status.error_message) == (0, "")
    one = model_stub.GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec=model_spec(version=123)), TIMEOUT
    )
    assert [(s.version, s.state) for s in one.model_version_status] == [(123, AVAILABLE)]


def test_get_model_status_of_unknown_model(model_stub) -> None:
    request = get_model_status_pb2.GetModelStatusRequest(model_spec=model_spec("nope"))
    assert_rpc_error(
        lambda: model_stub.GetModelStatus(request, TIMEOUT),
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model nope",
    )


# -- errors ----------------------------------------------------------------------------------------


def int32_x() -> predict_pb2.PredictRequest:
    x = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT32, int_val=[2])
    x.tensor_shape.dim.add().size = 1
    x.tensor_shape.dim.add().size = 1
    return predict_request(x)


def renamed_input() -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest(model_spec=model_spec())
    request.inputs["z"].CopyFrom(float_tensor([1.0], [1, 1]))
    return request


def short_content_x() -> tensor_pb2.TensorProto:
    """5 bytes of content for a [3,1] float tensor (12 bytes)."""
    x = float_tensor([], [3, 1])
    x.tensor_content = b"\x00" * 5
    return x


PREDICT_ERRORS = {
    "unknown model": (
        lambda: predict_request(spec=model_spec("nope")),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    ),
    "unknown model before a malformed tensor": (
        lambda: predict_request(short_content_x(), model_spec("nope")),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(nope)",
    ),
    "unknown version": (
        lambda: predict_request(spec=model_spec(version=999)),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Specific(half_plus_two, 999)",
    ),
    "unknown label": (
        lambda: predict_request(spec=model_spec("versions", version_label="nope")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Unrecognized servable version label: nope",
    ),
    "unknown signature": (
        lambda: predict_request(spec=model_spec(signature_name="nope")),
        grpc.StatusCode.FAILED_PRECONDITION,
        'Serving signature key "nope" not found.',
    ),
    "wrong dtype": (
        int32_x,
        grpc.StatusCode.INVALID_ARGUMENT,
        "Expects arg[0] to be float but int32 is provided",
    ),
    "unknown input alias": (
        renamed_input,
        grpc.StatusCode.INVALID_ARGUMENT,
        "input tensor alias not found in signature: z. Inputs expected to be in the set {x}.",
    ),
    "missing input": (
        lambda: predict_pb2.PredictRequest(model_spec=model_spec()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input size does not match signature: 0!=1",
    ),
    "malformed tensor": (
        lambda: predict_request(short_content_x()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "tensor parsing error: x",
    ),
    "negative dimension": (
        lambda: predict_request(float_tensor([1.0], [-1, 1])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "tensor parsing error: x",
    ),
    "bad dtype": (
        lambda: predict_request(tensor_pb2.TensorProto(dtype=types_pb2.DT_INVALID)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "tensor parsing error: x",
    ),
    "missing model spec": (
        lambda: predict_pb2.PredictRequest(),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Missing ModelSpec",
    ),
    # TensorFlow would try to allocate 2^60 floats and fail, which TF Serving reports as a
    # tensor it cannot parse; we refuse it before allocating (found by tests/fuzz).
    "declared shape larger than the server decodes": (
        lambda: predict_request(float_tensor([1.0], [2**20, 2**40])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "tensor parsing error: x",
    ),
    "more dimensions than numpy holds": (
        lambda: predict_request(float_tensor([1.0], [1] * 65)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "tensor parsing error: x",
    ),
}


@pytest.mark.parametrize("case", sorted(PREDICT_ERRORS))
def test_predict_errors_carry_tf_servings_code_and_message(stub, case: str) -> None:
    make_request, code, message = PREDICT_ERRORS[case]
    assert_rpc_error(lambda: stub.Predict(make_request(), TIMEOUT), code, message)


SERVICE_METHODS = [
    ("PredictionService", "Predict", "PredictRequest"),
    ("PredictionService", "Classify", "ClassificationRequest"),
    ("PredictionService", "Regress", "RegressionRequest"),
    ("PredictionService", "MultiInference", "MultiInferenceRequest"),
    ("PredictionService", "GetModelMetadata", "GetModelMetadataRequest"),
    ("ModelService", "GetModelStatus", "GetModelStatusRequest"),
    ("ModelService", "HandleReloadConfigRequest", "ReloadConfigRequest"),
]


@pytest.mark.parametrize(("service", "method", "message_type"), SERVICE_METHODS)
def test_bytes_that_are_not_the_request_message_are_invalid_argument(
    channel, service: str, method: str, message_type: str
) -> None:
    """grpc.aio answered a message that does not parse with UNKNOWN (found by tests/fuzz); TF
    Serving's C++ gRPC says INTERNAL. Either way a server error for the client's mistake."""
    call = channel.unary_unary(f"/tensorflow.serving.{service}/{method}")
    assert_rpc_error(
        lambda: call(b"\xff\xff\xff\xff", timeout=TIMEOUT),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"Failed to parse request message as tensorflow.serving.{message_type}",
    )


def test_classify_with_empty_input(stub) -> None:
    request = classification_pb2.ClassificationRequest(
        model_spec=model_spec(signature_name="classify_x_to_y"), input=input_pb2.Input()
    )
    assert_rpc_error(
        lambda: stub.Classify(request, TIMEOUT), grpc.StatusCode.INVALID_ARGUMENT, "Input is empty"
    )


def test_metadata_without_fields_is_refused(stub) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=model_spec())
    assert_rpc_error(
        lambda: stub.GetModelMetadata(request, TIMEOUT),
        grpc.StatusCode.INVALID_ARGUMENT,
        "GetModelMetadataRequest must specify at least one metadata_field",
    )


# -- channel arguments -----------------------------------------------------------------------------


def test_channel_arguments_are_parsed_like_tf_serving() -> None:
    assert parse_channel_arguments("") == []
    two = "grpc.max_concurrent_streams=100,grpc.primary_user_agent=ab"
    assert parse_channel_arguments(two) == [
        ("grpc.max_concurrent_streams", 100),
        ("grpc.primary_user_agent", "ab"),
    ]
    # int32 values become ints (whitespace and sign allowed); others stay strings.
    assert parse_channel_arguments("a= -7 ,b=2147483648,c=1_0") == [
        ("a", -7),
        ("b", "2147483648"),
        ("c", "1_0"),
    ]
    assert parse_channel_arguments("a=b=c") == [("a", "b")]  # TF Serving keeps key_val[1]
    with pytest.raises(ValueError, match="key=value"):
        parse_channel_arguments("a=1,,b=2")


def test_long_error_messages_are_truncated_like_tf_serving() -> None:
    assert status_message("x" * 1024) == "x" * 1024
    assert status_message("x" * 2000) == "x" * 1024 + "...TRUNCATED"


class AbortRecorder:
    """The part of grpc.aio.ServicerContext a handler uses to fail."""

    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise grpc.aio.AbortError()

    def time_remaining(self) -> float | None:
        return None  # the client set no deadline


class FailingCore:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def status(self, spec):
        raise self.error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ServingError(grpc.StatusCode.NOT_FOUND, "gone"), (grpc.StatusCode.NOT_FOUND, "gone")),
        (RuntimeError("boom"), (grpc.StatusCode.INTERNAL, "boom")),  # message, no traceback
    ],
)
def test_failures_become_a_status_code_and_message(error, expected) -> None:
    servicer = ModelServicer(FailingCore(error))
    context = AbortRecorder()
    request = get_model_status_pb2.GetModelStatusRequest(model_spec=model_spec())
    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(servicer.GetModelStatus(request, context))
    assert context.aborted == expected


def test_channel_arguments_reach_the_grpc_server() -> None:
    """A user's --grpc_channel_arguments override the unlimited default message size."""
    flags = [
        f"--model_base_path={tfserving_path('saved_model_half_plus_two_cpu')}",
        "--model_name=half_plus_two",
        "--grpc_channel_arguments=grpc.max_receive_message_length=1024",
    ]
    with (
        start_server(flags, rest=False) as srv,
        grpc.insecure_channel(srv.grpc_target, options=UNLIMITED) as chan,
    ):
        limited = prediction_service_pb2_grpc.PredictionServiceStub(chan)
        assert limited.Predict(predict_request(), TIMEOUT).outputs["y"].float_val == [3, 3.5, 4]
        big = tf.make_tensor_proto(np.zeros((1024, 1), np.float32))
        assert_rpc_error(
            lambda: limited.Predict(predict_request(big), TIMEOUT),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "",
        )
