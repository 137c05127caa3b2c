"""The ``sql`` role: your SQL as a worker, with the lost-write oracle.

    [[workers]]
    role = "sql"
    count = 2
    batch = 3                      # statements per transaction
    statements = [
      {sql = "INSERT INTO kv(k, v) VALUES (?, ?)", weight = 5, params = [{uuid = true}, {text = [10, 200]}]},
      {sql = "UPDATE kv SET v = ? WHERE k = ?", weight = 3, params = [{text = [10, 200]}, {key = "kv"}]},
      {sql = "DELETE FROM kv WHERE k = ?", weight = 1, params = [{key = "kv"}]},
      {sql = "SELECT count(*) FROM kv", weight = 2},
    ]

Each step picks ``batch`` statements by weight and runs them in one
``BEGIN IMMEDIATE ... COMMIT``, retried on busy/locked like the writer
role. Parameters come from the generators of ``database/generators.py``;
``{key = "kv"}`` is a key this thread wrote earlier (a statement that needs
one is skipped until there is one).

Writes are ledgered through ``RETURNING``: an INSERT, UPDATE or REPLACE
gets ``RETURNING <key>, *`` appended (the table's primary key, or its
rowid), a DELETE ``RETURNING <key>``, so every acknowledged row is checked
in the final database with a checksum over all its columns. The table is
read from the statement (``table = "..."`` names it when that fails); a
statement with its own RETURNING clause, or with ``ledger = false``, is
run but not ledgered.
"""

from __future__ import annotations

import re
import time
import zlib
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from walstress.database.generators import GeneratorError, ValueSource, check_generator
from walstress.ledger import AnyOp, RowOp
from walstress.scenario import WorkerSettings
from walstress.settings import SettingError, setting
from walstress.sqlite.driver import Connection, is_sqlite_error
from walstress.workers.base import Actor, Role
from walstress.workers.writing import WriterMixin

_WRITE_TABLE = [
    re.compile(r"^\s*(?:INSERT|REPLACE)\s+(?:OR\s+\w+\s+)?INTO\s+(\"(?:[^\"]|\"\")+\"|[\w$]+)", re.I),
    re.compile(r"^\s*UPDATE\s+(?:OR\s+\w+\s+)?(\"(?:[^\"]|\"\")+\"|[\w$]+)", re.I),
    re.compile(r"^\s*DELETE\s+FROM\s+(\"(?:[^\"]|\"\")+\"|[\w$]+)", re.I),
]
_RETURNING = re.compile(r"\bRETURNING\b", re.I)
_STATEMENT_KEYS = {"sql", "weight", "params", "table", "ledger"}


def statement_kind(sql: str) -> str:
    """ "insert", "update", "delete" or "read" (anything else)."""
    word = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
    return {"INSERT": "insert", "REPLACE": "insert", "UPDATE": "update", "DELETE": "delete"}.get(word, "read")


def written_table(sql: str) -> str | None:
    for pattern in _WRITE_TABLE:
        match = pattern.match(sql)
        if match:
            name = match.group(1)
            return name[1:-1].replace('""', '"') if name.startswith('"') else name
    return None


@dataclass
class SqlSettings(WorkerSettings):
    writes_ledger: ClassVar[bool] = True

    statements: list = setting([], kind="list", doc='weighted statements: [{sql = "...", weight = 1, params = '
                                                    '[{int = [1, 9]}], table = "...", ledger = true}]')
    batch: int = setting(1, min=1, max=10_000, doc="statements per transaction")
    retries: int = setting(15, min=0, max=1000, doc="retries on busy/locked, as the reporter's code")

    def validate(self, scenario: Any) -> None:
        where = f"workers.{self.role}.statements"
        if not self.statements:
            raise SettingError(where, 'empty; a list such as [{sql = "INSERT INTO t(v) VALUES (?)", '
                                      "params = [{int = [1, 9]}]}]")
        total = 0
        for index, statement in enumerate(self.statements):
            at = f"{where}[{index}]"
            if not isinstance(statement, dict):
                raise SettingError(at, 'a table such as {sql = "...", weight = 1}')
            unknown = sorted(set(statement) - _STATEMENT_KEYS)
            if unknown:
                raise SettingError(f"{at}.{unknown[0]}", f"unknown key; allowed: {', '.join(sorted(_STATEMENT_KEYS))}")
            sql = statement.get("sql")
            if not isinstance(sql, str) or not sql.strip():
                raise SettingError(f"{at}.sql", "missing; one SQL statement")
            if not _complete(sql.rstrip().rstrip(";") + ";") or _more_than_one(sql):
                raise SettingError(f"{at}.sql", f"not one complete statement: {sql.strip()[:80]!r}")
            weight = statement.get("weight", 1)
            if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
                raise SettingError(f"{at}.weight", f"{weight!r}: a whole number, 0 or more")
            total += weight
            params = statement.get("params", [])
            if not isinstance(params, list):
                raise SettingError(f"{at}.params", "a list of generators such as [{int = [1, 9]}]")
            for number, spec in enumerate(params):
                try:
                    check_generator(spec, f"{at}.params[{number}]")
                except GeneratorError as exc:
                    raise SettingError(None, str(exc)) from None
            table = statement.get("table")
            if table is not None and not isinstance(table, str):
                raise SettingError(f"{at}.table", "the name of the table the statement writes")
            if statement_kind(sql) != "read" and statement.get("ledger", True) and not (table or written_table(sql)):
                raise SettingError(f"{at}.table", f"the written table could not be read from {sql.strip()[:60]!r}; "
                                                  "name it (table = \"...\") or set ledger = false")
        if total == 0:
            raise SettingError(where, "every weight is 0")

    def expects_writes(self) -> bool:
        return any(statement_kind(s.get("sql", "")) != "read" and s.get("ledger", True) and s.get("weight", 1)
                   for s in self.statements)


