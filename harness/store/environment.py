"""Where a run ran: hardware, OS, Python, package versions and the git commit, for run.json.

Every probe is best-effort: a missing ``nvidia-smi``, ``/proc`` or git repository yields an
empty or null field, never an error. Package versions come from installed metadata, so
TensorFlow is not imported (that would cost seconds and hundreds of MB).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "batchbench",
    "tensorflow",
    "tensorflow-serving-api",
    "grpcio",
    "locust",
    "numpy",
    "hdrhistogram",
    "pydantic",
    "protobuf",
)
_TIMEOUT_S = 10


def collect_environment(cwd: Path | None = None) -> dict[str, Any]:
    """A JSON-ready description of this machine and software."""
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_bytes": memory_bytes(),
        "gpus": gpus(),
        "os": platform.platform(),
        "hostname": platform.node(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "packages": package_versions(),
        "git": git_info(cwd or Path.cwd()),
    }


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution; None when it is not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    text = _read("/proc/cpuinfo")
    return parse_cpuinfo(text) or platform.processor() or platform.machine()


def parse_cpuinfo(text: str) -> str | None:
    """The first ``model name`` (x86) or ``Model``/``Hardware`` (ARM) in cpuinfo text."""
    for wanted in ("model name", "Model", "Hardware"):
        for line in text.splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == wanted and value.strip():
                return value.strip()
    return None


def memory_bytes() -> int | None:
    """Total physical memory, from ``/proc/meminfo`` or ``sysconf``."""
    total = parse_meminfo(_read("/proc/meminfo"))
    if total is None and hasattr(os, "sysconf"):
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError):
            return None
    return total


def parse_meminfo(text: str) -> int | None:
    """``MemTotal`` in bytes from meminfo text."""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            return int(parts[1]) * 1024 if len(parts) > 1 and parts[1].isdigit() else None
    return None


def gpus() -> list[dict[str, str]]:
    """NVIDIA GPUs as ``nvidia-smi`` lists them; empty when there is no nvidia-smi or it fails."""
    if shutil.which("nvidia-smi") is None:
        return []
    query = "--query-gpu=name,memory.total,driver_version"
    output = _run(["nvidia-smi", query, "--format=csv,noheader"])
    return parse_nvidia_smi(output or "")


def parse_nvidia_smi(text: str) -> list[dict[str, str]]:
    """Rows of ``name, memory.total, driver_version`` CSV into dicts."""
    rows = []
    for line in text.strip().splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) == 3:
            rows.append({"name": parts[0], "memory": parts[1], "driver": parts[2]})
    return rows


def git_info(cwd: Path) -> dict[str, Any] | None:
    """The commit checked out at ``cwd`` and whether the tree has changes; None outside git."""
    if shutil.which("git") is None:
        return None
    commit = _run(["git", "rev-parse", "HEAD"], cwd)
    if not commit:
        return None
    # --no-optional-locks: a status must never take the index lock from a concurrent commit.
    status = _run(
        ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"], cwd
    )
    return {"commit": commit.strip(), "dirty": bool(status and status.strip())}


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _run(argv: list[str], cwd: Path | None = None) -> str | None:
    """stdout of a read-only command, or None when it is missing, fails or hangs."""
    try:
        done = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None
