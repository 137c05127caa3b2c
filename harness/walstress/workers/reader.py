"""The ``reader`` role: FTS5 MATCH queries on both tables and session reads.

With ``hold_ms`` each read transaction stays open that long between two
queries: a reader that always holds a snapshot starves checkpoints (the WAL
cannot be rewound and grows).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from walstress.database.corpus import Corpus
from walstress.scenario import WorkerSettings
from walstress.settings import setting
from walstress.sqlite.driver import Connection, is_sqlite_error
from walstress.workers.base import Actor, Role


@dataclass
class ReaderSettings(WorkerSettings):
    hold_ms: int = setting(0, min=0, max=3_600_000, kind="ms", doc="keep each read transaction open this long")

    def required_tables(self, scenario: Any) -> tuple[str, ...]:
        if scenario.database.schema == "hermes":
            return ("messages", "messages_fts", "messages_fts_trigram")
        return ("messages", "messages_fts")


class Reader(Actor):
    kind = "read"

    def setup(self) -> None:
        super().setup()
        corpus = Corpus(int(self.spec.database_seed))
        self.terms = corpus.search_terms(200)
        self.trigrams = corpus.trigram_terms(200) if self.schema == "hermes" else []
        self.sessions = list(self.spec.facts.session_ids) or [""]
        self.hold_s = self.options.hold_ms / 1000.0

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


ROLE = Role("reader", ReaderSettings, Reader)
