"""The Locust scenarios, run as real `locust` processes against a real reference server.

One server (module scope) serves the built-in models (and half_plus_two when TF Serving's test
data is there). Each test runs Locust headless for a few seconds and reads the result file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from harness.models.zoo import build_model
from scenarios import tfs_wire
from scenarios.payloads import PayloadSpec, build_payload, rest_body
from scenarios.recording import decode_histogram, new_histogram
from scenarios.signatures import Signature, from_rest_metadata, from_signature_def_map, pick
from scenarios.trace import from_access_log
from tests.conftest import TESTDATA, start_server

pytestmark = pytest.mark.slow

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
ZOO = {"mlp": {}, "cnn": {"image_size": 32}, "transformer": {}, "synthetic": {}}
HALF_PLUS_TWO = TESTDATA / "saved_model_half_plus_two_cpu"
LOCUST_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A reference server with every built-in model, and half_plus_two if available."""
    base = tmp_path_factory.mktemp("zoo")
    paths = {name: base / name for name in ZOO}
    for name, options in ZOO.items():
        build_model(name, paths[name], **options)
    if HALF_PLUS_TWO.is_dir():
        paths["half_plus_two"] = HALF_PLUS_TWO
    entries = "".join(
        f'  config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" }}\n'
        for name, path in paths.items()
    )
    config = base / "models.config"
    config.write_text(f"model_config_list {{\n{entries}}}\n")
    with start_server([f"--model_config_file={config}"]) as srv:
        yield srv


def served_models() -> list[str]:
    return [*ZOO, "half_plus_two"]


def skip_if_absent(model: str) -> None:
    if model == "half_plus_two" and not HALF_PLUS_TWO.is_dir():
        pytest.skip(f"TF Serving test data not available: {HALF_PLUS_TWO}")


# --- payload from metadata, both protocols, every model (no Locust needed) --------------------


def rest_signature(server: Any, model: str) -> Signature:
    with urllib.request.urlopen(f"{server.rest_url}/v1/models/{model}/metadata") as answer:
        return pick(from_rest_metadata(json.loads(answer.read())), "serving_default", model)


def grpc_signature(channel: grpc.Channel, model: str) -> Signature:
    request = tfs_wire.metadata_request_bytes(tfs_wire.model_spec(model))
    answer = channel.unary_unary(tfs_wire.METADATA_METHOD)(request, timeout=30)
    signatures = from_signature_def_map(tfs_wire.decode_signature_defs(answer))
    return pick(signatures, "serving_default", model)


