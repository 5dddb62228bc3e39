"""Request mixes: which model, how many rows and which sequence length each request carries.

Pure. A `Distribution` reads `4` (fixed), `8-64` (uniform over the integers of a range) or
`1:0.7,4:0.2,16:0.1` (weights, normalised); a `RequestMix` draws a `RequestKind` per request
and lists every kind it can draw, so the load generator can encode each body once up front.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass

MAX_KINDS = 4096  # distinct (model, rows, length) bodies encoded before a test at most


class MixError(ValueError):
    """A distribution text that cannot be read; the message says which form to use."""


@dataclass(frozen=True)
class Distribution:
    """Values with probabilities (summing to 1), in the order given."""

    values: tuple[str, ...]
    weights: tuple[float, ...]

    @classmethod
    def fixed(cls, value: str | int) -> Distribution:
        return cls((str(value),), (1.0,))

    def is_fixed(self) -> bool:
        return len(self.values) == 1

    def cumulative(self) -> list[float]:
        return list(itertools.accumulate(self.weights))

    def text(self) -> str:
        """The canonical text (`4`, or `1:0.7,4:0.3`)."""
        if self.is_fixed():
            return self.values[0]
        return ",".join(f"{v}:{w:g}" for v, w in zip(self.values, self.weights, strict=True))

    def mean(self) -> float:
        """The mean of numeric values."""
        return sum(int(v) * w for v, w in zip(self.values, self.weights, strict=True))


def parse_distribution(text: str, *, numeric: bool = True, what: str = "value") -> Distribution:
    """`4`, `8-64` (numeric only) or `a:3,b:1`; MixError naming `what` otherwise."""
    text = text.strip()
    if not text:
        raise MixError(f"{what}: empty")
    if ":" not in text and "," not in text:
        if numeric and "-" in text.strip("-"):
            return _uniform(text, what)
        return Distribution((_value(text, numeric, what),), (1.0,))
    pairs = [part.split(":") for part in text.split(",") if part.strip()]
    if any(len(pair) > 2 for pair in pairs):
        raise MixError(f"{what}: use VALUE:WEIGHT,VALUE:WEIGHT (e.g. 1:0.7,4:0.3), got {text!r}")
    values = tuple(_value(pair[0], numeric, what) for pair in pairs)
    weights = [_weight(pair[1] if len(pair) == 2 else "1", what) for pair in pairs]
    if len(set(values)) != len(values) or sum(weights) <= 0:
        raise MixError(f"{what}: values must differ and weights add up to more than 0: {text!r}")
    total = sum(weights)
    return Distribution(values, tuple(w / total for w in weights))


def _uniform(text: str, what: str) -> Distribution:
    low, _, high = text.partition("-")
    first, last = int(_value(low, True, what)), int(_value(high, True, what))
    if last < first:
        raise MixError(f"{what}: range {text!r} must go up (e.g. 8-64)")
    count = last - first + 1
    return Distribution(tuple(str(v) for v in range(first, last + 1)), (1.0 / count,) * count)


def _value(text: str, numeric: bool, what: str) -> str:
    text = text.strip()
    if not numeric:
        if not text:
            raise MixError(f"{what}: empty name")
        return text
    try:
        value = int(text)
    except ValueError:
        raise MixError(f"{what}: {text!r} is not a whole number") from None
    if value < 1:
        raise MixError(f"{what}: {value} must be >= 1")
    return str(value)


def _weight(text: str, what: str) -> float:
    try:
        weight = float(text)
    except ValueError:
        raise MixError(f"{what}: weight {text!r} is not a number") from None
    if weight < 0:
        raise MixError(f"{what}: weight {weight:g} must be >= 0")
    return weight


@dataclass(frozen=True, order=True)
class RequestKind:
    """What one request carries: its model, rows (dimension 0), and length (the size of the
    other -1 dimensions), and an optional payload file that replaces the random data."""

    model: str
    rows: int
    length: int
    payload: str = ""
    arm: str = ""  # the version split's arm (a label or a version number); "": none

    def label(self) -> str:
        text = f"{self.model} rows={self.rows} length={self.length}"
        return text + (f" payload={self.payload}" if self.payload else "")


@dataclass(frozen=True)
class RequestMix:
    """Independent distributions of model, rows and length."""

    models: Distribution
    rows: Distribution
    lengths: Distribution

    def kinds(self) -> list[RequestKind]:
        """Every kind the mix can draw (MixError beyond MAX_KINDS)."""
        count = len(self.models.values) * len(self.rows.values) * len(self.lengths.values)
        if count > MAX_KINDS:
            raise MixError(
                f"the mix has {count} different requests (models x rows x lengths); "
                f"at most {MAX_KINDS} are encoded before a test: use fewer lengths or rows"
            )
        return [
            RequestKind(model, int(rows), int(length))
            for model in self.models.values
            for rows in self.rows.values
            for length in self.lengths.values
        ]

    def describe(self) -> dict[str, str]:
        return {
            "models": self.models.text(),
            "rows": self.rows.text(),
            "lengths": self.lengths.text(),
        }


def pick_value(values: tuple[str, ...], cumulative: list[float], rng: random.Random) -> str:
    """One of `values`, drawn with the weights whose running sums are `cumulative`."""
    if len(values) == 1:
        return values[0]
    index = bisect.bisect_right(cumulative, rng.random() * cumulative[-1])
    return values[min(index, len(values) - 1)]


class MixSampler:
    """Draws request kinds from a mix with its own seeded generator."""

    def __init__(self, mix: RequestMix, rng: random.Random) -> None:
        self.rng = rng
        self.parts = [
            (dist.values, dist.cumulative()) for dist in (mix.models, mix.rows, mix.lengths)
        ]

    def draw(self) -> RequestKind:
        model, rows, length = (pick_value(*part, self.rng) for part in self.parts)
        return RequestKind(model, int(rows), int(length))

    def __iter__(self) -> Iterator[RequestKind]:
        while True:
            yield self.draw()
