"""Traces: JSON-lines request schedules to replay open-loop, and the access-log importer.

One request per line: `{"t": 0.125, "model": "mlp", "rows": 4, "length": 32,
"payload": "big.npz"}`. `t` (seconds from the start, non-decreasing) is required; the other
keys are optional (a missing model, rows or length is drawn from the scenario's mix; a payload
path is read relative to the trace file). Pure but for reading and writing files.

    python -m scenarios.trace from-access-log server-access.log > day.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

KEYS = ("t", "model", "rows", "length", "payload")
PREDICT_METHODS = ("/tensorflow.serving.PredictionService/Predict",)


class TraceError(ValueError):
    """A trace that cannot be replayed; the message names the file and line."""


@dataclass(frozen=True)
class TraceEntry:
    """One request of a trace: when (seconds from the start) and what it carries (None:
    drawn from the mix)."""

    t: float
    model: str | None = None
    rows: int | None = None
    length: int | None = None
    payload: str | None = None


@dataclass(frozen=True)
class Trace:
    """A checked trace: entries in time order, and the length of one pass (for looping).
    ``lines`` holds each entry's line number in the file (empty: a trace made in code)."""

    path: str
    entries: tuple[TraceEntry, ...]
    lines: tuple[int, ...] = ()

    @property
    def duration_s(self) -> float:
        """The last send time plus one mean gap, so a loop does not send two at the wrap."""
        if not self.entries:
            return 0.0
        last = self.entries[-1].t
        gaps = len(self.entries) - 1
        return last + (last / gaps if gaps and last > 0 else 1.0)

    def models(self) -> set[str]:
        return {entry.model for entry in self.entries if entry.model is not None}

    def where(self, index: int) -> str:
        """``day.jsonl:17`` for the entry at ``index`` (``day.jsonl: request 5`` without lines)."""
        if index < len(self.lines):
            return f"{self.path}:{self.lines[index]}"
        return f"{self.path}: request {index + 1}"

    def check(
        self,
        known_models: Iterable[str] | None,
        max_rows: int | None,
        model_max_rows: Mapping[str, int] | None = None,
    ) -> None:
        """TraceError for the first model not in ``known_models`` or rows over the limit:
        ``model_max_rows`` for a model named there, else ``max_rows`` (also for an entry that
        leaves its model to the mix)."""
        known = None if known_models is None else set(known_models)
        limits = model_max_rows or {}
        for index, entry in enumerate(self.entries):
            if known is not None and entry.model is not None and entry.model not in known:
                raise TraceError(
                    f"{self.where(index)}: model {entry.model!r} is not served; valid models: "
                    f"{', '.join(sorted(known))}"
                )
            limit = limits.get(entry.model, max_rows) if entry.model else max_rows
            if limit is not None and entry.rows is not None and entry.rows > limit:
                raise TraceError(
                    f"{self.where(index)}: rows {entry.rows} is over max_batch_size {limit} "
                    f"(the server refuses it); valid rows: 1-{limit}"
                )


