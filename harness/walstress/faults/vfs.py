"""The VFS shim: SQLite's file I/O through Python, for faults the kernel cannot give.

A worker whose faults need it registers one apsw VFS, ``walstress-shim``,
that wraps the default VFS (``unix``) and forwards every call, after:

- delays: a fixed or seeded random sleep before each read, write or sync
  (``faults.io_delay``, ``faults.fsync.mode = "slow"``);
- a throttle shared by every worker of the run: each read/write takes its
  turn in a queue of virtual time kept in a small file of the run dir, so
  the workers together never exceed the bytes/s and ops/s asked
  (``faults.throttle.backend = "vfs"``);
- no-op syncs: ``xSync`` returns without syncing (``faults.fsync.mode =
  "noop"``);
- pre-images for power loss (``faults.power_loss``): before a write or a
  truncation of a file of the database folder, the bytes it replaces are
  appended to this process's undo log; every completed sync appends a sync
  marker. Records carry ``time.monotonic_ns()`` (CLOCK_MONOTONIC is
  system-wide on Linux), so the controller can merge the logs of every
  process into one order and roll back whatever was written after a file's
  last sync (see power_loss.py).

The ``-shm`` file is mapped by SQLite's own C code (apsw keeps the xShm
methods of the base file), so it is neither delayed nor logged; a power cut
discards it anyway.

Only the apsw driver can route I/O through the shim; each section's
``validate`` refuses the stdlib driver for a fault that needs it. Nothing in
this module imports apsw until a worker registers the shim.

Undo log format: a sequence of records, each a 44-byte header
``<4sBxHqqqqI`` = (magic ``WSU1``, kind, file id, monotonic ns, a, b, c,
data length) followed by the data:

    N  file id names a path          data = path (UTF-8)
    W  write of b bytes at offset a   c = file size before, data = pre-image
    T  truncate to a bytes            b = c = size before, data = [a, b) before
    S  sync completed                 a = size when it began, b = wall time ns
                                      when it began (ns: monotonic, when it began)
    D  the file was deleted
"""

from __future__ import annotations

import fcntl
import mmap
import os
import random
import struct
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator

from walstress.checks.findings import Finding, RunEvidence
from walstress.faults.base import FaultSettings, RunControl, setting
from walstress.runspec import WorkerSpec

SHIM_VFS_NAME = "walstress-shim"

UNDO_MAGIC = b"WSU1"
TRACE_MAGIC = b"WST1"
UNDO_HEADER = struct.Struct("<4sBxHqqqqI")
KIND_NAME, KIND_WRITE, KIND_TRUNCATE, KIND_SYNC, KIND_DELETE = 1, 2, 3, 4, 5
KIND_LETTERS = {KIND_NAME: "N", KIND_WRITE: "W", KIND_TRUNCATE: "T", KIND_SYNC: "S", KIND_DELETE: "D"}
STAMP_SLOTS = 512  # shared "a sync of this file began at" stamps, 8 bytes each

# SQLite open flags (sqlite3.h)
_OPEN_MAIN_DB = 0x00000100
_OPEN_WAL = 0x00080000

def needs_apsw(section: str, scenario: Any, what: str) -> None:
    """ValueError naming the key when a fault needs the shim but the driver is stdlib."""
    if scenario.sqlite.driver != "apsw":
        raise ValueError(f'faults.{section}: {what} needs the VFS shim, which only the apsw driver can use; '
                         f'set sqlite.driver = "apsw" (pip install "walstress[apsw]")')


