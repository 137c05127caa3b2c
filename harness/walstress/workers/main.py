"""Worker process: ``python -m walstress.workers SPEC.json`` (a :class:`~walstress.runspec.WorkerSpec`).

A worker is started by the controller as a fresh interpreter (never a fork
of a process holding a connection). It runs ``threads`` connections of one
role, records its history and ledger, and exits by itself when:
- it receives SIGTERM (the controller's stop),
- its parent dies (PR_SET_PDEATHSIG, and a watcher polling getppid()),
within a few seconds, flushing what it recorded.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback

from walstress.faults.worker_side import worker_hooks
from walstress.history import HistoryWriter
from walstress.loading import load_object
from walstress.processes import die_with_parent
from walstress.runspec import WorkerSpec
from walstress.sqlite.driver import library_info
from walstress.workers.base import WorkerContext, describe_error

EXIT_OK = 0
EXIT_CRASH = 3
EXIT_VERSION_MISMATCH = 4
EXIT_ORPHANED = 5
_GRACE_SECONDS = 3.0
_STOP_BUDGET_SECONDS = 8.0  # below the controller's grace before SIGKILL (controller.STOP_GRACE_SECONDS)


def set_soon(event: threading.Event) -> None:
    """Set ``event`` from a thread of its own. For a signal handler: it runs in the main thread between two
    bytecodes, maybe while that thread holds the event's lock (inside ``Event.wait``), and setting the
    event there would wait for the lock forever (a worker left behind by a killed controller)."""
    threading.Thread(target=event.set, name="set-stop", daemon=True).start()


def _watch_parent(parent_pid: int, stop: threading.Event, done: threading.Event) -> None:
    """Stop when the parent is gone, and force the exit if the threads do not end in time (whatever
    holds the stop event's lock: it is set from another thread, and the exit does not wait for it).

    A stop asked by a living controller (SIGTERM) is not forced here: the controller
    waits for the worker and escalates to SIGKILL itself after its own grace period.
    """
    while not done.wait(0.2):
        if os.getppid() != parent_pid:
            set_soon(stop)
            if not done.wait(_GRACE_SECONDS):
                os._exit(EXIT_ORPHANED)
            return


def main(spec_path: str) -> int:
    spec = WorkerSpec.read(spec_path)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the controller's to handle
    stop = threading.Event()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: set_soon(stop))
    die_with_parent()
    parent_pid = spec.parent_pid
    if os.getppid() != parent_pid:
        return EXIT_ORPHANED
    threading.Thread(target=_watch_parent, args=(parent_pid, stop, done), daemon=True).start()

    layout = spec.layout
    history = HistoryWriter(layout.history(spec.stem))
    name, role, driver = spec.name, spec.role, spec.connection.driver
    try:
        info = library_info(driver)
    except Exception as exc:  # the binding itself failed to load
        history.record({"type": "worker_error", "worker": name, "t": time.time(), "msg": f"cannot load {driver}: {exc}"})
        history.close()
        return EXIT_CRASH
    history.record({
        "type": "worker_start", "worker": name, "role": role, "pid": os.getpid(), "t": time.time(),
        "driver": info["driver"], "sqlite_version": info["sqlite_version"], "module_version": info["module_version"],
        "module_path": info["module_path"], "threads": spec.threads,
    })
    expected = spec.connection.expected_sqlite_version
    if expected != "system" and info["sqlite_version"] != expected:
        history.record({"type": "worker_error", "worker": name, "t": time.time(),
                        "msg": f"loaded SQLite {info['sqlite_version']} but {expected} was asked for"})
        history.close()
        return EXIT_VERSION_MISMATCH

    sys.path.extend(p for p in spec.python_path if p not in sys.path)  # where the scenario's own code lives
    try:
        role_cls = load_object(spec.actor, fallback_file=spec.role_file)
        settings_cls = load_object(spec.settings_class, fallback_file=spec.role_file)
        settings = settings_cls(**spec.settings)
    except Exception as exc:
        history.record({"type": "worker_error", "worker": name, "t": time.time(),
                        "msg": f"cannot load the {role} role: {exc}", "traceback": traceback.format_exc(limit=8)})
        history.close()
        return EXIT_CRASH
    try:
        hooks = worker_hooks(spec)
        hooks.install(spec, history, stop)
    except Exception as exc:
        history.record({"type": "worker_error", "worker": name, "t": time.time(),
                        "msg": f"fault hooks failed: {exc!r}", "traceback": traceback.format_exc(limit=8)})
        history.close()
        return EXIT_CRASH
    vfs_name = hooks.vfs_name or (settings.vfs if settings.vfs != "unix" else None)  # the shim, or the protocol
    ctx = WorkerContext(spec=spec, settings=settings, history=history, stop=stop, vfs_name=vfs_name)
    threads_n = spec.threads
    ready = threading.Barrier(threads_n + 1)
    go = threading.Event()
    failures: list[str] = []

    def body(index: int) -> None:
        actor = None
        try:
            actor = role_cls(ctx, index)
            actor.setup()
        except Exception as exc:
            failures.append(f"thread {index} setup: {exc!r}")
            history.record({"type": "worker_error", "worker": name, "thread": index, "t": time.time(),
                            "msg": f"setup failed: {describe_error(exc)}", "traceback": traceback.format_exc(limit=8)})
            stop.set()
        try:
            ready.wait()
        except threading.BrokenBarrierError:
            return
        go.wait()
        if actor is None or stop.is_set():
            if actor is not None:
                actor.teardown()
            return
        try:
            actor.run()
        except Exception as exc:
            failures.append(f"thread {index}: {exc!r}")
            history.record({"type": "worker_error", "worker": name, "thread": index, "t": time.time(),
                            "msg": describe_error(exc), "traceback": traceback.format_exc(limit=12)})
            stop.set()
        finally:
            actor.teardown()

    threads = [threading.Thread(target=body, args=(i,), name=f"{name}-t{i}", daemon=True) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    try:
        ready.wait(timeout=120)
    except threading.BrokenBarrierError:
        stop.set()
    history.record({"type": "worker_ready", "worker": name, "t": time.time()})
    history.flush()
    layout.ready(spec.stem).touch()
    go_path = layout.go
    while not stop.is_set() and not go_path.exists():
        stop.wait(0.005)
    go.set()
    while any(t.is_alive() for t in threads):
        for thread in threads:
            thread.join(timeout=0.1)
        if stop.is_set():
            deadline = time.monotonic() + _STOP_BUDGET_SECONDS
            for thread in threads:
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
            break
    stuck = [t.name for t in threads if t.is_alive()]
    history.record({"type": "worker_stop", "worker": name, "t": time.time(), "failures": failures,
                    "stuck_threads": stuck})
    if not stuck:  # a thread still inside a transaction keeps its ledger and connection
        hooks.close()
        ctx.close()
    history.close()
    done.set()
    return EXIT_CRASH if failures else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1]))
