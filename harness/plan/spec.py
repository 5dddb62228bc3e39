"""The sweep spec: a YAML file validated once into typed, frozen objects.

"What the user asked for" — strategies decide how to walk it and points are the concrete runs.
Every problem in a spec is reported at once, in one UserError, each with its path
(``server.replicas[2]: must be > 0 (got -4)``); an unknown key is listed with the
valid keys at its level. ``SweepSpec.as_given`` keeps the mapping exactly as the user wrote it,
for run.json.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_core import ErrorDetails

from harness.errors import UserError
from harness.metrics import METRICS
from harness.models import zoo as model_zoo
from harness.plan.batching_fields import AXIS_FIELDS, MAX_BATCH_SIZE, BatchingField
from harness.plan.hooks import PLACEHOLDERS, unknown_placeholders
from harness.plan.placement import parse_cpus
from harness.plan.space import expand_range
from harness.plan.traffic import (
    ONE_ROW,
    POISSON,
    Sizes,
    Traffic,
    arrival_dict,
    parse_arrival,
    parse_sizes,
)
from scenarios.arrivals import ArrivalSpec
from scenarios.options import OptionError, parse_version_split

# --- field types --------------------------------------------------------------------------------

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(gt=0, le=1)]
# Point keys carry rates to a thousandth of a request per second.
Rate = Annotated[float, Field(ge=0.001)]


def _as_list(value: Any) -> Any:
    """A scalar where an axis (a list) is expected means a one-value axis."""
    return value if isinstance(value, list) else [value]


def _range_or_list(minimum: int) -> BeforeValidator:
    """An integer axis: a list, a scalar, or a range (``{min, max, step | scale}``,
    harness.plan.space) expanded to its list of values."""

    def expand(value: Any) -> Any:
        if isinstance(value, dict):
            return expand_range(value, minimum)
        return _as_list(value)

    return BeforeValidator(expand)


def _distinct(values: list) -> list:
    seen: list = []
    for value in values:
        if value in seen:
            raise ValueError(f"{value!r} is listed twice")
        seen.append(value)
    return values


def _increasing(sizes: list[int]) -> list[int]:
    if any(b <= a for a, b in itertools.pairwise(sizes)):
        raise ValueError(f"entries must be strictly increasing (got {sizes})")
    return sizes


def _metric_bounds(bounds: dict[str, float]) -> dict[str, float]:
    unknown = [key for key in bounds if key not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r}; valid metric IDs: {', '.join(METRICS)}")
    return bounds


def _metric_id(value: str) -> str:
    _metric_bounds({value: 0.0})
    return value


# An axis: a list of distinct values to sweep; a scalar is a one-value list.
_AXIS_RULES = (BeforeValidator(_as_list), AfterValidator(_distinct), Field(min_length=1))


def _axis(item: Any, minimum: int | None = None) -> Any:
    """The axis type of ``item``, for fields made from the batching field table; an integer
    axis (``minimum`` given) also takes a range."""
    if minimum is None:
        return Annotated[list[item], *_AXIS_RULES]
    return Annotated[list[item], _range_or_list(minimum), *_AXIS_RULES[1:]]


BoolAxis = Annotated[list[bool], *_AXIS_RULES]
ReplicaAxis = Annotated[list[PosInt], _range_or_list(1), *_AXIS_RULES[1:]]
BatchSizes = Annotated[list[PosInt], AfterValidator(_increasing)]
Bounds = Annotated[dict[str, float], AfterValidator(_metric_bounds)]
MetricId = Annotated[str, AfterValidator(_metric_id)]
ProtocolName = Literal["grpc", "rest"]
# Request mixes and arrival processes: their own parsers give one clear line per mistake.
SizesField = Annotated[Sizes, PlainValidator(parse_sizes)]
OptionalSizes = Annotated[
    Sizes | None, PlainValidator(lambda value: None if value is None else parse_sizes(value))
]
ArrivalAxis = Annotated[list[Annotated[ArrivalSpec, PlainValidator(parse_arrival)]], *_AXIS_RULES]


def _version_split(text: str | None) -> str | None:
    """The scenarios' own check of a version split, so the spec and --version-split agree."""
    try:
        parse_version_split(text)
    except OptionError as exc:
        raise ValueError(str(exc).removeprefix("--version-split: ")) from None
    return text


class _Strict(BaseModel):
    # strict: YAML already gives typed values, so "8" for an integer is a mistake worth naming.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# --- sections -----------------------------------------------------------------------------------


class Endpoint(_Strict):
    """One replica of an external server (the harness neither starts nor stops it)."""

    grpc: str | None = None  # host:port
    rest: str | None = None  # http://host:port
    metrics: str | None = None  # Prometheus URL; default: REST + /monitoring/prometheus/metrics


