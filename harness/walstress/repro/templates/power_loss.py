# The mechanism: a power cut. A writer process goes through a VFS that,
# before SQLite writes or truncates the database or its -wal, keeps the
# bytes it replaces in an undo log, and marks every completed sync. The
# parent kills the writer at a random moment (SIGKILL, like the power going
# off), then undoes every change made after each file's last sync (or a
# random share of them, or torn sector by sector), deletes the -shm (shared
# memory does not survive a reboot), and opens the database as after a
# restart: recovery runs, then integrity_check and the acknowledged rows.
# With synchronous=FULL every acknowledged row must be there; with NORMAL
# the rows acknowledged after the last sync of the -wal may be gone
# (SQLite documents it); with OFF the file itself may be damaged.
import os
import struct
import random
import shutil
import signal
import subprocess
import sys
import threading
import time

from walstress.repro.templates.common import BUSY_TIMEOUT_S, SECONDS, SEED, check, main, text  # repro: drop

import apsw

SYNCHRONOUS = "OFF"         # repro: param  PRAGMA synchronous of the writer's connections
ROLLBACK = "all"            # repro: param  "all" unsynced changes undone, a "random" share, or "torn" sectors
KEEP_PROBABILITY = 0.5      # repro: param  random/torn: the chance an unsynced write (sector) survives
SECTOR_BYTES = 512          # repro: param  torn: the unit of a torn write
THREADS = 2                 # repro: param  writer threads (a connection each) in the writer process
CHECKPOINT_EVERY = 50       # repro: param  a thread checkpoints (PASSIVE) every N commits


RECORD = struct.Struct("<cQqqI")  # kind (W write, T truncate, S sync), ns, offset or size, old size, length


class UndoLog:
    def __init__(self, path):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self.lock = threading.Lock()

    def add(self, kind, offset, old_size, data=b""):
        with self.lock:
            os.write(self.fd, RECORD.pack(kind, time.monotonic_ns(), offset, old_size, len(data)) + data)


def undo_vfs(log_folder):
    """A VFS in front of the default one that logs pre-images and syncs of the database and its -wal."""
    logs = {}

    class File(apsw.VFSFile):
        def __init__(self, name, flags):
            super().__init__("", name, flags)
            path = name.filename() if isinstance(name, apsw.URIFilename) else name
            tracked = path and (path.endswith(".db") or path.endswith(".db-wal"))
            key = os.path.basename(path or "")
            if tracked and key not in logs:
                logs[key] = UndoLog(os.path.join(log_folder, key + ".undo"))
            self.log = logs.get(key) if tracked else None

        def xWrite(self, data, offset):
            if self.log is not None:
                size = self.xFileSize()
                old = self.xRead(min(len(data), size - offset), offset) if offset < size else b""
                self.log.add(b"W", offset, size, bytes(old))
            super().xWrite(data, offset)

        def xTruncate(self, newsize):
            if self.log is not None:
                size = self.xFileSize()
                old = self.xRead(size - newsize, newsize) if size > newsize else b""
                self.log.add(b"T", newsize, size, bytes(old))
            super().xTruncate(newsize)

        def xSync(self, flags):
            super().xSync(flags)
            if self.log is not None:
                self.log.add(b"S", self.xFileSize(), 0)

    class VFS(apsw.VFS):
        def __init__(self):
            super().__init__("undo", "")

        def xOpen(self, name, flags):
            return File(name, flags)

    return VFS()


