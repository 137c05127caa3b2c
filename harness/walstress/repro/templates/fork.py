# The mechanism: fork() while a connection is open. A thread in each writer
# process keeps a connection that has read the database (its WAL index
# mapped, a snapshot known), forks, and the child uses the inherited
# connection (or only closes it) before it exits. SQLite's documentation
# says a connection must not be carried across fork().
import os
import signal
import sqlite3
import threading
import time

from walstress.repro.templates._workload import CHECKPOINT_EVERY, CHECKPOINT_MODE, opener, write_loop  # repro: drop
from walstress.repro.templates.common import BUSY_TIMEOUT_S  # repro: drop

FORK_INTERVAL_S = 0.5     # repro: param  pause between two forks
CHILD_ACTION = "write"    # repro: param  the child "write"s, "read"s or only "close"s the inherited connection
HOLD_READ = False         # repro: param  the parent holds a read transaction open across the fork


def fork_loop(db, stop_at):
    conn = sqlite3.connect(db, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    while time.time() < stop_at:
        time.sleep(FORK_INTERVAL_S)
        try:
            conn.execute("SELECT count(*) FROM messages").fetchall()
            if HOLD_READ:
                conn.execute("BEGIN")
                conn.execute("SELECT max(id) FROM messages").fetchall()
        except sqlite3.Error:
            continue
        pid = os.fork()  # the hazard, on purpose
        if pid == 0:
            signal.alarm(2)  # a child stuck on an inherited mutex ends by itself
            try:
                if CHILD_ACTION == "write":
                    conn.execute("INSERT INTO messages(session, content) VALUES ('fork', 'written by a fork child')")
                elif CHILD_ACTION == "read":
                    conn.execute("SELECT count(*) FROM messages").fetchall()
                else:
                    conn.close()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        if HOLD_READ:
            conn.execute("ROLLBACK")


def writer(db, ledger, rng, stop_at):
    threading.Thread(target=fork_loop, args=(db, stop_at), daemon=True).start()
    write_loop(db, ledger, rng, stop_at)


def describe():
    return (f"writers that fork every {FORK_INTERVAL_S:g} s with a connection open (the child {CHILD_ACTION}s"
            f"{', a read held' if HOLD_READ else ''}); {CHECKPOINT_MODE} checkpoints every {CHECKPOINT_EVERY} commits")


ROLES = {"writer": writer, "opener": opener}

if __name__ == "__main__":
    main()  # noqa: F821
