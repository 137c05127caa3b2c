"""The ``python`` role: your own code as a worker.

    [[workers]]
    role = "python"
    entry = "app/worker.py:work"     # or "package.module:work"; a file is relative to the scenario
    count = 2
    threads = 2
    args = {queue = "jobs"}           # free-form, as ctx.args

The function is called once per thread with a :class:`PythonContext` and
runs until ``ctx.stop`` is set (it should look at it between operations):

    def work(ctx):
        conn = ctx.connect()                       # the scenario's driver, SQLite version, PRAGMAs, faults
        while not ctx.stop.is_set():
            with ctx.transaction(conn) as txn:     # BEGIN IMMEDIATE ... COMMIT, ledgered
                conn.execute("INSERT INTO kv(k, v) VALUES (?, ?)", (key, value))
                txn.wrote("kv", key, {"v": value})
            with ctx.op("read"):                   # latency and error class in the history
                conn.execute("SELECT ...").fetchall()

For code that opens its own connections inside a library, call
``ctx.acknowledged(table, key, values)`` once the library call has returned,
and set ``connections = "own"``: faults that act on the connections
walstress opens (the VFS shim: io_delay, slow or skipped syncs through the
shim, the vfs throttle, power loss) cannot act on those, and the scenario
is refused rather than run without them. Process-level faults (lock
breaker, fork, two libraries, kill, pause, kernel throttle, eatmydata) act
on these workers as on built-in ones.

A function that raises ends its thread: the worker's log has the traceback,
and the run's verdict is "errors" with the exception's first line.
"""

from __future__ import annotations

import inspect
import random
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, Literal, Mapping

from walstress.ledger import LedgerWriter, RowOp
from walstress.loading import LoadError, ensure_on_path, load_object
from walstress.scenario import WorkerSettings, user_code_path
from walstress.settings import SettingError, setting
from walstress.workers.base import MESSAGE_LIMIT, Actor, Role

PythonFunction = Callable[["PythonContext"], Any]


@dataclass
class PythonSettings(WorkerSettings):
    writes_ledger: ClassVar[bool] = True

    entry: str = setting("", kind="entry", doc='"package.module:function" or "path/to/file.py:function" (relative '
                                               'to the scenario file); called once per thread with the context')
    args: dict = setting({}, kind="table", doc="free-form arguments for the function (ctx.args)")
    connections: str = setting("ctx", choices=("ctx", "own"),
                               doc='ctx: the code opens its connections with ctx.connect(); own: it opens its own '
                                   '(faults that act on walstress\'s connections cannot reach them)')
    writes: bool = setting(True, doc="the code acknowledges writes (ctx.transaction / ctx.acknowledged): a run in "
                                     "which it acknowledged none says errors")

    def expects_writes(self) -> bool:
        return self.writes

    def validate(self, scenario: Any) -> None:
        key = f"workers.{self.role}.entry"
        if not self.entry:
            raise SettingError(key, 'missing; "package.module:function" or "path/to/file.py:function"')
        function = load_entry(self.entry, user_code_path(scenario))
        check_signature(function, key)
        if self.connections == "own":
            for name, section in scenario.faults.items():
                acts = getattr(section, "acts_on_connections", None)
                if acts is not None and acts(scenario):
                    raise SettingError(f"workers.{self.role}.connections",
                                       f'"own", but faults.{name} acts on the connections walstress opens (through '
                                       "its VFS shim), which this code does not use; open them with ctx.connect() "
                                       'and set connections = "ctx", or leave the fault out')


def load_entry(entry: str, extra_path: list[str]) -> PythonFunction:
    ensure_on_path(extra_path)
    try:
        function = load_object(entry)
    except LoadError as exc:
        raise SettingError("workers.python.entry", str(exc)) from None
    if not callable(function):
        raise SettingError("workers.python.entry", f"{entry} is not a function")
    return function


def check_signature(function: PythonFunction, key: str) -> None:
    try:
        inspect.signature(function).bind(object())
    except TypeError:
        raise SettingError(key, f"{getattr(function, '__qualname__', function)!s} must take one argument (the "
                                "context), as def work(ctx)") from None
    except ValueError:  # no signature to inspect (a builtin): trust it
        pass


