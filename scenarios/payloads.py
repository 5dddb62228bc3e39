"""Request payloads: random data shaped by a signature, or arrays read from a file, checked.

A payload is built once before a test starts and encoded once per protocol; a payload that does
not fit the signature is refused here with a message that says what is wrong.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scenarios.signatures import Signature, TensorSpec, describe, shape_text
from scenarios.tfs_wire import DTYPES

STRING_LENGTH = 8  # bytes in each random string element
_PRINTABLE = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789", dtype=np.uint8)


class PayloadError(ValueError):
    """A payload that cannot be built, read, or that does not match the signature."""


@dataclass(frozen=True)
class Payload:
    """Checked input arrays, by alias, and where they came from ("random" or a file path)."""

    inputs: dict[str, np.ndarray]
    source: str

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary for result files."""
        return {
            "source": self.source,
            "inputs": {
                alias: {"dtype": str(array.dtype), "shape": list(array.shape)}
                for alias, array in self.inputs.items()
            },
        }


@dataclass(frozen=True)
class PayloadSpec:
    """How to build a payload: from `file`, or random with these rows / sizes / seed."""

    file: str | None = None
    rows: int = 1
    fill_dim: int = 8
    seed: int = 0
    int_high: int = 100


def build_payload(signature: Signature, spec: PayloadSpec, model: str) -> Payload:
    """Build and check the payload for `signature`; PayloadError with the reason otherwise."""
    if spec.file:
        raw = load_inputs(Path(spec.file), signature)
        return Payload(check_inputs(signature, raw, f"payload file {spec.file}", model), spec.file)
    rng = np.random.default_rng(spec.seed)
    inputs = {
        alias: random_array(tensor, spec.rows, spec.fill_dim, spec.int_high, rng)
        for alias, tensor in signature.inputs.items()
    }
    return Payload(check_inputs(signature, inputs, "random payload", model), "random")


def concrete_shape(tensor: TensorSpec, rows: int, fill_dim: int) -> tuple[int, ...]:
    """The shape to generate: dimension 0 (the batch) = rows, other -1 dimensions = fill_dim."""
    if tensor.shape is None:
        return (rows,)
    if not tensor.shape:
        return ()
    first = rows if tensor.shape[0] == -1 else tensor.shape[0]
    return (first, *(fill_dim if size == -1 else size for size in tensor.shape[1:]))


def random_array(
    tensor: TensorSpec, rows: int, fill_dim: int, int_high: int, rng: np.random.Generator
) -> np.ndarray:
    """Random data of the tensor's dtype: floats in [0, 1), ints in [0, int_high), strings."""
    numpy_name = DTYPES.get(tensor.dtype, (0, None))[1]
    if numpy_name is None:
        raise PayloadError(
            f"cannot make random data for input {tensor.alias!r} of {tensor.dtype}; "
            "give a payload file instead"
        )
    shape = concrete_shape(tensor, rows, fill_dim)
    kind = np.dtype(numpy_name).kind
    if kind == "O":
        letters = rng.choice(_PRINTABLE, size=(*shape, STRING_LENGTH))
        flat = [row.tobytes() for row in letters.reshape(-1, STRING_LENGTH)]
        return np.array(flat, dtype=object).reshape(shape)
    if kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if kind in "iu":
        return rng.integers(0, int_high, size=shape).astype(numpy_name)
    if kind == "c":
        return (rng.random(shape) + 1j * rng.random(shape)).astype(numpy_name)
    return rng.random(shape).astype(numpy_name)


def load_inputs(path: Path, signature: Signature) -> dict[str, np.ndarray]:
    """Arrays from .npy (one input), .npz (one array per input) or a TF Serving REST body;
    PayloadError naming the file when it cannot be read or does not hold a payload."""
    if not path.is_file():
        raise PayloadError(f"payload file {path} does not exist")
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise PayloadError(f"payload file {path}: use .npy, .npz or .json (a TF Serving REST body)")
    try:
        return reader(path, signature)
    except PayloadError as exc:
        raise PayloadError(f"payload file {path}: {exc}") from None
    except (OSError, ValueError, RecursionError) as exc:  # JSON nested past the parser's stack
        raise PayloadError(
            f"cannot read payload file {path}: {exc or type(exc).__name__}"
        ) from None


def _read_npy(path: Path, signature: Signature) -> dict[str, np.ndarray]:
    array = _numpy_file(path)
    if not isinstance(array, np.ndarray):
        raise PayloadError("holds an .npz archive; name it .npz")
    return _single_input(signature, array, "the file")


