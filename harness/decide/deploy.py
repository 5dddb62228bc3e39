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
from harness.plan.spec import ModelSpec, SweepSpec
from harness.servers.hosted_models import model_config_text, versions
from harness.servers.replicas import replica_flags
from harness.store.layout import (
    BATCHING_FILE,
    MODEL_CONFIG_FILE,
    PER_MODEL_BATCHING_FILE,
    PER_MODEL_DIR,
)

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


def per_model_batching(chosen: Candidate, spec: SweepSpec, run_id: str) -> dict[str, str]:
    """For a multi-model sweep, each model's ``batching_params.pbtxt`` as the chosen point
    served it (TF Serving's per-model file, for the model's version folder, read with
    ``--enable_per_model_batching_parameters``); empty for one model or batching off."""
    server = chosen.point.server
    if not spec.multi_model or server.batching is None:
        return {}
    texts = {}
    for model in spec.hosted_models:
        params = server.params_for(model.served_name)
        assert params is not None  # batching is on
        texts[model.served_name] = (
            f"# batchbench recommendation for run {run_id or '(unnamed)'}: {chosen.key}\n"
            f"# model {model.served_name}: copy into each version folder "
            f"(BASE/VERSION/{PER_MODEL_BATCHING_FILE}) and serve with "
            "--enable_per_model_batching_parameters\n" + format_batching(params)
        )
    return texts


def server_commands(
    point: Point, spec: SweepSpec, run_dir: Path | None, environment: Mapping[str, Any]
) -> dict[str, Any]:
    """The exact command lines that serve the model as the chosen point was measured.

    ``replicas`` processes on consecutive port pairs (gRPC 8500+2i, REST 8501+2i), each with the
    thread share the sweep gave it on the measured machine.
    """
    folder = (run_dir or Path(".")).resolve()
    models = spec.hosted_models
    # The sweep's own copies of built-in models, beside the run folders.
    bases = {model.served_name: _model_base_path(model, folder) for model in models}
    setup = [line for model in models for line in _setup_commands(model, bases[model.served_name])]
    model_config = None
    if spec.multi_model:
        model_config = model_config_text({name: Path(base) for name, base in bases.items()})
        flags = [f"--model_config_file={folder / PER_MODEL_DIR / MODEL_CONFIG_FILE}"]
        if point.batching is not None and point.server.own:
            flags.append("--enable_per_model_batching_parameters=true")
            setup += _copy_commands(bases, folder)
    else:
        base_path = bases[spec.model.served_name]
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
        "setup": setup,
        **({"model_config": model_config} if model_config else {}),
        "tensorflow_model_server": tfs,
        "reference_server": reference,
        "ports": [{"grpc": g, "rest": r} for g, r in ports],
    }


def _model_base_path(model: ModelSpec, run_dir: Path) -> str:
    if model.base_path:
        return str(Path(model.base_path).expanduser().resolve())
    return str(run_dir.parent / "models" / builtin_folder(model))


def builtin_folder(model: ModelSpec) -> str:
    """The folder the sweep builds a built-in model in, beside the run folders (the model
    zoo's rule: the model's name for default options, ``name-<hash>`` otherwise)."""
    if model.builtin is None:  # an external target: no model of ours
        return model.served_name
    return model_zoo.model_folder(model.builtin, model.resolved_options())


def _setup_commands(model: ModelSpec, base_path: str) -> list[str]:
    """How to build a built-in model where the commands expect it, if it is not there."""
    if model.base_path or not model.builtin:
        return []
    options = [f"--option={k}={v}" for k, v in sorted(model.options.items())]
    return [shlex.join(["batchbench", "make-model", model.builtin, base_path, *options])]


def _copy_commands(bases: Mapping[str, str], run_dir: Path) -> list[str]:
    """Copy each model's recommended batching_params.pbtxt into its version folders (those
    there now; version 1 of a built-in model the setup builds)."""
    lines = []
    for name, base in bases.items():
        source = run_dir / PER_MODEL_DIR / name / PER_MODEL_BATCHING_FILE
        found = versions(Path(base)) if Path(base).is_dir() else []
        for version in found or [Path(base) / "1"]:
            lines.append(shlex.join(["cp", str(source), str(version / PER_MODEL_BATCHING_FILE)]))
    return lines
