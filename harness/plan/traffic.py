"""A point's traffic: how open-loop requests arrive, and what each request carries.

The arrival process is the scenarios' own ``ArrivalSpec`` (poisson, constant, gamma with a CV,
mmpp with its burst ratio and dwell times); the request mix is a rows distribution and, for
models with a variable (-1) dimension, a length distribution, each fixed, a uniform range or
weights. ``Traffic.key_suffix`` names a non-default traffic canonically for point keys
(``-gamma4``, ``-mmpp10x1x0.2``, ``-rows1w0.7_4w0.2_16w0.1``, ``-len8to64``); the default
traffic (Poisson, a fixed number of rows, the scenario's length) adds nothing, so the keys of
sweeps without traffic options are the keys they always were.

The spec's parsers (``parse_arrival``, ``parse_sizes``) raise ValueError with one line naming
the valid forms; the spec adds the key's path.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scenarios.arrivals import OPEN_ARRIVALS, ArrivalSpec

POISSON = ArrivalSpec("poisson")
# The parameters each arrival kind takes in a spec (the rest keep ArrivalSpec's defaults).
ARRIVAL_PARAMS: dict[str, tuple[str, ...]] = {
    "poisson": (),
    "constant": (),
    "gamma": ("cv",),
    "mmpp": ("burst_ratio", "base_dwell_s", "burst_dwell_s"),
}
_ARRIVAL_FORMS = (
    "poisson, constant, {kind: gamma, cv: X} or "
    "{kind: mmpp, burst_ratio: R, base_dwell_s: S, burst_dwell_s: S}"
)
_SIZE_FORMS = "a whole number, a range 'LOW-HIGH' (e.g. '8-64') or weights {VALUE: WEIGHT, ...}"


def _number_text(value: float) -> str:
    """``8``, ``0.125``: 3 decimals at most, no exponent (the point keys' number format)."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3f}".rstrip("0").rstrip(".")


# --- arrivals -----------------------------------------------------------------------------------


def parse_arrival(value: Any) -> ArrivalSpec:
    """An arrival process from a spec: a kind's name, or a mapping with ``kind`` and its
    parameters; ValueError naming the valid forms otherwise."""
    if isinstance(value, ArrivalSpec):
        return value
    if isinstance(value, str):
        value = {"kind": value}
    if (
        not isinstance(value, Mapping)
        or not isinstance(value.get("kind"), str)
        or (value["kind"] not in ARRIVAL_PARAMS)
    ):
        raise ValueError(f"must be one of {_ARRIVAL_FORMS} (got {value!r})")
    kind = str(value["kind"])
    allowed = ARRIVAL_PARAMS[kind]
    unknown = sorted(set(value) - {"kind", *allowed})
    if unknown:
        keys = ", ".join(("kind", *allowed))
        raise ValueError(f"{kind} takes no {unknown[0]!r}; valid keys for {kind}: {keys}")
    if kind == "gamma" and "cv" not in value:
        raise ValueError("gamma needs cv, the gaps' coefficient of variation (1 = Poisson)")
    params = {name: value[name] for name in allowed if name in value}
    for name, number in params.items():
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise ValueError(f"{kind}: {name} must be a number (got {number!r})")
    try:
        return ArrivalSpec(kind, **{k: float(v) for k, v in params.items()})
    except ValueError as exc:
        raise ValueError(f"{kind}: {exc} (got {dict(value)!r})") from None


def arrival_token(arrival: ArrivalSpec) -> str:
    """The arrival's part of a point key: ``""`` for Poisson, ``const``, ``gamma4``,
    ``mmpp10x1x0.2`` (burst ratio, base dwell, burst dwell)."""
    if arrival.kind == "poisson":
        return ""
    if arrival.kind == "gamma":
        return f"gamma{_number_text(arrival.cv)}"
    if arrival.kind == "mmpp":
        numbers = (arrival.burst_ratio, arrival.base_dwell_s, arrival.burst_dwell_s)
        return "mmpp" + "x".join(_number_text(n) for n in numbers)
    return "const"


def arrival_label(arrival: ArrivalSpec) -> str:
    """For people: ``Poisson``, ``constant``, ``gamma CV 4``, ``MMPP 10x bursts``."""
    if arrival.kind == "gamma":
        return f"gamma CV {arrival.cv:g}"
    if arrival.kind == "mmpp":
        return (
            f"MMPP {arrival.burst_ratio:g}x bursts ({arrival.burst_dwell_s:g} s "
            f"every {arrival.base_dwell_s:g} s)"
        )
    return "Poisson" if arrival.kind == "poisson" else arrival.kind


def arrival_dict(arrival: ArrivalSpec) -> dict[str, Any]:
    """The spec's mapping form: ``{"kind": "gamma", "cv": 4.0}`` (only the kind's parameters)."""
    return {"kind": arrival.kind, **{p: getattr(arrival, p) for p in ARRIVAL_PARAMS[arrival.kind]}}


def arrival_argv(arrival: ArrivalSpec) -> list[str]:
    """The scenario options for an open-loop ``arrival``."""
    flags = {
        "cv": "--arrival-cv",
        "burst_ratio": "--burst-ratio",
        "base_dwell_s": "--base-dwell",
        "burst_dwell_s": "--burst-dwell",
    }
    argv = ["--arrival", arrival.kind]
    for name in ARRIVAL_PARAMS[arrival.kind]:
        argv += [flags[name], f"{getattr(arrival, name):g}"]
    return argv


assert set(ARRIVAL_PARAMS) == set(OPEN_ARRIVALS)


# --- sizes: rows and lengths per request --------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """A whole number per request: fixed (``values == (n,)``), a uniform range
    (``low``..``high``), or weights over ``values`` (normalised to add up to 1)."""

    values: tuple[int, ...]
    weights: tuple[float, ...] = ()  # empty: fixed or a range
    span: tuple[int, int] | None = None  # a uniform range, both ends included

    @classmethod
    def fixed(cls, value: int) -> Sizes:
        return cls((value,))

    @property
    def is_fixed(self) -> bool:
        return self.span is None and len(self.values) == 1

    @property
    def largest(self) -> int:
        return self.span[1] if self.span else max(self.values)

    def scenario_text(self) -> str:
        """The scenario option's form: ``4``, ``8-64``, ``1:0.7,4:0.2``."""
        if self.span:
            return f"{self.span[0]}-{self.span[1]}"
        if self.is_fixed:
            return str(self.values[0])
        return ",".join(f"{v}:{w:g}" for v, w in zip(self.values, self.weights, strict=True))

    def token(self) -> str:
        """Key form: ``4``, ``8to64``, ``1w0.7_4w0.2`` (weights to a thousandth)."""
        if self.span:
            return f"{self.span[0]}to{self.span[1]}"
        if self.is_fixed:
            return str(self.values[0])
        pairs = zip(self.values, self.weights, strict=True)
        return "_".join(f"{v}w{_number_text(w)}" for v, w in pairs)

    def as_spec(self) -> int | str | dict[int, float]:
        """The spec's form (what ``parse_sizes`` reads back to an equal value)."""
        if self.span:
            return f"{self.span[0]}-{self.span[1]}"
        if self.is_fixed:
            return self.values[0]
        return dict(zip(self.values, self.weights, strict=True))

    def label(self) -> str:
        return self.scenario_text().replace(",", ", ")


def parse_sizes(value: Any) -> Sizes:
    """Sizes from a spec: ``4``, ``"8-64"`` or ``{1: 0.7, 4: 0.3}``; ValueError otherwise."""
    if isinstance(value, Sizes):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return Sizes.fixed(value)
    if isinstance(value, str):
        return _range(value)
    if isinstance(value, Mapping) and value:
        return _weights(value)
    raise ValueError(f"must be {_SIZE_FORMS} (got {value!r})")


def _range(text: str) -> Sizes:
    low, dash, high = text.strip().partition("-")
    if dash and low.strip().isdigit() and high.strip().isdigit():
        first, last = int(low), int(high)
        if 1 <= first < last:
            return Sizes((first, last), span=(first, last))
        if 1 <= first == last:
            return Sizes.fixed(first)
    raise ValueError(f"must be {_SIZE_FORMS}; a range goes up from 1 or more (got {text!r})")


def _weights(mapping: Mapping[Any, Any]) -> Sizes:
    pairs = []
    for key, weight in mapping.items():
        # A spec kept as JSON (run.json) has its mapping keys as text.
        size = int(key) if isinstance(key, str) and key.strip().isdigit() else key
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"must be {_SIZE_FORMS}; {size!r} is not a whole number >= 1")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise ValueError(f"must be {_SIZE_FORMS}; the weight of {size} must be a number >= 0")
        pairs.append((size, float(weight)))
    total = sum(weight for _, weight in pairs)
    if total <= 0:
        raise ValueError(f"must be {_SIZE_FORMS}; the weights add up to 0")
    # Rounded so that {1: 7, 4: 3} and {1: 0.7, 4: 0.3} are one and the same mix.
    pairs = sorted((size, round(weight / total, 9)) for size, weight in pairs if weight > 0)
    if len(pairs) == 1:
        return Sizes.fixed(pairs[0][0])
    return Sizes(tuple(s for s, _ in pairs), tuple(w for _, w in pairs))


