"""TF Serving's REST JSON codec: json_tensor_test.cc's cases, and the fast path's equivalence."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, input_pb2, regression_pb2

from reference_server import json_tensor as jt
from reference_server.errors import ServingError
from reference_server.servable import TensorInfo


def lookup(**dtypes: tf.DType):
    """An input_infos callback for a signature with these inputs (shape unknown)."""
    infos = {alias: TensorInfo(alias, f"{alias}:0", dtype, None) for alias, dtype in dtypes.items()}
    return lambda signature_name: infos


def decode(body: str | dict, **dtypes: tf.DType) -> jt.PredictJsonRequest:
    text = body if isinstance(body, str) else json.dumps(body)
    return jt.decode_predict_request(text.encode(), lookup(**dtypes))


def decode_error(body: str | dict, **dtypes: tf.DType) -> ServingError:
    with pytest.raises(ServingError) as caught:
        decode(body, **dtypes)
    return caught.value


def element_error(index: int, message: str, code: str = "INVALID_ARGUMENT") -> str:
    return f"Failed to process element: {index} of 'instances' list. Error: {code}: {message}"


# -- predict requests: row format ----------------------------------------------------------------


def test_row_format_batches_instances_into_one_tensor_of_the_signature_dtype():
    request = decode({"instances": [[1, 2], [3, 4], [5, 6]]}, default=tf.int32)
    assert request.row_format and request.signature_name == ""
    np.testing.assert_array_equal(request.inputs["default"], [[1, 2], [3, 4], [5, 6]])
    assert request.inputs["default"].dtype == np.int32


def test_integers_and_decimals_mix_in_a_float_tensor():
    request = decode({"instances": [1, 2.0, 3, 4, 5.003, 0.007, 0.0]}, default=tf.float32)
    assert request.inputs["default"].dtype == np.float32
    np.testing.assert_array_equal(
        request.inputs["default"], np.array([1, 2, 3, 4, 5.003, 0.007, 0], np.float32)
    )


def test_signature_name_is_passed_on():
    request = decode({"signature_name": "predict_images", "instances": [[1, 2]]}, x=tf.int32)
    assert request.signature_name == "predict_images"
    assert request.inputs["x"].shape == (1, 2)


def test_b64_objects_decode_to_bytes_for_string_inputs():
    request = decode({"instances": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}]}, s=tf.string)
    assert request.inputs["s"].tolist() == [b"hello", b"world"]
    request = decode({"instances": [[{"b64": "aGVsbG8="}], [{"b64": "d29ybGQ"}]]}, s=tf.string)
    assert request.inputs["s"].tolist() == [[b"hello"], [b"world"]]  # padding is optional


def test_named_instances_build_one_tensor_per_input_with_nan_and_infinity():
    body = """{"instances": [
        {"i": [[1,2],[3,4],[5,6]], "s": ["foo", "bar"], "f": [1.0, NaN], "d": [NaN]},
        {"i": [[7,8],[9,0],[1,2]], "s": ["baz", "bat"], "f": [2.0, Infinity], "d": [2.0]}]}"""
    inputs = decode(body, i=tf.int32, s=tf.string, f=tf.float32, d=tf.float64).inputs
    assert inputs["i"].shape == (2, 3, 2) and inputs["i"][1, 2, 1] == 2
    assert inputs["s"].tolist() == [[b"foo", b"bar"], [b"baz", b"bat"]]
    assert inputs["f"].dtype == np.float32 and np.isnan(inputs["f"][0, 1])
    assert inputs["f"][1, 1] == np.inf
    assert inputs["d"].dtype == np.float64 and inputs["d"].shape == (2, 1)


def test_small_integer_types_wrap_like_tensorflow_narrowing_int_val():
    assert decode({"instances": [255, 256, -1]}, u=tf.uint8).inputs["u"].tolist() == [255, 0, 255]
    assert decode({"instances": [True, False]}, b=tf.bool).inputs["b"].tolist() == [True, False]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"instances": [[1, 2], [3, 4], [5, 6, 7]]},
            element_error(2, "Expecting tensor size: 2 but got: 3"),
        ),
        (
            {"instances": [[1, 2], [3, 4], [[5, 6]]]},
            element_error(2, "Expecting shape [2] but got: [1,2]"),
        ),
        ({"instances": [1, [1]]}, element_error(1, "Expecting shape [] but got: [1]")),
        (
            {"instances": [[1, 2], ["a", "b"]]},
            element_error(1, 'JSON Value: "a" Type: String is not of expected type: int32'),
        ),
        (
            {"instances": [1.5]},
            element_error(0, "JSON Value: 1.5 Type: Number is not of expected type: int32"),
        ),
        (
            {"instances": [2.0]},
            element_error(0, "JSON Value: 2.0 Type: Number is not of expected type: int32"),
        ),
        (
            {"instances": [True]},
            element_error(0, "JSON Value: true Type: True is not of expected type: int32"),
        ),
        (
            {"instances": [None]},
            element_error(0, "JSON Value: null Type: Null is not of expected type: int32"),
        ),
        (
            {"instances": [2**31]},
            element_error(0, "JSON Value: 2147483648 Type: Number is not of expected type: int32"),
        ),
        (
            {"instances": [[[1], 2]]},
            element_error(
                0, "JSON Value: 2 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"
            ),
        ),
        (
            {"instances": [[1, [2]]]},
            element_error(0, "Encountered list at unexpected level: 1 expected < 1"),
        ),
        (
            {"instances": [[[1, 2], [3]]]},
            element_error(0, "Encountered list at unexpected size: 1 at level: 1 expected size: 2"),
        ),
    ],
)
def test_row_format_errors_name_the_element_and_the_problem(body, message):
    error = decode_error(body, x=tf.int32)
    assert (error.code_name, error.message) == ("INVALID_ARGUMENT", message)
    assert error.http_status == 400


@pytest.mark.parametrize(
    ("value", "dtype", "shown"),
    [
        (1.7976931348623157e308, tf.float32, "1.7976931348623157e+308"),
        (16777217, tf.float32, "16777217"),
        (9007199254740993, tf.float64, "9007199254740993"),
    ],
)
def test_numbers_a_float_type_cannot_hold_exactly_are_refused(value, dtype, shown):
    error = decode_error(f'{{"instances": [{value}]}}', x=dtype)
    target = "float" if dtype == tf.float32 else "double"
    assert error.message == element_error(
        0, f"Cannot convert JSON value: {shown} to {target} without loss of precision."
    )


def test_values_near_the_limit_are_exact_and_accepted():
    assert decode({"instances": [16777215, -16777215]}, x=tf.float32).inputs["x"][0] == 16777215
    assert decode({"instances": [16777217.0]}, x=tf.float32).inputs["x"][0] == 16777216


def test_named_instance_errors():
    two = {"i": tf.int32, "s": tf.string}
    error = decode_error(
        {"instances": [{"i": [[1, 2]], "s": ["a"]}, {"i": [[[7, 8]]], "s": ["b"]}]}, **two
    )
    assert error.message == (
        "Failed to process element: 1 key: i of 'instances' list. Error: INVALID_ARGUMENT: "
        "Expecting shape [1,2] but got: [1,1,2]"
    )
    error = decode_error({"instances": [{"i": [1], "s": ["a"]}, [1, 20, 30]]}, **two)
    assert error.message == "Expecting object but got list at item 1 of input list"
    error = decode_error({"instances": [{"i": [1], "s": ["a"]}, {"i": [2]}]}, **two)
    assert error.message == (
        "Failed to process element: 1 of 'instances' list. JSON object: {\n"
        '    "i": [\n        2\n    ]\n} must only have keys: i,s'
    )
    error = decode_error({"instances": [{"i": [1], "s": ["a"], "zzz": 1}]}, **two)
    assert error.message == (
        "Failed to process element: 0 key: zzz of 'instances' list. Error: INVALID_ARGUMENT: "
        "JSON object: does not have named input: zzz"
    )
    error = decode_error({"instances": [1, 2]}, **two)
    assert error.message == (
        "instances is a plain list, but expecting list of objects as multiple input tensors "
        "required as per tensorinfo_map"
    )
    error = decode_error({"instances": [["baz"], {"s": ["bat"]}]}, s=tf.string)
    assert error.message == "Expecting value/list but got object at item 1 of input list"


def test_request_shape_errors_quote_the_document_as_rapidjson_prints_it():
    error = decode_error({"instances": []}, x=tf.float32)
    assert error.message == "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array"
    error = decode_error({"instances": {"x": 1}}, x=tf.float32)
    assert error.message == (
        'JSON Value: {\n    "instances": {\n        "x": 1\n    }\n} '
        "Excepting 'instances' to be an list/array"
    )
    error = decode_error({"instances": [1], "inputs": [1]}, x=tf.float32)
    assert error.message.endswith(
        "} Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist "
    )
    error = decode_error({"signature_name": 5, "instances": [1]}, x=tf.float32)
    assert error.message == (
        'JSON Value: {\n    "signature_name": 5,\n    "instances": [\n        1\n    ]\n} '
        "not formatted correctly. 'signature_name' key must be a string value."
    )
    assert decode_error({"foo": [1]}, x=tf.float32).message == "Missing 'inputs' or 'instances' key"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "JSON Parse error: The document is empty"),
        ("  ", "JSON Parse error: The document is empty. at offset: 2"),
        ("instances = [1, 2]", "JSON Parse error: Invalid value. at offset: 0"),
        (
            '{"instances": [1, 2}',
            "JSON Parse error: Missing a comma or ']' after an array element. at offset: 19",
        ),
        (
            '{"instances": [1] "x": 1}',
            "JSON Parse error: Missing a comma or '}' after an object member. at offset: 18",
        ),
        (
            '{"instances" [1]}',
            "JSON Parse error: Missing a colon after a name of object member. at offset: 13",
        ),
        (
            '{"a": "x]}',
            "JSON Parse error: Missing a closing quotation mark in string. at offset: 6",
        ),
        (
            '{"a": 1} 2',
            "JSON Parse error: The document root must not be followed by other values. "
            "at offset: 9",
        ),
        ("[1.5]", "JSON Value: [\n    1.5\n] Is not object"),
    ],
)
def test_malformed_json_is_reported_with_rapidjsons_words(body, message):
    assert decode_error(body, x=tf.float32).message == message


def test_signature_lookup_errors_come_before_payload_errors():
    def unknown_model(signature_name: str):
        raise ServingError(jt.grpc.StatusCode.NOT_FOUND, "Servable not found for request: x")

    with pytest.raises(ServingError) as caught:
        jt.decode_predict_request(b'{"instances": ["bad"]}', unknown_model)
    assert caught.value.code_name == "NOT_FOUND"
    with pytest.raises(ServingError) as caught:
        jt.decode_predict_request(b'{"signature_name": "s", "instances": [1]}', lambda n: {})
    assert caught.value.message == "Failed to get input map for signature: s"


def test_types_json_cannot_carry_are_unimplemented():
    error = decode_error({"instances": [1]}, h=tf.float16)
    assert error.code_name == "INVALID_ARGUMENT"  # wrapped by the element error
    assert error.message == element_error(
        0, "Conversion of JSON Value: 1 to type: half", code="UNIMPLEMENTED"
    )
    error = decode_error({"inputs": [1]}, h=tf.uint16)
    assert (error.code_name, error.http_status) == ("UNIMPLEMENTED", 501)


def test_b64_errors():
    error = decode_error({"instances": [{"b64": "@@@"}]}, s=tf.string)
    assert error.message == element_error(0, "Unable to base64 decode")
    error = decode_error({"inputs": {"s": [{"b64": 1}]}}, s=tf.string)
    assert error.message == 'JSON Value: {\n    "b64": 1\n} not formatted correctly for base64 data'


# -- predict requests: columnar format -----------------------------------------------------------


def test_columnar_inputs_by_name_or_bare_for_a_single_input():
    named = decode({"inputs": {"x": [[[1, 2], [3, 4], [5, 6]]]}}, x=tf.int32)
    bare = decode({"inputs": [[[1, 2], [3, 4], [5, 6]]]}, x=tf.int32)
    assert not named.row_format and not bare.row_format
    for request in (named, bare):
        assert request.inputs["x"].shape == (1, 3, 2) and request.inputs["x"].dtype == np.int32


def test_columnar_inputs_may_be_scalars_and_b64_and_ignore_unknown_keys():
    inputs = decode(
        {"inputs": {"i": [[1, 2]], "s": ["foo", "bar"], "b": {"b64": "aGVsbG8="}, "extra": 1}},
        i=tf.int32,
        s=tf.string,
        b=tf.string,
    ).inputs
    assert set(inputs) == {"i", "s", "b"}
    assert inputs["b"].shape == () and inputs["b"].item() == b"hello"
    assert inputs["s"].tolist() == [b"foo", b"bar"]
    assert decode({"inputs": 2.5}, x=tf.float32).inputs["x"].shape == ()


def test_columnar_errors():
    assert decode_error({"inputs": {"a": [1]}}, a=tf.int32, b=tf.int32).message == (
        "Missing named input: b in 'inputs' object."
    )
    assert decode_error({"inputs": [1]}, a=tf.int32, b=tf.int32).message == (
        "inputs is a plain value/list, but expecting an object as multiple input tensors "
        "required as per tensorinfo_map"
    )
    # Columnar errors are not wrapped in an element error.
    assert decode_error({"inputs": [1.5]}, a=tf.int32).message == (
        "JSON Value: 1.5 Type: Number is not of expected type: int32"
    )


# -- the fast path agrees with the careful path --------------------------------------------------

_PAYLOADS = [
    [[1, 2], [3, 4]],
    [1.5, -2.25, 3],
    [[0.1, 0.2, 0.3]],
    [[16777215, 1.0]],
    [[16777216.0, 1]],
    [[]],
    [7, -8, 2**31 - 1, -(2**31)],
    [2**40, 5],
    [[1e300]],
    [0, 300, -129],
]
_DTYPES = [tf.float32, tf.float64, tf.int32, tf.int8, tf.uint8, tf.int64, tf.uint32, tf.uint64]


@pytest.mark.parametrize("dtype", _DTYPES, ids=lambda d: d.name)
@pytest.mark.parametrize("payload", _PAYLOADS, ids=str)
def test_fast_and_careful_paths_give_the_same_tensor_or_the_same_refusal(payload, dtype):
    info = TensorInfo("x", "x:0", dtype, None)
    fast = jt._fast_array(payload, info)
    try:
        careful = jt._careful_tensor(payload, info)
    except ServingError:
        assert fast is None  # only the careful path may refuse, so its message is TF Serving's
        return
    if fast is not None:
        assert fast.dtype == careful.dtype and fast.shape == careful.shape
        np.testing.assert_array_equal(fast, careful)


def test_true_and_false_in_a_numeric_payload_are_type_errors_not_numbers():
    assert decode_error({"instances": [1.0, True]}, x=tf.float32).message == element_error(
        1, "JSON Value: true Type: True is not of expected type: float"
    )


# -- predict responses ---------------------------------------------------------------------------


def encode(outputs: dict, *, row: bool) -> object:
    return json.loads(jt.encode_predict_response(outputs, row_format=row))


def test_single_output_is_the_bare_tensor_in_both_formats():
    tensor = np.array([[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]], np.int32)
    expected = tensor.tolist()
    assert encode({"t": tensor}, row=True) == {"predictions": expected}
    assert encode({"t": tensor}, row=False) == {"outputs": expected}
    assert encode({"t": np.arange(1, 6, dtype=np.int32)}, row=True) == {
        "predictions": [1, 2, 3, 4, 5]
    }


def test_several_outputs_are_an_object_per_row_or_per_name():
    outputs = {
        "int_tensor": np.array([[1, 2], [3, 4]], np.int32),
        "str_tensor": np.array([[b"foo", b"bar"], [b"baz", b"bat"]], dtype=object),
        "float_tensor": np.array([[1.0], [2.0]], np.float32),
        "double_scalar_tensor": np.array([8.0, 9.0]),
        "str_tensor_bytes": np.array([[b"hello", b"world"], [b"tf", b"serving"]], dtype=object),
    }
    assert encode(outputs, row=True) == {
        "predictions": [
            {
                "double_scalar_tensor": 8.0,
                "float_tensor": [1.0],
                "int_tensor": [1, 2],
                "str_tensor": ["foo", "bar"],
                "str_tensor_bytes": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}],
            },
            {
                "double_scalar_tensor": 9.0,
                "float_tensor": [2.0],
                "int_tensor": [3, 4],
                "str_tensor": ["baz", "bat"],
                "str_tensor_bytes": [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}],
            },
        ]
    }
    columnar = encode(outputs, row=False)["outputs"]
    assert columnar["double_scalar_tensor"] == [8.0, 9.0]
    assert columnar["str_tensor_bytes"][1] == [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}]


def test_floats_are_written_like_tf_serving():
    floats = np.array([[9000000, 999999, 0.5], [0.0003, 0.00003, 555557.5]], np.float32)
    body = jt.encode_predict_response({"f": floats}, row_format=True)
    assert body == b'{"predictions": [[9e+06,999999.0,0.5],[0.0003,3e-05,555557.5]]}'
    special = np.array([[np.nan, np.inf], [3, -np.inf]], np.float32)
    body = jt.encode_predict_response({"f": special}, row_format=False)
    assert body == b'{"outputs": [[NaN,Infinity],[3.0,-Infinity]]}'
    assert jt.write_decimal(0.1) == "0.1"  # not 0.10000000149011612
    assert jt.write_decimal(1 / 3) == "0.333333343"
    assert jt.write_decimal(1 / 3, np.dtype(np.float64)) == "0.33333333333333331"
    assert jt.write_decimal(-0.0) == "-0.0"


def test_scalar_outputs_are_valid_columnar_but_not_row_format():
    assert encode({"y": np.array(2.5, np.float32)}, row=False) == {"outputs": 2.5}
    with pytest.raises(ServingError, match=r"^Tensor name: y has no shape information $"):
        jt.encode_predict_response({"y": np.array(2.5, np.float32)}, row_format=True)


def test_row_format_needs_one_batch_size():
    outputs = {"a": np.zeros((2, 3), np.int32), "b": np.zeros((1, 3), np.int32)}
    with pytest.raises(
        ServingError, match=r"^Tensor name: b has inconsistent batch size: 1 expecting: 2$"
    ):
        jt.encode_predict_response(outputs, row_format=True)
    with pytest.raises(ServingError, match=r"^Tensor name: a has invalid batch size: 0$"):
        jt.encode_predict_response({"a": np.zeros((0, 3))}, row_format=True)


def test_unsupported_output_types_and_empty_maps_are_errors():
    with pytest.raises(
        ServingError, match=r"^Failed to write JSON value for tensor type: complex64$"
    ):
        jt.encode_predict_response({"c": np.ones(2, np.complex64)}, row_format=True)
    with pytest.raises(ServingError, match=r"^Cannot convert empty tensor map to JSON$"):
        jt.encode_predict_response({}, row_format=True)


def test_string_outputs_keep_utf8_text_and_raw_bytes():
    strings = np.array(["héllo".encode(), b"\xff\x00"], dtype=object)
    body = jt.encode_predict_response({"s": strings}, row_format=False)
    assert body == '{"outputs": ["héllo","\udcff\\u0000"]}'.encode("utf-8", "surrogateescape")


# -- classify / regress ----------------------------------------------------------------------------


def features(example) -> dict[str, tuple[str, list]]:
    out = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        out[name] = (kind, list(getattr(feature, kind).value) if kind else [])
    return out


def test_examples_become_tf_examples_with_typed_feature_lists():
    body = b"""{"examples": [
        {"names": ["foo", "bar"], "ratings": [8.0, 9.0], "age": 20},
        {"names": ["baz"], "ratings": 6.0, "empty": []}]}"""
    name, request_input = jt.decode_examples_request(body)
    assert name == "" and request_input.WhichOneof("kind") == "example_list"
    first, second = request_input.example_list.examples
    assert features(first) == {
        "names": ("bytes_list", [b"foo", b"bar"]),
        "ratings": ("float_list", [8.0, 9.0]),
        "age": ("int64_list", [20]),
    }
    assert features(second) == {
        "names": ("bytes_list", [b"baz"]),
        "ratings": ("float_list", [6.0]),
        "empty": (None, []),
    }


def test_context_and_signature_name_and_special_values():
    body = b"""{"signature_name": "custom", "context": {"query": "pizza", "location": ["sfo"]},
        "examples": [{"names": ["baz", {"b64": "aGVsbG8="}], "ratings": [NaN, -Infinity],
                      "intboolmix": [1, true, false]}]}"""
    name, request_input = jt.decode_examples_request(body)
    assert name == "custom"
    with_context = request_input.example_list_with_context
    assert features(with_context.context) == {
        "query": ("bytes_list", [b"pizza"]),
        "location": ("bytes_list", [b"sfo"]),
    }
    (example,) = with_context.examples
    got = features(example)
    assert got["names"] == ("bytes_list", [b"baz", b"hello"])
    assert got["intboolmix"] == ("int64_list", [1, 1, 0])
    assert math.isnan(got["ratings"][1][0]) and got["ratings"][1][1] == -math.inf


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"context": [{"n": 1}], "examples": [{}]}',
         "Example must be JSON object but got JSON Array"),
        ('{"examples": [[{"n": 1}]]}', "Example must be JSON object but got JSON Array"),
        ('{"examples": [{"n": [10, null]}]}',
         "Feature: n has element with unexpected JSON type: Null"),
        ('{"examples": [{"n": [10, 10.0]}]}',
         "Unexpected element type in feature: n expecting type: int64"),
        ('{"examples": [{"n": ["a", 1.5]}]}',
         "Unexpected element type in feature: n expecting type: bytes"),
        ('{"examples": [{"n": [10, {"t": 1}]}]}',
         "Feature: n has element with unexpected JSON type: Object"),
        ('{"examples": [{"n": [[10], 20]}]}',
         "Feature: n has element with unexpected JSON type: Array"),
        ('{"examples": [{"n": [20, 18446744073709551603]}]}',
         "Feature: n has uint64 element. Only int64 is supported."),
        ('{"examples": [{"n": 1.7976931348623157e+308}]}',
         "Cannot convert JSON value: 1.7976931348623157e+308 to float without loss of precision."),
        ('{"examples": {"n": 1}}',
         'JSON Value: {\n    "examples": {\n        "n": 1\n    }\n} '
         "Expecting 'examples' value to be an list/array"),
        ('{"examples": []}',
         'JSON Value: {\n    "examples": []\n} \'examples\' value is an empty array'),
        ('{"x": 1}',
         'JSON Value: {\n    "x": 1\n} '
         "When method is classify, key 'examples' is expected and was not found"),
    ],
)  # fmt: skip
def test_example_errors(body, message):
    with pytest.raises(ServingError) as caught:
        jt.decode_examples_request(body.encode())
    assert (caught.value.code_name, caught.value.message) == ("INVALID_ARGUMENT", message)


def test_classification_and_regression_results():
    result = classification_pb2.ClassificationResult()
    for scores in ([0.2, 0.7, 0.1], [0.7, 0.1, 0.2]):
        entry = result.classifications.add()
        for label, score in zip(["car", "bike", "bus"], scores, strict=True):
            entry.classes.add(label=label, score=score)
    assert jt.encode_classification_result(result) == (
        b'{"results": [[["car", 0.2], ["bike", 0.7], ["bus", 0.1]], '
        b'[["car", 0.7], ["bike", 0.1], ["bus", 0.2]]]}'
    )
    regression = regression_pb2.RegressionResult()
    for value in (0.2, math.inf, 1.0, -math.inf, math.nan):
        regression.regressions.add(value=value)
    assert jt.encode_regression_result(regression) == (
        b'{"results": [0.2, Infinity, 1.0, -Infinity, NaN]}'
    )


def test_empty_results_are_errors():
    with pytest.raises(ServingError, match="empty ClassificationResults"):
        jt.encode_classification_result(classification_pb2.ClassificationResult())
    with pytest.raises(ServingError, match="empty RegressionResults"):
        jt.encode_regression_result(regression_pb2.RegressionResult())
    assert isinstance(jt.decode_examples_request(b'{"examples": [{}]}')[1], input_pb2.Input)


# -- JSON values inside messages -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (2.0, "2.0"),
        (0.001, "0.001"),
        (1e-7, "1e-7"),
        (1.5e300, "1.5e300"),
        (1e20, "100000000000000000000.0"),
        (1e21, "1e21"),
        (123.456, "123.456"),
        (-0.5, "-0.5"),
    ],
)
def test_nested_doubles_are_written_like_rapidjson(value, text):
    assert jt.rapidjson_double(value) == text
    assert jt.json_value_to_string([value]) == f"[\n    {text}\n]"


def test_top_level_numbers_in_messages_use_tf_servings_decimal_writer():
    assert jt.json_value_to_string(0.1) == "0.1"
    assert jt.json_value_to_string(1.23456789e39) == "1.23456789e+39"  # written as a double
    assert jt.json_value_to_string(math.nan) == "NaN"
    assert jt.json_value_to_string(7) == "7"
    assert jt.json_value_to_string({}) == "{}"


def test_error_bodies_are_json():
    assert json.loads(jt.encode_error('it\'s "bad"\n')) == {"error": 'it\'s "bad"\n'}


# -- deep nesting (found by tests/fuzz) -----------------------------------------------------------


def nested(depth: int, leaf: str = "1.0", open_: str = "[", close: str = "]") -> str:
    return open_ * depth + leaf + close * depth


@pytest.mark.parametrize("depth", [64, 101, 300, 900])
def test_rows_nested_deeper_than_numpy_holds_are_a_tensor_parsing_error(depth):
    """Was 500 'maximum supported dimension for an ndarray is currently 64, found 102'."""
    error = decode_error('{"instances": [' + nested(depth) + "]}", x=tf.float32)
    assert (error.code.name, error.message) == ("INVALID_ARGUMENT", "tensor parsing error: x")


@pytest.mark.parametrize("depth", [65, 300, 900])
def test_columns_and_named_rows_nested_too_deep_are_a_tensor_parsing_error(depth):
    for body in (
        '{"inputs": ' + nested(depth) + "}",
        '{"inputs": {"x": ' + nested(depth) + "}}",
        '{"instances": [{"x": ' + nested(depth - 1) + "}]}",
    ):
        error = decode_error(body, x=tf.float32)
        assert (error.code.name, error.message) == ("INVALID_ARGUMENT", "tensor parsing error: x")


def test_numpy_s_64_dimensions_are_still_decoded():
    assert decode('{"instances": [' + nested(63) + "]}", x=tf.float32).inputs["x"].ndim == 64


def test_deep_documents_are_quoted_in_messages_without_recursion_errors():
    """Was 500 'maximum recursion depth exceeded' while writing the error message."""
    for body in (
        '{"instances": ' + nested(900, "1", '{"a": ', "}") + "}",
        '{"instances": [1.0], "signature_name": ' + nested(900, "1") + "}",
    ):
        error = decode_error(body, x=tf.float32)
        assert error.code.name == "INVALID_ARGUMENT"
        assert error.message.startswith("JSON Value: {\n")


def test_the_iterative_writer_matches_rapidjsons_pretty_layout():
    value = {"a": [1, {"b": []}, {}], "c": "d", "e": [[True, None]]}
    assert jt.json_value_to_string(value) == (
        "{\n"
        '    "a": [\n'
        "        1,\n"
        "        {\n"
        '            "b": []\n'
        "        },\n"
        "        {}\n"
        "    ],\n"
        '    "c": "d",\n'
        '    "e": [\n'
        "        [\n"
        "            true,\n"
        "            null\n"
        "        ]\n"
        "    ]\n"
        "}"
    )


# -- lone surrogates and bytes that are not UTF-8 (found by tests/fuzz) ---------------------------


def test_lone_surrogate_escapes_are_quoted_in_errors_as_rapidjson_encodes_them():
    """Was aiohttp's plain 500: writing the error body raised UnicodeEncodeError."""
    error = decode_error('[{"\\ud800": null}]', x=tf.float32)
    body = jt.encode_error(error.message)
    assert b'\\"\xed\xa0\x80\\": null' in body
    assert jt.encode_error("\udcff \udc80") == b'{"error": "\xff \x80"}'  # the request's bytes


