"""Tests of walstress.report and walstress.console: figures checked through the data they plot.

A real two-cell matrix (PASSIVE vs TRUNCATE, minimal schema, 2.5 s per cell)
runs once per module; figures are drawn from its histories and their artists
compared with the history records; the pages are read for their order, their
captions and their links. A second test kills a real controller with SIGKILL
and checks that ``walstress report`` marks the result partial.
(tests/test_report_browser.py opens the pages in a real browser.)
"""

from __future__ import annotations

import html
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from walstress.metrics import percentile

from walstress import run as run_scenario
from walstress.console import Console, summary_table
from walstress.history import HistoryWriter, by_type, read_history
from walstress.report import build_report
from walstress.report import data as D
from walstress.report import figures as F

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024

SCENARIO = {
    "name": "report-test",
    "description": "two small cells for the report tests",
    "seed": 3,
    "duration": 2.5,
    "expect": "clean",
    "database": {"schema": "minimal", "pages": 500},
    "checkpoint": {"every_writes": 50, "interval_ms": 200},
    "workers": [
        {"role": "writer", "count": 1},
        {"role": "reader", "count": 1, "hold_ms": 40},
        {"role": "checkpointer", "count": 1},
        {"role": "opener", "count": 1, "pause_ms": 50},
    ],
    "matrix": {"checkpoint.mode": ["PASSIVE", "TRUNCATE"]},
}


@pytest.fixture(scope="module")
def matrix_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("matrix")
    result = run_scenario(dict(SCENARIO), out, cache_dir=tmp_path_factory.mktemp("cache"))
    written = build_report(out, result.data)
    return out, result.data, written


def _run_dirs(out: Path) -> list[Path]:
    return sorted(p.parent for p in out.glob("cell-*/run-*/scenario.json"))


def _by_gid(fig, prefix: str) -> list:
    found = []
    for ax in fig.axes:
        for artist in list(ax.lines) + list(ax.collections) + list(ax.patches):
            gid = artist.get_gid() or ""
            if gid == prefix or gid.startswith(prefix + ":") or (prefix.endswith(":") and gid.startswith(prefix)):
                found.append(artist)
    return found


# ------------------------------------------------------------------ units
def test_checkpoint_outcome_rules():
    assert D.checkpoint_outcome({"busy": 0, "log": 12, "checkpointed": 12, "err": None}) == "complete"
    assert D.checkpoint_outcome({"busy": 0, "log": 0, "checkpointed": 0, "err": None}) == "complete"  # TRUNCATE
    assert D.checkpoint_outcome({"busy": 1, "log": -1, "checkpointed": -1, "err": None}) == "busy"
    assert D.checkpoint_outcome({"busy": None, "log": None, "checkpointed": None, "err": "busy"}) == "busy"
    assert D.checkpoint_outcome({"busy": 0, "log": 40, "checkpointed": 17, "err": None}) == "partial"
    assert D.checkpoint_outcome({"busy": None, "log": None, "checkpointed": None, "err": "ioerr"}) == "partial"


def test_stalls_are_stretches_without_a_committed_write(tmp_path):
    history = HistoryWriter(tmp_path / "history" / "writer-0.jsonl")
    history.record({"type": "go", "t": 100.0})
    # commits end at 0.1, 0.2, 1.0 (gap 0.8), 1.1, 3.0 (gap 1.9; the failed write does not count)
    for t, ms, ok in ((100.0, 100.0, True), (100.15, 50.0, True), (100.3, 700.0, True), (101.05, 50.0, True),
                      (101.2, 300.0, False), (101.5, 1500.0, True)):
        history.record({"type": "op", "worker": "writer-0", "kind": "write", "t": t, "ms": ms, "ok": ok,
                        "err": None if ok else "busy"})
    history.close()
    run = D.load_run(tmp_path)
    windows = D.stall_windows(run, 0.5)
    assert windows == [pytest.approx((0.2, 1.0)), pytest.approx((1.1, 3.0))]
    stalls = D.stalls(run, 0.5)
    assert stalls["count"] == 2 and stalls["seconds"] == pytest.approx(0.8 + 1.9)
    assert stalls["longest_s"] == pytest.approx(1.9) and stalls["max_ms"] == 1500.0
    assert run.partial  # no run_stop record
    fig = F.draw_latency(run)
    spans = _by_gid(fig, "stall")
    assert len(spans) == 2