ONE_ROW = Sizes.fixed(1)


# --- the whole traffic of a point ---------------------------------------------------------------


@dataclass(frozen=True)
class Traffic:
    """How a point's requests arrive (open loop) and what they carry. ``length`` None: the
    scenario's default size for -1 dimensions. ``trace``: the file a trace point replays (its
    times are the arrivals; rows and lengths it leaves out come from the mix)."""

    arrival: ArrivalSpec = field(default=POISSON)
    rows: Sizes = ONE_ROW
    length: Sizes | None = None
    trace: str | None = None

    @property
    def key_suffix(self) -> str:
        """``""`` for the default traffic; else ``-gamma4-rows1w0.7_4w0.3-len8to64`` (only the
        parts that differ from the default; a fixed number of rows was never part of a key)."""
        parts = [arrival_token(self.arrival)]
        if not self.rows.is_fixed:
            parts.append("rows" + self.rows.token())
        if self.length is not None:
            parts.append("len" + self.length.token())
        return "".join(f"-{part}" for part in parts if part)

    @property
    def is_default(self) -> bool:
        return self.key_suffix == "" and self.trace is None

    @property
    def has_mix(self) -> bool:
        """More than one kind of request (rows or length vary)."""
        return not self.rows.is_fixed or (self.length is not None and not self.length.is_fixed)

    def label(self, open_loop: bool = True) -> str:
        """For people: ``gamma CV 4 · rows 1:0.7, 4:0.3`` (a closed loop has no arrivals)."""
        parts = [arrival_label(self.arrival)] if open_loop and self.trace is None else []
        if self.trace is not None:
            parts.append(f"trace {Path(self.trace).name}")
        if not self.rows.is_fixed:
            parts.append(f"rows {self.rows.label()}")
        if self.length is not None:
            parts.append(f"length {self.length.label()}")
        return " · ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        data = {
            "arrival": arrival_dict(self.arrival),
            "rows": self.rows.as_spec(),
            "length": None if self.length is None else self.length.as_spec(),
        }
        if self.trace is not None:
            data["trace"] = self.trace
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Traffic:
        if not data:
            return cls()
        length = data.get("length")
        return cls(
            parse_arrival(data.get("arrival") or "poisson"),
            parse_sizes(data.get("rows", 1)),
            None if length is None else parse_sizes(length),
            data.get("trace"),
        )
