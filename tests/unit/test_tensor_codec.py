"""TensorProto ↔ numpy: TensorFlow's own converters are the oracle for every dtype we handle."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from reference_server.tensor_codec import (
    DEFAULT_MAX_TENSOR_BYTES,
    TensorProtoError,
    ndarray_to_tensor_proto,
    tensor_budget,
    tensor_proto_to_ndarray,
    write_tensor_proto,
)

RNG = np.random.default_rng(7)

ARRAYS = {
    "float32": RNG.standard_normal((2, 3)).astype(np.float32),
    "float64": RNG.standard_normal((4,)),
    "float16": RNG.standard_normal((3, 2)).astype(np.float16),
    "bfloat16": RNG.standard_normal((5,)).astype(ml_dtypes.bfloat16),
    "int8": np.array([-128, -1, 0, 127], np.int8),
    "uint8": np.array([[0, 1], [200, 255]], np.uint8),
    "int16": np.array([-32768, 5, 32767], np.int16),
    "uint16": np.array([0, 40000, 65535], np.uint16),
    "int32": np.array([[-(2**31), 0, 2**31 - 1]], np.int32),
    "int64": np.array([-(2**63), -1, 2**63 - 1], np.int64),
    "uint32": np.array([0, 2**32 - 1], np.uint32),
    "uint64": np.array([0, 2**64 - 1], np.uint64),
    "bool": np.array([[True, False, True]]),
    "complex64": np.array([1 + 2j, -3.5j], np.complex64),
    "complex128": np.array([[1e300 - 1j]], np.complex128),
    "string": np.array([[b"a", b""], [b"\x00\xffbytes", "é".encode()]], dtype=object),
    "scalar": np.float32(2.5),
    "empty": np.zeros((0, 3), np.float32),
}


def float_proto(shape: list[int], **fields) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, **fields)
    for size in shape:
        proto.tensor_shape.dim.add().size = size
    return proto


def assert_same(got: np.ndarray, want) -> None:
    want = np.asarray(want)
    assert got.dtype == want.dtype
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("as_content", [False, True], ids=["fields", "content"])
@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_round_trip_and_tensorflow_decodes_our_protos(name: str, as_content: bool) -> None:
    array = np.asarray(ARRAYS[name])
    proto = ndarray_to_tensor_proto(array, as_content=as_content)
    assert_same(tensor_proto_to_ndarray(proto), array)
    # A client decoding with TensorFlow must get the same tensor either way.
    assert_same(tf.make_ndarray(proto), array)


@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_decodes_what_tensorflow_encodes(name: str) -> None:
    array = np.asarray(ARRAYS[name])
    assert_same(tensor_proto_to_ndarray(tf.make_tensor_proto(array)), array)


def test_predict_outputs_use_typed_fields_like_tf_serving() -> None:
    """TF Serving answers Predict with Tensor::AsProtoField: float_val, shape always set."""
    proto = ndarray_to_tensor_proto(np.array([[3.0], [3.5], [4.0]], np.float32))
    assert proto == float_proto([3, 1], float_val=[3.0, 3.5, 4.0])
    assert not proto.tensor_content
    scalar = ndarray_to_tensor_proto(np.float32(4.0))
    assert scalar.HasField("tensor_shape") and not scalar.tensor_shape.dim


def test_typed_fields_per_dtype_follow_tensorflow() -> None:
    assert ndarray_to_tensor_proto(np.array([7], np.uint8)).int_val == [7]
    assert ndarray_to_tensor_proto(np.array([7], np.int64)).int64_val == [7]
    assert ndarray_to_tensor_proto(np.array([True, False])).bool_val == [True, False]
    assert ndarray_to_tensor_proto(np.array([1.0], np.float16)).half_val == [0x3C00]
    assert ndarray_to_tensor_proto(np.array(["hi"])).string_val == [b"hi"]
    assert ndarray_to_tensor_proto(np.array([1 + 2j], np.complex64)).scomplex_val == [1, 2]


def test_content_option_writes_raw_bytes() -> None:
    array = np.arange(6, dtype=np.int32).reshape(2, 3)
    proto = ndarray_to_tensor_proto(array, as_content=True)
    assert proto.tensor_content == array.tobytes()
    assert not proto.int_val


def test_dtype_argument_casts_lists_and_accepts_tf_dtypes_and_enums() -> None:
    as_float = ndarray_to_tensor_proto([[1, 2]], tf.float32)
    assert as_float.dtype == types_pb2.DT_FLOAT
    assert_same(tensor_proto_to_ndarray(as_float), np.array([[1, 2]], np.float32))
    as_int64 = ndarray_to_tensor_proto([3], types_pb2.DT_INT64)
    assert as_int64.int64_val == [3]
    as_string = ndarray_to_tensor_proto(["x", b"y"], tf.string)
    assert as_string.string_val == [b"x", b"y"]


def test_single_value_fills_the_whole_shape() -> None:
    got = tensor_proto_to_ndarray(float_proto([2, 3], float_val=[1.5]))
    assert_same(got, np.full((2, 3), 1.5, np.float32))
    strings = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"s"])
    strings.tensor_shape.dim.add().size = 3
    assert tensor_proto_to_ndarray(strings).tolist() == [b"s", b"s", b"s"]


def test_short_fields_pad_with_the_last_value_and_extra_values_are_ignored() -> None:
    """Tensor::FromProto's rules (the C++ parser TF Serving uses), not tf.make_ndarray's."""
    padded = tensor_proto_to_ndarray(float_proto([4], float_val=[1, 2]))
    assert_same(padded, np.array([1, 2, 2, 2], np.float32))
    truncated = tensor_proto_to_ndarray(float_proto([2], float_val=[1, 2, 3]))
    assert_same(truncated, np.array([1, 2], np.float32))
    zeros = tensor_proto_to_ndarray(float_proto([2, 2]))
    assert_same(zeros, np.zeros((2, 2), np.float32))


def test_narrow_ints_in_int_val_wrap_like_a_cpp_cast() -> None:
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_UINT8, int_val=[256 + 5, -1])
    proto.tensor_shape.dim.add().size = 2
    assert_same(tensor_proto_to_ndarray(proto), np.array([5, 255], np.uint8))


def test_tensor_content_is_decoded_without_a_copy_of_its_own() -> None:
    array = RNG.standard_normal((8, 4)).astype(np.float32)
    got = tensor_proto_to_ndarray(tf.make_tensor_proto(array))
    assert_same(got, array)
    owner = got
    while isinstance(owner, np.ndarray):
        owner = owner.base
    assert isinstance(owner, bytes)  # a view of the content bytes
    assert not got.flags.writeable


def test_string_tensor_content_uses_tensorflows_string_list_encoding() -> None:
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_content=b"\x02\x00ab")
    proto.tensor_shape.dim.add().size = 2
    assert tensor_proto_to_ndarray(proto).tolist() == [b"ab", b""]


def test_rare_dtypes_fall_back_to_tensorflow() -> None:
    array = np.array([1, 2, 3], dtype=ml_dtypes.float8_e4m3fn)
    proto = ndarray_to_tensor_proto(array)
    assert proto.dtype == types_pb2.DT_FLOAT8_E4M3FN
    assert_same(tensor_proto_to_ndarray(proto), array)


def test_write_tensor_proto_fills_a_message_in_place() -> None:
    target = tensor_pb2.TensorProto()
    write_tensor_proto(target, np.array([1.0, 2.0], np.float32))
    assert target == float_proto([2], float_val=[1.0, 2.0])


def bad_content() -> tensor_pb2.TensorProto:
    return float_proto([2, 2], tensor_content=b"\x00" * 12)


def negative_dim() -> tensor_pb2.TensorProto:
    return float_proto([-1, 2], float_val=[1.0])


def too_many_dims() -> tensor_pb2.TensorProto:
    return float_proto([1] * 255, float_val=[1.0])


def overflowing_shape() -> tensor_pb2.TensorProto:
    return float_proto([2**62, 4], float_val=[1.0])


def invalid_dtype() -> tensor_pb2.TensorProto:
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_INVALID, float_val=[1.0])


def unknown_dtype() -> tensor_pb2.TensorProto:
    return tensor_pb2.TensorProto(dtype=999, float_val=[1.0])


def reference_dtype() -> tensor_pb2.TensorProto:
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT_REF, float_val=[1.0])


def resource_reference_dtype() -> tensor_pb2.TensorProto:
    """Found by tests/fuzz: DT_RESOURCE_REF was an INTERNAL error ('120') from tf.dtypes."""
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_RESOURCE_REF)


def bad_string_content() -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_content=b"\x05ab")
    proto.tensor_shape.dim.add().size = 1
    return proto


@pytest.mark.parametrize(
    "dtype",
    [v for n, v in types_pb2.DataType.items() if n.endswith("_REF")],
    ids=[n for n, _ in types_pb2.DataType.items() if n.endswith("_REF")],
)
def test_every_reference_dtype_is_refused(dtype: int) -> None:
    with pytest.raises(TensorProtoError, match="unsupported dtype"):
        tensor_proto_to_ndarray(shaped(dtype, [1]))


@pytest.mark.parametrize(
    "make",
    [
        bad_content,
        negative_dim,
        too_many_dims,
        overflowing_shape,
        invalid_dtype,
        unknown_dtype,
        reference_dtype,
        resource_reference_dtype,
        bad_string_content,
    ],
)
def test_malformed_protos_are_rejected(make) -> None:
    with pytest.raises(TensorProtoError):
        tensor_proto_to_ndarray(make())


# -- the size bound: a declared shape the request does not pay for -------------------------------

# Every DataType TensorFlow can hold in a tensor (DT_INVALID, references, resources and variants
# are refused as dtypes already).
DECODABLE_DTYPES = sorted(
    value
    for name, value in types_pb2.DataType.items()
    if value not in (types_pb2.DT_INVALID, types_pb2.DT_RESOURCE, types_pb2.DT_VARIANT)
    and not name.endswith("_REF")
)


def shaped(dtype: int, dims: list[int], **fields) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype, **fields)
    for size in dims:
        proto.tensor_shape.dim.add().size = size
    return proto


@pytest.mark.parametrize("dims", [[10**6, 2**40], [2**40], [2**31, 2]], ids=str)
@pytest.mark.parametrize("dtype", DECODABLE_DTYPES, ids=types_pb2.DataType.Name)
def test_huge_declared_shapes_are_refused_for_every_dtype(dtype: int, dims: list[int]) -> None:
    """Fuzzing found these answered with INTERNAL 'Unable to allocate 1.00 PiB'."""
    with pytest.raises(TensorProtoError, match="bytes this server decodes per request"):
        tensor_proto_to_ndarray(shaped(dtype, dims))


def test_the_bound_is_checked_before_anything_is_allocated() -> None:
    import tracemalloc

    proto = shaped(types_pb2.DT_INT64, [2**20 + 1], int64_val=[7])  # 8 MiB + 8 bytes from one value
    tracemalloc.start()
    try:
        with pytest.raises(TensorProtoError):
            tensor_proto_to_ndarray(proto, max_bytes=8 * 2**20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_a_tensor_exactly_at_the_bound_is_decoded() -> None:
    proto = shaped(types_pb2.DT_FLOAT, [4, 256], float_val=[1.5])
    assert tensor_proto_to_ndarray(proto, max_bytes=4096).shape == (4, 256)
    proto.tensor_shape.dim[0].size = 5
    with pytest.raises(TensorProtoError):
        tensor_proto_to_ndarray(proto, max_bytes=4096)


def test_string_tensors_count_one_pointer_per_element() -> None:
    proto = shaped(types_pb2.DT_STRING, [1024], string_val=[b"a"])
    assert tensor_proto_to_ndarray(proto, max_bytes=8 * 1024).shape == (1024,)
    with pytest.raises(TensorProtoError):
        tensor_proto_to_ndarray(proto, max_bytes=8 * 1024 - 1)


def test_the_bound_follows_max_request_bytes_or_defaults_to_2_gib() -> None:
    assert tensor_budget(0) == tensor_budget(-1) == DEFAULT_MAX_TENSOR_BYTES == 2**31
    # The widest honest expansion: a one-byte varint in int64_val becomes 8 bytes.
    assert tensor_budget(1000) == 8000
    proto = ndarray_to_tensor_proto(np.zeros(1000, np.int64))
    assert tensor_proto_to_ndarray(proto, tensor_budget(proto.ByteSize())).shape == (1000,)


def test_more_dimensions_than_numpy_holds_are_refused() -> None:
    """Fuzzing found 65..254 ones (valid for TensorFlow) answered with INTERNAL from numpy."""
    for dtype in (types_pb2.DT_FLOAT, types_pb2.DT_STRING, types_pb2.DT_QINT8):
        with pytest.raises(TensorProtoError, match="more than the 64"):
            tensor_proto_to_ndarray(shaped(dtype, [1] * 65))
    assert tensor_proto_to_ndarray(shaped(types_pb2.DT_FLOAT, [1] * 64)).ndim == 64


def test_a_request_shares_one_budget_across_its_inputs() -> None:
    from reference_server.errors import ServingError
    from reference_server.grpc_api import decode_inputs
    from reference_server.servable import Signature, TensorInfo

    infos = {a: TensorInfo(a, f"{a}:0", tf.float32, None) for a in ("a", "b")}
    signature = Signature("serving_default", "tensorflow/serving/predict", infos, {})
    tensors = {a: shaped(types_pb2.DT_FLOAT, [256], float_val=[1.0]) for a in infos}
    assert len(decode_inputs(signature, tensors, max_bytes=2048)) == 2
    with pytest.raises(ServingError, match=r"^tensor parsing error: b$"):
        decode_inputs(signature, tensors, max_bytes=2047)