def _hook_form(value: Any) -> Any:
    """A hook written as a bare command is short for ``{run: COMMAND}``."""
    return {"run": value} if isinstance(value, str) else value


class Hook(_Strict):
    """One shell command of a ``command`` target and how long it may take."""

    run: Annotated[str, Field(min_length=1)]
    timeout_s: PosFloat | None = None  # None: the hook's default (harness.servers.command)


HookField = Annotated[Hook, BeforeValidator(_hook_form)]


class CommandHooks(_Strict):
    """The user's own deployment tooling, run per server configuration (harness.servers.command):
    ``apply`` deploys it, ``ready`` is polled until it succeeds, ``endpoints`` prints the
    addresses to load, ``teardown`` removes it."""

    apply: HookField
    ready: HookField | None = None
    endpoints: HookField
    teardown: HookField | None = None


class TargetSpec(_Strict):
    """What serves the model: reference-server replicas, tensorflow_model_server, endpoints, or
    the user's own deployment commands."""

    kind: Literal["reference", "tfserving", "external", "command"] = "reference"
    binary: str | None = None  # tfserving: path of tensorflow_model_server; default: from PATH
    endpoints: list[Endpoint] = []
    hooks: CommandHooks | None = None  # command only
    ready_timeout_s: PosFloat = 120.0
    server_flags: list[str] = []  # more flags for every replica, e.g. --tensorflow_intra_op...

    @property
    def starts_servers(self) -> bool:
        """Whether the harness runs the servers on this machine (and so places them)."""
        return self.kind in ("reference", "tfserving")


class ModelSpec(_Strict):
    """The model: a built-in (built on first use) or a SavedModel base path, and the request."""

    builtin: str | None = None
    base_path: str | None = None
    name: str | None = None  # the served model name; default: builtin, or base path's folder
    # Built-in model options (see `make-model --option`), checked by the model zoo itself.
    options: dict[str, Any] = {}
    signature: str = "serving_default"
    # Rows per request: a number, a range "1-16" or weights {1: 0.7, 4: 0.2, 16: 0.1}.
    rows_per_request: SizesField = ONE_ROW
    # The size of the other -1 dimensions (a sequence length), in the same forms; None: the
    # scenario's default (8).
    length: OptionalSizes = None
    payload: str | None = None  # .npy/.npz/.json file; default: random data from the metadata
    # A/B of versions: "stable=0.9,canary=0.1" (labels) or "1=0.5,2=0.5" (version numbers).
    version_split: Annotated[str | None, AfterValidator(_version_split)] = None

    def resolved_options(self) -> dict[str, int | float]:
        """The built-in model's options with defaults filled in ({} for a base path)."""
        if self.builtin is None:
            return {}
        return model_zoo.resolve_options(self.builtin, dict(self.options))

    @property
    def served_name(self) -> str:
        if self.name:
            return self.name
        return self.builtin or Path(self.base_path or "model").name


# --- the batching fields, from their table ------------------------------------------------------

_Role = Literal["axis", "include", "exclude"]


def _scalar(field: BatchingField[Any]) -> Any:
    if field.kind is int:
        return NonNegInt if field.minimum == 0 else PosInt
    return field.kind


def _list_of(kind: type) -> Any:
    return list[kind]  # type: ignore[valid-type]  # a type made at run time from the table


def _batching_field(field: BatchingField[Any], role: _Role) -> tuple[Any, Any]:
    """``(annotation, default)`` of one batching field in an axis list or a matrix rule."""
    if field.repeated:
        items: Any = BatchSizes if field.kind is int else _list_of(field.kind)
        return {
            "axis": (Annotated[list[items], Field(min_length=1)], [[]]),
            "include": (items, []),
            "exclude": (items | None, None),
        }[role]
    scalar = _scalar(field)
    minimum = field.minimum if field.kind is int else None
    # `null` in an axis means "leave it at the server's default" (not written to the file).
    return (_axis(scalar | None, minimum), [None]) if role == "axis" else (scalar | None, None)


def _with_batching(base: type[_Strict], role: _Role) -> type[_Strict]:
    """``base`` followed by the spec's batching fields, in the table's order."""
    fields = {field.name: _batching_field(field, role) for field in AXIS_FIELDS}
    name = f"{base.__name__}_{role}_batching"
    model: type[_Strict] = create_model(  # type: ignore[call-overload]  # fields from the table
        name, __base__=base, __module__=__name__, **fields
    )
    return model


# A base made at run time from the batching field table: mypy cannot see its fields.
class BatchingAxes(_with_batching(_Strict, "axis")):  # type: ignore[misc]
    """Each a list of values to sweep; ``null`` keeps the server's default for that field."""


