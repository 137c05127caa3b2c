"""What each worker role does, one connection per thread.

writer        BEGIN IMMEDIATE; insert / update / delete messages (the FTS5
              triggers churn); COMMIT; retried on busy/locked like the
              reporter's code; optionally checkpoints every N commits.
reader        FTS5 MATCH queries on both tables and session reads;
              optionally holds the read transaction open (pins a snapshot).
checkpointer  a dedicated connection checkpointing every interval.
opener        open, a little work (sometimes a write), close; again.

Every operation becomes an ``op`` record in the history; every acknowledged
change goes to the thread's ledger before it is counted.
"""

from __future__ import annotations

import random
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from walstress.history import HistoryWriter
from walstress.ledger import LedgerOp, LedgerWriter, content_crc
from walstress.sqlite.driver import Connection, classify_error, connect, is_sqlite_error

MESSAGE_LIMIT = 200  # error messages kept in the history


@dataclass
class WorkerContext:
    spec: dict
    history: HistoryWriter
    stop: threading.Event
    vfs_name: str | None = None
    _ledgers: list[LedgerWriter] = field(default_factory=list)

    def ledger(self, thread_index: int) -> LedgerWriter:
        stem = self.spec.get("ledger_name") or self.spec["name"]  # a restarted incarnation has its own files
        path = Path(self.spec["ledger_dir"]) / f"{stem}-t{thread_index}.ledger"
        writer = LedgerWriter(path)
        self._ledgers.append(writer)
        return writer

    def close(self) -> None:
        for writer in self._ledgers:
            writer.close()


def roll_back_failed(conn: Connection, ledger: LedgerWriter, txn: int | None) -> None:
    """After an SQLite error in a write transaction: roll it back. A prepared transaction still open
    when the error came was certainly rolled back (failed in the ledger); one whose COMMIT failed in
    an unclear way stays indeterminate."""
    still_open = conn.in_transaction
    conn.rollback_quietly()
    if txn is not None and still_open and not conn.in_transaction:
        ledger.fail(txn)


