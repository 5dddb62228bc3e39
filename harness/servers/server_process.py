"""Launch a model server process (reference-server or tensorflow_model_server) and find its ports.

Both binaries print the same two start-up lines once their models are loaded; reading them is
how we learn the bound ports when asked for port 0, and that the server is ready.
"""

from __future__ import annotations

import collections
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from harness.errors import UserError

GRPC_READY = re.compile(r"Running gRPC ModelServer at [^:\s]+:(\d+)")
REST_READY = re.compile(r"Exporting HTTP/REST API at:[^:\s]+:(\d+)")
LOG_TAIL_LINES = 200

REFERENCE_SERVER = (sys.executable, "-m", "reference_server")


@dataclass
class ServerProcess:
    """A running server: its process, ports (once ready) and the tail of its log."""

    command: tuple[str, ...]
    process: subprocess.Popen
    grpc_port: int | None = None
    rest_port: int | None = None
    log_tail: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=LOG_TAIL_LINES)
    )
    _ready: threading.Event = field(default_factory=threading.Event)
    _log_thread: threading.Thread | None = None

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def log_text(self) -> str:
        return "".join(self.log_tail)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log_thread is not None:
            self._log_thread.join(timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 now (the OS may hand it out again later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _follow_log(server: ServerProcess, expect_rest: bool) -> None:
    """Drain the server's output (so its pipe never fills) and note the ports as they appear."""
    assert server.process.stdout is not None  # started with stdout=PIPE
    for line in server.process.stdout:
        server.log_tail.append(line)
        if server.grpc_port is None and (m := GRPC_READY.search(line)):
            server.grpc_port = int(m.group(1))
        if server.rest_port is None and (m := REST_READY.search(line)):
            server.rest_port = int(m.group(1))
        if server.grpc_port and (server.rest_port or not expect_rest):
            server._ready.set()
    server._ready.set()  # output closed: the process ended


def start_server(
    flags: Sequence[str],
    *,
    command: Sequence[str] = REFERENCE_SERVER,
    ready_timeout: float = 120.0,
    env: dict[str, str] | None = None,
    cpus: Sequence[int] = (),
) -> ServerProcess:
    """Start a server with tensorflow_model_server flags (on ``cpus``, when given) and wait
    until it serves.

    Raises UserError with the log tail if it exits or is not ready within ``ready_timeout``.
    """
    return wait_ready(launch_server(flags, command=command, env=env, cpus=cpus), ready_timeout)


def launch_server(
    flags: Sequence[str],
    *,
    command: Sequence[str] = REFERENCE_SERVER,
    env: dict[str, str] | None = None,
    cpus: Sequence[int] = (),
) -> ServerProcess:
    """Start a server process (without waiting for it): its own session, so a Ctrl-C at the
    terminal reaches only the harness, which then stops its servers in order. ``cpus``: the
    CPU set it (and every thread and child) may run on; empty: anywhere."""
    argv = (*command, *flags)
    process = subprocess.Popen(
        child_argv(argv, cpus),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    server = ServerProcess(tuple(argv), process)
    server._log_thread = threading.Thread(
        target=_follow_log, args=(server, _rest_requested(flags)), daemon=True
    )
    server._log_thread.start()
    return server


def wait_ready(server: ServerProcess, ready_timeout: float = 120.0) -> ServerProcess:
    """Wait for a launched server's ready lines; stop it and raise UserError (with its log
    tail) if it exits first or ``ready_timeout`` passes."""
    started = time.monotonic()
    server._ready.wait(ready_timeout)
    expect_rest = _rest_requested(server.command)
    if server.grpc_port is None or (expect_rest and server.rest_port is None):
        server.stop()
        waited = time.monotonic() - started
        raise UserError(
            f"server did not become ready ({waited:.0f} s, exit code {server.process.poll()}): "
            f"{' '.join(server.command)}\n--- server log (tail) ---\n{server.log_text()}"
        )
    return server


def child_argv(
    argv: Sequence[str], cpus: Sequence[int] = (), *, die_with_parent: bool = True
) -> list[str]:
    """``argv`` run so that the child dies with the harness (Linux: PR_SET_PDEATHSIG, which
    survives exec; a killed harness must not leave servers holding ports and cores) and, when
    ``cpus`` are given, pinned to them before exec (affinity is inherited by every thread and
    child, so TensorFlow's pools and Locust's worker processes stay on the set)."""
    if not sys.platform.startswith("linux"):
        return list(argv)
    if not cpus and not die_with_parent:
        return list(argv)
    cpu_list = ",".join(str(cpu) for cpu in cpus)
    return [sys.executable, "-c", _LAUNCH, "1" if die_with_parent else "0", cpu_list, *argv]


# prctl(PR_SET_PDEATHSIG=1, SIGTERM=15) and sched_setaffinity as asked, then become the command.
_LAUNCH = (
    "import ctypes, os, sys; die, cpus = sys.argv[1:3]\n"
    "if die == '1': ctypes.CDLL(None).prctl(1, 15)\n"
    "if cpus: os.sched_setaffinity(0, [int(c) for c in cpus.split(',')])\n"
    "os.execvp(sys.argv[3], sys.argv[3:])"
)


def cpus_allowed(pid: int) -> str | None:
    """The process's ``Cpus_allowed_list`` from ``/proc/PID/status`` (``"0-1"``); None when it
    cannot be read (not Linux, or the process is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Cpus_allowed_list:"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _rest_requested(flags: Sequence[str]) -> bool:
    for flag in flags:
        if flag.startswith("--rest_api_port="):
            return flag.split("=", 1)[1] not in ("", "0")
    return False