class HostedModel(ModelSpec):
    """One of several models a server hosts (``models:``): the model, its share of the
    requests, and batching axes of its own (None: the server's shared ``server.batching``)."""

    weight: PosFloat = 1.0
    batching: BatchingAxes | None = None

    @classmethod
    def own_fields(cls) -> tuple[str, ...]:
        """The fields a hosted model has beyond ModelSpec's."""
        return ("weight", "batching")


class ServerSpec(_Strict):
    """Server axes. ``enable_batching: [true, false]`` adds unbatched baseline points."""

    enable_batching: BoolAxis = [True]
    replicas: ReplicaAxis = [1]
    batching: BatchingAxes = BatchingAxes()


class _IncludeHead(_Strict):
    enable_batching: bool = True
    replicas: PosInt = 1


class _ExcludeHead(_Strict):
    enable_batching: bool | None = None
    replicas: PosInt | None = None


# A base made at run time from the batching field table: mypy cannot see its fields.
class IncludeRule(_with_batching(_IncludeHead, "include")):  # type: ignore[misc]
    """One extra server configuration; fields not given keep the server default (replicas 1)."""


# A base made at run time from the batching field table: mypy cannot see its fields.
class ExcludeRule(_with_batching(_ExcludeHead, "exclude")):  # type: ignore[misc]
    """Drops every point whose values equal all the fields given here (the others are free)."""

    protocol: ProtocolName | None = None
    concurrency: PosInt | None = None
    rate: Rate | None = None
    speed: PosFloat | None = None  # a trace's replay speed
    arrival: Annotated[ArrivalSpec, PlainValidator(parse_arrival)] | None = None

    def given(self) -> dict[str, Any]:
        """The fields the rule constrains (those written in the spec, ``null`` included)."""
        return {name: getattr(self, name) for name in sorted(self.model_fields_set)}


class MatrixSpec(_Strict):
    exclude: list[ExcludeRule] = []
    include: list[IncludeRule] = []


class MaxRateSpec(_Strict):
    """Find the highest open-loop rate meeting the SLO: double until it fails, then bisect."""

    slo: Annotated[Bounds, Field(min_length=1)]
    start_rps: Rate = 50.0
    min_rps: Rate = 1.0
    max_rps: Rate = 100_000.0
    precision: Annotated[float, Field(gt=0, lt=1)] = 0.05
    max_probes: PosInt = 20
    # A probe whose achieved throughput is below this share of the offered rate fails: the
    # server (or the generator) could not keep up, whatever the latency says.
    min_achieved: Fraction = 0.9


class WorkersSpec(_Strict):
    """Locust workers the user starts elsewhere with ``batchbench worker --master HOST:PORT``:
    the harness runs the Locust master bound to ``bind`` and waits up to ``wait_s`` for them."""

    remote: PosInt
    bind: Annotated[str, Field(pattern=r"^\S+:[0-9]{1,5}$")] = "0.0.0.0:5557"  # HOST:PORT
    wait_s: PosFloat = 120.0


# What a point's load is: closed-loop users, an open-loop rate (a max-rate search probes
# rates), or a trace replayed at a speed.
LoadKind = Literal["concurrency", "rate", "trace"]
# The name a point's load value goes by in exclude rules and results.csv, per load kind.
LOAD_AXIS: dict[LoadKind, str] = {"concurrency": "concurrency", "rate": "rate", "trace": "speed"}


class LoadSpec(_Strict):
    """Exactly one of: closed-loop users, open-loop rates (req/s), a max-rate search, or a
    trace (a JSON-lines file, scenarios.trace) replayed at each of ``speed``."""

    concurrency: Annotated[list[PosInt], _range_or_list(1), AfterValidator(_distinct)] | None = None
    rate: Annotated[list[Rate], BeforeValidator(_as_list), AfterValidator(_distinct)] | None = None
    find_max_rate: MaxRateSpec | None = None
    trace: str | None = None  # the trace file (relative to the working directory)
    speed: (
        Annotated[list[PosFloat], BeforeValidator(_as_list), AfterValidator(_distinct)] | None
    ) = None
    # Open loop only: an axis of arrival processes (poisson | constant | gamma | mmpp).
    arrival: ArrivalAxis = [POISSON]
    # Locust worker processes on this machine; auto: one (none beside remote workers), and one
    # per generator core for a point that came back generator-bound (harness.sweep.measure).
    processes: NonNegInt | Literal["auto"] = "auto"
    workers: WorkersSpec | None = None  # Locust workers on other hosts

    @property
    def fixed_processes(self) -> int | None:
        """The process count the spec fixes; None for ``auto``."""
        if self.processes == "auto":
            return 0 if self.workers else None
        return self.processes

    @property
    def remote_workers(self) -> int:
        return self.workers.remote if self.workers else 0

    @property
    def kind(self) -> LoadKind:
        if self.trace is not None:
            return "trace"
        return "concurrency" if self.concurrency is not None else "rate"

    @property
    def values(self) -> tuple[float, ...]:
        """The grid's load values (users, req/s or trace speeds); a max-rate search's first
        probe."""
        if self.find_max_rate is not None:
            return (self.find_max_rate.start_rps,)
        if self.trace is not None:
            return tuple(self.speed or (1.0,))
        return tuple(self.concurrency or self.rate or ())

    @property
    def arrivals(self) -> tuple[ArrivalSpec, ...]:
        """The arrival axis; a closed loop has none of its own (Poisson stands in, keyless)."""
        return tuple(self.arrival) if self.kind == "rate" else (POISSON,)


