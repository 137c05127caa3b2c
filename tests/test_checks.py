"""Tests of walstress.checks: file walk, integrity naming, read-only diagnosis."""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from walstress.checks.btree import (
    FREELIST,
    btree_roots,
    btree_roots_from_file,
    page_owners,
    read_header,
    walk_pages,
)
from walstress.checks.cli_check import main_check
from walstress.checks.diagnose import check_database, format_check
from walstress.checks.integrity import name_message, objects_in_message, run_integrity

PAGE_SIZE = 4096
WORDS = ("alpha beta gamma delta sqlite wal frame page tree lock checkpoint "
         "writer reader commit rollback index").split()


def build_db(path: Path, rows: int = 3000, *, wal: bool = True, delete_some: bool = False) -> Path:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE messages(id INTEGER PRIMARY KEY AUTOINCREMENT, "
                 "session_id TEXT, role TEXT, content TEXT, timestamp REAL)")
    conn.execute("CREATE INDEX idx_messages_session ON messages(session_id, timestamp)")
    conn.execute("CREATE VIRTUAL TABLE messages_fts USING fts5(content)")
    rnd = random.Random(7)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO messages(session_id, role, content, timestamp) VALUES (?, ?, ?, ?)",
        ((f"s{i % 41}", "user", " ".join(rnd.choice(WORDS) for _ in range(30))[:200], float(i))
         for i in range(rows)))
    # a few long rows, so that overflow chains exist
    conn.executemany("INSERT INTO messages(session_id, role, content, timestamp) "
                     "VALUES ('long', 'tool', ?, 0)", [("x" * 9000 + str(i),) for i in range(5)])
    conn.execute("INSERT INTO messages_fts(rowid, content) SELECT id, content FROM messages")
    conn.execute("COMMIT")
    if delete_some:
        conn.execute("DELETE FROM messages WHERE id % 3 = 0")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return build_db(tmp_path_factory.mktemp("tpl") / "state.db")


@pytest.fixture
def db(template, tmp_path) -> Path:
    dst = tmp_path / "state.db"
    shutil.copyfile(template, dst)
    return dst


def owned_pages(path: Path, name: str) -> list[int]:
    conn = sqlite3.connect(path)
    roots = btree_roots(conn)
    conn.close()
    owners = page_owners(path, roots)
    return sorted(p for p, owner in owners.items() if owner == name and p not in roots)


