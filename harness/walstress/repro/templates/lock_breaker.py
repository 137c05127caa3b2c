# The mechanism: a thread in each writer process opens the live database
# file with plain open(), reads 100 bytes and closes it, every millisecond.
# On POSIX, close() drops every lock the process holds on that file, the
# SQLite connections' locks included: an opener in another process then
# believes it is the only user (it checkpoints and deletes the -wal when it
# closes, or runs recovery) while the writer goes on writing.
import threading
import time

from walstress.repro.templates._workload import CHECKPOINT_EVERY, CHECKPOINT_MODE, opener, write_loop  # repro: drop

BREAKER_INTERVAL_S = 0.001   # repro: param  pause between two open()/read()/close()
BREAKER_FILE = "db"          # repro: param  "db": the database file; "wal": its -wal
BREAKER_ROLES = ("writer",)  # repro: param  the processes that run the breaking thread


def start_breaker(db, role, stop_at):
    if role in BREAKER_ROLES:
        path = db + ("-wal" if BREAKER_FILE == "wal" else "")
        threading.Thread(target=break_locks, args=(path, stop_at), daemon=True).start()


def break_locks(path, stop_at):
    while time.time() < stop_at:
        try:
            with open(path, "rb") as handle:  # the hazard: a plain close() of the live file
                handle.read(100)
        except FileNotFoundError:
            pass
        time.sleep(BREAKER_INTERVAL_S)


def writer(db, ledger, rng, stop_at):
    start_breaker(db, "writer", stop_at)
    write_loop(db, ledger, rng, stop_at)


def opener_with_breaker(db, ledger, rng, stop_at):
    start_breaker(db, "opener", stop_at)
    opener(db, ledger, rng, stop_at)


def describe():
    return (f"a lock-breaking thread (open/read/close of the {BREAKER_FILE} file every "
            f"{BREAKER_INTERVAL_S * 1000:g} ms) in the {', '.join(BREAKER_ROLES)} processes; "
            f"{CHECKPOINT_MODE} checkpoints every {CHECKPOINT_EVERY} commits")


ROLES = {"writer": writer, "opener": opener_with_breaker}

if __name__ == "__main__":
    main()  # noqa: F821
