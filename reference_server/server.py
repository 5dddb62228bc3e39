"""The composition root: flags → models → batching → gRPC and REST on one asyncio loop."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from aiohttp import web
from tensorflow_serving.config import model_server_config_pb2

from reference_server import config_files
from reference_server.access_log import AccessLog
from reference_server.batch_scheduler import BatchHook, BatchScheduler
from reference_server.batching_params import BatchingParameters
from reference_server.devices import DeviceReport, allow_memory_growth, discover_device
from reference_server.flags import ServerFlags
from reference_server.grpc_api import add_grpc_services, grpc_server_options
from reference_server.inference import InferenceCore
from reference_server.metrics import CONTENT_TYPE, ServerMetrics
from reference_server.model_registry import ModelRegistry
from reference_server.reloading import start_polling
from reference_server.rest_api import build_rest_app
from reference_server.security import ServerSecurity
from reference_server.servable import Servable, SessionOptions
from reference_server.warmup import WarmupRecord, run_warmup

log = logging.getLogger("reference_server")

# The batch threads' name, TF Serving's thread_pool_name label on queuing latency.
BATCH_THREAD_POOL = "model_server"


def model_server_config(flags: ServerFlags) -> model_server_config_pb2.ModelServerConfig:
    """The ModelServerConfig from --model_config_file, or one model from --model_name/_base_path."""
    if flags.model_config_file:
        return config_files.load_model_server_config(
            flags.model_config_file, flag="model_config_file"
        )
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = flags.model_name
    model.base_path = str(Path(flags.model_base_path).absolute())
    model.model_platform = "tensorflow"
    return config


def session_options(flags: ServerFlags) -> SessionOptions:
    parallelism = flags.tensorflow_session_parallelism
    return SessionOptions(
        intra_op_parallelism=flags.tensorflow_intra_op_parallelism or parallelism,
        inter_op_parallelism=flags.tensorflow_inter_op_parallelism or parallelism,
        per_process_gpu_memory_fraction=flags.per_process_gpu_memory_fraction,
    )


def batching_parameters(flags: ServerFlags) -> BatchingParameters | None:
    """The batching parameters, or None when --enable_batching is off."""
    if not flags.enable_batching:
        return None
    if flags.batching_parameters_file:
        return config_files.load_batching_parameters(
            flags.batching_parameters_file, flag="batching_parameters_file"
        )
    return BatchingParameters()


PER_MODEL_BATCHING_FILE = "batching_params.pbtxt"  # TF Serving's kBatchingParamsFilename


class PerModelBatching:
    """``--enable_per_model_batching_parameters``: each version's own batching parameters.

    As TF Serving's GetPerModelBatchingParams: a ``batching_params.pbtxt`` in the version's
    SavedModel folder is that model's parameters (read when the version loads; a bad file fails
    the load); a version without one does not batch at all. The batch threads stay the global
    file's (``num_batch_threads`` in a model's file has no effect).
    """

    def __init__(self) -> None:
        self._params: dict[tuple[str, int], BatchingParameters | None] = {}

    def load(self, name: str, version: int, path: Path) -> None:
        """Read the version's file, if any; ConfigError when it is not valid."""
        file = path / PER_MODEL_BATCHING_FILE
        params = None
        if file.is_file():
            params = config_files.load_batching_parameters(file, flag=PER_MODEL_FLAG)
            log.info("Model %s version %d batches with its own %s", name, version, file)
        self._params[(name, version)] = params

    def __call__(self, servable: Servable) -> BatchingParameters | None:
        return self._params.get((servable.name, servable.version))


PER_MODEL_FLAG = "enable_per_model_batching_parameters"


def batch_scheduler(flags: ServerFlags, on_batch: BatchHook | None = None) -> BatchScheduler | None:
    params = batching_parameters(flags)
    if params is None:
        return None
    log.info("Batching enabled: %s", params)
    return BatchScheduler(params, name=BATCH_THREAD_POOL, on_batch=on_batch)