# ------------------------------------------------------------------- context
class Transaction:
    """``with ctx.transaction(conn) as txn``: BEGIN IMMEDIATE on entry, COMMIT on a clean exit, with the ledger
    done around it; what the body changed is declared with ``wrote`` and ``deleted``. (A class rather than a
    generator: it runs once per user transaction, and its own cost is what the ledger adds to the user's.)"""

    __slots__ = ("conn", "ctx", "ops", "kind", "_t0", "_m0")

    def __init__(self, conn: Any, ctx: "PythonContext", kind: str = "write"):
        self.conn = conn
        self.ctx = ctx
        self.ops: list[RowOp] = []
        self.kind = kind

    def __enter__(self) -> "Transaction":
        self._t0 = time.time()
        self._m0 = time.perf_counter()
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            self._failed(exc, None)
            raise
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        if exc is not None:
            self._failed(exc, None)
            return False  # raised again: retrying is the caller's choice
        ops = self.ops
        prepared: int | None = None
        try:
            if ops:
                prepared = self.ctx.ledger.prepare(ops)
            self.conn.execute("COMMIT")
        except BaseException as error:
            self._failed(error, prepared)
            raise
        if prepared is not None:
            self.ctx.ledger.acknowledge(prepared)
        self.ctx._actor.record_ok(self.kind, self._t0, self._m0, f',"rows":{len(ops)}')
        return False

    def _failed(self, exc: BaseException, prepared: int | None) -> None:
        """Rolled back: failed in the ledger when it certainly was (still open, then not); indeterminate when
        COMMIT failed in an unclear way. An error is recorded as an operation of this kind."""
        still_open = _in_transaction(self.conn)
        _rollback(self.conn)
        if prepared is not None and still_open and not _in_transaction(self.conn):
            self.ctx.ledger.fail(prepared)
        if isinstance(exc, Exception):
            self.ctx._actor.record_op(self.kind, self._t0, self._m0, err=exc)

    def wrote(self, table: str, key: Any, row: Mapping[str, Any] | None = None) -> None:
        """The row of ``table`` with ``key`` now holds ``row`` (column -> value). Without ``row`` the row is
        read back inside the transaction: its every column, as SQLite stored it."""
        if row is None:
            row = self.ctx.read_row(self.conn, table, key)
        self.ops.append(RowOp.written(table, key, row))

    def deleted(self, table: str, key: Any) -> None:
        self.ops.append(RowOp.deleted(table, key))


def _query(conn: Any, sql: str, params: Any = ()) -> tuple[list[str], list[tuple]]:
    cursor = conn.execute(sql, params)
    description = getattr(cursor, "description", None)
    if description is None and hasattr(cursor, "getdescription"):
        try:
            description = cursor.getdescription()
        except Exception:
            description = ()
    return [d[0] for d in description or ()], [tuple(r) for r in cursor.fetchall()]


def _in_transaction(conn: Any) -> bool:
    if hasattr(conn, "in_transaction") and not callable(getattr(conn, "getautocommit", None)):
        return bool(conn.in_transaction)
    return not conn.getautocommit()