def test_latency_buckets_are_nearest_rank_percentiles():
    t = np.array([0.05, 0.06, 0.07, 0.08, 1.5, 1.6])
    ms = np.array([1.0, 2.0, 3.0, 100.0, 7.0, 9.0])
    buckets = D.latency_buckets(D.KindOps(t, ms, np.ones(6, dtype=bool)), 1.0)
    assert buckets["t"].tolist() == [0.5, 1.5]
    assert buckets["count"].tolist() == [4, 2]
    assert buckets["p50"].tolist() == [2.0, 7.0]
    assert buckets["p99"].tolist() == [100.0, 9.0]
    series = D.throughput(D.KindOps(t, ms, np.ones(6, dtype=bool)), 0.5, 2.0)
    assert series["ops_per_s"].tolist() == [8.0, 0.0, 0.0, 4.0]


# --------------------------------------------------------- a real matrix
def test_report_files_written(matrix_run):
    out, results, written = matrix_run
    assert len(results["cells"]) == 2
    for name in ("report.md", "report.html", "comparison.json", "figures/comparison.png",
                 "figures/wal_growth.png", "figures/wal_by_cell.png", "figures/write_latency_by_cell.png"):
        assert (out / name) in written and (out / name).stat().st_size > 0, name
    for run_dir in _run_dirs(out):
        for name in ("sizes.png", "latency.png", "throughput.png", "latency_cdf.png"):
            png = run_dir / "figures" / name
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        md = (run_dir / "report.md").read_text()
        page = (run_dir / "report.html").read_text()
        # verdict first, then the figures, the checks, and last the details: scenario, SQLite, environment
        body = md.split("\n", 2)[2]
        assert body.lstrip().startswith("**CLEAN")
        order = [md.index(h) for h in ("**CLEAN", "## Figures", "![", "## Checks", "## Lost writes",
                                        "## Scenario", "## SQLite", "## Environment")]
        assert order == sorted(order)
        order = [page.index(h) for h in ('class="verdict"', 'id="figures"', "<figure>", 'id="checks"',
                                          'id="scenario"', 'id="sqlite"', 'id="environment"')]
        assert order == sorted(order)
        assert "checkpoint.mode =" in md
        assert "ENABLE_FTS5" in md.replace("\n", " ") or "not known" in md
        assert "kernel" in md and "filesystem of the run dir" in md
        assert "![" in md and "figures/sizes.png" in md
        # self-contained: every image inline, nothing fetched
        assert page.count("data:image/png;base64,") == 4
        assert "http://" not in page and "https://" not in page and "<script" not in page
        assert "PARTIAL" not in md
    top = (out / "report.md").read_text()
    assert top.split("\n", 2)[2].lstrip().startswith("**PASS")
    assert "cell-000" in top and "cell-001" in top and "mode=PASSIVE" in top and "mode=TRUNCATE" in top
    # the folder page: verdict, the cells, the figures (matrix, then the runs'), then the details
    order = [top.index(h) for h in ("**PASS", "| cell |", "## Comparison", "](figures/comparison.png)",
                                     "## cell-000", "](cell-000/run-000/figures/sizes.png)", "## cell-001",
                                     "## Scenario", "## SQLite", "## Environment")]
    assert order == sorted(order)
    assert (out / "report.html").read_text().count("data:image/png;base64,") >= 4 + 2 * 4


