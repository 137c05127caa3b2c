"""The numbers behind every figure, computed from a run dir's history.

Nothing here draws: the figures only plot what these functions return, so
tests can check a figure's content (series, markers, shaded windows) without
looking at pixels. Times are seconds since the run's ``go`` record (or since
its first record when there is none).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from walstress.history import ended_at, first_corruption_error, read_history
from walstress.metrics import percentile

KINDS = ("write", "read", "checkpoint", "open")
CHECKPOINT_OUTCOMES = ("complete", "partial", "busy")
STALL_GAP_S = 0.5              # no write committed for longer than this: a write stall
RAW_POINTS_PER_KIND = 40_000   # raw latency points drawn per kind (all slow points are kept)
TARGET_BUCKETS = 80            # time buckets per run for percentiles and throughput


def checkpoint_outcome(rec: dict[str, Any]) -> str:
    """complete: busy==0 and log==checkpointed; busy: busy==1 or err=="busy"; else partial."""
    if rec.get("busy") == 1 or rec.get("err") == "busy":
        return "busy"
    if rec.get("busy") == 0 and rec.get("log") is not None and rec.get("log") == rec.get("checkpointed"):
        return "complete"
    return "partial"


@dataclass
class Checkpoint:
    t: float            # start, seconds since go
    t_end: float        # end (t + duration)
    ms: float
    mode: str
    outcome: str
    source: str
    worker: str
    row: tuple[Any, Any, Any]


@dataclass
class FaultWindow:
    name: str
    t: float
    t_end: float | None  # None: an instant event (a kill, a power cut)
    target: Any = None
    detail: Any = None

    @property
    def instant(self) -> bool:
        return self.t_end is None


@dataclass
class KindOps:
    """Operations of one kind: start times (s since go), latencies (ms), ok flags."""

    t: np.ndarray
    ms: np.ndarray
    ok: np.ndarray

    @property
    def count(self) -> int:
        return int(self.t.size)


@dataclass
class RunData:
    run_dir: Path
    t0: float                       # epoch seconds of time zero
    span_s: float                   # seconds from t0 to the last record
    planned_duration_s: float | None
    partial: bool
    size_t: np.ndarray
    wal_bytes: np.ndarray
    db_bytes: np.ndarray
    shm_bytes: np.ndarray
    checkpoints: list[Checkpoint]
    faults: list[FaultWindow]
    ops: dict[str, KindOps]
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_record_t: float | None = None
    notes: list[str] = field(default_factory=list)
    # moments to mark: lock-watch events (lock_lost, deleted_open, two_libraries) and SQLite's first
    # corruption error, as {"kind", "t" (s since go), "worker", "file"}
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def kinds(self) -> list[str]:
        present = [k for k in KINDS if k in self.ops and self.ops[k].count]
        return present + sorted(k for k in self.ops if k not in KINDS and self.ops[k].count)


EVENT_KINDS = ("lock_lost", "deleted_open", "split_wal", "two_libraries")


def load_run(run_dir: str | Path) -> RunData:
    """Read a run dir's history (a torn last line is skipped) into arrays."""
    run_dir = Path(run_dir)
    records = read_history(run_dir / "history")
    planned = None
    meta_path = run_dir / "scenario.json"
    if meta_path.exists():
        try:
            planned = json.loads(meta_path.read_text()).get("duration")
        except ValueError:
            planned = None
    t_go = next((r["t"] for r in records if r.get("type") == "go"), None)
    t_first = records[0]["t"] if records else 0.0
    t0 = float(t_go if t_go is not None else t_first)
    run_stop = any(r.get("type") == "run_stop" and not r.get("interrupted") for r in records)
    last_t = float(records[-1]["t"]) if records else None

    size_t: list[float] = []
    wal: list[int] = []
    db: list[int] = []
    shm: list[int] = []
    checkpoints: list[Checkpoint] = []
    faults: list[FaultWindow] = []
    op_t: dict[str, list[float]] = {}
    op_ms: dict[str, list[float]] = {}
    op_ok: dict[str, list[bool]] = {}
    workers: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    events: list[dict[str, Any]] = []
    failed = first_corruption_error(records)
    if failed is not None:  # marked when SQLite said it: when the operation ended
        events.append({"kind": "corruption_error", "t": ended_at(failed) - t0, "worker": failed.get("worker"),
                       "file": None})
    for rec in records:
        kind = rec.get("type")
        t = float(rec.get("t", t0)) - t0
        if kind in EVENT_KINDS:
            events.append({"kind": kind, "t": t, "worker": rec.get("worker"), "file": rec.get("file")})
        if kind == "op":
            k = str(rec.get("kind", "?"))
            op_t.setdefault(k, []).append(t)
            op_ms.setdefault(k, []).append(float(rec.get("ms", 0.0)))
            op_ok.setdefault(k, []).append(bool(rec.get("ok")))
        elif kind == "sample":
            size_t.append(t)
            wal.append(int(rec.get("wal_bytes", 0)))
            db.append(int(rec.get("db_bytes", 0)))
            shm.append(int(rec.get("shm_bytes", 0)))
        elif kind == "checkpoint":
            ms = float(rec.get("ms", 0.0))
            checkpoints.append(Checkpoint(
                t=t, t_end=t + ms / 1000.0, ms=ms, mode=str(rec.get("mode", "?")),
                outcome=checkpoint_outcome(rec), source=str(rec.get("source", "?")),
                worker=str(rec.get("worker", "?")),
                row=(rec.get("busy"), rec.get("log"), rec.get("checkpointed"))))
            # checkpoints are also operations of kind "checkpoint" for latency and throughput
            op_t.setdefault("checkpoint", []).append(t)
            op_ms.setdefault("checkpoint", []).append(ms)
            op_ok.setdefault("checkpoint", []).append(rec.get("err") is None)
        elif kind == "fault":
            end = rec.get("t_end")
            faults.append(FaultWindow(name=str(rec.get("name", "fault")), t=t,
                                      t_end=None if end is None else float(end) - t0,
                                      target=rec.get("target"), detail=rec.get("detail")))
        elif kind in ("worker_start", "worker_exit", "worker_spawn"):
            entry = workers.setdefault(str(rec.get("worker")), {})
            entry.update({f"{kind}_t": t, "pid": rec.get("pid", entry.get("pid"))})
            for key in ("role", "sqlite_version", "driver", "module_path", "module_version", "exit_code"):
                if key in rec:
                    entry[key] = rec[key]
        elif kind == "note" and rec.get("msg"):
            notes.append(str(rec["msg"]))
    ops = {k: KindOps(t=np.asarray(op_t[k], dtype=float), ms=np.asarray(op_ms[k], dtype=float),
                      ok=np.asarray(op_ok[k], dtype=bool)) for k in op_t}
    for k, o in ops.items():  # checkpoints arrive out of order relative to their start
        order = np.argsort(o.t, kind="stable")
        ops[k] = KindOps(t=o.t[order], ms=o.ms[order], ok=o.ok[order])
    span = (last_t - t0) if last_t is not None else 0.0
    return RunData(run_dir=run_dir, t0=t0, span_s=max(span, 0.0), planned_duration_s=planned,
                   partial=not run_stop, size_t=np.asarray(size_t, dtype=float),
                   wal_bytes=np.asarray(wal, dtype=np.int64), db_bytes=np.asarray(db, dtype=np.int64),
                   shm_bytes=np.asarray(shm, dtype=np.int64), checkpoints=checkpoints, faults=faults,
                   ops=ops, workers=workers, last_record_t=last_t, notes=notes, events=events)