# --------------------------------------------------------------- shared state
class SharedThrottle:
    """Queues of virtual time in a small file of the run dir, shared by every worker.

    Four slots (write bytes, write ops, read bytes, read ops) each hold the
    monotonic ns at which the queue is next free. An operation reserves its
    cost under ``flock`` and sleeps until its turn is over, so the sum over
    all processes stays at the limit.
    """

    WRITE_BYTES, WRITE_OPS, READ_BYTES, READ_OPS = range(4)

    def __init__(self, path: Path, *, write_bps: int = 0, write_iops: int = 0, read_bps: int = 0,
                 read_iops: int = 0):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if os.fstat(self.fd).st_size < 64:
            os.ftruncate(self.fd, 64)
        self.map = mmap.mmap(self.fd, 64)
        self.write_bps, self.write_iops = write_bps, write_iops
        self.read_bps, self.read_iops = read_bps, read_iops
        self._lock = threading.Lock()

    def _reserve(self, costs: list[tuple[int, int]]) -> float:
        """costs: (slot, ns); returns the seconds to wait."""
        with self._lock:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            try:
                now = time.monotonic_ns()
                end = now
                for slot, cost in costs:
                    free_at = struct.unpack_from("<q", self.map, slot * 8)[0]
                    slot_end = max(now, free_at) + cost
                    struct.pack_into("<q", self.map, slot * 8, slot_end)
                    end = max(end, slot_end)
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
        return (end - now) / 1e9

    def write(self, nbytes: int) -> float:
        return self._wait(nbytes, self.WRITE_BYTES, self.write_bps, self.WRITE_OPS, self.write_iops)

    def read(self, nbytes: int) -> float:
        return self._wait(nbytes, self.READ_BYTES, self.read_bps, self.READ_OPS, self.read_iops)

    def _wait(self, nbytes: int, bytes_slot: int, bps: int, ops_slot: int, iops: int) -> float:
        """One operation of nbytes against the limits of one direction: sleep its turn; the seconds slept."""
        costs = []
        if bps:
            costs.append((bytes_slot, nbytes * 1_000_000_000 // bps))
        if iops:
            costs.append((ops_slot, 1_000_000_000 // iops))
        if not costs:
            return 0.0
        wait = self._reserve(costs)
        if wait > 0:
            time.sleep(wait)
        return wait


class UndoWriter:
    """This process's undo log for power loss (format in the module docstring)."""

    def __init__(self, folder: Path, worker: str, tracked_dir: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{worker}-{os.getpid()}.undo"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.tracked_dir = str(Path(tracked_dir).resolve())
        stamps = folder / "sync-stamps"
        self._stamp_fd = os.open(stamps, os.O_RDWR | os.O_CREAT, 0o644)
        if os.fstat(self._stamp_fd).st_size < STAMP_SLOTS * 8:
            os.ftruncate(self._stamp_fd, STAMP_SLOTS * 8)
        self._stamps = mmap.mmap(self._stamp_fd, STAMP_SLOTS * 8)
        self._lock = threading.Lock()
        self._ids: dict[str, int] = {}
        self._saved: dict[int, set[tuple[int, int]]] = {}
        self._seen_stamp: dict[int, int] = {}
        self._slot: dict[int, int] = {}
        self.records = 0
        self.bytes = 0

    def tracks(self, path: str | None) -> bool:
        if not path:
            return False
        return os.path.dirname(os.path.abspath(path)) == self.tracked_dir

    def file_id(self, path: str) -> int:
        path = os.path.abspath(path)
        with self._lock:
            fid = self._ids.get(path)
            if fid is None:
                fid = len(self._ids) + 1
                self._ids[path] = fid
                self._saved[fid] = set()
                self._slot[fid] = zlib.crc32(path.encode()) % STAMP_SLOTS
                self._seen_stamp[fid] = self._read_stamp(fid)
                self._emit(KIND_NAME, fid, time.monotonic_ns(), 0, 0, 0, path.encode())
            return fid

    def _read_stamp(self, fid: int) -> int:
        return struct.unpack_from("<q", self._stamps, self._slot[fid] * 8)[0]

    def _write_stamp(self, fid: int, value: int) -> None:
        struct.pack_into("<q", self._stamps, self._slot[fid] * 8, value)

    def _emit(self, kind: int, fid: int, ns: int, a: int, b: int, c: int, data: bytes = b"") -> None:
        buf = UNDO_HEADER.pack(UNDO_MAGIC, kind, fid, ns, a, b, c, len(data)) + bytes(data)
        view = memoryview(buf)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.records += 1
        self.bytes += len(buf)

    def _fresh(self, fid: int) -> set[tuple[int, int]]:
        """The ranges already saved since the file's last sync (by any process)."""
        stamp = self._read_stamp(fid)
        if stamp != self._seen_stamp[fid]:
            self._seen_stamp[fid] = stamp
            self._saved[fid].clear()
        return self._saved[fid]

    def before_write(self, fid: int, base: Any, offset: int, length: int) -> None:
        with self._lock:
            saved = self._fresh(fid)
            if (offset, length) in saved:
                return  # the oldest pre-image since the last sync is already logged
            size = base.size()
            readable = max(0, min(length, size - offset))
            pre = base.read(readable, offset) if readable else b""
            self._emit(KIND_WRITE, fid, time.monotonic_ns(), offset, length, size, pre)
            saved.add((offset, length))

    def before_truncate(self, fid: int, base: Any, newsize: int) -> None:
        with self._lock:
            size = base.size()
            pre = base.read(size - newsize, newsize) if size > newsize else b""
            self._emit(KIND_TRUNCATE, fid, time.monotonic_ns(), newsize, size, size, pre)

    def sync_begin(self, fid: int, base: Any) -> tuple[int, int, int]:
        ns = time.monotonic_ns()
        wall_ns = time.time_ns()
        self._write_stamp(fid, ns)  # other processes start saving pre-images anew
        return ns, wall_ns, base.size()

    def sync_end(self, fid: int, began: tuple[int, int, int]) -> None:
        ns, wall_ns, size = began
        with self._lock:
            self._emit(KIND_SYNC, fid, ns, size, wall_ns, 0)
            self._saved[fid].clear()
            self._seen_stamp[fid] = self._read_stamp(fid)

    def deleted(self, path: str) -> None:
        fid = self.file_id(path)
        with self._lock:
            self._write_stamp(fid, time.monotonic_ns())
            self._emit(KIND_DELETE, fid, time.monotonic_ns(), 0, 0, 0)
            self._saved[fid].clear()
            self._seen_stamp[fid] = self._read_stamp(fid)


class TraceWriter:
    """This process's I/O trace for the crash explorer (``crash/``): every write with the bytes it puts
    down, every truncate, every completed sync and delete of a file of the database folder, in the undo
    log's record format with the magic ``WST1``: W a = offset, b = length, data = the new bytes; T a = new
    size; S ns = when the sync began, b = when it ended; c = wall-clock ns for
    every record."""

    def __init__(self, folder: Path, worker: str, tracked_dir: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{worker}-{os.getpid()}.trace"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.tracked_dir = str(Path(tracked_dir).resolve())
        self._lock = threading.Lock()
        self._ids: dict[str, int] = {}
        self.records = 0
        self.bytes = 0

    def tracks(self, path: str | None) -> bool:
        return bool(path) and os.path.dirname(os.path.abspath(str(path))) == self.tracked_dir

    def file_id(self, path: str) -> int:
        path = os.path.abspath(path)
        with self._lock:
            fid = self._ids.get(path)
            if fid is None:
                fid = self._ids[path] = len(self._ids) + 1
                self._emit(KIND_NAME, fid, time.monotonic_ns(), 0, 0, path.encode())
            return fid

    def _emit(self, kind: int, fid: int, ns: int, a: int, b: int, data: bytes = b"") -> None:
        buf = UNDO_HEADER.pack(TRACE_MAGIC, kind, fid, ns, a, b, time.time_ns(), len(data)) + bytes(data)
        view = memoryview(buf)
        while view:
            view = view[os.write(self.fd, view):]
        self.records += 1
        self.bytes += len(buf)

    def write(self, fid: int, offset: int, data: Any) -> None:
        with self._lock:
            self._emit(KIND_WRITE, fid, time.monotonic_ns(), offset, len(data), bytes(data))

    def truncate(self, fid: int, size: int) -> None:
        with self._lock:
            self._emit(KIND_TRUNCATE, fid, time.monotonic_ns(), size, 0)

    def synced(self, fid: int, began_ns: int) -> None:
        with self._lock:
            self._emit(KIND_SYNC, fid, began_ns, 0, time.monotonic_ns())

    def deleted(self, path: str) -> None:
        fid = self.file_id(path)
        with self._lock:
            self._emit(KIND_DELETE, fid, time.monotonic_ns(), 0, 0)


@dataclass
class UndoRecord:
    kind: str
    path: str
    ns: int
    a: int
    b: int
    c: int
    source: str          # the undo log it came from
    data_offset: int     # where its data starts in that log
    data_length: int
    seq: int             # position in its log


def read_undo_log(path: Path, magic: bytes = UNDO_MAGIC) -> Iterator[UndoRecord]:
    """Records of one undo log (or, with ``TRACE_MAGIC``, one trace); a torn last record is dropped."""
    names: dict[int, str] = {}
    with open(path, "rb") as handle:
        data = handle.read()
    pos = 0
    seq = 0
    size = UNDO_HEADER.size
    while pos + size <= len(data):
        found, kind, fid, ns, a, b, c, n = UNDO_HEADER.unpack_from(data, pos)
        if found != magic or pos + size + n > len(data):
            break
        start = pos + size
        if kind == KIND_NAME:
            names[fid] = data[start:start + n].decode("utf-8", "replace")
        elif fid in names and kind in KIND_LETTERS:
            yield UndoRecord(KIND_LETTERS[kind], names[fid], ns, a, b, c, str(path), start, n, seq)
        pos = start + n
        seq += 1


# ----------------------------------------------------------- process settings
@dataclass
class IoErrorPlan:
    """Which calls the shim fails in this process (faults.io_error), and how."""

    calls: frozenset[str]          # read / write / sync / truncate
    files: frozenset[str]          # db / wal / journal
    probability: float
    nth: int                       # fail the nth matching call (0: off)
    error: str                     # ioerr / full
    disk_full_bytes: int           # writes that grow the files past this many bytes fail with SQLITE_FULL
    tracked: tuple[str, ...]       # the files whose sizes count for disk_full_bytes
    seen: int = 0

    def fails(self, state: "ShimState", call: str, kind: str) -> bool:
        if call not in self.calls or kind not in self.files:
            return False
        with state.lock:
            self.seen += 1
            if self.nth and self.seen == self.nth:
                return True
            return self.probability > 0 and state.rng.random() < self.probability

    def disk_full(self, growth: int) -> bool:
        if not self.disk_full_bytes or growth <= 0:
            return False
        used = 0
        for path in self.tracked:
            try:
                used += os.stat(path).st_size
            except OSError:
                pass
        return used + growth > self.disk_full_bytes


_IOERR_CODES = {"read": "SQLITE_IOERR_READ", "write": "SQLITE_IOERR_WRITE", "sync": "SQLITE_IOERR_FSYNC",
                "truncate": "SQLITE_IOERR_TRUNCATE"}


def _io_error(call: str, error: str, path: str) -> Exception:
    """The exception apsw turns into SQLite's error code: SQLITE_FULL, or SQLITE_IOERR_<call>."""
    import apsw

    if error == "full":
        return apsw.FullError(f"walstress io_error: {call} of {os.path.basename(path)}: disk full")
    exc = apsw.IOError(f"walstress io_error: {call} of {os.path.basename(path)}")
    exc.extendedresult = getattr(apsw, _IOERR_CODES[call])  # type: ignore[attr-defined]
    return exc


class ShimState:
    """What the shim does in this process; sections fill it in at install time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.read_delay_s = 0.0
        self.write_delay_s = 0.0
        self.delay_random = False
        self.sync_mode = "normal"   # normal / noop / slow
        self.sync_delay_s = 0.0
        self.sync_delay_max_s = 0.0
        self.rng = random.Random(0)
        self.throttle: SharedThrottle | None = None
        self.undo: UndoWriter | None = None
        self.trace: TraceWriter | None = None
        self.cut: CheckpointCut | None = None
        self.stats: Counter = Counter()
        self.delay_ns: Counter = Counter()
        self.history: Any = None
        self.worker = ""
        self.installed_by: list[str] = []
        self.io_error: IoErrorPlan | None = None

    def random_uniform(self, low: float, high: float) -> float:
        with self.lock:
            return self.rng.uniform(low, high)

    def add(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.stats[key] += n

    def add_delay(self, key: str, seconds: float) -> None:
        with self.lock:
            self.delay_ns[key] += int(seconds * 1e9)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            out: dict[str, Any] = dict(self.stats)
            for key, ns in self.delay_ns.items():
                out[f"{key}_delay_ms"] = round(ns / 1e6, 3)
        if self.undo is not None:
            out["undo_records"] = self.undo.records
            out["undo_bytes"] = self.undo.bytes
        if self.trace is not None:
            out["trace_records"] = self.trace.records
            out["trace_bytes"] = self.trace.bytes
        out["features"] = sorted(set(self.installed_by))
        return out


_ARM_LOOK_SECONDS = 0.05


class CheckpointCut:
    """Power cut "during a checkpoint": in WAL mode only a checkpoint writes the main db file.

    Once the controller arms the cut (a file in the control folder), the
    k-th write to the main db file in this process asks for the cut (an
    O_EXCL file, so one worker asks) and then waits, inside that write, for
    the controller's SIGKILL; if it does not come, the checkpoint goes on.
    """

    def __init__(self, armed_path: Path, request_path: Path, k: int, wait_s: float, worker: str):
        self.armed_path = str(armed_path)
        self.request_path = str(request_path)
        self.k = max(1, k)
        self.wait_s = wait_s
        self.worker = worker
        self.armed = False
        self.count = 0
        self.done = False
        self._lock = threading.Lock()
        self._next_look = 0.0  # monotonic time of the next look for the arming file

    def after_db_write(self, offset: int) -> None:
        if self.done:
            return
        with self._lock:
            if not self.armed:
                now = time.monotonic()
                if now < self._next_look:  # a stat per page write would slow every checkpoint
                    return
                self._next_look = now + _ARM_LOOK_SECONDS
                self.armed = os.path.exists(self.armed_path)
                if not self.armed:
                    return
            self.count += 1
            if self.count < self.k:
                return
            self.done = True
        try:
            fd = os.open(self.request_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return
        os.write(fd, f"{self.worker} {os.getpid()} {time.time():.6f} write#{self.count} offset={offset}\n".encode())
        os.close(fd)
        time.sleep(self.wait_s)  # the cut comes now; the checkpoint is half done


_STATE: ShimState | None = None
_VFS: Any = None
_REGISTER_LOCK = threading.Lock()


def shim_state() -> ShimState:
    global _STATE
    if _STATE is None:
        _STATE = ShimState()
    return _STATE


def install(spec: WorkerSpec, history: Any, feature: str) -> tuple[ShimState, Any]:
    """Set up this process's shim state; the first caller gets the closer that records vfs_stats."""
    state = shim_state()
    first = not state.installed_by
    state.installed_by.append(feature)
    state.history = history
    state.worker = spec.name
    if first:
        state.rng = random.Random(f"{spec.seed}:{spec.name}:vfs")

        def closer() -> None:
            history.record({"type": "vfs_stats", "worker": spec.name, "pid": os.getpid(), "t": time.time(),
                            **state.snapshot()})

        return state, closer
    return state, None


def ensure_registered() -> str:
    """Register the shim VFS in this process (once) and return its name."""
    global _VFS
    with _REGISTER_LOCK:
        if _VFS is None:
            _VFS = _make_vfs(shim_state())
    return SHIM_VFS_NAME


class _Base:
    """The wrapped file's own methods, for the undo log."""

    def __init__(self, file: Any, cls: type):
        self.file = file
        self.cls = cls
        self.own: Any = super(cls, file)  # the methods of the classes after cls in file's MRO

    def size(self) -> int:
        return int(self.own.xFileSize())

    def read(self, amount: int, offset: int) -> bytes:
        return bytes(self.own.xRead(amount, offset))


def _make_vfs(state: ShimState) -> Any:
    import apsw

    class ShimFile(apsw.VFSFile):
        def __init__(self, name: Any, flags: list[int]):
            path = name.filename() if isinstance(name, apsw.URIFilename) else name
            super().__init__("", name, flags)
            self.path = path
            self.is_main_db = bool(flags[0] & _OPEN_MAIN_DB)
            self.is_wal = bool(flags[0] & _OPEN_WAL)
            undo = state.undo
            self.fid = undo.file_id(path) if undo is not None and undo.tracks(path) else 0
            trace = state.trace
            self.tid = trace.file_id(path) if trace is not None and trace.tracks(path) else 0
            self.base = _Base(self, ShimFile)

        def _delay(self, key: str, seconds: float) -> None:
            if seconds <= 0:
                return
            if state.delay_random:
                seconds = state.random_uniform(0.0, 2.0 * seconds)
            time.sleep(seconds)
            state.add_delay(key, seconds)

        def _fail(self, call: str, growth: int = 0) -> None:
            plan = state.io_error
            if plan is None:
                return
            kind = "db" if self.is_main_db else ("wal" if self.is_wal else "journal")
            if call == "write" and kind in plan.files and plan.disk_full(growth):
                state.add("io_errors_disk_full")
                raise _io_error(call, "full", self.path)
            if plan.fails(state, call, kind):
                state.add(f"io_errors_{call}")
                raise _io_error(call, plan.error, self.path)

        def xRead(self, amount: int, offset: int) -> bytes:
            self._fail("read")
            state.add("reads")
            state.add("read_bytes", amount)
            if state.throttle is not None:
                state.add_delay("throttle_read", state.throttle.read(amount))
            self._delay("read", state.read_delay_s)
            return super().xRead(amount, offset)

        def xWrite(self, data: Any, offset: int) -> None:
            length = len(data)
            if state.io_error is not None:
                self._fail("write", growth=max(0, offset + length - self.base.size()))
            state.add("writes")
            state.add("write_bytes", length)
            if state.throttle is not None:
                state.add_delay("throttle_write", state.throttle.write(length))
            self._delay("write", state.write_delay_s)
            undo = state.undo  # set before any file it tracks is opened (fid != 0), never unset
            if self.fid and undo is not None:
                undo.before_write(self.fid, self.base, offset, length)
            if self.tid and state.trace is not None:
                state.trace.write(self.tid, offset, data)
            super().xWrite(data, offset)
            if self.is_main_db and state.cut is not None:
                state.cut.after_db_write(offset)

        def xTruncate(self, newsize: int) -> None:
            self._fail("truncate")
            state.add("truncates")
            undo = state.undo
            if self.fid and undo is not None:
                undo.before_truncate(self.fid, self.base, newsize)
            if self.tid and state.trace is not None:
                state.trace.truncate(self.tid, newsize)
            super().xTruncate(newsize)

        def xSync(self, flags: int) -> None:
            self._fail("sync")
            state.add("syncs")
            state.add("wal_syncs" if self.is_wal else ("db_syncs" if self.is_main_db else "other_syncs"))
            if state.sync_mode == "noop":
                state.add("syncs_skipped")
                return
            if state.sync_mode == "slow":
                low, high = state.sync_delay_s, state.sync_delay_max_s
                seconds = state.random_uniform(low, high) if high > low else low
                if seconds > 0:
                    time.sleep(seconds)
                    state.add_delay("sync", seconds)
            undo = state.undo
            trace_began = time.monotonic_ns()
            if self.fid and undo is not None:
                began = undo.sync_begin(self.fid, self.base)
                super().xSync(flags)
                undo.sync_end(self.fid, began)
            else:
                super().xSync(flags)
            if self.tid and state.trace is not None:
                state.trace.synced(self.tid, trace_began)
            state.add("syncs_done")

    class ShimVFS(apsw.VFS):
        def __init__(self) -> None:
            super().__init__(SHIM_VFS_NAME, "")

        def xOpen(self, name: Any, flags: list[int]) -> Any:
            return ShimFile(name, flags)

        def xDelete(self, filename: str, syncdir: bool) -> None:
            undo = state.undo
            if undo is not None and undo.tracks(filename):
                undo.deleted(filename)
            trace = state.trace
            if trace is not None and trace.tracks(filename):
                trace.deleted(filename)
            state.add("deletes")
            return super().xDelete(filename, syncdir)

    return ShimVFS()


def summarize_vfs_stats(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Sum of the workers' vfs_stats records (written when a worker stops normally)."""
    stats = [r for r in records if r.get("type") == "vfs_stats"]
    if not stats:
        return None
    total: dict[str, float] = {}
    features: set[str] = set()
    for rec in stats:
        for key, value in rec.items():
            if key in ("type", "worker", "pid", "t", "features"):
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
        features.update(rec.get("features") or [])
    out: dict[str, Any] = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in sorted(total.items())}
    out["workers_reporting"] = len(stats)
    out["features"] = sorted(features)
    return out


def judge_shim(run: RunEvidence) -> list[Finding]:
    """Judge hook: what the shim did in every worker (run.json ``vfs``); no finding of its own."""
    vfs = summarize_vfs_stats(run.records)
    if vfs is not None:
        run.extras["vfs"] = vfs
    return []


# ------------------------------------------------------------------ io_delay
@dataclass
class IoDelaySettings(FaultSettings):
    """A sleep before every read and/or write SQLite makes (through the VFS shim)."""

    section: ClassVar[str] = "io_delay"

    read_ms: float = setting(0.0, min=0.0, max=10_000.0, doc="delay before each read, milliseconds")
    write_ms: float = setting(0.0, min=0.0, max=10_000.0, doc="delay before each write, milliseconds")
    random: bool = setting(False, doc="each delay is drawn uniformly from [0, 2 x ms] with the run seed")

    @property
    def active(self) -> bool:
        return self.read_ms > 0 or self.write_ms > 0

    def validate(self, scenario: Any) -> None:
        if self.active:
            needs_apsw("io_delay", scenario, "delaying reads and writes")

    def acts_on_connections(self, scenario: Any) -> bool:
        return self.active

    def build(self, scenario: Any, seed: int) -> Any:
        if not self.active:
            return None
        from walstress.faults.base import Fault

        settings = self

        class IoDelayFault(Fault):
            name = "io_delay"

            def stop(self, run: RunControl) -> None:
                self.record(run, t=run.t_go or time.time(), t_end=time.time(), target="all workers",
                            read_ms=settings.read_ms, write_ms=settings.write_ms, random=settings.random,
                            via="vfs")

        return IoDelayFault()

    def install_in_worker(self, spec: WorkerSpec, history: Any, stop: Any) -> Any:
        if not self.active:
            return None
        state, closer = install(spec, history, "io_delay")
        state.read_delay_s = self.read_ms / 1000.0
        state.write_delay_s = self.write_ms / 1000.0
        state.delay_random = self.random
        return closer

    def open_connection_hook(self, spec: WorkerSpec) -> str | None:
        return ensure_registered() if self.active else None


# ------------------------------------------------------------------ io_error
@dataclass
class IoErrorSettings(FaultSettings):
    """I/O errors of the storage, as SQLite sees them through the shim (apsw): SQLITE_IOERR_READ / WRITE /
    FSYNC / TRUNCATE or SQLITE_FULL, at random or at the nth call, and a disk that fills up. The promise
    under test is SQLite's: the error reaches the caller, and no file is damaged nor an acknowledged
    write lost (a COMMIT that failed is indeterminate in the ledger, never lost)."""

    section: ClassVar[str] = "io_error"

    enabled: bool = setting(False, doc="fail the chosen calls of every worker's connections")
    calls: str = setting("write, sync", doc="which calls fail: read, write, sync, truncate (comma-separated)")
    files: str = setting("db, wal", doc="of which files: db, wal, journal (comma-separated)")
    probability: float = setting(0.002, min=0.0, max=1.0, doc="chance that a matching call fails")
    nth: int = setting(0, min=0, max=10**9, doc="fail the nth matching call of each worker process (0: off)")
    error: str = setting("ioerr", choices=("ioerr", "full"), doc="SQLITE_IOERR_<call>, or SQLITE_FULL")
    disk_full_bytes: int = setting(0, min=0, kind="bytes", doc="writes that would grow the database files past "
                                                                "this size fail with SQLITE_FULL (0: off)")

    def _names(self, text: str, allowed: tuple[str, ...], key: str) -> frozenset[str]:
        names = frozenset(part.strip() for part in text.split(",") if part.strip())
        bad = sorted(names - set(allowed))
        if bad or not names:
            raise ValueError(f"faults.io_error.{key}: {bad[0] if bad else 'empty'!r}; a comma-separated list of "
                             f"{', '.join(allowed)}")
        return names

    def validate(self, scenario: Any) -> None:
        self._names(self.calls, ("read", "write", "sync", "truncate"), "calls")
        self._names(self.files, ("db", "wal", "journal"), "files")
        if self.enabled:
            needs_apsw("io_error", scenario, "failing reads, writes and syncs")
            if not (self.probability or self.nth or self.disk_full_bytes):
                raise ValueError("faults.io_error: enabled but never fails; set probability, nth or disk_full_bytes")

    def acts_on_connections(self, scenario: Any) -> bool:
        return bool(self.enabled)

    def build(self, scenario: Any, seed: int) -> Any:
        if not self.enabled:
            return None
        from walstress.faults.base import Fault

        settings = self

        class IoErrorFault(Fault):
            name = "io_error"

            def stop(self, run: RunControl) -> None:
                self.record(run, t=run.t_go or time.time(), t_end=time.time(), target="all workers",
                            calls=settings.calls, files=settings.files, probability=settings.probability,
                            nth=settings.nth, error=settings.error, disk_full_bytes=settings.disk_full_bytes)

        return IoErrorFault()

    def install_in_worker(self, spec: WorkerSpec, history: Any, stop: Any) -> Any:
        if not self.enabled:
            return None
        state, closer = install(spec, history, "io_error")
        db = spec.db_path
        state.io_error = IoErrorPlan(
            calls=self._names(self.calls, ("read", "write", "sync", "truncate"), "calls"),
            files=self._names(self.files, ("db", "wal", "journal"), "files"), probability=self.probability,
            nth=self.nth, error=self.error, disk_full_bytes=self.disk_full_bytes,
            tracked=(db, db + "-wal", db + "-journal"))
        return closer

    def open_connection_hook(self, spec: WorkerSpec) -> str | None:
        return ensure_registered() if self.enabled else None


def judge_io_errors(run: RunEvidence) -> list[Finding]:
    """Judge hook: a run under faults.io_error in which no error was injected tested nothing; say so."""
    section = (run.scenario.get("faults") or {}).get("io_error") or {}
    if not section.get("enabled") or run.partial:
        return []
    vfs = run.extras.get("vfs") or {}
    injected = sum(int(v) for k, v in vfs.items() if k.startswith("io_errors_"))
    run.extras.setdefault("io_errors", {})["injected"] = injected
    if injected:
        return []
    return [Finding("io_error", "errors", "faults.io_error is on but no I/O error was injected in this run (raise "
                                          "faults.io_error.probability, or set nth)")]
