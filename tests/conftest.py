"""Shared fixtures: real reference-server processes on free loopback ports, TF Serving test data."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from harness.report.browser import find_chromium
from harness.servers.server_process import ServerProcess, free_port
from harness.servers.server_process import start_server as _start_server

TESTDATA = Path(__file__).resolve().parents[1].parent / "shared" / "tfserving-testdata"


@contextlib.contextmanager
def start_server(flags: Sequence[str], *, rest: bool = True) -> Iterator[ServerProcess]:
    """Run ``python -m reference_server`` with ``flags`` on free ports until the block ends.

    ``--port`` and (when ``rest``) ``--rest_api_port`` are added unless ``flags`` set them;
    use ``srv.grpc_target`` and ``srv.rest_url`` to reach it.
    """
    flags = list(flags)
    if not any(f.startswith("--port=") for f in flags):
        flags.append(f"--port={free_port()}")
    if rest and not any(f.startswith("--rest_api_port=") for f in flags):
        flags.append(f"--rest_api_port={free_port()}")
    server = _start_server(flags)
    try:
        yield server
    finally:
        server.stop()


def shared_testdata(name: str) -> Path:
    """A path under ../shared/tfserving-testdata; skips the test when that folder is absent."""
    path = TESTDATA / name
    if not path.exists():
        pytest.skip(f"TF Serving test data not available: {path}")
    return path


@pytest.fixture(scope="session")
def tfserving_testdata() -> Path:
    if not TESTDATA.is_dir():
        pytest.skip(f"TF Serving test data not available: {TESTDATA}")
    return TESTDATA


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """A session-wide folder of built-in models, built on first use (ensure_model)."""
    return tmp_path_factory.mktemp("models")


APT_TIMEOUT_S = 900


def _install_chromium() -> str:
    """apt-get install chromium; the reason it cannot be done, or '' when it was."""
    if shutil.which("apt-get") is None:
        return "Chromium is not installed and there is no apt-get to install it"
    if os.geteuid() != 0:
        return "Chromium is not installed and installing it needs root (apt-get install chromium)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        try:
            done = subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            return f"{' '.join(argv)} took more than {APT_TIMEOUT_S}s"
        if done.returncode != 0:
            return f"{' '.join(argv)} failed: {(done.stderr or done.stdout)[-500:]}"
    return ""


@pytest.fixture(scope="session")
def chromium() -> str:
    """The headless Chromium binary, installed with apt-get when missing and possible."""
    binary = find_chromium()
    if binary is None:
        problem = _install_chromium()
        binary = find_chromium()
        if binary is None:
            pytest.skip(problem or "apt-get installed chromium but it is not on PATH")
    return binary
