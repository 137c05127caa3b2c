"""Tests of walstress.database: schemas, corpus, template build and cache."""

from __future__ import annotations

import collections
import hashlib
import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from walstress.database import (
    SCHEMAS,
    Corpus,
    build_database,
    copy_template,
    default_cache_dir,
    get_schema,
    get_template,
    template_key,
)

SIDE_SUFFIXES = ("-wal", "-shm", "-journal")


def connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def content_checksum(path: Path) -> str:
    conn = connect(path)
    try:
        digest = hashlib.sha256()
        for row in conn.execute("SELECT * FROM messages ORDER BY id"):
            digest.update(repr(row).encode())
        if conn.execute("SELECT 1 FROM sqlite_schema WHERE name = 'sessions'").fetchone():
            for row in conn.execute("SELECT * FROM sessions ORDER BY id"):
                digest.update(repr(row).encode())
        return digest.hexdigest()
    finally:
        conn.close()


def fts_in_sync(conn: sqlite3.Connection, table: str) -> None:
    conn.execute(f"INSERT INTO {table}({table}) VALUES ('integrity-check')")
    messages = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    rows = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    same = conn.execute(
        f"SELECT count(*) FROM messages m JOIN {table} f ON f.rowid = m.id "
        "WHERE f.content IS m.content"
    ).fetchone()[0]
    assert messages == rows == same


# -- schemas -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_creates_and_accepts_worker_statements(name):
    schema = get_schema(name)
    assert schema.name == name
    conn = connect(Path(":memory:"))
    schema.create(conn)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema")}
    assert {"messages", *schema.fts_tables} <= names
    assert ("sessions" in names) == schema.has_sessions
    triggers = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type='trigger'")}
    assert len(triggers) == 3
    if schema.has_sessions:
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(
            "INSERT INTO sessions(id, source, model, started_at) VALUES ('s1', 'cli', 'm', 1)"
        )
        conn.execute(
            "INSERT INTO messages(session_id, role, content, tool_calls, tool_name, timestamp, "
            "token_count) VALUES ('s1', 'user', 'hello world', NULL, NULL, 2.0, 3)"
        )
        conn.execute("UPDATE sessions SET message_count = message_count + 1 WHERE id = 's1'")
        assert {"idx_messages_session", "idx_sessions_started"} <= names
    else:
        conn.execute(
            "INSERT INTO messages(session_id, role, content, timestamp) "
            "VALUES ('s1', 'user', 'hello world', 2.0)"
        )
    for table in schema.fts_tables:
        fts_in_sync(conn, table)
    if "messages_fts_trigram" in schema.fts_tables:
        tokenizer_sql = conn.execute(
            "SELECT sql FROM sqlite_schema WHERE name = 'messages_fts_trigram'"
        ).fetchone()[0]
        assert "trigram" in tokenizer_sql


def test_get_schema_unknown_lists_known_names():
    with pytest.raises(KeyError, match="hermes.*minimal"):
        get_schema("nope")


# -- corpus --------------------------------------------------------------------


def sample_messages(seed: int, n: int) -> list[dict]:
    corpus = Corpus(seed)
    out: list[dict] = []
    while len(out) < n:
        session = corpus.session()
        for i in range(25):
            out.append(corpus.message(session["id"], session["started_at"] + i))
    return out


def test_corpus_is_deterministic_and_seed_dependent():
    assert sample_messages(3, 200) == sample_messages(3, 200)
    assert sample_messages(3, 200) != sample_messages(4, 200)
    a, b = Corpus(5), Corpus(5)
    a.search_terms(10)  # asking for terms must not change the messages
    assert a.session() == b.session()
    assert a.message("x", 1.0) == b.message("x", 1.0)


def test_corpus_messages_look_like_an_agent_chat():
    corpus = Corpus(1)
    session = corpus.session()
    assert session["source"] in {"cli", "telegram", "discord", "cron", "web"}
    assert len(session["id"]) == 36 and session["title"] and session["model"]
    messages = sample_messages(1, 3000)
    roles = collections.Counter(m["role"] for m in messages)
    assert set(roles) == {"user", "assistant", "tool", "system"}
    assert roles["assistant"] > roles["system"] and roles["tool"] > roles["system"]
    for m in messages:
        assert m["token_count"] >= 0
        if m["role"] == "tool":
            assert m["tool_name"] and 900 <= len(m["content"]) <= 24_000
        if m["tool_calls"] is not None:
            assert m["role"] == "assistant"
            calls = json.loads(m["tool_calls"])
            assert calls and all(c["function"]["name"] for c in calls)
    mean = {r: sum(len(m["content"] or "") for m in messages if m["role"] == r) / roles[r]
            for r in roles}  # fmt: skip
    assert mean["user"] < mean["assistant"] < mean["tool"]


