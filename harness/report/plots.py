"""The report's charts: matplotlib figures rendered to inline SVG text.

No pyplot and no global backend: each chart is a bare ``Figure`` saved through the SVG canvas
inside an ``rc_context``, so rendering leaves matplotlib's state alone. Output is deterministic
(a fixed hash salt per chart, no date) and small (text kept as text, in the page's own fonts),
so the same run gives the same report byte for byte. Each chart's salt differs, so the ids of
several SVGs inlined in one page never collide.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib as mpl
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter
from matplotlib.typing import RcKeyType

from harness.metrics import metric
from harness.plan.batching_fields import BATCH_TIMEOUT_MICROS, MAX_BATCH_SIZE

_RC: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
COLORS = {
    "ok": "#1f77b4",
    "miss": "#ff7f0e",
    "baseline": "#7f7f7f",
    "pareto": "#2ca02c",
    "chosen": "#d62728",
    "slo": "#d62728",
}
PERCENTILE_COLORS = ("#1f77b4", "#2ca02c", "#ff7f0e", "#d62728")
MAX_BAR_ROWS = 30
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.DOTALL)
_XMLNS = re.compile(r'\s+xmlns(?::xlink)?="[^"]*"')


def to_svg(fig: Figure, name: str) -> str:
    """The figure as an ``<svg>`` element (no XML prolog), ids salted with ``name``."""
    buffer = io.StringIO()
    with mpl.rc_context({**_RC, "svg.hashsalt": f"batchbench-{name}"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = buffer.getvalue()
    # Inline in HTML an SVG needs no prolog, no RDF metadata and no namespace declarations
    # (the HTML parser knows svg and xlink): without them the page holds no URL at all.
    svg = _METADATA.sub("", text[text.index("<svg") :], count=1)
    return _XMLNS.sub("", svg, count=2)


def _figure(width: float, height: float) -> Figure:
    with mpl.rc_context(_RC):
        return Figure(figsize=(width, height), layout="constrained")


def _draw(name: str, width: float, height: float, draw: Callable[[Figure], None]) -> str:
    """Make a figure, let ``draw`` fill it under the report's style, return its SVG."""
    with mpl.rc_context({**_RC, "svg.hashsalt": f"batchbench-{name}"}):
        fig = _figure(width, height)
        draw(fig)
        return to_svg(fig, name)


# --- section 2: throughput vs p99 ---------------------------------------------------------------


def tradeoff_chart(tradeoff: Mapping[str, Any]) -> str | None:
    """Every setting as a dot: p99 across, throughput up; Pareto front, SLO and pick marked."""
    dots = tradeoff["points"]
    if not dots:
        return None

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        _error_bars(ax, dots)
        _scatter_groups(ax, dots)
        _pareto_line(ax, [d for d in dots if d["pareto"]])
        _mark_chosen(ax, [d for d in dots if d["recommended"]])
        bound = tradeoff.get("slo_p99_ms")
        if bound is not None:
            ax.axvline(bound, color=COLORS["slo"], linestyle="--", linewidth=1.2)
            ax.annotate(
                f"SLO p99 ≤ {bound:g} ms",
                (bound, 0),
                xycoords=("data", "axes fraction"),
                xytext=(4, 6),
                textcoords="offset points",
                color=COLORS["slo"],
            )
        _log_if_wide(ax, [d["latency_p99_ms"] for d in dots], axis="x")
        ax.set_xlabel(metric("latency_p99_ms").label())
        ax.set_ylabel(metric("throughput_rps").label())
        ax.set_ylim(bottom=0)
        ax.legend(loc="best", fontsize=8, framealpha=0.9)

    return _draw("tradeoff", 7.5, 4.6, draw)


