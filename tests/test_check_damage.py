"""`walstress check` on damaged files that nobody made by hand: a damage corpus drawn by Hypothesis.

A small healthy database (a table with an index, rows long enough for
overflow chains, an FTS5 table, a freelist) is damaged in the ways
damaged files come to us: bytes flipped in the header, in b-tree page
headers, cell pointers, overflow pages, freelist trunks and the schema;
invalid UTF-8 in ``sqlite_schema.sql``; truncated or grown files, a page
count that lies, zeroed pages, a -wal from another database or with its
salt changed. For every example ``check_database`` answers healthy or
damaged (never "could not look": the file is readable), without raising,
in bounded time, and its verdict agrees with SQLite's own integrity_check
plus FTS5's on the same bytes. The default suite runs a fast share;
``nox -s damage`` runs 2,000 examples and more.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from walstress.checks.diagnose import DAMAGED, HEALTHY, check_database, format_check

PAGE = 1024
EXAMPLES = int(os.environ.get("WALSTRESS_DAMAGE_EXAMPLES", "40"))
TIME_BOUND_S = 30.0
SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "harness" / "walstress" / "schema" /
                     "check.schema.json").read_text())


def _build(path: Path, *, wal: bool = False, seed: int = 0) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA page_size = {PAGE}")
    conn.execute("PRAGMA journal_mode = " + ("WAL" if wal else "DELETE"))
    conn.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, title TEXT, body TEXT)")
    conn.execute("CREATE INDEX notes_title ON notes(title)")
    conn.execute("CREATE VIRTUAL TABLE notes_fts USING fts5(title, body)")
    conn.execute("BEGIN")
    for i in range(120):
        body = f"note {i + seed} " + "lorem ipsum dolor " * (3 if i % 7 else 150)   # every 7th overflows
        conn.execute("INSERT INTO notes VALUES (?, ?, ?)", (i, f"title {i + seed:04d}", body))
        conn.execute("INSERT INTO notes_fts VALUES (?, ?)", (f"title {i}", body))
    conn.execute("COMMIT")
    conn.execute("DELETE FROM notes WHERE id % 5 = 0")   # a freelist
    if not wal:
        conn.close()
        return
    # frames in the -wal: copy the files while the connection is open (closing it checkpoints and
    # deletes the -wal), then put the copies in place
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("UPDATE notes SET title = title || ' (edited)' WHERE id < 20")
    for suffix in ("", "-wal"):
        shutil.copyfile(f"{path}{suffix}", f"{path}.keep{suffix}")
    conn.close()
    for suffix in ("", "-wal"):
        os.replace(f"{path}.keep{suffix}", f"{path}{suffix}")


@pytest.fixture(scope="module")
def healthy(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("damage-corpus")
    db, wal_db, other = folder / "healthy.db", folder / "wal.db", folder / "other.db"
    _build(db)
    _build(wal_db, wal=True)
    _build(other, wal=True, seed=1000)
    conn = sqlite3.connect(db)
    kinds: dict[str, list[int]] = {}
    for pageno, pagetype in conn.execute("SELECT pageno, pagetype FROM dbstat"):
        kinds.setdefault(pagetype, []).append(pageno)
    conn.close()
    raw = db.read_bytes()
    trunk = int.from_bytes(raw[32:36], "big")
    kinds["freelist"] = [trunk] if trunk else []
    kinds["schema"] = [1]
    assert kinds.get("overflow") and kinds["freelist"] and kinds.get("internal"), kinds
    return {"db": db.read_bytes(), "wal_db": wal_db.read_bytes(), "wal": Path(f"{wal_db}-wal").read_bytes(),
            "other_wal": Path(f"{other}-wal").read_bytes(), "kinds": kinds}


# ------------------------------------------------------------------ damage
def _flip(data: bytearray, offset: int, value: int) -> None:
    if offset < len(data):
        data[offset] = value if data[offset] != value else value ^ 0xFF


@st.composite
def damage(draw, healthy: dict) -> tuple[str, bytes, bytes | None]:
    """(what was done, the database's bytes, the -wal's bytes or None)."""
    kind = draw(st.sampled_from(["header", "page-header", "cell-pointer", "overflow", "freelist", "schema-bytes",
                                 "schema-utf8", "truncate", "grow", "page-count", "zero-page", "wal-salt",
                                 "wal-other", "wal-frame", "many"]))
    wal_kinds = ("wal-salt", "wal-other", "wal-frame")
    data = bytearray(healthy["wal_db"] if kind in wal_kinds else healthy["db"])
    wal = bytearray(healthy["wal"]) if kind in wal_kinds else None
    pages = len(data) // PAGE
    value = draw(st.integers(0, 255))
    pick = lambda kinds: draw(st.sampled_from(kinds or [2]))   # noqa: E731
    if kind == "header":
        _flip(data, draw(st.integers(0, 99)), value)
    elif kind in ("page-header", "cell-pointer"):
        page = pick(healthy["kinds"].get("leaf", []) + healthy["kinds"].get("internal", []))
        start = (page - 1) * PAGE
        _flip(data, start + (draw(st.integers(0, 11)) if kind == "page-header" else draw(st.integers(8, 60))), value)
    elif kind in ("overflow", "freelist"):
        page = pick(healthy["kinds"].get(kind, []))
        _flip(data, (page - 1) * PAGE + draw(st.integers(0, 15)), value)
    elif kind == "schema-bytes":
        _flip(data, draw(st.integers(100, PAGE - 1)), value)
    elif kind == "schema-utf8":   # a byte of a name or of the SQL text becomes invalid UTF-8
        spots = [i for i in range(PAGE) if data[i:i + 6] in (b"CREATE", b"notes_")]
        at = draw(st.sampled_from(spots)) + draw(st.integers(0, 12))
        data[at] = draw(st.sampled_from([0xF6, 0xFF, 0xC3, 0x80, 0xED]))
    elif kind == "truncate":
        del data[draw(st.integers(0, len(data) - 1)):]
    elif kind == "grow":
        data.extend(draw(st.binary(min_size=1, max_size=3 * PAGE)))
    elif kind == "page-count":
        data[28:32] = draw(st.integers(0, 2**32 - 1)).to_bytes(4, "big")
    elif kind == "zero-page":
        page = draw(st.integers(1, pages))
        data[(page - 1) * PAGE:page * PAGE] = bytes(PAGE)
    elif kind == "wal-salt":
        assert wal is not None
        _flip(wal, draw(st.integers(16, 23)), value)
    elif kind == "wal-other":
        wal = bytearray(healthy["other_wal"])
    elif kind == "wal-frame":
        assert wal is not None
        _flip(wal, draw(st.integers(32, len(wal) - 1)), value)
    else:   # several random bytes anywhere
        for _ in range(draw(st.integers(2, 40))):
            _flip(data, draw(st.integers(0, len(data) - 1)), draw(st.integers(0, 255)))
    return kind, bytes(data), bytes(wal) if wal is not None else None


def sqlite_says_healthy(db: Path) -> bool:
    """SQLite's own answer on a copy: integrity_check "ok" and every FTS5 integrity-check passes."""
    folder = db.parent / "oracle"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for suffix in ("", "-wal"):
        if Path(f"{db}{suffix}").exists():   # holes stay holes (the 4 GiB sparse file)
            subprocess.run(["cp", "--sparse=always", f"{db}{suffix}", str(folder / f"db{suffix}")], check=True)
    conn = None
    try:
        conn = sqlite3.connect(folder / "db", isolation_level=None)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        conn.text_factory = bytes
        if [r[0] for r in conn.execute("PRAGMA integrity_check")] != [b"ok"]:
            return False
        names = [r[0].decode("utf-8", "replace") for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL TABLE%fts5%'")]
        for name in names:
            q = '"' + name.replace('"', '""') + '"'
            conn.execute(f"INSERT INTO {q}({q}) VALUES ('integrity-check')")
        return True
    except (sqlite3.Error, ValueError):
        return False
    finally:
        if conn is not None:
            conn.close()
        shutil.rmtree(folder, ignore_errors=True)


def _write(folder: Path, data: bytes, wal: bytes | None) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    db = folder / "user.db"
    db.write_bytes(data)
    if wal is not None:
        Path(f"{db}-wal").write_bytes(wal)
    return db


def test_the_corpus_starts_healthy(healthy, tmp_path):
    for data, wal in ((healthy["db"], None), (healthy["wal_db"], healthy["wal"])):
        db = _write(tmp_path / "h", data, wal)
        assert sqlite_says_healthy(db)
        assert check_database(db)["verdict"] == HEALTHY


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_damage_gets_a_diagnosis_that_agrees_with_sqlite(healthy, tmp_path, data):
    kind, raw, wal = data.draw(damage(healthy))
    db = _write(tmp_path / "case", raw, wal)
    started = time.monotonic()
    result = check_database(db)
    elapsed = time.monotonic() - started
    assert result["verdict"] in (HEALTHY, DAMAGED), (kind, result["reason"])
    assert elapsed < TIME_BOUND_S, (kind, elapsed)
    jsonschema.validate(json.loads(json.dumps(result)), SCHEMA)
    text = format_check(result)
    assert text.splitlines()[0].startswith(result["verdict"].upper())
    expected = HEALTHY if sqlite_says_healthy(db) else DAMAGED
    event(f"{kind}: {expected}")   # --hypothesis-show-statistics: the damage drawn, and SQLite's answer
    assert result["verdict"] == expected, (kind, result["reason"], result.get("integrity"))


# ------------------------------------------------------------------ the two reports, end to end
def _cli(db: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "walstress", "check", str(db), *extra], capture_output=True,
                          text=True, timeout=120)


