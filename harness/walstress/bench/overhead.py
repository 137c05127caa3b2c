"""Benchmark: what the harness's instrumentation costs a writer.

    python -m walstress.bench [--transactions N] [--blocks K] [--out FILE]

Runs, in one process and on one database, alternating blocks of the same
write transactions (BEGIN IMMEDIATE; insert a batch of corpus messages;
COMMIT) two ways:

    bare      the writer role's statements, rows and connection in a plain
              BEGIN IMMEDIATE ... COMMIT loop, nothing recorded
    harness   the writer role itself: history records, ledger lines
              (one unbuffered write before and one after each COMMIT),
              the retry wrapper

and reports the transactions per second of each block and the ratio of the
medians (harness / bare). ``--lock-watch`` adds the lock watch's cost: its
thread's share of a core with 8 workers at 20 Hz, and the workload's commits
per second with it on over off. Blocks alternate so that a machine's drift hits
both sides alike; a ratio is taken in one run, never across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from walstress.catalog import scenario_from_dict
from walstress.controller import build_specs, prepare_database
from walstress.database.corpus import Corpus
from walstress.database.template import get_template
from walstress.history import HistoryWriter
from walstress.layout import RunLayout
from walstress.runspec import WorkerSpec
from walstress.sqlite.driver import Connection
from walstress.workers.base import WorkerContext
from walstress.workers.writer import Writer, WriterSettings
from walstress.workers.writing import write_messages


def _scenario(pages: int, batch: int, schema: str = "minimal", synchronous: str = "NORMAL") -> Any:
    return scenario_from_dict({
        "name": "bench-overhead",
        "database": {"schema": schema, "pages": pages, "synchronous": synchronous},
        "checkpoint": {"mode": "NONE"},
        "workers": [{"role": "writer", "count": 1, "batch": batch, "insert_weight": 1, "update_weight": 0,
                     "delete_weight": 0}],
    }, source="<bench>")


def bare_transaction(conn: Connection, corpus: Corpus, batch: int, schema: str, session: str) -> None:
    """One write transaction of the writer role's statements and rows (``write_messages``), nothing recorded."""
    conn.execute("BEGIN IMMEDIATE")
    write_messages(conn, corpus, schema, session, batch)
    conn.execute("COMMIT")


def alternate(blocks: int, first: Callable[[int], float], second: Callable[[int], float]) -> tuple[list[float], list[float]]:
    """Both sides' figures of ``blocks`` blocks, the order alternating block by block (first, second; then
    second, first; ...), so that a machine's drift hits both alike. Each side is given the block's number."""
    a, b = rotate(blocks, first, second)
    return a, b


def rotate(blocks: int, *sides: Callable[[int], float]) -> list[list[float]]:
    """Every side's figures of ``blocks`` blocks, the order turning block by block (with two sides: first,
    second; then second, first; ...), so that a machine's drift hits all alike."""
    figures: list[list[float]] = [[] for _ in sides]
    for block in range(blocks):
        for index in range(len(sides)):
            side = (index + block) % len(sides)
            figures[side].append(sides[side](block))
    return figures


@contextlib.contextmanager
def _actor(actor_class: Any, settings_class: Any, spec: WorkerSpec, history_path: Path) -> Iterator[Any]:
    """A role's actor (thread 0), set up in this process on the spec's database, torn down afterwards with
    its history and ledger files closed."""
    history = HistoryWriter(history_path)
    ctx = WorkerContext(spec=spec, settings=settings_class(**spec.settings), history=history, stop=threading.Event())
    actor = actor_class(ctx, 0)
    actor.setup()
    try:
        yield actor
    finally:
        actor.teardown()
        history.close()
        ctx.close()


def _writer(spec: WorkerSpec, history_path: Path) -> contextlib.AbstractContextManager[Writer]:
    """The writer role, set up on the spec's database, torn down afterwards."""
    return _actor(Writer, WriterSettings, spec, history_path)


def _bare_writer_block(spec: WorkerSpec, history_path: Path, transactions: int, batch: int) -> float:
    """The writer role's own transactions (its connection and PRAGMAs, its statements and rows), in a plain
    BEGIN/COMMIT loop: no ledger lines, no history records, no retry wrapper."""
    with _writer(spec, history_path) as writer:
        conn = writer.acquire()
        started = time.perf_counter()
        for _ in range(transactions):
            conn.execute("BEGIN IMMEDIATE")
            _ops, commit_local = writer.do_insert(conn, batch)
            conn.execute("COMMIT")
            commit_local()
        return transactions / (time.perf_counter() - started)


