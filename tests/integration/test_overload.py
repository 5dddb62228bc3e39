"""Overload on a real server: 10x the sustainable load, every request answered in time.

The `synthetic` model sleeps a declared time per batch, so the sustainable rate is known:
``max_batch_size`` rows per ``fixed_ms`` with one batch thread. An open-loop flood (requests
sent on a fixed schedule, never waiting for answers, half gRPC and half REST) offers ten times
that. Every request must get an answer of a kind TF Serving gives under overload within twice
``--rest_api_timeout_in_ms``, the batch queue must have refused some (UNAVAILABLE / 503), and
the server's memory must stay bounded.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import numpy as np
import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2

from harness.models.zoo import build_model
from tests.conftest import start_server

pytestmark = pytest.mark.timeout(240)

PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
METRICS_PATH = "/monitoring/prometheus/metrics"
QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"
EXPIRED_IN_QUEUE = "Run() timeout exceeded while waiting in batching queue"
EXPIRED_IN_RUN = "Timed out waiting for notification"

# The flood's server: one thread runs batches of 4 rows in 200 ms, so 20 rows/s is
# sustainable; the queue holds 8 batches (1.6 s of work, longer than the REST timeout).
FIXED_MS = 200
MAX_BATCH = 4
SUSTAINABLE_RPS = MAX_BATCH / (FIXED_MS / 1000)
OFFERED_RPS = 10 * SUSTAINABLE_RPS
FLOOD_SECONDS = 4
REST_TIMEOUT_MS = 1000
ANSWER_BOUND_S = 2 * REST_TIMEOUT_MS / 1000
FEATURES = 1024  # 4 KiB per row, so what the server keeps of the flood shows in its RSS
FLOOD_BATCHING = f"""
    max_batch_size {{ value: {MAX_BATCH} }}
    batch_timeout_micros {{ value: 0 }}
    max_enqueued_batches {{ value: 8 }}
    num_batch_threads {{ value: 1 }}
"""

# What each protocol may answer under overload (TF Serving's codes and messages).
ALLOWED_REST = {
    (200, None),
    (503, QUEUE_FULL),  # queue full: refused at once
    (429, EXPIRED_IN_QUEUE),  # the REST timeout passed while the request was queued
    (504, EXPIRED_IN_RUN),  # ... while its batch ran
}
ALLOWED_GRPC = {"OK", "UNAVAILABLE", "DEADLINE_EXCEEDED"}  # the deadline is the client's


@dataclass(frozen=True)
class Answer:
    protocol: str
    kind: str  # "200", "503: <message>", "OK", "UNAVAILABLE", ...
    allowed: bool
    seconds: float


def server_flags(
    tmp: Path,
    batching: str,
    *,
    fixed_ms: float,
    features: int,
    rest_timeout_ms: int = REST_TIMEOUT_MS,
) -> list[str]:
    model = tmp / "synthetic"
    build_model("synthetic", model, fixed_ms=fixed_ms, per_item_ms=0.0, features=features)
    params = tmp / "batching.txt"
    params.write_text(batching)
    monitoring = tmp / "monitoring.txt"
    monitoring.write_text(f'prometheus_config: {{ enable: true, path: "{METRICS_PATH}" }}\n')
    return [
        "--model_name=synthetic",
        f"--model_base_path={model}",
        "--enable_batching",
        f"--batching_parameters_file={params}",
        f"--monitoring_config_file={monitoring}",
        f"--rest_api_timeout_in_ms={rest_timeout_ms}",
    ]


def rss_bytes(pid: int) -> int:
    """The process's resident set size (Linux /proc)."""
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        pytest.skip("RSS is read from /proc (Linux only)")
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in " + str(status))


def scrape(rest_url: str, name: str) -> float:
    with urllib.request.urlopen(rest_url + METRICS_PATH, timeout=30) as response:
        text = response.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in (name, name + "_total")  # the parser names counters ..._total
    )


