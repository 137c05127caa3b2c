"""``walstress watch PID...``: the lock watch alone, against any running application.

Read-only: it reads ``/proc/locks``, ``/proc/PID/fd`` and ``/proc/PID/maps``
of the processes it is given (and, with ``children``, of their children) and
prints every event as it happens: a process that has a WAL database and
its -shm open but holds no POSIX lock on one of them, a deleted -wal/-shm
still in use, two SQLite libraries in one process. It never opens a
database, signals a process or writes anywhere but its output.

Exit status: 0 nothing seen, 1 an event was seen, 2 the watch could not run.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any, Callable, TextIO

import psutil

from walstress.errors import UsageError, WalstressError
from walstress.lockwatch import LockWatch, available

EVENT_LABELS = {"lock_lost": "LOCK LOST", "lock_regained": "lock regained", "deleted_open": "DELETED FILE IN USE",
                "two_libraries": "TWO SQLITE LIBRARIES", "split_wal": "ONE DATABASE, TWO -SHM"}
HAZARDS = ("lock_lost", "deleted_open", "two_libraries", "split_wal")
CHILDREN_EVERY_S = 1.0


def describe(pid: int) -> str:
    """A short name for a process: its command line, cut."""
    try:
        words = psutil.Process(pid).cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return f"pid {pid}"
    text = " ".join(os.path.basename(words[0]) if i == 0 else w for i, w in enumerate(words)) if words else ""
    return (text[:60] + "...") if len(text) > 63 else (text or f"pid {pid}")


class Targets:
    """The processes being watched: the given pids (while alive), and their children when asked."""

    def __init__(self, pids: list[int], *, children: bool):
        self.roots = pids
        self.children = children
        self._names: dict[int, str] = {}
        self._kids: list[int] = []
        self._kids_read = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> dict[str, int]:
        with self._lock:
            pids = [p for p in self.roots if psutil.pid_exists(p)]
            if self.children and time.monotonic() - self._kids_read >= CHILDREN_EVERY_S:
                self._kids_read = time.monotonic()
                kids: list[int] = []
                for pid in pids:
                    try:
                        kids += [c.pid for c in psutil.Process(pid).children(recursive=True)]
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        continue
                self._kids = kids
            every = list(dict.fromkeys(pids + [k for k in self._kids if psutil.pid_exists(k)]))
            out = {}
            for pid in every:
                if pid not in self._names:
                    self._names[pid] = describe(pid)
                out[f"{self._names[pid]} [{pid}]"] = pid
            return out


def _check_pids(pids: list[int]) -> None:
    if not pids:
        raise UsageError("watch: give the pid of at least one process")
    for pid in pids:
        if not psutil.pid_exists(pid):
            raise WalstressError(f"watch: no process with pid {pid}")
        if not os.access(f"/proc/{pid}/fd", os.R_OK):
            raise WalstressError(f"watch: cannot read /proc/{pid}/fd; watch as root or as the process's own user")


def human_line(rec: dict[str, Any], t0: float) -> str | None:
    kind = rec.get("type")
    stamp = time.strftime("%H:%M:%S", time.localtime(rec.get("t", time.time())))
    offset = f"+{rec.get('t', t0) - t0:7.2f}s"
    if kind in HAZARDS:
        text = rec.get("msg", "")
        if kind == "lock_lost" and rec.get("still_held") is not None:
            text += f" (still held: {', '.join(rec['still_held']) or 'nothing'})"
        return f"{stamp} {offset}  {EVENT_LABELS[kind]}: {text}"
    if kind == "lock_regained":
        return (f"{stamp} {offset}  {EVENT_LABELS[kind]}: {rec.get('worker')} holds a lock on "
                f"{os.path.basename(rec.get('file', ''))} again after {rec.get('after_s')} s")
    if kind == "sqlite_libraries":
        libs = rec.get("libraries") or {}
        listing = ", ".join(f"{path} ({source[:19]})" for path, source in libs.items()) or "none mapped"
        return f"{stamp} {offset}  {rec.get('worker')}: SQLite libraries: {listing}"
    if kind == "note":
        return f"{stamp} {offset}  note: {rec.get('msg')}"
    return None


def locks_line(rec: dict[str, Any], t0: float) -> str:
    held = rec.get("held") or {}
    parts = [f"{proc}: " + "; ".join(f"{name} {' '.join(locks) or '-'}" for name, locks in files.items())
             for proc, files in held.items()]
    return f"{time.strftime('%H:%M:%S', time.localtime(rec['t']))} +{rec['t'] - t0:7.2f}s  locks: " + (
        " | ".join(parts) or "no WAL database open")


def watch(pids: list[int], *, hz: float = 20.0, duration: float | None = None, children: bool = False,
          as_json: bool = False, show_locks: bool = False, out: TextIO = sys.stdout,
          stop: Callable[[], bool] | None = None, quiet: bool = False) -> int:
    """Watch until every process has exited, ``duration`` has passed, ``stop()`` says so or Ctrl-C.

    ``quiet``: the hazards as they happen and the summary line, nothing else.
    """
    why_not = available()
    if why_not:
        raise WalstressError(f"watch: {why_not}")
    if hz <= 0 or hz > 200:
        raise UsageError(f"watch: --hz {hz:g}: between 0 and 200 samples a second")
    _check_pids(pids)
    targets = Targets(pids, children=children)
    t0 = time.time()
    seen: dict[str, int] = {}
    lock = threading.Lock()

    def emit(rec: dict[str, Any]) -> None:
        with lock:
            kind = rec.get("type", "")
            if kind in HAZARDS:
                seen[kind] = seen.get(kind, 0) + 1
            if as_json:
                line: str | None = json.dumps(rec, default=str)
            elif kind == "locks":
                line = locks_line(rec, t0) if show_locks and not quiet else None
            elif kind == "lock_watch" or (quiet and kind not in HAZARDS):
                line = None
            else:
                line = human_line(rec, t0)
            if line is not None:
                print(line, file=out, flush=True)

    names = ", ".join(f"{name}" for name in targets())
    if not as_json and not quiet:
        print(f"watching {names} at {hz:g} Hz{' (and children)' if children else ''}; read-only; "
              f"{'for ' + format(duration, 'g') + ' s' if duration else 'until the processes exit or Ctrl-C'}",
              file=out, flush=True)
    lw = LockWatch(targets, emit, hz=hz)
    lw.start()
    try:
        end = time.monotonic() + duration if duration else None
        while lw.is_alive():
            if end is not None and time.monotonic() >= end:
                break
            if not any(psutil.pid_exists(p) for p in pids):
                break
            if stop is not None and stop():
                break
            time.sleep(0.05)
    except KeyboardInterrupt:
        pass
    finally:
        lw.stop()
    stats = lw.stats()
    if not as_json:
        print(f"watched {stats['wall_s']:.1f} s, {stats['samples']} samples, {stats['core_share'] * 100:.2f}% of a "
              f"core: {seen.get('lock_lost', 0)} lock(s) lost, {seen.get('deleted_open', 0)} deleted file(s) in use, "
              f"{seen.get('two_libraries', 0)} process(es) with two SQLite libraries, {seen.get('split_wal', 0)} "
              "database(s) used with two -shm files", file=out, flush=True)
    return 1 if seen else 0
