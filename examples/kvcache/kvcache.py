"""A key-value cache on SQLite in WAL mode that opens its own connections, as many libraries do.

Every call opens a connection, does its work in one transaction and closes
it again (no connection is shared between threads or kept between calls).
Entries expire after ``ttl`` seconds; ``set`` now and then sweeps expired
entries and, every ``checkpoint_every`` sets, truncates the WAL.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS cache (
    namespace TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     BLOB NOT NULL,
    expires   REAL NOT NULL,
    hits      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS cache_expires ON cache(expires);
"""


class Cache:
    def __init__(self, path: str, namespace: str = "default", *, ttl: float = 3600.0, timeout: float = 5.0,
                 checkpoint_every: int = 100):
        self.path = path
        self.namespace = namespace
        self.ttl = ttl
        self.timeout = timeout
        self.checkpoint_every = checkpoint_every
        self._sets = 0
        with closing(self._connect()) as conn:
            conn.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    def get(self, key: str) -> bytes | None:
        with closing(self._connect()) as conn:
            row = conn.execute("SELECT value, expires FROM cache WHERE namespace = ? AND key = ?",
                               (self.namespace, key)).fetchone()
            if row is None or row[1] < time.time():
                return None
            return row[0]

    def set(self, key: str, value: bytes) -> None:
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("INSERT INTO cache(namespace, key, value, expires) VALUES (?, ?, ?, ?) "
                             "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, "
                             "expires = excluded.expires, hits = 0",
                             (self.namespace, key, value, time.time() + self.ttl))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._sets += 1
            if self.checkpoint_every and self._sets % self.checkpoint_every == 0:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def delete(self, key: str) -> bool:
        with closing(self._connect()) as conn:
            return conn.execute("DELETE FROM cache WHERE namespace = ? AND key = ?",
                                (self.namespace, key)).rowcount > 0

    def sweep(self) -> int:
        with closing(self._connect()) as conn:
            return conn.execute("DELETE FROM cache WHERE expires < ?", (time.time(),)).rowcount

    def stats(self) -> dict[str, Any]:
        with closing(self._connect()) as conn:
            count, size = conn.execute("SELECT count(*), coalesce(sum(length(value)), 0) FROM cache").fetchone()
        return {"entries": count, "bytes": size}
