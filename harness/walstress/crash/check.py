"""Checking crash states as a cold start would, in worker processes.

Each state is written to a private folder (the -shm never survives) and
opened with the run's SQLite (apsw, checkpoint on close turned off, so the
files stay as they were): opening runs WAL recovery or the hot journal's
rollback. The recovered database is then named by its content: the
database file and the WAL's valid frames (mxFrame, read from the wal-index
SQLite just rebuilt), or in rollback mode the database file after the
rollback. integrity_check, every FTS5 integrity-check and the read-back of
the ledger's rows run once per recovered database; every state that
recovers to one already checked reuses that result. The ledger's verdict
is then taken per state: which commits must be in it depends on the cut.

What must be in a state (``Plan.required``): with synchronous FULL or
EXTRA (and on lying storage, which is judged as if it kept its promise),
every commit acknowledged before the cut; with NORMAL in WAL mode, those
acknowledged before the last completed WAL sync began; with OFF, none. A
commit acknowledged before the cut but not required may be lost
("lost-unsynced", allowed); a required one missing is "lost-synced".
"""

from __future__ import annotations

import hashlib
import multiprocessing.util
import os
import shutil
import signal
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from walstress.checks.ledger import Expected, RowReader
from walstress.crash.model import Builder, Built, Cut, Trace, Variant, load_trace, windows, write_state
from walstress.ledger import Ledger, Ref, read_ledger
from walstress.processes import die_with_parent

INTEGRITY_LINES = 20


@dataclass
class Plan:
    """The ledger of the traced run, as crash states are judged against it."""

    ledger: Ledger
    synchronous: str                     # FULL / EXTRA / NORMAL / OFF
    journal_mode: str
    lying: bool
    wal_sync_begins: list[float] = field(default_factory=list)   # wall clock, ascending
    every: list[Expected] = field(default_factory=list)         # every row an acknowledged commit wrote
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, run_dir: Path, trace: Trace, scenario: dict[str, Any], model: str) -> "Plan":
        database = scenario.get("database") or {}
        synchronous = str(database.get("synchronous", "default")).upper()
        synchronous = "FULL" if synchronous == "DEFAULT" else synchronous
        ledger = read_ledger(run_dir / "ledger")
        wal = trace.db_name + "-wal"
        begins = sorted(op.wall - (op.end_ns - op.ns) / 1e9 for op in trace.ops if op.kind == "S" and op.file == wal)
        every: dict[tuple[Ref, tuple[str, ...]], Expected] = {}   # one per row and set of columns written
        for txn in ledger.transactions:
            if txn.state == "acked":
                for op in txn.ops:
                    cols = () if op.deletes else tuple(op.cols)
                    every[(op.ref, cols)] = Expected(op.table, op.key, op.deletes, None if op.deletes else op.crc,
                                                     op.cols)
        return cls(ledger, synchronous, str(database.get("journal_mode", "WAL")).upper(), model == "lying",
                   begins, list(every.values()))

    def until(self, cut: Cut) -> float:
        """Commits acknowledged before this (wall clock) must be in a state at ``cut``."""
        if self.lying or self.synchronous in ("FULL", "EXTRA") or self.journal_mode != "WAL" and \
                self.synchronous == "NORMAL":
            return cut.wall
        if self.synchronous == "NORMAL":
            earlier = [t for t in self.wal_sync_begins if t < cut.wall]
            return earlier[-1] if earlier else float("-inf")
        return float("-inf")

    def expectations_key(self, cut: Cut) -> str:
        """A digest of what a state at ``cut`` is judged against (each required and optional row)."""
        key = ("key", cut.wall)
        if key not in self._cache:
            required, optional = self.expectations(cut)
            digest = hashlib.blake2b(digest_size=12)
            for label, rows in (("r", required), ("o", optional)):
                for ref in sorted(rows, key=str):
                    exp = rows[ref]
                    digest.update(f"{label}{ref}={exp.deleted}:{exp.crc};".encode())
            self._cache[key] = digest.hexdigest()
        return str(self._cache[key])

    def expectations(self, cut: Cut) -> tuple[dict[Ref, Expected], dict[Ref, Expected]]:
        """(required, allowed to be lost): by each row's last change prepared before the cut."""
        if cut.wall in self._cache:
            return self._cache[cut.wall]
        until = self.until(cut)
        last: dict[Ref, tuple[Any, Expected]] = {}
        for txn in sorted(self.ledger.transactions, key=lambda t: t.t_prepare):
            if txn.t_prepare >= cut.wall or txn.state == "failed":
                continue
            for op in txn.ops:
                last[op.ref] = (txn, Expected(op.table, op.key, op.deletes, None if op.deletes else op.crc, op.cols))
        required: dict[Ref, Expected] = {}
        optional: dict[Ref, Expected] = {}
        for ref, (txn, exp) in last.items():
            if txn.state != "acked" or txn.t_end is None or txn.t_end >= cut.wall:
                continue   # in flight at the cut: either way
            (required if txn.t_end < until else optional)[ref] = exp
        self._cache[cut.wall] = (required, optional)
        return required, optional


