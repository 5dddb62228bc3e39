"""The per-run result file: figures per stage and in total, validity, the encoded histograms.

Pure but for `write_result` / `load_result`. The schema is documented in scenarios/README.md;
`SCHEMA_VERSION` grows with any change a reader must know about, and readers refuse newer files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scenarios.recording import Key, Tally, encode_histogram

SCHEMA_VERSION = 1
KIND = "batchbench.locust_run"
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p95", 95.0), ("p99", 99.0), ("p999", 99.9))
MAX_LATE_FRACTION = 0.01
MAX_CPU_PERCENT = 90.0  # Locust's own cpu_warning threshold


class ResultError(ValueError):
    """A result file that cannot be read (missing, not ours, or newer than this reader)."""


@dataclass(frozen=True)
class StageSpan:
    """When a stage ran, in seconds since the run started, and what it asked for."""

    index: int
    label: str
    users: int
    rate_rps: float | None
    rate_end_rps: float | None
    started_s: float
    ended_s: float
    warmup_s: float

    @property
    def window_s(self) -> float:
        """The measured part: the stage minus its warm-up (never negative)."""
        return max(0.0, self.ended_s - self.started_s - self.warmup_s)


def latency_figures(tally: Tally) -> dict[str, float | None]:
    """latency_{p50,p90,p95,p99,p999,max,mean}_ms of the successful requests (None if none)."""
    histogram = tally.histogram
    if not tally.ok:
        names = [name for name, _ in PERCENTILES] + ["max", "mean"]
        return {f"latency_{name}_ms": None for name in names}
    figures = {
        f"latency_{name}_ms": histogram.get_value_at_percentile(percent) / 1000.0
        for name, percent in PERCENTILES
    }
    figures["latency_max_ms"] = histogram.get_max_value() / 1000.0
    figures["latency_mean_ms"] = histogram.get_mean_value() / 1000.0
    return figures


def figures(tally: Tally, window_s: float) -> dict[str, Any]:
    """Counts, rates and latency of one tally over a window of `window_s` seconds."""
    error_count = sum(tally.errors.values())
    finished = tally.ok + error_count
    return {
        "window_s": round(window_s, 6),
        "count": tally.ok,
        "sent": tally.sent,
        "error_count": error_count,
        "errors": dict(sorted(tally.errors.items())),
        "error_rate": error_count / finished if finished else 0.0,
        "late": tally.late,
        "dropped": tally.dropped,
        "incomplete": tally.incomplete,
        "throughput_rps": tally.ok / window_s if window_s > 0 else None,
        "send_rate_rps": tally.sent / window_s if window_s > 0 else None,
        **latency_figures(tally),
        "histogram": encode_histogram(tally.histogram) if tally.ok else "",
    }


def union(tallies: Iterable[Tally]) -> Tally:
    """One tally holding all samples and counts of `tallies`."""
    total = Tally()
    for tally in tallies:
        total.add_message(tally.to_message())
    return total


def stage_figures(
    span: StageSpan, tallies: Mapping[Key, Tally], locust: Mapping[str, Any] | None
) -> dict[str, Any]:
    """A stage's entry: what it asked for, its measured figures, its warm-up counts, Locust's."""
    measured = tallies.get(Key(span.index), Tally())
    warmup = tallies.get(Key(span.index, warmup=True), Tally())
    return {
        "index": span.index,
        "label": span.label,
        "users": span.users,
        "rate_rps": span.rate_rps,
        "rate_end_rps": span.rate_end_rps,
        "started_s": round(span.started_s, 6),
        "ended_s": round(span.ended_s, 6),
        "warmup_s": span.warmup_s,
        **figures(measured, span.window_s),
        "warmup": {
            "count": warmup.ok,
            "sent": warmup.sent,
            "error_count": sum(warmup.errors.values()),
        },
        "locust": dict(locust or {}),
    }


def kind_figures(kinds: Mapping[str, Tally], window_s: float) -> list[dict[str, Any]]:
    """Measured figures per request kind (labels from `kind_label`), in kind order."""
    entries = []
    for label in sorted(kinds, key=lambda text: json.loads(text)):
        model, rows, length, payload = json.loads(label)
        fields = {"model": model, "rows": rows, "length": length, "payload": payload or None}
        entries.append({**fields, **figures(kinds[label], window_s)})
    return entries


def kind_label(model: str, rows: int, length: int, payload: str | None) -> str:
    """The label a request kind is recorded under (JSON: sortable, read back exactly)."""
    return json.dumps([model, rows, length, payload or ""])


def version_figures(versions: Mapping[str, Tally], window_s: float) -> list[dict[str, Any]]:
    """Measured figures per model version (or version-split arm), versions in number order."""
    return [
        {"version": version, **figures(versions[version], window_s)}
        for version in sorted(versions, key=version_order)
    ]


def version_order(version: str) -> tuple[int, int, str]:
    """Versions by number, then labels (arms) by name."""
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


def _second_versions(
    second_versions: Mapping[tuple[int, str], Tally],
) -> dict[int, dict[str, dict[str, Any]]]:
    """By second: each version's answers, failures (by code) and p99."""
    out: dict[int, dict[str, dict[str, Any]]] = {}
    for (second, version), tally in sorted(second_versions.items()):
        out.setdefault(second, {})[version] = {
            "ok": tally.ok,
            "errors": dict(sorted(tally.errors.items())),
            "latency_p99_ms": latency_figures(tally)["latency_p99_ms"],
        }
    return out


