"""Lock hazards: documented ways a process defeats SQLite's own locking.

Each hazard is opt-in and, except the controller side of ``wal_unlink``,
acts inside the worker processes of the roles it names (a thread started
by ``install_in_worker``), next to the worker's own connections:

faults.lock_breaker   a thread that opens the database file (``target =
                      "db"``) or its ``-wal`` (``"wal"``) with plain
                      ``open()``, reads 100 bytes and closes it, every
                      ``interval_ms``. On POSIX the ``close()`` drops every
                      advisory lock the process holds on that file, so
                      another process believes it is alone.
faults.fork           a thread holding an open connection calls ``fork()``
                      every ``interval_ms``; the child uses the inherited
                      connection (``child_action = "write"`` or ``"read"``)
                      or only closes it (``"close"``), then ``_exit``s.
faults.two_libraries  the worker also opens the database through the other
                      binding (apsw next to the stdlib ``sqlite3``; each
                      carries its own SQLite copy, with its own list of open
                      files) and works through it; with ``connection =
                      "per-op"`` it opens and closes that second connection
                      every time (the plain-close hazard).
faults.wal_unlink     the ``-wal`` file is unlinked or renamed under live
                      connections, by the controller (``side =
                      "controller"``) or by the workers of ``roles``, at the
                      times of a schedule (see schedule.py).

Every action is counted: one ``fault`` record per second and worker with the
count by outcome (``ok``, ``missing``, ``busy``, ``corrupt`` ...), so a
report can shade when and where the hazard was active.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from importlib import import_module
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from walstress.faults.base import Fault, FaultSettings, RunControl, setting
from walstress.faults.schedule import (
    ScheduledFault,
    applies_to,
    check_roles,
    check_schedule,
    schedule_times,
    start_counted,
    start_thread,
    wait_for_go,
)
from walstress.sqlite.driver import classify_error, connect, is_sqlite_error
from walstress.runspec import WorkerSpec

_FORK_CHILD_TIMEOUT_S = 2  # whole seconds (alarm); a worker must stop within 3 s
# exit codes of a fork child: what happened to its SQLite call
_CHILD_CODES = {"ok": 0, "busy": 10, "locked": 11, "corrupt": 12, "ioerr": 13, "other": 14, "exception": 15}
_CHILD_OUTCOMES = {code: name for name, code in _CHILD_CODES.items()}


def _probe_row(spec: WorkerSpec) -> tuple[str, str, str, float]:
    """Values for a row a hazard may insert (not in any ledger, so never judged)."""
    sessions = spec.facts.session_ids
    session = sessions[0] if sessions else "hazard"
    return (session, "user", f"written by a lock hazard in {spec.name}", time.time())


_INSERT_SQL = "INSERT INTO messages(session_id, role, content, timestamp) VALUES (?,?,?,?)"
_READ_SQL = "SELECT count(*), max(length(content)) FROM (SELECT content FROM messages ORDER BY id DESC LIMIT 50)"


# ------------------------------------------------------------ lock breaker
@dataclass
class LockBreakerSettings(FaultSettings):
    section: ClassVar[str] = "lock_breaker"
    enabled: bool = setting(False, doc="a thread in each worker of `roles` opens/reads/closes the file")
    interval_ms: int = setting(1, min=1, max=600_000, kind="ms", doc="pause between two open/read/close")
    target: str = setting("db", choices=("db", "wal"), doc="which file: the database or its -wal")
    roles: str = setting("writer", doc="comma-separated roles whose workers run the breaker thread")

    def validate(self, scenario: Any) -> None:
        check_roles("lock_breaker", "roles", self.roles, scenario)

    def install_in_worker(self, spec: WorkerSpec, history: Any, stop: threading.Event) -> Callable[[], None] | None:
        if not self.enabled or not applies_to(self.roles, spec):
            return None
        path = spec.db_path + ("-wal" if self.target == "wal" else "")
        interval = self.interval_ms / 1000.0

        def loop(local: threading.Event, count: Callable[[str], None]) -> None:
            while not local.is_set():
                try:
                    with open(path, "rb") as handle:  # the hazard: a plain close() of the live file
                        handle.read(100)
                    outcome = "ok"
                except FileNotFoundError:
                    outcome = "missing"
                except OSError:
                    outcome = "error"
                count(outcome)
                local.wait(interval)

        return start_counted("lock_breaker", spec, history,
                              {"file": os.path.basename(path), "interval_ms": self.interval_ms}, stop, loop)


# --------------------------------------------------------------------- fork
@dataclass
class ForkSettings(FaultSettings):
    section: ClassVar[str] = "fork"
    enabled: bool = setting(False, doc="a thread holding an open connection forks; the child uses it")
    interval_ms: int = setting(500, min=1, max=600_000, kind="ms", doc="pause between two forks")
    child_action: str = setting("write", choices=("write", "read", "close"),
                                doc="the child inserts a row, reads, or only closes the inherited connection")
    hold_read: bool = setting(False, doc="the parent holds a read transaction open across the fork")
    roles: str = setting("writer", doc="comma-separated roles whose workers fork")

    def validate(self, scenario: Any) -> None:
        check_roles("fork", "roles", self.roles, scenario)
        if self.enabled and not hasattr(os, "fork"):
            raise ValueError("faults.fork.enabled: this platform has no fork()")

    def install_in_worker(self, spec: WorkerSpec, history: Any, stop: threading.Event) -> Callable[[], None] | None:
        if not self.enabled or not applies_to(self.roles, spec):
            return None
        interval = self.interval_ms / 1000.0
        action, hold = self.child_action, self.hold_read

        def loop(local: threading.Event, count: Callable[[str], None]) -> None:
            conn = None
            while not local.wait(interval):
                try:
                    if conn is None:
                        conn = connect(spec.db_path, driver=spec.connection.driver, busy_timeout_ms=spec.connection.busy_timeout_ms)
                    conn.execute(_READ_SQL)  # the connection has the WAL index mapped and a recent snapshot
                    if hold:
                        conn.execute("BEGIN")
                        conn.execute(_READ_SQL)
                except Exception as exc:
                    if not is_sqlite_error(exc):
                        raise
                    if conn is not None:
                        conn.rollback_quietly()
                    count(f"parent-{classify_error(exc)}")
                    continue
                outcome = _fork_once(conn, action, spec, local)
                if hold:
                    conn.rollback_quietly()
                count(outcome)
            if conn is not None:
                conn.close()

        return start_counted("fork", spec, history, {"child_action": action, "hold_read": hold}, stop, loop)


def _fork_once(conn: Any, action: str, spec: WorkerSpec, stop: threading.Event) -> str:
    """Fork with the connection open; the child's outcome (from its exit status)."""
    row = _probe_row(spec)
    pid = os.fork()  # the hazard, on purpose: a child inheriting an open SQLite connection
    if pid == 0:
        code = _CHILD_CODES["ok"]
        try:
            signal.alarm(_FORK_CHILD_TIMEOUT_S)  # a child stuck on an inherited mutex dies by itself
            if action == "write":
                conn.execute(_INSERT_SQL, row)
            elif action == "read":
                conn.execute(_READ_SQL)
            else:
                conn.close()
        except BaseException as exc:  # noqa: BLE001 - the child reports everything through its exit code
            code = _CHILD_CODES.get(classify_error(exc), _CHILD_CODES["other"]) if is_sqlite_error(exc) \
                else _CHILD_CODES["exception"]
        os._exit(code)
    deadline = time.monotonic() + _FORK_CHILD_TIMEOUT_S + 0.5
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline or stop.is_set():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            return "child-hung" if not stop.is_set() else "child-killed-at-stop"
        time.sleep(0.002)
    if os.WIFSIGNALED(status):
        return "child-signal-" + signal.Signals(os.WTERMSIG(status)).name
    return "child-" + _CHILD_OUTCOMES.get(os.WEXITSTATUS(status), f"exit-{os.WEXITSTATUS(status)}")


