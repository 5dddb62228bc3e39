"""``batchbench serve --replicas N [server flags]``: N reference servers as one service.

Starts the replicas (each with its own ports and its share of the cores), waits until every one
serves its models, prints the endpoints in the forms the scenarios take, and stops them all on
Ctrl-C or SIGTERM, or as soon as one of them exits. With ``--placement auto`` (or
``--server-cpus``) each replica runs pinned to its own CPU set, and the cores left for a load
generator on the same machine are printed with the ``taskset`` prefix that puts it there.
"""

from __future__ import annotations

import signal
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from harness.errors import UserError
from harness.plan.placement import Placement, format_cpus, parse_cpus, plan_placement
from harness.servers.replicas import ReplicaSet, start_replicas
from harness.servers.targets import machine_cpus

POLL_S = 0.5


def describe(replicas: ReplicaSet) -> str:
    """The endpoints, one replica per line, and the --targets lists for the scenarios."""
    lines = []
    for i, server in enumerate(replicas.servers):
        line = f"replica {i}: pid {server.process.pid}  grpc {server.grpc_target}  "
        line += f"rest {server.rest_url}"
        if replicas.metrics_path:
            line += f"  metrics {server.rest_url}{replicas.metrics_path}"
        lines.append(line)
    grpc = ",".join(f"grpc://{t}" for t in replicas.grpc_targets)
    lines += [f"grpc targets: {grpc}", f"rest targets: {','.join(replicas.rest_urls)}"]
    return "\n".join(lines)


def serve_placement(
    replicas: int, mode: str | None, server_cpus: str | None, machine: Sequence[int] = ()
) -> Placement | None:
    """The replicas' CPU sets for ``--placement`` / ``--server-cpus`` (None: not pinned); the
    generator's set is what the servers leave of the machine."""
    cores = tuple(machine) or machine_cpus()
    if server_cpus is not None:
        try:
            servers = parse_cpus(server_cpus)
        except ValueError as exc:
            raise UserError(f"--server-cpus: {exc}") from None
        if missing := sorted(set(servers) - set(cores)):
            usable = format_cpus(cores)
            raise UserError(f"--server-cpus: CPU(s) {format_cpus(missing)} not usable: {usable}")
        rest = tuple(c for c in cores if c not in servers)
        return plan_placement(cores, replicas, mode="cpus", servers=servers, generator=rest)
    if mode in (None, "none"):
        return None
    if mode == "cpus":
        raise UserError("--placement cpus needs --server-cpus LIST")
    return plan_placement(cores, replicas)


def describe_placement(placement: Placement) -> str:
    record = placement.as_dict()
    lines = [f"replica {i}: cpus {cpus}" for i, cpus in enumerate(record["replicas"])]
    if record["generator"]:
        lines.append(
            f"load generator cpus: {record['generator']} "
            f"(e.g. taskset -c {record['generator']} locust ...)"
        )
    return "\n".join(lines)


def serve(
    flags: Sequence[str],
    replicas: int,
    *,
    ready_timeout: float = 120.0,
    placement: Placement | None = None,
) -> int:
    """Run until a signal or a replica's exit; 0 after a requested stop, 1 if a replica died."""
    for flag in flags:
        if flag.split("=", 1)[0] in ("--port", "--rest_api_port"):
            raise UserError(f"{flag}: each replica gets its own free ports; leave them out")
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with (
            tempfile.TemporaryDirectory(prefix="batchbench-serve-") as config_dir,
            start_replicas(
                flags,
                replicas,
                ready_timeout=ready_timeout,
                config_dir=Path(config_dir),
                placement=placement,
            ) as running,
        ):
            print(describe(running), flush=True)
            if placement is not None:
                print(describe_placement(placement), flush=True)
            print(f"{replicas} replica(s) AVAILABLE; Ctrl-C stops them", flush=True)
            while not stop.wait(POLL_S):
                if died := running.exited():
                    for i, code in died:
                        print(f"replica {i} exited with code {code}; stopping all", flush=True)
                    return 1
            print("stopping", flush=True)
        return 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
