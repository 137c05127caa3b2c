# The mechanism: two copies of SQLite in one process on one file. The
# writers use Python's sqlite3; a thread in each writer process also opens
# the database through apsw, which carries its own SQLite with its own list
# of open files, so its close() of the file drops the POSIX locks of the
# sqlite3 connections in the same process (and neither library knows of the
# other's locks).
import threading
import time

import apsw

from walstress.repro.templates._workload import CHECKPOINT_EVERY, CHECKPOINT_MODE, opener, write_loop  # repro: drop
from walstress.repro.templates.common import BUSY_TIMEOUT_S  # repro: drop

SECOND_INTERVAL_S = 0.005   # repro: param  pause between two actions of the second library
SECOND_WORK = "read"        # repro: param  "read", "write" or "mixed"
SECOND_PER_OP = True        # repro: param  open and close the second library's connection every time


def second_library(db, rng, stop_at):
    conn = None
    while time.time() < stop_at:
        try:
            if conn is None:
                conn = apsw.Connection(db)
                conn.setbusytimeout(int(BUSY_TIMEOUT_S * 1000))
            write = SECOND_WORK == "write" or (SECOND_WORK == "mixed" and rng.random() < 0.5)
            if write:  # a row no ledger knows of: it is never judged
                conn.execute("INSERT INTO messages(session, content) VALUES ('second', 'written through apsw')")
            else:
                conn.execute("SELECT count(*), max(length(content)) FROM messages").fetchall()
        except apsw.Error:
            pass
        if SECOND_PER_OP and conn is not None:
            conn.close()
            conn = None
        time.sleep(SECOND_INTERVAL_S)


def writer(db, ledger, rng, stop_at):
    threading.Thread(target=second_library, args=(db, rng, stop_at), daemon=True).start()
    write_loop(db, ledger, rng, stop_at)


def describe():
    return (f"a second SQLite (apsw {apsw.sqlite_lib_version()}) in each writer process, {SECOND_WORK} every "
            f"{SECOND_INTERVAL_S * 1000:g} ms{' with a connection per action' if SECOND_PER_OP else ''}; "
            f"{CHECKPOINT_MODE} checkpoints every {CHECKPOINT_EVERY} commits")


ROLES = {"writer": writer, "opener": opener}

if __name__ == "__main__":
    main()  # noqa: F821
