"""The FUSE file systems walstress mounts for a run (``python -m walstress.storage.fusefs``).

A passthrough of one backing folder, with one departure per mode, each the
way a real storage layer is known to differ from a local ext4:

    fuse          plain passthrough: the control, which must stay clean
    nolocks       every POSIX lock is granted at once and none conflicts (NFS
                  without a lock manager, a misconfigured VM share)
    lying-fsync   fsync returns at once; written data reaches the backing
                  file after ``--flush-delay`` seconds, or never once a
                  power cut is asked for (the file ``<ready>.cut-request``:
                  what was not written through is dropped, and nothing is
                  written after it); a clean unmount writes it all
    split-shm     one of two views of the same folder (``--view host`` or
                  ``guest``): each view has its own ``-shm`` file, and the
                  database and its ``-wal`` bypass the page cache so that
                  both views see the same bytes, as two machines sharing a
                  folder (a host and a VM on virtiofs) would

The helper runs in the foreground, writes ``--ready`` once mounted, and
unmounts when it gets SIGTERM or when the process that started it is gone.
The binding is mfusepy (the maintained fork of fusepy: ctypes over libfuse
2 or 3, nothing to compile).
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

MODES = ("fuse", "nolocks", "lying-fsync", "split-shm")


def load_binding() -> Any:
    import mfusepy

    return mfusepy


BLOCK = 4096


class PendingFile:
    """Writes a lying device acknowledged but has not written through yet, in order, indexed by block."""

    def __init__(self) -> None:
        self.writes: dict[int, tuple[float, int, bytes]] = {}  # seq -> (time, offset, data)
        self.blocks: dict[int, set[int]] = {}                  # block -> seqs touching it
        self.next_seq = 0
        self.end = 0                                           # the largest end of a pending write

    @staticmethod
    def _blocks(offset: int, length: int) -> range:
        return range(offset // BLOCK, (offset + max(1, length) - 1) // BLOCK + 1)

    def add(self, offset: int, data: bytes) -> None:
        seq = self.next_seq
        self.next_seq += 1
        self.writes[seq] = (time.monotonic(), offset, data)
        for block in self._blocks(offset, len(data)):
            self.blocks.setdefault(block, set()).add(seq)
        self.end = max(self.end, offset + len(data))

    def take(self, older_than: float | None) -> list[tuple[int, bytes]]:
        """The oldest writes (all of them, or those older than ``older_than`` s), removed, in order."""
        now = time.monotonic()
        out = []
        for seq in sorted(self.writes):
            stamp, offset, data = self.writes[seq]
            if older_than is not None and now - stamp < older_than:
                break
            del self.writes[seq]
            for block in self._blocks(offset, len(data)):
                seqs = self.blocks.get(block)
                if seqs is not None:
                    seqs.discard(seq)
                    if not seqs:
                        del self.blocks[block]
            out.append((offset, data))
        self.end = max((o + len(d) for _, o, d in self.writes.values()), default=0)
        return out

    def overlay(self, data: bytearray, offset: int, size: int) -> None:
        """Apply the pending writes that overlap [offset, offset + size) to what the backing file gave."""
        seqs: set[int] = set()
        for block in self._blocks(offset, size):
            seqs |= self.blocks.get(block, set())
        for seq in sorted(seqs):
            _stamp, start, chunk = self.writes[seq]
            end = start + len(chunk)
            if end <= offset or start >= offset + size:
                continue
            if min(end, offset + size) > offset + len(data):  # written past the backing file's end
                data.extend(b"\0" * (min(end, offset + size) - offset - len(data)))
            lo, hi = max(start, offset), min(end, offset + size)
            data[lo - offset:hi - offset] = chunk[lo - start:hi - start]

    def __len__(self) -> int:
        return len(self.writes)


def make_operations(fuse: Any, backing: str, mode: str, view: str) -> Any:
    FuseOSError: Any = fuse.FuseOSError
    Operations: Any = fuse.Operations

    class Passthrough(Operations):
        use_ns = True

        def __init__(self) -> None:
            self.root = os.path.realpath(backing)
            self.mutex = threading.Lock()
            self.pending: dict[str, PendingFile] = {}  # lying-fsync: path -> what it has not written through
            self.dropped = 0

        # ------------------------------------------------------------ paths
        def _full(self, path: str) -> str:
            name = path.lstrip("/")
            if mode == "split-shm" and name.endswith("-shm") and view == "guest":
                name += ".guest"  # the guest's own shared-memory file
            return os.path.join(self.root, name)

        def _direct(self, path: str) -> bool:
            return mode == "split-shm" and not path.endswith("-shm")

        # --------------------------------------------------------- metadata
        def access(self, path: str, amode: int) -> int:
            if not os.access(self._full(path), amode):
                raise FuseOSError(errno.EACCES)
            return 0

        def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
            try:
                st = os.lstat(self._full(path))
            except OSError as exc:
                raise FuseOSError(exc.errno) from None
            attrs = {key: getattr(st, key) for key in (
                "st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime_ns", "st_mtime_ns", "st_ctime_ns")}
            for key in ("st_atime", "st_mtime", "st_ctime"):
                attrs[key] = attrs.pop(f"{key}_ns")
            if mode == "lying-fsync":
                with self.mutex:
                    pending = self.pending.get(self._full(path))
                    if pending is not None:
                        attrs["st_size"] = max(attrs["st_size"], pending.end)
            return attrs

        def readdir(self, path: str, fh: Any) -> list[str]:
            names = os.listdir(self._full(path))
            if mode == "split-shm":
                names = [n[:-len(".guest")] if n.endswith("-shm.guest") else n for n in names
                         if not (n.endswith("-shm.guest") and view != "guest")
                         and not (n.endswith("-shm") and view == "guest")]
            return [".", "..", *names]

        def statfs(self, path: str) -> dict[str, Any]:
            st = os.statvfs(self._full(path))
            return {key: getattr(st, key) for key in (
                "f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files", "f_flag",
                "f_frsize", "f_namemax")}

        def chmod(self, path: str, mode_bits: int) -> int:
            os.chmod(self._full(path), mode_bits)
            return 0

        def chown(self, path: str, uid: int, gid: int) -> int:
            os.chown(self._full(path), uid, gid)
            return 0

        def utimens(self, path: str, times: Any = None) -> int:
            os.utime(self._full(path), ns=times) if times else os.utime(self._full(path))
            return 0

        def mkdir(self, path: str, mode_bits: int) -> int:
            os.mkdir(self._full(path), mode_bits)
            return 0

        def rmdir(self, path: str) -> int:
            os.rmdir(self._full(path))
            return 0

        def unlink(self, path: str) -> int:
            full = self._full(path)
            with self.mutex:
                self.pending.pop(full, None)
            try:
                os.unlink(full)
            except OSError as exc:
                raise FuseOSError(exc.errno) from None
            return 0

        def rename(self, old: str, new: str) -> int:
            full_old, full_new = self._full(old), self._full(new)
            with self.mutex:
                if full_old in self.pending:
                    self.pending[full_new] = self.pending.pop(full_old)
            os.rename(full_old, full_new)
            return 0

        # ------------------------------------------------------------ files
        def open(self, path: str, fi: Any) -> int:  # raw_fi: the handle and direct_io are set on fi
            try:
                fi.fh = os.open(self._full(path), fi.flags & ~(os.O_CREAT | os.O_EXCL))
            except OSError as exc:
                raise FuseOSError(exc.errno) from None
            fi.direct_io = self._direct(path)
            return 0

        def create(self, path: str, mode_bits: int, fi: Any) -> int:
            try:  # read-write whatever was asked: SQLite reads back what it writes
                fi.fh = os.open(self._full(path), os.O_RDWR | os.O_CREAT, mode_bits)
            except OSError as exc:
                raise FuseOSError(exc.errno) from None
            fi.direct_io = self._direct(path)
            return 0

        def _fd(self, fh: Any) -> int:
            return int(fh.fh) if hasattr(fh, "fh") else int(fh)

        def read(self, path: str, size: int, offset: int, fh: Any) -> bytes:
            if mode != "lying-fsync":
                return os.pread(self._fd(fh), size, offset)
            with self.mutex:  # the backing file and the pending writes, read as one
                data = bytearray(os.pread(self._fd(fh), size, offset))
                pending = self.pending.get(self._full(path))
                if pending is not None:
                    pending.overlay(data, offset, size)
            return bytes(data)

        def write(self, path: str, data: bytes, offset: int, fh: Any) -> int:
            if mode == "lying-fsync":
                with self.mutex:
                    self.pending.setdefault(self._full(path), PendingFile()).add(offset, bytes(data))
                return len(data)
            return os.pwrite(self._fd(fh), data, offset)

        def truncate(self, path: str, length: int, fh: Any = None) -> int:
            full = self._full(path)
            if mode == "lying-fsync":
                self._write_out(full)  # a truncation is a metadata change: it happens in order
            with open(full, "r+b") as handle:
                handle.truncate(length)
            return 0

        def flush(self, path: str, fh: Any) -> int:
            return 0

        def release(self, path: str, fh: Any) -> int:
            os.close(self._fd(fh))
            return 0

        def fsync(self, path: str, datasync: int, fh: Any) -> int:
            if mode == "lying-fsync":
                return 0  # the lie: nothing is written through, and the caller is told it is safe
            if datasync:
                os.fdatasync(self._fd(fh))
            else:
                os.fsync(self._fd(fh))
            return 0

        # ------------------------------------------------------------ locks
        if mode == "nolocks":
            def lock(self, path: str, fh: Any, cmd: int, lock: Any) -> int:
                if cmd == 5:  # F_GETLK: nobody else holds anything
                    lock.contents.l_type = 2  # F_UNLCK
                return 0  # F_SETLK / F_SETLKW: granted, whatever anyone else holds

        # ---------------------------------------------------- lying-fsync
        def _write_out(self, full: str, older_than: float | None = None) -> None:
            with self.mutex:  # held while writing: a read never sees a write between pending and the disk
                pending = self.pending.get(full)
                due = pending.take(older_than) if pending is not None else []
                if not due:
                    return
                fd = os.open(full, os.O_WRONLY)
                try:
                    for offset, data in due:
                        os.pwrite(fd, data, offset)
                finally:
                    os.close(fd)

        def write_out_all(self, older_than: float | None = None) -> None:
            for full in list(self.pending):
                try:
                    self._write_out(full, older_than)
                except OSError:
                    pass

        def drop_pending(self) -> None:
            with self.mutex:
                self.dropped += sum(len(p) for p in self.pending.values())
                self.pending.clear()

    return Passthrough()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m walstress.storage.fusefs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backing", required=True)
    parser.add_argument("--mount", required=True)
    parser.add_argument("--mode", choices=MODES, default="fuse")
    parser.add_argument("--view", choices=("host", "guest"), default="host")
    parser.add_argument("--flush-delay", type=float, default=2.0)
    parser.add_argument("--ready", required=True, help="file to create once the mount is up")
    parser.add_argument("--parent", type=int, required=True, help="unmount when this process is gone")
    args = parser.parse_args(argv)
    fuse = load_binding()
    operations = make_operations(fuse, args.backing, args.mode, args.view)
    stop = threading.Event()

    cut_request, cut_done = Path(args.ready + ".cut-request"), Path(args.ready + ".cut")

    def watcher() -> None:
        """Mark the mount ready, drop what is pending when a power cut is asked for (a file: the main thread
        is inside libfuse and sees no Python signal handler), write out what is due (lying-fsync), and
        leave when the parent is gone."""
        ticks = 0
        while not stop.is_set():
            if os.path.ismount(args.mount) and not Path(args.ready).exists():
                Path(args.ready).write_text(f"{os.getpid()}\n")
            if cut_request.exists() and not cut_done.exists():
                operations.drop_pending()
                cut_done.write_text(f"{operations.dropped}\n")
            ticks += 1
            if args.mode == "lying-fsync" and ticks % 10 == 0 and not cut_done.exists():
                operations.write_out_all(older_than=args.flush_delay)
            if not _alive(args.parent):
                os.kill(os.getpid(), signal.SIGTERM)  # libfuse's handler leaves the loop and unmounts
                return
            stop.wait(0.01)

    threading.Thread(target=watcher, daemon=True).start()
    try:
        fuse.FUSE(operations, args.mount, foreground=True, raw_fi=True, allow_other=True,
                  default_permissions=True, fsname=f"walstress-{args.mode}")
    except RuntimeError as exc:
        if not Path(args.ready).exists():  # never mounted: say why
            print(f"fusefs: mounting {args.mount} failed: {exc}", file=sys.stderr)
            return 2
        # libfuse leaves its loop with a non-zero status after SIGTERM: an unmount we asked for
    finally:
        stop.set()
        if args.mode == "lying-fsync" and not cut_done.exists():
            operations.write_out_all()  # a clean unmount writes everything out; after a cut, nothing more
    return 0


def _alive(pid: int) -> bool:
    """The parent is alive while it is still our parent (a dead one's children go to another)."""
    return os.getppid() == pid


if __name__ == "__main__":
    sys.exit(main())