# ------------------------------------------------------------ two libraries
def _other_driver(driver: str) -> str:
    return "stdlib" if driver == "apsw" else "apsw"


def apsw_available() -> bool:
    try:
        import apsw  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class TwoLibrariesSettings(FaultSettings):
    section: ClassVar[str] = "two_libraries"
    enabled: bool = setting(False, doc="workers also open the database through the other SQLite binding")
    interval_ms: int = setting(5, min=1, max=600_000, kind="ms", doc="pause between two actions of the second library")
    work: str = setting("read", choices=("read", "write", "mixed"), doc="what the second library does")
    connection: str = setting("per-op", choices=("per-op", "persistent"),
                              doc="per-op: open and close the second connection every time (plain-close hazard)")
    roles: str = setting("writer", doc="comma-separated roles whose workers use two libraries")

    def validate(self, scenario: Any) -> None:
        check_roles("two_libraries", "roles", self.roles, scenario)
        if self.enabled and not apsw_available():
            raise ValueError("faults.two_libraries.enabled needs apsw (the second SQLite library), which is not "
                             "installed: pip install 'walstress[apsw]'")

    def install_in_worker(self, spec: WorkerSpec, history: Any, stop: threading.Event) -> Callable[[], None] | None:
        if not self.enabled or not applies_to(self.roles, spec):
            return None
        other = _other_driver(spec.connection.driver)
        # loaded now, as an application that uses both has them from its start (and the lock watch's
        # first reading of the worker's memory map sees both)
        import_module("apsw" if other == "apsw" else "sqlite3")
        interval = self.interval_ms / 1000.0
        per_op = self.connection == "per-op"
        work = self.work
        rng = random.Random(f"{spec.seed}:{spec.name}:two_libraries")

        def loop(local: threading.Event, count: Callable[[str], None]) -> None:
            conn = None
            while not local.wait(interval):
                try:
                    if conn is None:
                        conn = connect(spec.db_path, driver=other, busy_timeout_ms=spec.connection.busy_timeout_ms)
                    write = work == "write" or (work == "mixed" and rng.random() < 0.5)
                    if write:
                        conn.execute(_INSERT_SQL, _probe_row(spec))
                    else:
                        conn.execute(_READ_SQL)
                    outcome = "write" if write else "read"
                except Exception as exc:
                    if not is_sqlite_error(exc):
                        raise
                    outcome = classify_error(exc)
                    if conn is not None:
                        conn.rollback_quietly()
                if per_op and conn is not None:
                    conn.close()
                    conn = None
                count(outcome)
            if conn is not None:
                conn.close()

        return start_counted("two_libraries", spec, history,
                              {"driver": spec.connection.driver, "second_driver": other, "work": work,
                               "connection": self.connection}, stop, loop)


