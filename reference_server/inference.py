"""Predict / Classify / Regress / MultiInference, independent of the transport.

gRPC and REST both decode their request into numpy arrays or an ``input_pb2.Input``, call the
``InferenceCore`` and encode its answer. Validation messages follow TF Serving's
(predict_util.cc, classifier.cc, regressor.cc, multi_inference.cc).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    inference_pb2,
    input_pb2,
    model_pb2,
    regression_pb2,
)

from reference_server.batch_scheduler import REQUEST_DEADLINE, BatchScheduler, deadline_exceeded
from reference_server.batching import BatchStats
from reference_server.batching_params import BatchingParameters
from reference_server.errors import ServingError, invalid_argument
from reference_server.model_registry import ModelRegistry, VersionRecord
from reference_server.run_costs import RunCosts
from reference_server.servable import Servable, Signature

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
PREDICT_METHOD = "tensorflow/serving/predict"
SIGNATURE_DEF_FIELD = "signature_def"

T = TypeVar("T")
Tensors = dict[str, np.ndarray]
RunFn = Callable[[Tensors], Tensors]


@dataclass(frozen=True)
class ModelSpec:
    """What a request addresses: a model, optionally a version or label, and a signature."""

    name: str
    version: int | None = None
    label: str | None = None
    signature_name: str = ""

    @classmethod
    def from_proto(cls, spec: model_pb2.ModelSpec) -> ModelSpec:
        choice = spec.WhichOneof("version_choice")
        return cls(
            name=spec.name,
            version=spec.version.value if choice == "version" else None,
            label=spec.version_label if choice == "version_label" else None,
            signature_name=spec.signature_name,
        )


@dataclass(frozen=True)
class PredictResult:
    servable: Servable
    signature: Signature
    outputs: dict[str, np.ndarray]
    stats: BatchStats

    def model_spec_proto(self) -> model_pb2.ModelSpec:
        return _spec_proto(self.servable, self.signature.name)


@dataclass(frozen=True)
class RequestRecord:
    """What observers (metrics) learn about every finished inference call."""

    model_name: str
    api: str  # "Predict", "Classify", "Regress", "MultiInference"
    code_name: str  # "OK" or the canonical code
    seconds: float
    stats: BatchStats | None


Observer = Callable[[RequestRecord], None]


# A servable's own batching parameters, or None when it does not batch.
ModelBatching = Callable[[Servable], BatchingParameters | None]


class InferenceCore:
    """Resolves servables, validates requests and runs them, batched or not."""

    def __init__(
        self,
        registry: ModelRegistry,
        scheduler: BatchScheduler | None = None,
        *,
        max_unbatched_threads: int = 64,
        model_batching: ModelBatching | None = None,
    ) -> None:
        self.registry = registry
        self.scheduler = scheduler
        # Per-model batching parameters (None: every model batches by the scheduler's own).
        self.model_batching = model_batching
        # Unbatched, TF Serving runs the session on the RPC thread; a pool keeps the loop free
        # (but for runs shorter than the hop to it: see run_costs.py).
        self._executor = ThreadPoolExecutor(max_unbatched_threads, thread_name_prefix="session")
        self._unbatched: set[Future] = set()  # runs submitted to the pool and not yet done
        self._run_costs = RunCosts()  # which unbatched runs are cheap enough to run inline
        self._closed = False
        self.observers: list[Observer] = []

    def close(self, timeout: float | None = None) -> bool:
        """Stop running work: queued work is dropped, running work gets up to ``timeout``
        seconds (None: as long as it takes). Returns whether nothing is running any more."""
        deadline = None if timeout is None else time.monotonic() + timeout
        finished = True
        self._closed = True
        if self.scheduler is not None:
            finished = self.scheduler.close(timeout)
        self._executor.shutdown(wait=False, cancel_futures=True)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        _, running = futures_wait(list(self._unbatched), left)
        return finished and not running

    # -- lookup ------------------------------------------------------------------------------

    def resolve(self, spec: ModelSpec) -> tuple[Servable, Signature]:
        servable = self.registry.resolve(spec.name, spec.version, spec.label)
        return servable, servable.signature(spec.signature_name)

    def metadata(
        self, spec: ModelSpec, metadata_fields: Sequence[str]
    ) -> tuple[model_pb2.ModelSpec, get_model_metadata_pb2.SignatureDefMap]:
        """GetModelMetadata: only the ``signature_def`` field exists, as in TF Serving."""
        if not metadata_fields:
            raise invalid_argument(
                "GetModelMetadataRequest must specify at least one metadata_field"
            )
        for field_name in metadata_fields:
            if field_name != SIGNATURE_DEF_FIELD:
                raise invalid_argument(f"Metadata field {field_name} is not supported")
        servable = self.registry.resolve(spec.name, spec.version, spec.label)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature_def in servable.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(signature_def)
        return _spec_proto(servable, ""), signature_map

    def status(self, spec: ModelSpec) -> list[VersionRecord]:
        """GetModelStatus: every version of the model, or the one asked for (by version/label)."""
        version = spec.version
        if spec.label:
            version = self.registry.label_version(spec.name, spec.label)
        return self.registry.version_records(spec.name, version)

    # -- APIs --------------------------------------------------------------------------------

    async def predict(
        self, spec: ModelSpec, inputs: dict[str, np.ndarray], output_filter: Sequence[str] = ()
    ) -> PredictResult:
        async with self._observed(spec.name, "Predict") as record:
            servable, signature = self.resolve(spec)
            check_inputs(signature, inputs)
            aliases = output_aliases(signature, output_filter)
            outputs, stats = await self.execute(servable, signature, inputs, aliases)
            record.stats = stats
            return PredictResult(servable, signature, outputs, stats)

    async def classify(
        self, spec: ModelSpec, request_input: input_pb2.Input
    ) -> tuple[model_pb2.ModelSpec, classification_pb2.ClassificationResult]:
        async with self._observed(spec.name, "Classify") as record:
            servable, signature = self.resolve(spec)
            result, record.stats = await self._classify(servable, signature, request_input)
            return _spec_proto(servable, signature.name), result

    async def regress(
        self, spec: ModelSpec, request_input: input_pb2.Input
    ) -> tuple[model_pb2.ModelSpec, regression_pb2.RegressionResult]:
        async with self._observed(spec.name, "Regress") as record:
            servable, signature = self.resolve(spec)
            result, record.stats = await self._regress(servable, signature, request_input)
            return _spec_proto(servable, signature.name), result

    async def multi_inference(
        self, request: inference_pb2.MultiInferenceRequest
    ) -> inference_pb2.MultiInferenceResponse:
        tasks = request.tasks
        name = tasks[0].model_spec.name if tasks else ""
        async with self._observed(name, "MultiInference"):
            check_multi_inference_tasks(request)
            response = inference_pb2.MultiInferenceResponse()
            for task in tasks:
                await self._run_inference_task(task, request.input, response.results.add())
            return response

    async def _run_inference_task(self, task, request_input, result) -> None:
        servable, signature = self.resolve(ModelSpec.from_proto(task.model_spec))
        result.model_spec.CopyFrom(_spec_proto(servable, signature.name))
        if task.method_name == CLASSIFY_METHOD:
            answer, _ = await self._classify(servable, signature, request_input)
            result.classification_result.CopyFrom(answer)
        else:
            answer, _ = await self._regress(servable, signature, request_input)
            result.regression_result.CopyFrom(answer)

    # -- execution ---------------------------------------------------------------------------

    async def execute(
        self,
        servable: Servable,
        signature: Signature,
        inputs: dict[str, np.ndarray],
        aliases: tuple[str, ...],
    ) -> tuple[dict[str, np.ndarray], BatchStats]:
        """Run one validated request through the batch scheduler, or directly without batching."""
        cost_key = (servable.name, servable.version, signature.name, aliases)

        def run(batch_inputs: Tensors) -> Tensors:
            return self._measured_run(servable, signature, batch_inputs, aliases, cost_key)

        params = None
        if self.scheduler is not None and self.model_batching is not None:
            params = self.model_batching(servable)
        if self.scheduler is not None and (self.model_batching is None or params is not None):
            key = (servable.name, servable.version, signature.name, tuple(sorted(inputs)), aliases)
            return await self.scheduler.submit(key, inputs, run, params)
        started = time.perf_counter()
        rows = _rows(inputs)
        if not self._closed and self._run_costs.runs_inline(cost_key, rows):
            outputs = _run_inline(run, inputs)
        else:
            outputs = await self._run_in_thread(run, inputs)
        return outputs, BatchStats(rows, 0, rows, 0.0, time.perf_counter() - started)

    def _measured_run(
        self,
        servable: Servable,
        signature: Signature,
        inputs: Tensors,
        aliases: tuple[str, ...],
        cost_key: tuple,
    ) -> Tensors:
        """One session run, timed for the run-cost policy. A run known to be small executes
        in the calling thread: TensorFlow's hand-over to its inter-op pool would cost more
        than the run (see run_costs.py)."""
        rows = _rows(inputs)
        small = self._run_costs.runs_inline(cost_key, rows)
        started = time.perf_counter()
        outputs = servable.run(signature, inputs, aliases, in_caller_thread=small)
        self._run_costs.record(cost_key, rows, time.perf_counter() - started)
        return outputs

    async def _run_in_thread(self, run: RunFn, inputs: Tensors) -> Tensors:
        job = self._executor.submit(run, inputs)
        self._unbatched.add(job)
        job.add_done_callback(self._unbatched.discard)
        return await _until_deadline(asyncio.wrap_future(job))

    async def _classify(self, servable, signature, request_input):
        examples = serialized_examples(request_input)
        input_alias, class_alias, score_alias = classification_aliases(signature)
        aliases = tuple(a for a in (class_alias, score_alias) if a)
        check_inputs(signature, {input_alias: examples})
        outputs, stats = await self.execute(servable, signature, {input_alias: examples}, aliases)
        classes = outputs.get(class_alias) if class_alias else None
        scores = outputs.get(score_alias) if score_alias else None
        return classification_result(len(examples), classes, scores), stats

    async def _regress(self, servable, signature, request_input):
        examples = serialized_examples(request_input)
        input_alias, output_alias = regression_aliases(signature)
        check_inputs(signature, {input_alias: examples})
        outputs, stats = await self.execute(
            servable, signature, {input_alias: examples}, (output_alias,)
        )
        return regression_result(len(examples), outputs[output_alias]), stats

    # -- observation -------------------------------------------------------------------------

    def _observed(self, model_name: str, api: str) -> _Observation:
        return _Observation(self.observers, model_name, api)


class _Observation:
    """Times one API call and tells every observer how it ended."""

    def __init__(self, observers: list[Observer], model_name: str, api: str) -> None:
        self._observers = observers
        self._model_name = model_name
        self._api = api
        self.stats: BatchStats | None = None

    async def __aenter__(self) -> _Observation:
        self._started = time.perf_counter()
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        if not self._observers:
            return
        code = (
            "OK" if exc is None else (exc.code_name if isinstance(exc, ServingError) else "UNKNOWN")
        )
        record = RequestRecord(
            self._model_name, self._api, code, time.perf_counter() - self._started, self.stats
        )
        for observer in self._observers:
            observer(record)


def _run_inline(run: RunFn, inputs: Tensors) -> Tensors:
    """A run too short to be worth a thread hop, on the loop, within the request's deadline
    (past it the answer is DEADLINE_EXCEEDED, as from a thread whose run overran)."""
    deadline = REQUEST_DEADLINE.get()
    if deadline is not None and time.monotonic() >= deadline:
        raise deadline_exceeded()
    outputs = run(inputs)
    if deadline is not None and time.monotonic() > deadline:
        raise deadline_exceeded()
    return outputs


async def _until_deadline(run: Awaitable[T]) -> T:
    """Await an unbatched run until the request's deadline (TF Serving's session Run timeout:
    DEADLINE_EXCEEDED); the run itself finishes in its thread, its result unused."""
    deadline = REQUEST_DEADLINE.get()
    if deadline is None:
        return await run
    try:
        return await asyncio.wait_for(run, max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        raise deadline_exceeded() from None


# -- pure helpers (validation and result building) ---------------------------------------------


def _rows(inputs: dict[str, np.ndarray]) -> int:
    first = next(iter(inputs.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


def _spec_proto(servable: Servable, signature_name: str) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=servable.name, signature_name=signature_name)
    spec.version.value = servable.version
    return spec


def check_inputs(signature: Signature, inputs: dict[str, np.ndarray]) -> None:
    """Input names and dtypes, with TF Serving's messages. Shapes are left to the graph's ops,
    as in TF Serving (a TF1 signature's declared shape is not enforced)."""
    expected = set(signature.inputs)
    sent = set(inputs)
    if len(sent) != len(expected):
        raise invalid_argument(
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
            f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
            f"Missing but required: {{{','.join(sorted(expected - sent))}}}."
        )
    for alias in sorted(sent - expected):
        raise invalid_argument(
            f"input tensor alias not found in signature: {alias}. Inputs expected to be in the "
            f"set {{{','.join(sorted(expected))}}}."
        )
    for index, alias in enumerate(sorted(inputs)):
        _check_dtype(index, signature.inputs[alias], inputs[alias])


def _check_dtype(index: int, info, value: np.ndarray) -> None:
    want = info.numpy_dtype
    if value.dtype != want and not (want.kind == "O" and value.dtype.kind in "SUO"):
        raise invalid_argument(
            f"Expects arg[{index}] to be {_dtype_name(info.dtype)} but "
            f"{_dtype_name(value.dtype)} is provided"
        )


def _dtype_name(dtype) -> str:
    """TensorFlow's DataTypeString: "float", "int32", "string" (DT_FLOAT → float)."""
    if isinstance(dtype, np.dtype) and dtype.kind in "SUO":
        return "string"
    try:
        enum_value = tf.dtypes.as_dtype(dtype).as_datatype_enum
    except TypeError:
        return str(dtype)
    return types_pb2.DataType.Name(enum_value).removeprefix("DT_").lower()


def output_aliases(signature: Signature, output_filter: Sequence[str]) -> tuple[str, ...]:
    """The outputs to fetch: the filter in order (validated), or all outputs."""
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in signature.outputs:
            raise invalid_argument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {{{','.join(sorted(signature.outputs))}}}."
            )
        if alias in seen:
            raise invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return tuple(output_filter) or tuple(signature.outputs)


