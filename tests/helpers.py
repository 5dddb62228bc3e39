"""Small helpers several test modules share."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, settings

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.2) -> T:
    """Poll ``condition`` until it returns something truthy and return that; fail the test,
    naming ``what``, after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


class FakeServable:
    """Stands in for a loaded SavedModel: registry logic does not depend on TensorFlow.
    A version folder holding a file named ``broken`` fails to load."""

    def __init__(self, name: str, version: int, path: Path) -> None:
        if (path / "broken").exists():
            raise ValueError(f"could not load {path}")
        self.name, self.version, self.path = name, version, path

    def close(self) -> None:
        pass


def fuzz_settings(default_examples: int) -> settings:
    """Hypothesis settings for a property suite: ``default_examples`` per test in `make test`,
    BATCHBENCH_FUZZ_EXAMPLES for a long profile; derandomized, so `make test` cannot flake."""
    return settings(
        max_examples=int(os.environ.get("BATCHBENCH_FUZZ_EXAMPLES", str(default_examples))),
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
