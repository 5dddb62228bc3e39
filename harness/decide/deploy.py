"""The recommendation as something to run: the ``batching_parameters.txt`` text and the command
lines that serve the model as the chosen point was measured."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.decide.ranking import Candidate, Mode
from harness.decide.words import figures_text
from harness.models import zoo as model_zoo
from harness.plan.batching_file import format_batching
from harness.plan.points import Point
from harness.plan.spec import SweepSpec
from harness.servers.replicas import replica_flags
from harness.store.layout import BATCHING_FILE

# Ports of the printed command lines: replica i serves gRPC on 8500 + 2i and REST on 8501 + 2i.
GRPC_PORT, REST_PORT = 8500, 8501


def batching_text(chosen: Candidate, mode: Mode, run_id: str) -> str | None:
    """The batching_parameters.txt for the chosen configuration (None: batching off)."""
    if chosen.point.batching is None:
        return None
    verdict = "meets the constraints" if chosen.feasible else "does NOT meet the constraints"
    header = (
        f"# batchbench recommendation for run {run_id or '(unnamed)'}: {chosen.key}\n"
        f"# {verdict}; {figures_text(chosen, mode)}\n"
    )
    return header + format_batching(chosen.point.batching)


def server_commands(
    point: Point, spec: SweepSpec, run_dir: Path | None, environment: Mapping[str, Any]
) -> dict[str, Any]:
    """The exact command lines that serve the model as the chosen point was measured.

    ``replicas`` processes on consecutive port pairs (gRPC 8500+2i, REST 8501+2i), each with the
    thread share the sweep gave it on the measured machine.
    """
    folder = (run_dir or Path(".")).resolve()
    base_path = _model_base_path(spec, folder)  # the sweep's own copy of a built-in model
    flags = [f"--model_name={spec.model.served_name}", f"--model_base_path={base_path}"]
    if point.batching is not None:
        flags += ["--enable_batching=true", f"--batching_parameters_file={folder / BATCHING_FILE}"]
    flags = replica_flags(
        [*flags, *spec.target.server_flags], point.replicas, cores=environment.get("cpu_count")
    )
    ports = [(GRPC_PORT + 2 * i, REST_PORT + 2 * i) for i in range(point.replicas)]
    tfs = [
        shlex.join(["tensorflow_model_server", f"--port={g}", f"--rest_api_port={r}", *flags])
        for g, r in ports
    ]
    if point.replicas == 1:
        ports_flags = [f"--port={GRPC_PORT}", f"--rest_api_port={REST_PORT}"]
        reference = shlex.join(["reference-server", *ports_flags, *flags])
    else:
        # `batchbench serve` gives each replica its own free ports and prints them.
        reference = shlex.join(["batchbench", "serve", f"--replicas={point.replicas}", *flags])
    return {
        "setup": _setup_commands(spec, base_path),
        "tensorflow_model_server": tfs,
        "reference_server": reference,
        "ports": [{"grpc": g, "rest": r} for g, r in ports],
    }


def _model_base_path(spec: SweepSpec, run_dir: Path) -> str:
    if spec.model.base_path:
        return str(Path(spec.model.base_path).expanduser().resolve())
    return str(run_dir.parent / "models" / builtin_folder(spec))


def builtin_folder(spec: SweepSpec) -> str:
    """The folder the sweep builds a built-in model in, beside the run folders (the model
    zoo's rule: the model's name for default options, ``name-<hash>`` otherwise)."""
    if spec.model.builtin is None:  # an external target: no model of ours
        return spec.model.served_name
    return model_zoo.model_folder(spec.model.builtin, spec.model.resolved_options())


def _setup_commands(spec: SweepSpec, base_path: str) -> list[str]:
    """How to build a built-in model where the commands expect it, if it is not there."""
    if spec.model.base_path or not spec.model.builtin:
        return []
    options = [f"--option={k}={v}" for k, v in sorted(spec.model.options.items())]
    return [shlex.join(["batchbench", "make-model", spec.model.builtin, base_path, *options])]
