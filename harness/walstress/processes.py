"""Worker processes: start, signal, stop, kill and reap them, in one place.

A :class:`WorkerPool` owns every process of a run. It writes each worker's
spec, starts ``python -m walstress.workers SPEC`` as a fresh interpreter
(never a fork of a process holding a connection), and records in the
controller's history when each process was spawned and how it ended:

    worker_spawn   worker, role, pid, t
    worker_exit    worker, pid, t, exit_code, and why it ended:
                   stopped_by_controller  asked to stop (SIGTERM) at the end
                   killed_by_controller   did not stop in time and was killed
                   fault_killed           a fault killed it on purpose

Only the pool changes a process's state; faults act through the run's
control interface (``faults.base.RunControl``), which the controller
implements with a pool.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from walstress.history import HistoryWriter
from walstress.layout import RunLayout
from walstress.runspec import WorkerSpec

REAP_TIMEOUT_S = 10.0
PACKAGE_PARENT = Path(__file__).resolve().parent.parent  # the folder that holds the walstress package

# how a worker process ended (None: still running, or never started)
STOPPED, KILLED_AT_STOP, FAULT_KILLED = "stopped", "killed-at-stop", "fault"


_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (a killed controller)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def worker_environment(sqlite_paths: Iterable[str], extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker: the asked-for SQLite's folders first on the path, then walstress."""
    env = dict(os.environ)
    paths = list(sqlite_paths) + [str(PACKAGE_PARENT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop("PYTHONSTARTUP", None)
    env.update(extra or {})
    return env


@dataclass
class WorkerProcess:
    """One incarnation of a worker: its spec and its process."""

    spec: WorkerSpec
    popen: subprocess.Popen | None = None
    exit_code: int | None = None
    ending: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def role(self) -> str:
        return self.spec.role

    @property
    def incarnation(self) -> int:
        return self.spec.incarnation

    @property
    def stem(self) -> str:
        return self.spec.stem

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def ready(self) -> bool:
        return self.spec.layout.ready(self.stem).exists()


EnvFor = Callable[[WorkerSpec], dict[str, str]]


class WorkerPool:
    def __init__(self, layout: RunLayout, history: HistoryWriter, env_for: EnvFor):
        self.layout = layout
        self.history = history
        self.env_for = env_for
        self.workers: list[WorkerProcess] = []

    # ------------------------------------------------------------- starting
    def spawn(self, spec: WorkerSpec) -> WorkerProcess:
        spec_path = spec.write()
        worker = WorkerProcess(spec)
        log = open(self.layout.log(spec.stem), "ab")
        try:
            worker.popen = subprocess.Popen(
                [sys.executable, "-m", "walstress.workers", str(spec_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env_for(spec), close_fds=True,
            )
        finally:
            log.close()
        self.workers.append(worker)
        self.history.record({"type": "worker_spawn", "worker": worker.name, "role": worker.role,
                             "pid": worker.pid, "t": time.time()})
        return worker

    def wait_ready(self, timeout_s: float) -> None:
        """Until every started worker has reported ready; RuntimeError when one died first or time ran out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pending = [w for w in self.workers if not w.ready()]
            if not pending:
                return
            dead = [w for w in pending if w.popen is not None and w.popen.poll() is not None]
            if dead:
                worker = dead[0]
                code = worker.popen.returncode if worker.popen is not None else None
                raise RuntimeError(f"worker {worker.name} exited with code {code} before it was ready "
                                   f"(see {self.layout.log(worker.stem)})")
            time.sleep(0.01)
        raise RuntimeError(f"workers not ready after {timeout_s:.0f} s")

    # --------------------------------------------------------------- views
    def live(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.alive()]

    def live_pids(self) -> dict[str, int]:
        return {w.name: w.popen.pid for w in self.workers if w.popen is not None and w.popen.poll() is None}

    def all_exited(self) -> bool:
        return not any(w.alive() for w in self.workers)

    # ------------------------------------------------------------- signals
    def signal(self, worker: WorkerProcess, sig: int) -> bool:
        """Send sig to a live worker; False when it is not running."""
        if not worker.alive():
            return False
        assert worker.popen is not None
        try:
            worker.popen.send_signal(sig)
        except (ProcessLookupError, OSError):
            return False
        return True

    def kill(self, workers: Iterable[WorkerProcess], *, ending: str = FAULT_KILLED) -> dict[str, int | None]:
        """SIGKILL every given live worker at once (SIGCONT too: a paused one dies all the same), then
        reap each; the exit code by worker name (None: not reaped within the timeout)."""
        live = [w for w in workers if w.alive()]
        for worker in live:
            worker.ending = ending
        for worker in live:
            self.signal(worker, signal.SIGKILL)
            self.signal(worker, signal.SIGCONT)
        codes: dict[str, int | None] = {}
        for worker in live:
            codes[worker.name] = self._reap(worker, REAP_TIMEOUT_S)
        return codes

    def stop_all(self, grace_s: float) -> None:
        """SIGTERM every live worker, wait, SIGKILL what is left, reap all."""
        live = self.live()
        for worker in live:
            worker.ending = worker.ending or STOPPED  # a fault's kill that is not reaped yet stays one
            self.signal(worker, signal.SIGTERM)
            self.signal(worker, signal.SIGCONT)  # a worker still frozen by a pause fault must run to stop
        deadline = time.monotonic() + grace_s
        for worker in live:
            assert worker.popen is not None
            try:
                worker.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                if worker.ending == STOPPED:
                    worker.ending = KILLED_AT_STOP
                self.signal(worker, signal.SIGKILL)
        self.reap_all()

    def kill_all(self) -> None:
        self.kill(self.workers, ending=KILLED_AT_STOP)
        self.reap_all()

    # ------------------------------------------------------------- reaping
    def _reap(self, worker: WorkerProcess, timeout_s: float | None) -> int | None:
        """Wait for a worker's exit and record it once; None when it did not exit in time."""
        if worker.popen is None:
            return None
        if worker.exit_code is not None:
            return worker.exit_code
        try:
            code = worker.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None
        worker.exit_code = code
        self.history.record({"type": "worker_exit", "worker": worker.name, "pid": worker.pid, "t": time.time(),
                             "exit_code": code, "stopped_by_controller": worker.ending == STOPPED,
                             "killed_by_controller": worker.ending == KILLED_AT_STOP,
                             "fault_killed": worker.ending == FAULT_KILLED})
        return code

    def reap_all(self) -> None:
        for worker in self.workers:
            if worker.popen is None or worker.exit_code is not None:
                continue
            if self._reap(worker, REAP_TIMEOUT_S) is None:
                self.signal(worker, signal.SIGKILL)
                self._reap(worker, None)
