"""An example role, defined outside walstress: counts the messages every ``pause_ms``.

The README's "Adding a role" shows this module; tests/test_extending.py
registers it with one line (``register_role(ROLE)``) and runs it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from walstress.scenario import WorkerSettings
from walstress.settings import setting
from walstress.sqlite.driver import is_sqlite_error
from walstress.workers.base import Actor, Role


@dataclass
class CounterSettings(WorkerSettings):
    table: str = setting("messages", choices=("messages", "sessions"), doc="the table to count")


class Counter(Actor):
    def step(self) -> None:
        t0, m0 = time.time(), time.perf_counter()
        try:
            rows = self.acquire().scalar(f"SELECT count(*) FROM {self.options.table}")
        except Exception as exc:
            if not is_sqlite_error(exc):
                raise
            self.record_op("count", t0, m0, err=exc)
        else:
            self.record_op("count", t0, m0, rows=int(rows or 0))
        self.release()


ROLE = Role("counter", CounterSettings, Counter)
