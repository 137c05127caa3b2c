# The mechanism: SQLite's WAL-reset race (3.7.0 through 3.51.2; fixed in
# 3.51.3, backported to 3.50.7 and 3.44.6). A checkpoint copies the whole
# WAL; a second checkpoint starts at once and reads the WAL-index header;
# before it looks at the backfill count, a writer commits and restarts the
# WAL from its first frame. The second checkpoint then records the old
# frame count as backfilled, and a later checkpoint skips the new WAL's
# first frames: committed transactions are lost, and integrity_check may
# still say "ok". Memory-mapped I/O widens the window (the racing
# checkpoint unmaps a large mapping before it goes on).
#
# One process, three connections: a writer, a checkpointer that completes,
# a checkpointer that races in a second thread. A round: a canary write; a
# complete checkpoint; the race (a checkpoint against a canary write); a
# read through the racer's mapping; the recent canaries read back.
import argparse
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import zlib

DRIVER = "apsw"              # repro: param  "apsw" (a chosen SQLite) or "stdlib" (Python's sqlite3)
SQLITE_VERSION = "3.51.2"    # repro: param  the SQLite version asked for ("": whatever is loaded)
PAGES = 65536                # repro: param  pages of the database (a large mapping widens the window)
PAYLOAD_BYTES = (100, 16000)  # repro: param  bytes per row, from .. to (large rows span overflow pages)
MMAP_SIZE = 1 << 30          # repro: param  PRAGMA mmap_size of every connection
CHECKPOINT_MODE = "PASSIVE"  # repro: param  the mode of both checkpoints
ROUNDS = 300                 # repro: param  rounds per run at the most
SECONDS = 60.0               # repro: param  time per run at the most
RUNS = 5                     # repro: param  runs, each on a fresh copy of the database
SEED = 1                     # repro: param  seed of the content and the canaries

if DRIVER == "apsw":
    import apsw

    VERSION = apsw.sqlite_lib_version()
else:
    import sqlite3

    VERSION = sqlite3.sqlite_version


class Connection:
    """The few calls the race needs, on either binding."""

    def __init__(self, path):
        if DRIVER == "apsw":
            self.conn = apsw.Connection(path)
            self.conn.setbusytimeout(1000)
        else:
            self.conn = sqlite3.connect(path, timeout=1.0, isolation_level=None, check_same_thread=False)
        self.execute(f"PRAGMA mmap_size={MMAP_SIZE}")

    def execute(self, sql, params=()):
        return [tuple(row) for row in self.conn.execute(sql, params)]

    def close(self):
        self.conn.close()


def build(path):
    """Rows of random sizes until the file has PAGES pages; the number of rows."""
    rng = random.Random(SEED)
    conn = Connection(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
    rows = 0
    while conn.execute("PRAGMA page_count")[0][0] < PAGES:
        conn.execute("BEGIN")
        for _ in range(500):
            rows += 1
            conn.execute("INSERT INTO t VALUES (?, ?)", (rows, rng.randbytes(rng.randint(*PAYLOAD_BYTES))))
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return rows


def one_run(index, template, rows, workdir):
    folder = os.path.join(workdir, f"run-{index}")
    os.makedirs(folder)
    db = os.path.join(folder, "race.db")
    shutil.copyfile(template, db)
    rng = random.Random(f"{SEED}:{index}")
    writer, completer, racer = Connection(db), Connection(db), Connection(db)
    expected = {}  # row id -> crc32 of the payload a committed canary wrote

    def canary():  # a new payload of the same length: the row's pages are rewritten in place
        row_id = rng.randint(1, rows)
        size = writer.execute("SELECT length(payload) FROM t WHERE id = ?", (row_id,))[0][0]
        payload = rng.randbytes(size)
        writer.execute("UPDATE t SET payload = ? WHERE id = ?", (payload, row_id))
        expected.pop(row_id, None)
        expected[row_id] = zlib.crc32(payload)  # UPDATE returned: the commit is acknowledged

    go, done, quit_race = threading.Barrier(2), threading.Event(), threading.Event()

    def race():
        while True:
            try:
                go.wait()
            except threading.BrokenBarrierError:
                return
            if quit_race.is_set():
                return
            racer.execute(f"PRAGMA wal_checkpoint({CHECKPOINT_MODE})")
            done.set()

    thread = threading.Thread(target=race, daemon=True)
    thread.start()
    started, rounds, lost_in_round = time.monotonic(), 0, None
    try:
        while rounds < ROUNDS and time.monotonic() - started < SECONDS:
            rounds += 1
            canary()
            completer.execute(f"PRAGMA wal_checkpoint({CHECKPOINT_MODE})")
            done.clear()
            go.wait(timeout=30)
            canary()
            done.wait(timeout=60)
            racer.execute("SELECT count(*) FROM t")  # every page through the racer's mapping
            recent = list(expected)[-1000:]
            marks = ",".join("?" * len(recent))
            found = {row_id: zlib.crc32(payload) for row_id, payload in
                     completer.execute(f"SELECT id, payload FROM t WHERE id IN ({marks})", recent)}
            if any(found.get(i) != expected[i] for i in recent):
                lost_in_round = rounds
                break
    finally:
        quit_race.set()
        go.abort()
        thread.join(timeout=60)
        for conn in (writer, completer, racer):
            conn.close()
    check = Connection(db)  # after every connection closed: what a restarted application would read
    found = {row_id: zlib.crc32(payload) for row_id, payload in check.execute("SELECT id, payload FROM t")}
    integrity = check.execute("PRAGMA integrity_check(5)")[0][0]
    check.close()
    lost = [i for i in expected if found.get(i) != expected[i]]
    seconds = time.monotonic() - started
    if lost:
        return True, (f"{len(lost)} of {len(expected)} committed canaries lost after {rounds} rounds "
                      f"({seconds:.2f} s; first seen in round {lost_in_round}); integrity_check: {integrity}")
    return False, f"{len(expected)} canaries all present after {rounds} rounds ({seconds:.2f} s); integrity_check: {integrity}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=RUNS)
    args = parser.parse_args()
    print(f"SQLite {VERSION} ({DRIVER}); {args.runs} runs of up to {ROUNDS} rounds on {PAGES:,} pages")
    if SQLITE_VERSION and VERSION != SQLITE_VERSION:
        print(f"note: this was written for SQLite {SQLITE_VERSION}; "
              f"pip install 'apsw=={SQLITE_VERSION}.*' loads that one", file=sys.stderr)
    damaged = 0
    with tempfile.TemporaryDirectory(prefix="repro-race-") as workdir:
        template = os.path.join(workdir, "template.db")
        rows = build(template)
        for index in range(args.runs):
            bad, reason = one_run(index, template, rows, workdir)
            damaged += bad
            print(f"run {index + 1}: {'DAMAGED' if bad else 'clean'}: {reason}", flush=True)
    if damaged:
        print(f"REPRODUCED {damaged}/{args.runs}")
        sys.exit(0)
    print(f"NOT REPRODUCED 0/{args.runs}")
    sys.exit(1)


if __name__ == "__main__":
    main()