def _read_npz(path: Path, signature: Signature) -> dict[str, np.ndarray]:
    arrays = _numpy_file(path)
    if not isinstance(arrays, dict):
        raise PayloadError("holds one array, not an .npz archive; name it .npy")
    return arrays


def _numpy_file(path: Path) -> np.ndarray | dict[str, np.ndarray]:
    """An .npy's array or an .npz's arrays (np.load goes by content, not by suffix).

    The bytes may be anything, and numpy's header and archive parsers then raise whatever their
    own parsers do (EOFError, BadZipFile, tokenize's TokenError, SyntaxError, RuntimeError for
    an "encrypted" member...): any of it means the file is not a readable numpy file. The file
    is opened here, not by np.load, which leaves it open when the archive it finds is broken.
    """
    try:
        with path.open("rb") as file:
            loaded = np.load(file, allow_pickle=False)
            if isinstance(loaded, np.ndarray):
                return loaded
            return {name: loaded[name] for name in loaded.files}  # read while the file is open
    except OSError:
        raise
    except Exception as exc:
        raise PayloadError(f"not a readable numpy file ({type(exc).__name__}: {exc})") from None


def _read_json(path: Path, signature: Signature) -> dict[str, np.ndarray]:
    return inputs_from_rest_body(json.loads(path.read_text()), signature)


_READERS: dict[str, Callable[[Path, Signature], dict[str, np.ndarray]]] = {
    ".npy": _read_npy,
    ".npz": _read_npz,
    ".json": _read_json,
}


def _single_input(signature: Signature, array: np.ndarray, where: object) -> dict[str, np.ndarray]:
    if len(signature.inputs) != 1:
        raise PayloadError(
            f"{where} holds one array, but signature {signature.name!r} has inputs "
            f"{', '.join(signature.inputs)}; give one array per input (.npz, or named JSON inputs)"
        )
    return {next(iter(signature.inputs)): array}


def inputs_from_rest_body(body: Any, signature: Signature) -> dict[str, np.ndarray]:
    """Arrays from a REST predict body, row ("instances") or columnar ("inputs") format."""
    if not isinstance(body, dict) or not ({"instances", "inputs"} & body.keys()):
        raise PayloadError('a JSON payload needs "instances" (row format) or "inputs" (columnar)')
    if "inputs" in body:
        columns = body["inputs"]
        if isinstance(columns, dict):
            return {alias: _json_array(value) for alias, value in columns.items()}
        return _single_input(signature, _json_array(columns), "the JSON payload")
    instances = body["instances"]
    if not isinstance(instances, list) or not instances:
        raise PayloadError('"instances" must be a non-empty list')
    if all(isinstance(row, dict) and "b64" not in row for row in instances):
        aliases = sorted({alias for row in instances for alias in row})
        missing = [alias for alias in aliases if any(alias not in row for row in instances)]
        if missing:
            raise PayloadError(f"every instance must name the same inputs; missing: {missing}")
        return {alias: _json_array([row[alias] for row in instances]) for alias in aliases}
    return _single_input(signature, _json_array(instances), "the JSON payload")


def _json_array(value: Any) -> np.ndarray:
    decoded = _map_nested(value, _b64_decode)
    try:
        if _has_bytes(decoded):
            return np.array(decoded, dtype=object)
        return np.array(decoded)
    except ValueError as exc:
        raise PayloadError(f"JSON payload values are not a rectangular array: {exc}") from None


def _b64_decode(item: Any) -> Any:
    if isinstance(item, dict) and set(item) == {"b64"}:
        if not isinstance(item["b64"], str):
            raise PayloadError(f'"b64" holds a base64 string (got {type(item["b64"]).__name__})')
        return base64.b64decode(item["b64"])
    return item


def _has_bytes(value: Any) -> bool:
    if isinstance(value, list):
        return any(_has_bytes(item) for item in value)
    return isinstance(value, bytes)


def _map_nested(value: Any, leaf: Callable[[Any], Any]) -> Any:
    if isinstance(value, list):
        return [_map_nested(item, leaf) for item in value]
    return leaf(value)


