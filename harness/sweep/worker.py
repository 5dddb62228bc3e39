"""``batchbench worker --master HOST:PORT``: a Locust worker on a load host, for sweeps with
``load.workers``.

A thin wrapper over ``locust --worker``: the locustfile and every option come from the master
(``-f -``), Locust itself checks that both run the same Locust version (the master logs a
worker of another version), and the process reports itself as a remote worker under a name
(``--name``, default the host name). A sweep runs a new Locust master for every measurement,
and Locust tells its workers to quit when a test ends, so the wrapper starts the worker again
each time it exits, until Ctrl-C or SIGTERM (or ``--runs N`` runs).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from types import FrameType

from harness.errors import UserError
from harness.sweep.load_runner import REMOTE_WORKER_ENV, locust_env, split_address

RESTART_PAUSE_S = 1.0


def worker_argv(master: str, processes: int = 1) -> list[str]:
    """``locust --worker`` for ``master`` (``HOST:PORT``); UserError for a malformed one."""
    try:
        host, port = split_address(master)
    except ValueError:
        raise UserError(f"--master: {master!r} is not HOST:PORT (e.g. 10.0.0.1:5557)") from None
    if not host or not 0 < port < 65536:
        raise UserError(f"--master: {master!r} is not HOST:PORT (e.g. 10.0.0.1:5557)")
    argv = [
        sys.executable, "-m", "locust", "--worker", "-f", "-",
        "--master-host", host, "--master-port", str(port), "--loglevel", "WARNING",
    ]  # fmt: skip
    if processes > 1:
        argv += ["--processes", str(processes)]
    return argv


def run_worker(master: str, *, name: str | None, processes: int, runs: int | None) -> int:
    """Run Locust workers for ``master`` again and again; returns the exit status."""
    argv = worker_argv(master, processes)
    env = {**locust_env(), REMOTE_WORKER_ENV: name or socket.gethostname()}
    stop = _StopSignal()
    done = 0
    print(f"worker {env[REMOTE_WORKER_ENV]}: serving the Locust master at {master}", flush=True)
    while not stop.requested and (runs is None or done < runs):
        with subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL) as process:
            stop.process = process
            code = process.wait()
            stop.process = None
        done += 1
        if not stop.requested:
            print(f"worker: locust exited {code}; waiting for the next test", flush=True)
            time.sleep(RESTART_PAUSE_S)
    return 0


class _StopSignal:
    """SIGINT/SIGTERM: end the current worker and do not start another."""

    def __init__(self) -> None:
        self.requested = False
        self.process: subprocess.Popen[bytes] | None = None
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
