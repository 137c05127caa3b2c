"""The write transactions shared by the roles that write messages (writer, opener).

``transaction`` is the reporter's pattern: ``BEGIN IMMEDIATE``, the body,
``COMMIT``, retried on busy/locked up to ``retries`` times with 20-150 ms
random sleeps. The ledger gets ``P`` before COMMIT, ``A`` after it and
``F`` when the transaction was certainly rolled back.

A writing thread owns the template rows ``id % K == k`` of its partition
(``WorkerSpec.partition``), so two threads never update the same template
row and the ledger's expected state of each row is unambiguous.
"""

from __future__ import annotations

import random
import time
import zlib
from typing import TYPE_CHECKING, Any, Callable, Sequence

from walstress.database.corpus import Corpus
from walstress.ledger import AnyOp, LedgerOp, content_crc
from walstress.runspec import WorkerSpec
from walstress.sqlite.driver import Connection, classify_error, is_sqlite_error
from walstress.workers.base import WorkerContext, roll_back_failed


def write_messages(conn: Connection, corpus: Corpus, schema: str, session_id: str, batch: int) -> list[tuple[int, str]]:
    """The writer role's rows of one insert transaction: ``batch`` messages of the corpus into ``session_id``
    and, on the hermes schema, that session's counters; (rowid, content) of each message. Also the bare
    baseline of the benchmarks, so both write the same rows with the same statements."""
    written: list[tuple[int, str]] = []
    tool_calls = 0
    for _ in range(batch):
        msg = corpus.message(session_id, time.time())
        if schema == "hermes":
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
        written.append((conn.lastrowid, msg["content"]))
    if schema == "hermes":
        conn.execute(
            "UPDATE sessions SET message_count = message_count + ?, tool_call_count = tool_call_count + ? WHERE id = ?",
            (batch, tool_calls, session_id),
        )
    return written


class WriterMixin:
    """The transaction machinery shared by writers and writing openers."""

    rng: random.Random
    ctx: WorkerContext
    spec: WorkerSpec
    name: str
    thread_index: int
    schema: str
    per_op: bool

    if TYPE_CHECKING:  # provided by Actor, which every user of the mixin also derives from
        def acquire(self) -> Connection: ...

        def release(self) -> None: ...

        def record_op(self, kind: str, t0: float, m0: float, *, err: BaseException | None = None,
                      **extra: Any) -> None: ...

    def init_writing(self) -> None:
        self.corpus = Corpus(zlib.crc32(f"{self.spec.seed}:{self.name}:{self.thread_index}".encode()))
        self.ledger = self.ctx.ledger(self.thread_index)
        self.own_ids: list[int] = []
        self.own_sessions: list[str] = []
        self.known_sessions: list[str] = list(self.spec.facts.session_ids)
        base, total = self.spec.partition
        self.partition = (base + self.thread_index, total)  # (k, K): template rows with id % K == k are ours
        self.template_ids = self.spec.facts.id_range
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
        written = write_messages(conn, self.corpus, self.schema, session_id, batch)
        inserted = [row_id for row_id, _ in written]
        ops.extend(LedgerOp("I", row_id, content_crc(content)) for row_id, content in written)

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

    def transaction(self, kind: str, body: Callable[[Connection], tuple[Sequence[AnyOp], Callable[[], None]]],
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