# ----------------------------------------------------------------- series
def bucket_seconds(span_s: float, target: int = TARGET_BUCKETS) -> float:
    """A round bucket width giving about ``target`` buckets over ``span_s``."""
    raw = max(span_s, 0.1) / target
    for width in (0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600):
        if width >= raw:
            return float(width)
    return float(math.ceil(raw / 3600) * 3600)


def wal_at(run: RunData, times: np.ndarray | list[float]) -> np.ndarray:
    """WAL size (bytes) the sampler saw last at each time (0 before the first sample)."""
    times = np.asarray(times, dtype=float)
    if run.size_t.size == 0:
        return np.zeros_like(times)
    index = np.searchsorted(run.size_t, times, side="right") - 1
    values = run.wal_bytes[np.clip(index, 0, None)].astype(float)
    values[index < 0] = 0.0
    return values


def checkpoint_markers(run: RunData) -> list[dict[str, Any]]:
    """One marker per checkpoint: where it ended on the WAL curve, its mode and outcome."""
    if not run.checkpoints:
        return []
    ends = np.asarray([c.t_end for c in run.checkpoints])
    ys = wal_at(run, ends)
    return [{"t": c.t_end, "wal_bytes": float(y), "mode": c.mode, "outcome": c.outcome, "ms": c.ms}
            for c, y in zip(run.checkpoints, ys)]