def timeline(
    seconds: Mapping[int, Tally],
    server: Mapping[int, Mapping[str, float | None]],
    second_versions: Mapping[tuple[int, str], Tally] | None = None,
) -> list[dict[str, Any]]:
    """One entry per second of the run: offered (sent + dropped) and achieved (succeeded)
    counts of the requests intended in that second, their p50/p99, errors (and by code),
    late sends, the server's queue depth and mean executed batch size over that second (when
    scraped), the second's latency histogram, and, when answers named their version, each
    version's answers, failures and p99 (``versions``)."""
    if not seconds and not server:
        return []
    by_version = _second_versions(second_versions or {})
    last = max([*seconds, *server])
    entries = []
    for second in range(last + 1):
        tally = seconds.get(second, Tally())
        latency = latency_figures(tally)
        entries.append(
            {
                "second": second,
                "offered": tally.sent + tally.dropped,
                "sent": tally.sent,
                "ok": tally.ok,
                "errors": sum(tally.errors.values()),
                "late": tally.late,
                "dropped": tally.dropped,
                "latency_p50_ms": latency["latency_p50_ms"],
                "latency_p99_ms": latency["latency_p99_ms"],
                "queue_depth": server.get(second, {}).get("queue_depth"),
                "batch_size_mean": server.get(second, {}).get("batch_size_mean"),
                "error_codes": dict(sorted(tally.errors.items())),
                "histogram": encode_histogram(tally.histogram) if tally.ok else "",
                **({"versions": by_version[second]} if second in by_version else {}),
            }
        )
    return entries


def validity(
    total: Mapping[str, Any], cpu_warning_on: Iterable[str], missing_reports: Iterable[str]
) -> list[str]:
    """Why a run cannot be trusted (empty list: valid): a saturated generator, lost samples."""
    reasons = []
    hot = sorted(cpu_warning_on)
    if hot:
        reasons.append(f"generator CPU above {MAX_CPU_PERCENT:g}% on: {', '.join(hot)}")
    if total["sent"] and total["late"] / total["sent"] > MAX_LATE_FRACTION:
        share = 100.0 * total["late"] / total["sent"]
        reasons.append(
            f"{total['late']} of {total['sent']} sends ({share:.1f}%) left later than the "
            f"tolerance: the generator could not keep up (limit {MAX_LATE_FRACTION:.0%})"
        )
    missing = sorted(missing_reports)
    if missing:
        reasons.append(f"no final report from worker(s) {', '.join(missing)}: samples are missing")
    if not total["sent"]:
        reasons.append("no request was sent in the measurement window")
    return reasons


def build_result(
    meta: Mapping[str, Any],
    spans: Iterable[StageSpan],
    tallies: Mapping[Key, Tally],
    locust: Mapping[str, Any],
    generator: Mapping[str, Any],
    *,
    kinds: Mapping[str, Tally] | None = None,
    seconds: Mapping[int, Tally] | None = None,
    server_seconds: Mapping[int, Mapping[str, float | None]] | None = None,
    versions: Mapping[str, Tally] | None = None,
    second_versions: Mapping[tuple[int, str], Tally] | None = None,
) -> dict[str, Any]:
    """The whole result document.

    `kinds` (measured tallies by `kind_label`) become `by_kind`; `seconds` (tallies by the
    second of the run) and `server_seconds` (queue depth and batch size by second) become
    `timeline`; `versions` (measured tallies by answering version) become `by_version`, and
    `second_versions` each timeline second's `versions`.

    `locust` maps "total" and stage indexes (as strings) to Locust's own figures;
    `generator` has "processes" (per process: cpu_seconds, cpu_percent, cpu_percent_max,
    cpu_warning, final_report) and the rest of what is known about the load generator.
    """
    spans = list(spans)
    measured = [tallies[key] for key in tallies if not key.warmup]
    total = figures(union(measured), sum(span.window_s for span in spans))
    total["locust"] = dict(locust.get("total", {}))
    processes = generator.get("processes", {})
    reasons = validity(
        total,
        [name for name, info in processes.items() if _saturated(info)],
        [name for name, info in processes.items() if not info.get("final_report", True)],
    )
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        **meta,
        "valid": not reasons,
        "invalid_reasons": reasons,
        "generator": {**generator, "cpu_seconds": _cpu_seconds(processes)},
        "total": total,
        "stages": [stage_figures(span, tallies, locust.get(str(span.index))) for span in spans],
        "by_kind": kind_figures(kinds or {}, total["window_s"]),
        "by_version": version_figures(versions or {}, total["window_s"]),
        "timeline": timeline(seconds or {}, server_seconds or {}, second_versions),
    }


def _saturated(process: Mapping[str, Any]) -> bool:
    """Locust's cpu_warning, or a CPU average over its threshold (short runs get no warning:
    Locust samples CPU every 5 s)."""
    return bool(process.get("cpu_warning")) or process.get("cpu_percent", 0.0) > MAX_CPU_PERCENT


def _cpu_seconds(processes: Mapping[str, Mapping[str, Any]]) -> float:
    return round(sum(info.get("cpu_seconds", 0.0) for info in processes.values()), 6)


def write_result(path: Path, result: Mapping[str, Any]) -> None:
    """Write atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    scratch.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(scratch, path)


def load_result(path: Path) -> dict[str, Any]:
    """Read a result file; ResultError if it is not one or is newer than this reader."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ResultError(f"cannot read result file {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise ResultError(f"{path} is not a batchbench Locust result file")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ResultError(f"{path} has no schema_version: not a batchbench Locust result file")
    if version > SCHEMA_VERSION:
        raise ResultError(
            f"{path} has schema_version {version}; this batchbench reads up to {SCHEMA_VERSION}"
        )
    return data
