"""What a run prints while it works: progress, then a summary table, then one verdict line.

Terminal escapes (the live progress line, colour) only reach a terminal whose
TERM is not ``dumb``; colour is also off when ``NO_COLOR`` is set to anything
but the empty string (https://no-color.org).
"""

from __future__ import annotations

import os
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


def escapes_ok(stream: Any) -> bool:
    """True when ``stream`` is a terminal that understands escapes (not TERM=dumb)."""
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
    return tty and os.environ.get("TERM", "") != "dumb"


def colour_ok(stream: Any) -> bool:
    return escapes_ok(stream) and not os.environ.get("NO_COLOR")


_COLOURS = {"green": "32", "red": "31", "yellow": "33"}
VERDICT_COLOURS = {"clean": "green", "healthy": "green", "corrupt": "red", "damaged": "red",
                   "lost-writes": "red", "errors": "yellow", "error": "yellow"}


def paint(text: str, colour: str | None, stream: Any) -> str:
    """``text`` in ``colour`` when ``stream`` takes colour, else unchanged."""
    if not colour or not colour_ok(stream):
        return text
    return f"\x1b[{_COLOURS[colour]}m{text}\x1b[0m"


def paint_verdict(text: str, verdict: str, stream: Any) -> str:
    return paint(text, VERDICT_COLOURS.get(verdict.lower()), stream)


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

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False, plain_every_s: float = 10.0,
                 verbose: int = 0):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.verbose = verbose
        self.tty = escapes_ok(self.stream)
        # verbose: a progress line every 2 s instead of every 10 s where no live line can be drawn
        self.plain_every_s = min(plain_every_s, 2.0) if verbose else plain_every_s
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
        verdict = paint_verdict(result["verdict"].upper(), result["verdict"], self.stream)
        self._print(f"  -> {verdict}{partial}: {result['reason']}  "
                    f"(acknowledged rows {writes['acked']}, lost {writes['lost']}, WAL peak {human_bytes(result['wal_peak_bytes'])})")
        if self.verbose:
            self._print(f"     run dir {result.get('run_dir', '-')}, {result.get('duration_s', 0.0):.1f} s")
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


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def verdict_line(results: dict[str, Any], stream: Any = None) -> str:
    """The one line a run, a report or a merge ends with: runs, how many as expected, the verdicts.

    ``walstress: 8 runs, 8 as expected: 6 clean, 2 corrupt``; when a run or a
    cell is not as expected, how many and which cells (a cell can miss its
    expectation with every run as expected, e.g. when the named cause is not
    the one found).
    """
    stream = stream or sys.stdout
    if results.get("run") and not results.get("cells"):  # one run dir judged again
        run = results["run"]
        ok = bool(results.get("ok"))
        counts = {run["verdict"]: 1}
        runs, matching, bad_cells = 1, int(ok), []
        expect_note = f" (expected {results.get('expect', 'clean')})" if not ok else ""
    else:
        totals, cells = results["totals"], results.get("cells", [])   # runner._write_results adds them up
        counts = {name: totals[key] for name, key in (("clean", "clean"), ("corrupt", "corrupt"),
                                                      ("lost-writes", "lost"), ("errors", "errors"))}
        runs, matching = totals["runs"], totals["matching"]
        bad_cells = [f"{c['cell_id']} expected {c['expect']}" for c in cells if not c["matches_expect"]]
        expect_note = ""
    if not runs:  # nothing judged: not as expected either
        missing = f" ({len(results['missing_cells'])} cells not run by any shard)" if results.get("missing_cells") else ""
        return paint(f"walstress: 0 runs{missing}: nothing was judged", "red", stream)
    verdicts = ", ".join(paint_verdict(f"{n} {name}", name, stream) for name, n in counts.items() if n)
    as_expected = paint(f"{matching} as expected", "green" if matching == runs and not bad_cells else None, stream)
    missed = paint(f", {runs - matching} not", "red", stream) if matching < runs else ""
    line = f"walstress: {_plural(runs, 'run')}, {as_expected}{missed}{expect_note}: {verdicts}"
    if bad_cells:
        shown = ", ".join(bad_cells[:5]) + (", ..." if len(bad_cells) > 5 else "")
        line += paint(f"; {_plural(len(bad_cells), 'cell')} not as expected ({shown})", "red", stream)
    if results.get("missing_cells"):
        line += f"; {_plural(len(results['missing_cells']), 'cell')} not run by any shard"
    if results.get("partial"):
        line += "; partial results (a run or the controller was cut short)"
    return line
