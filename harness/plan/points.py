"""Points: one concrete run each — a server configuration, a load, a protocol, a repeat.

A point's ``key`` is its canonical name: the file name of its result, the unit of dedup and of
``--resume``. It is built from the parameters alone, in a fixed order with fixed prefixes and
fixed number formatting (no ``repr``, no hashing of Python objects), so it is the same on every
Python version and every run: ``mbs32-bt2000-nbt2-meb16-r2-grpc-c16-rep0``.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass, field, replace
from typing import Any

from harness.plan.batching_fields import AXIS_FIELDS, FIELDS, BatchingParams
from harness.plan.spec import LOAD_AXIS, IncludeRule, LoadKind, SweepSpec
from harness.plan.traffic import Traffic

_SAFE = re.compile(r"^[A-Za-z0-9_.]+$")
# The repeat suffix every point and lane key ends with: ``-rep0``, ``-rep1``, ...
_REPEAT_SUFFIX = re.compile(r"-rep\d+$")


def format_number(value: float) -> str:
    """Canonical text of a number: ``8``, ``137.5``, ``0.125`` (3 decimals at most, no exponent)."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _key_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple):
        return ".".join(format_number(v) for v in value)
    if isinstance(value, str):
        # A free-text field (a thread pool's name): keep odd characters out of file names.
        return value if _SAFE.match(value) else hashlib.sha256(value.encode()).hexdigest()[:8]
    return format_number(value)


@dataclass(frozen=True)
class ServerConfig:
    """What a server is started with: batching parameters (None: batching off) and replicas.

    ``own`` holds the parameters of hosted models that have batching axes of their own (a
    multi-model sweep), by served name; the other models batch by ``batching``.
    """

    batching: BatchingParams | None
    replicas: int = 1
    own: tuple[tuple[str, BatchingParams], ...] = ()

    @property
    def key(self) -> str:
        """``mbs32-bt2000-r2``; ``nobatch-r1``: batching off; ``bdefault-r1``: all defaults;
        a model's own parameters follow the shared ones: ``mbs16-mlp.mbs8.bt0-r1``."""
        own = "".join(
            f"-{_key_value(name)}.{_batching_key(params, '.')}" for name, params in self.own
        )
        shared = "nobatch" if self.batching is None else _batching_key(self.batching, "-")
        return f"{shared}{own}-r{self.replicas}"

    def params_for(self, model: str) -> BatchingParams | None:
        """The batching parameters ``model`` is served with (None: batching off)."""
        if self.batching is None:
            return None
        return dict(self.own).get(model, self.batching)

    def as_dict(self) -> dict[str, Any]:
        batching = None if self.batching is None else self.batching.as_dict()
        data: dict[str, Any] = {
            "enable_batching": self.batching is not None,
            "batching": batching,
            "replicas": self.replicas,
        }
        if self.own:  # files of one-model points stay as they were
            data["models"] = {name: params.as_dict() for name, params in self.own}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServerConfig:
        batching = data.get("batching") or {}
        params = BatchingParams.from_dict(batching) if data["enable_batching"] else None
        own = tuple(
            (name, BatchingParams.from_dict(values))
            for name, values in (data.get("models") or {}).items()
        )
        return cls(params, data["replicas"], own)


def _batching_key(params: BatchingParams, separator: str) -> str:
    """The set fields as key parts, ``mbs32-bt2000``; ``bdefault`` when none is set."""
    set_fields = params.as_dict()
    parts = [
        f"{field.prefix}{_key_value(field.of(params))}"
        for field in FIELDS
        if field.name in set_fields
    ]
    return separator.join(parts) or "bdefault"


@dataclass(frozen=True)
class Point:
    """One measurement: a server configuration under one load, protocol and repeat index."""

    server: ServerConfig
    load_kind: LoadKind
    load: float  # users (closed loop), requests per second (open loop) or a trace's speed
    protocol: str
    repeat: int = 0
    # How requests arrive and what they carry; the default adds nothing to the keys.
    traffic: Traffic = field(default_factory=Traffic)

    @property
    def key(self) -> str:
        return f"{self.group_key}{_repeat_suffix(self.repeat)}"

    @property
    def group_key(self) -> str:
        """The key without the repeat: repeats of one configuration at one load (and
        traffic) share it."""
        return f"{self.config_key}-{self._load_key()}{self.traffic.key_suffix}"

    @property
    def config_key(self) -> str:
        """The server configuration and protocol, ``mbs32-bt2000-r1-grpc``: a search's lane
        without its repeat, and what the report calls a configuration."""
        return f"{self.server.key}-{self.protocol}"

    @property
    def lane_key(self) -> str:
        """The key without the load: every probe of one max-rate search shares it."""
        return f"{self.config_key}{self.traffic.key_suffix}{_repeat_suffix(self.repeat)}"

    def _load_key(self) -> str:
        prefix = {"concurrency": "c", "rate": "rps", "trace": "trace"}[self.load_kind]
        return f"{prefix}{format_number(self.load)}"

    @property
    def load_axis(self) -> str:
        """The name of the load value in exclude rules and results.csv (``speed`` for a
        trace)."""
        return LOAD_AXIS[self.load_kind]

    @property
    def batching(self) -> BatchingParams | None:
        return self.server.batching

    @property
    def replicas(self) -> int:
        return self.server.replicas

    def with_load(self, value: float) -> Point:
        return replace(self, load=value)

    def values(self) -> dict[str, Any]:
        """Flat parameter values, as exclude rules name them (batching fields only when on)."""
        out: dict[str, Any] = {
            "enable_batching": self.batching is not None,
            "replicas": self.replicas,
            "protocol": self.protocol,
            self.load_axis: self.load,
        }
        if self.load_kind == "rate":
            out["arrival"] = self.traffic.arrival
        if self.batching is not None:
            out.update(_batching_values(self.batching))
        return out

    def as_dict(self) -> dict[str, Any]:
        data = {
            "key": self.key,
            "server": self.server.as_dict(),
            "load_kind": self.load_kind,
            "load": self.load,
            "protocol": self.protocol,
            "repeat": self.repeat,
        }
        if self.traffic != Traffic():  # files of default-traffic points stay as they were
            data["traffic"] = self.traffic.as_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Point:
        return cls(
            ServerConfig.from_dict(data["server"]),
            data["load_kind"],
            data["load"],
            data["protocol"],
            data.get("repeat", 0),
            Traffic.from_dict(data.get("traffic")),
        )


