"""Roles that change the database's shape while other connections work.

``schema-changer``  every ``pause_ms``: create an index on the first user
                    table, add a column to a side table of its own, drop
                    the index again. Other connections find their prepared
                    statements stale (SQLITE_SCHEMA) and prepare them again;
                    SQLite promises that this is safe.
``mode-switcher``   every ``pause_ms``: ``PRAGMA journal_mode=DELETE``, then
                    ``journal_mode=WAL`` again (optionally a ``VACUUM`` in
                    rollback mode in between). Leaving WAL needs the only
                    connection, so most attempts end in "database is
                    locked": each attempt is an ``op`` with its outcome, and
                    a switch that went through is recorded as such. Old
                    SQLite versions corrupted databases here (fixed long
                    ago); a current one must stay clean.

Neither writes rows of its own to the ledger: the writers' ledgers judge
the run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

from walstress.scenario import WorkerSettings
from walstress.settings import SettingError, setting
from walstress.sqlite.driver import is_sqlite_error
from walstress.workers.base import Actor, Role

SIDE_TABLE = "walstress_ddl"
INDEX = "walstress_ddl_index"


@dataclass
class SchemaChangerSettings(WorkerSettings):
    writes_ledger: ClassVar[bool] = False
    pause_ms: int = setting(200, min=0, max=3_600_000, kind="ms", doc="pause between schema changes")
    max_columns: int = setting(50, min=1, max=1000, doc="columns added to the side table at the most")


class SchemaChanger(Actor):
    kind = "ddl"

    def setup(self) -> None:
        super().setup()
        conn = self.acquire()
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND sql NOT LIKE 'CREATE VIRTUAL%' "
            "AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '%_fts%' AND name != ? ORDER BY rootpage", (SIDE_TABLE,))]
        self.table = tables[0] if tables else None
        columns = [r[1] for r in conn.execute(f'PRAGMA table_info("{self.table}")')] if self.table else []
        self.column = columns[1] if len(columns) > 1 else (columns[0] if columns else None)
        self.added = 0
        conn.execute(f"CREATE TABLE IF NOT EXISTS {SIDE_TABLE}(id INTEGER PRIMARY KEY)")   # the columns' table
        self.release()

    def step(self) -> None:
        # each statement changes the schema (no IF [NOT] EXISTS that could do nothing): an index made and
        # dropped again on a table the writers use, a column added to the side table
        statements = []
        if self.table and self.column:
            statements.append(f'CREATE INDEX {INDEX} ON "{self.table}"("{self.column}")')
        if self.added < self.options.max_columns:
            statements.append(f"ALTER TABLE {SIDE_TABLE} ADD COLUMN c{self.added} TEXT")
        if self.table and self.column:
            statements.append(f"DROP INDEX {INDEX}")
        for sql in statements:
            t0, m0 = time.time(), time.perf_counter()
            try:
                conn = self.acquire()
                conn.execute(sql)
                if sql.startswith("ALTER"):
                    self.added += 1
                self.record_op("ddl", t0, m0, sql=sql.split("(")[0][:60])
            except Exception as exc:
                if not is_sqlite_error(exc):
                    raise
                if "duplicate column" in str(exc):
                    self.added += 1
                self.record_op("ddl", t0, m0, err=exc)
            finally:
                self.release()


@dataclass
class ModeSwitcherSettings(WorkerSettings):
    writes_ledger: ClassVar[bool] = False
    pause_ms: int = setting(100, min=0, max=3_600_000, kind="ms", doc="pause between switch attempts")
    vacuum: bool = setting(False, doc="VACUUM while in rollback mode, before switching back to WAL")

    def validate(self, scenario: Any) -> None:
        if scenario.database.journal_mode != "WAL":
            raise SettingError("database.journal_mode", "the mode-switcher role switches a WAL database to rollback "
                                                        "mode and back; it needs journal_mode = \"WAL\"")


class ModeSwitcher(Actor):
    kind = "switch"

    def step(self) -> None:
        t0, m0 = time.time(), time.perf_counter()
        try:
            conn = self.acquire()
            mode = str(conn.scalar("PRAGMA journal_mode=DELETE")).lower()
            switched = mode == "delete"
            if switched and self.options.vacuum:
                conn.execute("VACUUM")
            back = str(conn.scalar("PRAGMA journal_mode=WAL")).lower()
            self.record_op("switch", t0, m0, switched=switched, back_in_wal=back == "wal")
        except Exception as exc:
            if not is_sqlite_error(exc):
                raise
            try:  # never leave the database in rollback mode for the others
                self.acquire().execute("PRAGMA journal_mode=WAL")
            except Exception as again:
                if not is_sqlite_error(again):
                    raise
            self.record_op("switch", t0, m0, err=exc)
        finally:
            self.release()


SCHEMA_ROLE = Role("schema-changer", SchemaChangerSettings, SchemaChanger)
MODE_ROLE = Role("mode-switcher", ModeSwitcherSettings, ModeSwitcher)
