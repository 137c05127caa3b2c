"""The kernel's view of SQLite's locks, read from /proc while processes run (Linux).

What the unix VFS of SQLite holds, as ``/proc/locks`` shows it:

- a connection to a database in WAL mode takes a SHARED lock on the
  database file at its first read and keeps it until it closes: a read lock
  on bytes 1073741826-1073742335 (PENDING_BYTE + 2, 510 bytes). A write
  lock on that range is EXCLUSIVE (a connection checkpointing at close, or
  a rollback-mode writer);
- a process that has the ``-shm`` mapped holds a read lock on its byte 128
  (the "DMS"); bytes 120-127 are the WAL-index locks (WRITE, CKPT, RECOVER,
  READ0-4), taken for the length of a transaction.

POSIX locks belong to a (process, file) pair, and ``close()`` of *any*
descriptor of the file drops all of them. So a process that still has the
database and its ``-shm`` open, but holds no lock on one of them, has lost
its locks: another process may now take EXCLUSIVE, believe it is the last
connection, and checkpoint and delete the ``-wal`` under it. That is the
``lock_lost`` event. SQLite's own order (SHARED before it opens the
``-shm``; ``-shm`` closed before the database lock is dropped) leaves no
moment in which a healthy process looks like that. Since the descriptors
and the lock table cannot be read at one instant, a sample counts only
when the same descriptors were open before and after the lock table was
read, and the watch asks for two such samples in a row.

The watch also records descriptors of deleted ``-wal``/``-shm``/``-journal``
files (and databases) a process still has open (a name the kernel marks
deleted counts only when it no longer leads to the same inode: FUSE marks
names it merely dropped from its cache), and every SQLite library
each process has mapped (``/proc/PID/maps``; two different ones in one
process is the two-libraries hazard: each keeps its own list of open files,
so one's ``close()`` drops the other's locks).

When processes use one database file (one inode) with different ``-shm``
files, each has its own WAL index and its own ``-wal``: a hard link (another
name, so another ``-wal`` name), or a ``-wal``/``-shm`` deleted under some of
them. That is the ``split_wal`` event.

Records (history types): ``lock_lost``, ``lock_regained``, ``deleted_open``,
``split_wal``, ``sqlite_libraries``, ``two_libraries``, ``locks`` (once a second: what each
process holds) and ``lock_watch`` (its own cost, at the end). The watch
only reads /proc; it never opens a database, -wal or -shm.
"""

from __future__ import annotations

import mmap
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["LockWatch", "HeldLock", "available", "read_proc_locks", "lock_names", "sqlite_library",
           "mapped_sqlite_libraries", "PENDING_BYTE", "SHARED_FIRST", "SHARED_SIZE"]

PENDING_BYTE = 0x40000000
RESERVED_BYTE = PENDING_BYTE + 1
SHARED_FIRST = PENDING_BYTE + 2
SHARED_SIZE = 510
_SHM_NAMES = {120: "WRITE", 121: "CKPT", 122: "RECOVER", 123: "READ0", 124: "READ1", 125: "READ2", 126: "READ3",
              127: "READ4", 128: "DMS"}
_COMPANIONS = ("-wal", "-shm", "-journal")
_DELETED = " (deleted)"
CONFIRM_SAMPLES = 2          # a lock is lost after this many samples in a row without it
PROC_LOCKS = "/proc/locks"

FileKey = tuple[int, int, int]   # (major, minor, inode), as /proc/locks spells a file
Emit = Callable[[dict[str, Any]], None]


def available() -> str | None:
    """None when the watch can run here, else why not."""
    if not os.path.exists(PROC_LOCKS):
        return f"the lock watch reads {PROC_LOCKS}, which this system does not have (Linux only)"
    return None


@dataclass(frozen=True)
class HeldLock:
    kind: str            # READ | WRITE
    start: int
    end: int | None      # None: to the end of the file