def _error_bars(ax: Any, dots: Sequence[Mapping[str, Any]]) -> None:
    """Each setting's 95% intervals of p99 (across, against the SLO line) and throughput."""
    with_ci = [d for d in dots if d.get("throughput_ci") and d.get("p99_ci")]
    if not with_ci:
        return
    x = [d["latency_p99_ms"] for d in with_ci]
    y = [d["throughput_rps"] for d in with_ci]
    xerr = [
        [max(0.0, v - d["p99_ci"][0]) for v, d in zip(x, with_ci, strict=True)],
        [max(0.0, d["p99_ci"][1] - v) for v, d in zip(x, with_ci, strict=True)],
    ]
    yerr = [
        [max(0.0, v - d["throughput_ci"][0]) for v, d in zip(y, with_ci, strict=True)],
        [max(0.0, d["throughput_ci"][1] - v) for v, d in zip(y, with_ci, strict=True)],
    ]
    ax.errorbar(
        x,
        y,
        xerr=xerr,
        yerr=yerr,
        fmt="none",
        ecolor="#999",
        elinewidth=0.8,
        capsize=2,
        zorder=2,
        label="95% interval",
    )


def _scatter_groups(ax: Any, dots: Sequence[Mapping[str, Any]]) -> None:
    groups = (
        ("unbatched baseline", lambda d: d["baseline"], COLORS["baseline"], "s"),
        (
            "meets the SLO",
            lambda d: not d["baseline"] and d["meets_slo"] is not False,
            COLORS["ok"],
            "o",
        ),
        (
            "misses the SLO",
            lambda d: not d["baseline"] and d["meets_slo"] is False,
            COLORS["miss"],
            "o",
        ),
    )
    for label, test, color, marker in groups:
        chosen = [d for d in dots if test(d)]
        if not chosen:
            continue
        if all(d["meets_slo"] is None for d in chosen) and label != "unbatched baseline":
            label = "batched"
        faces = [to_rgba(color) if d["stable"] and d["valid"] else "none" for d in chosen]
        ax.scatter(
            [d["latency_p99_ms"] for d in chosen],
            [d["throughput_rps"] for d in chosen],
            c=faces,
            edgecolors=color,
            marker=marker,
            s=36,
            label=label,
            zorder=3,
        )
    if any(not (d["stable"] and d["valid"]) for d in dots):
        ax.scatter(
            [], [], facecolors="none", edgecolors="#444", marker="o", label="unstable or invalid"
        )


def _pareto_line(ax: Any, front: Sequence[Mapping[str, Any]]) -> None:
    if not front:
        return
    front = sorted(front, key=lambda d: d["latency_p99_ms"])
    ax.plot(
        [d["latency_p99_ms"] for d in front],
        [d["throughput_rps"] for d in front],
        color=COLORS["pareto"],
        linewidth=1.5,
        marker="o",
        markersize=9,
        fillstyle="none",
        label="Pareto front",
        zorder=2,
    )


def _mark_chosen(ax: Any, chosen: Sequence[Mapping[str, Any]]) -> None:
    for i, d in enumerate(chosen):
        ax.scatter(
            [d["latency_p99_ms"]],
            [d["throughput_rps"]],
            marker="*",
            s=220,
            color=COLORS["chosen"],
            zorder=4,
            label="recommended" if i == 0 else None,
        )
        ax.annotate(
            d["label"],
            (d["latency_p99_ms"], d["throughput_rps"]),
            xytext=(8, 6),
            textcoords="offset points",
            fontsize=8,
            color=COLORS["chosen"],
        )


def _log_if_wide(ax: Any, values: Sequence[float], axis: str) -> None:
    positive = [v for v in values if v and v > 0]
    if positive and max(positive) / min(positive) > 20:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


# --- section 3: heatmaps ------------------------------------------------------------------------


