"""The one schema-version rule for every file the harness writes and reads back.

Each file carries ``schema_version``; a reader refuses a file without one (it was not written by
batchbench) and a file newer than it understands. A leaf module, so the model zoo (below the
store) uses it too; callers raise their own error type with the message. (The scenarios, which
never import the harness, apply the same rule to their result files in scenarios.results.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def schema_problem(data: Any, path: Path | str, newest: int) -> str | None:
    """Why ``data`` (read from ``path``) cannot be read by code that reads up to ``newest``."""
    version = data.get("schema_version") if isinstance(data, dict) else None
    if not isinstance(version, int) or isinstance(version, bool):
        return f"{path} has no schema_version: not a batchbench result file"
    if version > newest:
        return (
            f"{path} was written by a newer batchbench (schema_version {version}; this one "
            f"reads up to {newest}): upgrade batchbench to read it"
        )
    return None
