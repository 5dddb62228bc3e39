"""TF Serving's wire messages, declared here so that a load generator never imports TensorFlow.

Importing `tensorflow_serving.apis` imports all of TensorFlow (seconds and hundreds of MB per
process). The few messages a client needs (TensorProto, ModelSpec, PredictRequest/Response,
GetModelMetadataRequest/Response, SignatureDefMap) are declared at run time with the same
names and field numbers as TF Serving's .proto files, in a private descriptor pool, so they
never clash with TensorFlow's own classes in a process that also has those.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
METADATA_METHOD = "/tensorflow.serving.PredictionService/GetModelMetadata"
SIGNATURE_DEF_MAP_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"

# TensorFlow's DataType numbers (types.proto) and the numpy dtype each maps to; None: no numpy type.
DTYPES: dict[str, tuple[int, str | None]] = {
    "DT_FLOAT": (1, "float32"),
    "DT_DOUBLE": (2, "float64"),
    "DT_INT32": (3, "int32"),
    "DT_UINT8": (4, "uint8"),
    "DT_INT16": (5, "int16"),
    "DT_INT8": (6, "int8"),
    "DT_STRING": (7, "object"),
    "DT_COMPLEX64": (8, "complex64"),
    "DT_INT64": (9, "int64"),
    "DT_BOOL": (10, "bool"),
    "DT_BFLOAT16": (14, None),
    "DT_UINT16": (17, "uint16"),
    "DT_COMPLEX128": (18, "complex128"),
    "DT_HALF": (19, "float16"),
    "DT_UINT32": (22, "uint32"),
    "DT_UINT64": (23, "uint64"),
}
DTYPE_NAMES: dict[int, str] = {number: name for name, (number, _) in DTYPES.items()}

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
# Field tables: (name, number, type, label, message type name or "", oneof index or None).
_TENSOR_SHAPE_DIM = (
    ("size", 1, _F.TYPE_INT64, _OPTIONAL, "", None),
    ("name", 2, _F.TYPE_STRING, _OPTIONAL, "", None),
)
_TENSOR_SHAPE = (
    ("dim", 2, _F.TYPE_MESSAGE, _REPEATED, ".tensorflow.TensorShapeProto.Dim", None),
    ("unknown_rank", 3, _F.TYPE_BOOL, _OPTIONAL, "", None),
)
_TENSOR = (
    ("dtype", 1, _F.TYPE_INT32, _OPTIONAL, "", None),  # an enum on the wire is a varint too
    ("tensor_shape", 2, _F.TYPE_MESSAGE, _OPTIONAL, ".tensorflow.TensorShapeProto", None),
    ("version_number", 3, _F.TYPE_INT32, _OPTIONAL, "", None),
    ("tensor_content", 4, _F.TYPE_BYTES, _OPTIONAL, "", None),
    ("float_val", 5, _F.TYPE_FLOAT, _REPEATED, "", None),
    ("double_val", 6, _F.TYPE_DOUBLE, _REPEATED, "", None),
    ("int_val", 7, _F.TYPE_INT32, _REPEATED, "", None),
    ("string_val", 8, _F.TYPE_BYTES, _REPEATED, "", None),
    ("int64_val", 10, _F.TYPE_INT64, _REPEATED, "", None),
    ("bool_val", 11, _F.TYPE_BOOL, _REPEATED, "", None),
    ("half_val", 13, _F.TYPE_INT32, _REPEATED, "", None),
    ("uint32_val", 16, _F.TYPE_UINT32, _REPEATED, "", None),
    ("uint64_val", 17, _F.TYPE_UINT64, _REPEATED, "", None),
)
_TENSOR_INFO = (
    ("name", 1, _F.TYPE_STRING, _OPTIONAL, "", 0),
    ("dtype", 2, _F.TYPE_INT32, _OPTIONAL, "", None),
    ("tensor_shape", 3, _F.TYPE_MESSAGE, _OPTIONAL, ".tensorflow.TensorShapeProto", None),
)
_SIGNATURE_DEF = (
    ("inputs", 1, _F.TYPE_MESSAGE, _REPEATED, ".tensorflow.SignatureDef.InputsEntry", None),
    ("outputs", 2, _F.TYPE_MESSAGE, _REPEATED, ".tensorflow.SignatureDef.OutputsEntry", None),
    ("method_name", 3, _F.TYPE_STRING, _OPTIONAL, "", None),
)
_MODEL_SPEC = (
    ("name", 1, _F.TYPE_STRING, _OPTIONAL, "", None),
    ("version", 2, _F.TYPE_MESSAGE, _OPTIONAL, ".google.protobuf.Int64Value", 0),
    ("signature_name", 3, _F.TYPE_STRING, _OPTIONAL, "", None),
    ("version_label", 4, _F.TYPE_STRING, _OPTIONAL, "", 0),
)
_SPEC = ".tensorflow.serving.ModelSpec"
_PREDICT_REQUEST = (
    ("model_spec", 1, _F.TYPE_MESSAGE, _OPTIONAL, _SPEC, None),
    (
        "inputs",
        2,
        _F.TYPE_MESSAGE,
        _REPEATED,
        ".tensorflow.serving.PredictRequest.InputsEntry",
        None,
    ),
    ("output_filter", 3, _F.TYPE_STRING, _REPEATED, "", None),
)
_PREDICT_RESPONSE = (
    (
        "outputs",
        1,
        _F.TYPE_MESSAGE,
        _REPEATED,
        ".tensorflow.serving.PredictResponse.OutputsEntry",
        None,
    ),
    ("model_spec", 2, _F.TYPE_MESSAGE, _OPTIONAL, _SPEC, None),
)
_METADATA_REQUEST = (
    ("model_spec", 1, _F.TYPE_MESSAGE, _OPTIONAL, _SPEC, None),
    ("metadata_field", 2, _F.TYPE_STRING, _REPEATED, "", None),
)
_METADATA_RESPONSE = (
    ("model_spec", 1, _F.TYPE_MESSAGE, _OPTIONAL, _SPEC, None),
    (
        "metadata",
        2,
        _F.TYPE_MESSAGE,
        _REPEATED,
        ".tensorflow.serving.GetModelMetadataResponse.MetadataEntry",
        None,
    ),
)
_SIGNATURE_DEF_MAP = (
    (
        "signature_def",
        1,
        _F.TYPE_MESSAGE,
        _REPEATED,
        ".tensorflow.serving.SignatureDefMap.SignatureDefEntry",
        None,
    ),
)


def _message(
    name: str,
    fields: tuple,
    *,
    nested: tuple[descriptor_pb2.DescriptorProto, ...] = (),
    oneofs: tuple[str, ...] = (),
) -> descriptor_pb2.DescriptorProto:
    message = descriptor_pb2.DescriptorProto(name=name)
    for field_name, number, kind, label, type_name, oneof in fields:
        field = message.field.add(name=field_name, number=number, type=kind, label=label)
        if type_name:
            field.type_name = type_name
        if oneof is not None:
            field.oneof_index = oneof
    for oneof_name in oneofs:
        message.oneof_decl.add(name=oneof_name)
    message.nested_type.extend(nested)
    return message


def _map_entry(name: str, value_type: str) -> descriptor_pb2.DescriptorProto:
    entry = _message(
        name,
        (
            ("key", 1, _F.TYPE_STRING, _OPTIONAL, "", None),
            ("value", 2, _F.TYPE_MESSAGE, _OPTIONAL, value_type, None),
        ),
    )
    entry.options.map_entry = True
    return entry


def _tensorflow_file() -> descriptor_pb2.FileDescriptorProto:
    shape = _message(
        "TensorShapeProto", _TENSOR_SHAPE, nested=(_message("Dim", _TENSOR_SHAPE_DIM),)
    )
    info = _message("TensorInfo", _TENSOR_INFO, oneofs=("encoding",))
    signature = _message(
        "SignatureDef",
        _SIGNATURE_DEF,
        nested=(
            _map_entry("InputsEntry", ".tensorflow.TensorInfo"),
            _map_entry("OutputsEntry", ".tensorflow.TensorInfo"),
        ),
    )
    messages = (shape, _message("TensorProto", _TENSOR), info, signature)
    return descriptor_pb2.FileDescriptorProto(
        name="batchbench/tensorflow_wire.proto",
        package="tensorflow",
        syntax="proto3",
        message_type=messages,
    )


def _serving_file() -> descriptor_pb2.FileDescriptorProto:
    tensor = ".tensorflow.TensorProto"
    messages = (
        _message("ModelSpec", _MODEL_SPEC, oneofs=("version_choice",)),
        _message("PredictRequest", _PREDICT_REQUEST, nested=(_map_entry("InputsEntry", tensor),)),
        _message(
            "PredictResponse", _PREDICT_RESPONSE, nested=(_map_entry("OutputsEntry", tensor),)
        ),
        _message("GetModelMetadataRequest", _METADATA_REQUEST),
        _message(
            "GetModelMetadataResponse",
            _METADATA_RESPONSE,
            nested=(_map_entry("MetadataEntry", ".google.protobuf.Any"),),
        ),
        _message(
            "SignatureDefMap",
            _SIGNATURE_DEF_MAP,
            nested=(_map_entry("SignatureDefEntry", ".tensorflow.SignatureDef"),),
        ),
    )
    return descriptor_pb2.FileDescriptorProto(
        name="batchbench/tensorflow_serving_wire.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=[
            "batchbench/tensorflow_wire.proto",
            "google/protobuf/wrappers.proto",
            "google/protobuf/any.proto",
        ],
        message_type=messages,
    )


def _build_classes() -> dict[str, Any]:  # classes made at run time: no static types
    pool = descriptor_pool.DescriptorPool()
    for module in (wrappers_pb2, any_pb2):
        pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    pool.Add(_tensorflow_file())
    pool.Add(_serving_file())
    names = (
        "tensorflow.TensorProto",
        "tensorflow.serving.ModelSpec",
        "tensorflow.serving.PredictRequest",
        "tensorflow.serving.PredictResponse",
        "tensorflow.serving.GetModelMetadataRequest",
        "tensorflow.serving.GetModelMetadataResponse",
        "tensorflow.serving.SignatureDefMap",
    )
    return {
        name.rsplit(".", 1)[1]: message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
        for name in names
    }


_CLASSES = _build_classes()
TensorProto = _CLASSES["TensorProto"]
ModelSpec = _CLASSES["ModelSpec"]
PredictRequest = _CLASSES["PredictRequest"]
PredictResponse = _CLASSES["PredictResponse"]
GetModelMetadataRequest = _CLASSES["GetModelMetadataRequest"]
GetModelMetadataResponse = _CLASSES["GetModelMetadataResponse"]
SignatureDefMap = _CLASSES["SignatureDefMap"]


def dtype_name(array: np.ndarray) -> str:
    """The TF DataType name (`DT_FLOAT`...) for a numpy array; ValueError if TF has none."""
    if array.dtype.kind in "OSU":
        return "DT_STRING"
    for name, (_, numpy_name) in DTYPES.items():
        if numpy_name == array.dtype.name:
            return name
    raise ValueError(f"numpy dtype {array.dtype} has no TensorFlow DataType")


def tensor_proto(array: np.ndarray) -> Any:
    """A TensorProto holding `array`: raw little-endian bytes, or string_val for strings."""
    name = dtype_name(array)
    proto = TensorProto(dtype=DTYPES[name][0])
    proto.tensor_shape.dim.extend(proto.tensor_shape.Dim(size=size) for size in array.shape)
    if name == "DT_STRING":
        proto.string_val.extend(_as_bytes(item) for item in array.reshape(-1))
    else:
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        proto.tensor_content = np.ascontiguousarray(little).tobytes()
    return proto


def _as_bytes(item: object) -> bytes:
    return item if isinstance(item, bytes) else str(item).encode()


def model_spec(
    name: str, *, signature: str = "", version: int | None = None, label: str | None = None
) -> Any:
    """A ModelSpec naming a model and, optionally, a signature and a version or a label."""
    spec = ModelSpec(name=name, signature_name=signature)
    if version is not None:
        spec.version.value = version
    elif label:
        spec.version_label = label
    return spec


def predict_request_bytes(spec: Any, inputs: Mapping[str, np.ndarray]) -> bytes:
    """A serialized PredictRequest: built once per payload, then sent as bytes many times."""
    request = PredictRequest()
    request.model_spec.CopyFrom(spec)
    for alias, array in inputs.items():
        request.inputs[alias].CopyFrom(tensor_proto(array))
    return request.SerializeToString()


def metadata_request_bytes(spec: Any) -> bytes:
    """A serialized GetModelMetadataRequest asking for the signature_def metadata."""
    request = GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.CopyFrom(spec)
    return request.SerializeToString()


def decode_signature_defs(response: bytes) -> Any:
    """The SignatureDefMap inside a serialized GetModelMetadataResponse; ValueError if absent."""
    message = GetModelMetadataResponse.FromString(response)
    if "signature_def" not in message.metadata:
        raise ValueError("GetModelMetadata answered without signature_def metadata")
    packed = message.metadata["signature_def"]
    if not packed.type_url.endswith("tensorflow.serving.SignatureDefMap"):
        raise ValueError(f"unexpected signature_def metadata type {packed.type_url!r}")
    return SignatureDefMap.FromString(packed.value)


def decode_tensor(proto: Any) -> np.ndarray:
    """A numpy array from a TensorProto (raw content or the typed value fields)."""
    name = DTYPE_NAMES.get(proto.dtype, f"DataType {proto.dtype}")
    numpy_name = DTYPES.get(name, (0, None))[1]
    if numpy_name is None:
        raise ValueError(f"cannot decode a tensor of {name}")
    shape = tuple(dim.size for dim in proto.tensor_shape.dim)
    if name == "DT_STRING":
        values = np.array(list(proto.string_val), dtype=object)
    elif proto.tensor_content:
        values = np.frombuffer(proto.tensor_content, dtype=np.dtype(numpy_name).newbyteorder("<"))
    else:
        values = np.array(_typed_values(proto, name), dtype=numpy_name)
    count = int(np.prod(shape)) if shape else 1
    if values.size == 1 and count != 1:
        values = np.repeat(values, count)  # TF fills a tensor from a single value
    return values.astype(numpy_name).reshape(shape)


def _typed_values(proto: Any, name: str) -> list:
    if name == "DT_HALF":
        return list(np.array(proto.half_val, dtype=np.uint16).view(np.float16))
    field = {
        "DT_FLOAT": "float_val",
        "DT_DOUBLE": "double_val",
        "DT_INT64": "int64_val",
        "DT_BOOL": "bool_val",
        "DT_UINT32": "uint32_val",
        "DT_UINT64": "uint64_val",
    }.get(name, "int_val")
    return list(getattr(proto, field))


def decode_predict_response(response: bytes) -> dict[str, np.ndarray]:
    """The outputs of a serialized PredictResponse, by alias."""
    message = PredictResponse.FromString(response)
    return {alias: decode_tensor(tensor) for alias, tensor in message.outputs.items()}


MODEL_SPEC_FIELD = 2  # PredictResponse.model_spec (also Classification/RegressionResponse)
VERSION_FIELD = 2  # ModelSpec.version, a google.protobuf.Int64Value
_LEN, _VARINT, _I64, _I32 = 2, 0, 1, 5


def answer_version(response: bytes) -> int | None:
    """The ``model_spec.version`` of a serialized PredictResponse without decoding its outputs
    (a walk over the top-level fields); None when the answer names no version."""
    spec = _length_field(response, MODEL_SPEC_FIELD)
    wrapped = _length_field(spec, VERSION_FIELD) if spec is not None else None
    if wrapped is None:
        return None
    value = _varint_field(wrapped, 1)
    return 0 if value is None else value  # an Int64Value of 0 is written empty


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if offset >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[offset]
        value |= (byte & 0x7F) << shift
        offset, shift = offset + 1, shift + 7
        if not byte & 0x80:
            return value, offset


def _fields(data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(number, wire type, start, end) of each top-level field: where a length-delimited
    field's bytes are, or (value, value) for a varint; fixed-size values are skipped (no
    copies: answers can be large). ValueError if malformed."""
    offset = 0
    while offset < len(data):
        tag, offset = _read_varint(data, offset)
        number, wire = tag >> 3, tag & 7
        if wire == _VARINT:
            value, offset = _read_varint(data, offset)
            yield number, wire, value, value
        elif wire == _LEN:
            length, offset = _read_varint(data, offset)
            if offset + length > len(data):
                raise ValueError("truncated field")
            yield number, wire, offset, offset + length
            offset += length
        elif wire in (_I64, _I32):
            offset += 8 if wire == _I64 else 4
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _length_field(data: bytes, number: int) -> bytes | None:
    found = None
    try:
        for field_number, wire, start, end in _fields(data):
            if field_number == number and wire == _LEN:
                found = (start, end)
    except ValueError:
        return None
    return data[found[0] : found[1]] if found else None


def _varint_field(data: bytes, number: int) -> int | None:
    found = None
    try:
        for field_number, wire, value, _ in _fields(data):
            if field_number == number and wire == _VARINT:
                found = value
    except ValueError:
        return None
    return found
