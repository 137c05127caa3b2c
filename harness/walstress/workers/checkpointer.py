"""The ``checkpointer`` role: a dedicated connection checkpointing every ``checkpoint.interval_ms``
with ``checkpoint.mode`` (an outside checkpointer, as a replication sidecar or a backup job)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from walstress.scenario import WorkerSettings
from walstress.settings import SettingError
from walstress.sqlite.driver import is_sqlite_error
from walstress.workers.base import Actor, Role


@dataclass
class CheckpointerSettings(WorkerSettings):
    def validate(self, scenario: Any) -> None:
        if scenario.checkpoint.mode == "NONE":
            raise SettingError("checkpoint.mode", 'is "NONE" but the scenario has checkpointer workers')
        if scenario.database.journal_mode != "WAL":
            raise SettingError("database.journal_mode", 'checkpoints need journal_mode = "WAL", not '
                                                        f'"{scenario.database.journal_mode}"')


class Checkpointer(Actor):
    kind = "checkpoint"

    def run(self) -> None:
        interval = self.checkpoint.interval_ms / 1000.0
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


ROLE = Role("checkpointer", CheckpointerSettings, Checkpointer)