class Actor:
    """One thread of a worker: its connection, its random stream, its loop."""

    kind = "op"

    def __init__(self, ctx: WorkerContext, thread_index: int):
        self.ctx = ctx
        self.spec = ctx.spec
        self.options = ctx.spec["worker"]
        self.thread_index = thread_index
        self.name = ctx.spec["name"]
        self.rng = random.Random(f"{ctx.spec['seed']}:{self.name}:{thread_index}")
        self.per_op = self.options["connection"] == "per-op"
        self.conn: Connection | None = None
        self.checkpoint = ctx.spec["checkpoint"]
        self.schema = ctx.spec["schema"]
        self.pause_s = self.options["pause_ms"] / 1000.0

    # ----------------------------------------------------------- connections
    def open(self) -> Connection:
        spec = self.spec
        conn = connect(spec["db_path"], driver=spec["driver"], busy_timeout_ms=spec["busy_timeout_ms"],
                       vfs=self.ctx.vfs_name)
        try:
            pragmas = []
            if spec["synchronous"] != "default":
                pragmas.append(f"PRAGMA synchronous={spec['synchronous']}")
            if spec["mmap_size"]:
                pragmas.append(f"PRAGMA mmap_size={int(spec['mmap_size'])}")
            pragmas.append(f"PRAGMA wal_autocheckpoint={int(spec['wal_autocheckpoint'])}")
            if spec["journal_size_limit"] != -1:
                pragmas.append(f"PRAGMA journal_size_limit={int(spec['journal_size_limit'])}")
            pragmas.append(f"PRAGMA foreign_keys={'ON' if spec['foreign_keys'] else 'OFF'}")
            pragmas.extend(spec.get("extra_pragmas") or [])  # added by fault sections (faults.fsync)
            for pragma in pragmas:
                conn.execute(pragma)
        except Exception:
            conn.close()
            raise
        return conn

    def close_connection(self, conn: Connection) -> None:
        if self.checkpoint["on_close"] and self.checkpoint["mode"] != "NONE":
            self.run_checkpoint(conn, "close")
        conn.close()

    def acquire(self) -> Connection:
        if self.conn is None:
            self.conn = self.open()
        return self.conn

    def release(self) -> None:
        if self.per_op and self.conn is not None:
            conn, self.conn = self.conn, None
            self.close_connection(conn)

    # -------------------------------------------------------------- records
    def record_op(self, kind: str, t0: float, m0: float, *, err: BaseException | None = None, **extra: Any) -> None:
        rec = {"type": "op", "worker": self.name, "thread": self.thread_index, "kind": kind,
               "t": t0, "ms": (time.perf_counter() - m0) * 1000.0, "ok": err is None, "err": None}
        if err is not None:
            rec["err"] = classify_error(err)
            rec["msg"] = str(err)[:MESSAGE_LIMIT]
        rec.update(extra)
        self.ctx.history.record(rec)

    def run_checkpoint(self, conn: Connection, source: str) -> None:
        mode = self.checkpoint["mode"]
        t0, m0 = time.time(), time.perf_counter()
        rec: dict[str, Any] = {"type": "checkpoint", "worker": self.name, "thread": self.thread_index,
                               "t": t0, "mode": mode, "source": source}
        try:
            busy, log, done = conn.checkpoint(mode)
            rec.update(busy=busy, log=log, checkpointed=done, err=None)
        except Exception as exc:
            if not is_sqlite_error(exc):
                raise
            rec.update(busy=None, log=None, checkpointed=None, err=classify_error(exc), msg=str(exc)[:MESSAGE_LIMIT])
        rec["ms"] = (time.perf_counter() - m0) * 1000.0
        self.ctx.history.record(rec)

    # ----------------------------------------------------------------- loop
    def setup(self) -> None:
        if not self.per_op:
            self.acquire()

    def teardown(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            try:
                self.close_connection(conn)
            except Exception:
                conn.close()

    def run(self) -> None:
        stop = self.ctx.stop
        while not stop.is_set():
            self.step()
            if self.pause_s:
                stop.wait(self.pause_s)

    def step(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class WriterMixin:
    """The transaction machinery shared by writers and writing openers."""

    rng: random.Random
    ctx: WorkerContext
    spec: dict
    name: str
    thread_index: int
    schema: str
    per_op: bool

    if TYPE_CHECKING:  # provided by Actor, which every user of the mixin also derives from
        def acquire(self) -> Connection: ...

        def release(self) -> None: ...

        def record_op(self, kind: str, t0: float, m0: float, *, err: BaseException | None = None,
                      **extra: Any) -> None: ...

    def init_writing(self, partition: tuple[int, int]) -> None:
        from walstress.database.corpus import Corpus

        self.corpus = Corpus(zlib.crc32(f"{self.spec['seed']}:{self.name}:{self.thread_index}".encode()))
        self.ledger = self.ctx.ledger(self.thread_index)
        self.own_ids: list[int] = []
        self.own_sessions: list[str] = []
        self.known_sessions: list[str] = list(self.spec.get("session_ids", []))
        self.partition = partition  # (k, K): template rows with id % K == k are ours
        self.template_ids = self.spec.get("template_id_range", [0, 0])
        self.deleted_template_ids: set[int] = set()

    def pick_session(self, conn: Connection) -> tuple[str, list[LedgerOp], bool]:
        """A session to write into; sometimes a new one (hermes schema)."""
        if self.schema == "hermes" and (not self.known_sessions or self.rng.random() < 0.03):
            session = self.corpus.session()
            conn.execute(
                "INSERT INTO sessions(id, source, model, started_at, title) VALUES (?,?,?,?,?)",
                (session["id"], session["source"], session["model"], time.time(), session.get("title")),
            )
            return session["id"], [], True
        if self.own_sessions and self.rng.random() < 0.5:
            return self.rng.choice(self.own_sessions), [], False
        if self.known_sessions:
            return self.rng.choice(self.known_sessions), [], False
        return f"s{self.name}-{self.thread_index}", [], False

    def do_insert(self, conn: Connection, batch: int) -> tuple[list[LedgerOp], Callable[[], None]]:
        session_id, ops, new_session = self.pick_session(conn)
        inserted: list[int] = []
        tool_calls = 0
        for _ in range(batch):
            msg = self.corpus.message(session_id, time.time())
            if self.schema == "hermes":
                conn.execute(
                    "INSERT INTO messages(session_id, role, content, tool_calls, tool_name, timestamp, token_count)"
                    " VALUES (?,?,?,?,?,?,?)",
                    (session_id, msg["role"], msg["content"], msg.get("tool_calls"), msg.get("tool_name"),
                     msg["timestamp"], msg.get("token_count")),
                )
                tool_calls += 1 if msg.get("tool_calls") else 0
            else:
                conn.execute(
                    "INSERT INTO messages(session_id, role, content, timestamp) VALUES (?,?,?,?)",
                    (session_id, msg["role"], msg["content"], msg["timestamp"]),
                )
            row_id = conn.lastrowid
            inserted.append(row_id)
            ops.append(LedgerOp("I", row_id, content_crc(msg["content"])))
        if self.schema == "hermes":
            conn.execute(
                "UPDATE sessions SET message_count = message_count + ?, tool_call_count = tool_call_count + ? WHERE id = ?",
                (batch, tool_calls, session_id),
            )

        def commit_local() -> None:
            self.own_ids.extend(inserted)
            if len(self.own_ids) > 5000:
                del self.own_ids[:1000]
            if new_session:
                self.own_sessions.append(session_id)
                self.known_sessions.append(session_id)

        return ops, commit_local

    def pick_existing(self) -> tuple[int, bool] | None:
        """A row this thread may update or delete: its own, or a template row of its partition."""
        low, high = self.template_ids
        use_own = self.own_ids and (high <= low or self.rng.random() < 0.5)
        if use_own:
            return self.rng.choice(self.own_ids), True
        if high > low:
            k, total = self.partition
            for _ in range(8):
                candidate = self.rng.randint(low, high)
                candidate += (k - candidate) % total
                if candidate <= high and candidate not in self.deleted_template_ids:
                    return candidate, False
        return None

    def do_update(self, conn: Connection, target: tuple[int, bool]) -> tuple[list[LedgerOp], Callable[[], None]]:
        row_id, _ = target
        msg = self.corpus.message("", time.time())
        conn.execute("UPDATE messages SET content = ? WHERE id = ?", (msg["content"], row_id))
        if conn.changes() != 1:
            return [], lambda: None
        return [LedgerOp("U", row_id, content_crc(msg["content"]))], lambda: None

    def do_delete(self, conn: Connection, target: tuple[int, bool]) -> tuple[list[LedgerOp], Callable[[], None]]:
        row_id, own = target
        session = None
        if self.schema == "hermes":
            session = conn.scalar("SELECT session_id FROM messages WHERE id = ?", (row_id,))
        conn.execute("DELETE FROM messages WHERE id = ?", (row_id,))
        if conn.changes() != 1:
            return [], lambda: None
        if session is not None:
            conn.execute("UPDATE sessions SET message_count = message_count - 1 WHERE id = ?", (session,))

        def commit_local() -> None:
            if own:
                try:
                    self.own_ids.remove(row_id)
                except ValueError:
                    pass
            else:
                self.deleted_template_ids.add(row_id)

        return [LedgerOp("D", row_id)], commit_local

    def transaction(self, kind: str, body: Callable[[Connection], tuple[list[LedgerOp], Callable[[], None]]],
                    retries: int) -> bool:
        """BEGIN IMMEDIATE ... COMMIT with the reporter's retry loop. True when committed."""
        t0, m0 = time.time(), time.perf_counter()
        busy_retries = 0
        while True:
            conn: Connection | None = None
            txn = None
            try:
                conn = self.acquire()  # per-op: opening (and its PRAGMAs) can fail busy or corrupt too
                conn.execute("BEGIN IMMEDIATE")
                ops, commit_local = body(conn)
                txn = self.ledger.prepare(ops) if ops else None
                conn.execute("COMMIT")
            except Exception as exc:
                if not is_sqlite_error(exc):
                    raise
                if conn is not None:  # else the open itself failed: nothing to roll back or close
                    roll_back_failed(conn, self.ledger, txn)
                cls = classify_error(exc)
                if txn is None and cls in ("busy", "locked") and busy_retries < retries and not self.ctx.stop.is_set():
                    busy_retries += 1
                    self.ctx.stop.wait(self.rng.uniform(0.020, 0.150))
                    if self.per_op:
                        self.release()
                    continue
                self.record_op(kind, t0, m0, err=exc, retries=busy_retries)
                self.release()
                return False
            if txn is not None:
                self.ledger.acknowledge(txn)
            commit_local()
            self.record_op(kind, t0, m0, retries=busy_retries, rows=len(ops))
            self.after_commit(conn)
            self.release()
            return True

    def after_commit(self, conn: Connection) -> None:
        pass


class Writer(WriterMixin, Actor):
    kind = "write"

    def setup(self) -> None:
        super().setup()
        base = int(self.spec["thread_partition_base"])
        self.init_writing((base + self.thread_index, int(self.spec["thread_partition_total"])))
        self.commits = 0
        self.fts_every = int(self.checkpoint["fts_every_writes"])
        self.fts_action = self.checkpoint["fts_maintenance"]
        weights = (self.options["insert_weight"], self.options["update_weight"], self.options["delete_weight"])
        self.choices = [name for name, w in zip(("insert", "update", "delete"), weights) for _ in range(w)]

    def step(self) -> None:
        action = self.rng.choice(self.choices)
        target = self.pick_existing() if action != "insert" else None
        if target is None:  # an insert, or nothing to update or delete: insert instead
            batch = self.options["batch"]
            self.transaction("write", lambda c: self.do_insert(c, batch), self.options["retries"])
        elif action == "update":
            self.transaction("write", lambda c: self.do_update(c, target), self.options["retries"])
        else:
            self.transaction("write", lambda c: self.do_delete(c, target), self.options["retries"])

    def after_commit(self, conn: Connection) -> None:
        self.commits += 1
        every = self.checkpoint["every_writes"]
        if every and self.checkpoint["mode"] != "NONE" and self.commits % every == 0:
            self.run_checkpoint(conn, f"every {every} writes")
        if self.fts_action != "none" and self.commits % self.fts_every == 0:
            self.run_fts_maintenance(conn, self.fts_action)

    def run_fts_maintenance(self, conn: Connection, action: str) -> None:
        """'optimize' or ('merge', N) on every FTS table, then maybe a checkpoint."""
        from walstress.database.schema import get_schema

        for table in get_schema(self.schema).fts_tables:
            params: tuple[int, ...]
            if action == "optimize":
                sql, params = f"INSERT INTO {table}({table}) VALUES('optimize')", ()
            else:
                sql, params = f"INSERT INTO {table}({table}, rank) VALUES('merge', ?)", (int(self.checkpoint["fts_merge_pages"]),)
            t0, m0 = time.time(), time.perf_counter()
            retries = 0
            while True:
                try:
                    conn.execute(sql, params)
                except Exception as exc:
                    if not is_sqlite_error(exc):
                        raise
                    conn.rollback_quietly()
                    if classify_error(exc) in ("busy", "locked") and retries < self.options["retries"] \
                            and not self.ctx.stop.is_set():
                        retries += 1
                        self.ctx.stop.wait(self.rng.uniform(0.020, 0.150))
                        continue
                    self.record_op("fts-maintenance", t0, m0, err=exc, table=table, action=action, retries=retries)
                    break
                self.record_op("fts-maintenance", t0, m0, table=table, action=action, retries=retries)
                break
        if self.checkpoint.get("after_fts_maintenance") and self.checkpoint["mode"] != "NONE":
            self.run_checkpoint(conn, f"after fts {action}")


class Reader(Actor):
    kind = "read"

    def setup(self) -> None:
        super().setup()
        from walstress.database.corpus import Corpus

        corpus = Corpus(int(self.spec["database_seed"]))
        self.terms = corpus.search_terms(200)
        self.trigrams = corpus.trigram_terms(200) if self.schema == "hermes" else []
        self.sessions = list(self.spec.get("session_ids", [])) or [""]
        self.hold_s = self.options["hold_ms"] / 1000.0

    def query(self, conn: Connection) -> int:
        pick = self.rng.random()
        if pick < 0.45:
            term = self.rng.choice(self.terms)
            rows = conn.execute("SELECT rowid FROM messages_fts WHERE messages_fts MATCH ? LIMIT 20", (f'"{term}"',))
        elif pick < 0.7 and self.trigrams:
            term = self.rng.choice(self.trigrams)
            rows = conn.execute(
                "SELECT rowid FROM messages_fts_trigram WHERE messages_fts_trigram MATCH ? LIMIT 20", (f'"{term}"',)
            )
        elif pick < 0.9:
            rows = conn.execute(
                "SELECT id, role, length(content) FROM messages WHERE session_id = ? ORDER BY timestamp LIMIT 50",
                (self.rng.choice(self.sessions),),
            )
        else:
            rows = conn.execute("SELECT id, length(content) FROM messages ORDER BY id DESC LIMIT 20")
        return len(rows)

    def step(self) -> None:
        t0, m0 = time.time(), time.perf_counter()
        try:
            conn = self.acquire()
            if self.hold_s:
                conn.execute("BEGIN")
                rows = self.query(conn)
                self.ctx.stop.wait(self.hold_s)
                rows += self.query(conn)
                conn.execute("COMMIT")
            else:
                rows = self.query(conn)
        except Exception as exc:
            if not is_sqlite_error(exc):
                raise
            if self.conn is not None:
                self.conn.rollback_quietly()
            self.record_op("read", t0, m0, err=exc)
        else:
            self.record_op("read", t0, m0, rows=rows, held=bool(self.hold_s))
        self.release()


class Checkpointer(Actor):
    kind = "checkpoint"

    def run(self) -> None:
        interval = self.checkpoint["interval_ms"] / 1000.0
        while not self.ctx.stop.wait(interval):
            try:
                conn = self.acquire()
            except Exception as exc:
                if not is_sqlite_error(exc):
                    raise
                self.record_op("open", time.time(), time.perf_counter(), err=exc)
                continue
            self.run_checkpoint(conn, "checkpointer")
            self.release()


class Opener(WriterMixin, Actor):
    """Short-lived connections: the per-request gateway and the cron job."""

    kind = "open"

    def setup(self) -> None:
        self.per_op = True
        base = int(self.spec["thread_partition_base"])
        self.init_writing((base + self.thread_index, int(self.spec["thread_partition_total"])))
        self.sessions = list(self.spec.get("session_ids", [])) or [""]

    def step(self) -> None:
        t0, m0 = time.time(), time.perf_counter()
        try:
            conn = self.acquire()
            conn.execute("SELECT count(*) FROM messages WHERE session_id = ?", (self.rng.choice(self.sessions),))
        except Exception as exc:
            if not is_sqlite_error(exc):
                raise
            self.record_op("open", t0, m0, err=exc)
            self.release()
            return
        if self.rng.random() < self.options["write_probability"]:
            self.per_op = False  # keep the connection for the write, then close it
            self.transaction("write", lambda c: self.do_insert(c, 1), self.options["retries"])
            self.per_op = True
        try:
            self.release()
        except Exception as exc:
            if not is_sqlite_error(exc):
                raise
            self.record_op("open", t0, m0, err=exc)
            return
        self.record_op("open", t0, m0)
