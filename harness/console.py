"""What a run prints while it works: progress, then a summary table."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, TextIO


def human_bytes(value: float | int | None) -> str:
    if value is None:
        return "-"
    value = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _count_lines(path: Path, cache: dict[Path, tuple[int, int]]) -> int:
    """Approximate op count of a history file: new lines since the last call (cheap)."""
    try:
        size = path.stat().st_size
    except OSError:
        return cache.get(path, (0, 0))[1]
    offset, count = cache.get(path, (0, 0))
    if size > offset:
        with open(path, "rb") as handle:
            handle.seek(offset)
            chunk = handle.read(size - offset)
        count += chunk.count(b"\n")
        offset = size
    cache[path] = (offset, count)
    return count


class Console:
    """Live progress on a terminal; plain periodic lines otherwise (CI logs stay short)."""

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False, plain_every_s: float = 10.0):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.plain_every_s = plain_every_s
        self._last_plain = 0.0
        self._line_open = False
        self._counts: dict[Path, tuple[int, int]] = {}
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
        self._counts.clear()
        self._rate_mark = None
        self._last_plain = time.monotonic()
        self._print(f"[{cell.cell_id}] {cell.label}  run {index + 1}/{repeats}  -> {run_dir}")

    def run_progress(self, cell: Any, index: int, info: dict[str, Any]) -> None:
        if self.quiet:
            return
        history = Path(info["run_dir"]) / "history"
        ops = errors = 0
        for path in history.glob("*-*.jsonl"):
            ops += _count_lines(path, self._counts)
        now = time.monotonic()
        rate = 0.0
        if self._rate_mark is not None and now > self._rate_mark[0]:
            rate = (ops - self._rate_mark[1]) / (now - self._rate_mark[0])
        self._rate_mark = (now, ops)
        line = (f"  {info['elapsed']:5.1f}/{info['duration']:.0f} s  {rate:7.0f} rec/s  "
                f"WAL {human_bytes(info['wal_bytes']):>10}  workers {info['live_workers']}")
        del errors
        if self.tty:
            self.stream.write("\r" + line + "\x1b[K")
            self.stream.flush()
            self._line_open = True
        elif now - self._last_plain >= self.plain_every_s:
            self._last_plain = now
            self._print(line)

    def run_finished(self, cell: Any, index: int, result: dict[str, Any]) -> None:
        writes = result["writes"]
        self._print(f"  -> {result['verdict'].upper()}: {result['reason']}  "
                    f"(acked {writes['acked']}, lost {writes['lost']}, WAL peak {human_bytes(result['wal_peak_bytes'])})")


def summary_table(results: dict[str, Any]) -> str:
    header = ["cell", "params", "expect", "runs", "clean", "corrupt", "lost", "errors", "WAL peak", "write p99", "ok"]
    rows = [header]
    for cell in results["cells"]:
        p99s = [r["latency_ms"].get("write", {}).get("p99_ms") for r in cell["results"]]
        p99s = [p for p in p99s if p is not None]
        rows.append([
            cell["cell_id"], cell["label"][:40], cell["expect"], str(cell["runs"]), str(cell["clean"]),
            str(cell["corrupt"]), str(cell["lost"]), str(cell["errors"]), human_bytes(cell["wal_peak_bytes"]),
            f"{max(p99s):.1f} ms" if p99s else "-", "yes" if cell["matches_expect"] else "NO",
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(value.ljust(widths[i]) for i, value in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