def _cpu_list(value: Any) -> Any:
    try:
        return parse_cpus(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(str(exc)) from None


CpuList = Annotated[tuple[int, ...], BeforeValidator(_cpu_list)]


def _placement_form(value: Any) -> Any:
    """``placement: auto`` / ``none`` is short for ``{mode: ...}``; CPU lists alone mean
    ``mode: cpus``."""
    if isinstance(value, str):
        return {"mode": value}
    if isinstance(value, dict) and "mode" not in value and {"servers", "generator"} & set(value):
        return {**value, "mode": "cpus"}
    return value


class PlacementSpec(_Strict):
    """Which cores the server replicas and the load generator run on (harness.plan.placement):
    ``auto`` disjoint sets sized from the machine, ``none`` wherever the OS puts them, or
    ``cpus`` with both lists given (``"0-2"``, ``[0, 1]``)."""

    mode: Literal["auto", "none", "cpus"] = "auto"
    servers: CpuList | None = None
    generator: CpuList | None = None


class MeasurementSpec(_Strict):
    """Warm-up, then windows until the last ``stable_windows`` agree (perf_analyzer's rule)."""

    warmup_s: NonNegFloat = 5.0
    window_s: PosFloat = 5.0
    stability_tolerance: Fraction = 0.10
    stable_windows: Annotated[int, Field(ge=2)] = 3
    max_windows: PosInt = 10
    min_requests: NonNegInt = 100  # over the windows a verdict is drawn from


class Objective(_Strict):
    """Exactly one of: a metric to maximise, one to minimise, or weights (score = Σ w·value)."""

    maximize: MetricId | None = None
    minimize: MetricId | None = None
    weights: Bounds | None = None


class RecommendSpec(_Strict):
    """Constraints (metric ID → bound: at most for lower-is-better, at least otherwise)."""

    slo: Bounds = {}
    objective: Objective = Objective(maximize="throughput_rps")


class ConfirmSpec(_Strict):
    """Re-measure the tied-best configurations (at most ``top``, plus the unbatched baseline
    when the sweep has one) in ``rounds`` interleaved rounds; the recommendation then comes
    from those rounds."""

    top: PosInt = 3
    rounds: Annotated[int, Field(ge=2)] = 3


class SearchSpec(_Strict):
    """How to walk the space (harness.plan.search): every point (``grid``), coordinate
    hill-climbing that moves only on a lead beyond the noise (``quick``), or Optuna's TPE
    (``bayesian``). A budget (``max_points`` and/or ``fraction`` of the space, the smaller
    wins) caps a search; ``bayesian`` also stops after ``patience`` trials without a new best."""

    strategy: Literal["grid", "quick", "bayesian"] = "grid"
    max_points: PosInt | None = None
    fraction: Fraction | None = None
    patience: PosInt = 10


class SweepSpec(_Strict):
    """A whole sweep: target, model, server axes, matrix rules, load, measurement, repeats."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]+$")] = "sweep"  # part of the run id
    description: str = ""
    target: TargetSpec = TargetSpec()
    model: ModelSpec
    # Several models on one server (each request goes to one, by weight); ``model`` is then
    # the first of them (the spec gives one of the two).
    models: list[HostedModel] = []
    server: ServerSpec = ServerSpec()
    matrix: MatrixSpec = MatrixSpec()
    load: LoadSpec
    placement: Annotated[PlacementSpec, BeforeValidator(_placement_form)] = PlacementSpec()
    protocol: Literal["grpc", "rest", "both"] = "grpc"
    measurement: MeasurementSpec = MeasurementSpec()
    repeats: PosInt = 1
    max_duration_s: PosFloat | None = None  # pre-flight refuses a sweep estimated far beyond it
    recommend: RecommendSpec = RecommendSpec()
    confirm: ConfirmSpec | None = None  # confirmation rounds after the sweep
    search: SearchSpec = SearchSpec()
    seed: int = 0

    _as_given: dict[str, Any] = PrivateAttr(default_factory=dict)
    _source: str = PrivateAttr(default="")

    @model_validator(mode="before")
    @classmethod
    def _first_model(cls, data: Any) -> Any:
        """``models:`` stands for ``model:`` too (its first entry), so code that serves one
        model reads ``model`` either way."""
        if not isinstance(data, dict) or "models" not in data:
            return data
        if "model" in data:
            raise ValueError("give model (one model) or models (several), not both")
        models = data["models"]
        if not (isinstance(models, list) and models and isinstance(models[0], dict)):
            return {**data, "model": {}}  # the models field reports what is wrong
        first = {k: v for k, v in models[0].items() if k not in HostedModel.own_fields()}
        return {**data, "model": first}

    @property
    def hosted_models(self) -> tuple[HostedModel, ...]:
        """Every model the server hosts (one for a ``model:`` spec)."""
        if self.models:
            return tuple(self.models)
        return (HostedModel.model_construct(**dict(self.model), weight=1.0, batching=None),)

    @property
    def multi_model(self) -> bool:
        return len(self.models) > 1

    @property
    def model_mix(self) -> str:
        """The scenarios' ``--model-name``: ``mlp``, or weights ``mlp:0.7,synthetic:0.3``."""
        if not self.multi_model:
            return self.model.served_name
        return ",".join(f"{m.served_name}:{m.weight:g}" for m in self.models)

    @property
    def protocols(self) -> tuple[ProtocolName, ...]:
        return ("grpc", "rest") if self.protocol == "both" else (self.protocol,)

    def traffics(self) -> list[Traffic]:
        """Every traffic the sweep sends: one per arrival process, with the model's mix."""
        model, trace = self.model, self.load.trace
        return [
            Traffic(arrival, model.rows_per_request, model.length, trace)
            for arrival in self.load.arrivals
        ]

    @property
    def as_given(self) -> dict[str, Any]:
        """The spec mapping exactly as written (a copy), for run.json."""
        return copy.deepcopy(self._as_given)

    @property
    def source(self) -> str:
        """Where the spec came from: a file path or ``preset:NAME``."""
        return self._source

    @property
    def latency_slo_ms(self) -> float | None:
        """The p99 bound the user cares about (the search's SLO first), if any."""
        if self.load.find_max_rate and "latency_p99_ms" in self.load.find_max_rate.slo:
            return self.load.find_max_rate.slo["latency_p99_ms"]
        return self.recommend.slo.get("latency_p99_ms")


# --- loading ------------------------------------------------------------------------------------


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a spec file; one UserError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"cannot read spec {path}: {exc.strerror}") from None
    return parse_spec(text, source=str(path))


