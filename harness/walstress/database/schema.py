"""Database schemas a stress run can use.

``hermes`` mirrors the state database of the bug report that started this
project: ``sessions`` and ``messages`` tables, two indexes, and two plain
FTS5 tables (a word index and a trigram index) kept in sync with
``messages.content`` by triggers. ``minimal`` keeps only what the
corruption needs: one table and one FTS5 index with the same triggers.

Sync invariant of every schema: each FTS table holds exactly one row per
``messages`` row, with ``rowid = messages.id`` and the same ``content``
(NULL content gives an FTS row without tokens). An update of ``content`` is
a delete of the old FTS row followed by an insert of the new one.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Schema", "SCHEMAS", "get_schema"]


@dataclass(frozen=True)
class Schema:
    """DDL of one schema, in the order it must be executed.

    ``tables_ddl`` (tables, then indexes), ``fts_ddl`` (one CREATE VIRTUAL
    TABLE per name in ``fts_tables``), ``triggers_ddl`` last. A builder that
    bulk-loads may create the triggers after the data, provided it fills the
    FTS tables as the triggers would have.
    """

    name: str
    tables_ddl: tuple[str, ...]
    fts_tables: tuple[str, ...]
    fts_ddl: tuple[str, ...]
    triggers_ddl: tuple[str, ...]
    has_sessions: bool

    @property
    def all_ddl(self) -> tuple[str, ...]:
        """Every statement, in an order that creates the schema from scratch."""
        return self.tables_ddl + self.fts_ddl + self.triggers_ddl

    def create(self, conn) -> None:
        """Create the whole schema (tables, FTS tables, triggers) on ``conn``."""
        for statement in self.all_ddl:
            conn.execute(statement)


def _sync_triggers(fts_tables: tuple[str, ...]) -> tuple[str, ...]:
    """AFTER INSERT / DELETE / UPDATE OF content triggers on ``messages``."""
    insert_new = "".join(
        f"\n    INSERT INTO {t}(rowid, content) VALUES (new.id, new.content);" for t in fts_tables
    )
    delete_old = "".join(f"\n    DELETE FROM {t} WHERE rowid = old.id;" for t in fts_tables)
    return (
        f"CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN{insert_new}\nEND",
        f"CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN{delete_old}\nEND",
        "CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN"
        f"{delete_old}{insert_new}\nEND",
    )


_HERMES_FTS = ("messages_fts", "messages_fts_trigram")

HERMES = Schema(
    name="hermes",
    tables_ddl=(
        """CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    source TEXT,
    user_id TEXT,
    model TEXT,
    parent_session_id TEXT REFERENCES sessions(id),
    started_at REAL NOT NULL,
    ended_at REAL,
    message_count INTEGER NOT NULL DEFAULT 0,
    tool_call_count INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER DEFAULT 0,
    output_tokens INTEGER DEFAULT 0,
    title TEXT
)""",
        """CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    role TEXT NOT NULL,
    content TEXT,
    tool_call_id TEXT,
    tool_calls TEXT,
    tool_name TEXT,
    timestamp REAL NOT NULL,
    token_count INTEGER,
    finish_reason TEXT
)""",
        "CREATE INDEX idx_messages_session ON messages(session_id, timestamp)",
        "CREATE INDEX idx_sessions_started ON sessions(started_at)",
    ),
    fts_tables=_HERMES_FTS,
    fts_ddl=(
        "CREATE VIRTUAL TABLE messages_fts USING fts5(content)",
        "CREATE VIRTUAL TABLE messages_fts_trigram USING fts5(content, tokenize='trigram')",
    ),
    triggers_ddl=_sync_triggers(_HERMES_FTS),
    has_sessions=True,
)

_MINIMAL_FTS = ("messages_fts",)

MINIMAL = Schema(
    name="minimal",
    tables_ddl=(
        """CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    role TEXT NOT NULL,
    content TEXT,
    timestamp REAL NOT NULL
)""",
    ),
    fts_tables=_MINIMAL_FTS,
    fts_ddl=("CREATE VIRTUAL TABLE messages_fts USING fts5(content)",),
    triggers_ddl=_sync_triggers(_MINIMAL_FTS),
    has_sessions=False,
)

SCHEMAS: dict[str, Schema] = {HERMES.name: HERMES, MINIMAL.name: MINIMAL}


def get_schema(name: str) -> Schema:
    """The schema called ``name``; ``KeyError`` naming the known ones otherwise."""
    try:
        return SCHEMAS[name]
    except KeyError:
        known = ", ".join(sorted(SCHEMAS))
        raise KeyError(f"unknown schema {name!r}; known schemas: {known}") from None
