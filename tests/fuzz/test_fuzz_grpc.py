"""Malformed gRPC requests against real servers: every answer a client error, nothing else hurt.

Random bytes as any method's message, random TensorProtos (every dtype and invalid enum values,
negative, zero, huge and too many dims, tensor_content of the wrong length, typed fields of
the wrong kind, string content with malformed lengths), bad model specs, odd tf.Example inputs
and bit flips in valid messages, for Predict, Classify, Regress, MultiInference,
GetModelMetadata and GetModelStatus. After each case a valid Predict must get the model's
answer; on the batched server malformed Predicts are sent together with valid ones.
"""

from __future__ import annotations

import numpy as np
import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
)

from reference_server.tensor_codec import ndarray_to_tensor_proto
from tests.fuzz.support import (
    ALLOWED_GRPC,
    FUZZ,
    PREDICT,
    RSS_BOUND_BYTES,
    FuzzServer,
    Tally,
    beside_good_requests,
)

pytestmark = pytest.mark.timeout(3600)

SERVERS = ["unbatched", "batched"]
PREDICTION = "/tensorflow.serving.PredictionService/"
METHODS = {
    PREDICT: predict_pb2.PredictRequest,
    PREDICTION + "Classify": classification_pb2.ClassificationRequest,
    PREDICTION + "Regress": regression_pb2.RegressionRequest,
    PREDICTION + "MultiInference": inference_pb2.MultiInferenceRequest,
    PREDICTION + "GetModelMetadata": get_model_metadata_pb2.GetModelMetadataRequest,
    "/tensorflow.serving.ModelService/GetModelStatus": get_model_status_pb2.GetModelStatusRequest,
}
# (HandleReloadConfigRequest is left out: a random message may well be a valid new config.)


def send(server: FuzzServer, tally: Tally, category: str, method: str, payload: bytes) -> None:
    code, details = server.grpc_raw(method, payload)
    tally.add("grpc", category, server.name, code.name)
    assert code in ALLOWED_GRPC, f"{code.name}: {details}"


# -- strategies ----------------------------------------------------------------------------------

int32s = st.integers(-(2**31), 2**31 - 1)
int64s = st.integers(-(2**63), 2**63 - 1)
names = st.one_of(st.sampled_from(["mlp", "", "MLP", "mlp ", "nope"]), st.text(max_size=12))
dtypes = st.one_of(
    # The mlp's own dtype and strings (malformed string lengths) more often than the rest.
    st.sampled_from([types_pb2.DT_FLOAT, types_pb2.DT_STRING]),
    st.sampled_from(sorted(types_pb2.DataType.values())),
    st.integers(-3, 400),
    st.sampled_from([2**31 - 1, -(2**31)]),
)
sizes = st.one_of(
    st.integers(-3, 20),
    st.sampled_from([16, 0, -1, 1000, 10**6, 2**31, 2**40, 2**62, 2**63 - 1, -(2**63)]),
)
dims = st.one_of(
    st.lists(sizes, max_size=6),
    st.sampled_from([[1] * 64, [1] * 65, [2] * 70, [1] * 254, [1] * 255]),
)
floats32 = st.floats(width=32)
TYPED_FIELDS = {
    "float_val": floats32,
    "double_val": st.floats(),
    "int_val": int32s,
    "half_val": int32s,
    "int64_val": int64s,
    "uint32_val": st.integers(0, 2**32 - 1),
    "uint64_val": st.integers(0, 2**64 - 1),
    "bool_val": st.booleans(),
    "string_val": st.binary(max_size=8),
    "scomplex_val": floats32,
    "dcomplex_val": st.floats(),
}
typed_fields = st.dictionaries(
    st.sampled_from(sorted(TYPED_FIELDS)),
    st.integers(0, 40),
    max_size=3,
)
# Lengths that do not add up: varints cut short, lengths beyond the bytes, 10-byte varints.
string_contents = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([b"\x80", b"\xff" * 11, b"\x05ab", b"\x01a\x01", b"\x00" * 3]),
)


# Float tensors shaped almost like the mlp's [-1, 16]: they decode and reach the model (or the
# batch queue), where a wrong shape fails.
near_shapes = st.builds(
    lambda rows, tail: [rows, *tail],
    st.integers(0, 3),
    st.sampled_from([[16], [16], [15], [17], [], [16, 1], [0]]),
)


@st.composite
def tensor_protos(draw) -> tensor_pb2.TensorProto:
    if draw(st.integers(0, 3)) == 0:
        return draw(near_valid_tensors())
    proto = tensor_pb2.TensorProto(dtype=draw(dtypes))
    shape = draw(dims)
    for size in shape:
        proto.tensor_shape.dim.add().size = size
    proto.tensor_shape.unknown_rank = draw(st.sampled_from([False] * 9 + [True]))
    for name, count in draw(typed_fields).items():
        getattr(proto, name).extend(
            draw(st.lists(TYPED_FIELDS[name], min_size=count, max_size=count))
        )
    proto.tensor_content = draw(_contents(shape))
    return proto


