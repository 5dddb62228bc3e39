"""The report's content as plain data: a pure function of a run folder's files.

``build_report_data`` reads the folder (``harness.store.run_folder.load_run``, and the
``recommendation.json`` and ``compare.json`` beside it: the only I/O here); ``report_data`` turns
what was read into one JSON-ready dict, section by section, which the template renders and
``report.json`` keeps. The
report never ranks configurations itself: the recommendation and the Pareto front come from
``harness.decide.recommend`` (or the ``recommendation.json`` it wrote); this module only
arranges the measured figures so they can be plotted and tabled.

Vocabulary: a *configuration* is a server configuration (batching parameters and replicas) on one
protocol; a *setting* is a configuration at one load, its repeats averaged; a *point* is one
stored measurement.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from harness.decide.compare import ComparisonFile, read_comparison, samples_from_result
from harness.decide.recommend import read_recommendation
from harness.decide.ties import candidate_intervals, interval_metrics
from harness.decide.versions import version_rows
from harness.errors import UserError
from harness.metrics import INTERVAL_METRICS, METRICS, interval_ids, metric, slo_misses
from harness.plan.batching_fields import BATCH_TIMEOUT_MICROS, FIELDS, MAX_BATCH_SIZE
from harness.plan.points import Point, ServerConfig, without_repeat
from harness.report.recommendation import ShownRecommendation, resolve
from harness.store.layout import SEARCH_FILE
from harness.store.results import PointResult, json_safe, read_json
from harness.store.run_folder import RunFolder, load_run

REPORT_SCHEMA_VERSION = 1

PERCENTILES = ("latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_p999_ms")
TOP_CONFIGS = 5
LOG_TAIL_CHARS = 4000


def build_report_data(run_dir: Path) -> dict[str, Any]:
    """The report's data for a run folder (what ``report.json`` holds); UserError when it is
    not one (or a file in it is unreadable)."""
    run = load_run(run_dir)
    return report_data(run, read_recommendation(run_dir), read_comparison(run_dir))


def report_data(
    run: RunFolder,
    stored: Mapping[str, Any] | None = None,
    comparison: ComparisonFile | None = None,
) -> dict[str, Any]:
    """Every section's data, JSON-ready (NaN and infinities become null); ``stored`` is the
    run's ``recommendation.json``, if any."""
    recommendation = resolve(run, stored)
    context = _Context.of(run, _slo(run.record.spec, recommendation))
    top = _top_configs(context, recommendation)
    data = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "run": _run_section(run),
        "slo": context.slo,
        "objective": _spec_part(run.record.spec, "recommend", "objective"),
        "counts": _counts(run, context),
        "metrics": {mid: _metric_info(mid) for mid in METRICS},
        "summary": _summary(context, recommendation),
        "tradeoff": _tradeoff(context, recommendation),
        "heatmaps": _heatmaps(context),
        "latency": _latency(context, top),
        "batching": _batching(context, top),
        "timelines": [series.as_dict() for series in _timelines(context, recommendation, top)],
        "models": _models(run, recommendation),
        "versions": versions_section(run),
        "points": [_point_row(context, result) for result in run.results],
        "max_rate": _max_rate_rows(context),
        "search": _search(run),
        "comparison": _comparison(comparison),
        "decision": _decision(recommendation, run),
        "environment": _environment(run),
        "placement": placement_section(run.environment),
        "spec": run.record.spec,
        "spec_yaml": yaml.safe_dump(run.record.spec, sort_keys=False),
    }
    return json_safe(data)


# --- a search's path ------------------------------------------------------------------------------


def _search(run: RunFolder) -> dict[str, Any] | None:
    """A search strategy's path (search.json): what it measured in order, the best so far,
    the accepted moves, how much of the space it measured and why it stopped."""
    path = run.root / SEARCH_FILE if run.root else None
    if path is None or not path.exists():
        return None
    found = read_json(path)
    keep = (
        "strategy",
        "metric",
        "space_size",
        "budget",
        "measured",
        "share_measured",
        "stopped",
        "best",
        "home",
        "axes",
    )
    trials = [
        {
            "trial": t["trial"],
            "key": t["key"],
            "config": ", ".join(f"{k} {v}" for k, v in t["config"].items()),
            "objective": t.get("objective"),
            "feasible": t.get("feasible"),
            "best_so_far": t.get("best_so_far"),
            "accepted": bool(t.get("accepted")),
            "start": bool(t.get("home")),
        }
        for t in found.get("trials", [])
    ]
    return {**{k: found.get(k) for k in keep}, "trials": trials}


# --- ties, margins and the confirmation ---------------------------------------------------------