def _repeat_suffix(repeat: int) -> str:
    return f"-rep{repeat}"


def without_repeat(key: str) -> str:
    """A stored point or lane key without its repeat suffix (``...-c64-rep1`` → ``...-c64``):
    for keys known only as text, such as a baseline file's."""
    return _REPEAT_SUFFIX.sub("", key)


def _batching_values(params: BatchingParams) -> dict[str, Any]:
    """The spec's batching axes as a rule names them (a repeated field as a list)."""
    return {
        field.name: list(field.of(params)) if field.repeated else field.of(params)
        for field in AXIS_FIELDS
    }


# --- the matrix ---------------------------------------------------------------------------------

_AXIS_NAMES = tuple(field.name for field in AXIS_FIELDS)


def server_configs(spec: SweepSpec) -> list[ServerConfig]:
    """Every server configuration of the axes (baseline once per replica count), in spec order."""
    server, axes = spec.server, spec.server.batching
    configs: list[ServerConfig] = []
    replicas: int
    enabled: bool
    own_axes = [(m.served_name, m.batching) for m in spec.hosted_models if m.batching is not None]
    for replicas, enabled in itertools.product(server.replicas, server.enable_batching):
        if not enabled:
            configs.append(ServerConfig(None, replicas))
            continue
        for shared in _axis_params(axes):
            for own in itertools.product(*(_axis_params(a) for _, a in own_axes)):
                named = tuple(zip((name for name, _ in own_axes), own, strict=True))
                configs.append(ServerConfig(shared, replicas, named))
    return configs


def _axis_params(axes: Any) -> list[BatchingParams]:
    """Every combination of batching axes (``BatchingAxes``), in spec order."""
    return [
        BatchingParams.from_dict(dict(zip(_AXIS_NAMES, values, strict=True)))
        for values in itertools.product(*(getattr(axes, f.name) for f in AXIS_FIELDS))
    ]


def include_config(rule: IncludeRule) -> ServerConfig:
    """The server configuration an include rule adds."""
    if not rule.enable_batching:
        return ServerConfig(None, rule.replicas)
    params = BatchingParams.from_dict({name: getattr(rule, name) for name in _AXIS_NAMES})
    return ServerConfig(params, rule.replicas)


def expand_matrix(spec: SweepSpec) -> list[Point]:
    """Every point of the spec: the axes' product minus exclude rules, plus include rules.

    Repeats are the outermost loop (all of repeat 0 first), so drift over a long sweep shows as
    a difference between repeats instead of hiding inside one. For ``find_max_rate`` each point
    is the first probe of its search (rate = ``start_rps``). Duplicates are dropped, by key.
    """
    kind, loads = spec.load.kind, spec.load.values
    grid = [
        point
        for point in _points(server_configs(spec), kind, loads, spec)
        if not any(_matches(rule.given(), point) for rule in spec.matrix.exclude)
    ]
    extra = _points([include_config(r) for r in spec.matrix.include], kind, loads, spec)
    return _dedup(sorted(grid + extra, key=lambda point: point.repeat))


def _points(
    configs: list[ServerConfig], kind: LoadKind, loads: tuple[float, ...], spec: SweepSpec
) -> list[Point]:
    traffics = spec.traffics()
    return [
        Point(config, kind, load, protocol, repeat, traffic)
        for repeat in range(spec.repeats)
        for config in configs
        for protocol in spec.protocols
        for traffic in traffics
        for load in loads
    ]


def _matches(given: dict[str, Any], point: Point) -> bool:
    values = point.values()
    return all(key in values and values[key] == value for key, value in given.items())


def _dedup(points: list[Point]) -> list[Point]:
    seen: set[str] = set()
    unique = []
    for point in points:
        if point.key not in seen:
            seen.add(point.key)
            unique.append(point)
    return unique