@dataclass
class Recovered:
    """What one recovered database is, checked once."""

    ok: bool
    problem: str                       # the first integrity or FTS5 line, or the open error
    rows: dict[tuple[Ref, tuple[str, ...]], Any]   # (ref, columns) -> checksum (True: present), absent: missing


# ----------------------------------------------------------------- the worker
_W: dict[str, Any] = {}


def init_worker(run_dir: str, folder: str, sqlite_paths: list[str], model: str, after_cut: str,
                scenario: dict[str, Any]) -> None:
    """A checking process of the pool: Ctrl-C is the explorer's, and the process dies with it, removing
    its states (the last one removes the folder)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the explorer's: it ends the pool
    mine = Path(folder) / f"w{os.getpid()}"
    signal.signal(signal.SIGTERM, lambda *_: _remove(mine, then_exit=True))
    multiprocessing.util.Finalize(None, _remove, args=(mine,), exitpriority=10)
    die_with_parent()
    init_state(run_dir, mine, sqlite_paths, model, after_cut, scenario)


def init_state(run_dir: str, folder: Path, sqlite_paths: list[str], model: str, after_cut: str,
               scenario: dict[str, Any]) -> None:
    """What checking states needs: the trace, the plan, a builder, caches; states go to ``folder``."""
    for path in reversed(sqlite_paths):
        if path not in sys.path:
            sys.path.insert(0, path)
    trace = load_trace(run_dir)
    _W.clear()
    _W.update(trace=trace, builder=Builder(trace), folder=folder, model=model,
              after_cut=after_cut, plan=Plan.of(Path(run_dir), trace, scenario, model), on_disk={},
              states={}, recovered={}, wins=(None, None))


def _remove(mine: Path, then_exit: bool = False) -> None:
    shutil.rmtree(mine, ignore_errors=True)
    try:
        mine.parent.rmdir()
    except OSError:   # another process's states are still there: the last one removes the folder
        pass
    if then_exit:
        os._exit(0)


def check_chunk(items: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[dict[str, Any]]:
    return [check_one(Cut(**cut), Variant.from_dict(variant)) for cut, variant in items]


def build_position(cut: Cut, variant: Variant, model: str) -> int:
    """Where the state's files stand in the trace: on lying storage, a state is everything issued before
    some point (nothing, everything before an earlier sync, everything before the cut), which is the
    "prefix" state of that point; otherwise the cut."""
    if model != "lying":
        return cut.position
    if variant.cls == "none":
        return 0
    if variant.cls == "lost-tail" and variant.lost_from is not None:
        return variant.lost_from
    return cut.position


def check_one(cut: Cut, variant: Variant) -> dict[str, Any]:
    trace: Trace = _W["trace"]
    model = _W["model"]
    position = build_position(cut, variant, model)
    cached_pos, wins = _W["wins"]
    if cached_pos != position:
        wins = windows(trace, position)
        _W["wins"] = (position, wins)
    built = _W["builder"].build(Cut(position, cut.reason, cut.wall),
                                Variant("prefix") if model == "lying" else variant, wins)
    built = after_cut(built, _W["after_cut"], trace.db_name)
    logical = _W["states"].get(built.key)
    if logical is None:
        logical = _open(built)
        _W["states"][built.key] = logical
    recovered: Recovered = _W["recovered"][logical]
    plan: Plan = _W["plan"]
    verdict, lost_synced, lost_unsynced, reason = judge_state(recovered, plan, cut)
    # the same files judged against the same expected rows are the same crash state
    state = f"{built.key}:{plan.expectations_key(cut)}"
    return {"position": cut.position, "reason": cut.reason, "wall": cut.wall, "variant": variant.to_dict(),
            "key": state, "logical": logical, "verdict": verdict, "lost_synced": lost_synced,
            "lost_unsynced": lost_unsynced, "why": reason}


def after_cut(built: Built, action: str, db_name: str) -> Built:
    """``delete-journal``: the hot journal (-journal, -wal) is gone before anyone opens the database."""
    if action != "delete-journal":
        return built
    files = dict(built.files)
    keys = dict(built.file_keys)
    for name in (db_name + "-journal", db_name + "-wal"):
        if files.get(name) is not None:
            files[name] = None
            keys[name] = "-"
    total = hashlib.blake2b(digest_size=16)
    for name in sorted(keys):
        total.update(f"{name}={keys[name]};".encode())
    return Built(files, total.hexdigest(), keys)


def _open(built: Built) -> str:
    """Write the state, open it (recovery), name what it recovered to; check that once."""
    folder: Path = _W["folder"]
    trace: Trace = _W["trace"]
    _W["on_disk"] = write_state(built, folder, keep=_W["on_disk"])
    db = folder / trace.db_name
    if built.files.get(trace.db_name) is None:
        name = "no-database"
        _W["recovered"].setdefault(name, Recovered(False, "the database file does not exist", {}))
        return name
    import apsw

    try:
        conn = apsw.Connection(str(db))
    except apsw.Error as exc:
        return _failed(f"cannot open: {exc}")
    try:
        conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
        conn.setbusytimeout(2000)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
        except apsw.Error as exc:
            _W["on_disk"].clear()
            return _failed(_text(exc))
        name = _logical_name(built, folder, trace)
        if name not in _W["recovered"]:
            _W["recovered"][name] = _full_check(conn)
        return name
    finally:
        conn.close()


def _failed(problem: str) -> str:
    name = "failed:" + hashlib.blake2b(problem.encode(), digest_size=8).hexdigest()
    _W["recovered"].setdefault(name, Recovered(False, problem, {}))
    return name


def _text(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).encode("utf-8", "replace").decode("utf-8", "replace")


def _logical_name(built: Built, folder: Path, trace: Trace) -> str:
    """The recovered database by its content as SQLite reads it: every page of the database file, each
    overridden by its newest version among the WAL's valid frames (mxFrame, from the wal-index SQLite just
    rebuilt), cut to the size the last commit frame gives. So states whose files differ only where the
    WAL overrides them are the same database. Rollback mode: the database file after the journal's
    rollback, read back."""
    wal = built.files.get(trace.db_name + "-wal")
    shm = folder / (trace.db_name + "-shm")
    db = built.files.get(trace.db_name)
    if wal is None or db is None or not shm.exists():
        _W["on_disk"].clear()   # a rollback may have written the database and deleted the journal
        return "db:" + hashlib.blake2b((folder / trace.db_name).read_bytes(), digest_size=16).hexdigest()
    header = shm.read_bytes()[:48]
    mx_frame = struct.unpack_from("=I", header, 16)[0] if len(header) >= 48 else 0
    page = trace.page_size
    table = _page_table(built, db, page, trace.db_name)
    n_db = len(table)
    overrides: dict[int, bytes] = {}
    n_final = n_db
    frame = 24 + page
    for i in range(mx_frame):
        start = 32 + i * frame
        pgno, commit = struct.unpack_from(">II", wal, start)
        overrides[pgno] = wal[start + 24:start + frame]
        if commit:
            n_final = commit
    total = 0
    for pgno in range(1, n_final + 1):
        if pgno in overrides:
            total += _page_hash(pgno, overrides[pgno])
        elif pgno <= n_db:
            total += table[pgno - 1]
        else:
            total += _page_hash(pgno, bytes(page))
    return f"wal:{n_final}:{total % (1 << 128):032x}"


def _page_hash(pgno: int, data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=16, salt=pgno.to_bytes(16, "little")).digest(), "little")


def _page_table(built: Built, db: bytes, page: int, name: str) -> list[int]:
    """Per page of the database file, its hash: the durable image's table (cached), with the pages this
    state wrote over it hashed again."""
    tables: dict[str, list[int]] = _W.setdefault("page_tables", {})
    key = built.file_keys[name]
    if key in tables:
        return tables[key]
    base_key = built.base_keys.get(name, "")
    touched = built.touched.get(name)
    base = tables.get(base_key)
    if base is None or touched is None or any(length < 0 for _, length in touched):
        table = [_page_hash(i + 1, db[i * page:(i + 1) * page]) for i in range(len(db) // page)]
    else:
        table = list(base)
        count = len(db) // page
        del table[count:]
        table.extend(0 for _ in range(count - len(table)))
        pages = {p for offset, length in touched for p in range(offset // page, min(count, (offset + length - 1)
                                                                                    // page + 1))}
        pages.update(range(len(base), count))
        for p in pages:
            table[p] = _page_hash(p + 1, db[p * page:(p + 1) * page])
    if touched is None or len(tables) > 64:   # keep the durable images' tables, and a few others
        if len(tables) > 64:
            tables.clear()
        tables[key] = table
    return table


def _full_check(conn: Any) -> Recovered:
    import apsw

    plan: Plan = _W["plan"]
    try:
        lines = [str(r[0]) for r in conn.execute(f"PRAGMA integrity_check({INTEGRITY_LINES})")]
    except (apsw.Error, ValueError) as exc:   # ValueError: its message quotes damaged, undecodable text
        return Recovered(False, f"integrity_check: {_text(exc)}", {})
    if lines != ["ok"]:
        first = next((line for text in lines for line in text.splitlines() if line.strip()
                      and not line.startswith("*** in database")), lines[0])
        return Recovered(False, f"integrity_check: {first}", {})
    try:  # integrity_check runs FTS5's own check from SQLite 3.44 on; before that, ask each table
        version = tuple(int(x) for x in apsw.sqlite_lib_version().split(".")[:2])
        tables = [] if version >= (3, 44) else [
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND "
                                       "sql LIKE 'CREATE VIRTUAL TABLE%USING fts5%'")]
        for table in tables:
            quoted = '"' + table.replace('"', '""') + '"'
            conn.execute(f"INSERT INTO {quoted}({quoted}) VALUES ('integrity-check')")
    except (apsw.Error, ValueError) as exc:
        return Recovered(False, f"FTS5 {_text(exc)}", {})
    rows: dict[tuple[Ref, tuple[str, ...]], Any] = {}
    groups: dict[tuple[str, ...], list[Expected]] = {}
    for exp in plan.every:
        groups.setdefault(() if exp.deleted else tuple(exp.cols), []).append(exp)
    try:
        reader = RowReader(conn)
        for cols, group in groups.items():   # a row's checksum is over the columns one change wrote
            for ref, found in reader.read(group).items():
                rows[(ref, cols)] = found
    except (apsw.Error, ValueError) as exc:
        return Recovered(False, f"rows: {_text(exc)}", {})
    return Recovered(True, "", rows)


def judge_state(recovered: Recovered, plan: Plan, cut: Cut) -> tuple[str, int, int, str]:
    """(verdict, lost synced, lost unsynced, reason) of one state."""
    if not recovered.ok:
        return "corrupt", 0, 0, recovered.problem
    required, optional = plan.expectations(cut)
    synced = sum(1 for ref, exp in required.items() if not _present(recovered, ref, exp))
    unsynced = sum(1 for ref, exp in optional.items() if not _present(recovered, ref, exp))
    if synced:
        why = (f"lost although acknowledged: sync not honoured ({synced} rows of commits acknowledged before "
               "the cut are missing)" if plan.lying else
               f"{synced} rows acknowledged and synced before the cut are missing")
        return "lost-writes", synced, unsynced, why
    return "clean", 0, unsynced, (f"{unsynced} rows acknowledged after the last sync lost (allowed)"
                                  if unsynced else "")


def _present(recovered: Recovered, ref: Ref, exp: Expected) -> bool:
    if exp.deleted:  # gone: no version of the row may be there
        return not any(key[0] == ref for key in recovered.rows)
    found = recovered.rows.get((ref, tuple(exp.cols)))
    if found is None:
        return False
    return exp.crc is None or found == exp.crc


def replay_state(run_dir: Path, cut: Cut, variant: Variant, model: str, after: str, scenario: dict[str, Any],
                 folder: Path, sqlite_paths: list[str]) -> dict[str, Any]:
    """Build and check one state in this process (``walstress crash replay``); its files stay in folder."""
    if folder.exists():
        shutil.rmtree(folder)
    init_state(str(run_dir), folder, sqlite_paths, model, after, scenario)
    return check_one(cut, variant)