def test_search_terms_occur_in_the_corpus():
    corpus = Corpus(2)
    text = " ".join(m["content"] or "" for m in sample_messages(2, 2000))
    words = set(text.lower().replace(",", " ").split())
    terms = corpus.search_terms(50)
    assert len(terms) == 50 and all(t.isalpha() and t.islower() for t in terms)
    assert sum(t in words for t in terms) >= 40
    trigram = corpus.trigram_terms(50)
    assert all(len(t) >= 3 for t in trigram)
    assert sum(t in text for t in trigram) >= 40


# -- build ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    out = {}
    for schema, pages in (("minimal", 300), ("hermes", 600)):
        path = tmp_path_factory.mktemp("build") / f"{schema}.db"
        messages: list[str] = []
        info = build_database(path, schema=schema, pages=pages, seed=7, progress=messages.append)
        out[schema] = (path, info)
    return out


@pytest.mark.parametrize("schema", ["minimal", "hermes"])
def test_build_reaches_target_and_is_consistent(built, schema):
    path, info = built[schema]
    target = {"minimal": 300, "hermes": 600}[schema]
    for side in SIDE_SUFFIXES:
        assert not Path(f"{path}{side}").exists()
    conn = connect(path)
    try:
        page_count = conn.execute("PRAGMA page_count").fetchone()[0]
        assert page_count >= target
        assert info["pages"] == page_count and info["target_pages"] == target
        assert info["page_size"] == conn.execute("PRAGMA page_size").fetchone()[0] == 4096
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == info["messages"] > 0
        for table in get_schema(schema).fts_tables:
            fts_in_sync(conn, table)
        assert info["sqlite_version"] == sqlite3.sqlite_version and info["seed"] == 7
        assert set(info) >= {"path", "schema", "pages", "page_size", "messages", "sessions",
                             "seed", "sqlite_version", "build_seconds"}  # fmt: skip
        if schema == "hermes":
            assert conn.execute("SELECT count(*) FROM sessions").fetchone()[0] == info["sessions"]
            mismatched = conn.execute(
                "SELECT count(*) FROM sessions s WHERE message_count != "
                "(SELECT count(*) FROM messages m WHERE m.session_id = s.id) "
                "OR ended_at < started_at "
                "OR output_tokens != (SELECT sum(token_count) FROM messages m "
                "                     WHERE m.session_id = s.id AND role = 'assistant') "
                "OR input_tokens != (SELECT sum(token_count) FROM messages m "
                "                    WHERE m.session_id = s.id AND role != 'assistant')"
            ).fetchone()[0]
            assert mismatched == 0
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
            assert conn.execute("SELECT seq FROM sqlite_sequence").fetchone()[0] == info["messages"]
            big = conn.execute("SELECT count(*) FROM messages WHERE length(content) > 4096")
            assert big.fetchone()[0] > 0  # rows with overflow pages
            corpus = Corpus(7)
            found = sum(
                conn.execute("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH ?",
                             (f'"{term}"',)).fetchone()[0] > 0
                for term in corpus.search_terms(20)
            )  # fmt: skip
            assert found >= 15
            found = sum(
                conn.execute(
                    "SELECT count(*) FROM messages_fts_trigram WHERE messages_fts_trigram MATCH ?",
                    (f'"{term}"',),
                ).fetchone()[0] > 0
                for term in corpus.trigram_terms(20)
            )
            assert found >= 15
    finally:
        conn.close()


@pytest.mark.parametrize("schema", ["minimal", "hermes"])
def test_triggers_keep_fts_in_sync_after_build(built, tmp_path, schema):
    path = tmp_path / "copy.db"
    copy_template(built[schema][0], path)
    fts_tables = get_schema(schema).fts_tables
    conn = connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        if schema == "hermes":
            sid = conn.execute("SELECT id FROM sessions LIMIT 1").fetchone()[0]
            conn.execute(
                "INSERT INTO messages(session_id, role, content, tool_calls, tool_name, "
                "timestamp, token_count) VALUES (?, 'user', 'zzcanaryword here', NULL, NULL, 1, 2)",
                (sid,),
            )
        else:
            conn.execute(
                "INSERT INTO messages(session_id, role, content, timestamp) "
                "VALUES ('s', 'user', 'zzcanaryword here', 1)"
            )
        new_id = conn.execute("SELECT max(id) FROM messages").fetchone()[0]

        def hits(term: str) -> list[list[int]]:
            return [
                [r[0] for r in conn.execute(
                    f"SELECT rowid FROM {t} WHERE {t} MATCH ?", (f'"{term}"',))]
                for t in fts_tables
            ]  # fmt: skip

        assert hits("zzcanaryword") == [[new_id]] * len(fts_tables)
        conn.execute("UPDATE messages SET content = 'qqreplaced text' WHERE id = ?", (new_id,))
        assert hits("zzcanaryword") == [[]] * len(fts_tables)
        assert hits("qqreplaced") == [[new_id]] * len(fts_tables)
        old_id = conn.execute("SELECT min(id) FROM messages").fetchone()[0]
        conn.execute("DELETE FROM messages WHERE id IN (?, ?)", (new_id, old_id))
        assert hits("qqreplaced") == [[]] * len(fts_tables)
        for table in fts_tables:
            fts_in_sync(conn, table)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def test_build_is_deterministic(tmp_path):
    def build(name: str, seed: int) -> str:
        path = tmp_path / name
        build_database(path, schema="minimal", pages=200, seed=seed)
        return content_checksum(path)

    first = build("a.db", 11)
    assert build("b.db", 11) == first
    assert build("c.db", 12) != first


