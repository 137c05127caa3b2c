"""Numbers a run's history yields: latencies, errors, checkpoints, WAL peak."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

from walstress.sqlite.driver import ERROR_CLASSES

CHECKPOINT_ROWS_KEPT = 2000


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(values_ms: list[float]) -> dict[str, Any]:
    values = sorted(values_ms)
    return {
        "count": len(values),
        "p50_ms": _round(percentile(values, 50)),
        "p95_ms": _round(percentile(values, 95)),
        "p99_ms": _round(percentile(values, 99)),
        "max_ms": _round(values[-1] if values else None),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def summarize_history(records: list[dict[str, Any]]) -> dict[str, Any]:
    ops = [r for r in records if r.get("type") == "op"]
    checkpoints = [r for r in records if r.get("type") == "checkpoint"]
    samples = [r for r in records if r.get("type") == "sample"]

    by_kind: dict[str, list[float]] = defaultdict(list)
    ok_by_kind: Counter = Counter()
    errors: Counter = Counter({cls: 0 for cls in ERROR_CLASSES})
    errors_by_worker: dict[str, Counter] = defaultdict(Counter)
    error_examples: dict[str, str] = {}
    for op in ops:
        by_kind[op["kind"]].append(float(op.get("ms", 0.0)))
        if op.get("ok"):
            ok_by_kind[op["kind"]] += 1
        retries = int(op.get("retries") or 0)
        if retries:
            errors["busy"] += retries
        cls = op.get("err")
        if cls:
            errors[cls] += 1
            errors_by_worker[op["worker"]][cls] += 1
            error_examples.setdefault(cls, op.get("msg", ""))
    for ck in checkpoints:
        cls = ck.get("err")
        if cls:
            errors[cls] += 1
            errors_by_worker[ck["worker"]][cls] += 1
            error_examples.setdefault(cls, ck.get("msg", ""))

    latency = {kind: latency_summary(values) for kind, values in sorted(by_kind.items())}
    ck_ms = [float(c.get("ms", 0.0)) for c in checkpoints]
    if ck_ms:
        latency["checkpoint"] = latency_summary(ck_ms)
    ops_count = {kind: {"total": len(values), "ok": ok_by_kind[kind]} for kind, values in sorted(by_kind.items())}

    rows = [[c.get("busy"), c.get("log"), c.get("checkpointed")] for c in checkpoints]
    completed = sum(1 for c in checkpoints if c.get("busy") == 0 and c.get("log") is not None
                    and c.get("log") == c.get("checkpointed"))
    busy = sum(1 for c in checkpoints if c.get("busy") == 1 or c.get("err") == "busy")
    by_source = Counter(c.get("source", "?") for c in checkpoints)
    checkpoint_info = {
        "count": len(checkpoints),
        "completed": completed,
        "busy": busy,
        "partial": len(checkpoints) - completed - busy,
        "by_source": dict(by_source),
        "total_ms": round(sum(ck_ms), 3),
        "rows": rows[:CHECKPOINT_ROWS_KEPT],
        "rows_truncated": len(rows) > CHECKPOINT_ROWS_KEPT,
    }

    wal_peak = max((int(s.get("wal_bytes", 0)) for s in samples), default=0)
    db_peak = max((int(s.get("db_bytes", 0)) for s in samples), default=0)
    times = [r["t"] for r in ops] + [r["t"] for r in samples]
    return {
        "ops": ops_count,
        "latency_ms": latency,
        "errors": dict(errors),
        "errors_by_worker": {w: dict(c) for w, c in sorted(errors_by_worker.items())},
        "error_examples": error_examples,
        "corrupt_errors_during_run": errors["corrupt"],
        "checkpoints": checkpoint_info,
        "wal_peak_bytes": wal_peak,
        "db_peak_bytes": db_peak,
        "samples": len(samples),
        "history_span_s": round(max(times) - min(times), 3) if times else 0.0,
    }