def _decision(rec: ShownRecommendation, run: RunFolder) -> dict[str, Any] | None:
    """The tie analysis (which candidates tie, the pick and why, the margins) and, when the run
    has one, the confirmation's figures per candidate and round."""
    if not rec.decision:
        return None
    return {
        **rec.decision,
        "confirmed": rec.confirmed,
        "rows": _decision_rows(rec.decision),
        "rounds": _confirmation_rounds(run.confirmation or []),
    }


def _decision_rows(decision: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per candidate with intervals: its figures' 95% intervals, its change against the best,
    whether it is tied, chosen, marginal."""
    rows = []
    for key, intervals in decision["intervals"].items():
        rows.append(
            {
                "key": key,
                "tied": key in decision["tied"],
                "chosen": key == decision["chosen"],
                "marginal": [m["metric"] for m in decision["marginal"].get(key, [])],
                "throughput": intervals.get("throughput_rps"),
                "p99": intervals.get("latency_p99_ms"),
                "change": decision["changes_vs_best"].get(key),
            }
        )
    return rows


def _confirmation_rounds(results: Sequence[PointResult]) -> list[dict[str, Any]]:
    """One row per confirmed candidate: its throughput and p99 in each round."""
    by_group: dict[str, dict[int, PointResult]] = {}
    for r in results:
        by_group.setdefault(r.point.group_key, {})[r.point.repeat] = r
    return [
        {
            "key": key,
            "rounds": [
                {
                    "round": n + 1,
                    "status": r.status,
                    "throughput_rps": r.metrics.get("throughput_rps"),
                    "latency_p99_ms": r.metrics.get("latency_p99_ms"),
                }
                for n, r in sorted(rounds.items())
            ],
        }
        for key, rounds in by_group.items()
    ]


# --- the context: points grouped once -----------------------------------------------------------


@dataclass
class _Context:
    """The run's points grouped into configurations and settings, with the SLO to judge them."""

    points: list[PointResult]
    slo: dict[str, float]
    load_kind: str
    labels: dict[str, str]  # config id -> human label
    configs: dict[str, Point]  # config id -> a representative point
    settings: list[Setting]  # one per (config, load), repeats averaged
    searches: dict[str, ConfigSearch]  # config id -> max-rate search summary
    external: bool = False  # an external server: its batching parameters are unknown

    @classmethod
    def of(cls, run: RunFolder, slo: dict[str, float]) -> _Context:
        points = list(run.results)
        every = run.record.planned + [r.point for r in points]
        configs = {report_config(p): p for p in every}
        external = _is_external(run.record.spec)
        labels = config_labels(configs, external=external)
        settings = _settings(points, slo, labels)
        searches = _searches(run.searches or [], labels)
        load_kind = every[0].load_kind if every else "concurrency"
        return cls(points, slo, load_kind, labels, configs, settings, searches, external)

    @property
    def find_max_rate(self) -> bool:
        return bool(self.searches)


def _slo(spec: Mapping[str, Any], rec: ShownRecommendation) -> dict[str, float]:
    """The constraints the recommendation was made under; else the spec's (search's, then
    ``recommend.slo`` over it, as the recommender merges them)."""
    if rec.constraints:
        return {c["metric"]: float(c["bound"]) for c in rec.constraints}
    search = _spec_part(spec, "load", "find_max_rate", "slo") or {}
    return {**search, **(_spec_part(spec, "recommend", "slo") or {})}


def _is_external(spec: Mapping[str, Any]) -> bool:
    return _spec_part(spec, "target", "kind") == "external"


def _spec_part(spec: Mapping[str, Any], *path: str) -> Any:
    """A part of the spec as given (None when absent): the report shows what the user wrote."""
    node: Any = spec
    for name in path:
        node = node.get(name) if isinstance(node, Mapping) else None
    return node


def report_config(point: Point) -> str:
    """What the report calls a configuration: the server configuration and protocol, and the
    traffic when it is not the default (``config_key`` plus the traffic's key suffix)."""
    return f"{point.config_key}{point.traffic.key_suffix}"


# --- labels -------------------------------------------------------------------------------------

_SHORT = {field.name: field.short for field in FIELDS}
_ALWAYS = (MAX_BATCH_SIZE.name, BATCH_TIMEOUT_MICROS.name)


def config_labels(configs: Mapping[str, Point], external: bool = False) -> dict[str, str]:
    """Short human labels: the batch size and timeout always, other fields where they vary.

    An external server's batching is whatever it was started with, so it is not described.
    """
    varying = _varying_fields(p.server for p in configs.values())
    protocols = {p.protocol for p in configs.values()}
    traffics = {p.traffic for p in configs.values()}
    labels = {}
    for cid, point in configs.items():
        protocol = point.protocol if len(protocols) > 1 else None
        label = server_label(point.server, varying, protocol)
        if len(traffics) > 1:  # several traffics: each configuration is read under one
            label += " · " + point.traffic.label(point.load_kind == "rate")
        labels[cid] = "external server" + label[label.index(" · ") :] if external else label
    return labels


def _varying_fields(servers: Iterable[ServerConfig]) -> set[str]:
    seen: dict[str, set[str]] = {}
    # TF Serving's defaults (nothing set) have their own label and do not count as variation.
    batched = [s.batching for s in servers if s.batching is not None and s.batching.as_dict()]
    for params in batched:
        values = params.as_dict()
        for name in _SHORT:
            seen.setdefault(name, set()).add(repr(values.get(name)))
    return {name for name, values in seen.items() if len(values) > 1}


def server_label(server: ServerConfig, varying: set[str], protocol: str | None = None) -> str:
    """``mbs 32 · 2 ms · 2 replicas``; ``no batching · 1 replica``; ``TF defaults · 1 replica``."""
    parts = [_batching_label(server, varying)]
    parts.append(f"{server.replicas} replica{'s' if server.replicas != 1 else ''}")
    if protocol:
        parts.append(protocol.upper() if protocol == "rest" else "gRPC")
    return " · ".join(parts)


def _batching_label(server: ServerConfig, varying: set[str]) -> str:
    if server.batching is None:
        return "no batching"
    values: dict[str, Any] = server.batching.as_dict()
    if not values:
        return "TF defaults"
    parts = []
    for name, short in _SHORT.items():
        if name not in _ALWAYS and name not in varying:
            continue
        value = values.get(name)
        if name == BATCH_TIMEOUT_MICROS.name:
            parts.append("timeout default" if value is None else format_micros(value))
        elif value is None:
            parts.append(f"{short} default")
        else:
            text = " ".join(map(str, value)) if isinstance(value, list) else str(value)
            parts.append(f"{short} {text}")
    return " · ".join(parts)


def format_micros(micros: float) -> str:
    """A timeout for people: ``0 ms``, ``0.5 ms``, ``5 ms``."""
    return f"{micros / 1000:g} ms"


# --- settings: a configuration at one load, repeats averaged -----------------------------------


@dataclass(frozen=True)
class Setting:
    """A configuration at one load: its ok repeats, their figures averaged."""

    config: str  # the point's config_key
    group: str  # the point's group_key
    label: str
    load: float
    load_kind: str
    replicas: int
    protocol: str
    batching: dict[str, Any] | None  # the batching parameters set (None: batching off)
    keys: list[str]
    stable: bool
    valid: bool
    meets_slo: bool | None  # None: no SLO to judge by
    metrics: dict[str, float | None]
    telemetry: dict[str, Any] | None
    traffic: str = ""  # the traffic's label; "" for the default traffic

    def param(self, name: str) -> Any:
        """A batching parameter as set (None: its default, or batching off)."""
        return (self.batching or {}).get(name)

    def brief(self) -> dict[str, Any]:
        keep = ("config", "group", "label", "load", "load_kind", "replicas", "protocol", "keys")
        return {k: getattr(self, k) for k in keep}


def _settings(
    points: Sequence[PointResult], slo: Mapping[str, float], labels: Mapping[str, str]
) -> list[Setting]:
    groups: dict[tuple[str, float], list[PointResult]] = {}
    for result in points:
        if result.status == "ok":
            groups.setdefault((report_config(result.point), result.point.load), []).append(result)
    settings = [_setting(group, slo, labels[cid]) for (cid, _), group in groups.items()]
    return sorted(settings, key=lambda s: (s.label, s.load))


def _setting(group: list[PointResult], slo: Mapping[str, float], label: str) -> Setting:
    means = mean_metrics(r.metrics for r in group)
    point = group[0].point
    # Over repeats the interval is not the mean of each repeat's: bootstrap them together.
    members = [samples_from_result(r) for r in group]
    means.update(interval_metrics(candidate_intervals(point.group_key, members)))
    return Setting(
        config=report_config(point),
        group=point.group_key,
        label=label,
        load=point.load,
        load_kind=point.load_kind,
        replicas=point.replicas,
        protocol=point.protocol,
        batching=point.batching.as_dict() if point.batching else None,
        keys=[r.key for r in group],
        stable=all(r.stable for r in group),
        valid=all(r.valid for r in group),
        meets_slo=(not slo_misses(means, slo)) if slo else None,
        metrics=means,
        telemetry=merge_telemetry(r.telemetry for r in group),
        traffic="" if point.traffic.is_default else point.traffic.label(point.load_kind == "rate"),
    )


def mean_metrics(metrics: Iterable[Mapping[str, float | None]]) -> dict[str, float | None]:
    """Each metric's mean over repeats (missing and NaN figures left out; None if none left)."""
    frame = pd.DataFrame([{k: _number(v) for k, v in m.items()} for m in metrics])
    if frame.empty:
        return {}
    means = frame.apply(pd.to_numeric, errors="coerce").mean(skipna=True)
    return {mid: None if pd.isna(value) else float(value) for mid, value in means.items()}


def _number(value: Any) -> float:
    return (
        float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        else math.nan
    )


def merge_telemetry(telemetries: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Repeats' telemetry added up (counts summed, times averaged); None when there is none."""
    present = [t for t in telemetries if t]
    if not present:
        return None
    buckets: dict[str, int] = {}
    for telemetry in present:
        for bucket in telemetry.get("batch_size_buckets") or []:
            le = str(bucket["le"])
            buckets[le] = buckets.get(le, 0) + int(bucket["count"])
    return {
        "batches": sum(int(t.get("batches") or 0) for t in present),
        "rows": sum(int(t.get("rows") or 0) for t in present),
        "padding_rows": sum(int(t.get("padding_rows") or 0) for t in present),
        "rejected": sum(int(t.get("rejected") or 0) for t in present),
        "batch_size_buckets": [{"le": le, "count": n} for le, n in buckets.items()],
        "queue_time_mean_ms": _mean_of(t.get("queue_time_mean_ms") for t in present),
        "compute_time_mean_ms": _mean_of(t.get("compute_time_mean_ms") for t in present),
    }


def _mean_of(values: Iterable[Any]) -> float | None:
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(numbers) / len(numbers) if numbers else None


# --- max-rate searches --------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigSearch:
    """One configuration's max-rate searches: each repeat's outcome, as a table row."""

    config: str
    label: str
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def max_rate_rps(self) -> float | None:
        """The mean over repeats of the highest passing rate."""
        return _mean_of(run["max_rate_rps"] for run in self.runs)


def _searches(
    searches: Sequence[Mapping[str, Any]], labels: Mapping[str, str]
) -> dict[str, ConfigSearch]:
    """Per configuration: the highest passing rate of each repeat's search."""
    out: dict[str, ConfigSearch] = {}
    for search in searches:
        server = ServerConfig.from_dict(search["server"])
        cid = f"{server.key}-{search['protocol']}"
        if "lane_key" in search:  # the lane names the traffic too
            cid = without_repeat(search["lane_key"])
        entry = out.setdefault(cid, ConfigSearch(cid, labels.get(cid, cid)))
        entry.runs.append(
            {
                "repeat": search.get("repeat", 0),
                "max_rate_rps": search.get("max_rate_rps"),
                "outcome": search.get("outcome"),
                "probes": len(search.get("probes", [])),
            }
        )
    return out


def _max_rate_rows(context: _Context) -> list[dict[str, Any]]:
    rows = []
    for entry in context.searches.values():
        for run in entry.runs:
            rows.append({"config": entry.config, "label": entry.label, **run})
    return sorted(rows, key=lambda r: (r["label"], r["repeat"]))


# --- section 1: summary -------------------------------------------------------------------------


def _summary(context: _Context, rec: ShownRecommendation) -> dict[str, Any]:
    """The recommender's sentence, gains and files, with the chosen setting's own figures."""
    setting = _chosen_setting(context, rec)
    return {
        "recommendation": rec.as_dict(),
        "sentence": rec.sentence,
        "setting": setting.brief() if setting else None,
        "gains": rec.baselines,
    }


def _chosen_setting(context: _Context, rec: ShownRecommendation) -> Setting | None:
    keys = set(rec.point_keys)
    return next((s for s in context.settings if keys.intersection(s.keys)), None)


def is_baseline(batching: Mapping[str, Any] | None) -> bool:
    return batching is None


# --- section 2: throughput vs p99 ---------------------------------------------------------------


def _tradeoff(context: _Context, rec: ShownRecommendation) -> dict[str, Any]:
    pareto = set(rec.pareto)
    chosen = set(rec.point_keys)
    dots = []
    for s in context.settings:
        tput, p99 = s.metrics.get("throughput_rps"), s.metrics.get("latency_p99_ms")
        if tput is None or p99 is None:
            continue
        dots.append(
            {
                "config": s.config,
                "label": s.label,
                "load": s.load,
                "replicas": s.replicas,
                "throughput_rps": tput,
                "latency_p99_ms": p99,
                "throughput_ci": _ci_pair(s.metrics, "throughput_rps"),
                "p99_ci": _ci_pair(s.metrics, "latency_p99_ms"),
                "stable": s.stable,
                "valid": s.valid,
                "meets_slo": s.meets_slo,
                "baseline": is_baseline(s.batching),
                "pareto": s.group in pareto,
                "recommended": bool(chosen.intersection(s.keys)),
            }
        )
    return {
        "points": dots,
        "slo_p99_ms": context.slo.get("latency_p99_ms"),
        "pareto_known": bool(pareto),
        "load_kind": context.load_kind,
    }


def _ci_pair(metrics: Mapping[str, Any], metric_id: str) -> list[float] | None:
    low, high = (metrics.get(i) for i in interval_ids(metric_id))
    return None if low is None or high is None else [low, high]


# --- section 3: heatmaps ------------------------------------------------------------------------


def _heatmaps(context: _Context) -> list[dict[str, Any]]:
    """One grid per (replicas, protocol): max batch size rows × batch timeout columns."""
    if context.external:
        return []
    quantity, value_of = _heatmap_quantity(context)
    groups: dict[tuple[int, str, str], list[Setting]] = {}
    for s in context.settings:
        if s.batching is not None:
            groups.setdefault((s.replicas, s.protocol, s.traffic), []).append(s)
    protocols = {protocol for _, protocol, _ in groups}
    maps = []
    for (replicas, protocol, traffic), settings in sorted(groups.items()):
        title = f"{replicas} replica{'s' if replicas != 1 else ''}"
        if len(protocols) > 1:
            title += f", {protocol}"
        title += f", {traffic}" if traffic else ""
        grid = _grid(settings, value_of)
        grid["baseline"] = _baseline_value(context, (replicas, protocol, traffic), value_of)
        maps.append({"title": title, "replicas": replicas, "protocol": protocol, **grid})
    return [{"quantity": quantity, **m} for m in maps]


def _heatmap_quantity(context: _Context) -> tuple[str, Any]:
    """What a cell shows, and how to get it from a setting (None: nothing qualifies)."""
    if context.find_max_rate:

        def max_rate(s: Setting) -> float | None:
            search = context.searches.get(s.config)
            return search.max_rate_rps if search else None

        return "max rate under the SLO (req/s)", max_rate
    bounds = ", ".join(_bound_text(m, b) for m, b in context.slo.items())
    if context.slo and any(s.meets_slo and s.valid for s in context.settings):

        def under_slo(s: Setting) -> float | None:
            return s.metrics.get("throughput_rps") if s.meets_slo and s.valid else None

        return f"max throughput under the SLO ({bounds}), req/s", under_slo
    top_load = max((s.load for s in context.settings), default=0)

    def at_load(s: Setting) -> float | None:
        return s.metrics.get("throughput_rps") if s.load == top_load else None

    unit = {"concurrency": "clients", "trace": "x trace speed"}.get(
        context.load_kind, "req/s offered"
    )
    # An all-empty map says nothing; when no point met the SLO, show the trade-off anyway.
    missed = f"no point met the SLO ({bounds}); " if context.slo else ""
    return f"{missed}throughput at {top_load:g} {unit} (req/s)", at_load


def _bound_text(metric_id: str, bound: float) -> str:
    m = metric(metric_id)
    sign = "≥" if m.higher_is_better else "≤"
    return f"{m.header} {sign} {bound:g}{' ' + m.unit if m.unit else ''}"


def _grid(settings: list[Setting], value_of: Any) -> dict[str, Any]:
    size_field, timeout_field = MAX_BATCH_SIZE.name, BATCH_TIMEOUT_MICROS.name
    sizes = sorted({s.param(size_field) for s in settings}, key=_default_last)
    timeouts = sorted({s.param(timeout_field) for s in settings}, key=_default_last)
    cells = [[None] * len(timeouts) for _ in sizes]
    for s in settings:
        value = value_of(s)
        row, col = (
            sizes.index(s.param(size_field)),
            timeouts.index(s.param(timeout_field)),
        )
        if value is not None and (cells[row][col] is None or value > cells[row][col]):
            cells[row][col] = value
    return {
        size_field: sizes,
        timeout_field: timeouts,
        "row_labels": [str(v) if v is not None else "default" for v in sizes],
        "col_labels": [format_micros(v) if v is not None else "default" for v in timeouts],
        "cells": cells,
    }


def _default_last(value: Any) -> tuple[bool, Any]:
    return (value is None, value or 0)


def _baseline_value(context: _Context, where: tuple[int, str, str], value_of: Any) -> Any:
    values = [
        value_of(s)
        for s in context.settings
        if s.batching is None and (s.replicas, s.protocol, s.traffic) == where
    ]
    values = [v for v in values if v is not None]
    return max(values) if values else None


# --- section 4: latency percentiles against load ------------------------------------------------


def _top_configs(context: _Context, rec: ShownRecommendation) -> list[str]:
    """The configurations to detail: the recommendation and its runners-up, else the highest
    throughput; the unbatched baseline is added as a reference when it was run.

    Choosing what to *show* is not a ranking: without a recommendation the report says that it
    picked by throughput alone.
    """
    picked: list[str] = []
    for key in [rec.key, *rec.runners_up] if rec.key else []:
        cid = next((s.config for s in context.settings if key in (s.group, s.config)), None)
        if cid and cid not in picked:
            picked.append(cid)
    if not picked:
        peak: dict[str, float] = {}
        for s in context.settings:
            tput = s.metrics.get("throughput_rps") or 0.0
            peak[s.config] = max(peak.get(s.config, 0.0), tput)
        picked = sorted(peak, key=lambda cid: -peak[cid])
    picked = picked[:TOP_CONFIGS]
    baselines = [s.config for s in context.settings if is_baseline(s.batching)]
    for cid in dict.fromkeys(baselines):
        if cid not in picked:
            picked.append(cid)
            break
    return picked


def _latency(context: _Context, top: Sequence[str]) -> dict[str, Any]:
    loads = sorted({s.load for s in context.settings})
    series = []
    for cid in top:
        settings = sorted((s for s in context.settings if s.config == cid), key=lambda s: s.load)
        series.append(
            {
                "config": cid,
                "label": context.labels.get(cid, cid),
                "baseline": context.configs[cid].batching is None,
                "loads": [s.load for s in settings],
                **{pid: [s.metrics.get(pid) for s in settings] for pid in PERCENTILES},
            }
        )
    return {
        "mode": "curves" if len(loads) > 1 else "bars",
        "load_kind": context.load_kind,
        "percentiles": list(PERCENTILES),
        "series": series,
    }


# --- section 5: batching telemetry --------------------------------------------------------------


def _batching(context: _Context, top: Sequence[str]) -> dict[str, Any]:
    """Achieved batch sizes, padding and queue/compute time, per batched setting."""
    rows = []
    for s in context.settings:
        telemetry = s.telemetry
        if s.batching is None or not telemetry or not telemetry.get("batches"):
            continue
        rows.append(_batching_row(s, telemetry, s.config in top))
    missing = sum(1 for s in context.settings if s.batching is not None and not (s.telemetry or {}))
    return {"rows": rows, "without_telemetry": missing}


def _batching_row(setting: Setting, telemetry: Mapping[str, Any], top: bool) -> dict:
    m = setting.metrics
    return {
        "config": setting.config,
        "label": setting.label,
        "load": setting.load,
        "load_kind": setting.load_kind,
        "top": top,
        "batches": telemetry["batches"],
        "rows": telemetry["rows"],
        "batch_size_buckets": _trim_buckets(telemetry["batch_size_buckets"]),
        "batch_size_mean": m.get("batch_size_mean"),
        "batch_size_p50": m.get("batch_size_p50"),
        "padding_ratio": m.get("padding_ratio"),
        "queue_time_mean_ms": m.get("queue_time_mean_ms", telemetry.get("queue_time_mean_ms")),
        "compute_time_mean_ms": m.get(
            "compute_time_mean_ms", telemetry.get("compute_time_mean_ms")
        ),
        "rejected_rate": m.get("rejected_rate"),
        MAX_BATCH_SIZE.name: setting.param(MAX_BATCH_SIZE.name),
        **padding_cost(telemetry, (m.get("requests") or 0.0) * len(setting.keys)).as_dict(),
    }


@dataclass(frozen=True)
class PaddingCost:
    """What padding cost a setting over its measured windows: padded rows ÷ executed rows,
    and the batch compute spent on them, estimated as that share of every batch's compute
    time (a padded batch runs at its padded size)."""

    padding_rows: int
    executed_rows: int
    compute_ms: float | None  # all batches' compute
    requests: float  # answered requests over the same windows

    @property
    def ratio(self) -> float | None:
        return self.padding_rows / self.executed_rows if self.executed_rows else None

    @property
    def padding_compute_ms(self) -> float | None:
        ratio = self.ratio
        return None if ratio is None or self.compute_ms is None else ratio * self.compute_ms

    def as_dict(self) -> dict[str, Any]:
        spent = self.padding_compute_ms
        return {
            "padding_rows": self.padding_rows,
            "padding_compute_ms": spent,
            # per 1,000 answered requests: comparable across loads and window lengths
            "padding_compute_ms_per_1k": (
                None if spent is None or not self.requests else 1000.0 * spent / self.requests
            ),
        }


def padding_cost(telemetry: Mapping[str, Any], requests: float) -> PaddingCost:
    """``telemetry`` (a setting's merged server telemetry) as a PaddingCost."""
    batches, compute_mean = telemetry.get("batches") or 0, telemetry.get("compute_time_mean_ms")
    return PaddingCost(
        padding_rows=int(telemetry.get("padding_rows") or 0),
        executed_rows=int(telemetry.get("rows") or 0),
        compute_ms=None if compute_mean is None else batches * float(compute_mean),
        requests=requests,
    )


def _trim_buckets(buckets: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Buckets up to the largest non-empty one, each with its size range as a label."""
    last = max((i for i, b in enumerate(buckets) if b["count"]), default=-1)
    out, lower = [], 0
    for bucket in buckets[: last + 1]:
        le = bucket["le"]
        upper = None if str(le) == "+Inf" else int(float(le))
        label = f"> {lower}" if upper is None else _range_label(lower + 1, upper)
        out.append({"le": le, "label": label, "count": int(bucket["count"])})
        lower = upper if upper is not None else lower
    return out


def _range_label(low: int, high: int) -> str:
    return str(high) if low >= high else f"{low}–{high}"


# --- section 5b: over time ----------------------------------------------------------------------

TIMELINE_FIELDS = (
    "offered",
    "ok",
    "errors",
    "latency_p50_ms",
    "latency_p99_ms",
    "queue_depth",
    "batch_size_mean",
)


@dataclass(frozen=True)
class TimelineSeries:
    """One point's per-second series (every load run of it, warm-ups marked), for a chart."""

    config: str
    label: str
    key: str
    recommended: bool
    at_s: list[float]
    warmup: list[bool]
    values: dict[str, list[float | None]]  # TIMELINE_FIELDS -> one value per second

    def as_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "label": self.label,
            "key": self.key,
            "recommended": self.recommended,
            "at_s": self.at_s,
            "warmup": self.warmup,
            **self.values,
        }


def versions_section(run: RunFolder) -> list[dict[str, Any]]:
    """Per point answered by more than one model version: the versions side by side."""
    out = []
    for result in run.results:
        rows = version_rows(result.by_version, result.timeline, result.key)
        if rows:
            out.append({"key": result.key, "rows": rows})
    return out


def _timelines(
    context: _Context, rec: ShownRecommendation, top: Sequence[str]
) -> list[TimelineSeries]:
    """The chosen point's timeline and one per runner-up configuration (the point the
    recommendation names, else the configuration's highest load), for those that have one."""
    by_key = {r.key: r for r in context.points}
    chosen = set(rec.point_keys)
    out = []
    for cid in top:
        settings = [s for s in context.settings if s.config == cid]
        if not settings:
            continue
        setting = next((s for s in settings if chosen.intersection(s.keys)), settings[-1])
        key = next((k for k in setting.keys if k in chosen), setting.keys[0])
        result = by_key.get(key)
        if result is not None and result.timeline:
            out.append(
                timeline_series(result, setting.label, bool(chosen.intersection(setting.keys)))
            )
    return out


def timeline_series(result: PointResult, label: str, recommended: bool) -> TimelineSeries:
    """A stored point's ``timeline`` as columns."""
    entries = result.timeline
    return TimelineSeries(
        config=report_config(result.point),
        label=label,
        key=result.key,
        recommended=recommended,
        at_s=[float(e.get("at_s", e.get("second", i))) for i, e in enumerate(entries)],
        warmup=[bool(e.get("warmup")) for e in entries],
        values={name: [e.get(name) for e in entries] for name in TIMELINE_FIELDS},
    )


# --- section 6: every point ---------------------------------------------------------------------


# --- several models on one server --------------------------------------------------------------

MODEL_METRICS = ("throughput_rps", "latency_p50_ms", "latency_p99_ms", "error_rate")


def _models(run: RunFolder, rec: ShownRecommendation) -> dict[str, Any] | None:
    """A multi-model run's figures per model: the chosen configuration's (with its batching
    file per model) and every point's; None when the points sent to one model."""
    rows = [
        {
            "key": result.key,
            "model": entry["model"],
            "chosen": result.key in rec.point_keys,
            **{mid: entry["metrics"].get(mid) for mid in MODEL_METRICS},
        }
        for result in run.results
        for entry in result.by_model
    ]
    if not rows:
        return None
    chosen = [
        {"model": name, "batching_parameters": entry.get("batching_parameters"),
         **{mid: (entry.get("metrics") or {}).get(mid) for mid in MODEL_METRICS}}
        for name, entry in rec.per_model.items()
    ]  # fmt: skip
    return {"metrics": list(MODEL_METRICS), "chosen": chosen, "rows": rows}


def _point_row(context: _Context, result: PointResult) -> dict[str, Any]:
    point, stability = result.point, result.stability or {}
    misses = (
        slo_misses(result.metrics, context.slo) if context.slo and result.status == "ok" else {}
    )
    return {
        "key": result.key,
        "config": report_config(point),
        "label": context.labels.get(report_config(point), point.config_key),
        "status": result.status,
        "valid": result.valid,
        "invalid_reasons": list(result.invalid_reasons),
        "stability": stability.get("verdict"),
        "stability_reason": stability.get("reason"),
        "meets_slo": None if not context.slo or result.status != "ok" else not misses,
        "slo_misses": misses,
        "protocol": point.protocol,
        "replicas": point.replicas,
        "batching": point.batching.as_dict() if point.batching else None,
        "load_kind": point.load_kind,
        "load": point.load,
        "repeat": point.repeat,
        "metrics": {mid: result.metrics.get(mid) for mid in METRICS if mid in result.metrics},
        "intervals": {
            m: pair for m in INTERVAL_METRICS if (pair := _ci_pair(result.metrics, m)) is not None
        },
        "reason": result.reason,
        "log_tail": (result.log_tail or "")[-LOG_TAIL_CHARS:] or None,
    }


# --- the rest -----------------------------------------------------------------------------------


def _run_section(run: RunFolder) -> dict[str, Any]:
    record = run.record
    return {
        "run_id": run.run_id,
        "name": record.spec.get("name"),
        "description": record.spec.get("description"),
        "created_at": record.created_at,
        "finished_at": record.finished_at,
        "interrupted": record.interrupted,
        "spec_source": record.spec_source,
    }


def placement_section(environment: Mapping[str, Any]) -> dict[str, Any] | None:
    """The CPU placement of servers and load generator (run.json's environment), one row
    per replica count; None for runs that did not record one."""
    placement = environment.get("placement")
    if not placement:
        return None
    rows = [
        {
            "replicas": int(replicas),
            "servers": " | ".join(entry.get("replicas") or []) or "any CPU",
            "generator": entry.get("generator") or "any CPU",
            "shared": entry.get("shared"),
        }
        for replicas, entry in sorted(placement.get("by_replicas", {}).items(), key=_int_key)
    ]
    return {"mode": placement.get("mode"), "machine": placement.get("machine"), "rows": rows}


def _int_key(item: tuple[str, Any]) -> int:
    return int(item[0])


def _counts(run: RunFolder, context: _Context) -> dict[str, int]:
    results = run.results
    stored = {r.key for r in results}
    planned = run.record.planned
    return {
        "planned": len(planned),
        "stored": len(results),
        "not_measured": sum(1 for p in planned if p.key not in stored),
        "ok": sum(1 for r in results if r.status == "ok"),
        "failed": sum(1 for r in results if r.status == "failed"),
        "unstable": sum(1 for r in results if r.status == "ok" and not r.stable),
        "invalid": sum(1 for r in results if r.status == "ok" and not r.valid),
        "configurations": len(context.configs),
    }


def _metric_info(metric_id: str) -> dict[str, str]:
    m = metric(metric_id)
    return {"label": m.label(), "header": m.header, "unit": m.unit, "direction": m.direction}


def _environment(run: RunFolder) -> dict[str, Any]:
    """The machine the run measured on, as the sweep recorded it."""
    return dict(run.environment)


def _comparison(compared: ComparisonFile | None) -> dict[str, Any] | None:
    """compare.json as a table: its summary facts, then one row per point and metric."""
    if compared is None:
        return None
    columns = compared.columns()
    return {
        "summary": compared.summary,
        "columns": columns,
        "rows": [[row.get(c) for c in columns] for row in compared.rows],
        "verdicts": [str(row.get("verdict") or "") for row in compared.rows],
    }


def check_run_dir(run_dir: Path) -> Path:
    """The run folder as a Path; UserError when it does not exist."""
    path = Path(run_dir)
    if not path.is_dir():
        raise UserError(f"{path} is not a folder; give a run folder (reports/<run-id>)")
    return path
