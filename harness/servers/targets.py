"""Where a sweep sends load: servers the harness starts per configuration, or fixed endpoints.

``reference`` starts reference-server replicas and ``tfserving`` the same flags and files with a
``tensorflow_model_server`` binary; ``external`` is a deployment the harness only measures;
``command`` deploys each configuration with the user's own tooling (harness.servers.command).
Each gives a ``RunningTarget``: per protocol the addresses to spread requests over, the
Prometheus URLs to scrape, and whether its processes are still alive.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import UserError
from harness.plan.batching_file import write_batching_file
from harness.plan.placement import CpuSet, Placement, plan_placement
from harness.plan.points import ServerConfig
from harness.plan.spec import Endpoint, SweepSpec
from harness.servers.command import CommandDeployment, deploy
from harness.servers.hosted_models import hosted_flags
from harness.servers.replicas import PROMETHEUS_PATH, ReplicaSet, start_replicas
from harness.servers.server_process import REFERENCE_SERVER

TFSERVING_BINARY = "tensorflow_model_server"


@dataclass
class RunningTarget:
    """A target ready for load. ``replicas`` is None for external targets (nothing to stop)."""

    grpc: list[str]  # grpc://host:port per replica
    rest: list[str]  # http://host:port per replica
    metrics: list[str]  # Prometheus URL per replica (empty: no server figures)
    replicas: ReplicaSet | None = None
    flags: list[str] = field(default_factory=list)
    placement: Placement | None = None
    deployment: CommandDeployment | None = None  # a command target's configuration

    def placement_record(self) -> dict | None:
        """The planned CPU sets, and each replica's set as the kernel reports it."""
        if self.placement is None:
            return None
        record = self.placement.as_dict()
        if self.replicas is not None:
            record["replicas_observed"] = self.replicas.cpus_allowed()
        return record

    def addresses(self, protocol: str) -> tuple[str, ...]:
        return tuple(self.grpc if protocol == "grpc" else self.rest)

    def exited(self) -> list[tuple[int, int]]:
        return self.replicas.exited() if self.replicas else []

    def log_tail(self) -> str | None:
        if self.deployment is not None:
            return self.deployment.log_tail()
        return self.replicas.log_tail() if self.replicas else None

    def stop(self) -> None:
        if self.replicas is not None:
            self.replicas.stop()
        if self.deployment is not None:
            self.deployment.stop()


def machine_cpus() -> CpuSet:
    """The CPUs this process may use (a container's or taskset's limit included)."""
    if hasattr(os, "sched_getaffinity"):
        return tuple(sorted(os.sched_getaffinity(0)))
    return tuple(range(os.cpu_count() or 1))


def placement_for(spec: SweepSpec, replicas: int, machine: Sequence[int] = ()) -> Placement:
    """The spec's placement for a configuration of ``replicas`` on this machine."""
    choice = spec.placement
    return plan_placement(
        tuple(machine) or machine_cpus(),
        replicas,
        mode=choice.mode,
        generator_processes=spec.load.fixed_processes,
        servers=choice.servers or (),
        generator=choice.generator or (),
        start_servers=spec.target.starts_servers,
    )


def server_command(spec: SweepSpec) -> tuple[str, ...]:
    """The server program for a reference or tfserving target; UserError if it is missing."""
    if spec.target.kind == "reference":
        return REFERENCE_SERVER
    binary = spec.target.binary or shutil.which(TFSERVING_BINARY)
    if not binary or not Path(binary).exists():
        where = spec.target.binary or f"{TFSERVING_BINARY} on PATH"
        raise UserError(f"target.binary: cannot find {where}")
    return (binary,)


ModelBase = Path | Mapping[str, Path]  # one model's base path, or each hosted model's


def server_flags(
    spec: SweepSpec,
    config: ServerConfig,
    model_base: ModelBase,
    folder: Path,
    batching_file: Path | None = None,
) -> list[str]:
    """tensorflow_model_server flags for one configuration; its batching file goes in
    ``folder`` (TF Serving's text format, kept in the run folder as a record). A given
    ``batching_file`` is served instead for a configuration with batching on (an A/B arm that
    differs by its batching file). Several models (a mapping of base paths) are served through
    a model config file, with per-model batching files where some have their own parameters."""
    if isinstance(model_base, Mapping) and len(model_base) > 1:
        flags = hosted_flags(config, model_base, folder)
    else:
        base = next(iter(model_base.values())) if isinstance(model_base, Mapping) else model_base
        flags = [
            f"--model_name={spec.model.served_name}",
            f"--model_base_path={Path(base).resolve()}",
        ]
    if config.batching is not None:
        path = batching_file or write_batching_file(
            folder / "batching_parameters.txt", config.batching
        )
        flags += ["--enable_batching=true", f"--batching_parameters_file={path.resolve()}"]
    return [*flags, *spec.target.server_flags]


def start_target(
    spec: SweepSpec,
    config: ServerConfig,
    *,
    model_base: ModelBase | None,
    folder: Path,
    command: Sequence[str] = (),
    batching_file: Path | None = None,
) -> RunningTarget:
    """Start (or, for external targets, describe) the target for ``config``, placed on CPUs
    as the spec says."""
    placement = placement_for(spec, config.replicas)
    if spec.target.kind == "external":
        return external_target(spec, placement)
    if spec.target.kind == "command":
        # The spec refuses ``models:`` for a command target: its hooks get one model.
        assert not isinstance(model_base, Mapping)
        deployment, endpoints = deploy(spec, config, folder, model_base)
        target = endpoint_target(endpoints, placement)
        target.deployment = deployment
        return target
    assert model_base is not None
    folder.mkdir(parents=True, exist_ok=True)
    flags = server_flags(spec, config, model_base, folder, batching_file)
    replicas = start_replicas(
        flags,
        config.replicas,
        command=tuple(command) or server_command(spec),
        ready_timeout=spec.target.ready_timeout_s,
        config_dir=folder,
        placement=placement,
    )
    return RunningTarget(
        grpc=[f"grpc://{target}" for target in replicas.grpc_targets],
        rest=replicas.rest_urls,
        metrics=replicas.metrics_urls,
        replicas=replicas,
        flags=flags,
        placement=placement,
    )


def external_target(spec: SweepSpec, placement: Placement | None = None) -> RunningTarget:
    return endpoint_target(spec.target.endpoints, placement)


def endpoint_target(
    endpoints: Sequence[Endpoint], placement: Placement | None = None
) -> RunningTarget:
    """A target at fixed addresses; metrics default to each REST address's Prometheus path."""
    metrics = [
        e.metrics or (e.rest.rstrip("/") + PROMETHEUS_PATH if e.rest else None) for e in endpoints
    ]
    return RunningTarget(
        grpc=[_with_scheme(e.grpc, "grpc://") for e in endpoints if e.grpc],
        rest=[e.rest.rstrip("/") for e in endpoints if e.rest],
        # All or nothing: figures from some replicas only would misstate the whole.
        metrics=[url for url in metrics if url] if all(metrics) else [],
        placement=placement,
    )


def _with_scheme(address: str, scheme: str) -> str:
    return address if "://" in address else scheme + address
