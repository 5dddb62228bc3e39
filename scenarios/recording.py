"""Exact latency recording: HDR histograms (µs) and counts, per stage, mergeable across processes.

Each load-generating process records into a `Recorder`; `take_delta()` hands over what was
recorded since the last call (JSON- and msgpack-ready) and `merge()` adds such a delta into
another recorder, so the master's merged histogram is exactly the union of the workers' samples.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour
SIGNIFICANT_DIGITS = 3


def new_histogram() -> HdrHistogram:
    """An empty latency histogram: µs from 1 µs to 1 h, 3 significant digits."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def encode_histogram(histogram: HdrHistogram) -> str:
    """The HdrHistogram compressed, base64 form (as HdrHistogram's other languages read)."""
    return histogram.encode().decode("ascii")


def decode_histogram(encoded: str) -> HdrHistogram:
    """A histogram from `encode_histogram`; its range is the one it was written with."""
    return HdrHistogram.decode(encoded.encode("ascii"))


def merge_histograms(encoded: Iterable[str]) -> HdrHistogram:
    """One histogram holding every sample of the encoded ones (empty strings skipped)."""
    merged = new_histogram()
    for text in encoded:
        if text:
            merged.add(decode_histogram(text))
    return merged


@dataclass(frozen=True)
class Key:
    """Where a sample goes: its stage, and whether it was sent during that stage's warm-up."""

    stage: int
    warmup: bool = False

    def text(self) -> str:
        return f"{self.stage}:{'warmup' if self.warmup else 'measure'}"

    @classmethod
    def parse(cls, text: str) -> Key:
        stage, phase = text.split(":")
        return cls(int(stage), phase == "warmup")


@dataclass
class Tally:
    """Samples and counts of one key. `histogram` holds successful requests only."""

    histogram: HdrHistogram = field(default_factory=new_histogram)
    sent: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    late: int = 0
    dropped: int = 0
    incomplete: int = 0

    @property
    def ok(self) -> int:
        return self.histogram.get_total_count()

    def is_empty(self) -> bool:
        counts = (self.sent, self.late, self.dropped, self.incomplete, self.ok)
        return not any(counts) and not self.errors

    def to_message(self) -> dict[str, Any]:
        return {
            "histogram": encode_histogram(self.histogram) if self.ok else "",
            "sent": self.sent,
            "errors": dict(self.errors),
            "late": self.late,
            "dropped": self.dropped,
            "incomplete": self.incomplete,
        }

    def add_message(self, data: dict[str, Any]) -> None:
        if data["histogram"]:
            self.histogram.add(decode_histogram(data["histogram"]))
        self.sent += data["sent"]
        self.errors.update(data["errors"])
        self.late += data["late"]
        self.dropped += data["dropped"]
        self.incomplete += data["incomplete"]


class Recorder:
    """One process's (or the merged) samples by key; closed once its window has ended.

    A request is `started` when it leaves (or is intended to leave) and then either
    `succeeded`, `failed` or `abandoned` (its greenlet was killed). Requests still in flight
    when the recorder is closed count as incomplete; anything after `close()` is ignored.
    """

    def __init__(self, *, keep_raw: bool = False) -> None:
        self._tallies: dict[Key, Tally] = {}
        self._in_flight: Counter[Key] = Counter()
        self.closed = False
        self.raw_us: list[int] | None = [] if keep_raw else None

    def _tally(self, key: Key) -> Tally:
        if key not in self._tallies:
            self._tallies[key] = Tally()
        return self._tallies[key]

    def started(self, key: Key) -> None:
        if not self.closed:
            self._tally(key).sent += 1
            self._in_flight[key] += 1

    def succeeded(self, key: Key, latency_us: float) -> None:
        if self._finish(key):
            value = min(max(int(latency_us), LOWEST_US), HIGHEST_US)
            self._tally(key).histogram.record_value(value)
            if self.raw_us is not None and not key.warmup:
                self.raw_us.append(value)

    def failed(self, key: Key, code: str) -> None:
        if self._finish(key):
            self._tally(key).errors[code] += 1

    def abandoned(self, key: Key) -> None:
        if self._finish(key):
            self._tally(key).incomplete += 1

    def _finish(self, key: Key) -> bool:
        if self.closed:
            return False
        self._in_flight[key] -= 1
        return True

    def late(self, key: Key) -> None:
        if not self.closed:
            self._tally(key).late += 1

    def dropped(self, key: Key) -> None:
        if not self.closed:
            self._tally(key).dropped += 1

    def in_flight(self) -> int:
        return sum(self._in_flight.values())

    def close(self) -> None:
        """End the window: requests in flight now count as incomplete."""
        if self.closed:
            return
        for key, count in self._in_flight.items():
            if count:
                self._tally(key).incomplete += count
        self._in_flight.clear()
        self.closed = True

    def take_delta(self) -> dict[str, dict[str, Any]]:
        """What was recorded since the last call, by key text; the recorder keeps counting."""
        delta = {key.text(): tally.to_message() for key, tally in self._tallies.items()}
        delta = {key: data for key, data in delta.items() if _has_counts(data)}
        self._tallies = {}
        return delta

    def merge(self, delta: dict[str, dict[str, Any]]) -> None:
        """Add another recorder's delta (merging is exact: histograms add bucket by bucket)."""
        for text, data in delta.items():
            self._tally(Key.parse(text)).add_message(data)

    def tallies(self) -> dict[Key, Tally]:
        return dict(self._tallies)


def _has_counts(data: dict[str, Any]) -> bool:
    return bool(data["histogram"] or data["errors"]) or any(
        data[name] for name in ("sent", "late", "dropped", "incomplete")
    )