def heatmap_chart(grid: Mapping[str, Any], index: int) -> str | None:
    """The max batch size down, the batch timeout across, the cell's figure written in it."""
    cells = grid["cells"]
    values = [v for row in cells for v in row if v is not None]
    if not cells or not cells[0]:
        return None

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        ax.grid(False)
        matrix = [[math.nan if v is None else v for v in row] for row in cells]
        image = ax.imshow(
            matrix,
            cmap="viridis",
            aspect="auto",
            vmin=min(values, default=0),
            vmax=max(values, default=1),
        )
        _annotate_cells(ax, cells, min(values, default=0), max(values, default=1))
        ax.set_xticks(range(len(grid["col_labels"])), grid["col_labels"])
        ax.set_yticks(range(len(grid["row_labels"])), grid["row_labels"])
        ax.set_xlabel(f"{BATCH_TIMEOUT_MICROS.name} (as ms)")
        ax.set_ylabel(f"{MAX_BATCH_SIZE.name} (rows)")
        ax.set_title(_heatmap_title(grid))
        fig.colorbar(image, ax=ax, label=grid.get("unit", "req/s"), shrink=0.9)

    rows, cols = len(cells), len(cells[0])
    return _draw(f"heatmap-{index}", 2.8 + 0.9 * cols, 1.6 + 0.45 * rows, draw)


def _annotate_cells(
    ax: Any, cells: Sequence[Sequence[float | None]], low: float, high: float
) -> None:
    for r, row in enumerate(cells):
        for c, value in enumerate(row):
            text = "—" if value is None else f"{value:,.0f}"
            # viridis is light at its top: dark text there, white text on the dark end.
            dark = value is not None and (value - low) > 0.6 * (high - low)
            ax.text(
                c,
                r,
                text,
                ha="center",
                va="center",
                fontsize=8,
                color="black" if dark or value is None else "white",
            )


def _heatmap_title(grid: Mapping[str, Any]) -> str:
    title = grid["title"]
    if grid.get("baseline") is not None:
        title += f" — unbatched: {grid['baseline']:,.0f} req/s"
    return title


# --- section 4: latency percentiles -------------------------------------------------------------


def latency_chart(latency: Mapping[str, Any]) -> str | None:
    """p50/p90/p99/p99.9 against load per configuration, or as bars with one load level."""
    series = [s for s in latency["series"] if any(v is not None for v in s["latency_p99_ms"])]
    if not series:
        return None
    if latency["mode"] == "bars":
        return _latency_bars(series, latency["percentiles"])
    return _latency_curves(series, latency["percentiles"], latency["load_kind"])


def _load_label(load_kind: str) -> str:
    labels = {"concurrency": "Concurrent clients (users)", "trace": "Trace replay speed (x)"}
    return labels.get(load_kind, "Offered rate (req/s)")


def _latency_curves(
    series: Sequence[Mapping[str, Any]], percentiles: Sequence[str], kind: str
) -> str:
    cols = min(3, len(series))
    rows = math.ceil(len(series) / cols)

    def draw(fig: Figure) -> None:
        axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
        for ax, s in zip(axes.flat, series, strict=False):
            for pid, color in zip(percentiles, PERCENTILE_COLORS, strict=True):
                pairs = [(x, y) for x, y in zip(s["loads"], s[pid], strict=True) if y is not None]
                if pairs:
                    ax.plot(
                        *zip(*pairs, strict=True),
                        marker="o",
                        markersize=3,
                        color=color,
                        label=metric(pid).header,
                    )
            ax.set_title(s["label"], fontsize=8)
            ax.set_xlabel(_load_label(kind))
            ax.set_yscale("log")
        for ax in axes.flat[len(series) :]:
            ax.set_visible(False)
        for ax in axes[:, 0]:
            ax.set_ylabel("Latency (ms)")
        axes.flat[0].legend(fontsize=7)

    return _draw("latency", 3.0 * cols + 0.6, 2.5 * rows + 0.4, draw)


