"""``walstress bench``: every performance figure a user weighs, each next to its baseline, in one run.

Each benchmark times walstress and its baseline in the same run, in blocks
whose order alternates (walstress first, then the baseline first, ...) so
that a machine's drift hits both alike, and reports the ratio of the
medians with the min/median/max of both sides. ``size="tiny"`` runs every
benchmark on small databases and short runs (the default test suite's
smoke: seconds); ``size="full"`` at the sizes of the table in the README
(tens of minutes on 2 cores).

A row's ``ratio`` is always "walstress over baseline" in the row's unit
(seconds: lower is better; per second: higher is better); ``meets`` says
whether the goal is met at this size (``None`` where the goal has no
meaning at the tiny size).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import psutil

from walstress.bench.overhead import alternate, measure_ledger_api, measure_overhead
from walstress.database.schema import SCHEMAS
from walstress.database.template import (SESSION_COLUMNS, build_database, copy_template, corpus_rows, get_template,
                                         insert_statement, message_columns)

ProgressFn = Callable[[str], None]

SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"build_pages": 400, "build_blocks": 2, "copy_pages": 400, "copy_blocks": 3, "tx": 40, "tx_blocks": 2,
             "tx_pages": 300, "writers": (2,), "pressure_s": 1.0, "pressure_blocks": 1, "sampler_s": 0.5,
             "sampler_hz": (50,), "check_pages": 400, "check_blocks": 2, "run_pages": (300,), "run_blocks": 1,
             "repro_runs": 1, "repro_s": 1.5, "figures_s": 1.0, "matrix_runs": 2, "memory_s": 2.0,
             "disk_s": 0.5, "ledger_tx": 20, "ledger_blocks": 2},
    "full": {"build_pages": 65536, "build_blocks": 2, "copy_pages": 65536, "copy_blocks": 5, "tx": 400,
             "tx_blocks": 5, "tx_pages": 8000, "writers": (2, 4, 8), "pressure_s": 10.0, "pressure_blocks": 2,
             "sampler_s": 10.0, "sampler_hz": (50, 100, 200), "check_pages": 65536, "check_blocks": 3,
             "run_pages": (8000, 65536, 262144), "run_blocks": 3, "repro_runs": 5, "repro_s": 20.0,
             "figures_s": 60.0, "matrix_runs": 36, "memory_s": 600.0, "disk_s": None, "ledger_tx": 200,
             "ledger_blocks": 40},
}


@dataclass
class Row:
    number: int
    name: str
    baseline: str
    goal: str
    unit: str                                        # "s" (lower is better) or "/s" (higher is better)
    walstress: list[float] = field(default_factory=list)
    base: list[float] = field(default_factory=list)
    ratio: float | None = None                       # median(walstress) / median(baseline)
    meets: bool | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    seconds: float = 0.0

    def finish(self, goal_met: Callable[["Row"], bool | None] | None = None) -> "Row":
        if self.walstress and self.base and statistics.median(self.base):
            self.ratio = round(statistics.median(self.walstress) / statistics.median(self.base), 3)
        if goal_met is not None:
            self.meets = goal_met(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for side in ("walstress", "base"):
            values = out[side]
            out[f"{side}_stats"] = ({"min": round(min(values), 4), "median": round(statistics.median(values), 4),
                                     "max": round(max(values), 4)} if values else None)
        return out


def _at_least(goal: float, row: Row) -> bool:
    return (row.ratio or 0) >= goal


def _on_rate(light: bool, row: Row) -> bool:
    return row.ratio is not None and abs(row.ratio - 1) <= 0.05 and light


def _fixed_cost_met(judged: bool, row: Row) -> bool | None:
    return statistics.median(row.walstress) <= 1.0 if judged else None


def _reproduced_within(target: float, judged: bool, row: Row) -> bool | None:
    return bool(row.walstress) and statistics.median(row.walstress) <= target if judged else None


def _timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


# ------------------------------------------------------------------ 1: build
def _bare_build(path: Path, schema: str, sessions: int) -> None:
    """The baseline: the same rows generated the same way, one transaction, the FTS5 tables filled at the end."""
    definition = SCHEMAS[schema]
    messages, session_rows = corpus_rows(schema, 0, sessions)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA page_size=4096")
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        for statement in definition.tables_ddl + definition.fts_ddl:
            conn.execute(statement)
        if session_rows:
            conn.executemany(insert_statement("sessions", SESSION_COLUMNS), session_rows)
        conn.executemany(insert_statement("messages", message_columns(definition.has_sessions)), messages)
        for table in definition.fts_tables:
            conn.execute(f"INSERT INTO {table}(rowid, content) SELECT id, content FROM messages")
        for statement in definition.triggers_ddl:
            conn.execute(statement)
        conn.execute("COMMIT")
    finally:
        conn.close()


def bench_build(size: dict[str, Any], work: Path) -> Row:
    row = Row(1, f"build a {size['build_pages']:,}-page hermes template", "a bare bulk load of the same rows in one "
              "transaction, FTS5 filled in one statement afterwards", "<= 1.2x, and <= 30 s on 2 cores", "s")
    info: dict[str, Any] = {}
    counter = iter(range(1000))

    def ours() -> float:
        target = work / f"build-{next(counter)}.db"
        took = _timed(lambda: info.update(build_database(target, schema="hermes", pages=size["build_pages"])))
        target.unlink()
        return took

    def bare() -> float:
        target = work / f"bare-{next(counter)}.db"
        took = _timed(lambda: _bare_build(target, "hermes", info["sessions"]))
        row.detail["bare_pages"] = _pages(target)
        target.unlink()
        return took

    ours()   # the first build gives the session count the baseline loads; not timed twice
    row.walstress, row.base = alternate(size["build_blocks"], lambda _: ours(), lambda _: bare())
    row.detail.update(pages=info["pages"], messages=info["messages"], sessions=info["sessions"])
    return row.finish(lambda r: (r.ratio or 99) <= 1.2 and statistics.median(r.walstress) <= 30.0
                      if size["build_pages"] >= 65536 else None)


def _pages(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA page_count").fetchone()[0])
    finally:
        conn.close()


# ------------------------------------------------------------------ 2: reuse
def bench_reuse(size: dict[str, Any], work: Path, cache_dir: Path | None) -> Row:
    template, _ = get_template(schema="hermes", pages=size["copy_pages"], page_size=4096, seed=0, cache_dir=cache_dir)
    row = Row(2, "reuse the cached template (a run's copy, synced)", "cp of the file, then sync of it",
              ">= 0.8x the speed of cp", "s")
    counter = iter(range(1000))

    def ours() -> float:
        target = work / f"copy-{next(counter)}.db"
        took = _timed(lambda: copy_template(template, target))
        target.unlink()
        return took

    def cp() -> float:
        target = work / f"cp-{next(counter)}.db"
        def copy_and_sync() -> None:
            subprocess.run(["cp", str(template), str(target)], check=True)
            subprocess.run(["sync", str(target)], check=True)

        took = _timed(copy_and_sync)
        target.unlink()
        return took

    row.walstress, row.base = alternate(size["copy_blocks"], lambda _: ours(), lambda _: cp())
    row.detail["bytes"] = template.stat().st_size
    # speed is the inverse of time: walstress's speed over cp's = cp's time over walstress's
    return row.finish(lambda r: r.ratio is not None and 1 / r.ratio >= 0.8)


# ------------------------------------------------------------------ 3: instrumentation
def bench_instrumentation(size: dict[str, Any], cache_dir: Path | None) -> list[Row]:
    rows = []
    for schema, sync, goal in [("minimal", "NORMAL", 0.9), ("minimal", "FULL", 0.97), ("hermes", "NORMAL", 0.9),
                               ("hermes", "FULL", 0.97)]:
        result = measure_overhead(pages=size["tx_pages"], transactions=size["tx"], blocks=size["tx_blocks"],
                                  schema=schema, synchronous=sync, cache_dir=cache_dir)
        row = Row(3, f"writer instrumentation (history + ledger), {schema}, synchronous {sync}",
                  "the same transactions in a bare loop", f">= {goal}x", "/s",
                  walstress=result["harness_tx_per_s"], base=result["bare_tx_per_s"])
        row.detail = {k: result[k] for k in ("transactions_per_block", "blocks", "batch", "pages")}
        rows.append(row.finish(partial(_at_least, goal)))
    return rows


# ------------------------------------------------------------------ 4: pressure
# the writer role's rows and statements (write_messages, into one of the template's sessions), nothing recorded
_BARE_WRITER = r"""
import sqlite3, sys, time
from walstress.bench.overhead import bare_transaction
from walstress.database.corpus import Corpus
from walstress.sqlite.driver import connect
db, seconds, batch, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
corpus = Corpus(seed)
conn = connect(db, busy_timeout_ms=5000)   # the connection type the writers use; the file is in WAL mode
((session,),) = conn.execute("SELECT id FROM sessions ORDER BY started_at DESC LIMIT 1 OFFSET ?", (seed,))
commits, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    try:
        bare_transaction(conn, corpus, batch, "hermes", session)
        commits += 1
    except sqlite3.OperationalError:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
