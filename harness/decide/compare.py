"""The regression gate: compare two runs (or a run against a baseline file), point by point.

Points are matched by key without the repeat suffix, so the repeats of a configuration at a
load are pooled on each side. For each tracked metric the figure compared is the mean over
repeats of the mean over the windows the stability verdict used. Its noise comes from a
two-level bootstrap — resample the repeats, then the windows within each — on both sides,
giving a 95% confidence interval for the relative change. A change is a regression only when
even the favourable end of that interval is worse than the metric's threshold: larger than
the threshold and larger than the noise. The bootstrap is seeded per point and metric, so the
same inputs always give the same verdict.

A point that failed in CURRENT is a regression; a point on one side only is reported, not a
crash. Outputs: ``compare.json`` (the data the report's comparison section renders),
``compare.md`` (for a CI job summary) and ``compare-junit.xml`` (one test case per point and
metric). The baseline file (``batchbench ci --update-baseline``) keeps, per point key, the
figures and the used windows' samples — everything compare needs, without histograms.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from xml.etree import ElementTree as ET

import numpy as np

from harness.decide.stats import (
    CONFIDENCE,
    DRAWS,
    SEED,
    Change,
    bootstrap_change,
    finite_number,
    paired_change,
    run_spread,
    seed_for,
    with_run_noise,
)
from harness.errors import UserError
from harness.metrics import METRICS, metric
from harness.plan.points import without_repeat
from harness.store.layout import COMPARE_FILE
from harness.store.results import PointResult, read_json, timestamp, write_atomically, write_json
from harness.store.run_folder import load_run
from harness.store.shapes import BaselineFile, checked

BASELINE_KIND = "batchbench-baseline"
MARKDOWN_FILE, JUNIT_FILE = "compare.md", "compare-junit.xml"
KEEP_RUNS = 3  # runs a stored baseline keeps (--keep-runs)
DEFAULT_THRESHOLDS = {"throughput_rps": 0.05, "latency_p99_ms": 0.10}
# Environment fields that make two runs incomparable when they differ.
ENVIRONMENT_KEYS = ("cpu_model", "cpu_count", "cpus_usable", "gpus")

Verdict = Literal[
    "ok", "regression", "improvement", "undefined", "failed_in_current", "failed_in_base"
]
PointStatus = Literal[
    "ok", "regression", "missing_in_current", "new_in_current", "failed_in_base", "unstable"
]


# --- what each side holds ------------------------------------------------------------------------


@dataclass(frozen=True)
class PointSamples:
    """One point as compare sees it: status, figures and the used windows' values per metric."""

    key: str
    group: str  # the key without its repeat suffix
    status: str
    stable: bool
    valid: bool
    reason: str | None
    metrics: dict[str, float | None]
    windows: dict[str, list[float]]
    run: int = 0  # in a baseline of several runs: 0 the newest, 1 the one before, ...

    def samples(self, metric_id: str) -> list[float]:
        """The used windows' values; the point's figure alone when no window has one."""
        values = [v for v in self.windows.get(metric_id, []) if finite_number(v)]
        figure = self.metrics.get(metric_id)
        return values or ([figure] if finite_number(figure) else [])

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "stable": self.stable,
            "valid": self.valid,
            "reason": self.reason,
            "metrics": self.metrics,
            "windows": self.windows,
        }


@dataclass
class Side:
    """BASE or CURRENT: where it came from and its points."""

    label: str
    kind: Literal["run", "baseline"]
    points: list[PointSamples]
    run_id: str = ""
    environment: dict[str, Any] = field(default_factory=dict)

    def groups(self) -> dict[str, list[PointSamples]]:
        out: dict[str, list[PointSamples]] = {}
        for point in self.points:
            out.setdefault(point.group, []).append(point)
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "path": self.label,
            "kind": self.kind,
            "run_id": self.run_id,
            "runs": self.runs(),
        }

    def runs(self) -> int:
        """How many runs the side holds (a baseline keeps the last K)."""
        return 1 + max((p.run for p in self.points), default=0)

    def run_noise(self, group: str, metric_id: str) -> float | None:
        """The relative spread of this point's figure between the side's runs (None with
        one run): the noise a single new run's own repeats and windows cannot show."""
        members = [p for p in self.points if p.group == group and p.status == "ok"]
        runs = [
            [s for p in members if p.run == r and (s := p.samples(metric_id))]
            for r in range(self.runs())
        ]
        return run_spread([r for r in runs if r])


