"""What a running sweep shows: the point, its windows, the ETA and the last point's figures.

On a terminal a rich progress bar; otherwise (CI logs, pipes) one plain line per event, which
stays readable in a log file.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, Protocol, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from harness.plan.points import Point
from harness.store.results import PointResult


class SweepProgress(Protocol):
    def point_started(self, number: int, total: int, point: Point) -> None: ...

    def window(self, index: int, stage: Mapping[str, Any]) -> None: ...

    def point_done(self, result: PointResult) -> None: ...

    def message(self, text: str) -> None: ...

    def close(self) -> None: ...


def describe_result(result: PointResult) -> str:
    """``1234.5 req/s, p99 12.3 ms, stable`` or ``FAILED: reason``."""
    if result.status == "failed":
        return f"FAILED: {(result.reason or '').splitlines()[0][:120]}"
    m = result.metrics
    verdict = (result.stability or {}).get("verdict", "?")
    flags = "" if result.valid else ", INVALID"
    return (
        f"{_num(m.get('throughput_rps'))} req/s, p99 {_num(m.get('latency_p99_ms'), 2)} ms, "
        f"{verdict}{flags}"
    )


def _window_text(index: int, stage: Mapping[str, Any]) -> str:
    return (
        f"window {index + 1}: {_num(stage.get('throughput_rps'))} req/s, "
        f"p99 {_num(stage.get('latency_p99_ms'), 2)} ms"
    )


def _num(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


class PlainProgress:
    """One line per point and window, for logs."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def point_started(self, number: int, total: int, point: Point) -> None:
        self._print(f"[{number}/{total}] {point.key}")

    def window(self, index: int, stage: Mapping[str, Any]) -> None:
        self._print(f"    {_window_text(index, stage)}")

    def point_done(self, result: PointResult) -> None:
        self._print(f"    -> {describe_result(result)}")

    def message(self, text: str) -> None:
        self._print(text)

    def close(self) -> None:
        pass

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)


class RichProgress:
    """A live bar: points done of all, elapsed and remaining time, the current point and
    window, and the last finished point's throughput and p99."""

    def __init__(self, total: int, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
        )
        self.task = self.bar.add_task("sweep", total=total, status="")
        self.last = ""
        self.bar.start()

    def point_started(self, number: int, total: int, point: Point) -> None:
        self.bar.update(self.task, total=max(total, number), description=point.key)
        self._status("starting")

    def window(self, index: int, stage: Mapping[str, Any]) -> None:
        self._status(_window_text(index, stage))

    def point_done(self, result: PointResult) -> None:
        self.last = f"last: {describe_result(result)}"
        self.bar.console.print(f"{result.key}: {describe_result(result)}")
        self.bar.advance(self.task)
        self._status("")

    def message(self, text: str) -> None:
        self.bar.console.print(text)

    def close(self) -> None:
        self.bar.stop()

    def _status(self, now: str) -> None:
        self.bar.update(self.task, status=" | ".join(t for t in (now, self.last) if t))


def make_progress(total: int, *, live: bool | None = None) -> SweepProgress:
    """A rich bar on a terminal, plain lines otherwise (or as ``live`` says)."""
    console = Console(stderr=True)
    if live is None:
        live = console.is_terminal
    return RichProgress(total, console) if live else PlainProgress()
