"""Warm-up files: ``<version>/assets.extra/tf_serving_warmup_requests``, as TF Serving reads them.

A TFRecord file of ``PredictionLog`` records, each holding one ``PredictLog`` with a
PredictRequest. Written here without TensorFlow: the PredictRequest comes from the scenarios'
wire messages (``scenarios.tfs_wire``), the PredictionLog around it is two length-delimited
fields, and the TFRecord framing is TensorFlow's (length, masked CRC-32C of the length, data,
masked CRC-32C of the data).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from scenarios.payloads import PayloadError, PayloadSpec, build_payload
from scenarios.signatures import Signature, TensorSpec
from scenarios.tfs_wire import DTYPES, model_spec, predict_request_bytes

ASSETS_EXTRA = "assets.extra"
REQUESTS_FILE = "tf_serving_warmup_requests"
MAX_RECORDS = 1000  # TF Serving refuses a file with more (WarmupConsts::kMaxNumRecords)
PREDICT_LOG_FIELD = 6  # PredictionLog.predict_log (prediction_log.proto)
REQUEST_FIELD = 1  # PredictLog.request
_DT_NAMES = {numpy: name for name, (_, numpy) in DTYPES.items() if numpy}


def warmup_path(version_dir: Path) -> Path:
    return Path(version_dir) / ASSETS_EXTRA / REQUESTS_FILE


# --- the encodings ---------------------------------------------------------------------------


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum TFRecord uses."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    """TensorFlow's masked CRC (crc32c.h: rotate right by 15, add a constant)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    """One TFRecord: its length, the length's masked CRC, the data, the data's masked CRC."""
    length = struct.pack("<Q", len(data))
    return (
        length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data))
    )


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        bits, value = value & 0x7F, value >> 7
        out.append(bits | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def prediction_log(predict_request: bytes) -> bytes:
    """A serialized PredictionLog holding a PredictLog with this serialized PredictRequest."""
    return _field(PREDICT_LOG_FIELD, _field(REQUEST_FIELD, predict_request))


# --- writing a file --------------------------------------------------------------------------


def write_warmup_file(version_dir: Path, requests: Iterable[bytes]) -> Path:
    """Write serialized PredictRequests as the version's warm-up file (atomically); its path."""
    records = [tfrecord(prediction_log(request)) for request in requests]
    if not records or len(records) > MAX_RECORDS:
        raise ValueError(f"a warm-up file holds 1 to {MAX_RECORDS} records, got {len(records)}")
    path = warmup_path(version_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_bytes(b"".join(records))
    os.replace(scratch, path)
    return path


def signature_from_declaration(declared: Mapping[str, Any], name: str) -> Signature:
    """The scenarios' Signature of a built-in model, from its model.json declaration."""
    inputs = {
        alias: TensorSpec(alias, _DT_NAMES[info["dtype"]], tuple(info["shape"]))
        for alias, info in sorted(declared["inputs"].items())
    }
    return Signature(name, "tensorflow/serving/predict", inputs)


def predict_requests(
    signature: Signature,
    model_name: str,
    records: int,
    *,
    payload: str | None = None,
    rows: int = 1,
    seed: int = 0,
) -> list[bytes]:
    """``records`` serialized PredictRequests for ``signature``: the payload file's inputs in
    each, or random data of ``rows`` rows (a new seed per record). ValueError if they do not
    fit the signature."""
    spec = model_spec(model_name, signature=signature.name)
    requests = []
    for index in range(records):
        payload_spec = PayloadSpec(file=payload, rows=rows, seed=seed + index)
        try:
            inputs: dict[str, np.ndarray] = build_payload(
                signature, payload_spec, model_name
            ).inputs
        except PayloadError as exc:
            raise ValueError(str(exc)) from None
        requests.append(predict_request_bytes(spec, inputs))
    return requests


def write_for_declared_model(
    version_dir: Path,
    declared: Mapping[str, Any],
    records: int,
    *,
    payload: str | None = None,
    rows: int = 1,
    seed: int = 0,
) -> Path:
    """The warm-up file of a built-in model (``declared``: its model.json content)."""
    signature = signature_from_declaration(declared, "serving_default")
    requests = predict_requests(
        signature, str(declared["name"]), records, payload=payload, rows=rows, seed=seed
    )
    return write_warmup_file(version_dir, requests)


def signature_from_saved_model(version_dir: Path, name: str) -> Signature:
    """The named signature of a SavedModel on disk (imports TensorFlow's protos to read it);
    ValueError if the folder has no SavedModel or no such signature."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from tensorflow.core.protobuf import saved_model_pb2

    from scenarios.signatures import SignatureError, from_signature_def_map, pick

    path = Path(version_dir) / "saved_model.pb"
    try:
        saved_model = saved_model_pb2.SavedModel.FromString(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read a SavedModel at {path}: {exc}") from None
    if not saved_model.meta_graphs:
        raise ValueError(f"{path} holds no MetaGraph")
    signatures = from_signature_def_map(saved_model.meta_graphs[0])
    try:
        return pick(signatures, name, str(version_dir))
    except SignatureError as exc:
        raise ValueError(str(exc)) from None


def write_for_version(
    version_dir: Path,
    records: int,
    *,
    payload: str | None = None,
    model_name: str = "",
    signature: str = "serving_default",
    rows: int = 1,
) -> Path:
    """``batchbench warmup-file``: the signature from the base dir's model.json (a built-in
    model) or else from the SavedModel itself; ValueError with the reason when it cannot."""
    version_dir = Path(version_dir)
    if not version_dir.is_dir():
        raise ValueError(f"{version_dir}: no such model version folder")
    if rows < 1:
        raise ValueError(f"--rows must be >= 1, got {rows}")
    declared = version_dir.parent / "model.json"
    if declared.is_file() and signature == "serving_default":
        from harness.models.zoo import read_model_json

        found = signature_from_declaration(read_model_json(version_dir.parent), signature)
        model_name = model_name or str(read_model_json(version_dir.parent)["name"])
    else:
        found = signature_from_saved_model(version_dir, signature)
    requests = predict_requests(
        found, model_name or version_dir.parent.name, records, payload=payload, rows=rows
    )
    return write_warmup_file(version_dir, requests)