def read_trace(path: str | Path) -> Trace:
    """Read and check a JSON-lines trace; TraceError with file and line for the first fault."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"cannot read trace {path}: {exc}") from None
    entries: list[TraceEntry] = []
    numbers: list[int] = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            entry = parse_entry(line, f"{path}:{number}", path.parent)
            if entries and entry.t < entries[-1].t:
                raise TraceError(
                    f"{path}:{number}: t {entry.t:g} is earlier than the line before "
                    f"({entries[-1].t:g}); sort the trace by t"
                )
            entries.append(entry)
            numbers.append(number)
    if not entries:
        raise TraceError(f"trace {path} has no requests")
    return Trace(str(path), tuple(entries), tuple(numbers))


def parse_entry(line: str, where: str, folder: Path) -> TraceEntry:
    """One trace line; TraceError naming `where` when it is not a valid request."""
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise TraceError(f"{where}: not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TraceError(f'{where}: each line must be a JSON object with at least "t"')
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise TraceError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(KEYS)}")
    t = data.get("t")
    if isinstance(t, bool) or not isinstance(t, int | float) or t < 0:
        raise TraceError(f'{where}: "t" must be a number of seconds >= 0, got {t!r}')
    model = data.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise TraceError(f'{where}: "model" must be a model name, got {model!r}')
    payload = data.get("payload")
    if payload is not None:
        if not isinstance(payload, str) or not payload:
            raise TraceError(f'{where}: "payload" must be a file name, got {payload!r}')
        payload = str(folder / payload)
    return TraceEntry(
        float(t), model, _count(data, "rows", where), _count(data, "length", where), payload
    )


def _count(data: dict[str, Any], key: str, where: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TraceError(f"{where}: {key!r} must be a whole number >= 1, got {value!r}")
    return value


def entry_line(entry: TraceEntry) -> str:
    """The JSON line of an entry (keys left out when None)."""
    data: dict[str, Any] = {"t": round(entry.t, 6)}
    for key in ("model", "rows", "length", "payload"):
        value = getattr(entry, key)
        if value is not None:
            data[key] = value
    return json.dumps(data, separators=(",", ":"))


def from_access_log(lines: Iterable[str], where: str = "access log") -> list[TraceEntry]:
    """A trace of the Predict calls in a reference server access log (`--access_log_file`).

    The times are the calls' arrival times, from the first call on, in order; model and rows
    are kept (rows is absent for calls that failed before they ran). Other calls (metadata,
    status, classify...) and lines that are not access-log JSON are left out.
    """
    calls: list[tuple[datetime, str, int | None]] = []
    for number, line in enumerate(lines, 1):
        record = _access_record(line, f"{where}:{number}")
        if record is not None:
            calls.append(record)
    calls.sort(key=lambda call: call[0])
    if not calls:
        return []
    start = calls[0][0]
    return [
        TraceEntry((when - start).total_seconds(), model or None, rows)
        for when, model, rows in calls
    ]


def _access_record(line: str, where: str) -> tuple[datetime, str, int | None] | None:
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or not _is_predict(str(data.get("method", ""))):
        return None
    try:
        when = datetime.fromisoformat(str(data["time"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        raise TraceError(f'{where}: a Predict line without a readable "time"') from None
    rows = data.get("rows")
    return when, str(data.get("model") or ""), rows if isinstance(rows, int) and rows > 0 else None


def _is_predict(method: str) -> bool:
    return method in PREDICT_METHODS or (method.startswith("POST ") and method.endswith(":predict"))


def write_trace(entries: Iterable[TraceEntry], out: Any) -> int:
    """Write entries as JSON lines to the text stream `out`; return how many."""
    count = 0
    for entry in entries:
        out.write(entry_line(entry) + "\n")
        count += 1
    return count


class TraceSchedule:
    """One process's share of a trace replay: every `processes`-th request from `index`, sent
    at `start + t / speed`, once or looping (pass k adds k times the trace's duration)."""

    def __init__(
        self, trace: Trace, index: int, processes: int, speed: float, loop: bool, start: float
    ) -> None:
        self.entries = trace.entries[index :: max(processes, 1)]
        self.period = trace.duration_s
        self.speed = speed
        self.loop = loop
        self.start = start
        self.position = 0

    def claim(self) -> tuple[float, TraceEntry] | None:
        """The next (intended send time, entry), or None once a single pass has ended."""
        if not self.entries:
            return None
        passes, index = divmod(self.position, len(self.entries))
        if passes and not self.loop:
            return None
        self.position += 1
        entry = self.entries[index]
        return self.start + (entry.t + passes * self.period) / self.speed, entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scenarios.trace")
    commands = parser.add_subparsers(dest="command", required=True)
    importer = commands.add_parser(
        "from-access-log", help="turn a reference server access log into a trace"
    )
    importer.add_argument("log", help="the --access_log_file of a reference server")
    importer.add_argument("-o", "--output", help="trace file to write (default: stdout)")
    args = parser.parse_args(argv)
    try:
        with open(args.log, encoding="utf-8") as handle:
            entries = from_access_log(handle, args.log)
    except (OSError, TraceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            count = write_trace(entries, out)
    else:
        count = write_trace(entries, sys.stdout)
    print(f"{count} Predict calls", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
