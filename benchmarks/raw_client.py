"""The cheapest Python client we know for one Predict: the floor a Locust scenario sits on.

``N`` asyncio tasks send one pre-built request over and over for ``SECONDS``: gRPC through one
grpc.aio channel's generic method (bytes in, bytes out, no protobuf work per call), REST through
one aiohttp session. No timing per request, no histogram, no Locust: what is left is the
client library's own CPU per call. Prints one JSON line: requests, wall and CPU seconds.

Run: python -m benchmarks.raw_client grpc|rest ADDRESS BODY_FILE SECONDS CONCURRENCY
(ADDRESS: host:port for gRPC, the full :predict URL for REST).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc

from scenarios.tfs_wire import PREDICT_METHOD


async def _grpc(address: str, body: bytes, seconds: float, concurrency: int) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        predict = channel.unary_unary(PREDICT_METHOD)
        return await _drive(lambda: predict(body), seconds, concurrency)


async def _rest(url: str, body: bytes, seconds: float, concurrency: int) -> int:
    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def call() -> None:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}")

        return await _drive(call, seconds, concurrency)


async def _drive(call: Callable[[], Awaitable[Any]], seconds: float, concurrency: int) -> int:
    """Keep ``concurrency`` calls in flight until ``seconds`` pass; the number completed."""
    await call()  # the connection is up before the clock starts
    deadline = time.perf_counter() + seconds
    done = 0

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await call()
            done += 1

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return done


def main(argv: list[str]) -> int:
    protocol, address, body_file, seconds, concurrency = argv
    body = Path(body_file).read_bytes()
    drive = _grpc if protocol == "grpc" else _rest
    wall, cpu = time.perf_counter(), time.process_time()
    done = asyncio.run(drive(address, body, float(seconds), int(concurrency)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(json.dumps({"requests": done, "wall_s": wall, "cpu_s": cpu}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
