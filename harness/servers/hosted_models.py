"""Several models on one server: TF Serving's model config file and per-model batching files.

A server hosts several models through ``--model_config_file`` (a ``model_config_list`` of name
and base path). A configuration where some models have batching parameters of their own is
served with ``--enable_per_model_batching_parameters``: as in TF Serving, a model's parameters
are the ``batching_params.pbtxt`` in its version folder (a version without one does not batch),
and the batch threads stay those of the global ``--batching_parameters_file``. The harness
never writes into a model's own folder: each configuration gets a copy of the base path whose
version folders link to the original files and hold that configuration's batching file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from harness.plan.batching_file import write_batching_file
from harness.plan.points import ServerConfig
from harness.store.layout import MODEL_CONFIG_FILE, PER_MODEL_BATCHING_FILE


def model_config_text(bases: Mapping[str, Path]) -> str:
    """TF Serving's ModelServerConfig text: one ``config`` per model, name and base path."""
    configs = "".join(
        f'  config {{ name: "{name}" base_path: "{Path(base).resolve()}" '
        'model_platform: "tensorflow" }\n'
        for name, base in bases.items()
    )
    return f"model_config_list {{\n{configs}}}\n"


def versions(base: Path) -> list[Path]:
    """The numeric version folders of a SavedModel base path."""
    return sorted(p for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def linked_base(base: Path, folder: Path) -> Path:
    """``folder`` as a copy of the base path ``base``: each version folder of links to the
    original's entries (a file already there, such as a batching file, is left alone)."""
    for version in versions(base):
        target = folder / version.name
        target.mkdir(parents=True, exist_ok=True)
        for entry in version.iterdir():
            link = target / entry.name
            if entry.name != PER_MODEL_BATCHING_FILE and not link.exists():
                os.symlink(entry.resolve(), link)
    return folder


def hosted_flags(config: ServerConfig, bases: Mapping[str, Path], folder: Path) -> list[str]:
    """The flags that serve every model of ``bases`` with ``config``'s batching (the global
    batching flags themselves come from the caller)."""
    if not config.own or config.batching is None:
        return [f"--model_config_file={_write_config(folder, bases)}"]
    served: dict[str, Path] = {}
    for name, base in bases.items():
        copy = linked_base(Path(base).resolve(), folder / "models" / name)
        params = config.params_for(name)
        assert params is not None  # batching is on
        for version in versions(copy):
            write_batching_file(version / PER_MODEL_BATCHING_FILE, params)
        served[name] = copy
    return [
        f"--model_config_file={_write_config(folder, served)}",
        "--enable_per_model_batching_parameters=true",
    ]


def _write_config(folder: Path, bases: Mapping[str, Path]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MODEL_CONFIG_FILE
    path.write_text(model_config_text(bases))
    return path.resolve()
