"""Request validation and result building of the inference core, with TF Serving's messages."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import inference_pb2, input_pb2

from reference_server.errors import ServingError
from reference_server.inference import (
    CLASSIFY_METHOD,
    REGRESS_METHOD,
    check_inputs,
    check_multi_inference_tasks,
    classification_result,
    output_aliases,
    regression_result,
    serialized_examples,
)
from reference_server.servable import Signature, TensorInfo

SIGNATURE = Signature(
    name="serving_default",
    method_name="tensorflow/serving/predict",
    inputs={
        "x": TensorInfo("x", "x:0", tf.float32, (None, 2)),
        "tokens": TensorInfo("tokens", "t:0", tf.string, (None,)),
    },
    outputs={
        "y": TensorInfo("y", "y:0", tf.float32, (None, 1)),
        "z": TensorInfo("z", "z:0", tf.float32, None),
    },
)


def assert_error(call, code: grpc.StatusCode, message: str) -> None:
    with pytest.raises(ServingError) as caught:
        call()
    assert caught.value.code == code
    assert message in caught.value.message


def good_inputs(rows: int = 3) -> dict[str, np.ndarray]:
    return {"x": np.zeros((rows, 2), np.float32), "tokens": np.array([b"a"] * rows, object)}


def test_valid_inputs_pass():
    check_inputs(SIGNATURE, good_inputs())


def test_missing_and_extra_inputs_are_named():
    inputs = good_inputs()
    inputs["extra"] = np.zeros(3, np.float32)
    assert_error(
        lambda: check_inputs(SIGNATURE, inputs),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input size does not match signature: 3!=2 len({extra,tokens,x}) != "
        "len({tokens,x}). Sent extra: {extra}. Missing but required: {}.",
    )
    del inputs["extra"], inputs["tokens"]
    assert_error(
        lambda: check_inputs(SIGNATURE, inputs),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Sent extra: {}. Missing but required: {tokens}.",
    )


def test_wrong_dtype_is_rejected():
    inputs = good_inputs()
    inputs["x"] = inputs["x"].astype(np.int32)
    assert_error(
        lambda: check_inputs(SIGNATURE, inputs),
        grpc.StatusCode.INVALID_ARGUMENT,
        "to be float but int32 is provided",
    )


def test_unknown_alias_with_the_right_count_is_named():
    inputs = good_inputs()
    inputs["y"] = inputs.pop("x")
    assert_error(
        lambda: check_inputs(SIGNATURE, inputs),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input tensor alias not found in signature: y. Inputs expected to be in the set "
        "{tokens,x}.",
    )


def test_shapes_are_left_to_the_graph_as_in_tf_serving():
    inputs = good_inputs()
    inputs["x"] = np.zeros((3, 5), np.float32)
    check_inputs(SIGNATURE, inputs)


def test_strings_sent_for_a_float_input_are_named_string():
    inputs = good_inputs()
    inputs["x"] = np.array([b"a"], object)
    assert_error(
        lambda: check_inputs(SIGNATURE, inputs),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Expects arg[1] to be float but string is provided",
    )


def test_output_filter_rules():
    assert output_aliases(SIGNATURE, []) == ("y", "z")
    assert output_aliases(SIGNATURE, ["z"]) == ("z",)
    assert_error(
        lambda: output_aliases(SIGNATURE, ["w"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "output tensor alias not found in signature: w Outputs expected to be in the set {y,z}.",
    )
    assert_error(
        lambda: output_aliases(SIGNATURE, ["y", "y"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "duplicate output tensor alias: y",
    )


def example(**floats: float) -> example_pb2.Example:
    ex = example_pb2.Example()
    for key, value in floats.items():
        ex.features.feature[key].float_list.value.append(value)
    return ex


def test_context_features_are_merged_into_each_example():
    request_input = input_pb2.Input()
    with_context = request_input.example_list_with_context
    with_context.context.CopyFrom(example(c=9.0))
    with_context.examples.extend([example(x=1.0), example(x=2.0, c=5.0)])
    blobs = serialized_examples(request_input)
    parsed = [example_pb2.Example.FromString(b) for b in blobs]
    assert parsed[0].features.feature["c"].float_list.value == [9.0]
    assert parsed[0].features.feature["x"].float_list.value == [1.0]
    assert parsed[1].features.feature["c"].float_list.value == [5.0]  # the example wins


def test_empty_input_is_invalid():
    assert_error(
        lambda: serialized_examples(input_pb2.Input()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Input is empty.",
    )


def test_classification_result_pairs_labels_and_scores():
    result = classification_result(
        2,
        np.array([[b"a", b"b"], [b"c", b"d"]], object),
        np.array([[0.1, 0.9], [0.7, 0.3]], np.float32),
    )
    got = [[(c.label, round(c.score, 3)) for c in r.classes] for r in result.classifications]
    assert got == [[("a", 0.1), ("b", 0.9)], [("c", 0.7), ("d", 0.3)]]
    scores_only = classification_result(1, None, np.array([[3.0]], np.float32))
    assert [(c.label, c.score) for c in scores_only.classifications[0].classes] == [("", 3.0)]


def test_regression_result_accepts_batch_or_batch_by_one():
    assert [r.value for r in regression_result(2, np.array([1.0, 2.0])).regressions] == [1, 2]
    assert [r.value for r in regression_result(1, np.array([[3.0]])).regressions] == [3.0]
    assert_error(
        lambda: regression_result(2, np.zeros((2, 3))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "[batch_size] or [batch_size, 1]",
    )


def test_multi_inference_task_rules():
    request = inference_pb2.MultiInferenceRequest()
    assert_error(
        lambda: check_multi_inference_tasks(request),
        grpc.StatusCode.INVALID_ARGUMENT,
        "at least one task",
    )
    for name, method, signature in (("m", CLASSIFY_METHOD, "a"), ("m", REGRESS_METHOD, "a")):
        task = request.tasks.add(method_name=method)
        task.model_spec.name, task.model_spec.signature_name = name, signature
    assert_error(
        lambda: check_multi_inference_tasks(request),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Duplicate evaluation of signature: a",
    )
    request.tasks[1].model_spec.name = "other"
    assert_error(
        lambda: check_multi_inference_tasks(request),
        grpc.StatusCode.INVALID_ARGUMENT,
        "must access the same model name",
    )
    request.tasks[1].model_spec.name = "m"
    request.tasks[1].model_spec.signature_name = "b"
    request.tasks[1].method_name = "tensorflow/serving/predict"
    assert_error(
        lambda: check_multi_inference_tasks(request),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Unsupported signature method_name: tensorflow/serving/predict",
    )