def writer(db, ledger, rng, stop_at):
    """The writer process: THREADS connections through the undo VFS, inserting until it is killed."""
    vfs = undo_vfs(os.path.dirname(db))  # noqa: F841  (registered while it lives)
    seeds = [rng.random() for _ in range(THREADS)]

    def thread(index):
        local = random.Random(seeds[index])
        conn = apsw.Connection(db, vfs="undo")
        conn.setbusytimeout(int(BUSY_TIMEOUT_S * 1000))
        conn.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
        commits = 0
        while time.time() < stop_at:
            content = text(local, 5, 200)
            try:
                conn.execute("BEGIN IMMEDIATE")
                row_id = conn.execute("INSERT INTO messages(session, content) VALUES ('p', ?) RETURNING id",
                                      (content,)).fetchall()[0][0]
                conn.execute("COMMIT")
            except apsw.BusyError:
                if not conn.getautocommit():
                    conn.execute("ROLLBACK")
                continue
            ledger.acknowledged(row_id, content)
            commits += 1
            if CHECKPOINT_EVERY and commits % CHECKPOINT_EVERY == 0:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    threads = [threading.Thread(target=thread, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def read_undo(path):
    with open(path, "rb") as handle:
        data = handle.read()
    records, pos = [], 0
    while pos + RECORD.size <= len(data):
        kind, ns, a, b, length = RECORD.unpack_from(data, pos)
        if pos + RECORD.size + length > len(data):
            break  # torn by the kill
        records.append((kind, ns, a, b, data[pos + RECORD.size:pos + RECORD.size + length]))
        pos += RECORD.size + length
    return records


def roll_back(path, records, rng):
    """Undo, newest first, what was written after the file's last sync."""
    last_sync = max((i for i, r in enumerate(records) if r[0] == b"S"), default=-1)
    unsynced = records[last_sync + 1:]
    synced_size = records[last_sync][2] if last_sync >= 0 else (unsynced[0][3] if unsynced else None)
    if not unsynced or not os.path.exists(path):
        return 0
    undone = 0
    with open(path, "r+b") as handle:
        for kind, _ns, a, b, old in reversed(unsynced):
            start = a
            end = a + len(old) if kind == b"W" else b
            if ROLLBACK == "all" or (ROLLBACK == "random" and rng.random() >= KEEP_PROBABILITY):
                handle.seek(start)
                handle.write(old)
                undone += 1
            elif ROLLBACK == "torn":
                for sector in range(start - start % SECTOR_BYTES, end, SECTOR_BYTES):
                    if rng.random() >= KEEP_PROBABILITY:
                        lo, hi = max(sector, start), min(sector + SECTOR_BYTES, end)
                        handle.seek(lo)
                        handle.write(old[lo - start:hi - start])
                undone += 1
        if synced_size is not None and (ROLLBACK == "all" or rng.random() >= KEEP_PROBABILITY):
            handle.truncate(synced_size)
    return undone


def one_run(index, template, workdir):  # noqa: F811  (this mechanism's run replaces common.py's)
    folder = os.path.join(workdir, f"run-{index}")
    os.makedirs(folder)
    db = os.path.join(folder, "test.db")
    shutil.copyfile(template, db)
    rng = random.Random(f"{SEED}:{index}:cut")
    cut_after = rng.uniform(0.3, 0.8) * SECONDS
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", "writer", db, folder,
                              "writer-0", str(SEED + index), str(time.time() + SECONDS + 60)])
    time.sleep(cut_after)
    child.send_signal(signal.SIGKILL)  # the power goes off
    child.wait()
    undone = 0
    for name in ("test.db", "test.db-wal"):
        log = os.path.join(folder, name + ".undo")
        if os.path.exists(log):
            undone += roll_back(os.path.join(folder, name), read_undo(log), rng)
    if os.path.exists(db + "-shm"):
        os.unlink(db + "-shm")
    last_wal_sync = max((r[1] for r in read_undo(os.path.join(folder, "test.db-wal.undo")) if r[0] == b"S"),
                        default=0) if os.path.exists(os.path.join(folder, "test.db-wal.undo")) else 0

    def may_lose(row_id, acked_ns):
        """What SQLite promises: FULL loses no acknowledged commit; NORMAL may lose those after the last
        sync of the -wal; OFF promises nothing (only the file itself is judged)."""
        return SYNCHRONOUS == "OFF" or (SYNCHRONOUS == "NORMAL" and acked_ns >= last_wal_sync)

    damaged, reason = check(db, folder, [], may_lose)
    return damaged, f"cut after {cut_after:.2f} s, {undone} unsynced changes undone; {reason}"


def describe():
    return (f"a power cut during writes with synchronous={SYNCHRONOUS}, unsynced changes undone ({ROLLBACK}), "
            f"apsw {apsw.sqlite_lib_version()}")


ROLES = {"writer": writer}

if __name__ == "__main__":
    main()
