"""Search spaces: ranges of axis values, and the coordinates a search walks.

A spec axis is a list of values or a range that stands for one
(``{min: 1, max: 256, scale: pow2}``, ``{min: 0, max: 20000, step: 500}``,
``{min: 100, max: 20000, scale: log, count: 8}``): :func:`expand_range` turns the range into
that list when the spec is validated, so every later stage sees lists only.

:class:`Space` lays the points of a spec on a grid of coordinates, one per axis that has more
than one value, each axis in increasing order: a search moves along those coordinates. The
unbatched baseline has no batching coordinates; it stays outside the space (``extras``) and is
measured first. Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the spec imports expand_range; points import the spec
    from harness.plan.points import Point

RANGE_KEYS = ("min", "max", "step", "scale", "count")
SCALES = ("linear", "pow2", "log")
MAX_RANGE_VALUES = 1000


def expand_range(raw: Mapping[str, Any], minimum: int = 0) -> list[int]:
    """The integer values a range stands for, increasing; ValueError saying what is allowed."""
    unknown = [key for key in raw if key not in RANGE_KEYS]
    if unknown:
        raise ValueError(f"unknown range key {unknown[0]!r}; a range takes {', '.join(RANGE_KEYS)}")
    low, high = _bound(raw, "min", minimum), _bound(raw, "max", minimum)
    if low > high:
        raise ValueError(f"range needs min <= max (got min {low}, max {high})")
    scale = raw.get("scale", "linear")
    if scale not in SCALES:
        raise ValueError(f"range scale must be one of {', '.join(SCALES)} (got {scale!r})")
    if scale != "linear" and "step" in raw:
        raise ValueError(f"range step is for a linear scale, not scale {scale}")
    if scale != "log" and "count" in raw:
        raise ValueError("range count is for scale log only")
    values = {"linear": _linear, "pow2": _pow2, "log": _log}[scale](raw, low, high)
    if len(values) > MAX_RANGE_VALUES:
        raise ValueError(
            f"range of {len(values)} values; at most {MAX_RANGE_VALUES} (raise step or use a scale)"
        )
    return values


def _bound(raw: Mapping[str, Any], key: str, minimum: int) -> int:
    value = raw.get(key)
    if value is None:
        raise ValueError(f"range needs {key} (an integer >= {minimum})")
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"range {key} must be an integer >= {minimum} (got {value!r})")
    return value


def _linear(raw: Mapping[str, Any], low: int, high: int) -> list[int]:
    step = raw.get("step", 1)
    if not isinstance(step, int) or isinstance(step, bool) or step < 1:
        raise ValueError(f"range step must be an integer >= 1 (got {step!r})")
    if (high - low) // step + 1 > MAX_RANGE_VALUES:
        raise ValueError(
            f"range of {(high - low) // step + 1} values; at most {MAX_RANGE_VALUES} "
            "(raise step or use a scale)"
        )
    return list(range(low, high + 1, step))


def _pow2(raw: Mapping[str, Any], low: int, high: int) -> list[int]:
    values = [2**e for e in range(high.bit_length() + 1) if low <= 2**e <= high]
    if not values:
        raise ValueError(f"range scale pow2 has no power of two in [{low}, {high}]")
    return values


def _log(raw: Mapping[str, Any], low: int, high: int) -> list[int]:
    count = raw.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 2:
        raise ValueError(f"range scale log needs count, an integer >= 2 (got {count!r})")
    if low < 1:
        raise ValueError(f"range scale log needs min >= 1 (got {low}); list 0 separately")
    ratio = math.log(high / low) / (count - 1)
    return sorted({round(low * math.exp(ratio * i)) for i in range(count)})


# --- coordinates ----------------------------------------------------------------------------------

Coordinate = tuple[int, ...]


def _order(value: Any) -> tuple[bool, Any]:
    """Axis order: ``null`` (the server's default) first, then increasing."""
    return (value is not None, value)


@dataclass(frozen=True)
class Axis:
    name: str  # an exclude rule's name for it: max_batch_size, replicas, concurrency, ...
    values: tuple[Any, ...]


class Space:
    """The points of a sweep as coordinates: one index per axis with more than one value."""

    def __init__(self, points: Sequence[Point]) -> None:
        searched = [p for p in points if p.batching is not None]
        self.extras = [p for p in points if p.batching is None]
        self.axes = _axes(p.values() for p in searched)
        self._by_coordinate: dict[Coordinate, Point] = {}
        for point in searched:
            self._by_coordinate.setdefault(self.coordinate(point), point)

    def __len__(self) -> int:
        return len(self._by_coordinate)

    def coordinate(self, point: Point) -> Coordinate:
        values = point.values()
        return tuple(axis.values.index(_hashable(values[axis.name])) for axis in self.axes)

    def point(self, coordinate: Coordinate) -> Point | None:
        """The point at ``coordinate``; None outside the space or excluded by a rule."""
        return self._by_coordinate.get(tuple(coordinate))

    def coordinates(self) -> list[Coordinate]:
        return sorted(self._by_coordinate)

    def centre(self) -> Coordinate:
        """The valid coordinate nearest the middle of every axis (a search's start)."""
        middle = [(len(axis.values) - 1) / 2 for axis in self.axes]
        return min(
            self._by_coordinate,
            key=lambda c: (sum((a - m) ** 2 for a, m in zip(c, middle, strict=True)), c),
        )

    def describe(self, coordinate: Coordinate) -> dict[str, Any]:
        return {axis.name: axis.values[i] for axis, i in zip(self.axes, coordinate, strict=True)}


def _axes(values: Iterable[Mapping[str, Any]]) -> list[Axis]:
    seen: dict[str, list[Any]] = {}
    for mapping in values:
        for name, value in mapping.items():
            value = _hashable(value)
            if value not in seen.setdefault(name, []):
                seen[name].append(value)
    return [
        Axis(name, tuple(sorted(found, key=_order)))
        for name, found in seen.items()
        if len(found) > 1
    ]


def _hashable(value: Any) -> Any:
    """A repeated field's list (allowed_batch_sizes) as a tuple: comparable and hashable."""
    return tuple(value) if isinstance(value, list) else value
