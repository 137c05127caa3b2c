"""History: what every process did and when, as JSON lines.

Writers append small dict records to an in-memory buffer and flush them in
batches with one ``os.write`` on an ``O_APPEND`` descriptor, so a record that
was flushed survives the death of its process. Readers tolerate a torn last
line (a process killed half way through a flush).

Record types (field ``type``), all times are epoch seconds (``t``):
    op          worker, thread, kind, t, ms, ok, err (class or null), msg
    checkpoint  worker, thread, t, ms, mode, source, busy, log, checkpointed, err
    sample      t, db_bytes, wal_bytes, shm_bytes
    proc        t, procs: {worker: [cpu_seconds, read_bytes, write_bytes]}
    worker_start / worker_ready / worker_exit   worker, role, pid, t, ...
    fault       name, t, t_end, target, detail
    run_start / run_stop / note
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from sys import intern
from pathlib import Path
from typing import Any, Callable, Iterator


class HistoryWriter:
    """Append-only, batched JSON-lines writer; safe to share between threads."""

    def __init__(self, path: str | Path, *, flush_records: int = 512, flush_seconds: float = 0.25):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        # (make_line, args) per record, lines made at flush; a deque's append and popleft are atomic, so a
        # record is buffered without taking the lock (it runs once per operation) and a flush takes only
        # what was there when it began
        self._buffer: deque[tuple[Callable[..., str], tuple]] = deque()
        self._lock = threading.Lock()
        self._flush_records = flush_records
        self._flush_seconds = flush_seconds
        self._last_flush = time.monotonic()
        self._closed = False

    def record(self, rec: dict[str, Any]) -> None:
        self.record_line(json.dumps(rec, separators=(",", ":"), default=str))

    def record_line(self, line: str) -> None:
        """A record already encoded as one line of JSON (an object), for callers that encode faster."""
        self.record_later(str, line)

    def record_later(self, make_line: Callable[..., str], *args: Any) -> None:
        """A record whose line is ``make_line(*args)``, made when the buffer is written rather than now: for
        records made once per user transaction, whose encoding would otherwise be paid by every one."""
        buffer = self._buffer
        buffer.append((make_line, args))
        if len(buffer) >= self._flush_records or time.monotonic() - self._last_flush >= self._flush_seconds:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        self._last_flush = time.monotonic()
        buffer = self._buffer
        if self._closed:  # what is recorded after close is dropped
            buffer.clear()
            return
        if not buffer:
            return
        take = buffer.popleft
        lines = [make_line(*args) for make_line, args in (take() for _ in range(len(buffer)))]
        data = ("\n".join(lines) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def close(self) -> None:
        with self._lock:
            self._flush_locked()
            if not self._closed:
                self._closed = True
                os.close(self._fd)

    def __enter__(self) -> "HistoryWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of one history file; a torn or garbled line is skipped. Each record's keys and short texts
    are shared with the other records' (a run's history repeats the same few words in every record, and
    the judge and the report hold it whole: this takes a record from about 1 KB to a third of that)."""
    try:
        with open(path, "rb") as handle:
            for raw in handle:
                if not raw.endswith(b"\n"):
                    break  # torn last line
                try:
                    rec = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(rec, dict):
                    yield {intern(k): intern(v) if type(v) is str and len(v) <= 64 else v for k, v in rec.items()}
    except FileNotFoundError:
        return


def read_history(history_dir: str | Path) -> list[dict[str, Any]]:
    """Every record of a run's history folder, sorted by time."""
    records: list[dict[str, Any]] = []
    folder = Path(history_dir)
    if not folder.is_dir():
        return records
    for path in sorted(folder.glob("*.jsonl")):
        records.extend(read_records(path))
    records.sort(key=lambda r: r.get("t", 0.0))
    return records


def ended_at(rec: dict[str, Any]) -> float:
    """When an operation or checkpoint ended, so when its error was seen: ``t`` is when it began, and one
    that waited on a lock began long before SQLite said anything."""
    return float(rec["t"]) + float(rec.get("ms") or 0.0) / 1000.0


def first_corruption_error(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The operation or checkpoint whose corruption error SQLite reported first (by when it ended)."""
    failed = [r for r in records if r.get("type") in ("op", "checkpoint") and r.get("err") == "corrupt"]
    return min(failed, key=ended_at, default=None)


def first_corruption_error_at(records: list[dict[str, Any]]) -> float | None:
    """When SQLite reported the run's first corruption error (epoch seconds), or None."""
    failed = first_corruption_error(records)
    return ended_at(failed) if failed is not None else None


def by_type(records: list[dict[str, Any]], *types: str) -> list[dict[str, Any]]:
    wanted = set(types)
    return [r for r in records if r.get("type") in wanted]