def _latency_bars(series: Sequence[Mapping[str, Any]], percentiles: Sequence[str]) -> str:
    width = 0.8 / len(percentiles)

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        for i, (pid, color) in enumerate(zip(percentiles, PERCENTILE_COLORS, strict=True)):
            heights = [(s[pid][0] if s[pid] else None) for s in series]
            xs = [j + (i - (len(percentiles) - 1) / 2) * width for j in range(len(series))]
            ax.bar(xs, [h or 0 for h in heights], width, color=color, label=metric(pid).header)
        ax.set_xticks(range(len(series)), [s["label"] for s in series], rotation=20, ha="right")
        ax.set_ylabel("Latency (ms)")
        ax.set_yscale("log")
        ax.legend(fontsize=8)

    return _draw("latency", max(6.0, 1.3 * len(series) + 1.5), 3.8, draw)


# --- section 5: batching ------------------------------------------------------------------------


def batch_size_chart(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """Per setting, the share of executed batches in each batch-size bucket (stacked)."""
    rows = [r for r in _bar_rows(rows) if r["batch_size_buckets"]]
    if not rows:
        return None
    buckets = list(dict.fromkeys(b["label"] for r in rows for b in r["batch_size_buckets"]))
    colors = mpl.colormaps["viridis"]

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        ax.grid(False, axis="y")
        left = [0.0] * len(rows)
        for i, label in enumerate(buckets):
            shares = [_share(r, label) for r in rows]
            ax.barh(
                range(len(rows)),
                shares,
                left=left,
                label=label,
                color=colors(i / max(1, len(buckets) - 1)),
            )
            left = [a + b for a, b in zip(left, shares, strict=True)]
        _row_ticks(ax, rows)
        ax.set_xlabel("Share of executed batches (%)")
        ax.set_xlim(0, 100)
        ax.legend(
            title="batch size (rows)",
            fontsize=7,
            ncols=min(len(buckets), 8),
            loc="upper center",
            bbox_to_anchor=(0.5, -0.14 - 0.2 / len(rows)),
        )

    return _draw("batch-sizes", 8.0, 1.6 + 0.32 * len(rows), draw)


def time_split_chart(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """Per setting, the mean time a request queued and the mean time its batch computed."""
    rows = [
        r
        for r in _bar_rows(rows)
        if r["queue_time_mean_ms"] is not None or r["compute_time_mean_ms"] is not None
    ]
    if not rows:
        return None

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        ax.grid(False, axis="y")
        queue = [r["queue_time_mean_ms"] or 0.0 for r in rows]
        compute = [r["compute_time_mean_ms"] or 0.0 for r in rows]
        ax.barh(range(len(rows)), queue, color="#ff7f0e", label=metric("queue_time_mean_ms").header)
        ax.barh(
            range(len(rows)),
            compute,
            left=queue,
            color="#1f77b4",
            label=metric("compute_time_mean_ms").header,
        )
        _row_ticks(ax, rows)
        ax.set_xlabel("Time (ms)")
        ax.legend(fontsize=8, loc="lower right")

    return _draw("time-split", 8.0, 1.2 + 0.32 * len(rows), draw)


def _bar_rows(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """At most MAX_BAR_ROWS rows: the top configurations first when there are too many."""
    if len(rows) <= MAX_BAR_ROWS:
        return list(rows)
    return sorted(rows, key=lambda r: not r["top"])[:MAX_BAR_ROWS]


def _share(row: Mapping[str, Any], label: str) -> float:
    total = sum(b["count"] for b in row["batch_size_buckets"]) or 1
    count = sum(b["count"] for b in row["batch_size_buckets"] if b["label"] == label)
    return 100.0 * count / total


def _row_ticks(ax: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    labels = [f"{r['label']} @ {r['load']:g}" for r in rows]
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()


def padding_chart(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """Per setting, padded rows ÷ executed rows: what the allowed batch sizes (or padding variable
    lengths) costs against this traffic."""
    rows = [r for r in _bar_rows(rows) if r.get("padding_rows")]
    if not rows:
        return None

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        ax.grid(False, axis="y")
        shares = [100.0 * (r["padding_ratio"] or 0.0) for r in rows]
        ax.barh(range(len(rows)), shares, color="#9467bd")
        for i, r in enumerate(rows):
            spent = r.get("padding_compute_ms_per_1k")
            if spent is not None:
                ax.annotate(
                    f"{spent:.3g} ms compute / 1k requests",
                    (shares[i], i),
                    xytext=(4, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=7,
                )
        _row_ticks(ax, rows)
        ax.set_xlabel("Padded rows ÷ executed rows (%)")
        ax.set_xlim(0, max(100.0, max(shares) * 1.1))

    return _draw("padding", 8.0, 1.2 + 0.32 * len(rows), draw)


# --- section 5b: over time ----------------------------------------------------------------------


def timeline_chart(series: Mapping[str, Any], index: int) -> str | None:
    """One point, second by second: offered and answered requests, p50/p99 of the requests
    sent in each second, and the server's queue depth and mean executed batch size."""
    xs = series["at_s"]
    if not xs:
        return None

    def draw(fig: Figure) -> None:
        rate, latency, server = fig.subplots(3, 1, sharex=True)
        _line(rate, xs, series["offered"], "offered", COLORS["baseline"])
        _line(rate, xs, series["ok"], "answered OK", COLORS["ok"])
        _line(rate, xs, series["errors"], "errors", COLORS["miss"])
        rate.set_ylabel("requests / s")
        _line(latency, xs, series["latency_p50_ms"], "p50", PERCENTILE_COLORS[0])
        _line(latency, xs, series["latency_p99_ms"], "p99", PERCENTILE_COLORS[3])
        latency.set_ylabel("latency (ms)")
        if any(v for v in series["latency_p99_ms"] if v):
            latency.set_yscale("log")
            latency.yaxis.set_major_formatter(ScalarFormatter())
            latency.yaxis.set_minor_formatter(NullFormatter())
        _line(server, xs, series["queue_depth"], "queue depth (tasks)", "#ff7f0e")
        _line(server, xs, series["batch_size_mean"], "mean executed batch (rows)", "#1f77b4")
        server.set_xlabel("seconds since the point's first load run started")
        for ax in (rate, latency, server):
            _shade_warmup(ax, xs, series["warmup"])
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="upper right", ncols=3)
        rate.set_title(series["label"], loc="left")

    return _draw(f"timeline-{index}", 8.0, 5.2, draw)


def _line(ax: Any, xs: Sequence[float], ys: Sequence[Any], label: str, color: str) -> None:
    """A series with gaps where a second has no value (no request, or no scrape)."""
    values = [math.nan if y is None else float(y) for y in ys]
    if any(not math.isnan(v) for v in values):
        ax.plot(xs, values, label=label, color=color, linewidth=1.2, marker=".", markersize=3)


def _shade_warmup(ax: Any, xs: Sequence[float], warmup: Sequence[bool]) -> None:
    for x, warm in zip(xs, warmup, strict=True):
        if warm:
            ax.axvspan(x - 0.5, x + 0.5, color="#dddddd", alpha=0.5, linewidth=0)


# --- roll-outs -----------------------------------------------------------------------------------

VERSION_COLORS = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b")


def rollout_chart(run: Mapping[str, Any], index: int) -> str | None:
    """One roll-out second by second: answers per version (and failures), p99, with the
    switch and the server's new version becoming AVAILABLE marked."""
    timeline = run.get("timeline") or []
    if not timeline:
        return None
    xs = [float(entry["second"]) for entry in timeline]
    versions = sorted({v for entry in timeline for v in (entry.get("versions") or {})})
    figures = run["figures"]

    def draw(fig: Figure) -> None:
        answers, latency = fig.subplots(2, 1, sharex=True)
        for i, version in enumerate(versions):
            counts = [(e.get("versions") or {}).get(version, {}).get("ok") for e in timeline]
            color = VERSION_COLORS[i % len(VERSION_COLORS)]
            _line(answers, xs, counts, f"answered by version {version}", color)
        _line(answers, xs, [e.get("errors") or None for e in timeline], "failed", COLORS["miss"])
        answers.set_ylabel("requests / s")
        _line(latency, xs, [e.get("latency_p99_ms") for e in timeline], "p99", COLORS["chosen"])
        _line(latency, xs, [e.get("latency_p50_ms") for e in timeline], "p50", COLORS["ok"])
        latency.set_ylabel("latency (ms)")
        if any(e.get("latency_p99_ms") for e in timeline):
            latency.set_yscale("log")
            latency.yaxis.set_major_formatter(ScalarFormatter())
            latency.yaxis.set_minor_formatter(NullFormatter())
        latency.set_xlabel("seconds since the load started (each point: requests sent that second)")
        available = (run.get("server") or {}).get("new_available_at_s")
        for ax in (answers, latency):
            ax.axvline(figures["switch_at_s"], color="#000000", linestyle="--", linewidth=1,
                       label="switch")  # fmt: skip
            if available is not None:
                ax.axvline(available, color="#7f7f7f", linestyle=":", linewidth=1,
                           label="new version AVAILABLE")  # fmt: skip
            ax.legend(fontsize=7, loc="upper left", ncols=3)
        answers.set_title(f"warm-up records: {run['warmup_records']}", loc="left")

    return _draw(f"rollout-{index}", 8.0, 4.4, draw)


# --- a search's path -----------------------------------------------------------------------------


def search_chart(search: Mapping[str, Any] | None) -> str | None:
    """The objective of each trial in order (hollow: missed the SLO), the best-so-far line,
    and the accepted moves of a quick search ringed."""
    trials = (search or {}).get("trials") or []
    measured = [t for t in trials if t["objective"] is not None]
    if not search or not measured:
        return None

    def draw(fig: Figure) -> None:
        ax = fig.add_subplot()
        met = [t for t in measured if t["feasible"]]
        missed = [t for t in measured if not t["feasible"]]
        ax.scatter(
            [t["trial"] for t in met],
            [t["objective"] for t in met],
            color=COLORS["ok"],
            label="met the SLO",
            zorder=3,
        )
        ax.scatter(
            [t["trial"] for t in missed],
            [t["objective"] for t in missed],
            facecolors="none",
            edgecolors=COLORS["miss"],
            label="missed the SLO",
            zorder=3,
        )
        moves = [t for t in measured if t["accepted"]]
        if moves:
            ax.scatter(
                [t["trial"] for t in moves],
                [t["objective"] for t in moves],
                s=160,
                facecolors="none",
                edgecolors=COLORS["pareto"],
                label="move accepted",
            )
        best = [(t["trial"], t["best_so_far"]) for t in trials if t["best_so_far"] is not None]
        if best:
            xs, ys = zip(*best, strict=True)
            ax.step(xs, ys, where="post", color=COLORS["chosen"], label="best so far")
        ax.set_xlabel("trial (points in the order measured)")
        ax.set_ylabel(metric(search["metric"]).label())
        ax.legend(loc="best", fontsize=8, framealpha=0.9)

    return _draw("search", 7.5, 3.8, draw)


# --- all of them --------------------------------------------------------------------------------


def all_charts(data: Mapping[str, Any]) -> dict[str, Any]:
    """Every chart of the report, by section; None (or an empty list) where there is no data."""
    return {
        "tradeoff": tradeoff_chart(data["tradeoff"]),
        "heatmaps": [heatmap_chart(g, i) for i, g in enumerate(data["heatmaps"])],
        "latency": latency_chart(data["latency"]),
        "batch_sizes": batch_size_chart(data["batching"]["rows"]),
        "time_split": time_split_chart(data["batching"]["rows"]),
        "padding": padding_chart(data["batching"]["rows"]),
        "timelines": [timeline_chart(s, i) for i, s in enumerate(data.get("timelines", []))],
        "search": search_chart(data.get("search")),
    }
