"""``batchbench demo``: the main job on the built-in default.

Builds the ``mlp`` model, serves it with the reference server (batching on), and shows one
Predict over gRPC and one over REST.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.server_process import free_port, start_server
from harness.tfs_client import predict_grpc, predict_rest

DEMO_MODEL = "mlp"
DEMO_BATCHING = """\
max_batch_size { value: 32 }
batch_timeout_micros { value: 2000 }
max_enqueued_batches { value: 16 }
num_batch_threads { value: 2 }
"""


def ensure_model(models_dir: Path, name: str) -> Path:
    """The base path of a built-in model, built on first use."""
    base = models_dir / name
    if not any(p.name.isdigit() for p in base.glob("*")):
        from harness.model_zoo import build_model

        print(f"building the {name!r} model in {base} ...", flush=True)
        build_model(name, base)
    return base


def run_demo(out: Path) -> None:
    base = ensure_model(out / "models", DEMO_MODEL)
    batching_file = out / "demo-batching_parameters.txt"
    batching_file.parent.mkdir(parents=True, exist_ok=True)
    batching_file.write_text(DEMO_BATCHING)
    flags = [
        f"--model_name={DEMO_MODEL}",
        f"--model_base_path={base.resolve()}",
        f"--port={free_port()}",
        f"--rest_api_port={free_port()}",
        "--enable_batching",
        f"--batching_parameters_file={batching_file.resolve()}",
    ]
    print("starting reference-server", " ".join(flags), flush=True)
    with start_server(flags) as server:
        rows = np.random.default_rng(0).random((2, 16), dtype=np.float32)
        version, outputs = predict_grpc(server.grpc_target, DEMO_MODEL, {"x": rows})
        print(
            f"gRPC Predict {server.grpc_target}: version {version}, "
            + ", ".join(f"{k} {v.shape} {v.ravel()[:4]}" for k, v in outputs.items())
        )
        answer = predict_rest(server.rest_url, DEMO_MODEL, {"instances": rows.tolist()})
        print(f"REST predict {server.rest_url}: {answer}")
    print("sweep: not yet — the sweep, its HTML report and recommendations come next.")
