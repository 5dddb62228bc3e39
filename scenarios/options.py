"""The scenarios' options: declared once, added to Locust's parser, read back typed and checked.

They are Locust custom arguments, so each also works from a locust.conf (`model-name = mlp`),
from an environment variable (`LOCUST_MODEL_NAME=mlp`) and from the web UI's start form;
values from the web UI arrive as strings, so `read_options` converts every value itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from scenarios.arrivals import ARRIVALS, ArrivalSpec, Stage, StageError, parse_stages
from scenarios.mixes import Distribution, MixError, RequestMix, parse_distribution
from scenarios.payloads import PayloadSpec
from scenarios.trace import Trace, TraceError, read_trace

REST_FORMATS = ("row", "columnar")


class OptionError(ValueError):
    """An option value that cannot be used; the message names the option."""


# (flag, default, help); each becomes --flag, dest flag_with_underscores, env LOCUST_FLAG.
OPTIONS: tuple[tuple[str, Any, str], ...] = (
    (
        "model-name",
        "default",
        "TF Serving model name, or a traffic mix over several: mlp:0.7,transformer:0.3",
    ),
    ("signature", "serving_default", "signature to call"),
    ("model-version", "", "model version to call (default: the server's choice)"),
    ("version-label", "", "version label to call (instead of --model-version)"),
    (
        "version-split",
        "",
        "A/B of versions: traffic split over version labels or numbers, e.g. "
        "stable=0.9,canary=0.1 or 1=0.5,2=0.5 (instead of --model-version/--version-label)",
    ),
    (
        "rows",
        "1",
        "rows per request (dimension 0) of a random payload: 4, a range 1-16, or weights "
        "1:0.7,4:0.2,16:0.1",
    ),
    (
        "fill-dim",
        "8",
        "size of the other -1 dimensions of a random payload (e.g. sequence length): 32, a "
        "range 8-64, or weights 8:0.5,128:0.5",
    ),
    ("int-high", 100, "random integer inputs are drawn from [0, int-high)"),
    ("seed", 0, "seed of the random payload and of the arrival times"),
    (
        "payload",
        "",
        "payload file: .npy (one input), .npz (one array per input) or .json "
        "(a TF Serving REST body); default: random data shaped by the model's metadata",
    ),
    ("rest-format", "row", "REST body format: row (instances) or columnar (inputs)"),
    ("targets", "", "comma-separated replicas to spread requests over (default: --host)"),
    ("tls-ca", "", "PEM file of root certificates for grpcs:// or https:// targets"),
    ("token", "", "bearer token sent as the authorization header/metadata"),
    ("request-timeout", 30.0, "seconds before a request is abandoned as DEADLINE_EXCEEDED"),
    (
        "arrival",
        "closed",
        "closed (users wait for answers), or open loop: constant, poisson, gamma or mmpp",
    ),
    ("arrival-cv", 1.0, "gamma arrivals: coefficient of variation of the gaps (1 = Poisson)"),
    ("burst-ratio", 10.0, "mmpp arrivals: the burst state's rate over the base state's"),
    ("base-dwell", 1.0, "mmpp arrivals: mean seconds in the base state"),
    ("burst-dwell", 0.2, "mmpp arrivals: mean seconds in the burst state"),
    (
        "trace",
        "",
        "replay this JSON-lines trace open-loop (one request per line: t, and optionally "
        "model, rows, length, payload)",
    ),
    ("trace-speed", 1.0, "replay the trace this many times faster"),
    ("trace-loop", "false", "true: start the trace again when it ends"),
    (
        "max-batch-size",
        0,
        "refuse a trace or mix with more rows per request than this (the server's "
        "max_batch_size; 0: not checked)",
    ),
    ("rate", 0.0, "open loop: total requests per second over all users and processes"),
    (
        "max-outstanding",
        1000,
        "open loop: requests in flight at most (over all users); "
        "arrivals over it are counted as dropped",
    ),
    ("late-tolerance-ms", 10.0, "open loop: a send later than this counts as late"),
    ("think-time", 0.0, "closed loop: seconds each user waits between answer and next request"),
    (
        "stages",
        "",
        "DURATION:USERS[:RATE[-RATE_END]],... e.g. 30s:10,30s:20 or "
        "20s:8:100,20s:8:100-400 (run with the StagesShape load shape)",
    ),
    ("warmup", 0.0, "seconds at the start of each stage left out of the figures"),
    (
        "warmup-stages",
        0,
        "the first N --stages are warm-up as a whole: left out of the figures, by_kind too",
    ),
    ("result-file", "", "write the run's result JSON here (master or single process)"),
    (
        "raw-latency-dir",
        "",
        "also write every measured latency (µs) and every intended and actual send time per "
        "process here (debug)",
    ),
    (
        "scrape-urls",
        "",
        "comma-separated Prometheus URLs read at every stage boundary and at the end; the "
        "texts go into the result file, so server figures cover exactly each stage",
    ),
    (
        "grpc-channels",
        1,
        "gRPC channels per target in each process, shared by its users (0: one channel per user)",
    ),
)
SECRET = {"token"}


def add_arguments(parser: Any, *, locust: bool = True) -> None:
    """Add every option to `parser` (Locust's, or a plain argparse parser with locust=False)."""
    for flag, default, help_text in OPTIONS:
        extra: dict[str, Any] = {}
        if locust:
            extra = {"env_var": "LOCUST_" + flag.upper().replace("-", "_")}
            extra["is_secret"] = flag in SECRET
        parser.add_argument(f"--{flag}", default=default, help=help_text, **extra)


@dataclass(frozen=True)
class Target:
    """One server to send to: `grpc` address (host:port) or REST base URL, and whether TLS."""

    address: str
    tls: bool


@dataclass(frozen=True)
class ScenarioOptions:
    """All options, typed and checked."""

    targets: tuple[str, ...]
    model_name: str
    signature: str
    model_version: int | None
    version_label: str | None
    payload: PayloadSpec
    rest_format: str
    tls_ca: str | None
    token: str | None
    request_timeout_s: float
    arrival: str
    rate_rps: float
    max_outstanding: int
    late_tolerance_s: float
    think_time_s: float
    stages: tuple[Stage, ...]
    warmup_s: float
    warmup_stages: int
    result_file: str | None
    raw_latency_dir: str | None
    grpc_channels: int
    scrape_urls: tuple[str, ...] = ()
    arrival_spec: ArrivalSpec | None = None  # None: closed loop, or a trace
    mix: RequestMix | None = None  # None: model_name, payload.rows and payload.fill_dim
    trace: Trace | None = None
    trace_speed: float = 1.0
    trace_loop: bool = False
    max_batch_size: int = 0
    version_split: Distribution | None = None  # arms: labels or version numbers, weighted

    @property
    def open_loop(self) -> bool:
        return self.arrival != "closed"

    def request_mix(self) -> RequestMix:
        """The mix each request is drawn from (one kind when nothing varies)."""
        if self.mix is not None:
            return self.mix
        return RequestMix(
            Distribution.fixed(self.model_name),
            Distribution.fixed(self.payload.rows),
            Distribution.fixed(self.payload.fill_dim),
        )


def _value(namespace: Any, flag: str) -> Any:
    default = next(default for name, default, _ in OPTIONS if name == flag)
    value = getattr(namespace, flag.replace("-", "_"), default)
    return default if value is None else value


def _typed(namespace: Any, flag: str, kind: Callable[[Any], Any], minimum: float | None) -> Any:
    raw = _value(namespace, flag)
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise OptionError(f"--{flag} must be {kind.__name__}, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise OptionError(f"--{flag} must be >= {minimum:g}, got {value!r}")
    return value


def _text(namespace: Any, flag: str) -> str | None:
    return str(_value(namespace, flag)).strip() or None


def _choice(namespace: Any, flag: str, choices: tuple[str, ...]) -> str:
    value = str(_value(namespace, flag)).strip()
    if value not in choices:
        raise OptionError(f"--{flag} must be one of {', '.join(choices)}, got {value!r}")
    return value


def read_options(namespace: Any, host: str | None) -> ScenarioOptions:
    """Typed, checked options from Locust's parsed options and host; OptionError if wrong."""
    version_text = _text(namespace, "model-version")
    mix = _mix(namespace)
    trace = _trace(_text(namespace, "trace"))
    options = ScenarioOptions(
        targets=_targets(_text(namespace, "targets"), host),
        model_name=mix.models.values[0],
        signature=_text(namespace, "signature") or "serving_default",
        model_version=_version(version_text),
        version_label=_text(namespace, "version-label"),
        payload=PayloadSpec(
            file=_text(namespace, "payload"),
            rows=int(mix.rows.values[0]),
            fill_dim=int(mix.lengths.values[0]),
            seed=_typed(namespace, "seed", int, 0),
            int_high=_typed(namespace, "int-high", int, 1),
        ),
        rest_format=_choice(namespace, "rest-format", REST_FORMATS),
        tls_ca=_text(namespace, "tls-ca"),
        token=_text(namespace, "token"),
        request_timeout_s=_typed(namespace, "request-timeout", float, 0.001),
        arrival="trace" if trace else _choice(namespace, "arrival", ARRIVALS),
        rate_rps=_typed(namespace, "rate", float, 0),
        max_outstanding=_typed(namespace, "max-outstanding", int, 1),
        late_tolerance_s=_typed(namespace, "late-tolerance-ms", float, 0) / 1000.0,
        think_time_s=_typed(namespace, "think-time", float, 0),
        stages=_stages(_text(namespace, "stages")),
        warmup_s=_typed(namespace, "warmup", float, 0),
        warmup_stages=_typed(namespace, "warmup-stages", int, 0),
        result_file=_text(namespace, "result-file"),
        raw_latency_dir=_text(namespace, "raw-latency-dir"),
        grpc_channels=_typed(namespace, "grpc-channels", int, 0),
        scrape_urls=_targets(_text(namespace, "scrape-urls"), None),
        arrival_spec=_arrival_spec(namespace),
        mix=None if all(d.is_fixed() for d in (mix.models, mix.rows, mix.lengths)) else mix,
        trace=trace,
        trace_speed=_typed(namespace, "trace-speed", float, 0.001),
        trace_loop=_flag(namespace, "trace-loop"),
        max_batch_size=_typed(namespace, "max-batch-size", int, 0),
        version_split=parse_version_split(_text(namespace, "version-split")),
    )
    _check_load(options, _choice(namespace, "arrival", ARRIVALS))
    return options


def _mix(namespace: Any) -> RequestMix:
    try:
        return RequestMix(
            parse_distribution(
                _text(namespace, "model-name") or "default", numeric=False, what="--model-name"
            ),
            parse_distribution(str(_value(namespace, "rows")), what="--rows"),
            parse_distribution(str(_value(namespace, "fill-dim")), what="--fill-dim"),
        )
    except MixError as exc:
        raise OptionError(str(exc)) from None


def parse_version_split(text: str | None) -> Distribution | None:
    """`stable=0.9,canary=0.1`: arms (labels, or numbers for versions) with weights."""
    if not text:
        return None
    if any("=" not in part for part in text.split(",") if part.strip()):
        raise OptionError(
            f"--version-split: use ARM=WEIGHT,ARM=WEIGHT with labels or version numbers "
            f"(e.g. stable=0.9,canary=0.1), got {text!r}"
        )
    try:
        return parse_distribution(text.replace("=", ":"), numeric=False, what="--version-split")
    except MixError as exc:
        raise OptionError(str(exc)) from None


def arm_options(options: ScenarioOptions, arm: str) -> ScenarioOptions:
    """The options a request of one version-split arm is sent with: a number is a version,
    anything else a label; "" (no split) leaves the options as they are."""
    if not arm:
        return options
    if arm.isdigit():
        return replace(options, model_version=int(arm), version_label=None)
    return replace(options, model_version=None, version_label=arm)


def _trace(path: str | None) -> Trace | None:
    if not path:
        return None
    try:
        return read_trace(path)
    except TraceError as exc:
        raise OptionError(f"--trace: {exc}") from None


def _arrival_spec(namespace: Any) -> ArrivalSpec | None:
    kind = _choice(namespace, "arrival", ARRIVALS)
    if kind == "closed":
        return None
    try:
        return ArrivalSpec(
            kind,
            cv=_typed(namespace, "arrival-cv", float, None),
            burst_ratio=_typed(namespace, "burst-ratio", float, None),
            base_dwell_s=_typed(namespace, "base-dwell", float, None),
            burst_dwell_s=_typed(namespace, "burst-dwell", float, None),
        )
    except ValueError as exc:
        raise OptionError(
            f"--arrival {kind}: {exc} (--arrival-cv, --burst-ratio, --base-dwell, --burst-dwell)"
        ) from None


def _flag(namespace: Any, flag: str) -> bool:
    value = str(_value(namespace, flag)).strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise OptionError(f"--{flag} must be true or false, got {value!r}")
    return value in ("true", "1", "yes")


def _version(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        version = int(text)
    except ValueError:
        raise OptionError(f"--model-version must be an integer, got {text!r}") from None
    if version < 0:
        raise OptionError(f"--model-version must be >= 0, got {version}")
    return version


def _targets(text: str | None, host: str | None) -> tuple[str, ...]:
    source = text or host or ""
    return tuple(part.strip().rstrip("/") for part in source.split(",") if part.strip())


def _stages(text: str | None) -> tuple[Stage, ...]:
    if not text:
        return ()
    try:
        return parse_stages(text)
    except StageError as exc:
        raise OptionError(f"--stages: {exc}") from None


def _check_load(options: ScenarioOptions, arrival: str) -> None:
    if options.model_version is not None and options.version_label:
        raise OptionError("give --model-version or --version-label, not both")
    if options.version_split is not None and (
        options.model_version is not None or options.version_label
    ):
        raise OptionError(
            "--version-split names the versions: leave out --model-version and --version-label"
        )
    if options.trace is not None:
        _check_trace(options, arrival)
        return
    rows = max(int(value) for value in options.request_mix().rows.values)
    if options.max_batch_size and rows > options.max_batch_size:
        raise OptionError(
            f"--rows: {rows} rows per request is over --max-batch-size {options.max_batch_size}"
        )
    stage_rates = bool(options.stages) and options.stages[0].rate_rps is not None
    if options.open_loop and options.stages and not stage_rates:
        raise OptionError("open-loop --stages need a rate in each stage (DURATION:USERS:RATE)")
    if not options.open_loop and stage_rates:
        raise OptionError("--stages give rates: use --arrival constant or poisson")
    if options.open_loop and not options.stages and options.rate_rps <= 0:
        raise OptionError(f"--arrival {options.arrival} needs --rate > 0 (requests per second)")


def _check_trace(options: ScenarioOptions, arrival: str) -> None:
    assert options.trace is not None
    if arrival != "closed":
        raise OptionError("--trace sets the arrivals itself: leave out --arrival")
    if any(stage.rate_rps is not None for stage in options.stages):
        raise OptionError(
            "--trace sets the rate itself: --stages with a trace only split the replay into "
            "measured windows (DURATION:USERS, no rates)"
        )
    models = set(options.request_mix().models.values) | options.trace.models()
    if len(models) > 1 and options.model_version is not None:
        raise OptionError("--model-version cannot apply to several models of a trace")
    try:
        options.trace.check(None, options.max_batch_size or None)
    except TraceError as exc:
        raise OptionError(f"--trace: {exc}") from None


def grpc_target(text: str, tls_ca: str | None) -> Target:
    """`grpc://h:p`, `grpcs://h:p` or `h:p` as a gRPC address; TLS for grpcs or with a CA."""
    parts = urlsplit(text if "://" in text else f"grpc://{text}")
    if parts.scheme not in ("grpc", "grpcs") or not parts.netloc:
        raise OptionError(f"gRPC target {text!r}: use grpc://HOST:PORT or grpcs://HOST:PORT")
    return Target(parts.netloc, parts.scheme == "grpcs" or bool(tls_ca))


def rest_target(text: str) -> Target:
    """`http://h:p` or `https://h:p` (scheme optional: http) as a REST base URL."""
    parts = urlsplit(text if "://" in text else f"http://{text}")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise OptionError(f"REST target {text!r}: use http://HOST:PORT or https://HOST:PORT")
    return Target(
        f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}", parts.scheme == "https"
    )
