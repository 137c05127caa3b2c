# The run around the mechanism: a small FTS5 database in WAL mode, worker
# processes started fresh (never forked with a connection open), a ledger
# of acknowledged commits kept outside the database, and the checks.
import argparse
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import zlib

PAGES = 2000               # repro: param  pages of the database each run starts from
SECONDS = 10.0             # repro: param  length of one run
RUNS = 5                   # repro: param  runs (each on a fresh copy of the database)
SEED = 1                   # repro: param  seed of the content and of every random choice
BUSY_TIMEOUT_S = 1.0       # repro: param  the connections' busy timeout
CHILDREN = [("writer", 2)]  # repro: param  worker processes: (role, count)

WORDS = ("wal checkpoint page frame reader writer index trigger message session tool call lock "
         "sync commit journal btree cell overflow freelist header schema vacuum").split()


def text(rng, low, high):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def build_database(path, pages, seed):
    """messages, with an FTS5 index kept in sync by triggers (FTS5 merges churn many pages)."""
    rng = random.Random(seed)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript("""
        PRAGMA journal_mode=WAL;
        CREATE TABLE messages(id INTEGER PRIMARY KEY, session TEXT NOT NULL, content TEXT);
        CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages', content_rowid='id');
        CREATE TRIGGER messages_ai AFTER INSERT ON messages BEGIN
            INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content); END;
        CREATE TRIGGER messages_ad AFTER DELETE ON messages BEGIN
            INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content); END;
    """)
    while conn.execute("PRAGMA page_count").fetchone()[0] < pages:
        conn.execute("BEGIN")
        for _ in range(200):
            conn.execute("INSERT INTO messages(session, content) VALUES (?, ?)",
                         (f"s{rng.randint(1, 50)}", text(rng, 5, 400)))
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def crc(content):
    return zlib.crc32(content.encode())


class Ledger:
    """One file per process: a line per acknowledged insert (id, checksum, when), written after COMMIT
    returned, with one write() that survives the death of the process."""

    def __init__(self, folder, name):
        self.fd = os.open(os.path.join(folder, f"{name}.ledger"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def acknowledged(self, row_id, content):
        os.write(self.fd, f"{row_id} {crc(content)} {time.monotonic_ns()}\n".encode())


def read_ledgers(folder):
    """row id -> (checksum, monotonic ns of its acknowledgement)."""
    expected = {}
    for name in os.listdir(folder):
        if name.endswith(".ledger"):
            with open(os.path.join(folder, name)) as handle:
                for line in handle:
                    if line.endswith("\n"):
                        row_id, checksum, when = line.split()
                        expected[int(row_id)] = (int(checksum), int(when))
    return expected


def insert(conn, ledger, rng):
    """BEGIN IMMEDIATE; one message; COMMIT; retried on busy like the bug report's code."""
    content = text(rng, 5, 300)
    for _ in range(15):
        try:
            conn.execute("BEGIN IMMEDIATE")
            row_id = conn.execute("INSERT INTO messages(session, content) VALUES (?, ?) RETURNING id",
                                  (f"s{rng.randint(1, 50)}", content)).fetchone()[0]
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if "locked" in str(exc) or "busy" in str(exc):
                time.sleep(rng.uniform(0.02, 0.15))
                continue
            raise
        ledger.acknowledged(row_id, content)
        return True
    return False


def check(db, ledger_folder, errors, may_lose=lambda row_id, acked_ns: False):
    """(damaged, reason): integrity_check, FTS5's own check, then every acknowledged row (but those
    ``may_lose`` allows)."""
    try:
        conn = sqlite3.connect(db, timeout=10)
        problems = [line for row in conn.execute("PRAGMA integrity_check(20)") for line in row[0].splitlines()
                    if not line.startswith("*** in database")]
        if problems != ["ok"]:
            return True, f"integrity_check: {problems[0] if problems else 'damaged'}"
        try:
            conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')")
        except sqlite3.DatabaseError as exc:
            return True, f"FTS5 integrity-check: {exc}"
        expected = read_ledgers(ledger_folder)
        found = {}
        ids = sorted(expected)
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            marks = ",".join("?" * len(part))
            for row_id, content in conn.execute(f"SELECT id, content FROM messages WHERE id IN ({marks})", part):
                found[row_id] = crc(content)
        missing = [i for i in ids if found.get(i) != expected[i][0]]
        lost = [i for i in missing if not may_lose(i, expected[i][1])]
        if lost:
            return True, f"{len(lost)} of {len(ids)} acknowledged rows lost (first ids {lost[:5]})"
        if missing:
            return False, (f"integrity ok; {len(missing)} of {len(ids)} acknowledged rows gone, all of them "
                           "allowed to be")
    except sqlite3.DatabaseError as exc:
        return True, f"the database cannot be read: {exc}"
    if errors:
        return True, f"SQLite reported corruption to a worker: {errors[0]}"
    return False, f"integrity ok, {len(expected)} acknowledged rows all present"


def watch_parent():
    """A worker ends when the process that started it is gone."""
    parent = os.getppid()

    def loop():
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(3)
    threading.Thread(target=loop, daemon=True).start()


def child_main(role, db, folder, name, seed, stop_at):
    watch_parent()
    rng = random.Random(f"{seed}:{name}")
    ledger = Ledger(folder, name)
    try:
        ROLES[role](db, ledger, rng, stop_at)
    except sqlite3.DatabaseError as exc:
        with open(os.path.join(folder, f"{name}.error"), "w") as handle:
            handle.write(str(exc))
        sys.exit(1)


def one_run(index, template, workdir):
    folder = os.path.join(workdir, f"run-{index}")
    os.makedirs(folder)
    db = os.path.join(folder, "test.db")
    shutil.copyfile(template, db)
    stop_at = time.time() + SECONDS
    children = []
    try:
        for role, count in CHILDREN:
            for n in range(count):
                name = f"{role}-{n}"
                children.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", role, db,
                                                  folder, name, str(SEED + index), str(stop_at)]))
        for child in children:
            child.wait(timeout=SECONDS + 60)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    errors = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".error"):
            with open(os.path.join(folder, name)) as handle:
                message = handle.read()
            if "malformed" in message or "not a database" in message or "corrupt" in message:
                errors.append(message)
    return check(db, folder, errors)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--child", nargs=6, metavar=("ROLE", "DB", "FOLDER", "NAME", "SEED", "STOP_AT"))
    args = parser.parse_args()
    if args.child:
        role, db, folder, name, seed, stop_at = args.child
        child_main(role, db, folder, name, int(seed), float(stop_at))
        return
    globals()["SECONDS"] = args.seconds
    print(f"SQLite {sqlite3.sqlite_version}; {args.runs} runs of {args.seconds:g} s; {describe()}")
    damaged = 0
    with tempfile.TemporaryDirectory(prefix="repro-") as workdir:
        template = os.path.join(workdir, "template.db")
        build_database(template, PAGES, SEED)
        for index in range(args.runs):
            bad, reason = one_run(index, template, workdir)
            damaged += bad
            print(f"run {index + 1}: {'DAMAGED' if bad else 'clean'}: {reason}", flush=True)
    if damaged:
        print(f"REPRODUCED {damaged}/{args.runs}")
        sys.exit(0)
    print(f"NOT REPRODUCED 0/{args.runs}")
    sys.exit(1)


ROLES = {}  # repro: drop


def describe():  # repro: drop
    return ""  # repro: drop