def test_build_refuses_existing_file(tmp_path):
    path = tmp_path / "x.db"
    path.write_bytes(b"")
    with pytest.raises(FileExistsError):
        build_database(path, schema="minimal", pages=50)
    assert path.read_bytes() == b""


def test_build_other_page_size(tmp_path):
    path = tmp_path / "ps.db"
    info = build_database(path, schema="minimal", pages=64, page_size=16384)
    conn = connect(path)
    try:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == 16384
        assert conn.execute("PRAGMA page_count").fetchone()[0] == info["pages"] >= 64
    finally:
        conn.close()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pages": 7},
        {"pages": 4_000_001},
        {"pages": True},
        {"pages": 100.0},
        {"page_size": 1000},
        {"page_size": 256},
        {"page_size": 131072},
        {"schema": "nope"},
        {"seed": "1"},
    ],
)
def test_invalid_arguments_raise_value_error(tmp_path, kwargs):
    args = {"schema": "minimal", "pages": 100, "page_size": 4096, "seed": 0, **kwargs}
    with pytest.raises(ValueError):
        build_database(tmp_path / "bad.db", **args)
    with pytest.raises(ValueError):
        get_template(cache_dir=tmp_path / "cache", **args)
    assert not (tmp_path / "bad.db").exists()


# -- cache ---------------------------------------------------------------------


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("WALSTRESS_CACHE_DIR", str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("WALSTRESS_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "walstress"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "walstress"


def test_template_key():
    key = template_key("hermes", 65536, 4096, 0, "3.40.1")
    assert key.startswith("hermes-p65536-ps4096-s0-sqlite3.40.1")


def test_get_template_caches_and_copies(tmp_path):
    cache = tmp_path / "cache"
    args = {"schema": "minimal", "pages": 120, "page_size": 4096, "seed": 3, "cache_dir": cache}
    path, built_now = get_template(**args)
    assert built_now and path.parent == cache / "templates"
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["path"] == str(path) and info["pages"] >= 120
    again, built_again = get_template(**args)
    assert (again, built_again) == (path, False)
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.endswith(".lock")) == [
        path.name,
        path.with_suffix(".json").name,
    ]
    dest = tmp_path / "run" / "db.sqlite"
    dest.parent.mkdir()
    copy_template(path, dest)
    assert dest.read_bytes() == path.read_bytes()
    with pytest.raises(FileExistsError):
        copy_template(path, dest)
    dest2 = tmp_path / "run" / "db2.sqlite"
    Path(f"{dest2}-wal").write_bytes(b"stale")
    with pytest.raises(FileExistsError):
        copy_template(path, dest2)


def test_get_template_rebuilds_a_damaged_cache_entry(tmp_path):
    args = {"schema": "minimal", "pages": 60, "page_size": 4096, "seed": 0, "cache_dir": tmp_path}
    path, _ = get_template(**args)
    with open(path, "ab") as f:  # a truncated or extended file is not reused
        f.write(b"x")
    again, built_now = get_template(**args)
    assert again == path and built_now
    fresh = tmp_path / "fresh.db"
    build_database(fresh, schema="minimal", pages=60, page_size=4096, seed=0)
    assert content_checksum(path) == content_checksum(fresh)


def _get_template_in_child(cache_dir: str, barrier, results) -> None:
    barrier.wait()
    path, built_now = get_template(schema="hermes", pages=1500, page_size=4096, seed=5,
                                   cache_dir=cache_dir)  # fmt: skip
    results.put((str(path), built_now, os.path.getsize(path)))


def test_concurrent_get_template_builds_once(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_get_template_in_child, args=(str(tmp_path), barrier, results))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    got = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(built for _, built, _ in got) == [False, True]
    assert got[0][0] == got[1][0] and got[0][2] == got[1][2]
    path = Path(got[0][0])
    conn = connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA page_count").fetchone()[0] >= 1500
    finally:
        conn.close()
    assert not list(path.parent.glob(".*tmp*"))


def test_the_corpus_does_not_load_a_second_sqlite_library(tmp_path):
    # an apsw worker writes with the corpus: loading it (pools from the cache included) must not bring in the
    # stdlib sqlite3, whose libsqlite3 next to apsw's would be the two-libraries hazard itself
    code = ("import sys\n"
            "from walstress.database import Corpus\n"
            "Corpus(1).message('s', 1.0)\n"
            "print(sorted(m for m in ('sqlite3', '_sqlite3') if m in sys.modules))\n")
    for _ in range(2):   # the first builds the pools' cache, the second loads it
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "WALSTRESS_CACHE_DIR": str(tmp_path)})
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "[]"
    assert list(tmp_path.glob("corpus-pools-*.pickle"))