def test_lone_surrogates_in_string_inputs_and_features_become_bytes():
    """Were 500 'Internal error: ... surrogates not allowed'."""
    strings = decode('{"instances": ["\\ud800", "\\udfff!"]}', s=tf.string).inputs["s"]
    assert strings.tolist() == [b"\xed\xa0\x80", b"\xed\xbf\xbf!"]
    _, request_input = jt.decode_examples_request(b'{"examples": [{"x": "\\udbff"}]}')
    feature = request_input.example_list.examples[0].features.feature["x"]
    assert feature.bytes_list.value == [b"\xed\xaf\xbf"]


@pytest.mark.parametrize("name", ['"\\ud800"', '"a\\udfffb"', '"\xff"'])
def test_feature_names_that_are_not_utf8_are_invalid_argument(name):
    """Were 500 'Internal error': protobuf map keys must be UTF-8."""
    body = ('{"examples": [{' + name + ": 1}]}").encode("utf-8", "surrogateescape")
    body = body.replace("\xff".encode(), b"\xff")
    with pytest.raises(ServingError) as caught:
        jt.decode_examples_request(body)
    assert caught.value.code.name == "INVALID_ARGUMENT"
    assert caught.value.message.startswith("Feature name ")
    assert caught.value.message.endswith(" is not valid UTF-8")
    jt.encode_error(caught.value.message)  # and the answer can be written