@st.composite
def near_valid_tensors(draw) -> tensor_pb2.TensorProto:
    shape = draw(near_shapes)
    values = np.array(draw(st.lists(floats32, min_size=1, max_size=1)) * int(np.prod(shape)))
    proto = ndarray_to_tensor_proto(
        values.astype(np.float32).reshape(shape), as_content=draw(st.booleans())
    )
    return proto


def _contents(shape: list[int]) -> st.SearchStrategy[bytes]:
    count = int(np.prod(shape, dtype=object)) if shape else 1
    if not 0 <= count <= 4096:
        return st.one_of(st.just(b""), string_contents)
    # The right length for some itemsize, give or take a few bytes.
    near = st.builds(
        lambda size, delta: b"\x00" * max(0, count * size + delta),
        st.sampled_from([1, 2, 4, 8, 16]),
        st.integers(-3, 3),
    )
    return st.one_of(st.just(b""), near, string_contents)


def model_specs(name: st.SearchStrategy[str] = names) -> st.SearchStrategy[model_pb2.ModelSpec]:
    @st.composite
    def build(draw) -> model_pb2.ModelSpec:
        spec = model_pb2.ModelSpec(name=draw(name))
        choice = draw(st.sampled_from(["none", "version", "label"]))
        if choice == "version":
            spec.version.value = draw(st.one_of(st.sampled_from([1, 0, 2, -1]), int64s))
        elif choice == "label":
            spec.version_label = draw(
                st.one_of(st.sampled_from(["stable", ""]), st.text(max_size=8))
            )
        spec.signature_name = draw(
            st.one_of(
                st.sampled_from(["", "serving_default", "nope", "tensorflow/serving/predict"]),
                st.text(max_size=8),
            )
        )
        return spec

    return build()


@st.composite
def predict_requests(draw, spec=None) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.CopyFrom(
        draw(spec if spec is not None else st.just(model_pb2.ModelSpec(name="mlp")))
    )
    aliases = draw(st.lists(st.sampled_from(["x", "x", "y", "", "é"]), min_size=0, max_size=3))
    for alias in aliases:
        request.inputs[alias].CopyFrom(draw(tensor_protos()))
    request.output_filter.extend(draw(st.lists(st.sampled_from(["y", "x", "", "y"]), max_size=2)))
    return request


@st.composite
def features(draw) -> feature_pb2.Features:
    result = feature_pb2.Features()
    for key in draw(
        st.lists(st.sampled_from(["x", "y", "", "é"]) | st.text(max_size=4), max_size=3)
    ):
        kind = draw(st.sampled_from(["bytes", "float", "int64", "empty"]))
        feature = result.feature[key]
        if kind == "bytes":
            feature.bytes_list.value.extend(draw(st.lists(st.binary(max_size=6), max_size=4)))
        elif kind == "float":
            feature.float_list.value.extend(draw(st.lists(floats32, max_size=20)))
        elif kind == "int64":
            feature.int64_list.value.extend(draw(st.lists(int64s, max_size=4)))
    return result


@st.composite
def inputs(draw) -> input_pb2.Input:
    request_input = input_pb2.Input()
    kind = draw(st.sampled_from(["list", "context", "empty"]))
    examples = [example_pb2.Example(features=f) for f in draw(st.lists(features(), max_size=4))]
    if kind == "list":
        request_input.example_list.examples.extend(examples)
    elif kind == "context":
        with_context = request_input.example_list_with_context
        with_context.examples.extend(examples)
        with_context.context.features.CopyFrom(draw(features()))
    return request_input


@st.composite
def example_requests(draw) -> tuple[str, bytes]:
    method = draw(st.sampled_from(["Classify", "Regress", "MultiInference"]))
    request_input = draw(inputs())
    if method == "MultiInference":
        request = inference_pb2.MultiInferenceRequest(input=request_input)
        for _ in range(draw(st.integers(0, 3))):
            task = request.tasks.add(model_spec=draw(model_specs()))
            task.method_name = draw(
                st.sampled_from(
                    ["tensorflow/serving/classify", "tensorflow/serving/regress", "", "predict"]
                )
            )
    else:
        message = METHODS[PREDICTION + method]
        request = message(model_spec=draw(model_specs()), input=request_input)
    return PREDICTION + method, request.SerializeToString()


@st.composite
def spec_requests(draw) -> tuple[str, bytes]:
    method = draw(st.sampled_from(sorted(METHODS)))
    spec = draw(model_specs())
    if method == PREDICT:
        request = draw(predict_requests(st.just(spec)))
    elif method.endswith("GetModelMetadata"):
        fields = st.lists(st.sampled_from(["signature_def", "", "nope"]), max_size=3)
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=spec, metadata_field=draw(fields)
        )
    elif method.endswith("MultiInference"):
        request = inference_pb2.MultiInferenceRequest(
            tasks=[inference_pb2.InferenceTask(model_spec=spec)]
        )
    else:
        request = METHODS[method](model_spec=spec)
    if "model_spec" in request.DESCRIPTOR.fields_by_name and draw(st.booleans()):
        request.ClearField("model_spec")
    return method, request.SerializeToString()


