"""One loaded model version: a SavedModel in a TF session, run by signature.

TF Serving loads every SavedModel (TF1 or TF2) through the session loader and runs signatures
by tensor name; we do the same, so TF1 models such as half_plus_three load where
``tf.saved_model.load`` fails, and a TF2 model behaves exactly as it does in TF Serving.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2

from reference_server.devices import gpu_options
from reference_server.errors import ServingError, code_from_canonical, failed_precondition

DEFAULT_SIGNATURE = "serving_default"
SERVE_TAG = "serve"
# RunOptions.inter_op_thread_pool: DirectSession runs a single-executor graph synchronously in
# the calling thread (direct_session.cc, RunInternal).
CALLER_THREAD = -1


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a signature: its alias, graph tensor, dtype and shape."""

    alias: str
    tensor_name: str
    dtype: tf.dtypes.DType | None  # None: DT_INVALID, e.g. the outputs of __saved_model_init_op
    shape: tuple[int | None, ...] | None  # None = unknown rank; None dims = any size

    @functools.cached_property
    def numpy_dtype(self) -> np.dtype:
        """The dtype requests decode to: object arrays of bytes for DT_STRING."""
        if self.dtype is None:
            raise ValueError(f"{self.alias} has no dtype (DT_INVALID)")
        return np.dtype(object) if self.dtype == tf.string else np.dtype(self.dtype.as_numpy_dtype)


@dataclass(frozen=True)
class Signature:
    name: str
    method_name: str
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]


def _tensor_info(alias: str, info: meta_graph_pb2.TensorInfo) -> TensorInfo:
    shape_proto = info.tensor_shape
    if not info.HasField("tensor_shape") or shape_proto.unknown_rank:
        shape = None  # TF1 signatures often carry no shape at all: any shape is allowed
    else:
        shape = tuple(None if d.size < 0 else d.size for d in shape_proto.dim)
    dtype = tf.dtypes.as_dtype(info.dtype) if info.dtype else None
    return TensorInfo(alias, info.name, dtype, shape)


def _signature(name: str, sig: meta_graph_pb2.SignatureDef) -> Signature:
    return Signature(
        name=name,
        method_name=sig.method_name,
        inputs={a: _tensor_info(a, t) for a, t in sorted(sig.inputs.items())},
        outputs={a: _tensor_info(a, t) for a, t in sorted(sig.outputs.items())},
    )


@dataclass(frozen=True)
class SessionOptions:
    intra_op_parallelism: int = 0  # 0 = let TensorFlow choose, as tensorflow_model_server
    inter_op_parallelism: int = 0
    per_process_gpu_memory_fraction: float = 0.0  # 0 = grow as needed (see devices.py)


def session_config(options: SessionOptions) -> config_pb2.ConfigProto:
    """The ConfigProto every servable's session gets (TF Serving's session_config)."""
    return config_pb2.ConfigProto(
        intra_op_parallelism_threads=options.intra_op_parallelism,
        inter_op_parallelism_threads=options.inter_op_parallelism,
        allow_soft_placement=True,  # ops without a GPU kernel fall back to the CPU
        gpu_options=gpu_options(options.per_process_gpu_memory_fraction),
    )


class Servable:
    """A SavedModel version loaded into its own graph and session.

    ``run`` is blocking and thread-safe (``Session.run`` releases the GIL and may be called from
    several threads at once), so batches can execute concurrently.
    """

    def __init__(self, name: str, version: int, path: Path, options: SessionOptions) -> None:
        self.name = name
        self.version = version
        self.path = path
        self._graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=self._graph, config=session_config(options))
        with self._graph.as_default():
            meta_graph = tf.compat.v1.saved_model.loader.load(self._session, [SERVE_TAG], str(path))
        self.signature_defs = dict(meta_graph.signature_def)
        self.signatures = {n: _signature(n, s) for n, s in sorted(meta_graph.signature_def.items())}
        self._callables: dict[tuple, object] = {}
        self._lock = threading.Lock()

    def signature(self, name: str) -> Signature:
        """The named signature ('' means serving_default), or FAILED_PRECONDITION as TF Serving."""
        key = name or DEFAULT_SIGNATURE
        try:
            return self.signatures[key]
        except KeyError:
            raise failed_precondition(f'Serving signature key "{key}" not found.') from None

    def run(
        self,
        signature: Signature,
        inputs: dict[str, np.ndarray],
        output_aliases: tuple[str, ...],
        *,
        in_caller_thread: bool = False,
    ) -> dict[str, np.ndarray]:
        """Run ``signature`` on inputs keyed by alias; return the requested outputs by alias.

        ``in_caller_thread`` executes the graph in the calling thread instead of handing it to
        TensorFlow's inter-op pool (RunOptions.inter_op_thread_pool = -1): the same results,
        without two thread hand-overs, but with no inter-op parallelism, so only for small runs
        (intra-op parallelism, e.g. inside a large matmul, is unaffected).
        """
        input_aliases = tuple(sorted(inputs))
        run_callable = self._callable(signature, input_aliases, output_aliases, in_caller_thread)
        try:
            values = run_callable(*(inputs[a] for a in input_aliases))
        except tf.errors.OpError as exc:
            raise ServingError(code_from_canonical(exc.error_code), exc.message) from None
        return dict(zip(output_aliases, values, strict=True))

    def _callable(
        self,
        signature: Signature,
        input_aliases: tuple[str, ...],
        output_aliases: tuple[str, ...],
        in_caller_thread: bool,
    ):
        # A callable made from CallableOptions skips Session.run's per-call feed/fetch lookup and
        # Python's static feed-shape check: like TF Serving, the graph's own ops judge shapes.
        key = (signature.name, input_aliases, output_aliases, in_caller_thread)
        found = self._callables.get(key)
        if found is None:
            with self._lock:
                found = self._callables.get(key)
                if found is None:
                    options = config_pb2.CallableOptions(
                        feed=[signature.inputs[a].tensor_name for a in input_aliases],
                        fetch=[signature.outputs[a].tensor_name for a in output_aliases],
                    )
                    if in_caller_thread:
                        options.run_options.inter_op_thread_pool = CALLER_THREAD
                    found = self._session._make_callable_from_options(options)
                    self._callables[key] = found
        return found

    def close(self) -> None:
        self._session.close()