def monitoring_config(flags: ServerFlags) -> config_files.MonitoringConfig:
    """--monitoring_config_file's settings (Prometheus off without the flag)."""
    if not flags.monitoring_config_file:
        return config_files.MonitoringConfig()
    return config_files.load_monitoring_config(
        flags.monitoring_config_file, flag="monitoring_config_file"
    )


def metrics_route(
    metrics: ServerMetrics,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The aiohttp handler serving ``metrics`` as Prometheus text."""

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render().encode(), headers={"Content-Type": CONTENT_TYPE})

    return handle


def listening_socket(port: int) -> socket.socket:
    """A bound TCP socket on all interfaces (as TF Serving binds 0.0.0.0)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


@dataclass
class BoundPorts:
    grpc: int
    rest: int | None


class ModelServer:
    """Owns the registry, the inference core and both front ends for one server process."""

    def __init__(self, flags: ServerFlags) -> None:
        self.flags = flags
        per_model = flags.enable_batching and flags.enable_per_model_batching_parameters
        self.model_batching = PerModelBatching() if per_model else None
        options = session_options(flags)
        self.registry = ModelRegistry(
            options,
            factory=lambda name, version, path: self._load_servable(name, version, path, options),
            allow_version_labels_for_unavailable_models=(
                flags.allow_version_labels_for_unavailable_models
            ),
        )
        self.core: InferenceCore | None = None
        self.device: DeviceReport | None = None
        self.metrics: ServerMetrics | None = None
        self._monitoring = monitoring_config(flags)
        self._security = ServerSecurity.from_flags(flags)  # a bad TLS/token file fails here
        self._access_log = AccessLog.from_flags(flags)
        self._grpc: grpc.aio.Server | None = None
        self._rest: web.AppRunner | None = None
        # Warm-ups run while models load, before the metrics exist: kept until they do.
        self._warmups: list[WarmupRecord] = []
        self._warmup_lock = threading.Lock()

    def _load_servable(
        self, name: str, version: int, path: Path, options: SessionOptions
    ) -> Servable:
        if self.model_batching is not None:
            self.model_batching.load(name, version, path)
        servable = Servable(name, version, path, options)
        if not self.flags.enable_model_warmup:
            return servable
        try:
            run_warmup(servable, self.flags.num_request_iterations_for_warmup, self._note_warmup)
        except Exception:
            servable.close()
            raise
        return servable

    def _note_warmup(self, record: WarmupRecord) -> None:
        with self._warmup_lock:
            self._warmups.append(record)
            if self.metrics is not None:
                self.metrics.observe_warmup(record)

    def load_models(self) -> None:
        self.device = self._report_device()
        self.registry.load_config(model_server_config(self.flags))

    def _report_device(self) -> DeviceReport:
        """Log the device the models will run on (before any session claims GPU memory)."""
        allow_memory_growth(self.flags.per_process_gpu_memory_fraction)
        device = discover_device()
        log.info("Serving on device: %s", device.log_text())
        return device

    async def start(self) -> BoundPorts:
        self.core = self._build_core()
        self._access_log.attach(self.core)
        grpc_port = await self._start_grpc(self.core)
        rest_wanted = self.flags.rest_api_port not in (0, self.flags.port)  # as TF Serving
        rest_port = await self._start_rest(self.core) if rest_wanted else None
        return BoundPorts(grpc_port, rest_port)

    def _build_core(self) -> InferenceCore:
        """The core, with metrics observing its requests and batches when Prometheus is on."""
        if not self._monitoring.prometheus_enabled:
            return InferenceCore(
                self.registry, batch_scheduler(self.flags), model_batching=self.model_batching
            )
        metrics = ServerMetrics(batching=self.flags.enable_batching)
        if self.device is not None:
            metrics.describe_device(self.device)
        scheduler = batch_scheduler(self.flags, on_batch=metrics.observe_batch)
        if scheduler is not None:
            metrics.watch_scheduler(scheduler.queue_depth, scheduler.rejected_full)
        core = InferenceCore(self.registry, scheduler, model_batching=self.model_batching)
        core.observers.append(metrics.observe_request)
        with self._warmup_lock:
            for record in self._warmups:
                metrics.observe_warmup(record)
            self.metrics = metrics
        return core

    async def _start_grpc(self, core: InferenceCore) -> int:
        security = self._security
        options = grpc_server_options(self.flags.grpc_channel_arguments, security.limits.max_bytes)
        interceptors = [*self._access_log.grpc_interceptors(), *security.grpc_interceptors()]
        self._grpc = grpc.aio.server(options=options, interceptors=interceptors)
        add_grpc_services(self._grpc, core, security.limits)
        port = security.add_grpc_port(self._grpc, f"0.0.0.0:{self.flags.port}")
        await self._grpc.start()
        log.info("Running gRPC ModelServer at 0.0.0.0:%d ...", port)
        return port

    async def _start_rest(self, core: InferenceCore) -> int:
        # The Prometheus path stays open: the harness and Prometheus scrape it without a token.
        open_paths = {self._monitoring.prometheus_path} if self.metrics is not None else set()
        app = build_rest_app(
            core,
            timeout_ms=self.flags.rest_api_timeout_in_ms,
            limits=self._security.limits,
            middlewares=[
                *self._access_log.rest_middlewares(),
                *self._security.rest_middlewares(open_paths),
            ],
        )
        if self.metrics is not None:
            path = self._monitoring.prometheus_path
            app.router.add_get(path, metrics_route(self.metrics))
            log.info("Exporting Prometheus metrics at %s", path)
        # In-flight REST calls get the shutdown grace period too (aiohttp's default is 60 s).
        grace = self.flags.shutdown_grace_seconds
        self._rest = web.AppRunner(app, access_log=None, shutdown_timeout=grace)
        await self._rest.setup()
        sock = listening_socket(self.flags.rest_api_port)
        await web.SockSite(self._rest, sock, ssl_context=self._security.rest_ssl_context()).start()
        port = sock.getsockname()[1]
        log.info("Exporting HTTP/REST API at:localhost:%d ...", port)
        return port

    async def stop(self, grace: float) -> bool:
        """Refuse new connections and calls on both front ends at once, give the calls in
        flight ``grace`` seconds, then release the models.

        Returns False when work was still running after the grace period: the sessions are
        then left open (closing one under a running batch is not safe) and the caller should
        exit without waiting for them.
        """
        deadline = time.monotonic() + grace
        await asyncio.gather(self._stop_grpc(grace), self._stop_rest())
        finished = True
        if self.core is not None:
            left = max(0.0, deadline - time.monotonic())
            finished = await asyncio.to_thread(self.core.close, left)
        if finished:
            self.registry.close()
        self._access_log.close()
        return finished

    async def _stop_grpc(self, grace: float) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace)  # closes the port now, cancels calls after ``grace``

    async def _stop_rest(self) -> None:
        if self._rest is not None:
            await self._rest.cleanup()  # closes the port now, cancels calls after the grace


async def serve(flags: ServerFlags) -> bool:
    """Load models, serve until SIGINT/SIGTERM, then shut down gracefully.

    Returns whether everything finished within ``--shutdown_grace_seconds``; when not, the
    caller exits the process without waiting for the work still running.
    """
    server = ModelServer(flags)
    await asyncio.to_thread(server.load_models)
    await server.start()
    pollers = start_polling(
        server.registry,
        flags.file_system_poll_wait_seconds,
        flags.model_config_file_poll_wait_seconds if flags.model_config_file else 0,
        lambda: model_server_config(flags),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    grace = flags.shutdown_grace_seconds
    log.info("Shutting down: no new requests; %g s for the requests in flight", grace)
    for task in pollers:
        task.cancel()
    finished = await server.stop(grace)
    if not finished:
        log.warning("Work still running after the %g s grace period is abandoned", grace)
    return finished