print(commits)
"""


def bench_pressure(size: dict[str, Any], work: Path, cache_dir: Path | None) -> list[Row]:
    from walstress.catalog import scenario_from_dict
    from walstress.runner import run_scenario

    pages = size["tx_pages"]
    template, _ = get_template(schema="hermes", pages=pages, page_size=4096, seed=0, cache_dir=cache_dir)
    seconds = size["pressure_s"]
    rows = []
    for writers in size["writers"]:
        counter = iter(range(1000))

        def ours(writers: int = writers) -> float:
            data = {"name": f"bench-pressure-{writers}", "seed": 3, "duration": seconds, "expect": "any",
                    "database": {"schema": "hermes", "pages": pages, "busy_timeout_ms": 5000},
                    "checkpoint": {"mode": "NONE"}, "lock_watch": {"hz": 0},
                    "workers": [{"role": "writer", "count": writers, "batch": 2, "insert_weight": 1,
                                 "update_weight": 0, "delete_weight": 0}]}
            result = run_scenario(scenario_from_dict(data, source="<bench>"), work / f"pressure-{writers}-{next(counter)}",
                                  cache_dir=cache_dir, keep="none")
            run = result["cells"][0]["results"][0]
            # the writers write from the go to the stop signal: the planned duration (duration_s also counts
            # the time to stop and reap them)
            return run["writes"]["acked_transactions"] / float(run["planned_duration_s"] or run["duration_s"])

        def bare(writers: int = writers) -> float:
            db = work / f"bare-pressure-{writers}-{next(counter)}.db"
            copy_template(template, db, fsync=False)
            with contextlib.closing(sqlite3.connect(db)) as conn:   # WAL, as prepare_database sets it for a run
                conn.execute("PRAGMA journal_mode=WAL")
            procs = [subprocess.Popen([sys.executable, "-c", _BARE_WRITER, str(db), str(seconds), "2", str(i)],
                                      stdout=subprocess.PIPE, text=True) for i in range(writers)]
            commits = sum(int(p.communicate()[0].strip() or 0) for p in procs)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db}{suffix}").unlink(missing_ok=True)
            return commits / seconds

        row = Row(4, f"pressure: commits/s of {writers} writer processes", "a bare multi-process loop with the "
                  "same statements, no instrumentation", ">= 0.85x", "/s")
        row.walstress, row.base = alternate(size["pressure_blocks"], lambda _: ours(), lambda _: bare())
        row.detail = {"writers": writers, "seconds": seconds, "pages": pages}
        rows.append(row.finish(partial(_at_least, 0.85)))
    return rows


# ------------------------------------------------------------------ 5: sampler
_SLEEPER = "import time; time.sleep(600)"


def bench_sampler(size: dict[str, Any], work: Path) -> list[Row]:
    from walstress.history import HistoryWriter
    from walstress.sampler import Sampler

    db = work / "sampled.db"
    sqlite3.connect(db).close()
    sleepers = [subprocess.Popen([sys.executable, "-c", _SLEEPER]) for _ in range(8)]
    rows = []
    try:
        pids = {f"worker-{i}": p.pid for i, p in enumerate(sleepers)}
        for hz in size["sampler_hz"]:
            rates: list[float] = []
            shares: list[float] = []
            for block in range(2):
                history = HistoryWriter(work / f"sampler-{hz}-{block}.jsonl")
                sampler = Sampler(db, history, lambda: pids, hz=hz)
                started = time.monotonic()
                sampler.start()
                time.sleep(size["sampler_s"])
                cpu = _thread_cpu(sampler.native_id)
                elapsed = time.monotonic() - started
                sampler.stop()
                history.close()
                rates.append(sampler.samples / elapsed)
                shares.append(cpu / elapsed)
            row = Row(5, f"sampler at {hz} Hz with 8 worker processes", "the asked rate",
                      "within +-5%; < 3% of a core at 50 Hz", "/s", walstress=rates, base=[float(hz)] * len(rates))
            row.detail = {"core_share": [round(s, 4) for s in shares], "hz": hz}
            light = hz != 50 or statistics.median(shares) < 0.03
            rows.append(row.finish(partial(_on_rate, light)))
    finally:
        for p in sleepers:
            p.kill()
            p.wait()
    return rows


def _thread_cpu(native_id: int | None) -> float:
    for thread in psutil.Process().threads():
        if thread.id == native_id:
            return float(thread.user_time + thread.system_time)
    return 0.0


# ------------------------------------------------------------------ 6: check
def _cli_check(db: Path, fts: list[str], sqlite: str | None) -> None:
    statements = ["PRAGMA integrity_check;"] + [f"INSERT INTO {t}({t}) VALUES('integrity-check');" for t in fts]
    if sqlite:   # the sqlite3 command line, on a copy (FTS5's check writes nothing, but opens read-write)
        subprocess.run([sqlite, str(db)], input="\n".join(statements), capture_output=True, text=True, check=True)
        return
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for statement in statements:
            conn.execute(statement).fetchall()
    finally:
        conn.close()


def bench_check(size: dict[str, Any], work: Path, cache_dir: Path | None) -> Row:
    from walstress.checks.diagnose import check_database

    template, _ = get_template(schema="hermes", pages=size["check_pages"], page_size=4096, seed=0,
                               cache_dir=cache_dir)
    db = work / "checked.db"
    copy_template(template, db, fsync=False)
    sqlite = shutil.which("sqlite3")   # looked up once, outside the timed baseline
    baseline = "sqlite3 CLI" if sqlite else "Python's sqlite3 (no sqlite3 CLI here)"
    row = Row(6, f"walstress check of a {size['check_pages']:,}-page database", f"{baseline}: PRAGMA integrity_check "
              "plus FTS5 integrity-check on the same file", "<= 1.1x", "s")
    fts = list(SCHEMAS["hermes"].fts_tables)
    verdicts: list[str] = []
    row.walstress, row.base = alternate(size["check_blocks"],
                                        lambda _: _timed(lambda: verdicts.append(check_database(db)["verdict"])),
                                        lambda _: _timed(lambda: _cli_check(db, fts, sqlite)))
    row.detail = {"verdicts": sorted(set(verdicts)), "baseline": baseline}
    return row.finish(lambda r: (r.ratio or 99) <= 1.1)


# ------------------------------------------------------------------ 7: fixed cost of a run
def bench_fixed_cost(size: dict[str, Any], work: Path, cache_dir: Path | None) -> list[Row]:
    from walstress.catalog import scenario_from_dict
    from walstress.runner import run_scenario

    rows = []
    for pages in size["run_pages"]:
        get_template(schema="hermes", pages=pages, page_size=4096, seed=0, cache_dir=cache_dir)   # cached first
        totals: list[float] = []
        stress: list[float] = []
        for block in range(size["run_blocks"]):
            data = {"name": f"bench-fixed-{pages}", "seed": 1 + block, "duration": 1.0, "expect": "any",
                    "database": {"schema": "hermes", "pages": pages},
                    "checkpoint": {"mode": "PASSIVE", "every_writes": 50},
                    "workers": [{"role": "writer", "count": 2}, {"role": "reader", "count": 1}]}
            started = time.perf_counter()
            result = run_scenario(scenario_from_dict(data, source="<bench>"), work / f"fixed-{pages}-{block}",
                                  cache_dir=cache_dir, keep="failed")   # what walstress run does
            totals.append(time.perf_counter() - started)
            stress.append(result["cells"][0]["results"][0]["duration_s"])
        fixed = [t - s for t, s in zip(totals, stress)]
        row = Row(7, f"fixed cost of a 1 s run, {pages:,} pages", "the run's own stress time",
                  "<= 1 s of fixed cost at 8K pages", "s", walstress=fixed, base=stress)
        row.detail = {"pages": pages, "total_s": [round(t, 3) for t in totals]}
        rows.append(row.finish(partial(_fixed_cost_met, pages == 8000)))
    return rows


# ------------------------------------------------------------------ 8: time to reproduce
# (name, scenario, settings, goal: median seconds, longest run in seconds or None for the size's own)
REPRODUCTIONS = [
    ("lock breaker on the reporter's pattern", "scenarios/quickstart.toml",
     ["faults.lock_breaker.enabled=true", "checkpoint.mode=TRUNCATE"], 15.0, 12.0),
    ("the WAL-reset race, system SQLite", "scenarios/wal-reset-race.toml", ["sqlite=stdlib"], 3.2, None),
    ("the WAL-reset race, SQLite 3.51.2", "scenarios/wal-reset-race.toml", ["sqlite=3.51.2"], 0.1, None),
]


def bench_reproduce(size: dict[str, Any], work: Path, cache_dir: Path | None, root: Path) -> list[Row]:
    from walstress.catalog import load_scenario
    from walstress.runner import run_scenario

    rows = []
    for number, (name, path, sets, target, longest) in enumerate(REPRODUCTIONS):
        times: list[float] = []
        damaged = 0
        # a reproduction's time is SQLite's first corruption error, so a run need not be long
        extra = [f"duration={min(size['repro_s'], longest or size['repro_s'])}s"]
        if size["repro_runs"] < 5:
            extra.append("database.pages=2000")
        try:
            scenario = load_scenario(root / path, [*sets, *extra])
        except Exception as exc:   # an SQLite version that cannot be installed here, say
            rows.append(Row(8, f"time to reproduce: {name}", "-", f"median <= {target:g} s (FACTS.md)",
                            "s", note=f"not measured: {exc}"))
            continue
        for index in range(size["repro_runs"]):
            result = run_scenario(scenario, work / f"repro-{number}-{index}", cache_dir=cache_dir, keep="none",
                                  cells_filter=lambda cells: cells[:1], repeat=1)
            run = result["cells"][0]["results"][0]
            within = run.get("first_corruption_error_s")
            if run["verdict"] in ("corrupt", "lost-writes"):
                damaged += 1
                times.append(within if within is not None else run["duration_s"])
            else:   # not reproduced: the time to reproduce is more than the run's whole length
                times.append(run["duration_s"])
        # the baseline is a figure, not a measurement here: FACTS.md's hand-written script
        row = Row(8, f"time to reproduce: {name}", "-", f"median <= {target:g} s (FACTS.md's script)", "s",
                  walstress=times)
        row.detail = {"runs": size["repro_runs"], "reproduced": damaged, "target_s": target, "scenario": path,
                      "set": sets + extra}
        row.note = f"reproduced in {damaged} of {size['repro_runs']} run(s)" + (
            "; a run that did not counts its whole length" if damaged < size["repro_runs"] else "")
        rows.append(row.finish(partial(_reproduced_within, target, size["repro_runs"] >= 5)))
    return rows


# ------------------------------------------------------------------ 9: figures and reports
def bench_figures(size: dict[str, Any], work: Path, cache_dir: Path | None) -> list[Row]:
    from walstress.catalog import scenario_from_dict
    from walstress.report import build_report
    from walstress.report.build import run_figures
    from walstress.runner import run_scenario

    data = {"name": "bench-figures", "seed": 4, "duration": size["figures_s"], "expect": "any",
            "database": {"schema": "minimal", "pages": 2000},
            "checkpoint": {"mode": "PASSIVE", "every_writes": 100},
            "workers": [{"role": "writer", "count": 2}, {"role": "reader", "count": 2}]}
    result = run_scenario(scenario_from_dict(data, source="<bench>"), work / "figures", cache_dir=cache_dir,
                          keep="none")
    run = result["cells"][0]["results"][0]
    operations = _operations(run)
    seconds = [_timed(lambda: run_figures(Path(run["run_dir"]), "C0", None)) for _ in range(2)]
    figures = Row(9, f"figures of a {size['figures_s']:g} s run ({operations:,} operations)", "-",
                  "<= 5 s (a 60 s run, >= 40K operations)", "s", walstress=seconds)
    figures.detail = {"operations": operations}
    figures.finish(lambda r: statistics.median(r.walstress) <= 5.0 if operations >= 40_000 else None)

    runs = size["matrix_runs"]
    matrix = {"name": "bench-matrix", "seed": 4, "duration": 0.5, "expect": "any", "repeat": runs // 2 or 1,
              "database": {"schema": "minimal", "pages": 300},
              "checkpoint": {"mode": "PASSIVE", "every_writes": 50},
              "workers": [{"role": "writer", "count": 1}], "matrix": {"checkpoint.mode": ["PASSIVE", "TRUNCATE"]}}
    out = work / "matrix"
    results = run_scenario(scenario_from_dict(matrix, source="<bench>"), out, cache_dir=cache_dir, keep="none")
    made = sum(len(c["results"]) for c in results["cells"])
    report = Row(9, f"the report of a {made}-run matrix", "-", "<= 20 s (36 runs)", "s",
                 walstress=[_timed(lambda: build_report(out, results))])
    report.detail = {"runs": made}
    report.finish(lambda r: r.walstress[0] <= 20.0 if made >= 36 else None)
    return [figures, report]


# ------------------------------------------------------------------ 10: memory
def bench_memory(size: dict[str, Any], work: Path, cache_dir: Path | None) -> list[Row]:
    """The controller is ``walstress run`` in a process of its own, its RSS read every second: during the
    stress (flat, whatever the run's length) and while it judges (the history read back)."""
    from walstress.history import read_records
    from walstress.layout import RunLayout
    from walstress.tomlwriter import table

    lines = ['name = "bench-memory"', "seed = 5", f"duration = {size['memory_s']}", 'expect = "any"', ""]
    lines += table("database", {"schema": "minimal", "pages": 2000, "busy_timeout_ms": 2000})
    lines += table("checkpoint", {"mode": "PASSIVE", "every_writes": 100})
    for role, count, extra in (("writer", 4, {}), ("reader", 2, {}), ("opener", 2, {"pause_ms": 10})):
        lines += table("workers", {"role": role, "count": count, **extra}, array=True)
    scenario = work / "memory.toml"
    scenario.write_text("\n".join(lines) + "\n")
    out = work / "memory"
    command = [sys.executable, "-m", "walstress", "run", str(scenario), "--out", str(out), "--keep", "none",
               "--quiet"] + (["--cache-dir", str(cache_dir)] if cache_dir else [])
    wall0 = time.time()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = _poll_rss(child, 1.0, wall0)
    if child.returncode not in (0, 1) or not samples:
        raise RuntimeError(f"walstress run exited {child.returncode}")
    run_dir = out / "cell-000" / "run-000"
    stops = [r["t"] for r in read_records(RunLayout(run_dir).controller_history) if r.get("type") == "run_stop"]
    judged_from = stops[0] - wall0 if stops else samples[-1][0]
    stress = [v for t, v in samples if t < judged_from] or [samples[0][1]]
    judging = [v for t, v in samples if t >= judged_from] or [stress[-1]]
    # a tenth of the way in (and past the start-up): what the controller holds before the history grows
    early = next((v for t, v in samples if t >= max(2.0, 0.1 * judged_from)), stress[-1])
    controller = Row(10, f"controller RSS over a {size['memory_s']:g} s run with 8 workers (end of the stress)",
                     "RSS a tenth of the way in", "flat (no growth with the run's length)", "MiB",
                     walstress=[stress[-1]], base=[early])
    step = max(1, len(samples) // 40)
    operations = _operations(json.loads(RunLayout(run_dir).run_json.read_text()))
    controller.detail = {"rss_mib_stress_max": round(max(stress), 1), "rss_mib_judging_max": round(max(judging), 1),
                         "judged_from_s": round(judged_from, 1), "operations": operations,
                         "series": [(round(t, 1), round(v, 1)) for t, v in samples[::step]]}
    controller.finish(lambda r: max(stress) <= 1.2 * early + 16 if size["memory_s"] >= 60 else None)
    judge = Row(10, "controller RSS while it judges that run", "-", "<= 500 MiB", "MiB", walstress=[max(judging)])
    judge.finish(lambda r: r.walstress[0] <= 500)
    rows = [controller, judge]

    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "walstress", "report", str(out)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    peak = max((mib for _, mib in _poll_rss(child, 0.05, time.time())), default=0.0)
    report = Row(10, f"walstress report on the history of that {size['memory_s']:g} s run", "-", "<= 500 MiB",
                 "MiB", walstress=[peak])
    report.detail = {"seconds": round(time.perf_counter() - started, 2), "exit": child.returncode}
    if child.returncode not in (0, 1):
        report.note = f"walstress report exited {child.returncode}"
    report.finish(lambda r: r.walstress[0] <= 500 and child.returncode in (0, 1))
    return [*rows, report]


def _operations(run: dict[str, Any]) -> int:
    return sum(v.get("ok", 0) + v.get("err", 0) for v in run.get("ops", {}).values())


def _poll_rss(child: subprocess.Popen, every_s: float, started: float) -> list[tuple[float, float]]:
    """(seconds since ``started``, RSS in MiB) of ``child`` every ``every_s`` until it exits."""
    samples: list[tuple[float, float]] = []
    handle = psutil.Process(child.pid)
    while child.poll() is None:
        try:
            samples.append((time.time() - started, handle.memory_info().rss / 2**20))
        except psutil.Error:
            break
        time.sleep(every_s)
    return samples


# ------------------------------------------------------------------ 11: disk
def bench_disk(size: dict[str, Any], work: Path, cache_dir: Path | None, root: Path) -> Row:
    """What the README's main command leaves, with the default keep (failed) and with --keep all."""
    sets = [] if size["disk_s"] is None else ["--set", f"duration={size['disk_s']}s", "--set", "repeat=1",
                                              "--set", "database.pages=300", "--set", "checkpoint.mode=TRUNCATE"]
    sizes: dict[str, int] = {}
    for keep in ("failed", "all"):
        out = work / f"disk-{keep}"
        command = [sys.executable, "-m", "walstress", "run", str(root / "scenarios" / "quickstart.toml"), "--out",
                   str(out), "--keep", keep, "--quiet", *sets]
        if cache_dir:
            command += ["--cache-dir", str(cache_dir)]
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode not in (0, 1):   # 1: a verdict not as expected, which the run may well have
            raise RuntimeError(f"walstress run exited {done.returncode}: {done.stderr.strip()[-200:]}")
        sizes[keep] = _disk_usage(out)
        shutil.rmtree(out, ignore_errors=True)
    row = Row(11, "disk: what the README's main command leaves", "the same with --keep all", "<= 100 MB", "MB",
              walstress=[sizes["failed"] / 1e6], base=[sizes["all"] / 1e6])
    return row.finish(lambda r: r.walstress[0] <= 100 if size["disk_s"] is None else None)


def _disk_usage(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_blocks * 512
        except OSError:
            pass
    return total


# ------------------------------------------------------------------ 12: the ledger API
def bench_ledger_api(size: dict[str, Any], cache_dir: Path | None) -> list[Row]:
    """A user function's write loop through the python role's ledger API (ctx.transaction, txn.wrote), vs
    the same loop with no ledger calls (each transaction in ctx.op, as a python worker without the ledger
    records its operations), and vs the loop with no walstress call at all; short blocks in turn."""
    result = measure_ledger_api(transactions=size["ledger_tx"], blocks=size["ledger_blocks"], cache_dir=cache_dir)
    detail = {k: result[k] for k in ("cpu_us_per_tx", "cpu_us_added_by_the_ledger", "cpu_us_added_by_walstress",
                                     "transactions_per_block", "blocks", "ledger_lines")}
    name = "the python role's ledger API on a user's write loop (one upsert a transaction, synchronous FULL)"
    ledger = Row(12, name, "the same loop with no ledger calls (its transactions in ctx.op)", ">= 0.9x", "/s",
                 walstress=result["ledger_api_tx_per_s"], base=result["recorded_tx_per_s"], detail=detail)
    ledger.finish(partial(_at_least, 0.9))
    everything = Row(12, name.replace("ledger API", "ledger API and op records"),
                     "the same loop with no walstress call", "- (the ledger's own cost is the row above)", "/s",
                     walstress=result["ledger_api_tx_per_s"], base=result["bare_tx_per_s"])
    return [ledger, everything.finish()]


# ------------------------------------------------------------------ the suite
BENCHMARKS = tuple(range(1, 13))


def run_suite(size_name: str = "full", *, only: list[int] | None = None, cache_dir: str | Path | None = None,
              progress: ProgressFn | None = None, root: Path | None = None,
              on_rows: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the benchmarks (all, or ``only``) at ``size_name``; bench.json's content (also handed to
    ``on_rows`` after each benchmark, so that a long suite stopped half way leaves what it measured)."""
    if size_name not in SIZES:
        raise ValueError(f"size {size_name!r}: one of {', '.join(SIZES)}")
    wanted = sorted(set(only or BENCHMARKS))
    unknown = [n for n in wanted if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"no benchmark {unknown[0]}: 1 to {len(BENCHMARKS)}")
    size = SIZES[size_name]
    root = root or _project_root()
    cache = Path(cache_dir) if cache_dir else None
    rows: list[Row] = []
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="walstress-bench-", ignore_cleanup_errors=True) as scratch:
        work = Path(scratch)
        steps: dict[int, Callable[[], Row | list[Row]]] = {
            1: lambda: bench_build(size, work), 2: lambda: bench_reuse(size, work, cache),
            3: lambda: bench_instrumentation(size, cache), 4: lambda: bench_pressure(size, work, cache),
            5: lambda: bench_sampler(size, work), 6: lambda: bench_check(size, work, cache),
            7: lambda: bench_fixed_cost(size, work, cache), 8: lambda: bench_reproduce(size, work, cache, root),
            9: lambda: bench_figures(size, work, cache), 10: lambda: bench_memory(size, work, cache),
            11: lambda: bench_disk(size, work, cache, root), 12: lambda: bench_ledger_api(size, cache),
        }
        for number in wanted:
            t0 = time.perf_counter()
            if progress:
                progress(f"benchmark {number} ...")
            try:
                made = steps[number]()
            except Exception as exc:   # one benchmark that cannot run here does not lose the others
                made = Row(number, f"benchmark {number}", "-", "-", "-", note=f"not measured: {exc!r}"[:300])
            made_rows = made if isinstance(made, list) else [made]
            for row in made_rows:
                row.seconds = round(time.perf_counter() - t0, 2)
                if progress:
                    progress(f"  {format_row(row)}")
            rows.extend(made_rows)
            if on_rows is not None:
                on_rows(_result(size_name, started, rows))
    return _result(size_name, started, rows)


def _result(size_name: str, started: float, rows: list[Row]) -> dict[str, Any]:
    return {"size": size_name, "machine": machine(), "started_at": started, "seconds": round(time.time() - started, 1),
            "rows": [row.to_dict() for row in rows]}


def _project_root() -> Path:
    """The folder with the shipped scenarios: the checkout (an editable install) or the working folder."""
    here = Path(__file__).resolve().parents[3]
    return here if (here / "scenarios" / "quickstart.toml").is_file() else Path.cwd()


def machine() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version, "system": platform.platform(),
            "sqlite3_cli": bool(shutil.which("sqlite3"))}


def format_row(row: Row | dict[str, Any]) -> str:
    data = row.to_dict() if isinstance(row, Row) else row
    ours, base = data["walstress_stats"], data["base_stats"]
    text = f"{data['number']:>2} {data['name']}: "
    text += f"{ours['median']:g} {data['unit']}" if ours else "not measured"
    if base:
        text += f" vs {base['median']:g} {data['unit']}"
    if data["ratio"] is not None:
        text += f", ratio {data['ratio']:g}"
    text += {True: " (goal met)", False: " (GOAL MISSED)", None: ""}[data["meets"]]
    return text + (f"; {data['note']}" if data["note"] else "")


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [f"walstress bench ({result['size']}), {m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}, "
             f"SQLite {m['sqlite']}, {result['seconds']:g} s", "",
             "| # | benchmark | walstress (min / median / max) | baseline (median) | ratio | goal | met |",
             "|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        ours, base = row["walstress_stats"], row["base_stats"]
        mine = f"{ours['min']:g} / {ours['median']:g} / {ours['max']:g} {row['unit']}" if ours else row["note"]
        theirs = f"{base['median']:g} {row['unit']}" if base else "-"
        met = {True: "yes", False: "**no**", None: "-"}[row["meets"]]
        lines.append(f"| {row['number']} | {row['name']} | {mine} | {theirs} | "
                     f"{row['ratio'] if row['ratio'] is not None else '-'} | {row['goal']} | {met} |")
    return "\n".join(lines) + "\n"