def load_preset(name: str) -> SweepSpec:
    """A shipped spec by name (``default``, ``ci``); UserError listing the presets otherwise."""
    from harness.plan.presets import preset_names, preset_path

    if name not in preset_names():
        raise UserError(f"unknown preset {name!r}; presets: {', '.join(preset_names())}")
    return parse_spec(preset_path(name).read_text(), source=f"preset:{name}")


def parse_spec(text: str, source: str = "<spec>") -> SweepSpec:
    """Parse YAML text and validate it (see :func:`validate_spec`)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{source}: not valid YAML: {_yaml_problem(exc)}") from None
    return validate_spec(raw, source)


def validate_spec(raw: Any, source: str = "<spec>") -> SweepSpec:
    """Validate a mapping into a SweepSpec; one UserError listing every problem with its path."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: a spec is a mapping of keys (target, model, load, ...)")
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        if "models" in raw:  # ``model`` is then a copy of models[0]: its errors are told there
            errors = [e for e in errors if not e["loc"] or e["loc"][0] != "model"]
        _raise_problems(source, [describe_error(error) for error in errors])
    _raise_problems(source, [f"{path}: {message}" for path, message in cross_checks(spec)])
    spec._as_given = copy.deepcopy(raw)
    spec._source = source
    return spec


def with_placement(
    spec: SweepSpec,
    mode: str | None = None,
    servers: str | None = None,
    generator: str | None = None,
) -> SweepSpec:
    """``spec`` with its placement replaced by command-line choices (validated as if written
    in the spec, and recorded as given); ``spec`` itself when nothing is chosen."""
    if mode is None and servers is None and generator is None:
        return spec
    placement: dict[str, Any] = {"mode": mode or ("cpus" if servers or generator else "auto")}
    placement.update({k: v for k, v in (("servers", servers), ("generator", generator)) if v})
    return validate_spec({**spec.as_given, "placement": placement}, spec.source)