def smash(path: Path, page: int, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek((page - 1) * PAGE_SIZE + offset)
        f.write(data)


# -- btree ---------------------------------------------------------------

def test_header(db):
    h = read_header(db)
    assert h["page_size"] == PAGE_SIZE
    assert h["wal_mode"] is True
    assert h["text_encoding"] == "utf-8"
    assert h["page_count"] == db.stat().st_size // PAGE_SIZE


def test_roots_include_fts5_shadow_tables(db):
    conn = sqlite3.connect(db)
    roots = btree_roots(conn)
    conn.close()
    names = set(roots.values())
    assert roots[1] == "sqlite_schema"
    for suffix in ("data", "idx", "content", "docsize", "config"):
        assert f"messages_fts_{suffix}" in names
    assert {"messages", "idx_messages_session", "sqlite_sequence"} <= names
    assert btree_roots_from_file(db) == roots


@pytest.mark.parametrize("delete_some", [False, True])
def test_every_page_owned(tmp_path, delete_some):
    path = build_db(tmp_path / "x.db", rows=2000, delete_some=delete_some)
    conn = sqlite3.connect(path)
    roots = btree_roots(conn)
    dbstat = None
    try:
        dbstat = dict(conn.execute("SELECT pageno, name FROM dbstat"))
    except sqlite3.Error:
        pass
    conn.close()
    pmap = walk_pages(path, roots)
    header = read_header(path)
    assert pmap.problems == []
    assert pmap.unowned == []
    freelist = sum(1 for o in pmap.owners.values() if o == FREELIST)
    assert freelist == header["freelist_count"]
    assert (freelist > 0) == delete_some
    assert len(pmap.owners) == header["page_count"]
    assert pmap.counts()["messages"] > 5        # includes the overflow chains
    if dbstat is not None:                      # dbstat agrees page by page
        assert {p: o for p, o in pmap.owners.items() if o != FREELIST} == dbstat


def test_walk_survives_garbage(db, tmp_path):
    conn = sqlite3.connect(db)
    roots = btree_roots(conn)
    conn.close()
    rnd = random.Random(3)
    garbage = tmp_path / "garbage.db"
    data = bytearray(db.read_bytes())
    for _ in range(200):                         # shred interior and leaf pages alike
        pos = rnd.randrange(100, len(data) - 64)
        data[pos:pos + 64] = rnd.randbytes(64)
    garbage.write_bytes(bytes(data))
    pmap = walk_pages(garbage, roots)
    assert pmap.problems                         # found something, raised nothing
    assert walk_pages(tmp_path / "missing.db", roots).problems
    (tmp_path / "loop.db").write_bytes(db.read_bytes())
    # point the right child of a messages interior page at itself
    root = next(p for p, n in roots.items() if n == "messages")
    smash(tmp_path / "loop.db", root, 8, root.to_bytes(4, "big"))
    pmap = walk_pages(tmp_path / "loop.db", roots)
    assert any("2nd reference" in p for p in pmap.problems)


# -- naming --------------------------------------------------------------

ROOTS = {1: "sqlite_schema", 2: "messages", 7: "messages_fts_data",
         23: "messages_fts_trigram_data"}
OWNERS = {1: "sqlite_schema", 2: "messages", 7: "messages_fts_data",
          23: "messages_fts_trigram_data", 63857: "messages_fts_trigram_data",
          64517: "messages", 500: "(freelist)"}


@pytest.mark.parametrize("line, expected", [
    ("Tree 23 page 63857 cell 4: Rowid 1374389534729 out of order",
     "Tree 23 (messages_fts_trigram_data) page 63857 cell 4: Rowid 1374389534729 out of order"),
    ("Tree 7 page 7: btreeInitPage() returns error code 11",
     "Tree 7 (messages_fts_data) page 7: btreeInitPage() returns error code 11"),
    ("Tree 2 page 63857 cell 0: 2nd reference to page 64517",
     "Tree 2 (messages) page 63857 (owned by messages_fts_trigram_data) cell 0: "
     "2nd reference to page 64517"),
    ("On tree page 63857 cell 2: Rowid 1374389534729 out of order",
     "On tree page 63857 (owned by messages_fts_trigram_data) cell 2: "
     "Rowid 1374389534729 out of order"),
    ("2nd reference to page 64517", "2nd reference to page 64517 (owned by messages)"),
    ("Page 64517: never used", "Page 64517 (owned by messages): never used"),
    ("Page 99999: never used", "Page 99999: never used"),
    ("invalid page number 218103808", "invalid page number 218103808"),
    ("Tree 5 page 6: invalid page number 218103808",
     "Tree 5 page 6: invalid page number 218103808"),
    ("wrong # of entries in index idx_messages_session",
     "wrong # of entries in index idx_messages_session"),
    ("Freelist: 2nd reference to page 500", "Freelist: 2nd reference to page 500 (owned by (freelist))"),
])
def test_name_message(line, expected):
    named = name_message(line, ROOTS, OWNERS)
    assert named == expected
    assert name_message(named, ROOTS, OWNERS) == named      # idempotent


@pytest.mark.parametrize("line, objects", [
    ("Tree 23 (messages_fts_trigram_data) page 63857: x", ["messages_fts_trigram_data"]),
    ("row 5 missing from index idx_messages_session", ["idx_messages_session"]),
    ("wrong # of entries in index idx_messages_session", ["idx_messages_session"]),
    ("NULL value in messages.session_id", ["messages"]),
    ("non-unique entry in index sqlite_autoindex_sessions_1", ["sqlite_autoindex_sessions_1"]),
    ("On tree page 9 (owned by messages) cell 1: 2nd reference to page 10 (owned by (freelist))",
     ["messages"]),
    ("Page 91: btreeInitPage() returns error code 11", []),
])
def test_objects_in_message(line, objects):
    assert objects_in_message(line) == objects


# -- integrity -----------------------------------------------------------

def test_healthy(db):
    res = run_integrity(db)
    assert res.ok, res.to_dict()
    assert res.messages == res.named_messages == ["ok"]
    assert res.fts == {"messages_fts": "ok"}
    assert res.damaged_objects == [] and res.open_error is None
    json.dumps(res.to_dict())
    result = check_database(db)
    assert result["verdict"] == "healthy", result
    assert result["page_size"] == PAGE_SIZE and result["journal_mode"] == "wal"
    assert result["row_counts"]["messages"] == 3005
    assert format_check(result).startswith("HEALTHY")


@pytest.mark.parametrize("where", ["header", "cells"])
def test_corrupt_messages_page(db, where, capsys):
    pages = owned_pages(db, "messages")
    page = pages[len(pages) // 2]
    if where == "header":
        smash(db, page, 0, b"\xff" * 64)                  # page type byte garbage
    else:
        smash(db, page, 1500, bytes(range(256)) * 4)      # cell content garbage
    res = run_integrity(db)
    assert not res.ok
    assert "messages" in res.damaged_objects
    assert any("messages" in m and str(page) in m for m in res.named_messages)
    assert len(res.named_messages) == len(res.messages)
    result = check_database(db)
    assert result["verdict"] == "damaged"
    assert "messages" in result["reason"]
    report = format_check(result)
    assert report.startswith("DAMAGED") and "messages" in report
    # garbage, not zeros: the file alone does not tell the cause, and check says so
    assert result["cause"]["id"] == "unknown" and "cause: Cause unknown: the file alone" in report
    assert main_check(str(db), False) == 1
    assert main_check(str(db), True) == 1
    out = capsys.readouterr().out
    assert json.loads(out[out.index("\n{") + 1:])["verdict"] == "damaged"


def test_corrupt_fts_data_page(db):
    pages = owned_pages(db, "messages_fts_data")
    smash(db, pages[len(pages) // 2], 1500, bytes(range(256)) * 4)
    res = run_integrity(db)
    assert not res.ok
    assert res.fts["messages_fts"] != "ok" or res.messages != ["ok"]
    assert any(n.startswith("messages_fts") for n in res.damaged_objects)
    assert check_database(db)["verdict"] == "damaged"


def test_check_names_zero_filled_pages_as_the_cause(db):
    pages = owned_pages(db, "messages")
    page = pages[len(pages) // 2]
    smash(db, page, 0, bytes(PAGE_SIZE))
    result = check_database(db)
    assert result["verdict"] == "damaged"
    assert result["integrity"]["zero_pages"] == [page]
    assert result["cause"]["id"] == "zero_filled_pages"
    assert f"cause: 1 b-tree page(s) are all zeros (pages {page})" in format_check(result)


def test_corrupt_header_is_damaged_not_error(db):
    smash(db, 1, 16, b"\x00\x03")                          # page size 3
    result = check_database(db)
    assert result["verdict"] == "damaged"
    assert result["integrity"]["open_error"]


def test_a_readable_file_that_is_not_a_database_is_damaged(tmp_path):
    # exit 2 is for what cannot be looked at; this file can (the sqlite3 shell: "file is not a database", 1)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"hello, this is not a database\n" * 300)
    result = check_database(junk)
    assert result["verdict"] == "damaged"
    assert "'SQLite format 3' is gone" in result["reason"] and "nothing behind it looks like SQLite pages" in \
        result["reason"]
    assert result["header"]["state"] == "missing" and result["header"]["guessed_page_size"] is None
    assert main_check(str(junk), False) == 1
    res = run_integrity(junk)
    assert not res.ok and "not a database" in res.open_error
    assert check_database(tmp_path / "missing.db")["verdict"] == "error"
    assert not (tmp_path / "missing.db").exists()
    assert main_check(str(tmp_path / "missing.db"), True) == 2
    assert check_database(tmp_path)["verdict"] == "error"
    (tmp_path / "empty.db").write_bytes(b"")
    assert check_database(tmp_path / "empty.db")["verdict"] == "healthy"   # SQLite: an empty database


# -- read-only -----------------------------------------------------------

def hashes_in_child(paths: list[Path]) -> dict[str, str | None]:
    """sha256 of files, read by a child process so that closing the files
    does not drop this process's SQLite locks."""
    code = ("import hashlib, json, sys\n"
            "out = {}\n"
            "for p in json.loads(sys.argv[1]):\n"
            "    try:\n"
            "        out[p] = hashlib.sha256(open(p, 'rb').read()).hexdigest()\n"
            "    except FileNotFoundError:\n"
            "        out[p] = None\n"
            "print(json.dumps(out))\n")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps([str(p) for p in paths])],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def test_check_is_read_only_and_sees_wal(template, tmp_path):
    db = tmp_path / "live.db"
    shutil.copyfile(template, db)
    writer = sqlite3.connect(db, isolation_level=None)
    try:
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("BEGIN IMMEDIATE")
        writer.executemany(
            "INSERT INTO messages(session_id, role, content, timestamp) VALUES ('w', 'u', ?, 1)",
            [(f"only in the wal {i}",) for i in range(250)])
        writer.execute("COMMIT")
        files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
        assert files[1].stat().st_size > 0
        before = hashes_in_child(files)
        assert all(before.values())
        workdir = tmp_path / "work"
        result = check_database(db, workdir=workdir)
        after = hashes_in_child(files)
        assert after == before
        assert result["verdict"] == "healthy", result
        assert result["copied_wal"] is True and result["copy_stable"] is True
        assert result["row_counts"]["messages"] == 3005 + 250
        copy = Path(result["copy_dir"]) / db.name
        conn = sqlite3.connect(copy)
        n = conn.execute("SELECT count(*) FROM messages WHERE session_id = 'w'").fetchone()[0]
        conn.close()
        assert n == 250
        # the writer still works and its data is intact
        writer.execute("INSERT INTO messages(session_id, role, content, timestamp) "
                       "VALUES ('w', 'u', 'after', 2)")
        assert writer.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    finally:
        writer.close()
    # without workdir nothing is left behind
    result = check_database(db)
    assert result["copy_dir"] is None
