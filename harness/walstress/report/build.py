"""Assemble the figures and pages of an output folder or of one run dir."""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path
from typing import Any

from walstress.checks.causes import cause_text
from walstress.console import human_bytes
from walstress.report import data as D
from walstress.report import figures as F
from walstress.report import pages as P

OVERVIEW_RUNS_WITH_FIGURES = 8   # runs whose figures the output folder's page shows inline
INTEGRITY_LINES_SHOWN = 200

# file name: (alt text, caption shown under the figure)
RUN_FIGURE_TEXT = {
    "sizes.png": ("WAL and database size over time",
                  "WAL size (top) and database file size (bottom) over time. Markers: checkpoints, shape by mode, "
                  "colour by outcome (green complete, orange partial, red busy); grey: fault windows."),
    "latency.png": ("latency of every operation over time",
                    "Latency of every operation, one panel per kind (points), with p50 / p95 / p99 per time bucket "
                    f"(lines, for buckets of at least {F.PERCENTILE_MIN_COUNT} operations); red: write stalls."),
    "throughput.png": ("operations per second per kind",
                       "Operations started per second, one panel per kind, on a linear axis: a stall shows as zero."),
    "latency_cdf.png": ("latency distribution per kind",
                        "Latency distribution per kind: the fraction of operations at or below a latency; "
                        "dotted lines at 0.5, 0.95 and 0.99."),
}
MATRIX_FIGURE_TEXT = {
    "comparison.png": ("cells side by side",
                       "The cells side by side, one panel per measure, one bar per cell (its worst run)."),
    "wal_growth.png": ("WAL growth of every cell",
                       "WAL size of every run on one axis, in its cell's colour (thin lines: repeats)."),
    "wal_by_cell.png": ("WAL size per cell",
                        "WAL size of each cell's first run on its own scale; markers: checkpoints by outcome."),
    "write_latency_by_cell.png": ("write latency per cell",
                                  "Write latency of each cell's first run on one shared axis: points are writes, "
                                  "the line is p99 per time bucket, red shading: write stalls."),
}


def _load_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _run_result(run_dir: Path, given: dict[str, Any] | None) -> dict[str, Any]:
    if given is not None:
        return given
    return _load_json(run_dir / "run.json") or {"run_dir": str(run_dir), "verdict": "not judged",
                                                 "reason": "the run dir has no run.json", "partial": True}


def _scenario_of(run_dir: Path) -> dict[str, Any]:
    meta = _load_json(run_dir / "scenario.json") or {}
    return meta.get("scenario", {})


def _run_title(run_dir: Path, label: str | None) -> str:
    cell = run_dir.parent.name if run_dir.parent.name.startswith("cell-") else ""
    head = f"{cell} {run_dir.name}".strip()
    return f"{head} ({label})" if label else head


# --------------------------------------------------------------- one run
def run_figures(run_dir: Path, colour: str, label: str | None) -> tuple[D.RunData, dict[str, Path]]:
    run = D.load_run(run_dir)
    title = _run_title(run_dir, label)
    return run, F.run_figures(run, run_dir / "figures", title=title, colour=colour)


