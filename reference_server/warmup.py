"""Model warm-up: replay ``<version>/assets.extra/tf_serving_warmup_requests`` before serving.

As TF Serving's saved_model_warmup(_util).cc: the file is a TFRecord of ``PredictionLog``
records (Predict, Classify, Regress, MultiInference logs); each is run
``--num_request_iterations_for_warmup`` times (1 when the flag is 0) on the freshly loaded
version, before it becomes AVAILABLE, so the first client request does not pay for the
session's lazy initialisation. A version without the file loads as before. Errors fail the
version's load with TF Serving's texts: a record that is not a PredictionLog
(INVALID_ARGUMENT ``Failed to parse warmup record: ... from PATH``), more than 1,000 records,
a file that is not TFRecord (DATA_LOSS ``corrupted record at 0. Please verify your warmup data
is in TFRecord format.``), a SessionRunLog (UNIMPLEMENTED), or a request that fails.

TF Serving sends warm-up requests through the model's (batching) session; here they run on the
servable directly, which initialises the same session state (graph optimisation, memory,
callables); the batch scheduler has no lazy state to warm.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from reference_server.errors import ServingError, invalid_argument
from reference_server.grpc_api import decode_inputs
from reference_server.inference import (
    CLASSIFY_METHOD,
    check_inputs,
    check_multi_inference_tasks,
    classification_aliases,
    classification_result,
    output_aliases,
    regression_aliases,
    regression_result,
    serialized_examples,
)
from reference_server.servable import Servable

log = logging.getLogger(__name__)

ASSETS_EXTRA = "assets.extra"  # kSavedModelAssetsExtraDirectory
REQUESTS_FILE = "tf_serving_warmup_requests"  # WarmupConsts::kRequestsFileName
MAX_RECORDS = 1000  # WarmupConsts::kMaxNumRecords


@dataclass(frozen=True)
class WarmupRecord:
    """One version's warm-up, for the metrics: TF Serving labels the latency by the version's
    path and the final status (``OK`` or ``CODE: message``)."""

    model_path: str
    status: str
    seconds: float
    records: int


WarmupObserver = Callable[[WarmupRecord], None]


def warmup_file(version_dir: Path) -> Path:
    return Path(version_dir) / ASSETS_EXTRA / REQUESTS_FILE


def run_warmup(
    servable: Servable, iterations: int = 1, observe: WarmupObserver | None = None
) -> int:
    """Replay the version's warm-up file (if any) ``iterations`` times per record; return the
    number of records read. ServingError (the load's error) when the file or a request fails.

    As in TF Serving, the latency metric is observed when the file was read to its end or the
    reader failed (DATA_LOSS), not when a record failed to parse or run.
    """
    path = warmup_file(servable.path)
    if not path.is_file():
        log.info("No warmup data file found at %s", path)
        return 0
    log.info("Starting to read warmup data for model at %s", path)
    started = time.perf_counter()
    records, read_error = _replay(servable, path, max(iterations, 1))
    seconds = time.perf_counter() - started
    status = "OK" if read_error is None else f"{read_error.code_name}: {read_error.message}"
    if observe is not None:
        observe(WarmupRecord(str(servable.path), status, seconds, records))
    if read_error is not None:
        raise read_error
    log.info(
        "Finished reading warmup data for model at %s. Number of warmup records read: %d. "
        "Elapsed time (microseconds): %d.",
        path,
        records,
        round(seconds * 1e6),
    )
    return records


def _replay(servable: Servable, path: Path, iterations: int) -> tuple[int, ServingError | None]:
    """Run every record; return how many were read and the reader's error (None at EOF)."""
    records = 0
    # The record iterator (deprecated, but it raises TensorFlow's reader errors with their
    # plain text, which tf.data decorates with its op's name).
    reader = tf.compat.v1.io.tf_record_iterator(str(path))
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return records, None
        except tf.errors.OpError as exc:
            return records, _read_error(exc)
        prediction_log = _parse(record, path)
        for _ in range(iterations):
            run_prediction_log(servable, prediction_log)
        records += 1
        if records > MAX_RECORDS:
            raise invalid_argument(
                f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}"
            )


def _read_error(exc: tf.errors.OpError) -> ServingError:
    code = grpc.StatusCode.DATA_LOSS if isinstance(exc, tf.errors.DataLossError) else None
    if code is None:
        return ServingError(grpc.StatusCode.UNKNOWN, exc.message)
    return ServingError(
        code, f"{exc.message}. Please verify your warmup data is in TFRecord format."
    )


def _parse(record: bytes, path: Path) -> prediction_log_pb2.PredictionLog:
    prediction_log = prediction_log_pb2.PredictionLog()
    try:
        prediction_log.ParseFromString(record)
    except Exception:  # protobuf's DecodeError; the record is quoted as TF Serving does
        text = record.decode("utf-8", "backslashreplace")
        raise invalid_argument(f"Failed to parse warmup record: {text} from {path}") from None
    return prediction_log


def run_prediction_log(
    servable: Servable, prediction_log: prediction_log_pb2.PredictionLog
) -> None:
    """Run the request one PredictionLog holds on ``servable`` (its answer is not kept)."""
    kind = prediction_log.WhichOneof("log_type")
    if kind == "predict_log":
        _predict(servable, prediction_log.predict_log.request)
    elif kind == "classify_log":
        request = prediction_log.classify_log.request
        _classify(servable, request.model_spec.signature_name, request.input)
    elif kind == "regress_log":
        request = prediction_log.regress_log.request
        _regress(servable, request.model_spec.signature_name, request.input)
    elif kind == "multi_inference_log":
        _multi_inference(servable, prediction_log.multi_inference_log.request)
    elif kind == "session_run_log":
        number = prediction_log_pb2.PredictionLog.SESSION_RUN_LOG_FIELD_NUMBER
        raise ServingError(
            grpc.StatusCode.UNIMPLEMENTED, f"Unsupported log_type for warmup: {number}"
        )


def _predict(servable: Servable, request) -> None:
    signature = servable.signature(request.model_spec.signature_name)
    inputs = decode_inputs(signature, request.inputs)
    check_inputs(signature, inputs)
    servable.run(signature, inputs, output_aliases(signature, tuple(request.output_filter)))


def _classify(servable: Servable, signature_name: str, request_input) -> None:
    signature = servable.signature(signature_name)
    examples = serialized_examples(request_input)
    input_alias, class_alias, score_alias = classification_aliases(signature)
    aliases = tuple(a for a in (class_alias, score_alias) if a)
    check_inputs(signature, {input_alias: examples})
    outputs = servable.run(signature, {input_alias: examples}, aliases)
    classification_result(
        len(examples),
        _get(outputs, class_alias),
        _get(outputs, score_alias),
    )


def _regress(servable: Servable, signature_name: str, request_input) -> None:
    signature = servable.signature(signature_name)
    examples = serialized_examples(request_input)
    input_alias, output_alias = regression_aliases(signature)
    check_inputs(signature, {input_alias: examples})
    outputs = servable.run(signature, {input_alias: examples}, (output_alias,))
    regression_result(len(examples), outputs[output_alias])


def _multi_inference(servable: Servable, request) -> None:
    check_multi_inference_tasks(request)
    for task in request.tasks:
        signature_name = task.model_spec.signature_name
        if task.method_name == CLASSIFY_METHOD:
            _classify(servable, signature_name, request.input)
        else:
            _regress(servable, signature_name, request.input)


def _get(outputs: dict[str, np.ndarray], alias: str | None) -> np.ndarray | None:
    return outputs.get(alias) if alias else None
