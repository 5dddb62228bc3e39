"""TF Serving's REST JSON ↔ numpy arrays and tf.Examples (tensorflow_serving/util/json_tensor.cc).

Requests: ``instances`` (row format, one entry per batch item, a list of objects for several
named inputs) or ``inputs`` (columnar), optional ``signature_name``, ``{"b64": ...}`` for binary
strings; classify/regress take ``examples`` (and an optional ``context``) as tf.Examples.
Responses: ``predictions`` / ``outputs``, ``results``, ``{"error": ...}``; floats are written the
way TF Serving writes them (six significant digits when that round-trips, ``.0`` on whole
numbers, ``NaN``/``Infinity``), and string outputs whose alias ends in ``_bytes`` as
``{"b64": ...}``.

Every failure is a ServingError carrying TF Serving's code and message, which embed the
offending JSON as rapidjson's PrettyWriter prints it. Plain numeric payloads are converted with
one ``np.asarray`` call; only strings and payloads that need a diagnosis walk element by element.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import classification_pb2, input_pb2, regression_pb2

from reference_server.errors import ServingError, invalid_argument
from reference_server.servable import TensorInfo
from reference_server.tensor_codec import (
    DEFAULT_MAX_TENSOR_BYTES,
    TensorProtoError,
    check_tensor_size,
)

SIGNATURE_KEY = "signature_name"
INSTANCES_KEY = "instances"
INPUTS_KEY = "inputs"
CONTEXT_KEY = "context"
EXAMPLES_KEY = "examples"
B64_KEY = "b64"
BYTES_SUFFIX = "_bytes"

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_UINT32 = (0, 2**32 - 1)
_UINT64 = (0, 2**64 - 1)
# The largest integer each float type holds exactly (IsLosslessDecimal in json_tensor.cc).
_MAX_EXACT_INT = {"float": 2**24 - 1, "double": 2**53 - 1}
_FLOAT_MAX = {"float": float(np.finfo(np.float32).max), "double": float(np.finfo(np.float64).max)}
# rapidjson's Value::IsFloat(): a double within float's range.
_RAPIDJSON_FLOAT_LIMIT = 3.4028234e38
# Significant digits that always round-trip (std::numeric_limits<T>::max_digits10).
_FLOAT32 = np.dtype(np.float32)
_FLOAT64 = np.dtype(np.float64)
_MAX_DIGITS10 = {_FLOAT32: 9, _FLOAT64: 17}
# DataTypeString() names where they differ from tf.DType.name / numpy's.
_TF_TYPE_NAMES = {"float32": "float", "float64": "double", "float16": "half", "object": "string"}
_INT_TENSOR_TYPES = {
    "int32": _INT32,
    "int16": _INT32,
    "int8": _INT32,
    "uint8": _INT32,
    "int64": _INT64,
    "uint32": _UINT32,
    "uint64": _UINT64,
}


def _rapidjson_encoding_errors(error: UnicodeError) -> tuple[bytes, int]:
    """Bytes for what plain UTF-8 cannot encode: U+DC80..U+DCFF are the undecodable input
    bytes ``surrogateescape`` kept; other lone surrogates (from ``\\ud800``-style escapes) are
    written in their 3-byte form, as rapidjson's UTF-8 encoder writes any code point."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    out = bytearray()
    for char in error.object[error.start : error.end]:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:
            out.append(code - 0xDC00)
        else:
            out += char.encode("utf-8", "surrogatepass")
    return bytes(out), error.end


_RAPIDJSON_ERRORS = "batchbench-rapidjson"
codecs.register_error(_RAPIDJSON_ERRORS, _rapidjson_encoding_errors)


def utf8(text: str) -> bytes:
    """``text`` as the bytes rapidjson would hold for it: the request's own bytes where they
    were not UTF-8, lone surrogates from escapes as rapidjson encodes them. Never raises."""
    return text.encode("utf-8", _RAPIDJSON_ERRORS)


def type_name(name: str) -> str:
    """TensorFlow's DataTypeString() for a tf.DType or numpy dtype name."""
    return _TF_TYPE_NAMES.get(name, name)