def fault_windows(run: RunData) -> list[dict[str, Any]]:
    return [{"name": f.name, "t": f.t, "t_end": f.t_end, "instant": f.instant, "target": f.target}
            for f in run.faults]


def latency_buckets(ops: KindOps, width_s: float) -> dict[str, np.ndarray]:
    """Per time bucket: its middle, count, and nearest-rank p50 / p95 / p99 of latency (ms)."""
    if ops.count == 0:
        empty = np.asarray([], dtype=float)
        return {"t": empty, "count": empty, "p50": empty, "p95": empty, "p99": empty}
    index = np.floor(ops.t / width_s).astype(np.int64)
    mids: list[float] = []
    counts: list[int] = []
    p50: list[float] = []
    p95: list[float] = []
    p99: list[float] = []
    order = np.argsort(index, kind="stable")
    sorted_index = index[order]
    sorted_ms = ops.ms[order]
    starts = np.flatnonzero(np.r_[True, np.diff(sorted_index) != 0])
    ends = np.r_[starts[1:], sorted_index.size]
    for s, e in zip(starts, ends):
        ordered = np.sort(sorted_ms[s:e]).tolist()
        n = len(ordered)
        mids.append((sorted_index[s] + 0.5) * width_s)
        counts.append(n)
        for q, out in ((50, p50), (95, p95), (99, p99)):
            value = percentile(ordered, q)
            assert value is not None  # a bucket holds at least one operation
            out.append(value)
    return {"t": np.asarray(mids), "count": np.asarray(counts, dtype=float), "p50": np.asarray(p50),
            "p95": np.asarray(p95), "p99": np.asarray(p99)}


def throughput(ops: KindOps, width_s: float, span_s: float) -> dict[str, np.ndarray]:
    """Operations started per second in each time bucket (empty buckets count 0)."""
    n_buckets = max(1, int(math.ceil(max(span_s, width_s) / width_s)))
    counts = np.zeros(n_buckets, dtype=float)
    if ops.count:
        index = np.clip(np.floor(ops.t / width_s).astype(np.int64), 0, n_buckets - 1)
        np.add.at(counts, index, 1.0)
    return {"t": (np.arange(n_buckets) + 0.5) * width_s, "ops_per_s": counts / width_s}


def raw_points(ops: KindOps, limit: int = RAW_POINTS_PER_KIND) -> tuple[np.ndarray, np.ndarray]:
    """Latency points to draw: all of them, or an even thinning plus every point above p99."""
    if ops.count <= limit:
        return ops.t, ops.ms
    p99 = percentile(sorted(ops.ms.tolist()), 99)  # the same p99 as run.json's
    step = int(math.ceil(ops.count / limit))
    keep = np.zeros(ops.count, dtype=bool)
    keep[::step] = True
    keep |= ops.ms > p99
    return ops.t[keep], ops.ms[keep]


def cdf(ops: KindOps) -> tuple[np.ndarray, np.ndarray]:
    """Sorted latencies (ms) and the fraction of operations at or below each."""
    values = np.sort(ops.ms)
    n = values.size
    return values, (np.arange(1, n + 1) / n) if n else np.asarray([], dtype=float)


