"""The fuzz suite's servers: real reference-server processes serving the built-in ``mlp``.

Two servers, started together: ``unbatched`` (no request limit, so the default decode bound of
2 GiB applies) and ``batched`` (batching on, ``--max_request_bytes``, so an 8 x bound). Each
module fuzzes one protocol against both and ends by checking that they are alive and that
their RSS grew less than RSS_BOUND_BYTES over the module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

from harness.models.zoo import build_model
from harness.servers.server_process import free_port, launch_server, wait_ready
from tests.fuzz.support import FuzzServer, Tally

BATCHING = """
max_batch_size { value: 32 }
batch_timeout_micros { value: 10000 }
max_enqueued_batches { value: 1000 }
num_batch_threads { value: 1 }
"""
MAX_REQUEST_BYTES = 1 << 20
REPORT_ENV = "BATCHBENCH_FUZZ_REPORT"


def _flags(model: Path, tmp: Path, batched: bool) -> list[str]:
    flags = [
        "--model_name=mlp",
        f"--model_base_path={model}",
        f"--port={free_port()}",
        f"--rest_api_port={free_port()}",
        "--tensorflow_intra_op_parallelism=1",
        "--tensorflow_inter_op_parallelism=1",
        "--shutdown_grace_seconds=1",
    ]
    if batched:
        params = tmp / "batching.txt"
        params.write_text(BATCHING)
        flags += [
            "--enable_batching=true",
            f"--batching_parameters_file={params}",
            f"--max_request_bytes={MAX_REQUEST_BYTES}",
        ]
    return flags


@pytest.fixture(scope="session")
def mlp_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("fuzz") / "mlp"
    build_model("mlp", base)
    return base


@pytest.fixture(scope="session")
def fuzz_servers(
    mlp_model: Path, tmp_path_factory, tally: Tally
) -> Iterator[dict[str, FuzzServer]]:
    """Both servers by name, launched at once (each takes seconds to import TensorFlow)."""
    tmp = tmp_path_factory.mktemp("fuzz-config")
    launched = {
        name: launch_server(_flags(mlp_model, tmp, batched=name == "batched"))
        for name in ("unbatched", "batched")
    }
    try:
        servers = {
            name: FuzzServer.ready(name, wait_ready(process)) for name, process in launched.items()
        }
        yield servers
        for server in servers.values():
            server.close()
            tally.batch_sizes[server.name] = {str(k): v for k, v in server.batch_sizes.items()}
    finally:
        for process in launched.values():  # both at once: each has a shutdown grace period
            if process.process.poll() is None:
                process.process.terminate()
        for process in launched.values():
            process.stop()


@pytest.fixture(scope="session")
def tally() -> Iterator[Tally]:
    """Every answer's code, by protocol, category and server; written as JSON at the end to
    $BATCHBENCH_FUZZ_REPORT when set (the long profile's record)."""
    record = Tally()
    yield record
    path = os.environ.get(REPORT_ENV)
    if path:
        Path(path).write_text(json.dumps(record.as_json(), indent=2) + "\n")


@pytest.fixture(scope="module")
def rss_at_start(fuzz_servers: dict[str, FuzzServer]) -> dict[str, int]:
    """Each server's RSS before the module's fuzzing (after the servers' own warm-up)."""
    return {name: psutil.Process(s.pid).memory_info().rss for name, s in fuzz_servers.items()}


@pytest.fixture(scope="session")
def valid_rows() -> np.ndarray:
    return np.random.default_rng(13).standard_normal((2, 16)).astype(np.float32)


@pytest.fixture(scope="session")
def expected_y(mlp_model: Path, valid_rows: np.ndarray) -> np.ndarray:
    """The mlp's answer to ``valid_rows``, from TensorFlow in this process: the oracle."""
    import tensorflow as tf

    model = tf.saved_model.load(str(mlp_model / "1"))
    return model.signatures["serving_default"](x=tf.constant(valid_rows))["y"].numpy()