def _rollback(conn: Any) -> None:
    try:
        if _in_transaction(conn):
            conn.execute("ROLLBACK")
    except Exception:
        pass


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PythonContext:
    """What the function gets: the database, connections, the history and the ledger."""

    def __init__(self, actor: "PythonActor"):
        self._actor = actor
        spec = actor.spec
        self.db_path: str = spec.db_path
        self.args: dict[str, Any] = dict(actor.options.args)
        self.stop: threading.Event = actor.ctx.stop
        self.rng: random.Random = actor.rng            # seeded per worker and thread
        self.worker: str = spec.name
        self.thread: int = actor.thread_index
        self.seed: int = spec.seed
        self._ledger: LedgerWriter | None = None
        self._connections: list[Any] = []
        self._keys: dict[str, tuple[str, ...]] = {}

    # ------------------------------------------------------------ connections
    def connect(self, **kwargs: Any) -> Any:
        """A connection of the scenario's driver (sqlite3.Connection, or apsw.Connection), with the
        scenario's busy timeout and PRAGMAs and every connection-level fault installed. sqlite3
        connections are in autocommit mode (isolation_level=None) unless you pass another."""
        spec = self._actor.spec
        options = spec.connection
        if options.driver == "stdlib":
            import sqlite3

            params = {"timeout": options.busy_timeout_ms / 1000.0, "isolation_level": None,
                      "check_same_thread": False, **kwargs}
            vfs = self._actor.ctx.vfs_name
            if vfs:
                from urllib.parse import quote

                params["uri"] = True
                conn: Any = sqlite3.connect(f"file:{quote(self.db_path)}?vfs={vfs}", **params)
            else:
                conn = sqlite3.connect(self.db_path, **params)
        else:
            import apsw

            conn = apsw.Connection(self.db_path, vfs=self._actor.ctx.vfs_name or "", **kwargs)
            conn.setbusytimeout(int(options.busy_timeout_ms))
        try:
            for pragma in options.pragmas():
                conn.execute(pragma)
        except Exception:
            conn.close()
            raise
        self._connections.append(conn)
        return conn

    def close_all(self) -> None:
        for conn in self._connections:
            try:
                conn.close()
            except Exception:
                pass
        self._connections.clear()

    # ---------------------------------------------------------------- records
    @contextmanager
    def op(self, kind: str, **detail: Any) -> Iterator[None]:
        """Record one operation: its latency, and its error class if it raises."""
        t0, m0 = time.time(), time.perf_counter()
        try:
            yield
        except Exception as exc:
            self._actor.record_op(kind, t0, m0, err=exc, **detail)
            raise
        self._actor.record_op(kind, t0, m0, **detail)

    def note(self, message: str) -> None:
        self._actor.ctx.history.record({"type": "note", "worker": self.worker, "thread": self.thread,
                                        "t": time.time(), "msg": str(message)[:MESSAGE_LIMIT]})

    # ----------------------------------------------------------------- ledger
    @property
    def ledger(self) -> LedgerWriter:
        if self._ledger is None:
            self._ledger = self._actor.ctx.ledger(self.thread)
        return self._ledger

    def transaction(self, conn: Any, kind: str = "write") -> Transaction:
        """BEGIN IMMEDIATE ... COMMIT, with the ledger done for you: what the body declares with
        ``txn.wrote`` / ``txn.deleted`` is prepared before COMMIT, acknowledged after it, failed when it
        was rolled back, and indeterminate when COMMIT failed in an unclear way. Errors are recorded
        (as an operation of ``kind``) and raised again; retrying is the caller's choice."""
        return Transaction(conn, self, kind)

    def acknowledged(self, table: str, key: Any, values: Mapping[str, Any] | None = None, *,
                     deleted: bool = False) -> None:
        """A change your code committed outside ``ctx.transaction`` (a library's own connection), now that
        the call that made it has returned: the row with ``key`` holds ``values`` (or is ``deleted``)."""
        op = RowOp.deleted(table, key) if deleted else RowOp.written(table, key, values)
        self.ledger.acknowledge(self.ledger.prepare([op]))

    # ---------------------------------------------------------------- helpers
    def read_row(self, conn: Any, table: str, key: Any) -> dict[str, Any]:
        """Every column of one row, found by key (as the ledger check will find it)."""
        if isinstance(key, Mapping):
            columns, values = tuple(key), tuple(key.values())
        else:
            columns = self.key_columns(conn, table)
            values = tuple(key) if isinstance(key, (list, tuple)) else (key,)
        where = " AND ".join(f"{c if c == 'rowid' else _quote(c)} = ?" for c in columns)
        names, rows = _query(conn, f"SELECT * FROM {_quote(table)} WHERE {where}", values)
        if not rows:
            raise LookupError(f"txn.wrote({table!r}, {key!r}): no such row in the transaction")
        return dict(zip(names, rows[0]))

    def key_columns(self, conn: Any, table: str) -> tuple[str, ...]:
        if table not in self._keys:
            _, info = _query(conn, f"PRAGMA table_info({_quote(table)})")
            pk = sorted((row[5], row[1]) for row in info if row[5])
            self._keys[table] = tuple(name for _, name in pk) or ("rowid",)
        return self._keys[table]


# --------------------------------------------------------------------- actor
class PythonActor(Actor):
    kind = "python"

    def setup(self) -> None:
        self.function: PythonFunction = load_object(self.options.entry)
        self.context = PythonContext(self)

    def run(self) -> None:
        try:
            self.function(self.context)
        except Exception:
            traceback.print_exc(file=sys.stderr)  # the worker's log
            sys.stderr.flush()
            raise

    def teardown(self) -> None:
        context = getattr(self, "context", None)
        if context is not None:
            context.close_all()


ROLE = Role("python", PythonSettings, PythonActor)
