"""The placeholders of a ``command`` target's hooks, filled in per server configuration.

A hook is a shell command line. ``{{replicas}}``, ``{{batching_file}}`` ... are replaced by the
configuration's values, shell-quoted (so a hook must not quote them again); the same values
are in the hook's environment as ``BATCHBENCH_REPLICAS``, ``BATCHBENCH_BATCHING_FILE`` ...
for scripts it calls. Only our names are placeholders: ``{{.status}}`` (a kubectl
go-template) and ``${HOME}`` pass through untouched.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping

PLACEHOLDERS = {
    "config": "the configuration's key (mbs32-bt1000-nbt2-meb16-r2), usable in resource names",
    "replicas": "the replica count",
    "enable_batching": "true or false",
    "batching_file": "path of the configuration's batching_parameters.txt ('' when unbatched)",
    "batching": "that file's content, TF Serving's text format ('' when unbatched)",
    "model": "the served model name",
    "model_base_path": "the SavedModel base path on this machine ('' when none is given)",
    "folder": "the configuration's folder in the run folder (the hooks' working directory)",
}
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def unknown_placeholders(command: str) -> list[str]:
    """Names written as ``{{name}}`` that are not placeholders (a typo, usually)."""
    return [m.group(1) for m in _PLACEHOLDER.finditer(command) if m.group(1) not in PLACEHOLDERS]


def render(command: str, values: Mapping[str, str]) -> str:
    """``command`` with every placeholder replaced by its shell-quoted value."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        return shlex.quote(values[name]) if name in PLACEHOLDERS else match.group(0)

    return _PLACEHOLDER.sub(fill, command)


def environment(values: Mapping[str, str]) -> dict[str, str]:
    """The values as ``BATCHBENCH_*`` environment variables."""
    return {f"BATCHBENCH_{name.upper()}": value for name, value in values.items()}