def _harness_block(spec: WorkerSpec, history_path: Path, transactions: int) -> float:
    with _writer(spec, history_path) as writer:
        started = time.perf_counter()
        for _ in range(transactions):
            writer.step()
        return transactions / (time.perf_counter() - started)


def measure_overhead(*, pages: int = 2000, transactions: int = 300, blocks: int = 5, batch: int = 2,
                     schema: str = "minimal", synchronous: str = "NORMAL",
                     cache_dir: str | Path | None = None) -> dict[str, Any]:
    scenario = _scenario(pages, batch, schema, synchronous)
    template, _ = get_template(schema=schema, pages=pages, page_size=4096, seed=0, cache_dir=cache_dir)
    with tempfile.TemporaryDirectory(prefix="walstress-bench-") as tmp:
        # two copies of the template, one a side: block by block both sides write the same rows (the same
        # seed), so what differs is the instrumentation alone (rows of 100 B and of 16 KB cost SQLite
        # very differently)
        specs = []
        for side in ("bare", "harness"):
            layout = RunLayout(Path(tmp) / side)
            layout.make_dirs()
            facts = prepare_database(template, layout.db_path, scenario)
            specs.append(build_specs(scenario, layout, facts, seed=1, sqlite_paths=[], pragmas=[])[0])
        bare_spec, harness_spec = specs
        histories = Path(tmp) / "harness" / "history"
        unrecorded = Path(tmp) / "bare" / "history" / "bare.jsonl"   # the bare loop records nothing in it
        warm = max(20, transactions // 10)   # the page cache, each side on its own copy
        _bare_writer_block(dataclasses.replace(bare_spec, seed=1000), unrecorded, warm, batch)
        _harness_block(dataclasses.replace(harness_spec, seed=1000), histories / "warm.jsonl", warm)
        # a seed a block: new sessions (hermes) get new ids, not those of the block before
        bare, harness = alternate(
            blocks,
            lambda block: _bare_writer_block(dataclasses.replace(bare_spec, seed=bare_spec.seed + block), unrecorded,
                                             transactions, batch),
            lambda block: _harness_block(dataclasses.replace(harness_spec, seed=harness_spec.seed + block),
                                         histories / f"bench-{block}.jsonl", transactions))
        recorded = sum(1 for _ in open(histories / "bench-0.jsonl"))
    ratio = statistics.median(harness) / statistics.median(bare)
    return {
        "what": "write transactions per second, alternating blocks in one process on one database",
        "sqlite_version": sqlite3.sqlite_version,
        "transactions_per_block": transactions, "blocks": blocks, "batch": batch, "pages": pages,
        "schema": schema, "synchronous": synchronous,
        "bare_tx_per_s": [round(v, 1) for v in bare],
        "harness_tx_per_s": [round(v, 1) for v in harness],
        "harness_over_bare": round(ratio, 3),
        "history_records_per_block": recorded,
    }


# ---------------------------------------------------------- the ledger API
_KV_SCHEMA = "CREATE TABLE IF NOT EXISTS kv(k TEXT PRIMARY KEY, v BLOB, n INTEGER) WITHOUT ROWID"
_UPSERT = "INSERT INTO kv VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET v = excluded.v, n = excluded.n"


def user_function(ctx: Any) -> None:
    """The entry the benchmark's python worker names (the loops below call the context themselves)."""


def _user_bare(conn: sqlite3.Connection, transactions: int, start: int) -> float:
    """A user function's write loop with no ledger calls: BEGIN IMMEDIATE, one upsert, COMMIT."""
    started = time.perf_counter()
    for i in range(start, start + transactions):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(_UPSERT, (f"bare-{i % 500}", b"v" * 64, i))
        conn.execute("COMMIT")
    return transactions / (time.perf_counter() - started)


def _user_ledgered(ctx: Any, conn: sqlite3.Connection, transactions: int, start: int) -> float:
    """The same loop through the python role's API: ctx.transaction and txn.wrote with the row given."""
    started = time.perf_counter()
    for i in range(start, start + transactions):
        key, value = f"ledger-{i % 500}", b"v" * 64
        with ctx.transaction(conn) as txn:
            conn.execute(_UPSERT, (key, value, i))
            txn.wrote("kv", key, {"v": value, "n": i})
    return transactions / (time.perf_counter() - started)


def _user_recorded(ctx: Any, conn: sqlite3.Connection, transactions: int, start: int) -> float:
    """The same loop as a python worker writes it without the ledger: each transaction in ctx.op, which
    gives it the latency and error figures ctx.transaction gives (BEGIN IMMEDIATE, one upsert, COMMIT)."""
    started = time.perf_counter()
    for i in range(start, start + transactions):
        with ctx.op("write"):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(_UPSERT, (f"op-{i % 500}", b"v" * 64, i))
            conn.execute("COMMIT")
    return transactions / (time.perf_counter() - started)


@contextlib.contextmanager
def python_actor(folder: Path, *, pages: int = 300, cache_dir: str | Path | None = None) -> Iterator[Any]:
    """A python-role worker's actor set up in this process on a fresh database in ``folder`` (a run dir's
    layout): its context (``actor.context``) is what a user's function gets. Torn down afterwards, its
    history and ledger files closed."""
    from walstress.workers.python import PythonActor, PythonSettings

    scenario = scenario_from_dict({"name": "bench-ledger-api", "database": {"schema": "minimal", "pages": pages},
                                   "checkpoint": {"mode": "NONE"},
                                   "workers": [{"role": "python", "entry": "walstress.bench.overhead:user_function"}]},
                                  source="<bench>")
    template, _ = get_template(schema="minimal", pages=pages, page_size=4096, seed=0, cache_dir=cache_dir)
    layout = RunLayout(folder)
    layout.make_dirs()
    facts = prepare_database(template, layout.db_path, scenario)
    spec = build_specs(scenario, layout, facts, seed=1, sqlite_paths=[], pragmas=[])[0]
    with _actor(PythonActor, PythonSettings, spec, layout.history(spec.stem)) as actor:
        yield actor


def measure_ledger_api(*, transactions: int = 200, blocks: int = 40, pages: int = 300,
                       cache_dir: str | Path | None = None) -> dict[str, Any]:
    """The python role's ledger API (ctx.transaction + txn.wrote) on a user's write loop, against the same
    loop with no ledger calls, as a python worker writes it (each transaction in ctx.op, which records
    the figures ctx.transaction records too: what is left between the two is the ledger), and against the
    loop with no walstress call at all. Many short blocks, the three loops' order turning block by block,
    in one process on one database (a block's rate moves with the storage's sync times; short blocks
    put the loops under the same moments). Besides the wall-clock ratios, the thread's CPU time per
    transaction on each side, which leaves the sync's wait out."""
    names = ("bare", "recorded", "ledger")
    cpu: dict[str, list[float]] = {name: [] for name in names}

    def timed(side: str, loop: Callable[[int, int], float]) -> Callable[[int], float]:
        def block_of(block: int) -> float:
            started = time.thread_time()
            rate = loop(transactions, (block + 1) * transactions)   # rows no block wrote before
            cpu[side].append((time.thread_time() - started) / transactions * 1e6)
            return rate
        return block_of

    with tempfile.TemporaryDirectory(prefix="walstress-bench-") as tmp:
        with python_actor(Path(tmp), pages=pages, cache_dir=cache_dir) as actor:
            ctx = actor.context
            conn = ctx.connect()
            conn.execute(_KV_SCHEMA)
            _user_bare(conn, max(20, transactions // 10), 0)  # warm up
            bare, recorded, ledgered = rotate(
                blocks, timed("bare", lambda n, start: _user_bare(conn, n, start)),
                timed("recorded", lambda n, start: _user_recorded(ctx, conn, n, start)),
                timed("ledger", lambda n, start: _user_ledgered(ctx, conn, n, start)))
        lines = sum(1 for path in RunLayout(Path(tmp)).ledger_dir.glob("*.ledger") for _ in open(path))
    median = {name: statistics.median(values) for name, values in zip(names, (bare, recorded, ledgered))}
    cpu_median = {name: statistics.median(values) for name, values in cpu.items()}
    return {
        "what": "a user function's write transactions per second through the ledger API, against the same "
                "function with no ledger calls (its transactions in ctx.op) and with no walstress call at all; "
                "blocks in turn, in one process on one database",
        "sqlite_version": sqlite3.sqlite_version, "transactions_per_block": transactions, "blocks": blocks,
        "bare_tx_per_s": [round(v, 1) for v in bare], "recorded_tx_per_s": [round(v, 1) for v in recorded],
        "ledger_api_tx_per_s": [round(v, 1) for v in ledgered],
        "ledger_api_over_recorded": round(median["ledger"] / median["recorded"], 3),
        "ledger_api_over_bare": round(median["ledger"] / median["bare"], 3), "ledger_lines": lines,
        "cpu_us_per_tx": {name: round(value, 2) for name, value in cpu_median.items()},
        "cpu_us_added_by_the_ledger": round(cpu_median["ledger"] - cpu_median["recorded"], 2),
        "cpu_us_added_by_walstress": round(cpu_median["ledger"] - cpu_median["bare"], 2),
    }


def measure_lock_watch(*, seconds: float = 10.0, blocks: int = 4, hz: float = 20.0, pages: int = 2000,
                       cache_dir: str | Path | None = None) -> dict[str, Any]:
    """The lock watch's own cost with 8 workers (4 writers, 2 readers, 2 openers): its thread's CPU time
    over its wall time (share of one core), and the workload's commits per second with the watch on
    over off, in alternating runs of one matrix (on, off, on, off ...)."""
    from walstress.runner import run_scenario

    data = {"name": "bench-lock-watch", "seed": 5, "duration": seconds, "repeat": 1, "expect": "any",
            "database": {"schema": "minimal", "pages": pages, "busy_timeout_ms": 2000},
            "checkpoint": {"mode": "PASSIVE", "every_writes": 100},
            "workers": [{"role": "writer", "count": 4}, {"role": "reader", "count": 2},
                        {"role": "opener", "count": 2, "pause_ms": 10}],
            "lock_watch": {"hz": hz}}
    shares: list[float] = []
    rates: dict[str, list[float]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory(prefix="walstress-bench-lw-") as tmp:
        for block in range(blocks):
            for side in ("on", "off") if block % 2 == 0 else ("off", "on"):
                scenario = scenario_from_dict({**data, "lock_watch": {"hz": hz if side == "on" else 0}})
                result = run_scenario(scenario, Path(tmp) / f"{block}-{side}", cache_dir=cache_dir)
                run = result["cells"][0]["results"][0]
                rates[side].append(run["writes"]["acked_transactions"] / max(run["duration_s"], 1e-9))
                if side == "on" and run.get("lock_watch"):
                    shares.append(run["lock_watch"]["core_share"])
    on, off = statistics.median(rates["on"]), statistics.median(rates["off"])
    return {"workers": 8, "hz": hz, "seconds": seconds, "blocks": blocks,
            "core_share_median": round(statistics.median(shares), 5) if shares else None,
            "core_share_max": round(max(shares), 5) if shares else None,
            "commits_per_s_on": round(on, 1), "commits_per_s_off": round(off, 1),
            "on_over_off": round(on / off, 3) if off else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m walstress.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=int, default=300)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument("--ledger-transactions", type=int, default=200,
                        help="the ledger API's benchmark: transactions per block (default 200)")
    parser.add_argument("--ledger-blocks", type=int, default=40,
                        help="the ledger API's benchmark: blocks per side (default 40)")
    parser.add_argument("--cache-dir")
    parser.add_argument("--out", help="write the result as JSON to this file")
    parser.add_argument("--lock-watch", action="store_true", help="also measure the lock watch (8 workers, "
                                                                  "alternating runs with it on and off)")
    args = parser.parse_args(argv)
    result = measure_overhead(pages=args.pages, transactions=args.transactions, blocks=args.blocks,
                              cache_dir=args.cache_dir)
    result["ledger_api"] = measure_ledger_api(transactions=args.ledger_transactions, blocks=args.ledger_blocks,
                                              cache_dir=args.cache_dir)
    if args.lock_watch:
        result["lock_watch"] = measure_lock_watch(cache_dir=args.cache_dir)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
