"""Templates from what a user brings: their database file, or their schema and a way to fill it.

``database.template = "app.db"``
    The user's file is never opened by SQLite nor written: a child process
    copies the database and its -wal (never the -shm) into a private folder
    (``snapshot.py``), retrying until the files stood still during a copy.
    SQLite then opens the private copy (WAL recovery applies the frames that
    were still in the -wal) and the backup API copies it page by page into
    the template, so the template keeps the file's own layout (its
    fragmentation and freelist, which a VACUUM would remove) and holds every
    committed transaction. A copy that fails ``PRAGMA quick_check`` is
    refused: a run that starts damaged says nothing. Templates are cached by
    the SHA-256 of the copied bytes.

``database.schema_sql = "schema.sql"`` (and ``database.fill``)
    A new database is built from the user's DDL and filled until it has
    ``database.pages`` pages, by ``database.fill``: a SQL file whose
    statements run ``database.fill_rows`` times per round with generated
    named parameters (see ``generators.py``), or a Python function
    ``fill(conn, rng, target_pages)`` (``"file.py:function"``). Cached by
    the content of both files, the page target, the page size and the seed.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from walstress.database.generators import ValueSource
from walstress.database.snapshot import copy_database
from walstress.database.template import (
    TEMPLATE_FORMAT_VERSION,
    Progress,
    cached_build,
    templates_dir,
)
from walstress.loading import LoadError, load_object

__all__ = ["TemplateError", "schema_template", "template_tables", "user_template"]

_HASH_CHUNK = 1 << 20
_MAX_FILL_ROUNDS = 1_000_000


class TemplateError(Exception):
    """The user's database or schema cannot become a template; the message says why."""


def _sha256(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        if not path.exists():
            continue
        with open(path, "rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def template_tables(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """The schema's tables and indexes by name (what the report and the checks will name)."""
    rows = conn.execute("SELECT type, name FROM sqlite_master WHERE type IN ('table', 'index') "
                        "AND name NOT LIKE 'sqlite_%' ORDER BY name").fetchall()
    return {"tables": [n for t, n in rows if t == "table"], "indexes": [n for t, n in rows if t == "index"]}


def _finish(conn: sqlite3.Connection, info: dict[str, Any]) -> dict[str, Any]:
    """Leave the template in rollback-journal mode (no -wal beside it) and describe it."""
    mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
    if str(mode).lower() != "delete":
        raise TemplateError(f"could not leave the template in journal_mode=DELETE ({mode})")
    info.update(template_tables(conn))
    info["pages"] = conn.execute("PRAGMA page_count").fetchone()[0]
    info["page_size"] = conn.execute("PRAGMA page_size").fetchone()[0]
    info["sqlite_version"] = sqlite3.sqlite_version
    return info


# ------------------------------------------------------------- the user's db
def user_template(source: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str] | None = None,
                  progress: Progress | None = None) -> tuple[Path, bool]:
    """The cached template made from the user's database file (and its -wal); ``(path, built_now)``."""
    source = Path(source)
    if not source.is_file():
        raise TemplateError(f"{source}: no such database file")
    with tempfile.TemporaryDirectory(prefix="walstress-snapshot-") as tmp:
        folder = Path(tmp)
        status, stable = copy_database(source, folder)
        if status.get(""):
            raise TemplateError(f"{source}: cannot read it: {status['']}")
        if not stable:
            raise TemplateError(f"{source}: it changed during every copy (an application is writing it); stop "
                                "the application, or copy it with the sqlite3 shell's .backup and use the copy")
        copy = folder / source.name
        wal = Path(f"{copy}-wal")
        with open(copy, "rb") as handle:
            header = handle.read(16)
        if header != b"SQLite format 3\0":
            raise TemplateError(f"{source}: not an SQLite database (its header is {header[:16]!r}); "
                                f"walstress check {source} tells what it is")
        digest = _sha256([copy, wal])
        key = f"user-{_stem(source)}-{digest[:16]}-sqlite{sqlite3.sqlite_version}-v{TEMPLATE_FORMAT_VERSION}"

        def build(target: Path) -> dict:
            started = time.perf_counter()
            if progress is not None:
                progress(f"copying {source} (with {wal.stat().st_size if wal.exists() else 0:,} bytes of -wal)")
            conn = sqlite3.connect(copy, isolation_level=None)  # the private copy: recovery applies its -wal
            try:
                problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
                if problems != ["ok"]:
                    raise TemplateError(f"{source}: damaged ({problems[0]}); a run would start from a damaged "
                                        f"file. walstress check {source} diagnoses it")
                target_conn = sqlite3.connect(target, isolation_level=None)
                try:
                    conn.backup(target_conn)
                    info = _finish(target_conn, {"source": str(source.resolve()), "sha256": digest,
                                                 "wal_bytes": wal.stat().st_size if wal.exists() else 0})
                finally:
                    target_conn.close()
            finally:
                conn.close()
            info["build_seconds"] = round(time.perf_counter() - started, 3)
            return info

        return cached_build(templates_dir(cache_dir), key, build)


def _stem(path: Path) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in path.stem)[:40] or "db"