def check_inputs(
    signature: Signature, inputs: Mapping[str, np.ndarray], where: str, model: str
) -> dict[str, np.ndarray]:
    """Inputs cast to the signature's dtypes; PayloadError saying what does not match."""
    context = f"{where} does not match signature {signature.name!r} of model {model!r}"
    context += f" ({describe(signature)})"
    missing = sorted(set(signature.inputs) - set(inputs))
    unknown = sorted(set(inputs) - set(signature.inputs))
    if missing or unknown:
        parts = [f"missing input(s) {missing}"] * bool(missing)
        parts += [f"unknown input(s) {unknown}"] * bool(unknown)
        raise PayloadError(f"{context}: {'; '.join(parts)}")
    checked = {}
    for alias, tensor in signature.inputs.items():
        problem, array = _check_one(tensor, np.asarray(inputs[alias]))
        if problem:
            raise PayloadError(f"{context}: input {alias!r} {problem}")
        checked[alias] = array
    return checked


def _check_one(tensor: TensorSpec, array: np.ndarray) -> tuple[str | None, np.ndarray]:
    """(problem or None, the array cast to the tensor's dtype)."""
    numpy_name = DTYPES.get(tensor.dtype, (0, None))[1]
    if numpy_name is None:
        return f"has {tensor.dtype}, which this scenario cannot send", array
    cast = _cast(array, np.dtype(numpy_name))
    if cast is None:
        return f"has dtype {array.dtype}; the signature wants {tensor.dtype}", array
    if tensor.shape is None:
        return None, cast
    if array.ndim != len(tensor.shape):
        return f"has shape {array.shape}; the signature wants {shape_text(tensor.shape)}", array
    for index, (have, want) in enumerate(zip(array.shape, tensor.shape, strict=True)):
        if want != -1 and have != want:
            return (
                f"has shape {array.shape}; dimension {index} must be {want} "
                f"(signature {shape_text(tensor.shape)})",
                array,
            )
    return None, cast


def _cast(array: np.ndarray, want: np.dtype) -> np.ndarray | None:
    """`array` as `want` when that loses nothing essential (no float → int, no number ↔ text)."""
    have = array.dtype.kind
    if want.kind == "O":
        if have not in "OSU":
            return None
        return np.array([_as_bytes(item) for item in array.reshape(-1)], dtype=object).reshape(
            array.shape
        )
    allowed = {"b": "b", "i": "biu", "u": "bu", "f": "biuf", "c": "biufc"}[want.kind]
    if have not in allowed:
        return None
    return array.astype(want)


def _as_bytes(item: object) -> bytes:
    return item if isinstance(item, bytes) else str(item).encode()


def rest_body(inputs: Mapping[str, np.ndarray], signature_name: str, *, columnar: bool) -> bytes:
    """A TF Serving REST predict body: row format ("instances") or columnar ("inputs")."""
    body: dict[str, Any] = {}
    if signature_name:
        body["signature_name"] = signature_name
    if columnar:
        body["inputs"] = {alias: _jsonable(array) for alias, array in inputs.items()}
    else:
        body["instances"] = _instances(inputs)
    return json.dumps(body, separators=(",", ":")).encode()


def _instances(inputs: Mapping[str, np.ndarray]) -> list[Any]:
    if any(array.ndim == 0 for array in inputs.values()):
        raise PayloadError("the row format needs a batch dimension; use the columnar format")
    if len(inputs) == 1:
        return _jsonable(next(iter(inputs.values())))
    rows = {array.shape[0] for array in inputs.values()}
    if len(rows) != 1:
        raise PayloadError(
            f"the row format needs the same dimension 0 in every input, got {sorted(rows)}; "
            "use the columnar format"
        )
    columns = {alias: _jsonable(array) for alias, array in inputs.items()}
    return [{alias: column[i] for alias, column in columns.items()} for i in range(rows.pop())]


def _jsonable(array: np.ndarray) -> Any:
    if array.dtype.kind in "OSU":
        return _map_nested(array.tolist(), _b64_object)
    if array.dtype.kind == "c":
        raise PayloadError("complex inputs cannot be sent as JSON; use gRPC")
    if array.dtype in (np.float32, np.float16):
        # The shortest text that reads back as the same float32, not its float64 expansion:
        # 0.54881352 rather than 0.5488135218620300 (the body is 2-3 times smaller).
        short = [float(str(value)) for value in array.reshape(-1)]
        return np.array(short, dtype=np.float64).reshape(array.shape).tolist()
    return array.tolist()


def _b64_object(item: object) -> dict[str, str]:
    return {"b64": base64.b64encode(_as_bytes(item)).decode()}
