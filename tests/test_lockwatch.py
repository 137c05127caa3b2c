"""The lock watch against plain Python programs that are not walstress workers.

Each program is a real process with real SQLite connections; ``walstress
watch PID`` attaches to it from outside, as a user would, and its JSON
output is read back. The programs say (on stdout) when they did the thing
the watch should see, so the tests can tell how long the watch took.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from walstress.lockwatch import (
    SHARED_FIRST,
    HeldLock,
    available,
    lock_names,
    mapped_sqlite_libraries,
    read_proc_locks,
    sqlite_library,
)

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))

PROC_LOCKS_TEXT = """\
1: POSIX  ADVISORY  READ 4242 fe:00:2146538 128 128
2: POSIX  ADVISORY  READ 4242 fe:00:2146355 1073741826 1073742335
2: -> POSIX  ADVISORY  WRITE 4243 fe:00:2146355 1073741826 1073742335
3: OFDLCK ADVISORY  READ -1 00:2d:77 0 EOF
4: FLOCK  ADVISORY  WRITE 17 00:19:1 0 EOF
5: POSIX  ADVISORY  WRITE 4244 103:02:99 1073741824 1073741824
"""


def test_proc_locks_are_read_by_process_and_file():
    held = read_proc_locks(PROC_LOCKS_TEXT)
    assert held[(4242, (0xfe, 0, 2146538))] == [HeldLock("READ", 128, 128)]
    assert held[(4242, (0xfe, 0, 2146355))] == [HeldLock("READ", SHARED_FIRST, SHARED_FIRST + 509)]
    assert held[(4244, (0x103, 2, 99))] == [HeldLock("WRITE", 1073741824, 1073741824)]
    # a waiter holds nothing; OFD and flock locks are not SQLite's unix VFS locks
    assert not any(pid in (4243, -1, 17) for pid, _ in held)


def test_locks_get_sqlite_names():
    shared = HeldLock("READ", SHARED_FIRST, SHARED_FIRST + 509)
    exclusive = HeldLock("WRITE", SHARED_FIRST, SHARED_FIRST + 509)
    assert lock_names([shared], shm=False) == ["SHARED(r)"]
    assert lock_names([exclusive, HeldLock("WRITE", 1073741825, 1073741825)], shm=False) == \
        ["RESERVED(w)", "EXCLUSIVE(w)"]
    assert lock_names([HeldLock("READ", 128, 128), HeldLock("WRITE", 120, 120), HeldLock("READ", 124, 124)],
                      shm=True) == ["WRITE(w)", "READ1(r)", "DMS(r)"]


def test_sqlite_libraries_are_found_by_their_contents():
    import sqlite3  # noqa: F401  (maps the system library into this process)

    libraries = mapped_sqlite_libraries(os.getpid())
    assert len(libraries) >= 1
    assert all(len(source) > 20 and source[:4].isdigit() for source in libraries.values())
    with open("/proc/self/maps") as handle:
        libc = next(line.split()[-1] for line in handle if "/libc.so" in line or "/libc-" in line)
    assert sqlite_library(libc) is None
    assert sqlite_library(str(Path(__file__))) is None


# ------------------------------------------------------------------ programs
def program(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(f"""\
        import os, sqlite3, sys, threading, time
        DB = {str(tmp_path / (name + '.db'))!r}
        def say(what):
            print(what, time.time(), flush=True)
        conn = sqlite3.connect(DB, isolation_level=None, timeout=5)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS t(x)")
        conn.execute("INSERT INTO t VALUES (0)")
        say("ready")
    """) + textwrap.dedent(body))
    return path


def watch_program(path: Path, *, seconds: float) -> tuple[list[dict], dict[str, float], int, str]:
    """Start the program, attach ``walstress watch --json`` to it; (records, the program's "say" times,
    the watch's exit code, its stderr)."""
    app = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        said: dict[str, float] = {}
        first = app.stdout.readline().split()
        said[first[0]] = float(first[1])
        watch = subprocess.run([sys.executable, "-m", "walstress", "watch", str(app.pid), "--json",
                                "--duration", f"{seconds}s"], capture_output=True, text=True, timeout=seconds + 60)
    finally:
        app.kill()
        out, _ = app.communicate(timeout=30)
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2:
            said[parts[0]] = float(parts[1])
    records = [json.loads(line) for line in watch.stdout.splitlines() if line.startswith("{")]
    return records, said, watch.returncode, watch.stderr


def of(records: list[dict], kind: str) -> list[dict]:
    return [r for r in records if r.get("type") == kind]


def test_watch_reports_a_plain_program_that_breaks_its_own_locks_within_a_second(tmp_path):
    path = program(tmp_path, "breaker", """
        time.sleep(1.5)
        with open(DB, "rb") as handle:   # close() drops every POSIX lock this process holds on DB
            handle.read(100)
        say("broke")
        for i in range(40):
            conn.execute("INSERT INTO t VALUES (?)", (i,))
            time.sleep(0.1)
    """)
    records, said, code, err = watch_program(path, seconds=4)
    assert code == 1, err
    (lost,) = of(records, "lock_lost")
    assert lost["which"] == "database" and lost["file"].endswith("breaker.db")
    assert lost["still_held"] == ["DMS(r)"]
    assert lost["t"] >= said["ready"]
    assert 0 <= lost["seen_t"] - said["broke"] < 1.0, (lost, said)
    # before the break it held SHARED on the database and the DMS lock on the -shm
    assert of(records, "locks")[0]["held"][lost["worker"]] == {"breaker.db": ["SHARED(r)"],
                                                                 "breaker.db-shm": ["DMS(r)"]}
    (stats,) = of(records, "lock_watch")
    assert stats["samples"] > 40 and stats["events"]["lock_lost"] == 1


def test_watch_is_silent_on_a_healthy_program_with_busy_connections(tmp_path):
    path = program(tmp_path, "healthy", """
        def churn():
            end = time.time() + 6
            while time.time() < end:
                c = sqlite3.connect(DB, isolation_level=None, timeout=5)
                c.execute("SELECT count(*) FROM t").fetchone()
                c.execute("INSERT INTO t VALUES (1)")
                c.close()
        threads = [threading.Thread(target=churn) for _ in range(3)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            conn.execute("INSERT INTO t VALUES (2)")
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            time.sleep(0.01)
    """)
    records, _, code, err = watch_program(path, seconds=3)
    assert code == 0, [r for r in records if r["type"] in ("lock_lost", "deleted_open", "two_libraries")]
    assert not of(records, "lock_lost") and not of(records, "deleted_open")
    assert len(of(records, "locks")) >= 2
    (libraries,) = of(records, "sqlite_libraries")
    assert len(libraries["libraries"]) == 1


@pytest.mark.parametrize("replaced", [False, True], ids=["unlinked", "unlinked-and-made-again"])
def test_watch_sees_a_deleted_wal_still_in_use(tmp_path, replaced):
    # made again: the name leads to a new file (as when another connection creates a -wal), while the
    # process still writes to the old one
    path = program(tmp_path, "unlinker", f"""
        time.sleep(0.5)
        os.unlink(DB + "-wal")
        if {replaced}:
            open(DB + "-wal", "wb").close()
        say("unlinked")
        for i in range(40):
            conn.execute("INSERT INTO t VALUES (?)", (i,))
            time.sleep(0.1)
    """)
    records, said, code, _ = watch_program(path, seconds=2.5)
    assert code == 1
    deleted = of(records, "deleted_open")
    assert [d["file"].rsplit("/", 1)[-1] for d in deleted] == ["unlinker.db-wal"]
    assert deleted[0]["t"] - said["unlinked"] < 1.0


def test_watch_sees_two_sqlite_libraries_in_one_process(tmp_path):
    pytest.importorskip("apsw")
    path = program(tmp_path, "twolibs", """
        import apsw
        other = apsw.Connection(DB)
        other.execute("SELECT count(*) FROM t").fetchall()
        say("both")
        time.sleep(30)
    """)
    records, _, code, _ = watch_program(path, seconds=2)
    assert code == 1
    (event,) = of(records, "two_libraries")
    assert len(event["libraries"]) == 2
    assert any("apsw" in p for p in event["libraries"])


def test_watch_of_a_missing_process_is_a_clear_error():
    proc = subprocess.run([sys.executable, "-m", "walstress", "watch", "999999999"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "no process with pid 999999999" in proc.stderr and "Traceback" not in proc.stderr


def test_watch_human_output_names_the_loss(tmp_path):
    path = program(tmp_path, "human", """
        with open(DB, "rb") as handle:
            handle.read(100)
        time.sleep(30)
    """)
    app = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        app.stdout.readline()
        started = time.time()
        watch = subprocess.run([sys.executable, "-m", "walstress", "watch", str(app.pid), "--duration", "1.5s"],
                               capture_output=True, text=True, timeout=60)
    finally:
        app.kill()
        app.wait(timeout=30)
    assert watch.returncode == 1
    lines = watch.stdout.splitlines()
    assert lines[0].startswith("watching ") and "read-only" in lines[0]
    assert any("LOCK LOST" in line and "human.db" in line and "no POSIX lock on the database file" in line
               for line in lines)
    assert lines[-1].startswith("watched ") and "1 lock(s) lost" in lines[-1]
    assert time.time() - started < 30


def test_watch_sees_one_database_used_with_two_wals_through_a_hard_link(tmp_path):
    """Two processes, one database file under two names: SQLite names the -wal and -shm after the
    name it was given, so each process has its own WAL index."""
    path = program(tmp_path, "linked", """
        import subprocess
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the table in the file, for the other name too
        os.link(DB, DB + ".alias")
        other = subprocess.Popen([sys.executable, "-c", "import sqlite3, time; "
                                  f"c = sqlite3.connect({DB + '.alias'!r}); "
                                  "c.execute('SELECT count(*) FROM t').fetchall(); time.sleep(30)"])
        say("linked")
        try:
            time.sleep(30)
        finally:
            other.kill()
    """)
    app = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        app.stdout.readline()
        app.stdout.readline()
        watch = subprocess.run([sys.executable, "-m", "walstress", "watch", str(app.pid), "--children", "--json",
                                "--duration", "2.5s"], capture_output=True, text=True, timeout=60)
    finally:
        app.terminate()
        app.wait(timeout=30)
    records = [json.loads(line) for line in watch.stdout.splitlines() if line.startswith("{")]
    (split,) = of(records, "split_wal")
    assert sorted(Path(p).name for p in split["shm_files"]) == ["linked.db-shm", "linked.db.alias-shm"]
    assert watch.returncode == 1 and not of(records, "lock_lost")


def test_a_users_own_python_worker_is_watched_like_a_built_in_one(tmp_path, cache_dir):
    """Your code, opening its own connection with the stdlib and breaking its locks with a plain
    open()/close() of the database file: the run's lock watch names your worker."""
    from walstress import run

    (tmp_path / "mine.py").write_text(textwrap.dedent("""\
        import sqlite3, time

        def work(ctx):
            conn = sqlite3.connect(ctx.db_path, isolation_level=None, timeout=5)
            conn.execute("SELECT count(*) FROM messages").fetchone()
            with open(ctx.db_path, "rb") as handle:   # a config check, a checksum, a backup: any close()
                handle.read(100)
            n = 0
            while not ctx.stop.is_set():
                conn.execute("UPDATE messages SET content = content WHERE id = ?", (1 + n % 50,))
                n += 1
                time.sleep(0.01)
            conn.close()
    """))
    scenario = {"name": "mine", "duration": "2s", "expect": "any",
                "database": {"schema": "minimal", "pages": 300},
                "workers": [{"role": "writer", "count": 1},
                            {"role": "python", "entry": str(tmp_path / "mine.py") + ":work",
                             "connections": "own", "count": 1}]}
    res = run(scenario, tmp_path / "out", cache_dir=cache_dir).runs[0]
    lost = res["lock_watch"]["lock_lost"]
    assert [e["worker"] for e in lost] == ["python-0"], res["lock_watch"]
    assert lost[0]["which"] == "database"