def samples_from_result(result: PointResult) -> PointSamples:
    """A stored point reduced to what compare needs."""
    used_indices = set((result.stability or {}).get("windows_used") or [])
    windows: dict[str, list[float]] = {}
    for window in result.windows:
        used = window.get("used", window.get("index") in used_indices)
        if not used:
            continue
        for metric_id, value in (window.get("metrics") or {}).items():
            if metric_id in METRICS and finite_number(value):
                windows.setdefault(metric_id, []).append(value)
    return PointSamples(
        key=result.key,
        group=result.point.group_key,
        status=result.status,
        stable=result.stable,
        valid=result.valid,
        reason=result.reason,
        metrics={k: v for k, v in result.metrics.items() if k in METRICS},
        windows=windows,
    )


def load_side(path: Path | str) -> Side:
    """A run folder, or a baseline file written by :func:`write_baseline`."""
    path = Path(path)
    if path.is_dir():
        run = load_run(path)
        points = [samples_from_result(r) for r in run.results]
        return Side(str(path), "run", points, run.run_id, run.environment)
    if not path.exists():
        raise UserError(f"{path} does not exist (expected a run folder or a baseline JSON file)")
    data = read_json(path)
    if data.get("kind") != BASELINE_KIND:
        raise UserError(f"{path} is not a batchbench baseline file (kind is not {BASELINE_KIND!r})")
    data = checked(BaselineFile, data, path)
    runs = [data["points"], *(old["points"] for old in data.get("history") or [])]
    points = [
        _samples_from_baseline(key, value, run)
        for run, found in enumerate(runs)
        for key, value in found.items()
    ]
    source = data.get("source") or {}
    return Side(
        str(path), "baseline", points, source.get("run_id", ""), source.get("environment") or {}
    )


def _samples_from_baseline(key: str, value: Mapping[str, Any], run: int = 0) -> PointSamples:
    return PointSamples(
        key=key,
        group=without_repeat(key),
        status=value["status"],
        stable=bool(value.get("stable", True)),
        valid=bool(value.get("valid", True)),
        reason=value.get("reason"),
        metrics=dict(value.get("metrics") or {}),
        windows={k: list(v) for k, v in (value.get("windows") or {}).items()},
        run=run,
    )


def baseline_data(run_dir: Path | str) -> dict[str, Any]:
    """The baseline file's content for a run folder (every point, by key), one run only."""
    side = load_side(Path(run_dir))
    if side.kind != "run":
        raise UserError(f"{run_dir} is not a run folder")
    if not side.points:
        raise UserError(f"{run_dir} holds no point results: nothing to keep as a baseline")
    return {
        "kind": BASELINE_KIND,
        "created_at": timestamp(),
        "source": {"run_id": side.run_id, "environment": side.environment},
        "points": {p.key: p.as_dict() for p in side.points},
    }


def write_baseline(run_dir: Path | str, path: Path | str, keep: int = KEEP_RUNS) -> Path:
    """Keep a run as the baseline, with up to ``keep - 1`` earlier runs of the same points
    from the file already at ``path`` (their between-run spread joins the gate's noise).
    Refused when any point failed (it could not gate anything)."""
    if keep < 1:
        raise UserError(f"--keep-runs: keep at least 1 run (got {keep})")
    data = baseline_data(run_dir)
    failed = [k for k, v in data["points"].items() if v["status"] != "ok"]
    if failed:
        raise UserError(
            f"{len(failed)} point(s) of {run_dir} failed ({', '.join(failed[:3])}"
            f"{', ...' if len(failed) > 3 else ''}): not kept as a baseline; fix them and run again"
        )
    data["history"] = _earlier_runs(Path(path), data["points"])[: keep - 1]
    return write_json(Path(path), data)


