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


def new_histogram(digits: int = SIGNIFICANT_DIGITS) -> HdrHistogram:
    """An empty latency histogram: µs from 1 µs to 1 h, 3 significant digits (breakdowns by
    request kind and by second use 2: a twelfth of the memory, and p99 to 1%)."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, digits)


BREAKDOWN_DIGITS = 2


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


@dataclass(frozen=True)
class Tags:
    """Where a request is also counted besides its key: its request kind's label (measured
    requests only) and the second of the run it was intended for (the timeline)."""

    kind: str
    second: int


KIND_PREFIX = "kind="
SECOND_PREFIX = "second="
VERSION_PREFIX = "version="
SECOND_VERSION_PREFIX = "second-version="


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
    With `Tags`, each event is also counted by request kind and by second; `incomplete` is
    kept for keys only. An answer's (or a failed request's) `version` (the model version that
    answered, or the version split's arm it was sent to; "" when unknown) also counts it by
    version, measured requests overall and every request by second.
    """

    def __init__(self, *, keep_raw: bool = False) -> None:
        self._tallies: dict[Key, Tally] = {}
        self._kinds: dict[str, Tally] = {}
        self._seconds: dict[int, Tally] = {}
        self._versions: dict[str, Tally] = {}
        self._second_versions: dict[tuple[int, str], Tally] = {}
        self._in_flight: Counter[Key] = Counter()
        self.closed = False
        self.raw_us: list[int] | None = [] if keep_raw else None

    def _tally(self, key: Key) -> Tally:
        if key not in self._tallies:
            self._tallies[key] = Tally()
        return self._tallies[key]

    def _all(self, key: Key, tags: Tags | None) -> list[Tally]:
        """The tallies an event of `key` with `tags` counts in."""
        tallies = [self._tally(key)]
        if tags is None:
            return tallies
        if not key.warmup:
            tallies.append(_breakdown(self._kinds, tags.kind))
        tallies.append(_breakdown(self._seconds, tags.second))
        return tallies

    def started(self, key: Key, tags: Tags | None = None) -> None:
        if not self.closed:
            for tally in self._all(key, tags):
                tally.sent += 1
            self._in_flight[key] += 1

    def _by_version(self, key: Key, tags: Tags | None, version: str) -> list[Tally]:
        """The version tallies an answer from `version` counts in (none if unknown)."""
        if not version:
            return []
        tallies = [] if key.warmup else [_breakdown(self._versions, version)]
        if tags is not None:
            tallies.append(_breakdown(self._second_versions, (tags.second, version)))
        return tallies

    def succeeded(
        self, key: Key, latency_us: float, tags: Tags | None = None, version: str = ""
    ) -> None:
        if self._finish(key):
            value = min(max(int(latency_us), LOWEST_US), HIGHEST_US)
            for tally in self._all(key, tags) + self._by_version(key, tags, version):
                tally.histogram.record_value(value)
            if self.raw_us is not None and not key.warmup:
                self.raw_us.append(value)

    def failed(self, key: Key, code: str, tags: Tags | None = None, version: str = "") -> None:
        if self._finish(key):
            for tally in self._all(key, tags) + self._by_version(key, tags, version):
                tally.errors[code] += 1

    def abandoned(self, key: Key) -> None:
        if self._finish(key):
            self._tally(key).incomplete += 1

    def _finish(self, key: Key) -> bool:
        if self.closed:
            return False
        self._in_flight[key] -= 1
        return True

    def late(self, key: Key, tags: Tags | None = None) -> None:
        if not self.closed:
            for tally in self._all(key, tags):
                tally.late += 1

    def dropped(self, key: Key, tags: Tags | None = None) -> None:
        if not self.closed:
            for tally in self._all(key, tags):
                tally.dropped += 1

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
        """What was recorded since the last call, by key text (kinds and seconds with their
        prefixes); the recorder keeps counting."""
        delta = {key.text(): tally.to_message() for key, tally in self._tallies.items()}
        delta |= {KIND_PREFIX + kind: t.to_message() for kind, t in self._kinds.items()}
        delta |= {f"{SECOND_PREFIX}{second}": t.to_message() for second, t in self._seconds.items()}
        delta |= {VERSION_PREFIX + version: t.to_message() for version, t in self._versions.items()}
        delta |= {
            f"{SECOND_VERSION_PREFIX}{second}/{version}": t.to_message()
            for (second, version), t in self._second_versions.items()
        }
        delta = {key: data for key, data in delta.items() if _has_counts(data)}
        self._tallies, self._kinds, self._seconds = {}, {}, {}
        self._versions, self._second_versions = {}, {}
        return delta

    def merge(self, delta: dict[str, dict[str, Any]]) -> None:
        """Add another recorder's delta (merging is exact: histograms add bucket by bucket)."""
        for text, data in delta.items():
            if text.startswith(KIND_PREFIX):
                _breakdown(self._kinds, text.removeprefix(KIND_PREFIX)).add_message(data)
            elif text.startswith(SECOND_PREFIX):
                _breakdown(self._seconds, int(text.removeprefix(SECOND_PREFIX))).add_message(data)
            elif text.startswith(VERSION_PREFIX):
                _breakdown(self._versions, text.removeprefix(VERSION_PREFIX)).add_message(data)
            elif text.startswith(SECOND_VERSION_PREFIX):
                second, _, version = text.removeprefix(SECOND_VERSION_PREFIX).partition("/")
                _breakdown(self._second_versions, (int(second), version)).add_message(data)
            else:
                self._tally(Key.parse(text)).add_message(data)

    def tallies(self) -> dict[Key, Tally]:
        return dict(self._tallies)

    def kinds(self) -> dict[str, Tally]:
        """Measured requests by request kind label."""
        return dict(self._kinds)

    def seconds(self) -> dict[int, Tally]:
        """All requests (warm-ups too) by the second of the run they were intended for."""
        return dict(self._seconds)

    def versions(self) -> dict[str, Tally]:
        """Measured requests by the version that answered (or the arm they were sent to)."""
        return dict(self._versions)

    def second_versions(self) -> dict[tuple[int, str], Tally]:
        """All requests by (second of the run, version)."""
        return dict(self._second_versions)


def _breakdown(tallies: dict[Any, Tally], name: Any) -> Tally:
    if name not in tallies:
        tallies[name] = Tally(histogram=new_histogram(BREAKDOWN_DIGITS))
    return tallies[name]


def _has_counts(data: dict[str, Any]) -> bool:
    return bool(data["histogram"] or data["errors"]) or any(
        data[name] for name in ("sent", "late", "dropped", "incomplete")
    )