def _type_of(info: TensorInfo) -> str:
    """The DataTypeString() of a signature input (inputs always have a dtype)."""
    assert info.dtype is not None, f"input {info.alias} has no dtype"
    return type_name(info.dtype.name)


# -- parsing -------------------------------------------------------------------------------------

# Python's json messages → rapidjson's GetParseError_En(), which TF Serving reports.
_PARSE_ERRORS = (
    ("Expecting value", "Invalid value."),
    ("Extra data", "The document root must not be followed by other values."),
    ("Expecting property name", "Missing a name for object member."),
    ("Expecting ':' delimiter", "Missing a colon after a name of object member."),
    ("Unterminated string", "Missing a closing quotation mark in string."),
    ("Invalid control character", "Invalid encoding in string."),
    ("Invalid \\uXXXX escape", "Incorrect hex digit after \\u escape in string."),
    ("Invalid \\escape", "Invalid escape character in string."),
)


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The request document, which must be a JSON object (TF Serving's ParseJson)."""
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    # rapidjson does not validate UTF-8; surrogateescape keeps any bytes intact the same way.
    text = body.decode("utf-8", "surrogateescape")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise invalid_argument(_parse_error_message(exc)) from None
    except RecursionError:
        raise invalid_argument("JSON Parse error: Unspecific syntax error. at offset: 0") from None
    if not isinstance(doc, dict):
        raise _format_error(doc, "Is not object")
    return doc


def _parse_error_message(exc: json.JSONDecodeError) -> str:
    offset = len(utf8(exc.doc[: exc.pos]))
    if not exc.doc.strip():
        reason = "The document is empty."
    elif exc.msg.startswith("Expecting ',' delimiter"):
        reason = _missing_comma_reason(exc.doc, exc.pos)
    else:
        reason = next(
            (ours for theirs, ours in _PARSE_ERRORS if exc.msg.startswith(theirs)),
            "Unspecific syntax error.",
        )
    return f"JSON Parse error: {reason} at offset: {offset}"


def _missing_comma_reason(doc: str, pos: int) -> str:
    """Python says "Expecting ',' delimiter" for both containers; rapidjson names the one."""
    stack: list[str] = []
    in_string = escaped = False
    for char in doc[:pos]:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            stack.append(char)
        elif char in "]}" and stack:
            stack.pop()
    if stack and stack[-1] == "{":
        return "Missing a comma or '}' after an object member."
    return "Missing a comma or ']' after an array element."


def signature_name(doc: Mapping[str, Any]) -> str:
    """The optional ``signature_name`` (TF Serving's FillSignature)."""
    name = doc.get(SIGNATURE_KEY, "")
    if not isinstance(name, str):
        raise invalid_argument(
            f"JSON Value: {json_value_to_string(doc)} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    return name


# -- predict requests ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PredictJsonRequest:
    """A decoded predict body: inputs by alias, and whether the answer uses the row format."""

    signature_name: str
    inputs: dict[str, np.ndarray]
    row_format: bool


InputInfoLookup = Callable[[str], Mapping[str, TensorInfo]]


def decode_predict_request(body: bytes, input_infos: InputInfoLookup) -> PredictJsonRequest:
    """Parse a predict body (TF Serving's FillPredictRequestFromJson).

    ``input_infos(signature_name)`` returns the signature's inputs by alias (or raises, e.g.
    NOT_FOUND for an unknown model); arrays come back in the signature's dtypes.
    """
    doc = parse_json_object(body)
    name = signature_name(doc)
    infos = dict(sorted(input_infos(name).items()))
    if not infos:
        raise invalid_argument(f"Failed to get input map for signature: {name or 'DEFAULT'}")
    # JSON true/false become numbers inside np.asarray; their absence makes the fast path safe.
    fast = b"true" not in body and b"false" not in body
    if INSTANCES_KEY in doc:
        if INPUTS_KEY in doc:
            raise _format_error(
                doc,
                "Not formatted correctly expecting only one of 'inputs' or "
                "'instances' keys to exist ",
            )
        instances = doc[INSTANCES_KEY]
        if not isinstance(instances, list):
            raise _format_error(doc, "Excepting 'instances' to be an list/array")
        if not instances:
            raise _format_error(doc, "No values in 'instances' array")
        inputs = (fast and _fast_rows(instances, infos)) or _careful_rows(instances, infos)
        return PredictJsonRequest(name, inputs, row_format=True)
    if INPUTS_KEY in doc:
        columns = doc[INPUTS_KEY]
        inputs = (fast and _fast_columns(columns, infos)) or _careful_columns(columns, infos)
        return PredictJsonRequest(name, inputs, row_format=False)
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def _is_b64_object(value: Any) -> bool:
    return type(value) is dict and len(value) == 1 and isinstance(value.get(B64_KEY), str)


def _is_named_object(value: Any) -> bool:
    return type(value) is dict and not _is_b64_object(value)


# Fast path: one np.asarray per input. Returns None whenever the careful path must decide.


def _fast_rows(instances: list, infos: dict[str, TensorInfo]) -> dict[str, np.ndarray] | None:
    if len(infos) == 1 and type(instances[0]) is not dict:
        alias, info = next(iter(infos.items()))
        array = _fast_array(instances, info)
        return None if array is None else {alias: array}
    if B64_KEY in infos or not all(
        type(row) is dict and row.keys() == infos.keys() for row in instances
    ):
        return None
    inputs = {}
    for alias, info in infos.items():
        array = _fast_array([row[alias] for row in instances], info)
        if array is None:
            return None
        inputs[alias] = array
    return inputs


def _fast_columns(columns: Any, infos: dict[str, TensorInfo]) -> dict[str, np.ndarray] | None:
    if type(columns) is not dict:
        if len(infos) != 1:
            return None
        alias, info = next(iter(infos.items()))
        array = _fast_array(columns, info)
        return None if array is None else {alias: array}
    if B64_KEY in columns or not infos.keys() <= columns.keys():
        return None
    inputs = {}
    for alias, info in infos.items():
        array = _fast_array(columns[alias], info)
        if array is None:
            return None
        inputs[alias] = array
    return inputs


def _fast_array(value: Any, info: TensorInfo) -> np.ndarray | None:
    """``value`` as an array of the input's dtype if it is a dense, exactly convertible block."""
    target = info.numpy_dtype
    if target.kind not in "fiub":
        return None
    try:
        array = np.asarray(value)
    except (ValueError, OverflowError, TypeError):
        return None  # ragged, or too large for any numpy integer
    kind = array.dtype.kind
    if target.kind == "b":
        return array if kind == "b" else None
    if target.kind == "f":
        return _fast_float(array, target) if kind in "if" and target in _MAX_DIGITS10 else None
    if kind != "i":
        return None  # floats for an integer input are a type error; let the careful path say so
    bounds = _INT_TENSOR_TYPES.get(_type_of(info))
    if bounds is None:
        return None  # a type JSON cannot carry (e.g. uint16): the careful path says so
    low, high = bounds
    if array.size and (array.min() < low or array.max() > high):
        return None
    # int_val holds 32 bits for the small types; TensorFlow narrows them like a C cast.
    return array.astype(np.int32 if high == _INT32[1] else target).astype(target, copy=False)


def _fast_float(array: np.ndarray, target: np.dtype) -> np.ndarray | None:
    # Below the exact-integer limit no value can be lossy, whether it was written as int or not.
    limit = _MAX_EXACT_INT[type_name(target.name)]
    # NaN fails both comparisons, so non-finite values go to the careful path too.
    if array.size and not (array.min() >= -limit and array.max() <= limit):
        return None
    return array.astype(target, copy=False)


# Careful path: TF Serving's element walk (FillTensorProto), with its messages.


def _careful_rows(instances: list, infos: dict[str, TensorInfo]) -> dict[str, np.ndarray]:
    """TF Serving's FillTensorMapFromInstancesList."""
    if type(instances[0]) is not dict and len(infos) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map"
        )
    builders: dict[str, _TensorBuilder] = {}
    if _is_named_object(instances[0]):
        for index, element in enumerate(instances):
            _add_named_row(index, element, infos, builders)
    else:
        alias = next(iter(infos))
        for index, element in enumerate(instances):
            if _is_named_object(element):
                raise invalid_argument(
                    f"Expecting value/list but got object at item {index} of input list"
                )
            try:
                _add_instance_item(element, alias, infos, builders)
            except ServingError as exc:
                raise _element_error(index, "", exc) from None
    return {alias: builder.array(len(instances)) for alias, builder in builders.items()}


def _add_named_row(
    index: int, element: Any, infos: dict[str, TensorInfo], builders: dict[str, _TensorBuilder]
) -> None:
    if not _is_named_object(element):
        raise invalid_argument(f"Expecting object but got list at item {index} of input list")
    for alias, value in element.items():
        try:
            _add_instance_item(value, alias, infos, builders)
        except ServingError as exc:
            raise _element_error(index, f" key: {alias}", exc) from None
    if element.keys() != infos.keys():
        raise invalid_argument(
            f"Failed to process element: {index} of 'instances' list. JSON object: "
            f"{json_value_to_string(element)} must only have keys: {','.join(infos)}"
        )


def _element_error(index: int, key: str, exc: ServingError) -> ServingError:
    if isinstance(exc, TensorParsingError):
        return exc  # TF Serving finds it after the JSON is read, naming only the input
    return invalid_argument(
        f"Failed to process element: {index}{key} of 'instances' list. "
        f"Error: {exc.code_name}: {exc.message}"
    )


class _TensorBuilder:
    """The values of one input collected over all instances, and the shape of one instance."""

    def __init__(self, info: TensorInfo) -> None:
        self.info = info
        self.values: list[Any] = []
        self.item_shape: list[int] | None = None
        self.item_size = 0

    def array(self, items: int) -> np.ndarray:
        shape = [items, *(self.item_shape or [])]
        check_shape(self.info, shape)
        return _to_array(self.values, shape, self.info)


def _add_instance_item(
    value: Any, alias: str, infos: dict[str, TensorInfo], builders: dict[str, _TensorBuilder]
) -> None:
    """TF Serving's AddInstanceItem: one instance's value for one input."""
    if alias not in infos:
        raise invalid_argument(f"JSON object: does not have named input: {alias}")
    builder = builders.setdefault(alias, _TensorBuilder(infos[alias]))
    shape = dense_shape(value)
    check_shape(infos[alias], [1, *shape])  # before the walk, whose depth is the rank
    before = len(builder.values)
    _fill_values(value, 0, shape, _type_of(infos[alias]), builder.values)
    size = len(builder.values) - before
    if builder.item_shape is None:
        builder.item_shape, builder.item_size = shape, size
    elif size != builder.item_size:
        raise invalid_argument(f"Expecting tensor size: {builder.item_size} but got: {size}")
    elif shape != builder.item_shape:
        raise invalid_argument(
            f"Expecting shape {_shape_text(builder.item_shape)} but got: {_shape_text(shape)}"
        )


def _careful_columns(columns: Any, infos: dict[str, TensorInfo]) -> dict[str, np.ndarray]:
    """TF Serving's FillTensorMapFromInputsMap."""
    if not isinstance(columns, dict) or _is_b64_object(columns):
        if len(infos) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                "required as per tensorinfo_map"
            )
        alias, info = next(iter(infos.items()))
        return {alias: _careful_tensor(columns, info)}
    inputs = {}
    for alias, info in infos.items():
        if alias not in columns:
            raise invalid_argument(f"Missing named input: {alias} in 'inputs' object.")
        inputs[alias] = _careful_tensor(columns[alias], info)
    return inputs