def _raise_problems(source: str, problems: list[str]) -> None:
    if problems:
        lines = "\n".join(f"  {problem}" for problem in problems)
        raise UserError(f"{source}: {len(problems)} problem(s) in the spec:\n{lines}")


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    return f"{getattr(exc, 'problem', None) or exc}{where}"


# --- pydantic errors, in the user's words ------------------------------------------------------

_TEMPLATES = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "literal_error": "must be {expected}",
    "string_pattern_mismatch": "must match {pattern}",
    "too_short": "must have at least {min_length} item(s)",
    "missing": "required",
}


def format_path(loc: tuple[int | str, ...]) -> str:
    """``('server', 'replicas', 2)`` → ``server.replicas[2]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def describe_error(error: ErrorDetails) -> str:
    loc = tuple(error["loc"])
    if error["type"] == "extra_forbidden":
        return _unknown_key(loc)
    template = _TEMPLATES.get(error["type"])
    if template is None:
        message = error["msg"].removeprefix("Value error, ")
    else:
        ctx = {k: f"{v:g}" if isinstance(v, float) else v for k, v in error.get("ctx", {}).items()}
        message = template.format(**ctx)
    if error["type"] not in ("missing", "value_error"):
        message += f" (got {_short(error['input'])})"
    return f"{format_path(loc)}: {message}"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unknown_key(loc: tuple[int | str, ...]) -> str:
    valid = list(_model_at(SweepSpec, loc[:-1]).model_fields)
    key = str(loc[-1])
    hint = difflib.get_close_matches(key, valid, n=1)
    did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
    return f"{format_path(loc)}: unknown key{did_you_mean}; valid keys: {', '.join(valid)}"


def _model_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel]:
    """The model class that validates the mapping found at ``loc``."""
    annotation: Any = model
    for part in loc:
        if isinstance(part, str) and _is_model(annotation):
            annotation = annotation.model_fields[part].annotation
        annotation = _inner_model(annotation) or annotation
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The model class inside ``list[X]``, ``X | None``, ``Annotated[...]``, if any."""
    if _is_model(annotation):
        return annotation
    for arg in typing.get_args(annotation):
        if found := _inner_model(arg):
            return found
    return None


# --- checks across fields (run on a structurally valid spec) ------------------------------------

Problem = tuple[str, str]


def cross_checks(spec: SweepSpec) -> list[Problem]:
    """Problems that involve more than one field, as ``(path, message)``."""
    checks = (
        _check_target,
        _check_model,
        _check_load,
        _check_traffic,
        _check_placement,
        _check_measurement,
        _check_matrix,
        _check_objective,
        _check_search,
    )
    return [problem for check in checks for problem in check(spec)]


def _check_target(spec: SweepSpec) -> Iterator[Problem]:
    target = spec.target
    if target.binary is not None and target.kind != "tfserving":
        yield "target.binary", "only for kind tfserving"
    if (target.hooks is None) != (target.kind != "command"):
        yield "target.hooks", "required for kind command, and only for it"
    if target.hooks is not None:
        yield from _check_hooks(target.hooks)
    if target.kind != "external":
        if target.endpoints:
            yield "target.endpoints", "only for kind external"
        return
    yield from _check_external(spec)


def _check_hooks(hooks: CommandHooks) -> Iterator[Problem]:
    for name in CommandHooks.model_fields:
        hook = getattr(hooks, name)
        for unknown in unknown_placeholders(hook.run) if hook else ():
            yield (
                f"target.hooks.{name}",
                f"unknown placeholder {{{{{unknown}}}}}; placeholders: {', '.join(PLACEHOLDERS)}",
            )


def _check_external(spec: SweepSpec) -> Iterator[Problem]:
    if not spec.target.endpoints:
        yield "target.endpoints", "kind external needs at least one endpoint"
    for i, endpoint in enumerate(spec.target.endpoints):
        for protocol in spec.protocols:
            if getattr(endpoint, protocol) is None:
                yield f"target.endpoints[{i}].{protocol}", f"required: protocol is {spec.protocol}"
    if spec.server != ServerSpec() or spec.matrix.include:
        yield "server", "kind external takes load axes only: the harness cannot reconfigure it"
    if spec.target.server_flags:
        yield "target.server_flags", "kind external: the harness does not start the server"


def _check_model(spec: SweepSpec) -> Iterator[Problem]:
    entries: list[tuple[str, ModelSpec]] = [(f"models[{i}]", m) for i, m in enumerate(spec.models)]
    for path, model in entries or [("model", spec.model)]:
        yield from _check_one_model(spec, path, model)
    if spec.models:
        yield from _check_hosted(spec)