def test_every_figure_has_a_visible_caption(matrix_run):
    out, _results, _ = matrix_run
    for folder in [out] + _run_dirs(out):
        page = (folder / "report.html").read_text()
        figures = re.findall(r"<figure>(.*?)</figure>", page, re.S)
        assert figures and len(figures) == page.count("<img ")
        for figure in figures:
            alt = re.search(r'<img alt="([^"]+)"', figure)
            caption = re.search(r"<figcaption>([^<]+)</figcaption>$", figure)
            assert alt and caption, figure[:80]
            assert len(caption.group(1)) > len(alt.group(1)) > 5  # a sentence, not the alt text again
        md = (folder / "report.md").read_text()
        images = re.findall(r"!\[[^\]]+\]\([^)]+\)\n\n\*([^*\n]+)\*\n", md)
        assert len(images) == md.count("![") == len(figures)


def _github_anchors(md: str) -> set[str]:
    """The anchors a code host gives the headings of a Markdown page (repeated ones numbered)."""
    seen: set[str] = set()
    for line in md.splitlines():
        if line.startswith("#"):
            base = re.sub(r"[^a-z0-9_\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            anchor, n = base, 0
            while anchor in seen:
                n += 1
                anchor = f"{base}-{n}"
            seen.add(anchor)
    return seen


def page_links(page: Path) -> list[str]:
    """The targets of the links (not the images) of a report page."""
    text = page.read_text()
    if page.suffix == ".html":
        return [html.unescape(h) for h in re.findall(r'<a href="([^"]*)"', text)]
    return re.findall(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)", text)


def page_anchors(page: Path) -> set[str]:
    text = page.read_text()
    return set(re.findall(r' id="([^"]+)"', text)) if page.suffix == ".html" else _github_anchors(text)


def unresolved_links(page: Path) -> list[str]:
    """Links of ``page`` whose file does not exist or whose anchor is not on the target page."""
    bad = []
    for href in page_links(page):
        path, _, anchor = href.partition("#")
        target = (page.parent / path).resolve() if path else page
        if "://" in href or os.path.isabs(path) or not target.is_file() or (
                anchor and anchor not in page_anchors(target)):
            bad.append(href)
    return bad


def test_folder_and_run_pages_link_both_ways_and_survive_a_move(matrix_run, tmp_path):
    out, _results, _ = matrix_run
    moved = tmp_path / "moved"
    shutil.copytree(out, moved, ignore=shutil.ignore_patterns("db"))
    for ext in ("md", "html"):
        top = moved / f"report.{ext}"
        links = page_links(top)
        assert not unresolved_links(top), unresolved_links(top)
        for run_dir in _run_dirs(out):
            rel = run_dir.relative_to(out).as_posix()
            assert f"{rel}/report.{ext}" in links  # the folder page opens each run page
            run_page = moved / rel / f"report.{ext}"
            back = page_links(run_page)
            assert f"../../report.{ext}" in back  # ... and each run page the folder page
            cell = run_dir.parent.name
            assert any(h.startswith(f"../../report.{ext}#{cell}-mode") for h in back), back
            assert not unresolved_links(run_page), unresolved_links(run_page)
        # the cells table links each cell to its section on the page
        assert "#cell-000-modepassive" in links and "#cell-001-modetruncate" in links
    # a run page rebuilt alone (`walstress report RUN_DIR`) keeps its links to the folder page
    run_dir = moved / "cell-001" / "run-000"
    build_report(run_dir, {"cells": [], "run": None})
    for ext in ("md", "html"):
        assert f"../../report.{ext}#cell-001-modetruncate" in page_links(run_dir / f"report.{ext}")
        assert not unresolved_links(run_dir / f"report.{ext}")


def test_sizes_figure_plots_the_samples_and_every_checkpoint(matrix_run):
    out, _results, _ = matrix_run
    for run_dir in _run_dirs(out):
        records = read_history(run_dir / "history")
        run = D.load_run(run_dir)
        fig = F.draw_sizes(run)
        samples = by_type(records, "sample")
        t0 = next(r["t"] for r in records if r["type"] == "go")
        (wal_line,) = _by_gid(fig, "wal")
        assert np.allclose(wal_line.get_xdata(), [s["t"] - t0 for s in samples])
        assert np.allclose(wal_line.get_ydata(), [s["wal_bytes"] / MIB for s in samples])
        (db_line,) = _by_gid(fig, "db")
        assert np.allclose(db_line.get_ydata(), [s["db_bytes"] / MIB for s in samples])
        checkpoints = by_type(records, "checkpoint")
        assert checkpoints, "the scenario checkpoints"
        drawn: dict[str, int] = {}
        for collection in _by_gid(fig, "checkpoint"):
            _, mode, outcome = collection.get_gid().split(":")
            drawn[f"{mode}:{outcome}"] = drawn.get(f"{mode}:{outcome}", 0) + len(collection.get_offsets())
        expected: dict[str, int] = {}
        for ck in checkpoints:
            key = f"{ck['mode']}:{D.checkpoint_outcome(ck)}"
            expected[key] = expected.get(key, 0) + 1
        assert drawn == expected
        # a marker sits on the WAL curve at the checkpoint's end (the first to end,
        # which is not always the first to start)
        first = min(checkpoints, key=lambda c: c["t"] + c["ms"] / 1000.0)
        end = first["t"] - t0 + first["ms"] / 1000.0
        seen = [s["wal_bytes"] for s in samples if s["t"] - t0 <= end]
        marker = min(D.checkpoint_markers(run), key=lambda m: m["t"])
        assert marker["wal_bytes"] == (seen[-1] if seen else 0)


def test_latency_throughput_and_cdf_figures_plot_every_operation(matrix_run):
    out, results, _ = matrix_run
    run_dir = _run_dirs(out)[0]
    records = read_history(run_dir / "history")
    ops = by_type(records, "op")
    writes = sorted(float(r["ms"]) for r in ops if r["kind"] == "write")
    run = D.load_run(run_dir)
    assert run.ops["write"].count == len(writes) > 0

    latency = F.draw_latency(run)
    (raw,) = _by_gid(latency, "raw:write")
    assert sorted(raw.get_ydata()) == pytest.approx(writes)
    (p99,) = _by_gid(latency, "p99:write")
    width = D.bucket_seconds(run.span_s)
    buckets = D.latency_buckets(run.ops["write"], width)
    finite = np.asarray(p99.get_ydata(), dtype=float)
    dense = buckets["count"] >= F.PERCENTILE_MIN_COUNT
    assert dense.any()
    assert np.allclose(finite[~np.isnan(finite)], buckets["p99"][dense])
    # the overall p99 of run.json is the nearest-rank p99 of the plotted write latencies
    all_ms = sorted(run.ops["write"].ms.tolist())
    assert results["cells"][0]["results"][0]["latency_ms"]["write"]["p99_ms"] == pytest.approx(
        percentile(all_ms, 99), abs=1e-3)

    throughput = F.draw_throughput(run)
    for kind in run.kinds:
        (line,) = _by_gid(throughput, f"throughput:{kind}")
        total = float(np.sum(line.get_ydata()) * width)
        assert total == pytest.approx(run.ops[kind].count)

    cdf = F.draw_cdf(run)
    (line,) = _by_gid(cdf, "cdf:write")
    assert list(line.get_xdata()) == pytest.approx(writes)
    assert line.get_ydata()[-1] == pytest.approx(1.0)
    checkpoint_ms = sorted(float(c["ms"]) for c in by_type(records, "checkpoint"))
    (line,) = _by_gid(cdf, "cdf:checkpoint")
    assert list(line.get_xdata()) == pytest.approx(checkpoint_ms)


def test_fault_windows_are_shaded(matrix_run, tmp_path):
    out, _results, _ = matrix_run
    run_dir = tmp_path / "run"
    shutil.copytree(_run_dirs(out)[0], run_dir, ignore=shutil.ignore_patterns("db"))
    t0 = next(r["t"] for r in read_history(run_dir / "history") if r["type"] == "go")
    with HistoryWriter(run_dir / "history" / "faults.jsonl") as history:
        history.record({"type": "fault", "name": "throttle", "t": t0 + 0.5, "t_end": t0 + 1.25,
                        "target": "db", "detail": {"write_bps": 1 << 20}})
        history.record({"type": "fault", "name": "kill", "t": t0 + 2.0, "t_end": None,
                        "target": "writer-0", "detail": None})
    run = D.load_run(run_dir)
    for draw in (F.draw_sizes, F.draw_latency, F.draw_throughput):
        fig = draw(run)
        spans = _by_gid(fig, "fault:throttle")
        lines = _by_gid(fig, "fault:kill")
        assert spans and lines and len(spans) == len(lines)
        for span in spans:
            if hasattr(span, "get_width"):  # a Rectangle (matplotlib >= 3.9)
                xs = [span.get_x(), span.get_x() + span.get_width()]
            else:  # a Polygon
                xs = [float(x) for x, _ in span.get_xy()]
            assert min(xs) == pytest.approx(0.5) and max(xs) == pytest.approx(1.25)
        for line in lines:
            assert list(line.get_xdata()) == pytest.approx([2.0, 2.0])
    written = build_report(run_dir, {"cells": [], "run": None})
    assert run_dir / "report.html" in written
    md = (run_dir / "report.md").read_text()
    assert "## Faults" in md and "throttle" in md and "instant" in md


def test_matrix_figures_compare_the_cells(matrix_run):
    out, results, _ = matrix_run
    rows = json.loads((out / "comparison.json").read_text())
    assert [r["cell_id"] for r in rows] == ["cell-000", "cell-001"]
    for row, cell in zip(rows, results["cells"]):
        assert row["wal_peak_bytes"] == cell["wal_peak_bytes"]
        assert row["write_max_ms"] == cell["results"][0]["latency_ms"]["write"]["max_ms"]
        assert row["corrupt"] == cell["corrupt"] == 0 and row["runs"] == 1
        assert row["checkpoints"] == cell["results"][0]["checkpoints"]["count"]
    runs_by_cell = {c["cell_id"]: [D.load_run(Path(r["run_dir"])) for r in c["results"]] for c in results["cells"]}
    colours = {"cell-000": F.cell_colour(0), "cell-001": F.cell_colour(1)}
    growth = F.draw_wal_growth(D.wal_growth_curves(results["cells"], runs_by_cell), colours)
    for cell_id, runs in runs_by_cell.items():
        (line,) = _by_gid(growth, f"wal:{cell_id}:0")
        assert np.allclose(line.get_ydata(), runs[0].wal_bytes / MIB)
        assert line.get_color() == colours[cell_id]
        # the same colour as the cell's own size figure
        (own,) = _by_gid(F.draw_sizes(runs[0], colour=F.cell_colour(int(cell_id[-3:]))), "wal")
        assert own.get_color() == line.get_color()
    comparison = F.draw_comparison(rows, colours)
    (bars,) = [a for a in comparison.axes if any(p.get_gid() == "bar:wal_peak_bytes" for p in a.patches)]
    heights = [p.get_height() for p in bars.patches if p.get_gid() == "bar:wal_peak_bytes"]
    assert heights == pytest.approx([r["wal_peak_bytes"] / MIB for r in rows])


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def test_legends_list_only_what_is_drawn(matrix_run, tmp_path):
    out, results, _ = matrix_run
    runs_by_cell = {c["cell_id"]: [D.load_run(Path(r["run_dir"])) for r in c["results"]] for c in results["cells"]}
    colours = {"cell-000": F.cell_colour(0), "cell-001": F.cell_colour(1)}
    figures = [draw(runs[0]) for runs in runs_by_cell.values() for draw in F.RUN_FIGURES.values()]
    figures += [F.draw_wal_growth(D.wal_growth_curves(results["cells"], runs_by_cell), colours),
                F.draw_write_latency_by_cell(results["cells"], runs_by_cell, colours)]
    for fig in figures:
        for ax in fig.axes:
            legend = ax.get_legend()
            if legend is None:
                continue
            texts = [t.get_text() for t in legend.get_texts()]
            assert texts, "an empty legend box"
            for artist in list(ax.lines) + list(ax.collections):  # a labelled series in the legend shows a point
                if artist.get_label() in texts:
                    points = np.asarray(artist.get_xydata() if hasattr(artist, "get_xydata")
                                        else artist.get_offsets(), dtype=float).reshape(-1, 2)
                    assert np.isfinite(points).all(axis=1).any(), (artist.get_gid(), artist.get_label())
    by_cell = F.draw_write_latency_by_cell(results["cells"], runs_by_cell, colours)
    slow = any((runs[0].ops["write"].ms >= F.SLOW_MS).any() for runs in runs_by_cell.values())
    assert any(t.startswith("writes >") for t in _legend_texts(by_cell)) == slow

    # a run of three writes: points, but too few per bucket for a percentile line; no stall, no fault
    history = HistoryWriter(tmp_path / "few" / "history" / "writer-0.jsonl")
    history.record({"type": "go", "t": 100.0})
    for t in (100.0, 100.1, 100.2):
        history.record({"type": "op", "worker": "writer-0", "kind": "write", "t": t, "ms": 2.0, "ok": True,
                        "err": None})
    history.record({"type": "sample", "t": 100.3, "wal_bytes": 4096, "db_bytes": 8192})
    history.close()
    few = D.load_run(tmp_path / "few")
    assert _legend_texts(F.draw_latency(few)) == ["each operation"]
    assert _legend_texts(F.draw_sizes(few)) == ["WAL size"]
    # nothing recorded at all: no legend anywhere
    HistoryWriter(tmp_path / "none" / "history" / "writer-0.jsonl").close()
    empty = D.load_run(tmp_path / "none")
    for draw in F.RUN_FIGURES.values():
        assert _legend_texts(draw(empty)) == [], draw.__name__
        assert all(ax.get_legend() is None for ax in draw(empty).axes)


def test_console_progress_and_summary(tmp_path, matrix_run):
    history = tmp_path / "history"
    with HistoryWriter(history / "writer-0.jsonl") as writer:
        writer.record({"type": "op", "kind": "write", "t": 1.0, "ms": 1.0, "ok": True, "err": None})
        writer.record({"type": "op", "kind": "write", "t": 1.1, "ms": 9.0, "ok": False, "err": "busy"})
        writer.record({"type": "checkpoint", "t": 1.2, "ms": 3.0, "busy": None, "err": "locked"})
    with open(history / "writer-0.jsonl", "ab") as handle:  # a torn last line is not counted
        handle.write(b'{"type":"op","kind":"write","err":"corrupt"')
    stream = io.StringIO()
    console = Console(stream, plain_every_s=0.0)
    cell = type("Cell", (), {"cell_id": "cell-007", "label": "mode=X"})()
    console.run_progress(cell, 0, {"elapsed": 2.0, "duration": 30, "wal_bytes": 3 * MIB, "live_workers": 3,
                                   "run_dir": str(tmp_path)})
    line = stream.getvalue()
    assert line.endswith("\n") and "\r" not in line  # plain lines when not a terminal
    assert "[cell-007]" in line and "2.0/30 s" in line and "3.0 MiB" in line
    assert "errors 2" in line and "ops/s" in line
    quiet = Console(io.StringIO(), plain_every_s=3600.0)
    quiet._last_plain = time.monotonic()
    quiet.run_progress(cell, 0, {"elapsed": 2.0, "duration": 30, "wal_bytes": 0, "live_workers": 3,
                                 "run_dir": str(tmp_path)})
    assert quiet.stream.getvalue() == ""  # CI logs stay short
    table = summary_table(matrix_run[1])
    assert "cell-000" in table.splitlines()[2] and "write max" in table.splitlines()[0]


# ------------------------------------------------------ killed controller
KILLED_TOML = """
name = "killed"
seed = 5
duration = "30s"
expect = "clean"

[database]
schema = "minimal"
pages = 400

[checkpoint]
mode = "TRUNCATE"
every_writes = 50

[[workers]]
role = "writer"
count = 1

[[workers]]
role = "reader"
count = 1
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of the dead controller is reaped by init; treat it as gone
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def test_report_of_a_killed_controller_is_partial(tmp_path):
    from walstress.cli import main

    scenario = tmp_path / "killed.toml"
    scenario.write_text(KILLED_TOML)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    controller = subprocess.Popen([sys.executable, "-m", "walstress", "run", str(scenario), "--out", str(out),
                                   "--quiet", "--cache-dir", str(tmp_path / "cache")],
                                  cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker_pids: list[int] = []
    try:
        go = out / "cell-000" / "run-000" / "control" / "go"
        deadline = time.monotonic() + 60
        while not go.exists() and time.monotonic() < deadline and controller.poll() is None:
            time.sleep(0.05)
        assert go.exists(), "the run did not start"
        time.sleep(2.5)
        os.kill(controller.pid, signal.SIGKILL)
        controller.wait(timeout=10)
        time.sleep(6)  # workers notice their parent is gone and exit
        history = read_history(out / "cell-000" / "run-000" / "history")
        worker_pids = [r["pid"] for r in history if r.get("type") == "worker_spawn"]
        assert worker_pids and not [p for p in worker_pids if _alive(p)]
    finally:
        if controller.poll() is None:
            controller.kill()
            controller.wait(timeout=10)
        for pid in worker_pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)

    assert not (out / "report.md").exists()
    main(["report", str(out)])
    run_dir = out / "cell-000" / "run-000"
    for page in (out / "report.md", run_dir / "report.md"):
        text = page.read_text()
        assert "PARTIAL" in text, page
    run_md = (run_dir / "report.md").read_text()
    assert "did not finish" in run_md and "of the planned 30 s" in run_md
    run = D.load_run(run_dir)
    assert run.partial and 1.5 < run.span_s < 20
    assert run.ops["write"].count > 0
    (wal,) = _by_gid(F.draw_sizes(run), "wal")
    assert len(wal.get_xdata()) == len(by_type(read_history(run_dir / "history"), "sample")) > 10
    html_page = (run_dir / "report.html").read_text()
    assert "PARTIAL RUN" in html_page and html_page.count("data:image/png;base64,") == 4
    assert math.isfinite(run.span_s)


@pytest.mark.slow
def test_figures_of_a_60_second_run_render_in_under_5_seconds(tmp_path):
    from walstress import load_scenario

    scenario = load_scenario(PROJECT_ROOT / "scenarios" / "smoke.toml", ["duration=60s"])
    result = run_scenario(scenario, tmp_path / "out", cache_dir=tmp_path / "cache")
    run_dir = Path(result.runs[0]["run_dir"])
    wall, cpu = time.perf_counter(), time.process_time()
    run = D.load_run(run_dir)
    written = F.run_figures(run, run_dir / "figures")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"\n{sum(o.count for o in run.ops.values())} operations, {run.size_t.size} samples: "
          f"figures in {wall:.2f} s wall, {cpu:.2f} s CPU")
    assert len(written) == 4 and run.span_s > 55
    assert sum(o.count for o in run.ops.values()) > 5_000
    # CPU time of the drawing process: the wall clock also counts whatever else the machine runs
    assert cpu < 5.0, f"{cpu:.2f} s"
