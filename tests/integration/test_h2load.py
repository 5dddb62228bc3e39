"""The h2load yardstick's requests are real Predict calls: a reference server answers the gRPC
frame and the REST body the benchmark sends with OK, and counts them as such.

``h2load`` is Debian's ``nghttp2-client``: installed with apt-get when missing (as root), and
the test skips, saying why, when that is impossible.
"""

from __future__ import annotations

import subprocess

import pytest

from benchmarks.common import find_tool, reference_server
from benchmarks.h2load_check import MODEL, h2load_argv, scrape_ok, write_bodies
from harness.models.zoo import ensure_model

pytestmark = pytest.mark.slow
REQUESTS = 200


@pytest.fixture(scope="module")
def h2load() -> str:
    path, why = find_tool("h2load", "nghttp2-client")
    if path is None:
        pytest.skip(why)
    return path


@pytest.mark.parametrize("protocol", ["grpc", "rest"])
def test_every_h2load_request_is_an_ok_predict(protocol, h2load, tmp_path, models_dir):
    base = ensure_model(models_dir, MODEL).resolve()
    bodies = write_bodies(tmp_path)
    with reference_server(MODEL, base, metrics=True) as server:
        url = f"http://{server.grpc_target}" if protocol == "grpc" else server.rest_url
        argv = h2load_argv(h2load, protocol, url, bodies[protocol], ["-n", str(REQUESTS)])
        before = scrape_ok(server)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        ok = scrape_ok(server) - before
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{REQUESTS} succeeded" in done.stdout, done.stdout
    assert ok == REQUESTS
