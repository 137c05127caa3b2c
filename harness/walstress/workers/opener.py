"""The ``opener`` role: short-lived connections, as a per-request gateway or a cron job.

Each visit opens a connection, reads, sometimes (``write_probability``)
writes one message through the writer's transaction, and closes it (the
last connection to close checkpoints and may delete the -wal).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

from walstress.scenario import WorkerSettings
from walstress.settings import setting
from walstress.sqlite.driver import is_sqlite_error
from walstress.workers.base import Actor, Role
from walstress.workers.writing import WriterMixin


@dataclass
class OpenerSettings(WorkerSettings):
    writes_ledger: ClassVar[bool] = True
    shares_template_rows: ClassVar[bool] = True

    write_probability: float = setting(0.2, min=0.0, max=1.0, doc="share of opener visits that write")
    retries: int = setting(15, min=0, max=1000, doc="retries on busy/locked, as the reporter's code")

    def required_tables(self, scenario: Any) -> tuple[str, ...]:
        return ("messages", "sessions") if scenario.database.schema == "hermes" else ("messages",)

    def expects_writes(self) -> bool:
        return False  # a visit writes only sometimes: a short run may well acknowledge none


class Opener(WriterMixin, Actor):
    """Short-lived connections: the per-request gateway and the cron job."""

    kind = "open"

    def setup(self) -> None:
        self.per_op = True
        self.init_writing()
        self.sessions = list(self.spec.facts.session_ids) or [""]

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
        if self.rng.random() < self.options.write_probability:
            self.per_op = False  # keep the connection for the write, then close it
            self.transaction("write", lambda c: self.do_insert(c, 1), self.options.retries)
            self.per_op = True
        try:
            self.release()
        except Exception as exc:
            if not is_sqlite_error(exc):
                raise
            self.record_op("open", t0, m0, err=exc)
            return
        self.record_op("open", t0, m0)


ROLE = Role("opener", OpenerSettings, Opener)