def _earlier_runs(path: Path, points: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The runs of the baseline at ``path``, newest first, when it measured the same points
    (a changed preset starts the history again); [] when there is no baseline yet."""
    if not path.is_file():
        return []
    old = read_json(path)
    runs = [
        {"source": old.get("source") or {}, "points": old.get("points") or {}},
        *(old.get("history") or []),
    ]
    groups = {without_repeat(k) for k in points}
    return [r for r in runs if {without_repeat(k) for k in r["points"]} == groups]


# --- the statistics ------------------------------------------------------------------------------


def judge_change(metric_id: str, change: Change, threshold: float) -> tuple[Verdict, str]:
    """Regression when even the interval's most favourable end is worse than the threshold.

    That is: the change exceeds the threshold by more than the noise. Two runs of the same
    code on a shared machine differ by a few percent in ways windows and repeats of one run
    cannot see, so a change whose estimate alone passes the threshold is not enough.
    """
    worse = _worse(metric_id, change.change)
    best_case, worst_case = sorted((_worse(metric_id, change.low), _worse(metric_id, change.high)))
    interval = f"{CONFIDENCE:.0%} CI {_pct(change.low)}..{_pct(change.high)}"
    limit = _pct(threshold, signed=False)
    if best_case > threshold:
        return (
            "regression",
            f"worse by {_pct(worse, signed=False)}; beyond {limit} and the noise ({interval})",
        )
    if worst_case < -threshold:
        return (
            "improvement",
            f"better by {_pct(-worse, signed=False)}; beyond {limit} and the noise ({interval})",
        )
    if abs(change.change) <= threshold:
        return "ok", f"within the {limit} threshold ({interval})"
    return "ok", f"past the {limit} threshold but within the noise ({interval})"


def _worse(metric_id: str, relative_change: float) -> float:
    """The change signed so that positive is worse (a throughput drop, a p99 rise)."""
    return -relative_change if metric(metric_id).higher_is_better else relative_change


def point_seed(group: str, metric_id: str, seed: int = SEED) -> int:
    """A seed per point and metric: verdicts do not depend on which other points exist."""
    return seed_for(group, metric_id, seed)


# --- the comparison ------------------------------------------------------------------------------


@dataclass
class MetricComparison:
    metric_id: str
    verdict: Verdict
    note: str
    threshold: float
    change: Change | None = None
    base_samples: int = 0
    current_samples: int = 0
    run_noise: float | None = None  # BASE's between-run spread, when it holds several runs

    def as_dict(self) -> dict[str, Any]:
        c = self.change
        return {
            "metric": self.metric_id,
            "label": metric(self.metric_id).label(),
            "direction": metric(self.metric_id).direction,
            "threshold": self.threshold,
            "base": c.base if c else None,
            "current": c.current if c else None,
            "change": c.change if c else None,
            "ci_low": c.low if c else None,
            "ci_high": c.high if c else None,
            "verdict": self.verdict,
            "note": self.note,
            "base_samples": self.base_samples,
            "current_samples": self.current_samples,
            "run_noise": self.run_noise,
        }


@dataclass
class PointComparison:
    key: str  # point key without the repeat
    status: PointStatus
    note: str
    base_keys: list[str]
    current_keys: list[str]
    metrics: list[MetricComparison] = field(default_factory=list)

    @property
    def regressed(self) -> bool:
        return self.status == "regression"

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "status": self.status,
            "note": self.note,
            "base_keys": self.base_keys,
            "current_keys": self.current_keys,
            "metrics": [m.as_dict() for m in self.metrics],
        }


@dataclass
class Comparison:
    """Everything compare found. ``as_dict()`` is ``compare.json``."""

    base: Side
    current: Side
    thresholds: dict[str, float]
    points: list[PointComparison]
    environment_differences: list[str]
    seed: int = SEED
    paired: bool = False

    @property
    def regressions(self) -> list[PointComparison]:
        return [p for p in self.points if p.regressed]

    @property
    def passed(self) -> bool:
        return not self.regressions

    def counts(self) -> dict[str, int]:
        statuses: list[str] = [p.status for p in self.points]
        improvements = sum(any(m.verdict == "improvement" for m in p.metrics) for p in self.points)
        names = (
            "ok",
            "regression",
            "unstable",
            "missing_in_current",
            "new_in_current",
            "failed_in_base",
        )
        return {
            "points": len(self.points),
            **{name: statuses.count(name) for name in names},
            "improvements": improvements,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": "pass" if self.passed else "regression",
            "base": self.base.describe(),
            "current": self.current.describe(),
            "thresholds": self.thresholds,
            "confidence": CONFIDENCE,
            "draws": DRAWS,
            "seed": self.seed,
            "paired": self.paired,
            "counts": self.counts(),
            "environment_differences": self.environment_differences,
            "points": [p.as_dict() for p in self.points],
            "rows": self.rows(),
        }

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per point and metric (a point without metrics: one row), for tables."""
        out = []
        for point in self.points:
            if not point.metrics:
                out.append(
                    {"key": point.key, "metric": None, "verdict": point.status, "note": point.note}
                )
            for m in point.metrics:
                row = m.as_dict()
                out.append({"key": point.key, "point_status": point.status, **row})
        return out


def compare_sides(
    base: Side,
    current: Side,
    thresholds: Mapping[str, float] | None = None,
    *,
    seed: int = SEED,
    paired: bool = False,
) -> Comparison:
    """Compare every point key of either side (pure: no files). ``paired``: the sides were
    measured in the same rounds (``batchbench ab``), repeat i of each side in round i, so each
    change comes from the per-round ratios (:func:`harness.decide.stats.paired_change`)."""
    thresholds = dict(DEFAULT_THRESHOLDS if thresholds is None else thresholds)
    base_groups, current_groups = base.groups(), current.groups()
    if not set(base_groups) & set(current_groups):
        raise UserError(
            f"{base.label} and {current.label} have no point key in common: were they made "
            "from different specs (see their run.json)?"
        )
    keys = list(base_groups) + [k for k in current_groups if k not in base_groups]
    points = [
        compare_point(
            k,
            base_groups.get(k, []),
            current_groups.get(k, []),
            thresholds,
            seed,
            paired=paired,
            run_noise={m: base.run_noise(k, m) for m in thresholds},
        )
        for k in keys
    ]
    differences = environment_differences(base.environment, current.environment)
    return Comparison(base, current, thresholds, points, differences, seed, paired)


def compare_point(
    key: str,
    base: Sequence[PointSamples],
    current: Sequence[PointSamples],
    thresholds: Mapping[str, float],
    seed: int = SEED,
    *,
    paired: bool = False,
    run_noise: Mapping[str, float | None] | None = None,
) -> PointComparison:
    """One point key: its repeats on each side, every tracked metric. ``run_noise``: per
    metric, BASE's relative spread between runs, added to each change's interval."""
    result = PointComparison(key, "ok", "", [p.key for p in base], [p.key for p in current])
    noise = run_noise or {}
    failed_now = [p for p in current if p.status != "ok"]
    base_ok = [p for p in base if p.status == "ok"]
    if not current:
        result.status, result.note = "missing_in_current", "not in CURRENT"
    elif not base:
        result.status, result.note = "new_in_current", "not in BASE"
    elif failed_now:
        reason = failed_now[0].reason or "no reason recorded"
        result.status, result.note = "regression", f"failed in CURRENT: {reason}"
        result.metrics = [
            MetricComparison(m, "failed_in_current", result.note, t) for m, t in thresholds.items()
        ]
    elif not base_ok:
        result.status, result.note = "failed_in_base", "failed in BASE: nothing to compare with"
    else:
        result.metrics = [
            compare_metric(key, m, t, base_ok, current, seed, paired=paired, run_noise=noise.get(m))
            for m, t in thresholds.items()
        ]
        _settle(result, current)
    return result


def _settle(result: PointComparison, current: Sequence[PointSamples]) -> None:
    if any(m.verdict == "regression" for m in result.metrics):
        worse = [m.metric_id for m in result.metrics if m.verdict == "regression"]
        result.status, result.note = "regression", f"regressed: {', '.join(worse)}"
    elif not all(p.stable and p.valid for p in current):
        result.status = "unstable"
        result.note = (
            "no regression, but CURRENT has unstable or invalid repeats: figures are rough"
        )


def compare_metric(
    key: str,
    metric_id: str,
    threshold: float,
    base: Sequence[PointSamples],
    current: Sequence[PointSamples],
    seed: int = SEED,
    *,
    paired: bool = False,
    run_noise: float | None = None,
) -> MetricComparison:
    base_groups = [s for p in base if (s := p.samples(metric_id))]
    current_groups = [s for p in current if (s := p.samples(metric_id))]
    counts: dict[str, Any] = {
        "base_samples": sum(map(len, base_groups)),
        "current_samples": sum(map(len, current_groups)),
    }
    if not base_groups or not current_groups:
        side = "BASE" if not base_groups else "CURRENT"
        return MetricComparison(
            metric_id, "undefined", f"not measured in {side}", threshold, **counts
        )
    change = paired_change(*round_figures(base, current, metric_id)) if paired else None
    if change is None:  # not paired, or fewer than two common rounds
        change = bootstrap_change(
            base_groups, current_groups, seed=point_seed(key, metric_id, seed)
        )
    if change is None:
        return MetricComparison(
            metric_id, "undefined", "BASE is 0: no relative change", threshold, **counts
        )
    if run_noise:
        change = with_run_noise(change, run_noise)
    verdict, note = judge_change(metric_id, change, threshold)
    if run_noise:
        note += f"; between-run spread {run_noise:.1%} included"
    return MetricComparison(
        metric_id, verdict, note, threshold, change, **counts, run_noise=run_noise
    )


def round_figures(
    base: Sequence[PointSamples], current: Sequence[PointSamples], metric_id: str
) -> tuple[list[float], list[float]]:
    """The figure of each round both sides measured (repeat i = round i), in round order."""
    sides = [
        {repeat_of(p.key): float(np.mean(s)) for p in points if (s := p.samples(metric_id))}
        for points in (base, current)
    ]
    rounds = sorted(set(sides[0]) & set(sides[1]))
    return [sides[0][r] for r in rounds], [sides[1][r] for r in rounds]


def repeat_of(key: str) -> int:
    """The repeat (round) index at the end of a point key; 0 when it has none."""
    match = re.search(r"-rep(\d+)$", key)
    return int(match.group(1)) if match else 0


def environment_differences(base: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Machine differences that make figures incomparable (empty when unknown or the same)."""
    out = []
    for key in ENVIRONMENT_KEYS:
        if key in base and key in current and base[key] != current[key]:
            out.append(f"{key}: {base[key]!r} in BASE, {current[key]!r} in CURRENT")
    return out


def parse_thresholds(
    throughput: float | None, p99: float | None, others: Iterable[str] = ()
) -> dict[str, float]:
    """Thresholds per metric ID: the defaults, the two named options, then ``ID=FRACTION``s."""
    thresholds = dict(DEFAULT_THRESHOLDS)
    if throughput is not None:
        thresholds["throughput_rps"] = throughput
    if p99 is not None:
        thresholds["latency_p99_ms"] = p99
    for text in others:
        name, sep, raw = text.partition("=")
        if not sep or name not in METRICS:
            raise UserError(
                f"--threshold expects METRIC=FRACTION with a metric ID ({', '.join(METRICS)}), "
                f"got {text!r}"
            )
        thresholds[name] = _fraction(raw, f"--threshold {name}")
    for name, value in thresholds.items():
        _fraction(str(value), f"threshold for {name}")
    return thresholds


def _fraction(raw: str, what: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 <= value < 10:
        raise UserError(f"{what}: expects a fraction such as 0.05 (5%), got {raw!r}")
    return value


# --- outputs -------------------------------------------------------------------------------------


def markdown(comparison: Comparison) -> str:
    """A Markdown summary: the verdict, then one table row per point and metric."""
    counts = comparison.counts()
    if comparison.passed:
        head = f"## batchbench compare: ✅ no regression ({counts['points']} points)"
    else:
        head = f"## batchbench compare: ❌ {counts['regression']} point(s) regressed"
    lines = [
        head,
        "",
        f"BASE `{comparison.base.label}` → CURRENT `{comparison.current.label}`; thresholds "
        + ", ".join(f"{m} {_pct(t, signed=False)}" for m, t in comparison.thresholds.items())
        + f"; a regression must also exceed the noise ({_interval_kind(comparison)}).",
        "",
    ]
    lines += [f"> ⚠️ Different machines — {d}" for d in comparison.environment_differences]
    lines += [
        "| Point | Metric | Base | Current | Change | 95% CI | Verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for point in comparison.points:
        lines += _markdown_rows(point)
    return "\n".join(lines) + "\n"


def _interval_kind(comparison: Comparison) -> str:
    if comparison.paired:
        return f"{CONFIDENCE:.0%} paired t-interval over interleaved rounds"
    return f"{CONFIDENCE:.0%} bootstrap interval"


def _markdown_rows(point: PointComparison) -> list[str]:
    if not point.metrics:
        return [f"| `{point.key}` | | | | | | {point.status}: {point.note} |"]
    rows = []
    for m in point.metrics:
        c = m.change
        figures = (
            [_num(c.base), _num(c.current), _pct(c.change), f"{_pct(c.low)} .. {_pct(c.high)}"]
            if c
            else ["", "", "", ""]
        )
        verdict = {"regression": "❌ regression", "improvement": "✅ improvement"}.get(
            m.verdict, m.verdict
        )
        rows.append(f"| `{point.key}` | {m.metric_id} | {' | '.join(figures)} | {verdict} |")
    return rows


def junit_xml(comparison: Comparison) -> str:
    """JUnit XML: one test case per point and metric (failures = regressions)."""
    suite = ET.Element("testsuite", name="batchbench compare")
    failures = skipped = tests = 0
    for point in comparison.points:
        for name, verdict, note, detail in _cases(point):
            tests += 1
            case = ET.SubElement(suite, "testcase", classname=f"batchbench.{point.key}", name=name)
            if verdict in ("regression", "failed_in_current"):
                failures += 1
                ET.SubElement(case, "failure", message=note, type=verdict).text = detail
            elif verdict in ("missing_in_current", "new_in_current", "failed_in_base", "undefined"):
                skipped += 1
                ET.SubElement(case, "skipped", message=f"{verdict}: {note}")
            ET.SubElement(case, "system-out").text = detail
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    suite.set("skipped", str(skipped))
    suite.set("errors", "0")
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _cases(point: PointComparison) -> list[tuple[str, str, str, str]]:
    if not point.metrics:
        return [("point", point.status, point.note, point.note)]
    out: list[tuple[str, str, str, str]] = []
    for m in point.metrics:
        c = m.change
        detail = (
            f"base {_num(c.base)}, current {_num(c.current)}, change {_pct(c.change)} "
            f"(95% CI {_pct(c.low)}..{_pct(c.high)}), threshold {_pct(m.threshold, signed=False)}"
            if c
            else m.note
        )
        out.append((m.metric_id, m.verdict, m.note, detail))
    return out


def write_outputs(comparison: Comparison, out_dir: Path | str) -> dict[str, Path]:
    """``compare.json``, ``compare.md`` and ``compare-junit.xml`` in ``out_dir``."""
    out_dir = Path(out_dir)
    return {
        "json": write_json(out_dir / COMPARE_FILE, comparison.as_dict()),
        "markdown": write_atomically(out_dir / MARKDOWN_FILE, markdown(comparison)),
        "junit": write_atomically(out_dir / JUNIT_FILE, junit_xml(comparison)),
    }


# compare.json's one-line facts (as Comparison.as_dict writes them) and the columns of its flat
# rows a table shows, in order.
SUMMARY_FIELDS = (
    "verdict",
    "base",
    "current",
    "thresholds",
    "confidence",
    "draws",
    "seed",
    "counts",
)
TABLE_COLUMNS = (
    "key",
    "metric",
    "base",
    "current",
    "change",
    "ci_low",
    "ci_high",
    "verdict",
    "note",
)


@dataclass(frozen=True)
class ComparisonFile:
    """``compare.json`` read back: its summary facts and its rows (``Comparison.rows()``)."""

    summary: dict[str, Any]
    rows: list[dict[str, Any]]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ComparisonFile:
        summary = {k: v for k, v in data.items() if k in SUMMARY_FIELDS}
        return cls(summary, [dict(row) for row in data.get("rows") or []])

    def columns(self) -> list[str]:
        """The table columns the rows have, in :data:`TABLE_COLUMNS` order."""
        return [c for c in TABLE_COLUMNS if any(c in row for row in self.rows)]


def read_comparison(out_dir: Path | str) -> ComparisonFile | None:
    """The ``compare.json`` in ``out_dir`` (a run folder, usually); None when there is none."""
    path = Path(out_dir) / COMPARE_FILE
    return ComparisonFile.from_dict(read_json(path)) if path.is_file() else None


def append_step_summary(comparison: Comparison, path: Path | str) -> None:
    """Append the Markdown summary to a file (``$GITHUB_STEP_SUMMARY`` is appended to)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(markdown(comparison))


def summary_line(comparison: Comparison) -> str:
    counts = comparison.counts()
    if comparison.passed:
        verdict = "no regression"
    else:
        verdict = "REGRESSION in " + ", ".join(p.key for p in comparison.regressions)
    extra = [
        f"{counts[name]} {name.replace('_', ' ')}"
        for name in ("missing_in_current", "new_in_current", "failed_in_base", "unstable")
        if counts[name]
    ]
    tail = f" ({'; '.join(extra)})" if extra else ""
    return f"compared {counts['points']} point(s): {verdict}{tail}"


# --- small helpers -------------------------------------------------------------------------------


def _pct(value: float, *, signed: bool = True) -> str:
    return f"{value:+.1%}" if signed else f"{value:.1%}"


def _num(value: float) -> str:
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3g}"
