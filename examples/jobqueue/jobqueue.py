"""A small job queue on SQLite in WAL mode, the way applications write one.

Producers enqueue jobs; workers in several processes claim the oldest
queued job with one ``UPDATE ... RETURNING`` (atomic: two workers never get
the same job), then complete it. Every function runs one statement on the
connection it is given, so the caller decides where transactions begin and
end (autocommit in the application; ``ctx.transaction`` under walstress).
"""

from __future__ import annotations

import sqlite3
import time

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id        INTEGER PRIMARY KEY,
    queue     TEXT NOT NULL,
    payload   TEXT NOT NULL,
    state     TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'done', 'failed')),
    worker    TEXT,
    attempts  INTEGER NOT NULL DEFAULT 0,
    result    TEXT,
    created   REAL NOT NULL,
    claimed   REAL,
    finished  REAL
);
CREATE INDEX IF NOT EXISTS jobs_pending ON jobs(queue, state, id);
CREATE INDEX IF NOT EXISTS jobs_worker ON jobs(worker, state);
"""


def connect(path: str, timeout: float = 5.0) -> sqlite3.Connection:
    """The application's own connection: WAL mode, autocommit, a busy timeout."""
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def create(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)


def enqueue(conn: sqlite3.Connection, queue: str, payload: str) -> int:
    return conn.execute("INSERT INTO jobs(queue, payload, created) VALUES (?, ?, ?) RETURNING id",
                        (queue, payload, time.time())).fetchone()[0]


def claim(conn: sqlite3.Connection, queue: str, worker: str) -> tuple[int, str] | None:
    """The oldest queued job of ``queue``, now running for ``worker``; None when the queue is empty."""
    row = conn.execute(
        "UPDATE jobs SET state = 'running', worker = ?, attempts = attempts + 1, claimed = ? "
        "WHERE id = (SELECT id FROM jobs WHERE queue = ? AND state = 'queued' ORDER BY id LIMIT 1) "
        "RETURNING id, payload", (worker, time.time(), queue)).fetchone()
    return (row[0], row[1]) if row else None


def complete(conn: sqlite3.Connection, job_id: int, result: str, *, failed: bool = False) -> None:
    conn.execute("UPDATE jobs SET state = ?, result = ?, finished = ? WHERE id = ?",
                 ("failed" if failed else "done", result, time.time(), job_id))


def pending(conn: sqlite3.Connection, queue: str) -> int:
    return conn.execute("SELECT count(*) FROM jobs WHERE queue = ? AND state = 'queued'", (queue,)).fetchone()[0]


def prune(conn: sqlite3.Connection, older_than_s: float) -> int:
    """Delete finished jobs older than the given age; how many."""
    cursor = conn.execute("DELETE FROM jobs WHERE state IN ('done', 'failed') AND finished < ?",
                          (time.time() - older_than_s,))
    return cursor.rowcount