def serialized_examples(request_input: input_pb2.Input) -> np.ndarray:
    """tf.Example strings for a Classify/Regress input; context features merged into each."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        blobs = [e.SerializeToString() for e in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        with_context = request_input.example_list_with_context
        # Concatenated serialized protos merge, which is how TF Serving applies the context.
        context = with_context.context.SerializeToString()
        blobs = [context + e.SerializeToString() for e in with_context.examples]
    else:
        blobs = []
    if not blobs:
        raise invalid_argument("Input is empty.")
    return np.array(blobs, dtype=object)


def classification_aliases(signature: Signature) -> tuple[str, str | None, str | None]:
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    classes = "classes" if "classes" in signature.outputs else None
    scores = "scores" if "scores" in signature.outputs else None
    if classes is None and scores is None:
        raise invalid_argument(
            "Expected classification signature outputs to contain at least one of classes or scores"
        )
    return next(iter(signature.inputs)), classes, scores


def regression_aliases(signature: Signature) -> tuple[str, str]:
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if "outputs" not in signature.outputs:
        raise invalid_argument("No output Tensor with key 'outputs' found in signature.")
    return next(iter(signature.inputs)), "outputs"


def classification_result(
    num_examples: int, classes: np.ndarray | None, scores: np.ndarray | None
) -> classification_pb2.ClassificationResult:
    """One Classifications per example: (label, score) pairs, as TF Serving's classifier."""
    for name, value in (("classes", classes), ("scores", scores)):
        if value is not None and (value.ndim != 2 or value.shape[0] != num_examples):
            raise invalid_argument(
                f"Expected Tensor shape: [{num_examples} num_classes] but got "
                f"{list(value.shape)} for output {name}"
            )
    result = classification_pb2.ClassificationResult()
    first = classes if classes is not None else scores
    assert first is not None  # classification_aliases insists on classes or scores
    width = first.shape[1]
    for row in range(num_examples):
        entry = result.classifications.add()
        for col in range(width):
            cls = entry.classes.add()
            if classes is not None:
                label = classes[row, col]
                cls.label = label.decode() if isinstance(label, bytes) else str(label)
            if scores is not None:
                cls.score = float(scores[row, col])
    return result


def regression_result(num_examples: int, values: np.ndarray) -> regression_pb2.RegressionResult:
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1 or values.shape[0] != num_examples:
        raise invalid_argument(
            f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
            f"{list(values.shape)}"
        )
    result = regression_pb2.RegressionResult()
    for value in values:
        result.regressions.add().value = float(value)
    return result


def check_multi_inference_tasks(request: inference_pb2.MultiInferenceRequest) -> None:
    if not request.tasks:
        raise invalid_argument("MultiInferenceRequest must contain at least one task.")
    names = {t.model_spec.name for t in request.tasks}
    if len(names) > 1:
        raise invalid_argument(
            "All ModelSpecs in a MultiInferenceRequest must access the same model name."
        )
    seen: set[str] = set()
    for task in request.tasks:
        if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
            raise invalid_argument(f"Unsupported signature method_name: {task.method_name}")
        signature_name = task.model_spec.signature_name
        if signature_name in seen:
            raise invalid_argument(f"Duplicate evaluation of signature: {signature_name}")
        seen.add(signature_name)