# --------------------------------------------------- a schema and its filling
def schema_template(schema_sql: str | os.PathLike[str], *, fill: str = "", pages: int, page_size: int, seed: int,
                    fill_rows: int = 100, cache_dir: str | os.PathLike[str] | None = None,
                    progress: Progress | None = None) -> tuple[Path, bool]:
    """The cached template built from the user's DDL and filled to ``pages``; ``(path, built_now)``."""
    ddl_path = Path(schema_sql)
    try:
        ddl = ddl_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"{ddl_path}: cannot read it: {exc}") from None
    fill_text = _fill_identity(fill)
    digest = hashlib.sha256("\0".join([ddl, fill, fill_text, str(pages), str(page_size), str(seed),
                                       str(fill_rows)]).encode()).hexdigest()
    key = f"schema-{_stem(ddl_path)}-{digest[:16]}-sqlite{sqlite3.sqlite_version}-v{TEMPLATE_FORMAT_VERSION}"

    def build(target: Path) -> dict:
        started = time.perf_counter()
        conn = sqlite3.connect(target, isolation_level=None)
        try:
            conn.execute(f"PRAGMA page_size={int(page_size)}")
            conn.execute("PRAGMA journal_mode=OFF")
            conn.execute("PRAGMA synchronous=OFF")
            try:
                conn.executescript(ddl)
            except sqlite3.Error as exc:
                raise TemplateError(f"{ddl_path}: {exc}") from None
            rounds = _fill_database(conn, fill, pages=pages, seed=seed, rows=fill_rows, progress=progress)
            info = _finish(conn, {"schema_sql": str(ddl_path.resolve()), "fill": fill, "target_pages": pages,
                                  "seed": seed, "fill_rounds": rounds})
        finally:
            conn.close()
        info["build_seconds"] = round(time.perf_counter() - started, 3)
        if progress is not None:
            progress(f"built {info['pages']:,} pages from {ddl_path.name} in {info['build_seconds']:.1f} s")
        return info

    return cached_build(templates_dir(cache_dir), key, build)


def _fill_identity(fill: str) -> str:
    """What the cache key takes of the fill: the SQL file's text, or the source of the Python function."""
    if not fill:
        return ""
    if fill.endswith(".sql") and ":" not in Path(fill).name:
        try:
            return Path(fill).read_text(encoding="utf-8")
        except OSError as exc:
            raise TemplateError(f"database.fill: {fill}: {exc}") from None
    try:
        return inspect.getsource(load_fill_function(fill))
    except (OSError, TypeError):
        return fill


def load_fill_function(fill: str) -> Callable[..., Any]:
    try:
        function = load_object(fill)
    except LoadError as exc:
        raise TemplateError(f"database.fill: {exc}") from None
    if not callable(function):
        raise TemplateError(f"database.fill: {fill} is not a function")
    return function


def split_statements(script: str) -> list[str]:
    """The complete SQL statements of a script, in order."""
    statements: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip().rstrip(";").strip():
                statements.append(current.strip())
            current = ""
    if current.strip():
        raise TemplateError(f"the script ends inside a statement: {current.strip()[:80]!r}")
    return statements


def _fill_database(conn: sqlite3.Connection, fill: str, *, pages: int, seed: int, rows: int,
                   progress: Progress | None) -> int:
    """Fill until page_count >= pages; the rounds it took."""
    if not fill:
        return 0
    if not (fill.endswith(".sql") and ":" not in Path(fill).name):
        function = load_fill_function(fill)
        import random

        function(conn, random.Random(seed), pages)
        return 1
    statements = split_statements(Path(fill).read_text(encoding="utf-8"))
    if not statements:
        raise TemplateError(f"database.fill: {fill} has no statements")
    source = ValueSource(seed)
    last = conn.execute("PRAGMA page_count").fetchone()[0]
    next_report = time.monotonic() + 2.0
    for round_index in range(_MAX_FILL_ROUNDS):
        if last >= pages:
            return round_index
        conn.execute("BEGIN")
        try:
            for statement in statements:
                for row in range(rows):
                    conn.execute(statement, source.named(round_index, row, seed))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            raise TemplateError(f"database.fill: {fill}: {exc}") from None
        count = conn.execute("PRAGMA page_count").fetchone()[0]
        if count <= last and round_index > 2:
            raise TemplateError(f"database.fill: {fill} does not grow the database (still {count} pages after "
                                f"{round_index + 1} rounds); it must insert rows")
        last = count
        if progress is not None and time.monotonic() >= next_report:
            next_report = time.monotonic() + 2.0
            progress(f"filling: {last:,} of {pages:,} pages")
    return _MAX_FILL_ROUNDS
