"""The composition root: flags → models → batching → gRPC and REST on one asyncio loop."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from aiohttp import web
from tensorflow_serving.config import model_server_config_pb2

from reference_server import config_files
from reference_server.batch_scheduler import BatchHook, BatchScheduler
from reference_server.batching_params import BatchingParameters
from reference_server.flags import ServerFlags
from reference_server.grpc_api import add_grpc_services, grpc_server_options
from reference_server.inference import InferenceCore
from reference_server.metrics import CONTENT_TYPE, ServerMetrics
from reference_server.model_registry import ModelRegistry
from reference_server.reloading import start_polling
from reference_server.rest_api import build_rest_app
from reference_server.servable import SessionOptions

log = logging.getLogger("reference_server")

# Seconds in-flight RPCs get to finish on shutdown.
SHUTDOWN_GRACE_SECONDS = 5.0
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
        self.registry = ModelRegistry(
            session_options(flags),
            allow_version_labels_for_unavailable_models=(
                flags.allow_version_labels_for_unavailable_models
            ),
        )
        self.core: InferenceCore | None = None
        self.metrics: ServerMetrics | None = None
        self._monitoring = monitoring_config(flags)
        self._grpc: grpc.aio.Server | None = None
        self._rest: web.AppRunner | None = None

    def load_models(self) -> None:
        self.registry.load_config(model_server_config(self.flags))

    async def start(self) -> BoundPorts:
        self.core = self._build_core()
        grpc_port = await self._start_grpc(self.core)
        rest_wanted = self.flags.rest_api_port not in (0, self.flags.port)  # as TF Serving
        rest_port = await self._start_rest(self.core) if rest_wanted else None
        return BoundPorts(grpc_port, rest_port)

    def _build_core(self) -> InferenceCore:
        """The core, with metrics observing its requests and batches when Prometheus is on."""
        if not self._monitoring.prometheus_enabled:
            return InferenceCore(self.registry, batch_scheduler(self.flags))
        metrics = ServerMetrics(batching=self.flags.enable_batching)
        scheduler = batch_scheduler(self.flags, on_batch=metrics.observe_batch)
        if scheduler is not None:
            metrics.watch_scheduler(scheduler.queue_depth, scheduler.rejected_full)
        core = InferenceCore(self.registry, scheduler)
        core.observers.append(metrics.observe_request)
        self.metrics = metrics
        return core

    async def _start_grpc(self, core: InferenceCore) -> int:
        options = grpc_server_options(self.flags.grpc_channel_arguments)
        self._grpc = grpc.aio.server(options=options)
        add_grpc_services(self._grpc, core)
        port = self._grpc.add_insecure_port(f"0.0.0.0:{self.flags.port}")
        await self._grpc.start()
        log.info("Running gRPC ModelServer at 0.0.0.0:%d ...", port)
        return port

    async def _start_rest(self, core: InferenceCore) -> int:
        app = build_rest_app(core, timeout_ms=self.flags.rest_api_timeout_in_ms)
        if self.metrics is not None:
            path = self._monitoring.prometheus_path
            app.router.add_get(path, metrics_route(self.metrics))
            log.info("Exporting Prometheus metrics at %s", path)
        self._rest = web.AppRunner(app, access_log=None)
        await self._rest.setup()
        sock = listening_socket(self.flags.rest_api_port)
        await web.SockSite(self._rest, sock).start()
        port = sock.getsockname()[1]
        log.info("Exporting HTTP/REST API at:localhost:%d ...", port)
        return port

    async def stop(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(SHUTDOWN_GRACE_SECONDS)
        if self._rest is not None:
            await self._rest.cleanup()
        if self.core is not None:
            self.core.close()
        self.registry.close()


async def serve(flags: ServerFlags) -> None:
    """Load models, serve until SIGINT/SIGTERM, then shut down cleanly."""
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
    log.info("Shutting down")
    for task in pollers:
        task.cancel()
    await server.stop()