def grpc_request_bytes(features: int) -> bytes:
    """One serialized single-row PredictRequest, built once and sent as bytes."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "synthetic"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((1, features), np.float32)))
    return request.SerializeToString()


def rest_body(features: int) -> bytes:
    return json.dumps({"instances": [[1.0] * features]}).encode()


async def rest_call(session: aiohttp.ClientSession, url: str, body: bytes) -> Answer:
    started = time.monotonic()
    async with session.post(url + "/v1/models/synthetic:predict", data=body) as response:
        payload = await response.json()
    error = None if response.status == 200 else payload.get("error")
    if error and error.startswith(QUEUE_FULL):  # TF appends the queue's counts
        error = QUEUE_FULL
    return Answer(
        "REST",
        f"{response.status}: {error}" if error else str(response.status),
        (response.status, error) in ALLOWED_REST,
        time.monotonic() - started,
    )


async def grpc_call(predict, request: bytes) -> Answer:
    # The client's deadline equals the REST timeout, as a client with that budget would set it.
    started = time.monotonic()
    try:
        await predict(request, timeout=REST_TIMEOUT_MS / 1000)
        kind = "OK"
    except grpc.aio.AioRpcError as exc:
        kind = exc.code().name
    return Answer("gRPC", kind, kind in ALLOWED_GRPC, time.monotonic() - started)


async def flood(server, features: int, seconds: float, rate: float) -> list[Answer]:
    """Open loop: one request every 1/rate s, alternating gRPC and REST, all awaited at the end.

    A client-side failure (refused connection, reset, hang past 3x the bound) is recorded as
    a disallowed answer, so it fails the test with what happened.
    """
    grpc_bytes, body = grpc_request_bytes(features), rest_body(features)
    connector = aiohttp.TCPConnector(limit=0)  # as many connections as requests in flight
    timeout = aiohttp.ClientTimeout(total=3 * ANSWER_BOUND_S)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        grpc.aio.insecure_channel(server.grpc_target) as channel,
    ):
        predict = channel.unary_unary(PREDICT_METHOD)
        calls = []
        start = time.monotonic()
        for i in range(int(seconds * rate)):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            call = (
                grpc_call(predict, grpc_bytes)
                if i % 2
                else rest_call(session, server.rest_url, body)
            )
            calls.append(asyncio.ensure_future(call))
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    return [
        o if isinstance(o, Answer) else Answer("client", repr(o), False, float("nan"))
        for o in outcomes
    ]


def test_ten_times_the_sustainable_load_is_answered_in_time_with_bounded_memory(tmp_path):
    flags = server_flags(tmp_path, FLOOD_BATCHING, fixed_ms=FIXED_MS, features=FEATURES)
    with start_server(flags) as server:
        asyncio.run(flood(server, FEATURES, 1, SUSTAINABLE_RPS))  # warm both paths up
        rss_before = rss_bytes(server.process.pid)

        answers = asyncio.run(flood(server, FEATURES, FLOOD_SECONDS, OFFERED_RPS))

        rss_after = rss_bytes(server.process.pid)
        rejected = scrape(server.rest_url, ":batchbench:serving:batch_queue_rejected_count")
        after = asyncio.run(flood(server, FEATURES, 0.5, 4))  # and it still serves

    kinds = Counter((a.protocol, a.kind) for a in answers)
    assert all(a.allowed for a in answers), f"answers of a kind TF Serving does not give: {kinds}"
    late = [a for a in answers if not a.seconds <= ANSWER_BOUND_S]
    assert not late, f"{len(late)} answers later than {ANSWER_BOUND_S} s, e.g. {late[:3]}"
    assert kinds[("REST", f"503: {QUEUE_FULL}")] > 0
    assert kinds[("gRPC", "UNAVAILABLE")] > 0
    assert rejected >= kinds[("REST", f"503: {QUEUE_FULL}")] + kinds[("gRPC", "UNAVAILABLE")]
    assert kinds[("REST", "200")] + kinds[("gRPC", "OK")] > 0
    # The flood carries 4 s x 200 req/s x 4 KiB rows (about 3 MiB binary, 9 MiB as JSON);
    # the server holds at most (8 queued + 1 running) x 4 rows of it at a time. Growth beyond
    # that is connection buffers (aiohttp reads in 64 KiB chunks; at most ~200 REST requests
    # are in flight in 1 s) and allocator slack: 64 MiB covers both with room, and is far
    # below what an unbounded wait for a listening port's backlog of threads would take.
    assert rss_after - rss_before < 64 * 2**20, f"RSS grew {(rss_after - rss_before) / 2**20} MiB"
    assert {a.kind for a in after} == {"200", "OK"}


def test_deadlines_answer_as_tf_serving_and_expired_batches_are_not_run(tmp_path):
    # One thread runs batches of up to 2 rows for 1 s; REST and gRPC deadlines are 300 ms.
    batching = """
        max_batch_size { value: 2 }
        batch_timeout_micros { value: 0 }
        max_enqueued_batches { value: 4 }
        num_batch_threads { value: 1 }
    """
    flags = server_flags(tmp_path, batching, fixed_ms=1000, features=4, rest_timeout_ms=300)

    async def scenario(server) -> list[str]:
        async with (
            aiohttp.ClientSession() as session,
            grpc.aio.insecure_channel(server.grpc_target) as channel,
        ):
            predict = channel.unary_unary(PREDICT_METHOD)

            async def rest(delay: float) -> str:
                await asyncio.sleep(delay)
                answer = await rest_call(session, server.rest_url, rest_body(4))
                return answer.kind

            async def grpc_(delay: float, timeout: float | None) -> str:
                await asyncio.sleep(delay)
                try:
                    await predict(grpc_request_bytes(4), timeout=timeout)
                    return "OK"
                except grpc.aio.AioRpcError as exc:
                    return exc.code().name

            # A runs at once (1 s); B and C, one batch, wait behind it past their deadlines.
            answers = await asyncio.gather(rest(0.0), rest(0.1), grpc_(0.15, 0.3))
            # D, without a deadline, runs after whatever the thread still had to do.
            return [*answers, await grpc_(0.0, None)]

    with start_server(flags) as server:
        answers = asyncio.run(scenario(server))
        batches = scrape(
            server.rest_url, ":tensorflow:serving:batching_session:processed_batch_size_count"
        )
    assert answers == [
        f"504: {EXPIRED_IN_RUN}",  # A: its deadline passed while its batch ran
        f"429: {EXPIRED_IN_QUEUE}",  # B: ... while it was queued
        "DEADLINE_EXCEEDED",  # C: the client's own deadline
        "OK",
    ]
    assert batches == 2  # A's and D's: the batch of B and C had expired and was skipped
