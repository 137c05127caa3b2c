"""Matplotlib figures of a run and of a matrix (Agg canvas, PNG, 100 dpi).

Every figure plots only what :mod:`walstress.report.data` computed, and tags
its artists with a ``gid`` (``wal``, ``db``, ``checkpoint:<mode>:<outcome>``,
``fault:<name>``, ``raw:<kind>``, ``p99:<kind>``, ``cdf:<kind>``,
``throughput:<kind>``, ``wal:<cell>``, ...) so a test can find a series and
compare it with the history. A legend lists only what is drawn: no entry for
an empty series (a percentile line of a run too short for one, slow writes in
a run without any), and no legend box when nothing is left to list. No pyplot: figures are plain
``matplotlib.figure.Figure`` objects on an Agg canvas, so drawing never
touches a display nor global state.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import Collection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from walstress.report import data as D

DPI = 100
MIB = 1024 * 1024
CELL_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
KIND_COLOURS = {"write": "#1b6fa8", "read": "#2a9d5c", "checkpoint": "#8e44ad", "open": "#c0392b"}
OUTCOME_COLOURS = {"complete": "#2ca02c", "partial": "#ff9f1c", "busy": "#d62728"}
MODE_MARKERS = {"PASSIVE": "o", "FULL": "s", "RESTART": "D", "TRUNCATE": "v", "NONE": "x"}
FAULT_COLOUR = "#808080"
STALL_COLOUR = "#d62728"
# moments of a run: what the lock watch saw, and SQLite's first corruption error
EVENT_STYLES = {"lock_lost": ("#b0006e", "-", "lock lost"), "deleted_open": ("#e67e00", ":", "deleted file in use"),
                "two_libraries": ("#6a3d9a", "-.", "two SQLite libraries"),
                "split_wal": ("#1a7f7f", "--", "one database, two -shm"),
                "corruption_error": ("#000000", (0, (6, 2, 1, 2)), "first corruption error")}
PERCENTILE_MIN_COUNT = 5  # buckets with fewer operations get no percentile lines
SLOW_MS = 100.0  # writes slower than this are drawn as large markers in the per-cell figure
TICK_FONT_SIZE = 9


def cell_colour(index: int) -> str:
    """The colour of a cell, the same in every figure (by the cell's position in the matrix)."""
    return CELL_COLOURS[index % len(CELL_COLOURS)]


def kind_colour(kind: str) -> str:
    return KIND_COLOURS.get(kind, "#555555")


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _style_axes(ax: Any) -> None:
    ax.grid(True, which="major", alpha=0.3)
    ax.tick_params(labelsize=TICK_FONT_SIZE)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    return path


def shade_faults(ax: Any, run: D.RunData) -> list[str]:
    """Fault windows as grey spans, instant faults as dashed lines, and the run's events (the lock
    watch's, the first corruption error) as coloured lines; returns the names drawn."""
    names = []
    for window in D.fault_windows(run):
        if window["instant"] or window["t_end"] is None or window["t_end"] <= window["t"]:
            ax.axvline(window["t"], color=FAULT_COLOUR, ls="--", lw=1.0, gid=f"fault:{window['name']}")
        else:
            ax.axvspan(window["t"], window["t_end"], color=FAULT_COLOUR, alpha=0.18, lw=0,
                       gid=f"fault:{window['name']}")
        names.append(window["name"])
    seen: set[tuple[str, Any]] = set()
    for event in run.events:
        key = (event["kind"], event.get("worker"))
        if key in seen:  # one line per kind and worker: its first
            continue
        seen.add(key)
        colour, style, _ = EVENT_STYLES[event["kind"]]
        ax.axvline(event["t"], color=colour, ls=style, lw=1.3, zorder=4,
                   gid=f"event:{event['kind']}:{event.get('worker') or ''}")
        names.append(f"event:{event['kind']}")
    return names


def shade_stalls(ax: Any, run: D.RunData) -> int:
    """Stretches in which no write committed (longer than ``D.STALL_GAP_S``), shaded red."""
    windows = D.stall_windows(run)
    for start, end in windows:
        ax.axvspan(start, end, color=STALL_COLOUR, alpha=0.15, lw=0, gid="stall")
    return len(windows)


def _stall_legend(count: int) -> list[Any]:
    return [Patch(color=STALL_COLOUR, alpha=0.3, label=f"write stall: no commit > {D.STALL_GAP_S:g} s ({count})")] \
        if count else []


def _fault_legend(names: list[str]) -> list[Any]:
    handles: list[Any] = []
    for name in dict.fromkeys(names):
        if name.startswith("event:"):
            colour, style, label = EVENT_STYLES[name.split(":", 1)[1]]
            handles.append(Line2D([], [], color=colour, ls=style, lw=1.3, label=label))
        else:
            handles.append(Patch(color=FAULT_COLOUR, alpha=0.3, label=f"fault: {name}"))
    return handles


def _drawn(artist: Any) -> bool:
    """Whether a plotted artist shows anything: a line with a finite point, a scatter with a point."""
    if isinstance(artist, Line2D):
        x, y = (np.asarray(v, dtype=float) for v in artist.get_data())
        return bool(np.any(np.isfinite(x) & np.isfinite(y))) if x.shape == y.shape else bool(x.size and y.size)
    if isinstance(artist, Collection):
        return bool(np.asarray(artist.get_offsets()).size)
    return True


def _legend(ax: Any, extra: list[Any] | None = None, *, auto: bool = True, **options: Any) -> None:
    """A legend of the axes' labelled artists that show something (``auto``), then ``extra`` proxy
    handles (each for something drawn); none at all when that leaves nothing."""
    handles = [h for h in ax.get_legend_handles_labels()[0] if _drawn(h)] if auto else []
    handles += extra or []
    if handles:
        ax.legend(handles=handles, **options)


def _with_gaps(t: np.ndarray, y: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Bucket series with a NaN between buckets that are not neighbours, so a line breaks at a gap."""
    if t.size < 2:
        return t, y
    gaps = np.flatnonzero(np.diff(t) > width * 1.5)
    return (np.insert(t.astype(float), gaps + 1, t[gaps] + width),
            np.insert(y.astype(float), gaps + 1, np.nan))


def _title(fig: Figure, text: str, colour: str | None) -> None:
    fig.suptitle(text, fontsize=11, color=colour or "black", x=0.01, ha="left")


def _kind_panels(run: D.RunData, top_in: float,
                 per_kind_in: float) -> tuple[Figure, list[tuple[Any, str, D.KindOps]], float]:
    """One panel a kind of operation (``write`` alone when the run has none), on a shared time axis:
    the figure, (axes, kind, operations) a panel, top to bottom, and the time bucket width."""
    kinds = run.kinds or ["write"]
    fig = _figure(10, top_in + per_kind_in * len(kinds))
    axes = np.atleast_1d(fig.subplots(len(kinds), 1, sharex=True, squeeze=False)[:, 0])
    empty = D.KindOps(np.array([]), np.array([]), np.array([], dtype=bool))
    panels = [(ax, kind, run.ops.get(kind, empty)) for ax, kind in zip(axes, kinds)]
    return fig, panels, D.bucket_seconds(run.span_s)


# -------------------------------------------------------------- one run
def draw_sizes(run: D.RunData, *, title: str = "", colour: str = CELL_COLOURS[0]) -> Figure:
    """WAL (top, checkpoints marked by mode and outcome) and database size (bottom) over time."""
    fig = _figure(10, 5.2)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2.2, 1])
    top.plot(run.size_t, run.wal_bytes / MIB, color=colour, lw=1.2, gid="wal", label="WAL (-wal file)")
    bottom.plot(run.size_t, run.db_bytes / MIB, color="#444444", lw=1.2, gid="db", label="database file")
    handles: list[Any] = [Line2D([], [], color=colour, lw=1.5, label="WAL size")] if run.size_t.size else []
    markers = D.checkpoint_markers(run)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for m in markers:
        groups.setdefault((m["mode"], m["outcome"]), []).append(m)
    for (mode, outcome), items in sorted(groups.items()):
        top.scatter([m["t"] for m in items], [m["wal_bytes"] / MIB for m in items],
                    marker=MODE_MARKERS.get(mode, "o"), s=22, facecolors=OUTCOME_COLOURS[outcome],
                    edgecolors="black", linewidths=0.4, zorder=3, gid=f"checkpoint:{mode}:{outcome}")
    for mode in sorted({m["mode"] for m in markers}):
        handles.append(Line2D([], [], ls="none", marker=MODE_MARKERS.get(mode, "o"), color="black",
                              markerfacecolor="white", label=f"checkpoint {mode}"))
    for outcome in D.CHECKPOINT_OUTCOMES:
        count = sum(1 for m in markers if m["outcome"] == outcome)
        if count:
            handles.append(Patch(color=OUTCOME_COLOURS[outcome], label=f"{outcome} ({count})"))
    names = shade_faults(top, run) + shade_faults(bottom, run)
    handles += _fault_legend(names)
    _legend(top, handles, auto=False, loc="upper left", bbox_to_anchor=(1.0, 1.0), framealpha=0.85)
    top.set_ylabel("WAL size (MiB)")
    bottom.set_ylabel("db size (MiB)")
    bottom.set_xlabel("seconds since start")
    for ax in (top, bottom):
        _style_axes(ax)
        ax.set_xlim(left=0)
    top.set_ylim(bottom=0)
    peak = int(run.wal_bytes.max()) if run.wal_bytes.size else 0
    _title(fig, f"{title}  WAL and database size  (WAL peak {peak / MIB:.1f} MiB, "
                f"{len(markers)} checkpoints)", colour)
    return fig


def draw_latency(run: D.RunData, *, title: str = "", colour: str | None = None) -> Figure:
    """Per kind: every operation's latency (points) and p50 / p95 / p99 per time bucket (lines,
    for buckets of at least ``PERCENTILE_MIN_COUNT`` operations)."""
    fig, panels, width = _kind_panels(run, 1.0, 2.0)
    for ax, kind, ops in panels:
        t, ms = D.raw_points(ops)
        size, alpha = (6, 0.8) if ops.count < 200 else (4, 0.5) if ops.count < 5000 else (2.5, 0.35)
        ax.plot(t, ms, ls="none", marker=".", ms=size, alpha=alpha, color=kind_colour(kind),
                gid=f"raw:{kind}", label="each operation")
        failed = ~ops.ok
        if failed.any():
            ax.plot(ops.t[failed], ops.ms[failed], ls="none", marker="x", ms=4, color="#d62728",
                    gid=f"failed:{kind}", label=f"failed ({int(failed.sum())})")
        buckets = D.latency_buckets(ops, width)
        sparse = buckets["count"] < PERCENTILE_MIN_COUNT  # a percentile of a handful says nothing
        for q, style, lw in (("p50", "-", 1.0), ("p95", "--", 1.0), ("p99", "-", 1.8)):
            ax.plot(*_with_gaps(buckets["t"], np.where(sparse, np.nan, buckets[q]), width), ls=style, lw=lw, color="black",
                    alpha=0.9 if q == "p99" else 0.7, gid=f"{q}:{kind}", label=q, drawstyle="steps-mid")
        if D.spans_decades(ops.ms):
            ax.set_yscale("log")
        stall_count = shade_stalls(ax, run) if kind == "write" else 0
        names = shade_faults(ax, run)
        ax.set_ylabel(f"{kind} (ms)")
        ax.set_title(f"{kind}: {ops.count} operations, bucket {width:g} s", loc="left", fontsize=9)
        _style_axes(ax)
        _legend(ax, _stall_legend(stall_count) + _fault_legend(names), loc="upper left", bbox_to_anchor=(1.0, 1.0),
                framealpha=0.85, markerscale=2)
    bottom = panels[-1][0]
    bottom.set_xlabel("seconds since start")
    bottom.set_xlim(left=0)
    _title(fig, f"{title}  operation latency over time", colour)
    return fig


def draw_throughput(run: D.RunData, *, title: str = "", colour: str | None = None) -> Figure:
    """Operations started per second, one panel per kind (linear axes, so a stall shows as zero)."""
    fig, panels, width = _kind_panels(run, 0.8, 1.5)
    for ax, kind, ops in panels:
        series = D.throughput(ops, width, run.span_s)
        ax.plot(series["t"], series["ops_per_s"], color=kind_colour(kind), lw=1.3, drawstyle="steps-mid",
                gid=f"throughput:{kind}")
        ax.fill_between(series["t"], series["ops_per_s"], step="mid", color=kind_colour(kind), alpha=0.15)
        if kind == "write":
            count = shade_stalls(ax, run)
            if count:
                ax.legend(handles=_stall_legend(count), loc="upper left", bbox_to_anchor=(1.0, 1.0))
        shade_faults(ax, run)
        ax.set_ylabel(f"{kind}/s")
        ax.set_ylim(bottom=0)
        _style_axes(ax)
    bottom = panels[-1][0]
    bottom.set_xlabel(f"seconds since start (bucket {width:g} s)")
    bottom.set_xlim(left=0)
    _title(fig, f"{title}  throughput (operations per second)", colour)
    return fig


def draw_cdf(run: D.RunData, *, title: str = "", colour: str | None = None) -> Figure:
    """Latency distribution per kind: fraction of operations at or below a latency."""
    fig = _figure(8, 4.2)
    ax = fig.subplots()
    all_ms = []
    for kind in run.kinds:
        values, fraction = D.cdf(run.ops[kind])
        all_ms.append(values)
        p99 = values[max(0, math.ceil(0.99 * values.size) - 1)] if values.size else float("nan")
        ax.plot(values, fraction, drawstyle="steps-post", color=kind_colour(kind), lw=1.5, gid=f"cdf:{kind}",
                label=f"{kind}  n={values.size}  p99 {p99:.3g} ms  max {values[-1]:.3g} ms")
    if all_ms and D.spans_decades(np.concatenate(all_ms)):
        ax.set_xscale("log")
    for level in (0.5, 0.95, 0.99):
        ax.axhline(level, color="#999999", lw=0.6, ls=":")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of operations")
    ax.set_ylim(0, 1.01)
    _style_axes(ax)
    _legend(ax, loc="lower right", framealpha=0.85)
    _title(fig, f"{title}  latency distribution (CDF)", colour)
    return fig


RUN_FIGURES = {
    "sizes.png": draw_sizes,
    "latency.png": draw_latency,
    "throughput.png": draw_throughput,
    "latency_cdf.png": draw_cdf,
}


def run_figures(run: D.RunData, folder: Path, *, title: str = "", colour: str = CELL_COLOURS[0]) -> dict[str, Path]:
    """Draw and save every per-run figure into ``folder``; returns {file name: path}."""
    written = {}
    for name, draw in RUN_FIGURES.items():
        fig = draw(run, title=title, colour=colour)
        written[name] = save(fig, folder / name)
    return written


# ---------------------------------------------------------------- matrix
COMPARISON_METRICS = (
    ("wal_peak_bytes", "WAL peak (MiB)", MIB),
    ("write_p99_ms", "write p99 (ms)", 1),
    ("write_max_ms", "write max (ms)", 1),
    ("checkpoint_s", "checkpoint time (s)", 1),
    ("stall_s", f"write stall time (s; no commit for > {D.STALL_GAP_S:g} s)", 1),
    ("corrupt", "corrupt runs (k of N)", 1),
    ("lost", "runs judged lost-writes (k of N)", 1),
)


def draw_comparison(rows: list[dict[str, Any]], colours: dict[str, str]) -> Figure:
    """Small multiples: one bar chart per metric, one bar per cell in the cell's colour."""
    cols = 4
    panels = len(COMPARISON_METRICS)
    nrows = math.ceil(panels / cols)
    fig = _figure(12, 2.9 * nrows + 0.6)
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    x = np.arange(len(rows))
    for ax, (key, label, scale) in zip(axes, COMPARISON_METRICS):
        values = [(row.get(key) or 0) / scale for row in rows]
        bars = ax.bar(x, values, color=[colours[row["cell_id"]] for row in rows], gid=f"bar:{key}")
        for bar, row, value in zip(bars, rows, values):
            text = f"{row.get(key, 0)}/{row['runs']}" if key in ("corrupt", "lost") else f"{value:.3g}"
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                        va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
        if key in ("corrupt", "lost"):
            ax.set_ylim(0, max([row["runs"] for row in rows] + [1]) * 1.15)
        else:
            ax.set_ylim(0, max(values + [1e-9]) * 1.18)
        ax.set_title(label, loc="left", fontsize=9)
        ax.set_xticks(x, [row["cell_id"].replace("cell-", "#") for row in rows])
        _style_axes(ax)
    legend_ax = axes[panels] if panels < axes.size else None
    for ax in axes[panels:]:
        ax.axis("off")
    if legend_ax is not None:
        legend_ax.legend(handles=[Patch(color=colours[r["cell_id"]], label=f"{r['cell_id']}: {r['label']}")
                                  for r in rows], loc="center left", frameon=False, fontsize=8)
    _title(fig, "cells side by side (worst run of each cell)", None)
    return fig


def draw_wal_growth(curves: list[dict[str, Any]], colours: dict[str, str]) -> Figure:
    """Every run's WAL size on one axis, in its cell's colour."""
    fig = _figure(10, 4.5)
    ax = fig.subplots()
    labelled: set[str] = set()
    for curve in curves:
        first = curve["cell_id"] not in labelled and len(curve["t"]) > 0  # a cell's first drawn curve
        if first:
            labelled.add(curve["cell_id"])
        ax.plot(curve["t"], curve["wal_bytes"] / MIB, color=colours[curve["cell_id"]],
                lw=1.4 if curve["repeat"] == 0 else 0.8, alpha=1.0 if curve["repeat"] == 0 else 0.6,
                gid=f"wal:{curve['cell_id']}:{curve['repeat']}",
                label=f"{curve['cell_id']}: {curve['label']}" if first else None)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("WAL size (MiB)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    _style_axes(ax)
    _legend(ax, loc="upper left", framealpha=0.85)
    _title(fig, "WAL growth of every cell", None)
    return fig


def _grid(fig: Figure, n: int, *, sharey: bool) -> list[Any]:
    cols = min(3, max(1, n))
    rows = math.ceil(n / cols)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=sharey).ravel()
    for ax in axes[n:]:
        ax.axis("off")
    return list(axes[:n])


def draw_wal_by_cell(cells: list[dict[str, Any]], runs_by_cell: dict[str, list[D.RunData]],
                     colours: dict[str, str]) -> Figure:
    """Small multiples: each cell's WAL size (first run) on its own scale, checkpoints marked."""
    n = max(1, len(cells))
    fig = _figure(12, 0.7 + 2.8 * math.ceil(n / min(3, n)))
    axes = _grid(fig, n, sharey=False)
    for ax, cell in zip(axes, cells):
        runs = runs_by_cell.get(cell["cell_id"], [])
        if runs:
            run = runs[0]
            ax.plot(run.size_t, run.wal_bytes / MIB, color=colours[cell["cell_id"]], lw=1.2,
                    gid=f"wal:{cell['cell_id']}")
            for m in D.checkpoint_markers(run):
                ax.plot(m["t"], m["wal_bytes"] / MIB, ls="none", marker=MODE_MARKERS.get(m["mode"], "o"), ms=3,
                        color=OUTCOME_COLOURS[m["outcome"]], gid=f"checkpoint:{cell['cell_id']}")
            shade_faults(ax, run)
        ax.set_title(f"{cell['cell_id']}: {cell.get('label', '')}", loc="left", fontsize=9,
                     color=colours[cell["cell_id"]])
        ax.set_ylabel("WAL (MiB)")
        ax.set_xlabel("seconds since start")
        ax.set_ylim(bottom=0)
        _style_axes(ax)
    _title(fig, "WAL size per cell (own scale; markers: checkpoints, green complete / orange partial / red busy)",
           None)
    return fig


def draw_write_latency_by_cell(cells: list[dict[str, Any]], runs_by_cell: dict[str, list[D.RunData]],
                               colours: dict[str, str]) -> Figure:
    """Small multiples, one shared latency axis: each cell's write latency (first run) over time."""
    n = max(1, len(cells))
    fig = _figure(12, 0.7 + 2.8 * math.ceil(n / min(3, n)))
    axes = _grid(fig, n, sharey=True)
    all_ms = []
    for ax, cell in zip(axes, cells):
        runs = runs_by_cell.get(cell["cell_id"], [])
        ops = runs[0].ops.get("write") if runs else None
        if ops is not None and ops.count:
            t, ms = D.raw_points(ops)
            all_ms.append(ops.ms)
            ax.plot(t, ms, ls="none", marker=".", ms=2, alpha=0.35, color=colours[cell["cell_id"]],
                    gid=f"raw:{cell['cell_id']}")
            width = D.bucket_seconds(runs[0].span_s)
            buckets = D.latency_buckets(ops, width)
            sparse = buckets["count"] < PERCENTILE_MIN_COUNT
            ax.plot(*_with_gaps(buckets["t"], np.where(sparse, np.nan, buckets["p99"]), width), color="black", lw=1.2, drawstyle="steps-mid",
                    gid=f"p99:{cell['cell_id']}", label="p99 per bucket")
            slow = ops.ms >= SLOW_MS
            ax.plot(ops.t[slow], ops.ms[slow], ls="none", marker="o", ms=3.5, color=colours[cell["cell_id"]],
                    markeredgecolor="black", markeredgewidth=0.4, gid=f"slow:{cell['cell_id']}",
                    label=f"writes > {SLOW_MS:g} ms")
            shade_stalls(ax, runs[0])
            shade_faults(ax, runs[0])
            _legend(ax, loc="upper left", fontsize=7, framealpha=0.85)
        ax.set_title(f"{cell['cell_id']}: {cell.get('label', '')}", loc="left", fontsize=9,
                     color=colours[cell["cell_id"]])
        ax.set_ylabel("write (ms)")
        ax.set_xlabel("seconds since start")
        _style_axes(ax)
    if all_ms and D.spans_decades(np.concatenate(all_ms)):
        for ax in axes:
            ax.set_yscale("log")
    _title(fig, f"write latency per cell (same axis; points: each write, line: p99 per bucket, "
                f"red: no write committed for > {D.STALL_GAP_S:g} s)", None)
    return fig