def spans_decades(values: np.ndarray, decades: float = 1.0) -> bool:
    """True when positive values span at least ``decades`` powers of ten (log axis wanted)."""
    positive = values[values > 0]
    if positive.size < 2:
        return False
    return math.log10(positive.max() / positive.min()) >= decades


def stall_windows(run: RunData, gap_s: float = STALL_GAP_S) -> list[tuple[float, float]]:
    """Stretches longer than ``gap_s`` in which no write committed: between the start (or one
    successful write's end) and the next successful write's end."""
    ops = run.ops.get("write")
    if ops is None or ops.count == 0:
        return []
    ends = np.sort((ops.t + ops.ms / 1000.0)[ops.ok])
    if ends.size == 0:
        return []
    edges = np.r_[0.0, ends]
    gaps = np.diff(edges)
    index = np.flatnonzero(gaps > gap_s)
    return [(float(edges[i]), float(edges[i + 1])) for i in index]


def stalls(run: RunData, gap_s: float = STALL_GAP_S) -> dict[str, Any]:
    """Write stalls: how many stretches without a committed write longer than ``gap_s``, their
    total and longest length, and the slowest single write."""
    windows = stall_windows(run, gap_s)
    ops = run.ops.get("write")
    lengths = [b - a for a, b in windows]
    return {"count": len(windows), "seconds": round(sum(lengths), 3),
            "longest_s": round(max(lengths), 3) if lengths else 0.0,
            "max_ms": float(ops.ms.max()) if ops is not None and ops.count else 0.0, "gap_s": gap_s}


def checkpoint_totals(run: RunData) -> dict[str, Any]:
    by_outcome = {o: 0 for o in CHECKPOINT_OUTCOMES}
    by_mode: dict[str, int] = {}
    for c in run.checkpoints:
        by_outcome[c.outcome] += 1
        by_mode[c.mode] = by_mode.get(c.mode, 0) + 1
    return {"count": len(run.checkpoints), "seconds": round(sum(c.ms for c in run.checkpoints) / 1000.0, 3),
            "max_ms": max((c.ms for c in run.checkpoints), default=0.0), **by_outcome, "by_mode": by_mode}


# ----------------------------------------------------------------- matrix
def cell_comparison(cell: dict[str, Any], runs: list[RunData]) -> dict[str, Any]:
    """One row of the matrix comparison: worst (max) over the cell's runs, counts as k/N."""
    results = cell.get("results", [])
    lat = [r.get("latency_ms", {}).get("write", {}) for r in results]
    p99 = [v["p99_ms"] for v in lat if v.get("p99_ms") is not None]
    mx = [v["max_ms"] for v in lat if v.get("max_ms") is not None]
    st = [stalls(r) for r in runs]
    ck = [checkpoint_totals(r) for r in runs]
    n = cell.get("runs", len(results))
    return {
        "cell_id": cell["cell_id"],
        "label": cell.get("label", cell["cell_id"]),
        "runs": n,
        "wal_peak_bytes": max((int(r.get("wal_peak_bytes", 0)) for r in results), default=0),
        "write_p99_ms": max(p99) if p99 else None,
        "write_max_ms": max(mx) if mx else None,
        "checkpoint_s": max((c["seconds"] for c in ck), default=0.0),
        "checkpoints": max((c["count"] for c in ck), default=0),
        "stall_s": max((s["seconds"] for s in st), default=0.0),
        "stalls": max((s["count"] for s in st), default=0),
        "corrupt": cell.get("corrupt", 0),
        "lost": cell.get("lost", 0),
        "partial": any(r.get("partial") for r in results),
    }


def wal_growth_curves(cells: list[dict[str, Any]], runs_by_cell: dict[str, list[RunData]]) -> list[dict[str, Any]]:
    """Every run's WAL curve, tagged with its cell (for the one-axis WAL growth figure)."""
    curves = []
    for cell in cells:
        for index, run in enumerate(runs_by_cell.get(cell["cell_id"], [])):
            curves.append({"cell_id": cell["cell_id"], "label": cell.get("label", cell["cell_id"]),
                           "repeat": index, "t": run.size_t, "wal_bytes": run.wal_bytes})
    return curves
