"""The ``writer`` role: the reporter's write path.

BEGIN IMMEDIATE; insert, update or delete messages (the FTS5 triggers churn
both FTS tables); COMMIT; retried on busy/locked like the reporter's code.
Optionally a checkpoint every ``checkpoint.every_writes`` commits on its own
connection, and FTS5 maintenance (``'optimize'`` or ``('merge', N)``) every
``checkpoint.fts_every_writes`` commits, maybe followed by a checkpoint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

from walstress.database.schema import get_schema
from walstress.scenario import WorkerSettings
from walstress.settings import SettingError, setting
from walstress.sqlite.driver import Connection, classify_error, is_sqlite_error
from walstress.workers.base import Actor, Role
from walstress.workers.writing import WriterMixin


@dataclass
class WriterSettings(WorkerSettings):
    writes_ledger: ClassVar[bool] = True
    shares_template_rows: ClassVar[bool] = True
    runs_fts_maintenance: ClassVar[bool] = True

    batch: int = setting(2, min=1, max=1000, doc="messages inserted per write transaction")
    insert_weight: int = setting(70, min=0)
    update_weight: int = setting(20, min=0)
    delete_weight: int = setting(10, min=0)
    retries: int = setting(15, min=0, max=1000, doc="retries on busy/locked, as the reporter's code")

    def required_tables(self, scenario: Any) -> tuple[str, ...]:
        return ("messages", "sessions") if scenario.database.schema == "hermes" else ("messages",)

    def validate(self, scenario: Any) -> None:
        if self.insert_weight + self.update_weight + self.delete_weight == 0:
            raise SettingError("workers.writer.insert_weight", "insert, update and delete weights are all 0")
        if (scenario.database.journal_mode != "WAL" and scenario.checkpoint.mode != "NONE"
                and scenario.checkpoint.every_writes):
            raise SettingError("database.journal_mode", 'checkpoints need journal_mode = "WAL", not '
                                                        f'"{scenario.database.journal_mode}"')


class Writer(WriterMixin, Actor):
    kind = "write"

    def setup(self) -> None:
        super().setup()
        self.init_writing()
        self.commits = 0
        self.fts_every = int(self.checkpoint.fts_every_writes)
        self.fts_action = self.checkpoint.fts_maintenance
        weights = (self.options.insert_weight, self.options.update_weight, self.options.delete_weight)
        self.choices = [name for name, w in zip(("insert", "update", "delete"), weights) for _ in range(w)]

    def step(self) -> None:
        action = self.rng.choice(self.choices)
        target = self.pick_existing() if action != "insert" else None
        if target is None:  # an insert, or nothing to update or delete: insert instead
            batch = self.options.batch
            self.transaction("write", lambda c: self.do_insert(c, batch), self.options.retries)
        elif action == "update":
            self.transaction("write", lambda c: self.do_update(c, target), self.options.retries)
        else:
            self.transaction("write", lambda c: self.do_delete(c, target), self.options.retries)

    def after_commit(self, conn: Connection) -> None:
        self.commits += 1
        every = self.checkpoint.every_writes
        if every and self.checkpoint.mode != "NONE" and self.commits % every == 0:
            self.run_checkpoint(conn, f"every {every} writes")
        if self.fts_action != "none" and self.commits % self.fts_every == 0:
            self.run_fts_maintenance(conn, self.fts_action)

    def run_fts_maintenance(self, conn: Connection, action: str) -> None:
        """'optimize' or ('merge', N) on every FTS table, then maybe a checkpoint."""
        for table in get_schema(self.schema).fts_tables:
            params: tuple[int, ...]
            if action == "optimize":
                sql, params = f"INSERT INTO {table}({table}) VALUES('optimize')", ()
            else:
                sql, params = f"INSERT INTO {table}({table}, rank) VALUES('merge', ?)", (int(self.checkpoint.fts_merge_pages),)
            t0, m0 = time.time(), time.perf_counter()
            retries = 0
            while True:
                try:
                    conn.execute(sql, params)
                except Exception as exc:
                    if not is_sqlite_error(exc):
                        raise
                    conn.rollback_quietly()
                    if classify_error(exc) in ("busy", "locked") and retries < self.options.retries \
                            and not self.ctx.stop.is_set():
                        retries += 1
                        self.ctx.stop.wait(self.rng.uniform(0.020, 0.150))
                        continue
                    self.record_op("fts-maintenance", t0, m0, err=exc, table=table, action=action, retries=retries)
                    break
                self.record_op("fts-maintenance", t0, m0, table=table, action=action, retries=retries)
                break
        if self.checkpoint.after_fts_maintenance and self.checkpoint.mode != "NONE":
            self.run_checkpoint(conn, f"after fts {action}")


ROLE = Role("writer", WriterSettings, Writer)
