"""Sweeps with Locust workers started elsewhere (``load.workers`` + ``batchbench worker``).

The workers are independent processes, started as a user starts them on a load host: on
loopback, and (as root, where network namespaces can be made) in another network namespace
joined to the master's and the server's by a veth pair, so the load crosses an interface.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import yaml

from harness.models.zoo import ensure_model
from harness.servers.server_process import ServerProcess, free_port
from harness.store.results import PointResult, ResultStore
from harness.sweep import telemetry
from tests.conftest import start_server
from tests.helpers import wait_for

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

MEASUREMENT = {
    "warmup_s": 1,
    "window_s": 1.5,
    "stability_tolerance": 1.0,
    "stable_windows": 2,
    "max_windows": 2,  # one Locust run per point: its verdict is final
    "min_requests": 1,
}
MONITORING = 'prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }\n'
# One batch thread and a batch that sleeps 50 ms whatever its size: 16 closed-loop users make
# about 320 requests/s, set by the clock rather than by how much CPU a busy machine leaves.
SLEEPY = {"fixed_ms": 50.0, "per_item_ms": 0.0}
BATCHING = (
    "max_batch_size { value: 16 } batch_timeout_micros { value: 0 } "
    "num_batch_threads { value: 1 } max_enqueued_batches { value: 16 }\n"
)


@pytest.fixture(scope="module")
def server(models_dir, tmp_path_factory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("server")
    (folder / "monitoring.txt").write_text(MONITORING)
    (folder / "batching.txt").write_text(BATCHING)
    base = ensure_model(models_dir, "synthetic", SLEEPY)
    flags = [
        "--model_name=synthetic",
        f"--model_base_path={base}",
        f"--monitoring_config_file={folder / 'monitoring.txt'}",
        "--enable_batching=true",
        f"--batching_parameters_file={folder / 'batching.txt'}",
    ]
    with start_server(flags) as srv:
        yield srv


@contextlib.contextmanager
def worker(master: str, name: str, netns: Sequence[str] = ()) -> Iterator[subprocess.Popen]:
    """``batchbench worker`` as its own process group (as on another host), ended at exit."""
    argv = [*netns, sys.executable, "-m", "harness", "worker", "--master", master, "--name", name]
    process = subprocess.Popen(
        argv, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def sweep(
    folder: Path,
    name: str,
    endpoint: dict,
    load: dict,
    netns: Sequence[str] = (),
    model: str = "synthetic",
) -> tuple[subprocess.CompletedProcess, Path]:
    spec = {
        "name": name,
        "target": {"kind": "external", "endpoints": [endpoint]},
        "model": {"name": model},
        "load": {"concurrency": [16], **load},
        "placement": "none",
        "measurement": MEASUREMENT,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = folder / name
    argv = [*netns, sys.executable, "-m", "harness", "sweep", str(path), "--out", str(out)]
    done = subprocess.run(
        [*argv, "--no-report"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    return done, out


def only_point(run: Path) -> PointResult:
    (point,) = ResultStore.open(run).load_points()
    return point


def local_endpoint(server: ServerProcess) -> dict:
    return {"grpc": server.grpc_target, "rest": server.rest_url}


def check_merged_counts(point: PointResult, remote_names: set[str]) -> None:
    """Every run's merged count is the sum of its workers' own counts, and every remote worker
    took part in every run."""
    runs = point.extra["generator_workers"]
    assert runs
    for run in runs:
        workers = [p for p in run["processes"] if p["role"] != "master"]
        assert sum(p["sent"] for p in workers) == run["sent"] > 0
        remote = [p for p in workers if p["role"] == "remote"]
        assert {p["remote"] for p in remote} == remote_names
        assert all(p["sent"] > 0 and p["final_report"] for p in remote)
        assert all(p["cpu_percent"] is not None for p in remote)


def test_two_remote_workers_merge_exactly_and_agree_with_two_local_processes(tmp_path, server):
    port = free_port()
    master = f"127.0.0.1:{port}"
    workers = {"workers": {"remote": 2, "bind": master, "wait_s": 60}}
    with worker(master, "load-a"), worker(master, "load-b"):
        remote, remote_run = sweep(tmp_path, "remote", local_endpoint(server), workers)
    assert remote.returncode == 0, remote.stdout + remote.stderr
    local, local_run = sweep(tmp_path, "local", local_endpoint(server), {"processes": 2})
    assert local.returncode == 0, local.stdout + local.stderr

    distributed, forked = only_point(remote_run), only_point(local_run)
    assert distributed.status == forked.status == "ok"
    check_merged_counts(distributed, {"load-a", "load-b"})
    assert not any("dropped out" in reason for reason in distributed.invalid_reasons)
    # The same load on the same server: the throughputs agree within what the two runs' own
    # windows spread by (and at least 20%: they ran a few seconds apart on a shared machine).
    a, b = distributed.metrics["throughput_rps"], forked.metrics["throughput_rps"]
    spread = distributed.stability["throughput_spread"] + forked.stability["throughput_spread"]
    assert abs(a - b) / b <= max(0.2, 2 * spread), (a, b, spread)


def requests_served(server: ServerProcess) -> float:
    with urllib.request.urlopen(server.rest_url + "/monitoring/prometheus/metrics") as page:
        return telemetry.total(
            telemetry.parse_samples(page.read().decode()), telemetry.REQUEST_COUNT
        )


def test_a_remote_worker_that_drops_out_invalidates_the_point_beside_a_local_one(tmp_path, server):
    port = free_port()
    master = f"127.0.0.1:{port}"
    load = {"processes": 1, "workers": {"remote": 1, "bind": master, "wait_s": 60}}
    spec = {**MEASUREMENT, "window_s": 4}
    with worker(master, "doomed") as doomed:
        before = requests_served(server)
        path = tmp_path / "drop.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "name": "drop",
                    "target": {"kind": "external", "endpoints": [local_endpoint(server)]},
                    "model": {"name": "synthetic"},
                    "load": {"concurrency": [8], **load},
                    "placement": "none",
                    "measurement": spec,
                }
            )
        )
        argv = [sys.executable, "-m", "harness", "sweep", str(path), "--out", str(tmp_path / "d")]
        with subprocess.Popen(
            [*argv, "--no-report"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        ) as run:
            # Once load flows (warm-up included), the remote worker's host "goes away".
            wait_for(lambda: requests_served(server) > before + 300, 120, "load to flow")
            os.killpg(doomed.pid, signal.SIGKILL)
            output = run.communicate(timeout=300)[0].decode()
    assert run.returncode == 0, output
    point = only_point(tmp_path / "d")
    assert point.status == "ok" and not point.valid
    reasons = " | ".join(point.invalid_reasons)
    assert "worker dropped out: 1 of 2 Locust workers (1 remote, 1 local)" in reasons
    (first,) = point.extra["generator_workers"]
    local = [p for p in first["processes"] if p["role"] == "local"]
    assert len(local) == 1 and local[0]["sent"] > 0 and local[0]["final_report"]
    lost = [p for p in first["processes"] if p["role"] in ("remote", "unreported")]
    assert len(lost) <= 1 and not any(p["final_report"] for p in lost)


def test_a_sweep_whose_workers_never_come_stops_naming_what_is_missing(tmp_path, server):
    port = free_port()
    load = {"processes": 1, "workers": {"remote": 2, "bind": f"127.0.0.1:{port}", "wait_s": 3}}
    done, run = sweep(tmp_path, "lonely", local_endpoint(server), load)
    assert done.returncode == 2
    assert (
        f"load.workers: the Locust master on 127.0.0.1:{port} waited 3 s for 3 worker(s) "
        "(2 remote, 1 local) and 1 connected"
    ) in done.stderr
    assert f"batchbench worker --master ADDRESS:{port}" in done.stderr
    assert not list((run / "points").glob("*.json"))  # nothing measured, nothing kept


# --- across network namespaces ---------------------------------------------------------------

SUBNET = "10.231.{}.{}"


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


def _install_iproute2() -> str:
    """apt-get install iproute2; the reason it cannot be done, or '' when it was."""
    if shutil.which("apt-get") is None:
        return "`ip` (iproute2) is missing and there is no apt-get to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "iproute2"]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            return f"{' '.join(argv)} failed: {(done.stderr or done.stdout)[-300:]}"
    return ""


@contextlib.contextmanager
def two_namespaces() -> Iterator[tuple[str, str, str, str]]:
    """Namespaces ``server`` and ``load`` joined by a veth pair: (server ns, load ns, server
    address, server-side interface); skips the test with the reason when they cannot be made."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (ip netns add)")
    if shutil.which("ip") is None and (problem := _install_iproute2()):
        pytest.skip(problem)
    tag = f"{os.getpid() % 100000}"
    server_ns, load_ns = f"bbsrv{tag}", f"bbload{tag}"
    octet = str(os.getpid() % 250 + 1)
    made: list[str] = []
    try:
        for ns in (server_ns, load_ns):
            if (done := _ip("netns", "add", ns)).returncode != 0:
                pytest.skip(f"cannot make a network namespace: {done.stderr.strip()}")
            made.append(ns)
        steps = [
            ("link", "add", f"vs{tag}", "type", "veth", "peer", "name", f"vl{tag}"),
            ("link", "set", f"vs{tag}", "netns", server_ns),
            ("link", "set", f"vl{tag}", "netns", load_ns),
            ("-n", server_ns, "addr", "add", SUBNET.format(octet, 1) + "/24", "dev", f"vs{tag}"),
            ("-n", load_ns, "addr", "add", SUBNET.format(octet, 2) + "/24", "dev", f"vl{tag}"),
            ("-n", server_ns, "link", "set", f"vs{tag}", "up"),
            ("-n", load_ns, "link", "set", f"vl{tag}", "up"),
            ("-n", server_ns, "link", "set", "lo", "up"),
            ("-n", load_ns, "link", "set", "lo", "up"),
        ]
        for step in steps:
            if (done := _ip(*step)).returncode != 0:
                pytest.skip(f"cannot join the namespaces (ip {' '.join(step)}): {done.stderr}")
        yield server_ns, load_ns, SUBNET.format(octet, 1), f"vs{tag}"
    finally:
        for ns in made:
            _ip("netns", "delete", ns)  # takes the veth pair with it


