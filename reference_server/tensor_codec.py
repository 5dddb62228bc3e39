"""``tensorflow.TensorProto`` ↔ numpy, in plain numpy for the common dtypes.

Decoding follows TensorFlow's C++ ``Tensor::FromProto`` (what TF Serving runs on every input):
``tensor_content`` must hold exactly ``num_elements × itemsize`` bytes; otherwise the typed field
of the dtype is read, an empty field means zeros, a short one is padded with its last value (so
one value fills the whole shape) and extra values are ignored. Encoding follows
``Tensor::AsProtoField`` (typed fields, what TF Serving's Predict answers with) or, on request,
``Tensor::AsProtoTensorContent`` (raw bytes).

Those fill rules let a few bytes declare an enormous tensor (a shape of 2^40 and no values).
TensorFlow would try to allocate it and fail; we refuse it before allocating anything:
``check_tensor_size`` bounds the bytes a decoded tensor may take (``max_bytes``, see
``tensor_budget``) and its rank (numpy holds at most 64 dimensions). The JSON codec applies the
same check, so every path into the model is bounded the same way.

``tf.make_tensor_proto`` / ``tf.make_ndarray`` cost tens of microseconds per small tensor and
several times our cost on large ones, so they are only the fallback for rare dtypes (quantized,
4-bit, float8, resource, variant).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np
from tensorflow.core.framework import tensor_shape_pb2, types_pb2
from tensorflow.core.framework.tensor_pb2 import TensorProto

# TensorShape::MaxDimensions() in TensorFlow.
MAX_DIMENSIONS = 254
# numpy's NPY_MAXDIMS: an ndarray cannot have more dimensions than this.
NUMPY_MAX_DIMENSIONS = 64
_INT64_MAX = 2**63 - 1
# Without --max_request_bytes: the most one request's tensors may take once decoded. A gRPC
# message (a protobuf) is below 2 GiB, so every tensor a client sends in full as
# tensor_content fits, and decoding never costs more than the largest message could.
DEFAULT_MAX_TENSOR_BYTES = 2**31
# With --max_request_bytes=N the bound is N times this: the widest an honest encoding expands
# (a one-byte varint in int64_val/uint64_val becomes 8 bytes; every other field less).
WIRE_EXPANSION = 8


class TensorProtoError(ValueError):
    """A TensorProto that TensorFlow could not turn into a tensor (Tensor::FromProto fails)."""


# dtype enum → (numpy dtype, typed field, numpy dtype the field's values are read as).
# The last one differs where TF stores a narrower type in a wider field (ProtoHelper<T>).
_FIELDS: dict[int, tuple[np.dtype, str, np.dtype]] = {
    types_pb2.DT_FLOAT: (np.dtype(np.float32), "float_val", np.dtype(np.float32)),
    types_pb2.DT_DOUBLE: (np.dtype(np.float64), "double_val", np.dtype(np.float64)),
    types_pb2.DT_INT32: (np.dtype(np.int32), "int_val", np.dtype(np.int32)),
    types_pb2.DT_INT16: (np.dtype(np.int16), "int_val", np.dtype(np.int32)),
    types_pb2.DT_INT8: (np.dtype(np.int8), "int_val", np.dtype(np.int32)),
    types_pb2.DT_UINT8: (np.dtype(np.uint8), "int_val", np.dtype(np.int32)),
    types_pb2.DT_UINT16: (np.dtype(np.uint16), "int_val", np.dtype(np.int32)),
    types_pb2.DT_INT64: (np.dtype(np.int64), "int64_val", np.dtype(np.int64)),
    types_pb2.DT_UINT32: (np.dtype(np.uint32), "uint32_val", np.dtype(np.uint32)),
    types_pb2.DT_UINT64: (np.dtype(np.uint64), "uint64_val", np.dtype(np.uint64)),
    types_pb2.DT_BOOL: (np.dtype(np.bool_), "bool_val", np.dtype(np.bool_)),
    types_pb2.DT_HALF: (np.dtype(np.float16), "half_val", np.dtype(np.int32)),
    types_pb2.DT_BFLOAT16: (np.dtype(ml_dtypes.bfloat16), "half_val", np.dtype(np.int32)),
    types_pb2.DT_COMPLEX64: (np.dtype(np.complex64), "scomplex_val", np.dtype(np.float32)),
    types_pb2.DT_COMPLEX128: (np.dtype(np.complex128), "dcomplex_val", np.dtype(np.float64)),
    types_pb2.DT_STRING: (np.dtype(object), "string_val", np.dtype(object)),
}

# What Tensor::FromProto accepts beyond _FIELDS: not DT_INVALID, resources, variants, nor
# reference types (DT_*_REF, which tf.dtypes cannot even turn into numpy).
_TENSORFLOW_DECODES = frozenset(
    value
    for name, value in types_pb2.DataType.items()
    if not name.endswith("_REF")
    and value not in (types_pb2.DT_INVALID, types_pb2.DT_RESOURCE, types_pb2.DT_VARIANT)
) - set(_FIELDS)

_DTYPE_ENUM: dict[np.dtype, int] = {
    numpy_dtype: enum for enum, (numpy_dtype, _, _) in _FIELDS.items()
}

# Packed fixed-width fields: the wire bytes of the values are the array's bytes.
_FIXED_WIDTH_TAGS = {
    "float_val": 5 << 3 | 2,
    "double_val": 6 << 3 | 2,
    "scomplex_val": 9 << 3 | 2,
    "dcomplex_val": 12 << 3 | 2,
}
_BOOL_VAL_TAG = 11 << 3 | 2  # bools are one-byte varints, so packed bytes are 0/1 bytes


# -- size bound ------------------------------------------------------------------------------


def tensor_budget(max_request_bytes: int) -> int:
    """The most bytes one request's decoded tensors may take, for ``--max_request_bytes``
    (0 or less: no request limit, so DEFAULT_MAX_TENSOR_BYTES)."""
    if max_request_bytes > 0:
        return WIRE_EXPANSION * max_request_bytes
    return DEFAULT_MAX_TENSOR_BYTES


def check_tensor_size(shape: tuple[int, ...], numpy_dtype: np.dtype, max_bytes: int) -> int:
    """The bytes a tensor of ``shape`` and ``numpy_dtype`` takes; TensorProtoError when numpy
    cannot hold its rank or it would take more than ``max_bytes`` (checked before allocating)."""
    if len(shape) > NUMPY_MAX_DIMENSIONS:
        raise TensorProtoError(
            f"shape has {len(shape)} dimensions, more than the {NUMPY_MAX_DIMENSIONS} "
            "this server supports"
        )
    # Object arrays hold one pointer per element; the strings themselves are paid on the wire.
    nbytes = _num_elements(shape) * numpy_dtype.itemsize
    if nbytes > max_bytes:
        raise TensorProtoError(
            f"shape {list(shape)} of {numpy_dtype.name} needs {nbytes} bytes, more than the "
            f"{max_bytes} bytes this server decodes per request"
        )
    return nbytes


# -- decoding --------------------------------------------------------------------------------


def tensor_proto_to_ndarray(
    proto: TensorProto, max_bytes: int = DEFAULT_MAX_TENSOR_BYTES
) -> np.ndarray:
    """The tensor a TensorProto describes, with TensorFlow's C++ parsing rules.

    Numeric ``tensor_content`` comes back as a read-only view of the content bytes (no copy).
    String tensors are object arrays of ``bytes``. Raises TensorProtoError for a bad dtype, an
    invalid shape, content whose length does not match the shape, or a tensor that would take
    more than ``max_bytes`` (nothing is allocated then).
    """
    shape = tensor_shape(proto.tensor_shape)
    dtype = proto.dtype
    spec = _FIELDS.get(dtype)
    if spec is None:
        return _decode_with_tensorflow(proto, shape, max_bytes)
    numpy_dtype, field, field_dtype = spec
    check_tensor_size(shape, numpy_dtype, max_bytes)
    count = _num_elements(shape)
    if count == 0:
        return np.empty(shape, numpy_dtype)
    if proto.tensor_content:
        return _decode_content(proto.tensor_content, numpy_dtype, shape, count)
    values = _field_values(getattr(proto, field), field_dtype, numpy_dtype, dtype)
    return _fill(values, count, numpy_dtype).reshape(shape)


def tensor_shape(shape_proto: tensor_shape_pb2.TensorShapeProto) -> tuple[int, ...]:
    """A fully defined shape, or TensorProtoError (TensorShape::IsValid rules)."""
    dims = tuple(dim.size for dim in shape_proto.dim)
    if len(dims) > MAX_DIMENSIONS:
        raise TensorProtoError(f"shape has {len(dims)} dimensions, more than {MAX_DIMENSIONS}")
    if any(size < 0 for size in dims):
        raise TensorProtoError(f"shape {list(dims)} has a negative dimension")
    if _num_elements(dims) > _INT64_MAX:
        raise TensorProtoError(f"shape {list(dims)} has too many elements")
    return dims


def _num_elements(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def _decode_content(
    content: bytes, numpy_dtype: np.dtype, shape: tuple[int, ...], count: int
) -> np.ndarray:
    if numpy_dtype.kind == "O":
        return _decode_string_list(content, count).reshape(shape)
    if len(content) != count * numpy_dtype.itemsize:
        raise TensorProtoError(
            f"tensor_content has {len(content)} bytes, expected {count * numpy_dtype.itemsize} "
            f"for shape {list(shape)}"
        )
    return np.frombuffer(content, numpy_dtype).reshape(shape)


def _field_values(values: Any, field_dtype: np.dtype, numpy_dtype: np.dtype, dtype: int):
    """The typed field's values as an array of ``numpy_dtype`` (before fill/truncate)."""
    if numpy_dtype.kind == "O":
        strings = np.empty(len(values), dtype=object)
        strings[:] = list(values)
        return strings
    # upb's repeated containers implement __array__: one C loop, no Python floats.
    raw = np.array(values, dtype=field_dtype)
    if dtype in (types_pb2.DT_HALF, types_pb2.DT_BFLOAT16):
        return raw.astype(np.uint16).view(numpy_dtype)  # bit patterns
    if numpy_dtype.kind == "c":
        return raw[: len(raw) // 2 * 2].view(numpy_dtype)  # (real, imag) pairs
    # Narrow ints stored in int_val wrap like C++'s static_cast.
    return raw.astype(numpy_dtype, copy=False)


def _fill(values: np.ndarray, count: int, numpy_dtype: np.dtype) -> np.ndarray:
    """TF's FromProtoField: zeros when empty, truncate extras, pad with the last value."""
    if len(values) == 0:
        return np.full(count, b"" if numpy_dtype.kind == "O" else 0, dtype=numpy_dtype)
    if len(values) >= count:
        return values[:count]
    if len(values) == 1:
        return np.full(count, values[0], dtype=numpy_dtype)
    padding = np.full(count - len(values), values[-1], dtype=numpy_dtype)
    return np.concatenate([values, padding])


def _decode_string_list(content: bytes, count: int) -> np.ndarray:
    """String tensor_content: ``count`` varint lengths, then the bytes (port::DecodeStringList)."""
    lengths, offset = [], 0
    for _ in range(count):
        length, offset = _read_varint(content, offset)
        lengths.append(length)
    if sum(lengths) != len(content) - offset:
        raise TensorProtoError("string tensor_content lengths do not match its size")
    strings = np.empty(count, dtype=object)
    for index, length in enumerate(lengths):
        strings[index] = content[offset : offset + length]
        offset += length
    return strings


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    value, shift = 0, 0
    while offset < len(data) and shift < 35:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7
    raise TensorProtoError("string tensor_content has a malformed length")


def _decode_with_tensorflow(
    proto: TensorProto, shape: tuple[int, ...], max_bytes: int
) -> np.ndarray:
    """Rare dtypes: TensorFlow's own decoder; an unknown or reference dtype is an error."""
    if proto.dtype not in _TENSORFLOW_DECODES:
        raise TensorProtoError(f"unsupported dtype {proto.dtype}")
    import tensorflow as tf  # slow import, only for rare dtypes

    try:
        numpy_dtype = numpy_dtype_for(proto.dtype)
    except TypeError:  # a DataType without a numpy counterpart
        raise TensorProtoError(f"unsupported dtype {proto.dtype}") from None
    check_tensor_size(shape, numpy_dtype, max_bytes)
    try:
        return tf.make_ndarray(proto).reshape(shape)
    except (TypeError, ValueError) as exc:
        raise TensorProtoError(str(exc)) from None


# -- encoding --------------------------------------------------------------------------------


def ndarray_to_tensor_proto(
    array: Any, dtype: Any = None, *, as_content: bool = False
) -> TensorProto:
    """A TensorProto for ``array`` (anything ``np.asarray`` takes), optionally cast to ``dtype``.

    ``dtype`` may be a numpy dtype, a ``tf.DType`` or a ``DataType`` enum value. Values go into
    the dtype's typed field as TF Serving's Predict answers (``AsProtoField``), or into
    ``tensor_content`` with ``as_content`` (``AsProtoTensorContent``; strings stay in
    ``string_val``). ``tf.make_ndarray`` decodes either.
    """
    proto = TensorProto()
    write_tensor_proto(proto, array, dtype, as_content=as_content)
    return proto


def write_tensor_proto(
    proto: TensorProto, array: Any, dtype: Any = None, *, as_content: bool = False
) -> None:
    """Fill an empty TensorProto in place (e.g. ``response.outputs[alias]``, saving a copy)."""
    values = _as_array(array, dtype)
    enum = _DTYPE_ENUM.get(values.dtype)
    if enum is None:
        proto.CopyFrom(_encode_with_tensorflow(values))
        return
    proto.dtype = enum
    proto.tensor_shape.SetInParent()  # AsProto sets the shape even for scalars
    for size in values.shape:
        proto.tensor_shape.dim.add().size = size
    if values.size == 0:
        return
    if as_content and values.dtype.kind != "O":
        proto.tensor_content = np.ascontiguousarray(values).tobytes()
    else:
        _write_field(proto, _FIELDS[enum][1], values.ravel())


def _as_array(array: Any, dtype: Any) -> np.ndarray:
    numpy_dtype = None if dtype is None else numpy_dtype_for(dtype)
    values = np.asarray(array, dtype=numpy_dtype)
    if values.dtype.kind in "SU":  # fixed-width numpy strings → bytes objects
        values = _to_bytes_objects(values)
    return values


def numpy_dtype_for(dtype: Any) -> np.dtype:
    """The numpy dtype of a numpy dtype, ``tf.DType`` or ``DataType`` enum value."""
    enum = getattr(dtype, "as_datatype_enum", dtype)
    if isinstance(enum, int) and not isinstance(enum, bool):
        if enum in _FIELDS:
            return _FIELDS[enum][0]
        import tensorflow as tf  # rare dtypes only

        return np.dtype(tf.dtypes.as_dtype(enum).as_numpy_dtype)
    return np.dtype(dtype)


def _to_bytes_objects(values: np.ndarray) -> np.ndarray:
    out = np.empty(values.shape, dtype=object)
    flat = out.reshape(-1)
    for index, item in enumerate(values.reshape(-1).tolist()):
        flat[index] = item.encode() if isinstance(item, str) else item
    return out


def _write_field(proto: TensorProto, field: str, flat: np.ndarray) -> None:
    tag = _FIXED_WIDTH_TAGS.get(field)
    if tag is not None:
        # Merging the packed wire bytes is ~10x faster than extend() on large tensors.
        _merge_packed(proto, tag, np.ascontiguousarray(flat).tobytes())
    elif field == "bool_val":
        _merge_packed(proto, _BOOL_VAL_TAG, flat.astype(np.uint8).tobytes())
    else:
        getattr(proto, field).extend(_FIELD_VALUES[flat.dtype.kind](flat))


def _merge_packed(proto: TensorProto, tag: int, payload: bytes) -> None:
    proto.MergeFromString(bytes([tag]) + _varint(len(payload)) + payload)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _strings(flat: np.ndarray) -> list[bytes]:
    return [item.encode() if isinstance(item, str) else bytes(item) for item in flat]


def _half_bits(flat: np.ndarray) -> list[int]:
    return flat.view(np.uint16).tolist()


_FIELD_VALUES: dict[str, Callable[[np.ndarray], list]] = {
    "i": np.ndarray.tolist,
    "u": np.ndarray.tolist,
    "f": _half_bits,  # float16 (float32/64 are fixed-width)
    "V": _half_bits,  # ml_dtypes.bfloat16 reports kind "V"
    "O": _strings,
}


def _encode_with_tensorflow(values: np.ndarray) -> TensorProto:
    import tensorflow as tf  # rare dtypes only

    return tf.make_tensor_proto(values)