def _check_one_model(spec: SweepSpec, path: str, model: ModelSpec) -> Iterator[Problem]:
    if spec.target.kind == "command":
        if model.builtin is not None and model.base_path is not None:
            yield path, "give at most one of builtin or base_path"
        elif not (model.name or model.builtin or model.base_path):
            yield f"{path}.name", "kind command needs the served model name"
    elif spec.target.kind == "external":
        if not (model.name or model.builtin):
            yield f"{path}.name", "kind external needs the served model name"
    elif (model.builtin is None) == (model.base_path is None):
        yield path, "give exactly one of builtin (a built-in model) or base_path"
    if model.builtin is not None:
        yield from _check_builtin(path, model)
    elif model.options:
        yield f"{path}.options", "only for a built-in model"


def _check_builtin(path: str, model: ModelSpec) -> Iterator[Problem]:
    if model.builtin not in model_zoo.MODEL_NAMES:
        yield (
            f"{path}.builtin",
            (
                f"unknown built-in model {model.builtin!r}; built-in models: "
                f"{', '.join(model_zoo.MODEL_NAMES)}"
            ),
        )
        return
    try:
        model.resolved_options()
    except ValueError as exc:
        yield f"{path}.options", str(exc)


# What every hosted model's requests share: the scenario draws them independently of the model.
_SHARED_REQUEST_FIELDS = ("signature", "rows_per_request", "length")


def _check_hosted(spec: SweepSpec) -> Iterator[Problem]:
    """Several models: distinct names, one request shape, and batching axes of their own
    only where the harness starts the servers."""
    if len(spec.models) < 2:
        yield "models", "hosts several models: give two or more (one model goes in model:)"
    if spec.target.kind == "command":
        yield "models", "not with target kind command: its hooks deploy one model ({{model}})"
    first, seen = spec.models[0], set()
    for i, model in enumerate(spec.models):
        if model.served_name in seen:
            yield f"models[{i}].name", f"{model.served_name!r} is served twice; give each a name"
        seen.add(model.served_name)
        for name in _SHARED_REQUEST_FIELDS:
            if getattr(model, name) != getattr(first, name):
                yield (
                    f"models[{i}].{name}",
                    f"must be the same for every model (models[0] has {getattr(first, name)!r})",
                )
        if model.payload is not None and spec.multi_model:
            yield f"models[{i}].payload", "only with one model (random data fits each model)"
        if model.batching is not None and spec.target.kind == "external":
            yield f"models[{i}].batching", "kind external: the harness cannot reconfigure it"


def _check_load(spec: SweepSpec) -> Iterator[Problem]:
    load = spec.load
    kinds = ("concurrency", "rate", "find_max_rate", "trace")
    given = [k for k in kinds if getattr(load, k) is not None]
    if len(given) != 1:
        yield (
            "load",
            (
                "give exactly one of concurrency (closed loop), rate (open loop), find_max_rate "
                "or trace (a replay)" + (f" (got {', '.join(given)})" if given else "")
            ),
        )
    for key in ("concurrency", "rate", "speed"):
        if getattr(load, key) == []:
            yield f"load.{key}", "must have at least 1 item(s)"
    if load.speed is not None and load.trace is None:
        yield "load.speed", "the replay speeds of load.trace: only with a trace"
    if load.processes == 0 and not load.workers:
        yield "load.processes", "0 only with load.workers (remote workers send the load)"
    search = load.find_max_rate
    if search and spec.confirm is not None:
        yield "confirm", "re-measures fixed points: not for load.find_max_rate"
    if search and not search.min_rps <= search.start_rps <= search.max_rps:
        yield (
            "load.find_max_rate",
            (
                f"needs min_rps <= start_rps <= max_rps (got {search.min_rps}, "
                f"{search.start_rps}, {search.max_rps})"
            ),
        )


def _check_traffic(spec: SweepSpec) -> Iterator[Problem]:
    load = spec.load
    legacy = load.arrival in ([POISSON], [ArrivalSpec("constant")])  # once ignored there
    if load.kind == "concurrency" and not legacy:
        yield (
            "load.arrival",
            "only for open loop (rate or find_max_rate): closed-loop users send when answered",
        )
    if load.kind == "trace" and load.arrival != [POISSON]:
        yield "load.arrival", "not with load.trace: the trace's times are the arrivals"
    largest = spec.model.rows_per_request.largest
    name = MAX_BATCH_SIZE.name
    sizes = [size for size in getattr(spec.server.batching, name) if size is not None]
    for model in spec.models:
        own = getattr(model.batching, name, None) or []
        sizes += [size for size in own if size is not None]
    sizes += [getattr(r, name) for r in spec.matrix.include if getattr(r, name) is not None]
    too_small = sorted({size for size in sizes if size < largest})
    if too_small:
        yield (
            "model.rows_per_request",
            (
                f"requests of up to {largest} rows are over {name} "
                f"{', '.join(map(str, too_small))}: the server refuses them"
            ),
        )