def test_invalid_utf8_in_the_schema_is_a_diagnosis_not_a_traceback(healthy, tmp_path):
    data = bytearray(healthy["db"])
    at = data.index(b"notes_title")
    data[at + 2] = 0xF6   # the index's name: SQLite's error message quotes it
    db = _write(tmp_path / "u", bytes(data), None)
    result = _cli(db)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith("DAMAGED") and "Traceback" not in result.stderr + result.stdout
    # Python 3.10's sqlite3 drops a message it cannot decode; from 3.11 it reaches the diagnosis
    said = "malformed database schema" if sys.version_info >= (3, 11) else "message was not valid UTF-8"
    assert said in result.stdout and "UnicodeDecodeError" not in result.stdout


def test_a_database_whose_header_is_gone_is_damaged_not_unreadable(healthy, tmp_path):
    data = bytearray(healthy["db"])
    data[:100] = b"\x00" * 100
    db = _write(tmp_path / "h", bytes(data), None)
    result = _cli(db, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    out = json.loads(result.stdout)
    jsonschema.validate(out, SCHEMA)
    assert out["verdict"] == DAMAGED and out["header"]["state"] == "missing"
    assert out["header"]["guessed_page_size"] == PAGE, out["header"]
    text = _cli(db).stdout
    assert "header string" in text and str(PAGE) in text


def test_what_could_not_be_looked_at_is_exit_2(tmp_path):
    absent = _cli(tmp_path / "absent.db", "--json")
    assert absent.returncode == 2
    jsonschema.validate(json.loads(absent.stdout), SCHEMA)
    (tmp_path / "folder.db").mkdir()
    assert _cli(tmp_path / "folder.db").returncode == 2


def test_an_empty_file_is_what_sqlite_makes_of_it(tmp_path):
    db = tmp_path / "empty.db"
    db.write_bytes(b"")
    result = check_database(db)
    assert sqlite_says_healthy(db) and result["verdict"] == HEALTHY, result["reason"]
    assert "empty" in result["reason"]


def test_a_4_gib_sparse_file_is_checked_in_bounded_time(healthy, tmp_path):
    db = tmp_path / "sparse.db"
    db.write_bytes(healthy["db"])
    with open(db, "r+b") as handle:
        handle.truncate(4 * 2**30)
    started = time.monotonic()
    result = check_database(db)
    assert time.monotonic() - started < 60, "a sparse tail is not copied byte by byte"
    assert result["verdict"] == (HEALTHY if sqlite_says_healthy(db) else DAMAGED), result["reason"]