def valid_message(method: str, rows: np.ndarray) -> bytes:
    spec = model_pb2.ModelSpec(name="mlp")
    if method == PREDICT:
        request = predict_pb2.PredictRequest(model_spec=spec)
        request.inputs["x"].dtype = types_pb2.DT_FLOAT
        for size in rows.shape:
            request.inputs["x"].tensor_shape.dim.add().size = size
        request.inputs["x"].float_val.extend(rows.ravel().tolist())
    elif method.endswith("MultiInference"):
        task = inference_pb2.InferenceTask(
            model_spec=spec, method_name="tensorflow/serving/regress"
        )
        request = inference_pb2.MultiInferenceRequest(tasks=[task])
        request.input.example_list.examples.add().features.feature["x"].float_list.value.append(1)
    elif method.endswith("GetModelMetadata"):
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=spec, metadata_field=["signature_def"]
        )
    elif method.endswith(("Classify", "Regress")):
        request = METHODS[method](model_spec=spec)
        request.input.example_list.examples.add().features.feature["x"].float_list.value.append(1)
    else:
        request = METHODS[method](model_spec=spec)
    return request.SerializeToString()


@st.composite
def bit_flipped(draw, rows: np.ndarray) -> tuple[str, bytes]:
    method = draw(st.sampled_from(sorted(METHODS)))
    data = bytearray(valid_message(method, rows))
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(data) * 8 - 1))
        data[position // 8] ^= 1 << (position % 8)
    edit = draw(st.sampled_from(["flip", "truncate", "append"]))
    if edit == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif edit == "append":
        data += draw(st.binary(min_size=1, max_size=16))
    return method, bytes(data)


# -- properties ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SERVERS)
def test_random_bytes_as_any_message(
    name, fuzz_servers, tally, rss_at_start, valid_rows, expected_y
):
    server = fuzz_servers[name]

    @FUZZ
    @given(method=st.sampled_from(sorted(METHODS)), payload=st.binary(max_size=512))
    def case(method: str, payload: bytes) -> None:
        send(server, tally, "random bytes", method, payload)
        server.assert_serves(valid_rows, expected_y)

    case()


@pytest.mark.parametrize("name", SERVERS)
def test_random_tensor_protos(name, fuzz_servers, tally, valid_rows, expected_y):
    server = fuzz_servers[name]

    @FUZZ
    @given(request=predict_requests())
    def case(request: predict_pb2.PredictRequest) -> None:
        payload = request.SerializeToString()
        if server.batched:
            beside_good_requests(
                server,
                server.valid_grpc,
                valid_rows,
                expected_y,
                lambda: send(server, tally, "tensor protos", PREDICT, payload),
            )
        else:
            send(server, tally, "tensor protos", PREDICT, payload)
        server.assert_serves(valid_rows, expected_y)

    case()


@pytest.mark.parametrize("name", SERVERS)
def test_bad_model_specs(name, fuzz_servers, tally, valid_rows, expected_y):
    server = fuzz_servers[name]

    @FUZZ
    @given(message=spec_requests())
    def case(message: tuple[str, bytes]) -> None:
        send(server, tally, "model specs", *message)
        server.assert_serves(valid_rows, expected_y)

    case()


@pytest.mark.parametrize("name", SERVERS)
def test_odd_example_inputs(name, fuzz_servers, tally, valid_rows, expected_y):
    server = fuzz_servers[name]

    @FUZZ
    @given(message=example_requests())
    def case(message: tuple[str, bytes]) -> None:
        send(server, tally, "examples", *message)
        server.assert_serves(valid_rows, expected_y)

    case()


@pytest.mark.parametrize("name", SERVERS)
def test_bit_flips_in_valid_messages(name, fuzz_servers, tally, valid_rows, expected_y):
    server = fuzz_servers[name]

    @FUZZ
    @given(message=bit_flipped(valid_rows))
    def case(message: tuple[str, bytes]) -> None:
        send(server, tally, "bit flips", *message)
        server.assert_serves(valid_rows, expected_y)

    case()


def test_servers_are_alive_and_bounded_after_grpc_fuzzing(
    fuzz_servers, tally, rss_at_start, valid_rows, expected_y
):
    for name, server in fuzz_servers.items():
        server.assert_serves(valid_rows, expected_y)
        rss = psutil.Process(server.pid).memory_info().rss
        tally.rss[f"grpc {name}"] = {"before": rss_at_start[name], "after": rss}
        assert rss - rss_at_start[name] < RSS_BOUND_BYTES, (name, rss_at_start[name], rss)
