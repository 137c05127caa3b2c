-- The job queue's schema (jobqueue.SCHEMA), for database.schema_sql.
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