def rx_bytes(ns: str, interface: str) -> int:
    stats = json.loads(_ip("-n", ns, "-j", "-s", "link", "show", interface).stdout)
    return int(stats[0]["stats64"]["rx"]["bytes"])


def wait_serving(netns: Sequence[str], url: str) -> None:
    check = [
        *netns,
        sys.executable,
        "-c",
        f"import urllib.request; urllib.request.urlopen({url!r})",
    ]
    wait_for(
        lambda: subprocess.run(check, capture_output=True, timeout=30).returncode == 0,
        180,
        "the server in its namespace",
        interval_s=1.0,
    )


def test_remote_workers_in_another_network_namespace_load_across_a_veth(tmp_path, models_dir):
    with two_namespaces() as (server_ns, load_ns, address, interface):
        in_server = ("ip", "netns", "exec", server_ns)
        in_load = ("ip", "netns", "exec", load_ns)
        base = ensure_model(models_dir, "mlp")
        monitoring = tmp_path / "monitoring.txt"
        monitoring.write_text(MONITORING)
        grpc_port, rest_port, master_port = 8500, 8501, 5557  # the namespace is ours alone
        serve = [
            *in_server, sys.executable, "-m", "reference_server",
            f"--port={grpc_port}", f"--rest_api_port={rest_port}", "--model_name=mlp",
            f"--model_base_path={base}", f"--monitoring_config_file={monitoring}",
        ]  # fmt: skip
        with subprocess.Popen(
            serve, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        ) as srv:
            try:
                wait_serving(in_server, f"http://127.0.0.1:{rest_port}/v1/models/mlp")
                master = f"{address}:{master_port}"
                endpoint = {
                    "grpc": f"{address}:{grpc_port}",
                    "rest": f"http://{address}:{rest_port}",
                }
                load = {"workers": {"remote": 2, "bind": master, "wait_s": 60}}
                before = rx_bytes(server_ns, interface)
                with worker(master, "ns-a", in_load), worker(master, "ns-b", in_load):
                    done, run = sweep(tmp_path, "netns", endpoint, load, in_server, "mlp")
                received = rx_bytes(server_ns, interface) - before
            finally:
                srv.terminate()
                srv.wait(timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr
        point = only_point(run)
        assert point.status == "ok"
        check_merged_counts(point, {"ns-a", "ns-b"})
        # Every request the workers sent came in through the veth: at least its payload each.
        sent = sum(r["sent"] for r in point.extra["generator_workers"])
        assert received > sent * 60, (received, sent)
