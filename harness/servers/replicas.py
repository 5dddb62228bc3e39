"""N server processes for one model, presented to clients as one service.

Each replica listens on its own gRPC and REST ports and clients spread requests over the list
(round robin per request: the scenarios' ``--targets``). We measured the other way a stack can
look like one address, N processes sharing one port with SO_REUSEPORT (as a Kubernetes Service
does per connection): the kernel balances *connections*, and a load generator keeps one HTTP/2
connection per process, so one replica got every request of a generator process. See the
README's "Replicas" section for the figures.

Replicas must not oversubscribe the CPU: unless the flags set them, each replica gets an equal
share of the cores as its TensorFlow intra- and inter-op thread pools. With a placement
(harness.plan.placement) each replica runs pinned to its own CPU subset, and its pools get one
thread per core of that subset.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from harness.errors import UserError
from harness.plan.placement import Placement
from harness.servers.server_process import (
    REFERENCE_SERVER,
    ServerProcess,
    cpus_allowed,
    free_port,
    launch_server,
    wait_ready,
)

THREAD_FLAGS = ("--tensorflow_intra_op_parallelism", "--tensorflow_inter_op_parallelism")
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
MONITORING_CONFIG = f'prometheus_config {{ enable: true path: "{PROMETHEUS_PATH}" }}\n'


def thread_share(replicas: int, cores: int | None = None) -> int:
    """Threads per pool for each of ``replicas`` processes on ``cores`` cores (at least 1)."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores // replicas)


def replica_flags(
    flags: Sequence[str], replicas: int, *, cores: int | None = None, threads: int | None = None
) -> list[str]:
    """``flags`` plus ``threads`` (default: this replica count's share of ``cores``) per TF
    thread pool, unless the flags choose their own."""
    given = {flag.split("=", 1)[0] for flag in flags}
    share = threads or thread_share(replicas, cores)
    return [*flags, *(f"{name}={share}" for name in THREAD_FLAGS if name not in given)]


def write_monitoring_config(folder: Path) -> Path:
    """A monitoring config that turns Prometheus on at TF Serving's usual path."""
    path = folder / "monitoring_config.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(MONITORING_CONFIG)
    return path


@dataclass
class ReplicaSet:
    """Running replicas: their endpoints, and stop() for all of them."""

    servers: list[ServerProcess]
    metrics_path: str | None = PROMETHEUS_PATH

    def cpus_allowed(self) -> list[str | None]:
        """Each replica's CPU set as the kernel reports it (``/proc/PID/status``)."""
        return [cpus_allowed(server.process.pid) for server in self.servers]

    @property
    def grpc_targets(self) -> list[str]:
        return [server.grpc_target for server in self.servers]

    @property
    def rest_urls(self) -> list[str]:
        return [server.rest_url for server in self.servers]

    @property
    def metrics_urls(self) -> list[str]:
        if self.metrics_path is None:
            return []
        return [server.rest_url + self.metrics_path for server in self.servers]

    def exited(self) -> list[tuple[int, int]]:
        """(replica index, exit code) of every replica that is no longer running."""
        return [
            (i, code)
            for i, server in enumerate(self.servers)
            if (code := server.process.poll()) is not None
        ]

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of each replica's log, labelled."""
        parts = []
        for i, server in enumerate(self.servers):
            tail = list(server.log_tail)[-lines:]
            parts.append(f"--- replica {i} ({' '.join(server.command[-3:])}) ---\n{''.join(tail)}")
        return "\n".join(parts)

    def stop(self) -> list[int]:
        """Stop every replica (SIGTERM, then SIGKILL); their exit codes."""
        with ThreadPoolExecutor(max_workers=max(1, len(self.servers))) as pool:
            return list(pool.map(lambda server: server.stop(), self.servers))

    def __enter__(self) -> ReplicaSet:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def start_replicas(
    flags: Sequence[str],
    replicas: int,
    *,
    command: Sequence[str] = REFERENCE_SERVER,
    ready_timeout: float = 120.0,
    monitoring: bool = True,
    cores: int | None = None,
    env: dict[str, str] | None = None,
    config_dir: Path | None = None,
    placement: Placement | None = None,
) -> ReplicaSet:
    """Start ``replicas`` servers with ``flags`` (no ports: each replica gets free ones) and
    wait until every one serves its models. They start side by side; with a ``placement``,
    each on its own CPU set.

    ``monitoring`` adds a monitoring config (written in ``config_dir``, by default beside the
    batching file) unless the flags name one. UserError with every failed replica's log
    otherwise; the replicas that did start are stopped again.
    """
    if replicas < 1:
        raise UserError(f"replicas must be at least 1, got {replicas}")
    flags = list(flags)
    given = {flag.split("=", 1)[0] for flag in flags}
    # Only a config we wrote has a path we know; with the user's own, metrics are theirs to read.
    metrics_path = None
    if monitoring and "--monitoring_config_file" not in given:
        folder = config_dir or _config_folder(flags)
        flags.append(f"--monitoring_config_file={write_monitoring_config(folder).resolve()}")
        metrics_path = PROMETHEUS_PATH
    cpu_sets = placement.replicas if placement and placement.replicas else ((),) * replicas
    with_ports = [
        [
            *replica_flags(flags, replicas, cores=cores, threads=len(cpus) or None),
            f"--port={free_port()}",
            f"--rest_api_port={free_port()}",
        ]
        for cpus in cpu_sets
    ]

    # Launched from this thread (a child dies with the thread that started it), then
    # awaited one by one: they load their models side by side meanwhile.
    launched = [
        launch_server(f, command=command, env=env, cpus=cpus)
        for f, cpus in zip(with_ports, cpu_sets, strict=True)
    ]
    started: list[ServerProcess] = []
    failures: list[tuple[int, UserError]] = []
    for i, server in enumerate(launched):
        try:
            started.append(wait_ready(server, ready_timeout))
        except UserError as exc:
            failures.append((i, exc))
    if failures:
        ReplicaSet(started).stop()
        detail = "\n".join(f"replica {i}: {exc}" for i, exc in failures)
        raise UserError(f"{len(failures)} of {replicas} replicas did not start\n{detail}")
    return ReplicaSet(started, metrics_path)


def _config_folder(flags: Sequence[str]) -> Path:
    """Where generated server files go: beside the batching file."""
    for flag in flags:
        name, _, value = flag.partition("=")
        if name == "--batching_parameters_file" and value:
            return Path(value).parent
    raise UserError("no folder for the monitoring config: give config_dir")
