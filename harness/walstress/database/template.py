"""Build, cache and copy template databases.

A template is a database of a given schema filled with :class:`Corpus` data
until it has at least ``pages`` pages. Building one takes seconds, so it is
built once per (schema, pages, page_size, seed, SQLite version) and kept in
a cache directory; every run then starts from a fresh copy.

The builder bulk-loads: ``journal_mode=OFF``, ``synchronous=OFF``, a cache
that holds the whole file, messages inserted in large transactions and the
FTS tables filled per chunk with ``INSERT ... SELECT``. The sync triggers are
created last; the FTS tables then hold exactly what the triggers would have
produced (one row per message, ``rowid = messages.id``, same content). The
finished file is in rollback-journal mode (``journal_mode=DELETE``) and has
no ``-wal``, ``-shm`` or ``-journal`` beside it.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from .cachedir import default_cache_dir
from .corpus import Corpus
from .schema import SCHEMAS, Schema

__all__ = [
    "MIN_PAGES",
    "MAX_PAGES",
    "TEMPLATE_FORMAT_VERSION",
    "build_database",
    "copy_template",
    "default_cache_dir",
    "get_template",
    "template_key",
    "validate_template_args",
]

MIN_PAGES = 8
MAX_PAGES = 4_000_000
MIN_PAGE_SIZE = 512
MAX_PAGE_SIZE = 65536
# Bump when the corpus or the build changes what a template contains, so
# that cached templates of the old format are not reused.
TEMPLATE_FORMAT_VERSION = 1

_MEAN_MESSAGES_PER_SESSION = 25
_MAX_CHUNK_MESSAGES = 3000
_MAX_CACHE_BYTES = 1 << 30
_SIDE_FILE_SUFFIXES = ("-wal", "-shm", "-journal")

Progress = Callable[[str], None]


def validate_template_args(schema: str, pages: int, page_size: int, seed: int) -> Schema:
    """Check the arguments of a build; ``ValueError`` with a clear message."""
    if schema not in SCHEMAS:
        known = ", ".join(sorted(SCHEMAS))
        raise ValueError(f"unknown schema {schema!r}; known schemas: {known}")
    if isinstance(pages, bool) or not isinstance(pages, int):
        raise ValueError(f"pages must be an integer, not {pages!r}")
    if not MIN_PAGES <= pages <= MAX_PAGES:
        raise ValueError(f"pages must be between {MIN_PAGES} and {MAX_PAGES:,}, not {pages:,}")
    if (
        isinstance(page_size, bool)
        or not isinstance(page_size, int)
        or not MIN_PAGE_SIZE <= page_size <= MAX_PAGE_SIZE
        or page_size & (page_size - 1)
    ):
        raise ValueError(
            f"page_size must be a power of two between {MIN_PAGE_SIZE} and {MAX_PAGE_SIZE}, "
            f"not {page_size!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, not {seed!r}")
    return SCHEMAS[schema]


# -- building ----------------------------------------------------------------


def build_database(
    path: str | os.PathLike[str],
    *,
    schema: str = "hermes",
    pages: int = 65536,
    page_size: int = 4096,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict:
    """Create a new database at ``path`` filled until ``page_count >= pages``.

    ``FileExistsError`` if ``path`` (or a ``-wal``/``-shm``/``-journal`` beside
    it) exists. Returns the build info: path, schema, pages (the final page
    count), target_pages, page_size, messages, sessions, seed,
    sqlite_version, build_seconds.
    """
    schema_def = validate_template_args(schema, pages, page_size, seed)
    path = Path(path)
    for side in _SIDE_FILE_SUFFIXES:
        if Path(f"{path}{side}").exists():
            raise FileExistsError(f"{path}{side} exists; refusing to build {path} next to it")
    started = time.perf_counter()
    with open(path, "xb"):  # atomic "must not exist"; an empty file is an empty database
        pass
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            counts = _fill(conn, schema_def, pages, page_size, seed, progress)
            final_pages = conn.execute("PRAGMA page_count").fetchone()[0]
            mode = conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
            if mode.lower() != "delete":
                raise RuntimeError(f"could not leave {path} in journal_mode=DELETE ({mode})")
        finally:
            conn.close()
    except BaseException:
        _unlink_database(path)
        raise
    seconds = time.perf_counter() - started
    if progress is not None:
        progress(f"built {final_pages:,} pages, {counts['messages']:,} messages in {seconds:.1f} s")
    return {
        "path": str(path),
        "schema": schema,
        "pages": final_pages,
        "target_pages": pages,
        "page_size": page_size,
        "messages": counts["messages"],
        "sessions": counts["sessions"],
        "seed": seed,
        "sqlite_version": sqlite3.sqlite_version,
        "build_seconds": round(seconds, 3),
    }


def _fill(
    conn: sqlite3.Connection,
    schema: Schema,
    target_pages: int,
    page_size: int,
    seed: int,
    progress: Progress | None,
) -> dict:
    conn.execute(f"PRAGMA page_size={page_size}")
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA locking_mode=EXCLUSIVE")
    conn.execute("PRAGMA temp_store=MEMORY")
    cache_kib = min(target_pages * page_size * 5 // 4, _MAX_CACHE_BYTES) // 1024
    conn.execute(f"PRAGMA cache_size=-{max(cache_kib, 2048)}")
    conn.execute("BEGIN")
    for statement in schema.tables_ddl + schema.fts_ddl:
        conn.execute(statement)
    conn.execute("COMMIT")
    actual_page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    if actual_page_size != page_size:
        raise RuntimeError(f"page_size {page_size} was not applied (got {actual_page_size})")

    corpus = Corpus(seed)
    plan_rng = random.Random(f"walstress-build-{seed}")
    insert_message = insert_statement("messages", message_columns(schema.has_sessions))
    fill_fts = [
        f"INSERT INTO {table}(rowid, content) "
        "SELECT id, content FROM messages WHERE id >= ? ORDER BY id"
        for table in schema.fts_tables
    ]

    next_id = 1
    session_count = 0
    session_ids: list[str] = []  # candidates for parent_session_id
    page_count = empty_page_count = conn.execute("PRAGMA page_count").fetchone()[0]
    # First guess of the pages one message costs; refined after every chunk.
    pages_per_message = 10_000 / page_size * len(schema.fts_tables)
    last_report = time.monotonic()
    while page_count < target_pages:
        # Aim at 60% of the estimated remainder: the estimate is rough, and
        # closing in geometrically keeps the overshoot to about one session.
        wanted = 0.6 * (target_pages - page_count) / pages_per_message
        chunk_messages = min(wanted, _MAX_CHUNK_MESSAGES)
        chunk_sessions = max(1, round(chunk_messages / _MEAN_MESSAGES_PER_SESSION))
        message_rows: list[tuple] = []
        session_rows: list[tuple] = []
        for _ in range(chunk_sessions):
            rows, session_row = _session_rows(corpus, plan_rng, next_id + len(message_rows),
                                              session_ids, schema.has_sessions)  # fmt: skip
            message_rows.extend(rows)
            if session_row is not None:
                session_rows.append(session_row)
            session_count += 1
        first_id = next_id
        next_id += len(message_rows)
        conn.execute("BEGIN")
        if session_rows:
            conn.executemany(insert_statement("sessions", SESSION_COLUMNS), session_rows)
        conn.executemany(insert_message, message_rows)
        for statement in fill_fts:
            conn.execute(statement, (first_id,))
        conn.execute("COMMIT")
        page_count = conn.execute("PRAGMA page_count").fetchone()[0]
        # Averaged over the whole build: one chunk's growth is noisy (FTS5
        # merges move pages to and from the freelist).
        pages_per_message = max((page_count - empty_page_count) / (next_id - 1), 1 / 64)
        now = time.monotonic()
        if progress is not None and now - last_report >= 1.0:
            last_report = now
            progress(f"{page_count:,}/{target_pages:,} pages, {next_id - 1:,} messages")

    conn.execute("BEGIN")
    for statement in schema.triggers_ddl:
        conn.execute(statement)
    conn.execute("COMMIT")
    return {"messages": next_id - 1, "sessions": session_count}


SESSION_COLUMNS = ("id", "source", "user_id", "model", "parent_session_id", "started_at", "ended_at",
                   "message_count", "tool_call_count", "input_tokens", "output_tokens", "title")


def message_columns(has_sessions: bool) -> tuple[str, ...]:
    """The columns of a built message row (``_session_rows``), in their order."""
    if has_sessions:
        return ("id", "session_id", "role", "content", "tool_call_id", "tool_calls", "tool_name", "timestamp",
                "token_count", "finish_reason")
    return ("id", "session_id", "role", "content", "timestamp")


def insert_statement(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table}({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


def corpus_rows(schema: str, seed: int, sessions: int) -> tuple[list[tuple], list[tuple]]:
    """The (message rows, session rows) the first ``sessions`` sessions of a build with ``seed`` insert,
    in the same order: what a baseline bulk load of the same data needs."""
    schema_def = SCHEMAS[schema]
    corpus, plan_rng = Corpus(seed), random.Random(f"walstress-build-{seed}")
    messages: list[tuple] = []
    session_rows: list[tuple] = []
    session_ids: list[str] = []
    for _ in range(sessions):
        rows, row = _session_rows(corpus, plan_rng, 1 + len(messages), session_ids, schema_def.has_sessions)
        messages.extend(rows)
        if row is not None:
            session_rows.append(row)
    return messages, session_rows


def _session_rows(
    corpus: Corpus,
    plan_rng: random.Random,
    first_id: int,
    session_ids: list[str],
    has_sessions: bool,
) -> tuple[list[tuple], tuple | None]:
    """Message rows of one new session, and its ``sessions`` row (or None)."""
    session = corpus.session()
    session_id = session["id"]
    length = 1 + int(plan_rng.expovariate(1 / (_MEAN_MESSAGES_PER_SESSION - 1)))
    timestamp = session["started_at"]
    rows: list[tuple] = []
    tool_calls = input_tokens = output_tokens = 0
    message_id = first_id
    while len(rows) < length or corpus.has_pending_tool_calls(session_id):
        timestamp = round(timestamp + plan_rng.expovariate(1 / 20.0), 3)
        m = corpus.message(session_id, timestamp)
        if has_sessions:
            rows.append((message_id, session_id, m["role"], m["content"], m["tool_call_id"],
                         m["tool_calls"], m["tool_name"], timestamp, m["token_count"],
                         m["finish_reason"]))  # fmt: skip
            if m["role"] == "assistant":
                output_tokens += m["token_count"]
                if m["tool_calls"]:
                    tool_calls += len(json.loads(m["tool_calls"]))
            else:
                input_tokens += m["token_count"]
        else:
            rows.append((message_id, session_id, m["role"], m["content"], timestamp))
        message_id += 1
    corpus.end_session(session_id)
    session_row = None
    if has_sessions:
        parent = None
        if session_ids and plan_rng.random() < 0.1:
            recent = len(session_ids) - 200  # a continuation of a recent session
            parent = session_ids[plan_rng.randrange(max(0, recent), len(session_ids))]
        session_row = (session_id, session["source"], session["user_id"], session["model"], parent,
                       session["started_at"], timestamp, len(rows), tool_calls, input_tokens,
                       output_tokens, session["title"])  # fmt: skip
    session_ids.append(session_id)
    return rows, session_row


def _unlink_database(path: Path) -> None:
    for name in (str(path), *(f"{path}{side}" for side in _SIDE_FILE_SUFFIXES)):
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass


def _fsync_path(path: Path, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- cache -------------------------------------------------------------------


def template_key(schema: str, pages: int, page_size: int, seed: int, sqlite_version: str) -> str:
    """File-name stem of a cached template, e.g.
    ``hermes-p65536-ps4096-s0-sqlite3.40.1-v1`` (``v`` = template format)."""
    return (
        f"{schema}-p{pages}-ps{page_size}-s{seed}-sqlite{sqlite_version}"
        f"-v{TEMPLATE_FORMAT_VERSION}"
    )


def _read_info(db_path: Path, info_path: Path) -> dict | None:
    """The build info of a finished template, or None if it is missing or
    does not match the file (size != pages * page_size)."""
    try:
        info = json.loads(info_path.read_text())
        size = db_path.stat().st_size
        if size != info["pages"] * info["page_size"]:
            return None
        return info
    except (OSError, ValueError, KeyError, TypeError):
        return None


def get_template(
    *,
    schema: str,
    pages: int,
    page_size: int,
    seed: int,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> tuple[Path, bool]:
    """Path of the cached template for these arguments, building it if needed.

    Returns ``(path, built_now)``. Safe against concurrent callers in other
    processes: one builds (under an exclusive ``flock`` on ``<key>.lock``),
    the others wait and reuse its file. The template appears by an atomic
    rename after it was synced, with ``<key>.json`` (the build info) beside
    it, so nobody ever sees a half-built file.
    """
    validate_template_args(schema, pages, page_size, seed)
    key = template_key(schema, pages, page_size, seed, sqlite3.sqlite_version)

    def build(target: Path) -> dict:
        return build_database(target, schema=schema, pages=pages, page_size=page_size, seed=seed,
                              progress=progress)

    return cached_build(templates_dir(cache_dir), key, build)


def templates_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    directory = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "templates"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def cached_build(directory: Path, key: str, build: Callable[[Path], dict]) -> tuple[Path, bool]:
    """``directory/<key>.db``, made by ``build(tmp_path)`` (which returns the build info) unless it is
    there already. Returns ``(path, built_now)``.

    Safe against concurrent callers in other processes: one builds (under an
    exclusive ``flock`` on ``<key>.lock``), the others wait and reuse its
    file. The file appears by an atomic rename after it was synced, with
    ``<key>.json`` (the build info) beside it, so nobody ever sees a
    half-built file.
    """
    db_path = directory / f"{key}.db"
    info_path = directory / f"{key}.json"
    if _read_info(db_path, info_path) is not None:
        return db_path, False

    with open(directory / f"{key}.lock", "a") as lock_file:
        fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
        try:
            if _read_info(db_path, info_path) is not None:
                return db_path, False  # another process built it while we waited
            # Leftovers of a builder that died: nobody else builds this key now.
            for stale in directory.glob(f".{key}.*.tmp*"):
                stale.unlink(missing_ok=True)
            tmp_db = directory / f".{key}.{os.getpid()}.tmp"
            tmp_info = directory / f".{key}.{os.getpid()}.tmp.json"
            try:
                info = build(tmp_db)
                _fsync_path(tmp_db)
                info["path"] = str(db_path)
                info["template_key"] = key
                tmp_info.write_text(json.dumps(info, indent=2) + "\n")
                _fsync_path(tmp_info)
                # Info first: a template file without its info is never reused.
                os.replace(tmp_info, info_path)
                os.replace(tmp_db, db_path)
                _fsync_path(directory, directory=True)
            except BaseException:
                _unlink_database(tmp_db)
                tmp_info.unlink(missing_ok=True)
                raise
            return db_path, True
        finally:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)


def copy_template(
    template: str | os.PathLike[str], dest: str | os.PathLike[str], *, fsync: bool = True
) -> None:
    """Copy ``template`` to the new file ``dest``.

    ``FileExistsError`` if ``dest`` or a ``-wal``/``-shm``/``-journal`` beside
    it exists: a fresh database next to an old WAL would be a corrupt one.
    With ``fsync`` (the default) the copy is on disk before this returns, so
    crash and power-loss faults cannot lose the starting state.
    """
    template, dest = Path(template), Path(dest)
    for name in (str(dest), *(f"{dest}{side}" for side in _SIDE_FILE_SUFFIXES)):
        if os.path.lexists(name):
            raise FileExistsError(f"{name} exists; copy_template needs a fresh destination")
    with open(template, "rb") as source, open(dest, "xb") as target:
        _copy_contents(source, target)
        if fsync:
            target.flush()
            os.fsync(target.fileno())


def _copy_contents(source, target) -> None:
    """Copy an open file into another, in the kernel where it can."""
    size = os.fstat(source.fileno()).st_size
    offset = 0
    try:
        while offset < size:
            count = min(size - offset, 1 << 30)
            sent = os.sendfile(target.fileno(), source.fileno(), offset, count)
            if sent == 0:
                break
            offset += sent
    except OSError:
        if offset:
            raise
        shutil.copyfileobj(source, target, length=1 << 20)  # no sendfile for these files
        return
    if offset != size:
        raise OSError(f"short copy: {offset} of {size} bytes")