def _check_placement(spec: SweepSpec) -> Iterator[Problem]:
    placement = spec.placement
    given = [k for k in ("servers", "generator") if getattr(placement, k) is not None]
    external = not spec.target.starts_servers
    if placement.mode != "cpus":
        if given:
            yield f"placement.{given[0]}", f"CPU lists only with mode cpus (got {placement.mode})"
    elif external and placement.servers is not None:
        yield "placement.servers", f"kind {spec.target.kind}: the harness does not start the server"
    elif placement.generator is None or not (external or placement.servers is not None):
        needs = "the generator CPU list" if external else "both servers and generator CPU lists"
        yield "placement", f"mode cpus needs {needs}"


def _check_measurement(spec: SweepSpec) -> Iterator[Problem]:
    m = spec.measurement
    if m.max_windows < m.stable_windows:
        yield (
            "measurement.max_windows",
            (f"must be >= stable_windows ({m.stable_windows}) (got {m.max_windows})"),
        )


def _check_objective(spec: SweepSpec) -> Iterator[Problem]:
    objective = spec.recommend.objective
    given = [k for k in ("maximize", "minimize", "weights") if getattr(objective, k) is not None]
    if len(given) != 1:
        yield "recommend.objective", "give exactly one of maximize, minimize or weights"


def _check_search(spec: SweepSpec) -> Iterator[Problem]:
    search = spec.search
    if search.strategy == "grid":
        if search.max_points is not None or search.fraction is not None:
            yield "search", "a budget (max_points, fraction) is for strategy quick or bayesian"
        return
    if spec.load.find_max_rate is not None:
        yield "search.strategy", f"{search.strategy} walks fixed points: not for find_max_rate"
    if spec.repeats != 1:
        yield (
            "repeats",
            f"strategy {search.strategy} measures each point once (got {spec.repeats}); "
            "use confirm for repeated measurements of the best",
        )
    if spec.recommend.objective.weights is not None:
        yield (
            "recommend.objective",
            f"strategy {search.strategy} needs maximize or minimize (weights are relative to "
            "the best of all points, which a search never sees)",
        )


# Exclude-rule field -> the axis its value must come from.
def _axes(spec: SweepSpec) -> dict[str, list]:
    batching = spec.server.batching
    return {
        "enable_batching": spec.server.enable_batching,
        "replicas": spec.server.replicas,
        **{field.name: getattr(batching, field.name) for field in AXIS_FIELDS},
        "protocol": list(spec.protocols),
        "concurrency": spec.load.concurrency or [],
        "rate": spec.load.rate or [],
        "speed": list(spec.load.values) if spec.load.kind == "trace" else [],
        "arrival": list(spec.load.arrivals) if spec.load.kind == "rate" else [],
    }


def _check_matrix(spec: SweepSpec) -> Iterator[Problem]:
    """An exclude rule naming a value that is not on its axis matches nothing: a typo."""
    axes = _axes(spec)
    for i, rule in enumerate(spec.matrix.exclude):
        if not rule.model_fields_set:
            yield f"matrix.exclude[{i}]", "an empty rule would exclude every point"
        for key, value in rule.given().items():
            if value not in axes[key]:
                where = "load" if key in ("concurrency", "rate", "speed", "arrival") else "the spec"
                yield (
                    f"matrix.exclude[{i}].{key}",
                    (
                        f"{_axis_text(value)} is not a value of {key} in {where} "
                        f"({_axis_text(axes[key])})"
                    ),
                )


def _axis_text(value: Any) -> str:
    """An exclude value or axis as the spec writes it (arrivals as their mappings)."""
    if isinstance(value, list):
        return "[" + ", ".join(_axis_text(v) for v in value) + "]"
    if isinstance(value, ArrivalSpec):
        return repr(arrival_dict(value))
    return repr(value)


__all__ = [
    "BatchingAxes",
    "CommandHooks",
    "ConfirmSpec",
    "Endpoint",
    "ExcludeRule",
    "Hook",
    "HostedModel",
    "IncludeRule",
    "LoadSpec",
    "MatrixSpec",
    "MaxRateSpec",
    "MeasurementSpec",
    "ModelSpec",
    "Objective",
    "PlacementSpec",
    "RecommendSpec",
    "SearchSpec",
    "ServerSpec",
    "SweepSpec",
    "TargetSpec",
    "WorkersSpec",
    "cross_checks",
    "format_path",
    "load_preset",
    "load_spec",
    "parse_spec",
    "validate_spec",
    "with_placement",
]
