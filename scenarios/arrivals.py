"""Offered load: stages (steps and ramps), the plan each user follows, open-loop send times.

Pure: no Locust, no clocks. The Locust side asks a `Plan` for the rate and outstanding cap and
an `Arrivals` process (made by `make_arrivals` from an `ArrivalSpec`) for the gap to the next
intended send time; a `SendSchedule` shares one such sequence among a process's users.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

ARRIVALS = ("closed", "constant", "poisson", "gamma", "mmpp")
OPEN_ARRIVALS = ARRIVALS[1:]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class StageError(ValueError):
    """A --stages text that cannot be read."""


@dataclass(frozen=True)
class Stage:
    """One step of the load: how long, how many users, and (open loop) the total rate.

    With `rate_end_rps` the rate moves linearly from `rate_rps` to it over the stage (a ramp).
    """

    duration_s: float
    users: int
    rate_rps: float | None = None
    rate_end_rps: float | None = None

    def label(self) -> str:
        text = f"{self.duration_s:g}s {self.users} users"
        if self.rate_rps is not None:
            text += f" {self.rate_rps:g}"
            if self.rate_end_rps is not None:
                text += f"-{self.rate_end_rps:g}"
            text += "/s"
        return text


def parse_duration(text: str) -> float:
    """Seconds from `90`, `90s`, `500ms`, `2m`, `1h`."""
    match = _DURATION.match(text)
    if not match:
        raise StageError(f"cannot read duration {text!r} (e.g. 30s, 500ms, 2m)")
    return float(match.group(1)) * _SECONDS[match.group(2) or "s"]


def parse_stages(text: str) -> tuple[Stage, ...]:
    """Stages from `DURATION:USERS[:RATE[-RATE_END]]`, comma-separated.

    `30s:10,30s:20` steps a closed loop from 10 to 20 users; `20s:8:100,20s:8:100-400` runs
    100 requests/s, then ramps the rate to 400/s, with 8 users.
    """
    stages = tuple(_parse_stage(part) for part in text.split(",") if part.strip())
    if not stages:
        raise StageError("--stages is empty")
    with_rate = {stage.rate_rps is not None for stage in stages}
    if len(with_rate) > 1:
        raise StageError("give a rate in every stage (open loop) or in none (closed loop)")
    return stages


def _parse_stage(part: str) -> Stage:
    fields = part.strip().split(":")
    if len(fields) not in (2, 3):
        raise StageError(f"stage {part.strip()!r}: use DURATION:USERS[:RATE[-RATE_END]]")
    duration = parse_duration(fields[0])
    try:
        users = int(fields[1])
        rates = [float(value) for value in fields[2].split("-")] if len(fields) == 3 else []
    except ValueError:
        raise StageError(f"stage {part.strip()!r}: users and rates must be numbers") from None
    if duration <= 0 or users < 1 or len(rates) > 2 or any(rate < 0 for rate in rates):
        raise StageError(f"stage {part.strip()!r}: needs duration > 0, users >= 1 and rates >= 0")
    rate = rates[0] if rates else None
    rate_end = rates[1] if len(rates) == 2 else None
    return Stage(duration, users, rate, rate_end)


def stage_index_at(stages: tuple[Stage, ...], elapsed_s: float) -> int | None:
    """The index of the stage running `elapsed_s` after the start; None once all have ended."""
    end = 0.0
    for index, stage in enumerate(stages):
        end += stage.duration_s
        if elapsed_s < end:
            return index
    return None


def rate_at(
    rate: float, rate_end: float | None, duration_s: float | None, elapsed_s: float
) -> float:
    """The rate `elapsed_s` into a stage: constant, or linear from `rate` to `rate_end`."""
    if rate_end is None or not duration_s:
        return rate
    fraction = min(max(elapsed_s / duration_s, 0.0), 1.0)
    return rate + (rate_end - rate) * fraction


@dataclass(frozen=True)
class Plan:
    """What every load-generating process follows now; the master sends it to workers.

    `rate_rps` is the total over all `users` (None: closed loop); `version` grows with each
    change; `stage` indexes the figures the samples go to; `staged` says whether the run
    follows --stages (then Locust's statistics show one row per stage).
    """

    version: int
    stage: int
    label: str
    staged: bool
    users: int
    rate_rps: float | None
    rate_end_rps: float | None
    duration_s: float | None
    warmup_s: float
    max_outstanding: int
    processes: int = 1  # load-generating processes (a trace is dealt out among them)
    # A --warmup-stages stage: warm-up however long it really lasts (a late stage change
    # must not count its last requests as measured).
    warmup_stage: bool = False

    def user_rate(self, elapsed_s: float) -> float:
        """One user's share of the rate, `elapsed_s` into the stage (0 in a closed loop)."""
        if self.rate_rps is None:
            return 0.0
        total = rate_at(self.rate_rps, self.rate_end_rps, self.duration_s, elapsed_s)
        return total / max(self.users, 1)

    def user_cap(self) -> int:
        """One user's share of the outstanding-request cap (at least 1)."""
        return max(1, math.ceil(self.max_outstanding / max(self.users, 1)))

    def same_load(self, other: Plan | None) -> bool:
        """True when `other` asks for the same load (ignoring the version)."""
        return other is not None and asdict(self) | {"version": 0} == asdict(other) | {"version": 0}

    def to_message(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_message(cls, data: dict[str, Any]) -> Plan:
        return cls(**data)


# Draws come in blocks of this many stratified quantiles (see `StratifiedDraws`): gaps, and
# mmpp dwell times (fewer: a short run sees tens of bursts, and only whole blocks are even).
STRATA = 1000
DWELL_STRATA = 10


@dataclass(frozen=True)
class ArrivalSpec:
    """How open-loop arrivals are spaced, at whatever mean rate the plan asks for.

    `constant`: evenly; `poisson`: exponential gaps; `gamma`: gamma gaps with coefficient of
    variation `cv` (1 is Poisson, above 1 bursty, below 1 smoother); `mmpp`: a two-state
    Markov-modulated Poisson process that stays on average `base_dwell_s` in its base state
    and `burst_dwell_s` in its burst state, where the rate is `burst_ratio` times the base
    rate. The mean rate over both states is the plan's rate.
    """

    kind: str = "poisson"
    cv: float = 1.0
    burst_ratio: float = 10.0
    base_dwell_s: float = 1.0
    burst_dwell_s: float = 0.2

    def __post_init__(self) -> None:
        if self.kind not in OPEN_ARRIVALS:
            kinds = ", ".join(OPEN_ARRIVALS)
            raise ValueError(f"open-loop arrivals are {kinds}, not {self.kind!r}")
        if self.cv <= 0 or self.burst_ratio < 1:
            raise ValueError("needs cv > 0 and burst_ratio >= 1")
        if self.base_dwell_s <= 0 or self.burst_dwell_s <= 0:
            raise ValueError("mmpp dwell times must be > 0")

    def state_factors(self) -> tuple[float, float]:
        """(base, burst) rate as multiples of the mean rate (mmpp)."""
        base = (self.base_dwell_s + self.burst_dwell_s) / (
            self.base_dwell_s + self.burst_ratio * self.burst_dwell_s
        )
        return base, base * self.burst_ratio

    def describe(self, mean_rate: float | None) -> dict[str, Any]:
        """JSON-ready: the process and its parameters (mmpp: the two rates at `mean_rate`)."""
        if self.kind == "gamma":
            return {"cv": self.cv}
        if self.kind != "mmpp":
            return {}
        base, burst = self.state_factors()
        rates = (
            {}
            if mean_rate is None
            else {
                "base_rate_rps": round(base * mean_rate, 6),
                "burst_rate_rps": round(burst * mean_rate, 6),
            }
        )
        return {
            "burst_ratio": self.burst_ratio,
            "base_dwell_s": self.base_dwell_s,
            "burst_dwell_s": self.burst_dwell_s,
            **rates,
        }


class Arrivals(Protocol):
    """Gaps between intended send times of one stream at a (possibly changing) mean rate."""

    def first_gap(self, rate: float) -> float: ...

    def gap(self, rate: float) -> float: ...


class StratifiedDraws:
    """Draws of a distribution by its inverse CDF, `STRATA` at a time, one per quantile stratum.

    Each block takes one uniform from each of the strata [i/N, (i+1)/N), maps it through the
    inverse CDF and shuffles the block. Every draw has exactly the distribution's law, but a
    block covers its quantiles evenly, so the mean and spread of a short run match the asked
    ones instead of wandering by sampling noise (10,000 independent gamma gaps of CV 4 have a
    mean that is off by 4% in one run of three).
    """

    def __init__(
        self,
        ppf: Callable[[np.ndarray], np.ndarray],
        rng: np.random.Generator,
        strata: int = STRATA,
    ) -> None:
        self.ppf = ppf
        self.rng = rng
        self.strata = strata
        self.block: list[float] = []

    def draw(self) -> float:
        if not self.block:
            count = self.strata
            strata = (np.arange(count) + self.rng.random(count)) / count
            self.block = self.ppf(self.rng.permutation(strata)).tolist()
        return self.block.pop()


def exponential_ppf(quantiles: np.ndarray) -> np.ndarray:
    """Inverse CDF of the exponential distribution of mean 1."""
    return -np.log1p(-quantiles)


def gamma_ppf(cv: float) -> Callable[[np.ndarray], np.ndarray]:
    """Inverse CDF of the gamma distribution of mean 1 and coefficient of variation `cv`."""
    from scipy.special import gammaincinv  # imported here: only gamma arrivals need scipy

    shape = 1.0 / (cv * cv)
    return lambda quantiles: gammaincinv(shape, quantiles) / shape


class ConstantArrivals:
    """Evenly spaced, after a random phase (so streams started together are not in step)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def first_gap(self, rate: float) -> float:
        return math.inf if rate <= 0 else float(self.rng.random()) / rate

    def gap(self, rate: float) -> float:
        return math.inf if rate <= 0 else 1.0 / rate


class RenewalArrivals:
    """Independent gaps of mean 1/rate: exponential (Poisson) or gamma; the first gap is a
    random fraction of a gap."""

    def __init__(self, draws: StratifiedDraws) -> None:
        self.draws = draws

    def first_gap(self, rate: float) -> float:
        if rate <= 0:
            return math.inf
        return float(self.draws.rng.random()) * self.draws.draw() / rate

    def gap(self, rate: float) -> float:
        return math.inf if rate <= 0 else self.draws.draw() / rate


class MmppArrivals:
    """A two-state Markov-modulated Poisson process.

    The state timeline (exponential dwell times, stratified like the gaps, so the time spent
    in bursts is close to its share even in a short run) comes from its own generator, so
    processes seeded alike burst together; the arrivals within a state come from `arrivals`.
    Exact sampling: a Poisson gap that would cross the state's end is discarded there
    (memoryless) and drawn again at the new state's rate.
    """

    def __init__(self, spec: ArrivalSpec, states: np.random.Generator, arrivals: StratifiedDraws):
        self.factors = spec.state_factors()
        self.dwells = (spec.base_dwell_s, spec.burst_dwell_s)
        self.dwell_draws = (
            StratifiedDraws(exponential_ppf, states, DWELL_STRATA),
            StratifiedDraws(exponential_ppf, states, DWELL_STRATA),
        )
        self.arrivals = arrivals
        in_burst = states.random() < spec.burst_dwell_s / (spec.base_dwell_s + spec.burst_dwell_s)
        self.state = int(in_burst)
        self.left = self._dwell()

    def _dwell(self) -> float:
        return self.dwell_draws[self.state].draw() * self.dwells[self.state]

    def first_gap(self, rate: float) -> float:
        return self.gap(rate)

    def gap(self, rate: float) -> float:
        if rate <= 0:
            return math.inf
        waited = 0.0
        while True:
            step = self.arrivals.draw() / (rate * self.factors[self.state])
            if step <= self.left:
                self.left -= step
                return waited + step
            waited += self.left
            self.state = 1 - self.state
            self.left = self._dwell()


def mmpp_gap_law(
    spec: ArrivalSpec, rate: float
) -> tuple[float, float, Callable[[np.ndarray], np.ndarray]]:
    """Mean, CV and CDF of the gaps of a stationary mmpp at mean `rate` (for checks).

    The gap law is phase-type: alpha (the state at an arrival) and D0 = Q - Lambda, with
    P(gap > t) = alpha exp(D0 t) 1.
    """
    from scipy.linalg import expm

    base, burst = spec.state_factors()
    rates = np.diag([base * rate, burst * rate])
    leave = (1 / spec.base_dwell_s, 1 / spec.burst_dwell_s)
    d0 = np.array([[-leave[0], leave[0]], [leave[1], -leave[1]]]) - rates
    share = np.array([spec.base_dwell_s, spec.burst_dwell_s])
    alpha = share @ rates / (share @ rates).sum()
    inverse, ones = np.linalg.inv(-d0), np.ones(2)
    mean = float(alpha @ inverse @ ones)
    second = float(2 * alpha @ inverse @ inverse @ ones)

    def cdf(times: np.ndarray) -> np.ndarray:
        return np.array([1 - alpha @ expm(d0 * t) @ ones for t in np.atleast_1d(times)])

    return mean, (second - mean * mean) ** 0.5 / mean, cdf


def make_arrivals(spec: ArrivalSpec, seed: str, shared_seed: str = "") -> Arrivals:
    """The arrival process of `spec`, seeded by `seed` (its own draws) and `shared_seed` (what
    all of a run's processes share: the mmpp state timeline)."""
    rng = np.random.default_rng(_seed_words(seed))
    if spec.kind == "constant":
        return ConstantArrivals(rng)
    if spec.kind == "poisson" or (spec.kind == "gamma" and spec.cv == 1.0):
        return RenewalArrivals(StratifiedDraws(exponential_ppf, rng))
    if spec.kind == "gamma":
        return RenewalArrivals(StratifiedDraws(gamma_ppf(spec.cv), rng))
    states = np.random.default_rng(_seed_words(shared_seed or seed))
    return MmppArrivals(spec, states, StratifiedDraws(exponential_ppf, rng))


def _seed_words(text: str) -> list[int]:
    return list(text.encode()) or [0]


class SendSchedule:
    """One process's intended send times, shared by its users: each user claims the next.

    Sharing one sequence keeps the process's arrivals exactly the asked process (independent
    per-user gamma streams would add up to something close to Poisson). `restart` follows a
    new plan: a time claimed under the old rate that lies beyond a fresh first gap is replaced.
    """

    def __init__(self, arrivals: Arrivals) -> None:
        self.arrivals = arrivals
        self.next_at = math.inf
        self.version = -1

    def follow(self, version: int, now: float, rate: float) -> None:
        """Take plan `version` into account (once per version)."""
        if version != self.version:
            self.version = version
            self.next_at = min(self.next_at, now + self.arrivals.first_gap(rate))

    def claim(self, rate: float) -> float:
        """The next intended send time; the one after is spaced at `rate`."""
        at = self.next_at
        if math.isfinite(at):
            self.next_at = at + self.arrivals.gap(rate)
        return at
