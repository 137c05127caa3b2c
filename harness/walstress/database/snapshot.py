"""A snapshot of a database file and its -wal, copied without SQLite and without this process's locks.

Closing a descriptor of a file drops every POSIX lock this process holds on
it, including the locks of SQLite connections that the calling process (a
test, a worker, an application embedding walstress) may have open on the
same file. So the bytes are copied by a child process, and this process
never opens the live files. The -shm is never copied (it is rebuilt from
the -wal) and nothing is ever written to the originals.

A copy of a database that is being written can be torn (the -wal copied
after a checkpoint restarted it, say). The copy is retried until the files'
inode, size and modification time stay put; if they never do, the caller is
told the copy is not stable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

COMPANIONS = ("-wal", "-journal")     # -shm is rebuilt from the -wal
COPY_ATTEMPTS = 4

# Runs in a child process: see the module docstring.
_COPY_PROGRAM = r"""
import errno, json, os, shutil, sys

def copy(src, dst):
    # the data only: a sparse file's holes stay holes (a 4 GiB file of one page costs one page)
    with open(src, "rb") as f, open(dst, "wb") as g:
        size, pos = os.fstat(f.fileno()).st_size, 0
        while pos < size:
            try:
                start = os.lseek(f.fileno(), pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:   # only a hole is left
                    break
                raise
            end = os.lseek(f.fileno(), start, os.SEEK_HOLE)
            f.seek(start)
            g.seek(start)
            while start < end:
                chunk = f.read(min(end - start, 1 << 20))
                if not chunk:
                    break
                g.write(chunk)
                start += len(chunk)
            pos = end
        g.truncate(size)

out = {}
for src, dst in json.loads(sys.argv[1]):
    try:
        try:
            copy(src, dst)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):   # no SEEK_DATA here: copy every byte
                raise
            shutil.copyfile(src, dst)
        out[src] = None
    except FileNotFoundError:
        out[src] = "missing"
    except OSError as exc:
        out[src] = str(exc) or type(exc).__name__
print(json.dumps(out))
"""


def signature(paths: list[Path]) -> list:
    sig: list[tuple[int, int, int] | None] = []
    for p in paths:
        try:
            st = os.stat(p)
            sig.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            sig.append(None)
    return sig


def copy_in_child(pairs: list[tuple[str, str]]) -> dict[str, str | None]:
    proc = subprocess.run(
        [sys.executable, "-I", "-c", _COPY_PROGRAM, json.dumps(pairs)],
        capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        msg = (proc.stderr.strip().splitlines() or ["copy process failed"])[-1]
        return {src: msg for src, _dst in pairs}
    return json.loads(proc.stdout)


def copy_database(src: Path, dest_dir: Path) -> tuple[dict[str, str | None], bool]:
    """Copy db (+ -wal, -journal) into dest_dir under the same base names.

    Returns ({suffix: None | "missing" | error text}, stable). The database
    file is copied before its -wal: a checkpoint in between leaves the copy
    consistent, only a WAL restart in between tears it (and changes the
    signature, so the copy is retried).
    """
    paths = [src] + [Path(str(src) + s) for s in COMPANIONS]
    status: dict[str, str | None] = {}
    for _attempt in range(COPY_ATTEMPTS):
        before = signature(paths)
        pairs = [(str(p), str(dest_dir / p.name)) for p, sig in zip(paths, before)
                 if sig is not None]
        for _src, dst in pairs:
            if os.path.exists(dst):
                os.unlink(dst)
        out = copy_in_child(pairs)
        status = {"": out.get(str(src), "missing")}
        for suffix, p in zip(COMPANIONS, paths[1:]):
            status[suffix] = out.get(str(p), "missing")
        if signature(paths) == before:
            return status, True
        time.sleep(0.05)
    return status, False
