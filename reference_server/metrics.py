"""Prometheus metrics with TF Serving's names, labels, units and buckets.

TF Serving exports its monitoring metrics with '/' turned into ':' (prometheus_exporter.cc), so
``/tensorflow/serving/request_count`` is scraped as ``:tensorflow:serving:request_count``, a
counter without the ``_total`` suffix. prometheus-client accumulates the values here (in this
server's own ``CollectorRegistry``, thread-safe), but its exposition would rename both, so
``ServerMetrics.render`` writes the text format itself from the collected samples.

Where the values come from:

- per request (``observe_request``, an ``InferenceCore`` observer): request_count, request
  latency, runtime latency and, with batching, queuing latency and input batch size;
- per executed batch (``observe_batch``, the ``BatchScheduler``'s ``on_batch`` hook): processed
  batch size, padding size and our compute time per batch;
- at scrape time: our queue depth and queue-full rejection count;
- per model version loaded with a warm-up file (``observe_warmup``): TF Serving's
  ``model_warmup_latency{model_path,status}`` and our ``model_warmup_records_read{model_path}``
  (TF Serving only logs that count);
- once at start-up (``describe_device``): the device the models run on, as the info-style
  gauge ``:batchbench:serving:device_info{device="GPU:0",kind="GPU",name="NVIDIA ..."} 1``
  (``device="CPU",kind="CPU",name=""`` without a GPU).
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.utils import floatToGoString

from reference_server.batching import BatchRecord
from reference_server.devices import DeviceReport
from reference_server.errors import ServingError
from reference_server.inference import Observer, RequestRecord

if TYPE_CHECKING:  # warmup imports the gRPC API, which imports this module
    from reference_server.warmup import WarmupRecord

# The text format written by ``render`` (Prometheus 0.0.4, as TF Serving serves).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# TF Serving's "entrypoint" label; each front end sets it for the requests it handles.
ENTRYPOINT: contextvars.ContextVar[str] = contextvars.ContextVar("entrypoint", default="GRPC")
GRPC_ENTRYPOINT = "GRPC"
REST_ENTRYPOINT = "REST"
# TF Serving labels the classic session runtime "TF1" (and TFRT "TFRT"); ours runs sessions.
RUNTIME = "TF1"

_TF = ":tensorflow:serving:"
_BATCHING = _TF + "batching_session:"
_OURS = ":batchbench:serving:"


def exponential_buckets(scale: float, growth: float, count: int) -> tuple[float, ...]:
    """TF's monitoring::Buckets::Exponential limits: scale·growth^i for i < count (+Inf added
    by the histogram)."""
    return tuple(scale * growth**i for i in range(count))


# util.cc: "Scale of 10, power of 1.8 with bucket count 33 (~20 minutes)", microseconds.
LATENCY_BUCKETS_US = exponential_buckets(10, 1.8, 33)
# batching_session.cc: "Scale of 100, power of 1.2 with bucket count 52 (~1 second)".
QUEUING_BUCKETS_US = exponential_buckets(100, 1.2, 52)
# batching_util.h: "Exponential buckets [1*2^0, ..., 1*2^13, DBL_MAX]".
BATCH_SIZE_BUCKETS = exponential_buckets(1, 2, 14)


@dataclass(frozen=True)
class _Exported:
    """How one prometheus-client metric is written out: its TF Serving name and type."""

    name: str
    kind: str  # "counter", "gauge" or "histogram"


class ServerMetrics:
    """All metrics of one server process, and their Prometheus text.

    ``batching`` says whether requests go through a batch scheduler (the batching_session
    metrics exist only then); ``thread_pool_name`` labels queuing latency as TF Serving does.
    """

    def __init__(self, *, batching: bool = True, thread_pool_name: str = "model_server") -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._batching = batching
        self._pool = thread_pool_name
        self._queue_depth: Callable[[], int] | None = None
        self._rejected_full: Callable[[], int] | None = None
        self._exported: dict[str, _Exported] = {}
        self._define_request_metrics()
        if batching:
            self._define_batch_metrics()

    # -- definitions ---------------------------------------------------------------------------

    def _counter(self, name: str, doc: str, labels: Sequence[str]) -> Counter:
        internal = _internal_name(name)
        self._exported[internal] = _Exported(name, "counter")
        return Counter(internal, doc, labels, registry=self.registry)

    def _histogram(
        self, name: str, doc: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> Histogram:
        internal = _internal_name(name)
        self._exported[internal] = _Exported(name, "histogram")
        return Histogram(internal, doc, labels, registry=self.registry, buckets=buckets)

    def _gauge(self, name: str, doc: str, labels: Sequence[str]) -> Gauge:
        internal = _internal_name(name)
        self._exported[internal] = _Exported(name, "gauge")
        return Gauge(internal, doc, labels, registry=self.registry)

    def _define_request_metrics(self) -> None:
        self.request_count = self._counter(
            _TF + "request_count", "The total number of requests.", ("model_name", "status")
        )
        self.request_latency = self._histogram(
            _TF + "request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ("model_name", "API", "entrypoint"),
            LATENCY_BUCKETS_US,
        )
        self.runtime_latency = self._histogram(
            _TF + "runtime_latency",
            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ("model_name", "API", "runtime"),
            LATENCY_BUCKETS_US,
        )
        # saved_model_warmup_util.cc: the same buckets as request latency, by path and status.
        self.model_warmup_latency = self._histogram(
            _TF + "model_warmup_latency",
            "Distribution of wall time (in microseconds) for warming up the model.",
            ("model_path", "status"),
            LATENCY_BUCKETS_US,
        )
        # TF Serving only logs the count ("Number of warmup records read: N"); ours exports it.
        self.model_warmup_records_read = self._counter(
            _OURS + "model_warmup_records_read",
            "Warm-up records read from assets.extra/tf_serving_warmup_requests.",
            ("model_path",),
        )
        self.device_info = self._gauge(
            _OURS + "device_info",
            "The device the models run on (always 1; the labels tell which).",
            ("device", "kind", "name"),
        )

    def _define_batch_metrics(self) -> None:
        self.queuing_latency = self._histogram(
            _BATCHING + "queuing_latency",
            "Distribution of wall time spent (in microseconds) in queuing",
            ("thread_pool_name",),
            QUEUING_BUCKETS_US,
        )
        self.input_batch_size = self._histogram(
            _BATCHING + "input_batch_size",
            "Tracks the batch size distribution on the inputs.",
            (),
            BATCH_SIZE_BUCKETS,
        )
        self.processed_batch_size = self._histogram(
            _BATCHING + "processed_batch_size",
            "Tracks the batch size distribution on processing.",
            (),
            BATCH_SIZE_BUCKETS,
        )
        self.padding_size = self._histogram(
            _BATCHING + "padding_size",
            "Tracks the padding size distribution on batches.",
            ("execution_batch_size",),
            BATCH_SIZE_BUCKETS,
        )
        self.batch_compute_latency = self._histogram(
            _OURS + "batch_compute_latency",
            "Wall time (in microseconds) of each executed batch's model run.",
            ("model_name",),
            LATENCY_BUCKETS_US,
        )

    def watch_scheduler(
        self, queue_depth: Callable[[], int], rejected_full: Callable[[], int]
    ) -> None:
        """Export these readings (e.g. a BatchScheduler's) at every scrape: tasks waiting, and
        tasks refused so far because their queue was full."""
        self._queue_depth = queue_depth
        self._rejected_full = rejected_full

    def describe_device(self, report: DeviceReport) -> None:
        """Export the serving device (set once, when the models' device is known)."""
        self.device_info.labels(report.device, report.kind, report.description).set(1)

    # -- observation ---------------------------------------------------------------------------

    def observe_request(self, record: RequestRecord) -> None:
        """Count one finished Predict/Classify/Regress/MultiInference call (any status)."""
        self.request_count.labels(record.model_name, record.code_name).inc()
        self.request_latency.labels(record.model_name, record.api, ENTRYPOINT.get()).observe(
            record.seconds * 1e6
        )
        stats = record.stats
        if stats is None:
            return
        # TF Serving times session->Run, which with batching includes the wait in the queue.
        runtime_us = (stats.queue_seconds + stats.compute_seconds) * 1e6
        self.runtime_latency.labels(record.model_name, record.api, RUNTIME).observe(runtime_us)
        if self._batching:
            self.queuing_latency.labels(self._pool).observe(stats.queue_seconds * 1e6)
            self.input_batch_size.observe(stats.task_rows)

    def observe_batch(self, record: BatchRecord) -> None:
        """Count one executed batch (BatchScheduler's ``on_batch`` hook)."""
        if not self._batching:
            return
        self.processed_batch_size.observe(record.batch_size)
        self.padding_size.labels(str(record.batch_size)).observe(record.padding_rows)
        self.batch_compute_latency.labels(_model_name(record.key)).observe(
            record.compute_seconds * 1e6
        )

    def observe_warmup(self, record: WarmupRecord) -> None:
        """Count one version's warm-up (its file read to the end, or failed reading)."""
        self.model_warmup_latency.labels(record.model_path, record.status).observe(
            record.seconds * 1e6
        )
        self.model_warmup_records_read.labels(record.model_path).inc(record.records)

    # -- exposition ----------------------------------------------------------------------------

    def render(self) -> str:
        """The metrics in Prometheus text format, with TF Serving's metric names."""
        lines: list[str] = []
        for family in self.registry.collect():
            exported = self._exported[family.name]
            lines.append(f"# TYPE {exported.name} {exported.kind}")
            lines.extend(_sample_lines(family.name, exported, family.samples))
        lines.extend(self._live_lines())
        return "\n".join(lines) + "\n"

    def _live_lines(self) -> Iterator[str]:
        """Values read from the scheduler at scrape time."""
        if self._queue_depth is not None:
            yield f"# TYPE {_OURS}batch_queue_depth gauge"
            yield f"{_OURS}batch_queue_depth {self._queue_depth()}"
        if self._rejected_full is not None:
            yield f"# TYPE {_OURS}batch_queue_rejected_count counter"
            yield f"{_OURS}batch_queue_rejected_count {self._rejected_full()}"


def notify_failure(
    observers: Iterable[Observer], model_name: str, api: str, exc: BaseException, started: float
) -> None:
    """Tell ``observers`` (an InferenceCore's) about a call that failed in a front end before
    reaching the core, e.g. an unknown model; ``started`` is its ``time.perf_counter()``."""
    code = exc.code_name if isinstance(exc, ServingError) else "UNKNOWN"
    record = RequestRecord(model_name, api, code, time.perf_counter() - started, None)
    for observer in observers:
        observer(record)


def _internal_name(name: str) -> str:
    """A name prometheus-client accepts for an exported name (``:a:b`` → ``a_b``)."""
    return name.strip(":").replace(":", "_")


def _model_name(key: Hashable) -> str:
    """The model name of an InferenceCore batch key (its first element)."""
    return str(key[0]) if isinstance(key, tuple) and key else str(key)


def _sample_lines(internal: str, exported: _Exported, samples: Iterable) -> Iterator[str]:
    for sample in samples:
        suffix = sample.name[len(internal) :]
        if suffix == "_created":
            continue  # prometheus-client's own; TF Serving has no such series
        if exported.kind == "counter":
            suffix = suffix.removesuffix("_total")
        yield f"{exported.name}{suffix}{_labels(sample.labels)} {_value(sample.value)}"


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    text = ",".join(f'{name}="{_escape(value)}"' for name, value in labels.items())
    return "{" + text + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _value(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else floatToGoString(value)