# --------------------------------------------------------------- wal unlink
@dataclass
class WalUnlinkSettings(FaultSettings):
    section: ClassVar[str] = "wal_unlink"
    enabled: bool = setting(False, doc="unlink or rename the -wal file under live connections")
    action: str = setting("unlink", choices=("unlink", "rename"), doc="rename moves it to <db>-wal.renamed-<n>")
    side: str = setting("controller", choices=("controller", "worker"),
                        doc="who does it: the controller, or a thread in each worker of `roles`")
    roles: str = setting("writer", doc="comma-separated roles (side = \"worker\")")
    at: str = setting("", doc='times after go, e.g. "2, 5.5s"')
    every_ms: int = setting(0, min=0, max=86_400_000, kind="ms", doc="act every interval (0: off)")
    random_count: int = setting(0, min=0, max=10_000, doc="act this many times at seeded random times")

    def validate(self, scenario: Any) -> None:
        check_roles("wal_unlink", "roles", self.roles, scenario)
        if self.enabled:
            check_schedule("wal_unlink", self.at, self.every_ms, self.random_count)
            if scenario.database.journal_mode != "WAL":
                raise ValueError('faults.wal_unlink.enabled needs database.journal_mode = "WAL"')

    def build(self, scenario: Any, seed: int) -> Fault | None:
        if not self.enabled or self.side != "controller":
            return None
        return WalUnlinkFault(self, seed)

    def install_in_worker(self, spec: WorkerSpec, history: Any, stop: threading.Event) -> Callable[[], None] | None:
        if not self.enabled or self.side != "worker" or not applies_to(self.roles, spec):
            return None
        settings = self
        wal = spec.db_path + "-wal"

        def body(local: threading.Event) -> None:
            t_go = wait_for_go(spec, local)
            if t_go is None:
                return
            duration = float(spec.duration or 3600.0)
            rng = random.Random(f"{spec.seed}:{spec.name}:wal_unlink")
            for n, offset in enumerate(schedule_times(settings.at, settings.every_ms, settings.random_count,
                                                      duration, rng)):
                if local.wait(max(0.0, t_go + offset - time.time())):
                    return
                rec = _act_on_wal(wal, settings.action, f"{spec.name}-{n}")
                history.record({"type": "fault", "name": "wal_unlink", "t": rec.pop("t"), "t_end": time.time(),
                                "target": os.path.basename(wal),
                                "detail": {**rec, "side": "worker", "worker": spec.name, "pid": os.getpid()}})

        return start_thread(f"{spec.name}-wal-unlink", body, stop)


def _act_on_wal(wal: str, action: str, tag: str) -> dict[str, Any]:
    t = time.time()
    try:
        size = os.stat(wal).st_size
    except OSError:
        size = None
    try:
        if action == "unlink":
            os.unlink(wal)
            moved_to = None
        else:
            moved_to = f"{wal}.renamed-{tag}"
            os.rename(wal, moved_to)
        outcome = "ok"
    except FileNotFoundError:
        outcome, moved_to = "missing", None
    except OSError as exc:
        outcome, moved_to = f"error: {exc}", None
    return {"t": t, "action": action, "outcome": outcome, "wal_bytes": size,
            "moved_to": os.path.basename(moved_to) if moved_to else None}


class WalUnlinkFault(ScheduledFault):
    """The controller unlinks or renames the -wal at the scheduled times."""

    name = "wal_unlink"

    def tick(self, run: RunControl) -> None:
        now = time.time()
        for n in self.due(run, now):
            rec = _act_on_wal(str(run.db_path) + "-wal", self.settings.action, str(n))
            t = rec.pop("t")
            self.record(run, t=t, t_end=time.time(), target=os.path.basename(str(run.db_path)) + "-wal",
                        side="controller", **rec)

    def stop(self, run: RunControl) -> None:
        for offset in self.missed():  # the run ended before the controller's loop got there
            t = run.t_go + offset
            self.record(run, t=t, t_end=t, target=os.path.basename(str(run.db_path)) + "-wal", side="controller",
                        action=self.settings.action, outcome="skipped", reason="the run ended first")
