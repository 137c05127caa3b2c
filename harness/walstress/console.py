"""What a run prints while it works: progress, then a summary table."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, TextIO

from walstress.checks.causes import cause_text, hazards_seen


def human_bytes(value: float | int | None) -> str:
    if value is None:
        return "-"
    value = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


class _HistoryTail:
    """Counts in the history files of a running run, reading only what was appended since last time.

    Only whole lines are counted (a flush may be half written); no JSON is
    parsed: operation records and records with an error class are found by
    their fixed ``"type":"op"`` and ``"err":"`` spellings.
    """

    OP = b'"type":"op"'
    ERROR = b'"err":"'

    def __init__(self) -> None:
        self.offsets: dict[Path, int] = {}
        self.ops = 0
        self.errors = 0

    def update(self, history: Path) -> None:
        for path in history.glob("*.jsonl"):
            if path.name in ("sampler.jsonl", "controller.jsonl"):
                continue
            try:
                size = path.stat().st_size
            except OSError:
                continue
            offset = self.offsets.get(path, 0)
            if size <= offset:
                continue
            with open(path, "rb") as handle:
                handle.seek(offset)
                chunk = handle.read(size - offset)
            end = chunk.rfind(b"\n") + 1
            if end == 0:
                continue
            chunk = chunk[:end]
            self.offsets[path] = offset + end
            self.ops += chunk.count(self.OP)
            self.errors += chunk.count(self.ERROR)


class Console:
    """Live progress on a terminal; plain periodic lines otherwise (CI logs stay short)."""

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False, plain_every_s: float = 10.0):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.plain_every_s = plain_every_s
        self._last_plain = 0.0
        self._line_open = False
        self._tail = _HistoryTail()
        self._rate_mark: tuple[float, int] | None = None

    def _print(self, text: str) -> None:
        if self.quiet:
            return
        if self._line_open:
            self.stream.write("\n")
            self._line_open = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def build_progress(self, text: str) -> None:
        if self.quiet:
            return
        if self.tty:
            self.stream.write(f"\r  building template: {text}\x1b[K")
            self.stream.flush()
            self._line_open = True
        elif time.monotonic() - self._last_plain >= self.plain_every_s:
            self._last_plain = time.monotonic()
            self._print(f"  building template: {text}")

    def template_ready(self, path: Path, built: bool, seconds: float) -> None:
        how = f"built in {seconds:.1f} s" if built else "cached"
        self._print(f"template {path.name} ({how})")

    def run_started(self, cell: Any, index: int, repeats: int, run_dir: Path) -> None:
        self._tail = _HistoryTail()
        self._rate_mark = None
        self._last_plain = time.monotonic()
        self._print(f"[{cell.cell_id}] {cell.label}  run {index + 1}/{repeats}  -> {run_dir}")

    def progress_line(self, cell: Any, info: dict[str, Any]) -> str:
        """One progress line: elapsed / duration, ops/s, WAL size, errors so far, live workers."""
        self._tail.update(Path(info["run_dir"]) / "history")
        now = time.monotonic()
        ops = self._tail.ops
        rate = 0.0
        if self._rate_mark is not None and now > self._rate_mark[0]:
            rate = (ops - self._rate_mark[1]) / (now - self._rate_mark[0])
        elif info.get("elapsed"):
            rate = ops / max(float(info["elapsed"]), 1e-6)
        self._rate_mark = (now, ops)
        return (f"  [{getattr(cell, 'cell_id', '?')}] {info['elapsed']:5.1f}/{info['duration']:.0f} s  "
                f"{rate:7.0f} ops/s  WAL {human_bytes(info.get('wal_bytes')):>10}  "
                f"errors {self._tail.errors}  workers {info.get('live_workers', '-')}")

    def run_progress(self, cell: Any, index: int, info: dict[str, Any]) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r" + self.progress_line(cell, info) + "\x1b[K")
            self.stream.flush()
            self._line_open = True
        elif now - self._last_plain >= self.plain_every_s:
            self._last_plain = now
            self._print(self.progress_line(cell, info))

    def run_finished(self, cell: Any, index: int, result: dict[str, Any]) -> None:
        writes = result["writes"]
        partial = "  PARTIAL" if result.get("partial") else ""
        self._print(f"  -> {result['verdict'].upper()}{partial}: {result['reason']}  "
                    f"(acknowledged rows {writes['acked']}, lost {writes['lost']}, WAL peak {human_bytes(result['wal_peak_bytes'])})")
        cause = cause_text(result)
        if cause:
            self._print(f"     {cause}")
        else:
            seen = hazards_seen(result)
            if seen:
                self._print(f"     lock watch: {seen} (no damage found)")


def summary_table(results: dict[str, Any]) -> str:
    """The end-of-run table: one row per cell (worst run for latencies and WAL)."""
    header = ["cell", "params", "expect", "runs", "clean", "corrupt", "lost-writes", "errors", "WAL peak",
              "write p99", "write max", "ok"]
    rows = [header]
    for cell in results["cells"]:
        writes = [r["latency_ms"].get("write", {}) for r in cell["results"]]
        p99s = [w.get("p99_ms") for w in writes if w.get("p99_ms") is not None]
        maxes = [w.get("max_ms") for w in writes if w.get("max_ms") is not None]
        partial = any(r.get("partial") for r in cell["results"])
        rows.append([
            cell["cell_id"], cell["label"][:48], cell["expect"], str(cell["runs"]), str(cell["clean"]),
            str(cell["corrupt"]), str(cell["lost"]), str(cell["errors"]), human_bytes(cell["wal_peak_bytes"]),
            f"{max(p99s):.1f} ms" if p99s else "-", f"{max(maxes):.0f} ms" if maxes else "-",
            ("yes" if cell["matches_expect"] else "NO") + (" (partial)" if partial else ""),
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(value.ljust(widths[i]) for i, value in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("(clean, corrupt, lost-writes, errors: runs with that verdict; WAL peak and write latency: "
                 "the worst run of the cell)")
    return "\n".join(lines)