def _complete(sql: str) -> bool:
    """sqlite3.complete_statement, imported only here: a worker on apsw maps one SQLite library, not two."""
    import sqlite3

    return sqlite3.complete_statement(sql)


def _more_than_one(sql: str) -> bool:
    body = sql.strip().rstrip(";")
    return ";" in body and _complete(body.split(";", 1)[0] + ";") and bool(
        body.split(";", 1)[1].strip())


def _quote(name: str) -> str:
    return name if name == "rowid" else '"' + name.replace('"', '""') + '"'


@dataclass
class Prepared:
    """A statement as the worker runs it: its final SQL and how its rows go to the ledger."""

    sql: str
    kind: str                           # insert / update / delete / read
    weight: int
    params: list[dict[str, Any]]
    table: str | None                   # the ledgered table, None: not ledgered
    key_columns: tuple[str, ...] = ()


class SqlActor(WriterMixin, Actor):
    kind = "sql"

    def setup(self) -> None:
        super().setup()
        self.ledger = self.ctx.ledger(self.thread_index)
        self.values = ValueSource(zlib.crc32(f"{self.spec.seed}:{self.name}:{self.thread_index}:sql".encode()))
        self.values.rng = self.rng
        self.own_keys: dict[str, list[tuple[Any, ...]]] = {}
        conn = self.acquire()
        self.statements = [self._prepare(conn, s) for s in self.options.statements]
        self.release()
        self.choices = [s for s in self.statements for _ in range(s.weight)]

    def _prepare(self, conn: Connection, statement: dict[str, Any]) -> Prepared:
        sql = statement["sql"].strip().rstrip(";")
        kind = statement_kind(sql)
        table = statement.get("table") or written_table(sql)
        prepared = Prepared(sql, kind, int(statement.get("weight", 1)), list(statement.get("params", [])), None)
        if kind == "read" or not statement.get("ledger", True) or _RETURNING.search(sql) or table is None:
            return prepared
        info = conn.execute(f"PRAGMA table_info({_quote(table)})")
        if not info:
            raise RuntimeError(f"the statement {sql[:60]!r} writes {table!r}, which the database does not have")
        pk = sorted((row[5], row[1]) for row in info if row[5])
        key_columns = tuple(name for _, name in pk) or ("rowid",)
        keys = ", ".join(_quote(c) for c in key_columns)
        prepared.sql = f"{sql} RETURNING {keys}" + ("" if kind == "delete" else ", *")
        prepared.table = table
        prepared.key_columns = key_columns
        return prepared

    def _parameters(self, statement: Prepared) -> list[Any] | None:
        """Values for the statement's parameters; None when it needs a key this thread has not written yet."""
        values: list[Any] = []
        picked: dict[str, tuple[Any, ...]] = {}
        for spec in statement.params:
            if "key" in spec:
                table = spec["key"]
                if table not in picked:
                    known = self.own_keys.get(table)
                    if not known:
                        return None
                    picked[table] = self.rng.choice(known)
                key = picked[table]
                part = int(spec.get("part", 0))
                if part >= len(key):
                    raise RuntimeError(f"{{key = {table!r}, part = {part}}}: the key of {table} has {len(key)} "
                                       "column(s)")
                values.append(key[part])
            else:
                values.append(self.values.value(spec))
        return values

    def step(self) -> None:
        picks = [self.rng.choice(self.choices) for _ in range(self.options.batch)]
        if all(p.kind == "read" for p in picks):
            self._read(picks)
            return
        self.transaction("write", lambda conn: self._body(conn, picks), self.options.retries)

    def _read(self, picks: list[Prepared]) -> None:
        t0, m0 = time.time(), time.perf_counter()
        try:
            conn = self.acquire()
            rows = 0
            for statement in picks:
                params = self._parameters(statement)
                if params is not None:
                    rows += len(conn.execute(statement.sql, params))
        except Exception as exc:
            if not is_sqlite_error(exc):
                raise
            self.record_op("read", t0, m0, err=exc)
        else:
            self.record_op("read", t0, m0, rows=rows)
        self.release()

    def _body(self, conn: Connection, picks: list[Prepared]) -> tuple[list[AnyOp], Callable[[], None]]:
        ops: list[AnyOp] = []
        added: list[tuple[str, tuple[Any, ...]]] = []
        removed: list[tuple[str, tuple[Any, ...]]] = []
        for statement in picks:
            params = self._parameters(statement)
            if params is None:
                continue
            names, rows = conn.execute_named(statement.sql, params)
            if statement.table is None:
                continue
            width = len(statement.key_columns)
            for row in rows:
                key = tuple(row[:width])
                ledger_key = key[0] if width == 1 else list(key)
                if statement.kind == "delete":
                    ops.append(RowOp.deleted(statement.table, ledger_key))
                    removed.append((statement.table, key))
                else:
                    ops.append(RowOp.written(statement.table, ledger_key, dict(zip(names[width:], row[width:]))))
                    if statement.kind == "insert":
                        added.append((statement.table, key))

        def commit_local() -> None:
            for table, key in added:
                self.own_keys.setdefault(table, []).append(key)
            for table, key in removed:
                try:
                    self.own_keys.get(table, []).remove(key)
                except ValueError:
                    pass
            for keys in self.own_keys.values():
                if len(keys) > 5000:
                    del keys[:1000]

        return ops, commit_local


ROLE = Role("sql", SqlSettings, SqlActor)