def read_proc_locks(text: str | None = None) -> dict[tuple[int, FileKey], list[HeldLock]]:
    """(pid, file) -> the POSIX locks it holds, from /proc/locks (waiters, "->" lines, are left out)."""
    if text is None:
        with open(PROC_LOCKS) as handle:
            text = handle.read()
    held: dict[tuple[int, FileKey], list[HeldLock]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8 or parts[1] == "->" or parts[1] != "POSIX":
            continue
        try:
            pid = int(parts[4])
            major, minor, inode = parts[5].split(":")
            key = (int(major, 16), int(minor, 16), int(inode))
            start = int(parts[6])
            end = None if parts[7] == "EOF" else int(parts[7])
        except ValueError:
            continue
        held.setdefault((pid, key), []).append(HeldLock(parts[3], start, end))
    return held


def file_key(st: os.stat_result) -> FileKey:
    return (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)


def lock_names(locks: list[HeldLock], shm: bool) -> list[str]:
    """SQLite's names for the locks: SHARED/RESERVED/PENDING/EXCLUSIVE on a database, DMS/WRITE/READn on a -shm."""
    names = []
    for lock in sorted(locks, key=lambda lk: lk.start):
        end = lock.end if lock.end is not None else lock.start
        if shm:
            label = "+".join(_SHM_NAMES.get(b, str(b)) for b in range(lock.start, end + 1)) \
                if end - lock.start < 16 else f"{lock.start}-{end}"
        elif lock.start <= SHARED_FIRST and end >= SHARED_FIRST + SHARED_SIZE - 1:
            label = "EXCLUSIVE" if lock.kind == "WRITE" else "SHARED"
        elif lock.start == PENDING_BYTE:
            label = "PENDING"
        elif lock.start == RESERVED_BYTE:
            label = "RESERVED"
        else:
            label = f"{lock.start}-{end}"
        names.append(f"{label}({lock.kind[0].lower()})")
    return names


# ------------------------------------------------------------------ libraries
_SOURCE_ID = re.compile(rb"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [0-9a-f]{40,64})")
_MAGIC = b"SQLite format 3\x00"
_library_cache: dict[tuple[str, int, int, float], str | None] = {}
_library_lock = threading.Lock()


def sqlite_library(path: str) -> str | None:
    """The SQLite source id compiled into the file at ``path``, or None when it holds no SQLite.

    Any file counts (libsqlite3, an extension module that carries its own
    copy, the interpreter itself). Read once per file, then cached."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (path, st.st_dev, st.st_ino, st.st_mtime)
    with _library_lock:
        if key in _library_cache:
            return _library_cache[key]
    found: str | None = None
    try:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data.find(_MAGIC) >= 0:
                match = _SOURCE_ID.search(data)  # type: ignore[call-overload]
                found = match.group(1).decode("ascii") if match else "unknown source id"
    except (OSError, ValueError):
        found = None
    with _library_lock:
        _library_cache[key] = found
    return found


def mapped_sqlite_libraries(pid: int) -> dict[str, str]:
    """path -> source id of every SQLite library process ``pid`` has mapped (executable mappings)."""
    paths: set[str] = set()
    with open(f"/proc/{pid}/maps") as handle:
        for line in handle:
            parts = line.split(None, 5)
            if len(parts) == 6 and "x" in parts[1] and parts[5].startswith("/"):
                paths.add(parts[5].rstrip("\n"))
    out = {}
    for path in sorted(paths):
        source = sqlite_library(path.removesuffix(_DELETED))
        if source is not None:
            out[path] = source
    return out


# --------------------------------------------------------------- one process
@dataclass
class OpenFile:
    fd: int
    path: str            # without " (deleted)"
    deleted: bool
    key: FileKey


@dataclass
class _Process:
    name: str
    pid: int
    links: dict[int, tuple[str, FileKey | None]] = field(default_factory=dict)   # fd -> (link text, file)
    libraries: dict[str, str] | None = None
    libraries_read_at: float = 0.0
    two_libraries_seen: frozenset[str] = frozenset()

    @property
    def who(self) -> str:
        """"writer-0 (pid 4242)"; a name that shows its pid already stays as it is."""
        return self.name if str(self.pid) in self.name else f"{self.name} (pid {self.pid})"

    def open_files(self, *, fresh: bool = False) -> list[OpenFile]:
        """Regular files the process has open; a descriptor is stat'ed again only when its target changed."""
        fd_dir = f"/proc/{self.pid}/fd"
        if fresh:
            self.links = {}
        files = []
        seen: dict[int, tuple[str, FileKey | None]] = {}
        for entry in os.listdir(fd_dir):
            fd = int(entry)
            try:
                link = os.readlink(f"{fd_dir}/{entry}")
            except OSError:
                continue
            if not link.startswith("/"):
                continue
            known = self.links.get(fd)
            if known is not None and known[0] == link:
                key = known[1]
            else:
                try:
                    key = file_key(os.stat(f"{fd_dir}/{entry}"))
                except OSError:
                    key = None
            seen[fd] = (link, key)
            if key is not None:
                path = link.removesuffix(_DELETED)
                files.append(OpenFile(fd, path, link.endswith(_DELETED) and not _names_file(path, key), key))
        self.links = seen
        return files


def _names_file(path: str, key: FileKey) -> bool:
    """Whether ``path`` still leads to the file ``key``. The kernel marks a name " (deleted)" whenever it dropped
    the name's cache entry: on FUSE that happens when a lookup is refused for a moment, while the file was never
    unlinked (a new lookup finds the same inode). An unlinked file's inode cannot come back under its old name
    while the file is open, so only a name that leads elsewhere (or nowhere) is a deletion."""
    try:
        return file_key(os.stat(path)) == key
    except OSError:
        return False


def wal_databases(files: list[OpenFile]) -> list[tuple[OpenFile, OpenFile]]:
    """(database, -shm) pairs a process has open: a database in WAL mode with its shared memory
    (a -shm that was deleted under the process still counts: it still uses it)."""
    databases = {f.path: f for f in files if not f.deleted}
    shms: dict[str, OpenFile] = {}
    for f in files:
        if f.path.endswith("-shm") and (f.path not in shms or shms[f.path].deleted):
            shms[f.path] = f
    return [(db, shms[db.path + "-shm"]) for db in databases.values() if db.path + "-shm" in shms]


def deleted_in_use(files: list[OpenFile]) -> list[OpenFile]:
    """Deleted -wal/-shm/-journal files (or databases whose -shm is open) the process still has open."""
    names = {f.path for f in files}
    return [f for f in files if f.deleted and (f.path.endswith(_COMPANIONS) or f.path + "-shm" in names
                                               or f.path + "-wal" in names)]


# --------------------------------------------------------------------- watch
class LockWatch(threading.Thread):
    """Samples /proc at ``hz`` and calls ``emit`` with a record for every event it sees."""

    def __init__(self, pids: Callable[[], dict[str, int]], emit: Emit, *, hz: float = 20.0,
                 libraries_every: float = 1.0, locks_every: float = 1.0):
        super().__init__(name="walstress-lockwatch", daemon=True)
        if hz <= 0:
            raise ValueError("the lock watch needs hz > 0")
        self.pids = pids
        self.emit = emit
        self.period = 1.0 / hz
        self.hz = hz
        self.libraries_every = libraries_every
        self.locks_every = locks_every
        self._stop_event = threading.Event()
        self._procs: dict[int, _Process] = {}
        self._missing: dict[tuple[int, str, str], tuple[float, int]] = {}   # (pid, db path, which) -> (since, n)
        self._lost: dict[tuple[int, str, str], float] = {}
        self._deleted_pending: dict[tuple[int, int, FileKey], int] = {}
        self._deleted_seen: set[tuple[int, int, FileKey]] = set()
        self._last_locks_record = 0.0
        self._split_pending: dict[FileKey, tuple[frozenset[FileKey], int]] = {}
        self._split_seen: dict[FileKey, frozenset[FileKey]] = {}
        self.samples = 0
        self.events: dict[str, int] = {}
        self.cpu_seconds = 0.0
        self.wall_seconds = 0.0
        self.errors = 0

    # --------------------------------------------------------------- control
    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def run(self) -> None:
        cpu0, wall0 = time.thread_time(), time.monotonic()
        next_at = time.monotonic()
        while not self._stop_event.is_set():
            try:
                self.sample_once()
            except Exception as exc:  # a reading must never kill the run
                self.errors += 1
                if self.errors <= 3:
                    self.emit({"type": "note", "t": time.time(), "msg": f"lock watch: {exc!r}"})
            next_at += self.period
            delay = next_at - time.monotonic()
            if delay < 0:
                next_at, delay = time.monotonic(), 0.0
            self._stop_event.wait(delay)
        self.cpu_seconds = time.thread_time() - cpu0
        self.wall_seconds = time.monotonic() - wall0
        self.emit(self.stats())

    def stats(self) -> dict[str, Any]:
        wall = max(self.wall_seconds, 1e-9)
        return {"type": "lock_watch", "t": time.time(), "hz": self.hz, "samples": self.samples,
                "cpu_s": round(self.cpu_seconds, 4), "wall_s": round(self.wall_seconds, 3),
                "core_share": round(self.cpu_seconds / wall, 5), "processes": len(self._procs),
                "events": dict(self.events), "errors": self.errors}

    def _event(self, rec: dict[str, Any]) -> None:
        self.events[rec["type"]] = self.events.get(rec["type"], 0) + 1
        self.emit(rec)

    # --------------------------------------------------------------- sampling
    def sample_once(self) -> None:
        now = time.time()
        current = {pid: name for name, pid in self.pids().items()}
        for pid in list(self._procs):
            if pid not in current:
                self._forget(pid)
        views: dict[int, list[OpenFile]] = {}
        for pid, name in current.items():
            proc = self._procs.get(pid)
            if proc is None or proc.name != name:
                proc = self._procs[pid] = _Process(name, pid)
            try:
                views[pid] = proc.open_files()
            except (FileNotFoundError, ProcessLookupError):
                continue  # gone between the listing and now
            except PermissionError as exc:
                raise PermissionError(f"cannot read /proc/{pid}/fd ({name}): watch as root or as the "
                                      "process's own user") from exc
        locks = read_proc_locks()
        self.samples += 1
        for pid, files in views.items():
            proc = self._procs[pid]
            self._check_locks(proc, files, locks, now)
            self._check_deleted(proc, files, now)
            if now - proc.libraries_read_at >= self.libraries_every:
                self._check_libraries(proc, now)
        self._check_split(views, now)
        if now - self._last_locks_record >= self.locks_every:
            self._last_locks_record = now
            self.emit({"type": "locks", "t": now, "held": self._held_summary(views, locks)})

    def _forget(self, pid: int) -> None:
        self._procs.pop(pid, None)
        for table in (self._missing, self._lost):
            for key in [k for k in table if k[0] == pid]:
                table.pop(key)

    def _check_locks(self, proc: _Process, files: list[OpenFile], locks: dict, now: float) -> None:
        still_open = set()
        for db, shm in wal_databases(files):
            for which, f in (("database", db), ("shm", shm)):
                state = (proc.pid, db.path, which)
                still_open.add(state)
                if locks.get((proc.pid, f.key)):
                    self._missing.pop(state, None)
                    lost_at = self._lost.pop(state, None)
                    if lost_at is not None:
                        self._event({"type": "lock_regained", "t": now, "worker": proc.name, "pid": proc.pid,
                                     "file": db.path, "which": which, "after_s": round(now - lost_at, 3)})
                    continue
                if state in self._lost or not self._open_throughout(proc, db, shm):
                    continue
                since, count = self._missing.get(state, (now, 0))
                count += 1
                self._missing[state] = (since, count)
                if count >= CONFIRM_SAMPLES:
                    self._missing.pop(state, None)
                    self._lost[state] = since
                    other = shm if which == "database" else db
                    self._event({"type": "lock_lost", "t": since, "seen_t": now, "worker": proc.name,
                                 "pid": proc.pid, "file": db.path, "which": which,
                                 "still_held": lock_names(locks.get((proc.pid, other.key), []), which == "database"),
                                 "msg": f"{proc.who} has {os.path.basename(db.path)} and its -shm "
                                        f"open but holds no POSIX lock on the "
                                        f"{'database file' if which == 'database' else '-shm'}"})
        for state in [s for s in self._missing if s[0] == proc.pid and s not in still_open]:
            self._missing.pop(state)
        for state in [s for s in self._lost if s[0] == proc.pid and s not in still_open]:
            self._lost.pop(state)  # closed: the loss ends with the connection

    @staticmethod
    def _open_throughout(proc: _Process, db: OpenFile, shm: OpenFile) -> bool:
        """Were the same descriptors open before and after the lock table was read? (A connection
        that closed in between dropped its locks as it should have.)"""
        try:
            again = {(f.fd, f.key) for f in proc.open_files(fresh=True)}
        except OSError:
            return False
        return (db.fd, db.key) in again and (shm.fd, shm.key) in again

    def _check_split(self, views: dict[int, list[OpenFile]], now: float) -> None:
        """One database file used with two different -shm files (so two -wal files): a hard link, a
        -wal/-shm deleted under some connections, a copy put in place of the database."""
        by_db: dict[FileKey, dict[FileKey, tuple[str, set[str]]]] = {}
        for pid, files in views.items():
            name = self._procs[pid].name
            for db, shm in wal_databases(files):
                entry = by_db.setdefault(db.key, {}).setdefault(shm.key, (shm.path + (_DELETED if shm.deleted
                                                                                       else ""), set()))
                entry[1].add(name)
        for db_key, shms in by_db.items():
            if len(shms) < 2:
                self._split_pending.pop(db_key, None)
                continue
            seen = frozenset(shms)
            if self._split_seen.get(db_key) == seen:
                continue
            count = self._split_pending.get(db_key, (seen, 0))
            count = (seen, count[1] + 1 if count[0] == seen else 1)
            self._split_pending[db_key] = count
            names = {path.removesuffix(_DELETED) for path, _ in shms.values()}
            # two -shm *names* for one file cannot come from timing (a name is the database's name plus
            # "-shm"): a link. One name, two files (one deleted) can, for an instant: two samples then.
            if len(names) < 2 and count[1] < CONFIRM_SAMPLES:
                continue
            self._split_seen[db_key] = seen
            shm_files = {path: sorted(workers) for path, workers in shms.values()}
            self._event({"type": "split_wal", "t": now, "shm_files": shm_files,
                         "msg": f"one database (inode {db_key[2]}) is used with {len(shms)} different -shm files: "
                                + "; ".join(f"{os.path.basename(p)} by {', '.join(w)}" for p, w in shm_files.items())})

    def _check_deleted(self, proc: _Process, files: list[OpenFile], now: float) -> None:
        current = set()
        for f in deleted_in_use(files):
            key = (proc.pid, f.fd, f.key)
            current.add(key)
            if key in self._deleted_seen:
                continue
            count = self._deleted_pending.get(key, 0) + 1
            self._deleted_pending[key] = count
            if count >= CONFIRM_SAMPLES:
                self._deleted_seen.add(key)
                self._event({"type": "deleted_open", "t": now, "worker": proc.name, "pid": proc.pid,
                             "file": f.path, "fd": f.fd,
                             "msg": f"{proc.who} still uses {os.path.basename(f.path)}, which "
                                    "was deleted"})
        for key in [k for k in self._deleted_pending if k[0] == proc.pid and k not in current]:
            self._deleted_pending.pop(key)

    def _check_libraries(self, proc: _Process, now: float) -> None:
        proc.libraries_read_at = now
        try:
            libraries = mapped_sqlite_libraries(proc.pid)
        except OSError:
            return
        # a process does not unload SQLite: an empty read is one that is exiting (its maps already gone)
        if libraries and libraries != proc.libraries:
            proc.libraries = libraries
            self._event({"type": "sqlite_libraries", "t": now, "worker": proc.name, "pid": proc.pid,
                         "libraries": libraries})
        if len(libraries) >= 2 and frozenset(libraries) != proc.two_libraries_seen:
            proc.two_libraries_seen = frozenset(libraries)
            self._event({"type": "two_libraries", "t": now, "worker": proc.name, "pid": proc.pid,
                         "libraries": libraries,
                         "msg": f"{proc.who} has {len(libraries)} SQLite libraries mapped: "
                                + ", ".join(f"{os.path.basename(p)} ({s[:19]})" for p, s in libraries.items())})

    def _held_summary(self, views: dict[int, list[OpenFile]], locks: dict) -> dict[str, dict[str, list[str]]]:
        out: dict[str, dict[str, list[str]]] = {}
        for pid, files in views.items():
            proc = self._procs[pid]
            for db, shm in wal_databases(files):
                out.setdefault(proc.name, {})[os.path.basename(db.path)] = \
                    lock_names(locks.get((pid, db.key), []), False)
                out[proc.name][os.path.basename(shm.path)] = lock_names(locks.get((pid, shm.key), []), True)
        return out
