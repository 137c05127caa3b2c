"""What every worker role builds on: its context, one actor per thread, and its registry entry.

A role is one module that declares

- its settings, a :class:`~walstress.scenario.WorkerSettings` dataclass whose
  fields become the scenario keys ``workers.<role>.<key>``, with a
  ``validate(scenario)`` for combinations it cannot run and class variables
  saying what it contributes to the checks (``writes_ledger``: its commits
  are in the ledger, so a run in which none was acknowledged says "errors";
  ``shares_template_rows``: it updates and deletes template rows, which are
  split among such threads);
- its :class:`Actor`: one per thread, with ``setup``, ``step`` (or ``run``)
  and ``teardown``;
- ``ROLE = Role("name", Settings, Actor)``, registered with one line in
  ``registry.py``.

Every operation becomes an ``op`` record in the history (``record_op``);
every acknowledged change goes to the thread's ledger before it is counted.
"""

from __future__ import annotations

import inspect
import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from walstress.history import HistoryWriter
from walstress.ledger import LedgerWriter
from walstress.runspec import WorkerSpec
from walstress.scenario import WorkerSettings
from walstress.sqlite.driver import Connection, classify_error, connect, is_sqlite_error

MESSAGE_LIMIT = 200  # error messages kept in the history


@dataclass
class WorkerContext:
    spec: WorkerSpec
    settings: Any                  # the role's WorkerSettings subclass, rebuilt from the spec
    history: HistoryWriter
    stop: threading.Event
    vfs_name: str | None = None
    _ledgers: list[LedgerWriter] = field(default_factory=list)

    def ledger(self, thread_index: int) -> LedgerWriter:
        writer = LedgerWriter(self.spec.ledger_path(thread_index))  # an incarnation has its own files
        self._ledgers.append(writer)
        return writer

    def close(self) -> None:
        for writer in self._ledgers:
            writer.close()


def _ok_line(prefix: str, t0: float, ms: float, tail: str) -> str:
    """A successful op's history line (the same JSON json.dumps gives: floats by repr)."""
    return f'{prefix}{t0!r},"ms":{ms!r},"ok":true,"err":null{tail}}}'


def describe_error(exc: BaseException) -> str:
    """``ValueError: the first line of its message``: how a worker's failure reads in a verdict."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:MESSAGE_LIMIT]}" if text else type(exc).__name__


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
        self.options = ctx.settings
        self.thread_index = thread_index
        self.name = ctx.spec.name
        self._op_prefixes: dict[str, str] = {}   # kind -> the start of its op records, encoded once
        self.rng = random.Random(f"{ctx.spec.seed}:{self.name}:{thread_index}")
        self.per_op = self.options.connection == "per-op"
        self.conn: Connection | None = None
        self.checkpoint = ctx.spec.checkpoint
        self.schema = ctx.spec.schema
        self.pause_s = self.options.pause_ms / 1000.0

    # ----------------------------------------------------------- connections
    def open(self) -> Connection:
        """A connection through the scenario's driver, with its PRAGMAs and the faults' VFS."""
        spec = self.spec
        conn = connect(spec.db_path, driver=spec.connection.driver, busy_timeout_ms=spec.connection.busy_timeout_ms,
                       vfs=self.ctx.vfs_name)
        try:
            for pragma in spec.connection.pragmas():
                conn.execute(pragma)
        except Exception:
            conn.close()
            raise
        return conn

    def close_connection(self, conn: Connection) -> None:
        if self.checkpoint.on_close and self.checkpoint.mode != "NONE":
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
        if err is None:
            tail = ""
            for k, v in extra.items():
                if type(v) is not int:
                    break
                tail += f',"{k}":{v}'
            else:  # the common case, encoded without a dict and json.dumps (the same JSON: floats by repr)
                self.record_ok(kind, t0, m0, tail)
                return
        ms = (time.perf_counter() - m0) * 1000.0
        rec = {"type": "op", "worker": self.name, "thread": self.thread_index, "kind": kind,
               "t": t0, "ms": ms, "ok": err is None, "err": None}
        if err is not None:
            rec["err"] = classify_error(err)
            rec["msg"] = str(err)[:MESSAGE_LIMIT]
        rec.update(extra)
        self.ctx.history.record(rec)

    def record_ok(self, kind: str, t0: float, m0: float, json_tail: str = "") -> None:
        """A successful operation's record, made at the next flush; ``json_tail`` adds fields to it, as
        ``,"name":value`` JSON text (the fast path of :meth:`record_op`, for callers once per transaction)."""
        ms = (time.perf_counter() - m0) * 1000.0
        self.ctx.history.record_later(_ok_line, self._op_prefixes.get(kind) or self._op_prefix(kind), t0, ms,
                                      json_tail)

    def _op_prefix(self, kind: str) -> str:
        """An op record's line up to its time, made once per kind."""
        prefix = self._op_prefixes[kind] = json.dumps(
            {"type": "op", "worker": self.name, "thread": self.thread_index, "kind": kind},
            separators=(",", ":"))[:-1] + ',"t":'
        return prefix

    def run_checkpoint(self, conn: Connection, source: str) -> None:
        mode = self.checkpoint.mode
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


@dataclass(frozen=True)
class Role:
    """A registry entry: the role's name, its settings dataclass and the actor that plays it."""

    name: str
    settings: type[WorkerSettings]
    actor: type[Actor]

    @property
    def actor_path(self) -> str:
        """``module:Class``, which a worker process imports to play the role."""
        return f"{self.actor.__module__}:{self.actor.__qualname__}"

    @property
    def settings_path(self) -> str:
        return f"{self.settings.__module__}:{self.settings.__qualname__}"

    @property
    def module_file(self) -> str:
        return inspect.getfile(self.actor)