def _latency_rows(result: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for kind, values in sorted(result.get("latency_ms", {}).items()):
        rows.append([kind, values.get("count"), values.get("p50_ms"), values.get("p95_ms"), values.get("p99_ms"),
                     values.get("max_ms")])
    return rows


def run_sections(page: P.Page, result: dict[str, Any], run: D.RunData, figs: dict[str, Path], *,
                 level: int, with_context: bool, back: P.Text | None = None) -> None:
    """The body of a run's report (also used, one level down, in an output folder's page): the verdict,
    its numbers, the figures, the checks, then (``with_context``) the scenario and SQLite.
    ``back``: the line under the verdict that links to the output folder's page."""
    text, colour = P.verdict_text(result)
    page.verdict(text, colour)
    cause = cause_text(result)
    if cause:
        page.p(cause)
    if back is not None:
        page.p(back)
    partial = bool(result.get("partial")) or run.partial
    if partial:
        page.verdict(P.partial_note(result, run.last_record_t, run.span_s), "#b35c00")
    writes = result.get("writes", {})
    stalls = D.stalls(run)
    ck = D.checkpoint_totals(run)
    page.table(["what", "value"], [
        ["duration", f"{result.get('duration_s', run.span_s):.1f} s of {result.get('planned_duration_s') or '-'} s planned"],
        ["acknowledged writes (rows)", writes.get("acked", 0)],
        ["present in the database", writes.get("present", 0)],
        ["lost", writes.get("lost", 0)],
        ["indeterminate (in flight at a crash)", writes.get("indeterminate", 0)],
        ["WAL peak", human_bytes(result.get("wal_peak_bytes", int(run.wal_bytes.max()) if run.wal_bytes.size else 0))],
        ["database peak", human_bytes(result.get("db_peak_bytes", 0))],
        ["checkpoints (complete / partial / busy)", f"{ck['count']} ({ck['complete']} / {ck['partial']} / {ck['busy']}), "
                                                    f"{ck['seconds']:.2f} s in total, longest {ck['max_ms']:.0f} ms"],
        [f"write stalls (no commit for > {D.STALL_GAP_S:g} s)",
         f"{stalls['count']}, {stalls['seconds']:.2f} s in total, longest {stalls['longest_s']:.2f} s"],
        ["errors by class", ", ".join(f"{k} {v}" for k, v in sorted(result.get("errors", {}).items()) if v) or "none"],
    ])
    h = level
    page.h(h, "Figures")
    for name, path in figs.items():
        alt, caption = RUN_FIGURE_TEXT.get(name, (name, ""))
        page.image(path, alt, caption)
    rows = _latency_rows(result)
    if rows:
        page.h(h, "Latency (ms)")
        page.table(["kind", "count", "p50", "p95", "p99", "max"], rows)
    if run.faults:
        page.h(h, "Faults")
        page.table(["name", "start (s)", "end (s)", "target", "detail"],
                   [[f.name, round(f.t, 3), "instant" if f.t_end is None else round(f.t_end, 3), f.target,
                     json.dumps(f.detail, default=str)[:120] if f.detail is not None else "-"] for f in run.faults])
    lock_watch_section(page, result, level=h)
    checks_section(page, result, level=h)
    lost_section(page, result, run.run_dir, level=h)
    workers = result.get("workers", [])
    if workers:
        page.h(h, "Workers")
        page.table(["name", "role", "pid", "SQLite loaded", "starts", "exit code"],
                   [[w.get("name"), w.get("role"), w.get("pid"), w.get("sqlite_version"), w.get("starts"),
                     w.get("exit_code")] for w in workers])
    if result.get("worker_problems"):
        page.bullets([str(p) for p in result["worker_problems"]])
    examples = result.get("error_examples") or {}
    if examples:
        page.h(h, "Error examples")
        page.table(["class", "first message"], [[k, v] for k, v in sorted(examples.items())])
    if with_context:  # the details last: scenario, SQLite and its compile options
        meta = _load_json(run.run_dir / "scenario.json") or {}
        page.h(h, "Scenario")
        page.p(f"Seed {meta.get('seed', result.get('seed', '-'))}, run dir `{run.run_dir}`.")
        page.code(P.scenario_lines(meta.get("scenario", {})))
        sqlite_section(page, result, run, level=h)


def sqlite_section(page: P.Page, result: dict[str, Any], run: D.RunData, *, level: int) -> None:
    page.h(level, "SQLite")
    sqlite = result.get("sqlite", {})
    page.table(["what", "value"], [
        ["driver", sqlite.get("driver", "-")],
        ["requested version", sqlite.get("requested_version", "-")],
        ["versions the workers loaded", ", ".join(sqlite.get("worker_versions", [])) or "-"],
        ["version of the checks", sqlite.get("check_version", "-")],
    ])
    seen: set[tuple[str, str]] = set()
    for name, worker in sorted(run.workers.items()):
        if "sqlite_version" not in worker:
            continue
        key = (str(worker.get("driver")), str(worker.get("module_path")))
        if key in seen:
            continue
        seen.add(key)
        options = P.compile_options(worker.get("driver", "stdlib"), worker.get("module_path"),
                                    worker.get("sqlite_version"))
        page.p(f"Compile options of SQLite {worker.get('sqlite_version')} ({worker.get('driver')}, "
               f"`{worker.get('module_path')}`, first loaded by {name}):")
        page.code(textwrap.fill(" ".join(options), width=100) if isinstance(options, list) else options)


def checks_section(page: P.Page, result: dict[str, Any], *, level: int) -> None:
    page.h(level, "Checks")
    integrity = result.get("integrity")
    if not integrity:
        page.p("No integrity check output (the run left no database to check).")
        return
    run_dir = Path(result.get("run_dir", "."))
    full = run_dir / "checks" / "integrity.txt"
    lines = []
    if full.exists():
        lines = full.read_text().splitlines()
    lines = lines or list(integrity.get("named_messages") or integrity.get("messages") or [])
    total = max(len(lines), int(integrity.get("named_messages_total", 0) or 0))
    page.p(f"`PRAGMA integrity_check` (SQLite {integrity.get('sqlite_version', '-')}, "
           f"{integrity.get('seconds', 0):.2f} s), with b-tree names: {total} line(s)"
           + (f", the first {INTEGRITY_LINES_SHOWN} shown (all in `checks/integrity.txt`)" if total > INTEGRITY_LINES_SHOWN else "")
           + ".")
    page.code("\n".join(lines[:INTEGRITY_LINES_SHOWN]) or "(no output)")
    rows = [["open error", integrity.get("open_error") or "none"],
            ["damaged objects", ", ".join(integrity.get("damaged_objects") or []) or "none"]]
    for table, verdict in sorted((integrity.get("fts") or {}).items()):
        rows.append([f"FTS5 integrity-check of {table}", verdict])
    if integrity.get("walk_problems"):
        rows.append(["file walk", "; ".join(map(str, integrity["walk_problems"][:20]))])
    if integrity.get("checkpoint") is not None:
        rows.append(["checkpoint before the check (busy, log, checkpointed)", str(integrity.get("checkpoint"))])
    page.table(["check", "result"], rows)


def lost_section(page: P.Page, result: dict[str, Any], run_dir: Path, *, level: int) -> None:
    writes = result.get("writes", {})
    page.h(level, "Lost writes")
    ids = list(writes.get("lost_ids") or [])
    listed = run_dir / "checks" / "lost_ids.txt"
    if listed.exists():
        ids = [int(x) for x in listed.read_text().split()] or ids
    if not ids:
        page.p(f"None: all {writes.get('acked', 0)} acknowledged rows are present"
               + (f"; {writes.get('indeterminate')} indeterminate." if writes.get("indeterminate") else "."))
        return
    page.p(f"{len(ids)} acknowledged row(s) are not in the state the last acknowledged commit left them "
           f"(missing, stale content, or deleted and back)"
           + (f"; the first {P.LOST_IDS_SHOWN} are listed, all in `checks/lost_ids.txt`" if len(ids) > P.LOST_IDS_SHOWN else "")
           + ".")
    page.code(" ".join(str(i) for i in ids[:P.LOST_IDS_SHOWN]))
    details = (result.get("ledger") or {}).get("lost_details") or []
    if details:
        page.code("\n".join(json.dumps(d, default=str) for d in details[:50]))


def environment_section(page: P.Page, env: dict[str, Any] | None, run_dir: Path, *, level: int) -> None:
    page.h(level, "Environment")
    read_now = not env
    if not env:
        from walstress.environment import environment_info

        env = environment_info(run_dir)
    page.table(["what", "value"], P.environment_rows(env, read_now=read_now))


def cell_heading(cell_id: str, label: str | None) -> str:
    """A cell's heading on the output folder's page (run pages link to it)."""
    return f"{cell_id}: {label or ''}"


def _back_link(run_dir: Path, folder: Path | None, label: str | None) -> P.Text | None:
    """The run page's link to its output folder's page: given while that page is built, else found when
    the run dir sits in an output folder whose page exists."""
    if folder is None and run_dir.parent.name.startswith("cell-") and (run_dir.parent.parent / "report.html").exists():
        folder = run_dir.parent.parent
    if folder is None:
        return None
    cell = run_dir.parent.name
    if label is None:  # a run rebuilt alone: its cell's label is in the output folder's results
        cells = (_load_json(folder / "results.json") or {}).get("cells") or []
        label = next((c.get("label") for c in cells if c.get("cell_id") == cell), None)
    name = _scenario_of(run_dir).get("name") or folder.name
    text: list[P.Inline] = ["Part of ", P.Link(f"{name}, every cell", folder)]
    if label is not None:
        text += [": ", P.Link(f"{cell}, all its runs", folder, heading=cell_heading(cell, label))]
    return text + ["."]


def build_run_report(run_dir: Path, result: dict[str, Any] | None = None, *, colour: str = F.CELL_COLOURS[0],
                     label: str | None = None, env: dict[str, Any] | None = None,
                     loaded: tuple[D.RunData, dict[str, Path]] | None = None,
                     folder: Path | None = None) -> list[Path]:
    """Figures and report.md/html of one run dir; returns the written paths. ``folder``: the output
    folder whose page is being built around this run (its page is linked from the run's)."""
    run_dir = Path(run_dir)
    result = _run_result(run_dir, result)
    run, figs = loaded or run_figures(run_dir, colour, label)
    page = P.Page(f"walstress run {_run_title(run_dir, label)}")
    run_sections(page, result, run, figs, level=1, with_context=True, back=_back_link(run_dir, folder, label))
    environment_section(page, env, run_dir, level=1)
    page.p(f"Report built {time.strftime('%Y-%m-%d %H:%M:%S')} from the run's history "
           f"(`walstress report {run_dir}` rebuilds it).")
    return list(figs.values()) + P.write_page(page, run_dir)


# ----------------------------------------------------------- output folder
def build_folder_report(out_dir: Path, results: dict[str, Any]) -> list[Path]:
    """Every run's report, the matrix figures and the output folder's report.md/html."""
    out_dir = Path(out_dir)
    cells = results.get("cells", [])
    env = results.get("environment")
    colours = {cell["cell_id"]: F.cell_colour(i) for i, cell in enumerate(cells)}
    written: list[Path] = []
    runs_by_cell: dict[str, list[D.RunData]] = {}
    figs_by_run: dict[str, dict[str, Path]] = {}
    for cell in cells:
        for result in cell.get("results", []):
            run_dir = Path(result["run_dir"])
            if not run_dir.is_dir():
                run_dir = out_dir / cell["cell_id"] / Path(result["run_dir"]).name
            loaded = run_figures(run_dir, colours[cell["cell_id"]], cell.get("label"))
            runs_by_cell.setdefault(cell["cell_id"], []).append(loaded[0])
            figs_by_run[str(run_dir)] = loaded[1]
            written += build_run_report(run_dir, result, colour=colours[cell["cell_id"]], label=cell.get("label"),
                                        env=env, loaded=loaded, folder=out_dir)
    rows = [D.cell_comparison(cell, runs_by_cell.get(cell["cell_id"], [])) for cell in cells]
    matrix_figs: dict[str, Path] = {}
    figures_dir = out_dir / "figures"
    if len(cells) >= 2:
        matrix_figs["comparison.png"] = F.save(F.draw_comparison(rows, colours), figures_dir / "comparison.png")
        matrix_figs["wal_growth.png"] = F.save(
            F.draw_wal_growth(D.wal_growth_curves(cells, runs_by_cell), colours), figures_dir / "wal_growth.png")
        matrix_figs["wal_by_cell.png"] = F.save(F.draw_wal_by_cell(cells, runs_by_cell, colours),
                                                figures_dir / "wal_by_cell.png")
        matrix_figs["write_latency_by_cell.png"] = F.save(
            F.draw_write_latency_by_cell(cells, runs_by_cell, colours), figures_dir / "write_latency_by_cell.png")
        written += list(matrix_figs.values())
    (figures_dir if matrix_figs else out_dir).mkdir(parents=True, exist_ok=True)
    comparison_path = out_dir / "comparison.json"
    comparison_path.write_text(json.dumps(rows, indent=1, default=str))
    written.append(comparison_path)

    scenario = results.get("scenario", {})
    name = scenario.get("name") or out_dir.name
    if not scenario.get("source"):  # rebuilt from run dirs alone: the runs know the scenario's name
        name = next((_scenario_of(r.run_dir).get("name") for runs in runs_by_cell.values() for r in runs), name)
    page = P.Page(f"walstress: {name}")
    partial = bool(results.get("partial")) or any(r["partial"] for r in rows)
    totals = results.get("totals", {})
    ok = bool(results.get("ok"))
    outcome = ("every cell's verdicts match its expectation" if ok else
               "cells whose verdicts do not match their expectation: "
               + (", ".join(totals.get("mismatched_cells", [])) or "(none finished)"))
    if partial:
        page.verdict("PARTIAL: the controller did not finish every run; this report shows what was recorded"
                     + (f" ({results['note']})" if results.get("note") else "")
                     + f". Of what was recorded: {outcome}.", "#b35c00")
    else:
        page.verdict(("PASS: " if ok else "FAIL: ") + outcome, "#1e7b34" if ok else "#b00020")
    page.table(["cell", "parameters", "expect", "verdicts", "WAL peak", "write p99 (ms)", "write max (ms)",
                "checkpoint time (s)", "stall time (s)", "corrupt", "lost", "matches"],
               [[P.Link(r["cell_id"], heading=cell_heading(cell["cell_id"], cell.get("label"))), r["label"],
                 cell.get("expect"), _verdicts(cell), human_bytes(r["wal_peak_bytes"]),
                 r["write_p99_ms"], r["write_max_ms"], r["checkpoint_s"], r["stall_s"],
                 f"{r['corrupt']}/{r['runs']}", f"{r['lost']}/{r['runs']}",
                 ("yes" if cell.get("matches_expect") else "NO") + (" (partial)" if r["partial"] else "")]
                for r, cell in zip(rows, cells)])
    page.p(f"Worst run of each cell. Stall time: seconds in stretches longer than {D.STALL_GAP_S:g} s in "
           f"which no write committed. Checkpoint time: seconds spent in checkpoint calls.")
    if len(cells) > 1:
        from walstress.explain import explain

        page.h(1, "What changes the verdict")
        page.bullets(explain(results))
    if matrix_figs:
        page.h(1, "Comparison")
        for name, path in matrix_figs.items():
            alt, caption = MATRIX_FIGURE_TEXT[name]
            page.image(path, alt, caption)
    shown = _runs_to_show(cells)
    for cell in cells:
        page.h(1, cell_heading(cell["cell_id"], cell.get("label")))
        page.p(f"Expect {cell.get('expect')}: {_verdicts(cell)}; matches: {'yes' if cell.get('matches_expect') else 'NO'}."
               + _causes_text(cell))
        for index, result in enumerate(cell.get("results", [])):
            run_dir = runs_by_cell[cell["cell_id"]][index].run_dir
            rel = run_dir.relative_to(out_dir) if run_dir.is_relative_to(out_dir) else run_dir
            page.h(2, f"{run_dir.name}: {str(result.get('verdict', '?')).upper()}")
            page.p(["Full report: ", P.Link(rel.as_posix(), run_dir), "."])
            if (cell["cell_id"], index) in shown:
                run_sections(page, result, runs_by_cell[cell["cell_id"]][index], figs_by_run[str(run_dir)],
                             level=3, with_context=False)
            else:
                text, colour = P.verdict_text(result)
                page.verdict(text, colour)
                cause = cause_text(result)
                if cause:
                    page.p(cause)
    page.h(1, "Scenario")
    page.p(f"{scenario.get('description') or ''} (file `{scenario.get('source') or '-'}`, seed "
           f"{scenario.get('seed', '-')}, {results.get('repeat', '-')} run(s) per cell).".strip())
    if scenario.get("matrix"):
        page.code("\n".join(f"{k} = {json.dumps(v)}" for k, v in scenario["matrix"].items()))
    first = next(((c["results"][0], runs_by_cell[c["cell_id"]][0]) for c in cells
                  if c.get("results") and runs_by_cell.get(c["cell_id"])), None)
    if first is not None:
        page.p(f"Resolved scenario of {first[1].run_dir.parent.name} (other cells differ by the matrix keys):")
        page.code(P.scenario_lines(_scenario_of(first[1].run_dir)))
        sqlite_section(page, first[0], first[1], level=1)
    environment_section(page, env, out_dir, level=1)
    page.p(f"Report built {time.strftime('%Y-%m-%d %H:%M:%S')} from the runs' histories "
           f"(`walstress report {out_dir}` rebuilds it).")
    return written + P.write_page(page, out_dir)


def _causes_text(cell: dict[str, Any]) -> str:
    """" Causes of the damaged runs: lock_lost 4, unknown 1 (expected lock_lost)."" or ""."""
    causes = cell.get("causes") or {}
    if not causes:
        return ""
    text = " Causes of the damaged runs: " + ", ".join(f"{k} {v}" for k, v in sorted(causes.items(),
                                                                                   key=lambda kv: -kv[1]))
    if cell.get("expect_cause"):
        text += f" (expected {cell['expect_cause']})"
    return text + "."


def lock_watch_section(page: P.Page, result: dict[str, Any], *, level: int) -> None:
    """What the lock watch saw: its events, its cost."""
    watch = result.get("lock_watch")
    if not watch:
        return
    page.h(level, "Lock watch")
    share = watch.get("core_share")
    page.p(f"/proc/locks and the workers' descriptors sampled at {watch.get('hz')} Hz ({watch.get('samples')} "
           f"samples, {share * 100:.2f}% of a core)." if share is not None else "Lock watch ran.")
    rows = []
    for kind, label in (("lock_lost", "lock lost"), ("deleted_open", "deleted file in use"),
                        ("split_wal", "one database, two -shm"), ("two_libraries", "two SQLite libraries")):
        for event in watch.get(kind) or []:
            what = event.get("file") or ", ".join(os.path.basename(p) for p in (event.get("libraries") or
                                                                                event.get("shm_files") or {}))
            if kind == "lock_lost":
                what = f"{what} ({event.get('which')}; still held: {', '.join(event.get('still_held') or []) or 'none'})"
            rows.append([event.get("t_s"), label, event.get("worker"), event.get("pid"), what])
    if rows:
        page.table(["t (s)", "event", "worker", "pid", "file"], sorted(rows, key=lambda r: r[0] or 0))
    else:
        page.p("No lock was lost, no deleted file was in use, no process had two SQLite libraries.")
    libraries = {source for libs in (watch.get("libraries") or {}).values() for source in libs.values()}
    if libraries:
        page.p("SQLite libraries mapped by the workers: " + "; ".join(sorted(s[:30] for s in libraries)) + ".")


def _verdicts(cell: dict[str, Any]) -> str:
    parts = [f"{cell.get(k, 0)} {name}" for k, name in (("clean", "clean"), ("corrupt", "corrupt"),
                                                         ("lost", "lost-writes"), ("errors", "errors")) if cell.get(k)]
    return ", ".join(parts) or "none"


def _runs_to_show(cells: list[dict[str, Any]]) -> set[tuple[str, int]]:
    """(cell id, run index) of the runs whose figures the folder page shows inline: failures first,
    then each cell's first run. Keyed by position, so a moved output folder still matches."""
    failing = [(c["cell_id"], i) for c in cells for i, r in enumerate(c.get("results", []))
               if r.get("verdict") != "clean"]
    firsts = [(c["cell_id"], 0) for c in cells if c.get("results")]
    chosen: list[tuple[str, int]] = []
    for key in failing + firsts:
        if key not in chosen and len(chosen) < OVERVIEW_RUNS_WITH_FIGURES:
            chosen.append(key)
    return set(chosen)
