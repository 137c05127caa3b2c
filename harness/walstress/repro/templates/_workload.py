# The bug report's write pattern: writers that checkpoint every few commits
# on their own connection, and openers that open a connection, read, now
# and then write, and close it (the last close checkpoints and deletes the
# -wal).
import sqlite3
import time

from walstress.repro.templates.common import BUSY_TIMEOUT_S, insert  # repro: drop

CHECKPOINT_MODE = "TRUNCATE"  # repro: param  the writers' checkpoint mode
CHECKPOINT_EVERY = 50         # repro: param  a writer checkpoints every N commits (0: never)
OPENER_PAUSE_S = 0.005        # repro: param  pause between two opener visits
OPENER_WRITES = 0.2           # repro: param  share of opener visits that write


def connect(db):
    return sqlite3.connect(db, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)


def write_loop(db, ledger, rng, stop_at):
    conn = connect(db)
    commits = 0
    while time.time() < stop_at:
        if insert(conn, ledger, rng):
            commits += 1
            if CHECKPOINT_EVERY and commits % CHECKPOINT_EVERY == 0:
                conn.execute(f"PRAGMA wal_checkpoint({CHECKPOINT_MODE})").fetchall()
    conn.close()


def opener(db, ledger, rng, stop_at):
    while time.time() < stop_at:
        conn = connect(db)
        conn.execute("SELECT count(*) FROM messages WHERE session = ?", (f"s{rng.randint(1, 50)}",)).fetchall()
        if rng.random() < OPENER_WRITES:
            insert(conn, ledger, rng)
        conn.close()
        time.sleep(OPENER_PAUSE_S)