def _careful_tensor(value: Any, info: TensorInfo) -> np.ndarray:
    shape = dense_shape(value)
    check_shape(info, shape)  # before the walk, whose depth is the rank
    values: list[Any] = []
    _fill_values(value, 0, shape, _type_of(info), values)
    return _to_array(values, shape, info)


class TensorParsingError(ServingError):
    """A tensor the JSON describes but the server cannot build (TF Serving's FromProto fails)."""


def check_shape(info: TensorInfo, shape: list[int]) -> None:
    """The codec's shape/size check (tensor_codec.check_tensor_size), with TF Serving's answer
    to a tensor it cannot parse: INVALID_ARGUMENT ``tensor parsing error: <alias>``."""
    try:
        check_tensor_size(tuple(shape), info.numpy_dtype, DEFAULT_MAX_TENSOR_BYTES)
    except TensorProtoError:
        raise TensorParsingError(
            grpc.StatusCode.INVALID_ARGUMENT, f"tensor parsing error: {info.alias}"
        ) from None


def dense_shape(value: Any) -> list[int]:
    """The shape a nested list claims by its first elements (GetDenseTensorShape)."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill_values(value: Any, level: int, shape: list[int], dtype: str, out: list) -> None:
    """Append the leaves of ``value`` to ``out`` converted to ``dtype`` (FillTensorProto)."""
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise invalid_argument(
                f"JSON Value: {json_value_to_string(value)} found at incorrect level: "
                f"{level + 1} in the JSON DOM. Expected at level: {rank}"
            )
        out.append(_tensor_value(value, dtype))
        return
    if level >= rank:
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} "
            f"expected size: {shape[level]}"
        )
    for item in value:
        _fill_values(item, level + 1, shape, dtype, out)


def _tensor_value(value: Any, dtype: str) -> Any:
    """One JSON leaf as a value of ``dtype`` (AddValueToTensor / JsonDecodeBase64Object)."""
    if isinstance(value, dict):
        if dtype == "string":
            return decode_b64_object(value)
        raise _type_error(value, dtype)
    if dtype in ("float", "double"):
        if not _is_number(value):
            raise _type_error(value, dtype)
        if not _is_lossless(value, dtype):
            raise _lossy_error(value, dtype)
        return float(value)
    if dtype in _INT_TENSOR_TYPES:
        low, high = _INT_TENSOR_TYPES[dtype]
        if not (_is_number(value) and type(value) is int and low <= value <= high):
            raise _type_error(value, dtype)
        return value
    if dtype == "bool":
        if type(value) is not bool:
            raise _type_error(value, dtype)
        return value
    if dtype == "string":
        if not isinstance(value, str):
            raise _type_error(value, dtype)
        return utf8(value)
    raise ServingError(
        grpc.StatusCode.UNIMPLEMENTED,
        f"Conversion of JSON Value: {json_value_to_string(value)} to type: {dtype}",
    )


def decode_b64_object(value: Any) -> bytes:
    """The bytes of a ``{"b64": "..."}`` object (padding optional, as absl::Base64Unescape)."""
    if not _is_b64_object(value):
        raise invalid_argument(
            f"JSON Value: {json_value_to_string(value)} not formatted correctly for base64 data"
        )
    text = value[B64_KEY]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None


def _to_array(values: list, shape: list[int], info: TensorInfo) -> np.ndarray:
    target = info.numpy_dtype
    if target.kind == "O":
        array = np.empty(len(values), dtype=object)
        array[:] = values
    elif target.kind in "iu" and target.itemsize < 8:
        # int_val is 32 bits wide; TensorFlow narrows it to the tensor type like a C cast.
        array = np.array(values, dtype=np.int64).astype(target)
    else:
        array = np.array(values, dtype=target)
    return array.reshape(shape)


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


def _as_rapidjson_number(value: int | float) -> int | float:
    """rapidjson keeps integers in [-2**63, 2**64) exactly and parses others as doubles."""
    if type(value) is int and not _INT64[0] <= value <= _UINT64[1]:
        return float(value)
    return value


def _is_lossless(value: int | float, dtype: str) -> bool:
    """IsLosslessDecimal<T>: integers must fit the mantissa; doubles must fit the range."""
    value = _as_rapidjson_number(value)
    if type(value) is int:
        return abs(value) <= _MAX_EXACT_INT[dtype]
    if not math.isfinite(value):
        return True
    return -_FLOAT_MAX[dtype] <= value <= _FLOAT_MAX[dtype]


def _type_error(value: Any, dtype: str) -> ServingError:
    return invalid_argument(
        f"JSON Value: {json_value_to_string(value)} Type: {json_type_name(value)} "
        f"is not of expected type: {dtype}"
    )


def _lossy_error(value: Any, target: str) -> ServingError:
    return invalid_argument(
        f"Cannot convert JSON value: {json_value_to_string(value)} to {target} "
        "without loss of precision."
    )


def _format_error(value: Any, message: str) -> ServingError:
    return invalid_argument(f"JSON Value: {json_value_to_string(value)} {message}")


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


# -- classify / regress requests ----------------------------------------------------------------


def decode_examples_request(body: bytes) -> tuple[str, input_pb2.Input]:
    """A classify/regress body as (signature_name, Input) (FillClassifyRegressRequestFromJson)."""
    doc = parse_json_object(body)
    name = signature_name(doc)
    request_input = input_pb2.Input()
    has_context = CONTEXT_KEY in doc
    if has_context:
        _fill_example(doc[CONTEXT_KEY], request_input.example_list_with_context.context)
    if EXAMPLES_KEY not in doc:
        raise _format_error(
            doc, "When method is classify, key 'examples' is expected and was not found"
        )
    examples = doc[EXAMPLES_KEY]
    if not isinstance(examples, list):
        raise _format_error(doc, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise _format_error(doc, "'examples' value is an empty array")
    target = (
        request_input.example_list_with_context.examples
        if has_context
        else request_input.example_list.examples
    )
    for value in examples:
        _fill_example(value, target.add())
    return name, request_input


def _fill_example(value: Any, example: example_pb2.Example) -> None:
    """MakeExampleFromJsonObject: each key a feature, each value (or list of values) its list."""
    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {json_type_name(value)}")
    for name, content in value.items():
        if not _is_utf8(name):
            # TF Serving would keep the raw bytes as the map key; protobuf here cannot.
            raise invalid_argument(f"Feature name {_json_string(name)} is not valid UTF-8")
        items = content if isinstance(content, list) else [content]
        example.features.feature[name].CopyFrom(_feature(name, items))


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: from escapes or undecodable input bytes
        return False
    return True


def _feature(name: str, items: list) -> feature_pb2.Feature:
    kind: str | None = None
    values: list[Any] = []
    for item in items:
        item_kind = _feature_kind(name, item)
        if kind not in (None, item_kind):
            raise invalid_argument(
                f"Unexpected element type in feature: {name} expecting type: {kind}"
            )
        kind = item_kind
        values.append(_feature_value(name, item_kind, item))
    feature = feature_pb2.Feature()
    if kind is not None:
        getattr(feature, f"{kind}_list").value.extend(values)
    return feature


def _feature_kind(name: str, item: Any) -> str:
    """The feature list a JSON element belongs in (AddValueToFeature's type switch)."""
    if isinstance(item, bool):
        return "int64"
    if isinstance(item, str) or _is_b64_object(item):
        return "bytes"
    if not _is_number(item):
        raise invalid_argument(
            f"Feature: {name} has element with unexpected JSON type: {json_type_name(item)}"
        )
    return "float" if type(_as_rapidjson_number(item)) is float else "int64"


def _feature_value(name: str, kind: str, item: Any) -> Any:
    if kind == "bytes":
        return utf8(item) if isinstance(item, str) else (decode_b64_object(item))
    if kind == "float":
        if not _is_lossless(item, "float"):
            raise _lossy_error(item, "float")
        return float(item)
    if item > _INT64[1]:
        raise invalid_argument(f"Feature: {name} has uint64 element. Only int64 is supported.")
    return int(item)


# -- responses ------------------------------------------------------------------------------------


def encode_predict_response(outputs: Mapping[str, np.ndarray], *, row_format: bool) -> bytes:
    """``{"predictions": ...}`` (row format) or ``{"outputs": ...}`` (MakeJsonFromTensors)."""
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    named = dict(sorted(outputs.items()))
    body = _row_format(named) if row_format else _columnar_format(named)
    return utf8(body)


def _row_format(outputs: dict[str, np.ndarray]) -> str:
    batch_size = 0
    for alias, array in outputs.items():
        if array.ndim == 0:
            raise invalid_argument(f"Tensor name: {alias} has no shape information ")
        if array.shape[0] < 1:
            raise invalid_argument(f"Tensor name: {alias} has invalid batch size: {array.shape[0]}")
        if batch_size and array.shape[0] != batch_size:
            raise invalid_argument(
                f"Tensor name: {alias} has inconsistent batch size: {array.shape[0]} "
                f"expecting: {batch_size}"
            )
        batch_size = array.shape[0]
    rows = {alias: _row_texts(alias, array) for alias, array in outputs.items()}
    if len(rows) == 1:
        return '{"predictions": [' + ",".join(next(iter(rows.values()))) + "]}"
    keys = [json.dumps(alias, ensure_ascii=False) + ": " for alias in rows]
    items = [
        "{"
        + ", ".join(key + texts[i] for key, texts in zip(keys, rows.values(), strict=True))
        + "}"
        for i in range(batch_size)
    ]
    return '{"predictions": [' + ",".join(items) + "]}"


def _columnar_format(outputs: dict[str, np.ndarray]) -> str:
    texts = {alias: _tensor_text(alias, array) for alias, array in outputs.items()}
    if len(texts) == 1:
        return '{"outputs": ' + next(iter(texts.values())) + "}"
    fields = [json.dumps(alias, ensure_ascii=False) + ": " + text for alias, text in texts.items()]
    return '{"outputs": {' + ", ".join(fields) + "}}"


def _tensor_text(alias: str, array: np.ndarray) -> str:
    if array.ndim == 0:
        return _value_tokens(alias, array.reshape(1))[0]
    return "[" + ",".join(_row_texts(alias, array)) + "]"


def _row_texts(alias: str, array: np.ndarray) -> list[str]:
    """The JSON text of each item along the first dimension."""
    if array.size == 0:
        _value_tokens(alias, array.reshape(-1))  # still refuse unsupported types
        return [json.dumps(item) for item in array.tolist()]
    tokens = _value_tokens(alias, array.reshape(-1))
    for dim in reversed(array.shape[1:]):
        tokens = ["[" + ",".join(tokens[i : i + dim]) + "]" for i in range(0, len(tokens), dim)]
    return tokens


def _value_tokens(alias: str, flat: np.ndarray) -> list[str]:
    """JSON tokens for a flat array (AddSingleValueAndAdvance)."""
    kind = flat.dtype.kind
    if flat.dtype in _MAX_DIGITS10:
        return decimal_tokens(flat)
    if kind in "iu" and flat.dtype != np.uint16:
        return [str(v) for v in flat.tolist()]
    if kind == "b":
        return ["true" if v else "false" for v in flat.tolist()]
    if kind in "OSU":
        return _string_tokens(flat, as_bytes=alias.endswith(BYTES_SUFFIX))
    raise invalid_argument(
        f"Failed to write JSON value for tensor type: {type_name(flat.dtype.name)}"
    )


def _string_tokens(flat: np.ndarray, *, as_bytes: bool) -> list[str]:
    values = [v if isinstance(v, bytes) else str(v).encode() for v in flat.tolist()]
    if as_bytes:
        return ['{"b64": "' + base64.b64encode(v).decode("ascii") + '"}' for v in values]
    return [json.dumps(v.decode("utf-8", "surrogateescape"), ensure_ascii=False) for v in values]


def decimal_tokens(flat: np.ndarray) -> list[str]:
    """TF Serving's WriteDecimal for a float32/float64 array, vectorised where it can be."""
    values = flat.tolist()
    tokens = [format(v, ".6g") for v in values]
    parsed = np.array(tokens, dtype=np.float64).astype(flat.dtype)
    redo = np.flatnonzero((parsed != flat) | ~np.isfinite(flat))
    digits = _MAX_DIGITS10[flat.dtype]
    for i in redo.tolist():
        tokens[i] = format(values[i], f".{digits}g")
    tokens = [t if "." in t or "e" in t else t + ".0" for t in tokens]
    for i in redo.tolist():
        if not math.isfinite(values[i]):
            tokens[i] = _non_finite(values[i])
    return tokens


def write_decimal(value: float, dtype: np.dtype = _FLOAT32) -> str:
    """One float as TF Serving writes it (see decimal_tokens)."""
    return decimal_tokens(np.array([value], dtype=dtype))[0]


def _non_finite(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "-Infinity" if value < 0 else "Infinity"


def encode_classification_result(result: classification_pb2.ClassificationResult) -> bytes:
    """``{"results": [[[label, score], ...], ...]}`` (MakeJsonFromClassificationResult)."""
    if not result.classifications:
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    rows = []
    for classifications in result.classifications:
        labels = [json.dumps(c.label, ensure_ascii=False) for c in classifications.classes]
        scores = decimal_tokens(np.array([c.score for c in classifications.classes], np.float32))
        pairs = [
            "[" + label + ", " + score + "]" for label, score in zip(labels, scores, strict=True)
        ]
        rows.append("[" + ", ".join(pairs) + "]")
    return ('{"results": [' + ", ".join(rows) + "]}").encode()


def encode_regression_result(result: regression_pb2.RegressionResult) -> bytes:
    """``{"results": [value, ...]}`` (MakeJsonFromRegressionResult)."""
    if not result.regressions:
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    values = np.array([r.value for r in result.regressions], dtype=np.float32)
    return ('{"results": [' + ", ".join(decimal_tokens(values)) + "]}").encode()


def encode_error(message: str) -> bytes:
    """``{"error": "<message>"}`` (MakeJsonFromStatus)."""
    return utf8(json.dumps({"error": message}, ensure_ascii=False))


# -- JSON values in messages ----------------------------------------------------------------------


def json_type_name(value: Any) -> str:
    """rapidjson's type name as TF Serving prints it (JsonTypeString)."""
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def json_value_to_string(value: Any) -> str:
    """A JSON value as TF Serving's error messages show it (JsonValueToString).

    A top-level double is written with WriteDecimal (as float when it lies in float's range);
    anything else as rapidjson's PrettyWriter writes it: four-space indents, shortest doubles.
    """
    if _is_number(value):
        number = _as_rapidjson_number(value)
        if type(number) is float:
            in_float_range = -_RAPIDJSON_FLOAT_LIMIT <= number <= _RAPIDJSON_FLOAT_LIMIT
            return write_decimal(number, _FLOAT32 if in_float_range else _FLOAT64)
    return _pretty(value, 0)


def _pretty(value: Any, depth: int) -> str:
    # Iterative: a document nested as deep as the parser allows must not exhaust Python's
    # recursion limit while its error message is written.
    out: list[str] = []
    todo: list[Any] = [(value, depth)]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item[0], dict | list) and item[0]:
            todo.extend(reversed(_container_parts(*item)))
        else:
            out.append(_pretty_leaf(item[0]))
    return "".join(out)


def _container_parts(value: dict | list, depth: int) -> list[Any]:
    """A non-empty container as text pieces and (member, depth) pairs, in writing order."""
    inner = " " * 4 * (depth + 1)
    is_object = isinstance(value, dict)
    members = value.items() if isinstance(value, dict) else ((None, v) for v in value)
    parts: list[Any] = ["{\n" if is_object else "[\n"]
    for index, (key, member) in enumerate(members):
        name = _json_string(key) + ": " if is_object else ""
        parts.append((",\n" if index else "") + inner + name)
        parts.append((member, depth + 1))
    parts.append("\n" + " " * 4 * depth + ("}" if is_object else "]"))
    return parts


def _pretty_leaf(value: Any) -> str:
    if isinstance(value, dict | list):
        return "{}" if isinstance(value, dict) else "[]"
    if isinstance(value, str):
        return _json_string(value)
    if _is_number(value):
        number = _as_rapidjson_number(value)
        return str(number) if type(number) is int else rapidjson_double(number)
    return json.dumps(value)  # true, false, null


def _json_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def rapidjson_double(value: float) -> str:
    """A double as rapidjson's Writer::Double writes it (Grisu shortest digits, Prettify)."""
    if not math.isfinite(value):
        return _non_finite(value)
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    digits, exponent = _shortest_digits(abs(value))
    length = len(digits)
    kk = length + exponent  # value = 0.digits × 10^kk
    if exponent >= 0 and kk <= 21:
        text = digits + "0" * exponent + ".0"
    elif 0 < kk <= 21:
        text = digits[:kk] + "." + digits[kk:]
    elif -6 < kk <= 0:
        text = "0." + "0" * -kk + digits
    elif length == 1:
        text = f"{digits}e{kk - 1}"
    else:
        text = f"{digits[0]}.{digits[1:]}e{kk - 1}"
    return sign + text


def _shortest_digits(value: float) -> tuple[str, int]:
    """(significant digits, decimal exponent) with value == int(digits) × 10^exponent."""
    mantissa, _, exp_text = repr(value).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    exponent = int(exp_text or 0) - len(fraction)
    stripped = digits.rstrip("0")
    return stripped, exponent + len(digits) - len(stripped)