@pytest.mark.parametrize("model", served_models())
def test_payload_from_metadata_is_served_over_rest(server: Any, model: str) -> None:
    skip_if_absent(model)
    signature = rest_signature(server, model)
    payload = build_payload(signature, PayloadSpec(rows=2), model)
    for columnar in (False, True):
        request = urllib.request.Request(
            f"{server.rest_url}/v1/models/{model}:predict",
            data=rest_body(payload.inputs, signature.name, columnar=columnar),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            assert answer_rows(json.loads(answer.read())) == 2


def answer_rows(body: dict[str, Any]) -> int:
    """Rows in a REST predict answer: row format ("predictions") or columnar ("outputs")."""
    if "predictions" in body:
        return len(body["predictions"])
    outputs = body["outputs"]
    return len(next(iter(outputs.values())) if isinstance(outputs, dict) else outputs)


@pytest.mark.parametrize("model", served_models())
def test_payload_from_metadata_is_served_over_grpc(server: Any, model: str) -> None:
    skip_if_absent(model)
    with grpc.insecure_channel(server.grpc_target) as channel:
        signature = grpc_signature(channel, model)
        payload = build_payload(signature, PayloadSpec(rows=2), model)
        spec = tfs_wire.model_spec(model, signature=signature.name)
        request = tfs_wire.predict_request_bytes(spec, payload.inputs)
        answer = channel.unary_unary(tfs_wire.PREDICT_METHOD)(request, timeout=60)
    outputs = tfs_wire.decode_predict_response(answer)
    assert outputs and all(output.shape[0] == 2 for output in outputs.values())


# --- Locust runs ------------------------------------------------------------------------------


def run_locust(
    scenario: str,
    host: str,
    args: list[str],
    out: Path,
    *,
    once_running: Callable[[], None] | None = None,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    """Run `locust -f scenarios/<scenario>.py --headless ...`; return it and its result file.

    `once_running` is called (in a thread) when Locust logs that all users are spawned.
    """
    result_file = out / f"{scenario}-{time.monotonic_ns()}.json"
    argv = [sys.executable, "-m", "locust", "-f", str(SCENARIOS / f"{scenario}.py"),
            "--headless", "--host", host, "--result-file", str(result_file), *args]  # fmt: skip
    lines: list[str] = []
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env()
    ) as process:
        reader = threading.Thread(target=_read, args=(process, lines, once_running), daemon=True)
        reader.start()
        try:
            process.wait(LOCUST_TIMEOUT_S)
        finally:
            if process.poll() is None:
                process.kill()
            reader.join(10)
    completed = subprocess.CompletedProcess(argv, process.returncode, "".join(lines), "")
    result = json.loads(result_file.read_text()) if result_file.exists() else None
    return completed, result


def _env() -> dict[str, str]:
    # The locustfiles find the repository themselves; keep the test's own path out.
    return {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


def _read(process: subprocess.Popen, lines: list[str], once_running: Callable | None) -> None:
    for line in process.stdout:
        lines.append(line)
        if once_running and "All users spawned" in line:
            threading.Thread(target=once_running, daemon=True).start()
            once_running = None


def stall(server: Any, after_s: float, for_s: float) -> Callable[[], None]:
    """A server-side pause: SIGSTOP the server `after_s` seconds later, SIGCONT `for_s` later."""

    def pause() -> None:
        time.sleep(after_s)
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            time.sleep(for_s)
        finally:
            os.kill(server.process.pid, signal.SIGCONT)

    return pause


def assert_ran(completed: subprocess.CompletedProcess[str], result: dict | None) -> dict:
    assert result is not None, completed.stdout[-3000:]
    assert completed.returncode == 0, completed.stdout[-3000:]
    assert result["total"]["error_count"] == 0, result["total"]["errors"]
    return result


def test_grpc_open_loop_holds_200_per_second_for_10_s(server: Any, tmp_path: Path) -> None:
    args = ["--model-name", "mlp", "--arrival", "constant", "--rate", "200",
            "-u", "10", "-r", "100", "-t", "11s", "--warmup", "1"]  # fmt: skip
    result = assert_ran(
        *run_locust("tfserving_grpc", f"grpc://{server.grpc_target}", args, tmp_path)
    )
    total = result["total"]
    assert total["window_s"] == pytest.approx(10.0, abs=0.5)
    assert total["send_rate_rps"] == pytest.approx(200.0, rel=0.03)
    assert total["count"] + total["incomplete"] == total["sent"]
    assert total["dropped"] == 0
    assert result["load"]["stages"] == []
    assert (result["load"]["model"], result["load"]["rate_rps"]) == ("open", 200.0)
    assert decode_histogram(total["histogram"]).get_total_count() == total["count"]
    assert result["stages"][0]["warmup"]["sent"] > 0


def test_a_stall_shows_in_open_loop_p99_but_hides_in_closed_loop(
    server: Any, tmp_path: Path
) -> None:
    host = f"grpc://{server.grpc_target}"
    common = ["--model-name", "mlp", "-r", "100", "-t", "6s", "--warmup", "1"]
    open_args = [*common, "-u", "10", "--arrival", "constant", "--rate", "200"]
    opened = assert_ran(
        *run_locust("tfserving_grpc", host, open_args, tmp_path, once_running=stall(server, 2, 1))
    )
    closed_args = [*common, "-u", "2"]
    closed = assert_ran(
        *run_locust("tfserving_grpc", host, closed_args, tmp_path, once_running=stall(server, 2, 1))
    )
    # Open loop: ~200 requests wait out the 1 s stall, so p99 is most of a second.
    assert opened["total"]["latency_p99_ms"] > 500.0
    # Closed loop: only the 2 users' requests waited; Locust's own p99 does not see it.
    assert closed["load"]["model"] == "closed"
    assert closed["total"]["latency_max_ms"] > 800.0
    assert closed["total"]["locust"]["p99_ms"] < 100.0
    # Locust also counts the requests in flight when the window closed, if they finished, and
    # a request a user sent between the window's close and its own stop: one per user at most.
    total, users = closed["total"], 2
    assert total["count"] <= total["locust"]["count"]
    assert total["locust"]["count"] <= total["count"] + total["incomplete"] + users


def test_rest_closed_loop_columnar_over_a_target_list(server: Any, tmp_path: Path) -> None:
    replicas = f"{server.rest_url},{server.rest_url}/"  # two replicas (here the same server)
    args = ["--model-name", "synthetic", "--rest-format", "columnar", "-u", "2", "-r", "100",
            "-t", "3s", "--think-time", "0.01", "--targets", replicas]  # fmt: skip
    result = assert_ran(*run_locust("tfserving_rest", server.rest_url, args, tmp_path))
    assert result["targets"] == [server.rest_url, server.rest_url]
    assert result["protocol"] == "rest" and result["total"]["count"] > 20
    assert result["payload"]["inputs"] == {"x": {"dtype": "float32", "shape": [1, 4]}}
    assert result["load"]["think_time_s"] == 0.01


def test_rest_open_loop_stages_are_kept_apart(server: Any, tmp_path: Path) -> None:
    args = ["--model-name", "mlp", "--arrival", "constant", "--stages", "3s:8:50,3s:8:150",
            "--warmup", "0.5"]  # fmt: skip
    result = assert_ran(*run_locust("tfserving_rest", server.rest_url, args, tmp_path))
    first, second = result["stages"]
    assert (first["rate_rps"], second["rate_rps"]) == (50.0, 150.0)
    assert first["send_rate_rps"] == pytest.approx(50.0, rel=0.15)
    assert second["send_rate_rps"] == pytest.approx(150.0, rel=0.15)
    assert first["locust"]["count"] >= first["count"] > 0
    assert result["total"]["sent"] == first["sent"] + second["sent"]


def test_two_processes_merge_exactly(server: Any, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    args = ["--model-name", "mlp", "--processes", "2", "-u", "4", "-r", "100", "-t", "4s",
            "--warmup", "1", "--raw-latency-dir", str(raw)]  # fmt: skip
    result = assert_ran(
        *run_locust("tfserving_grpc", f"grpc://{server.grpc_target}", args, tmp_path)
    )
    workers = {k: v for k, v in result["generator"]["processes"].items() if k != "master"}
    assert len(workers) == 2 and all(info["final_report"] for info in workers.values())
    latency_files = list(raw.glob("latency-us-*.txt"))
    samples = [int(line) for path in latency_files for line in path.read_text().split()]
    assert len(latency_files) == 2
    total = result["total"]
    assert (
        total["count"]
        == len(samples)
        == sum(info["sent"] for info in workers.values()) - (total["incomplete"])
    )
    union = new_histogram()
    for value in samples:
        union.record_value(value)
    merged = decode_histogram(total["histogram"])
    for percentile in (50.0, 99.0, 99.9):
        assert merged.get_value_at_percentile(percentile) == union.get_value_at_percentile(
            percentile
        )
    # The p99 sample itself (HdrHistogram's rank: 0.99·n rounded) is in the reported bucket.
    exact_p99 = sorted(samples)[max(int(0.99 * len(samples) + 0.5), 1) - 1]
    assert merged.values_are_equivalent(round(total["latency_p99_ms"] * 1000), exact_p99)


def test_a_payload_that_does_not_fit_is_refused_before_the_test(
    server: Any, tmp_path: Path
) -> None:
    payload = tmp_path / "wrong.npy"
    np.save(payload, np.ones((2, 5), np.float32))
    args = ["--model-name", "mlp", "--payload", str(payload), "-u", "1", "-t", "5s"]
    completed, result = run_locust("tfserving_grpc", f"grpc://{server.grpc_target}", args, tmp_path)
    assert completed.returncode == 2
    assert result is None
    assert (
        f"payload file {payload} does not match signature 'serving_default' of model 'mlp'"
        in completed.stdout
    )
    assert "dimension 1 must be 16" in completed.stdout
    assert "Traceback" not in completed.stdout


def test_a_trace_replays_at_its_times_and_round_trips_through_the_access_log(
    tmp_path: Path,
) -> None:
    """Replay a 3 s trace at 2x against a server that keeps an access log: every request
    leaves at its trace time (checked per request), and the access log, imported back,
    is the same trace at the new speed."""
    models = tmp_path / "mlp"
    build_model("mlp", models)
    access_log = tmp_path / "access.log"
    trace = tmp_path / "trace.jsonl"
    times = [round(0.013 * i + (0.2 if i % 10 == 0 else 0.0), 6) for i in range(230)]
    times.sort()
    trace.write_text(
        "".join(json.dumps({"t": t, "rows": 1 + i % 3}) + "\n" for i, t in enumerate(times))
    )
    raw = tmp_path / "raw"
    args = ["--model-name", "mlp", "--trace", str(trace), "--trace-speed", "2",
            "-u", "8", "-r", "100", "-t", "30s", "--raw-latency-dir", str(raw)]  # fmt: skip
    flags = ["--model_name=mlp", f"--model_base_path={models}", f"--access_log_file={access_log}"]
    with start_server(flags) as srv:
        result = assert_ran(
            *run_locust("tfserving_grpc", f"grpc://{srv.grpc_target}", args, tmp_path)
        )
    assert result["load"]["arrival"] == "trace"
    assert result["total"]["sent"] == len(times)  # one pass, then the test stopped by itself
    assert result["total"]["window_s"] < 10
    assert {kind["rows"] for kind in result["by_kind"]} == {1, 2, 3}
    assert sum(second["sent"] for second in result["timeline"]) == len(times)
    sends = sorted(
        tuple(map(float, line.split()))
        for path in raw.glob("sends-*.txt")
        for line in path.read_text().splitlines()
    )
    assert [intended for intended, _ in sends] == pytest.approx([t / 2 for t in times], abs=1e-6)
    lags = sorted(sent - intended for intended, sent in sends)
    assert lags[0] > -0.0015  # never more than the early wake-up ahead
    assert lags[int(0.99 * len(lags))] < 0.05  # a loaded 2-core machine: the bench asks 2 ms
    with open(access_log, encoding="utf-8") as handle:
        replayed = [entry for entry in from_access_log(handle) if entry.model == "mlp"]
    assert Counter(entry.rows for entry in replayed) == Counter(1 + i % 3 for i in range(230))
    # The server notes a call when its handler starts: on a loaded machine (load average 13
    # on 2 cores seen) many wait longer, the first one too (the log's time origin), so offsets
    # are taken from their median and only the typical one is held to a tight bound.
    shifts = [entry.t - (t - times[0]) / 2 for entry, t in zip(replayed, times, strict=True)]
    middle = sorted(shifts)[len(shifts) // 2]
    offsets = sorted(abs(shift - middle) for shift in shifts)
    assert offsets[len(offsets) // 2] < 0.02
    assert offsets[int(0.9 * len(offsets))] < 0.25
