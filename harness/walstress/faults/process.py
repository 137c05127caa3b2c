"""Process faults: SIGKILL a worker (and maybe restart it), SIGSTOP/SIGCONT pauses.

faults.kill    SIGKILL one live worker of ``target`` at the times of a
               schedule (see schedule.py). With ``restart = true`` a new
               process is started for the same worker spec after
               ``restart_delay_ms``: a new *incarnation*, with its own
               spec, history, ledger and log file names (``<name>.i<k>``),
               so nothing of the killed one is overwritten. A transaction in
               flight when the worker died stays indeterminate in its
               ledger (prepared, never acknowledged), never lost. The killed
               process is marked ``fault_killed`` so the judge does not call
               its death a problem.
faults.pause   SIGSTOP one live worker of ``target`` for ``duration_ms``,
               then SIGCONT. A reader frozen inside a read transaction
               (``workers.reader.hold_ms``) pins the WAL; a writer frozen
               inside ``BEGIN IMMEDIATE`` holds the write lock. Every
               worker still paused at the end of the run is resumed before
               the controller stops the workers.

``target`` is a role (one live worker of it, picked with the run seed), a
worker name (``writer-1``) or ``any``. Each action is one ``fault`` record:
``t``/``t_end`` (the pause window; for a kill, the kill and the reap),
``target`` (the worker name) and ``detail`` (pid, signal, incarnation ...).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from walstress.faults.base import Fault, FaultSettings, RunControl, WorkerHandle, setting
from walstress.faults.schedule import ScheduledFault, check_schedule, check_target, live_candidates



class _TargetedSchedule(FaultSettings):
    """Kill and pause: a target worker or role, hit on a schedule; both checked alike."""

    section: ClassVar[str] = ""
    if TYPE_CHECKING:  # the subclasses' fields (declared there, to keep each section's key order)
        enabled: bool
        target: str
        at: str
        every_ms: int
        random_count: int

    def validate(self, scenario: Any) -> None:
        if self.enabled:
            check_schedule(self.section, self.at, self.every_ms, self.random_count)
            check_target(self.section, scenario, self.target)


@dataclass
class KillSettings(_TargetedSchedule):
    section: ClassVar[str] = "kill"
    enabled: bool = setting(False, doc="SIGKILL a worker at the scheduled times")
    target: str = setting("writer", doc='a role, a worker name ("writer-1") or "any"')
    at: str = setting("", doc='times after go, e.g. "2, 5.5s"')
    every_ms: int = setting(0, min=0, max=86_400_000, kind="ms", doc="kill every interval (0: off)")
    random_count: int = setting(0, min=0, max=10_000, doc="kill this many times at seeded random times")
    restart: bool = setting(False, doc="start a new process for the killed worker")
    restart_delay_ms: int = setting(500, min=0, max=3_600_000, kind="ms", doc="wait before the restart")

    def build(self, scenario: Any, seed: int) -> Fault | None:
        return KillFault(self, seed) if self.enabled else None


@dataclass
class PauseSettings(_TargetedSchedule):
    section: ClassVar[str] = "pause"
    enabled: bool = setting(False, doc="SIGSTOP a worker for duration_ms, then SIGCONT")
    target: str = setting("reader", doc='a role, a worker name ("reader-0") or "any"')
    at: str = setting("", doc='times after go, e.g. "2, 5.5s"')
    every_ms: int = setting(0, min=0, max=86_400_000, kind="ms", doc="pause every interval (0: off)")
    random_count: int = setting(0, min=0, max=10_000, doc="pause this many times at seeded random times")
    duration_ms: int = setting(1000, min=1, max=86_400_000, kind="ms", doc="how long a worker stays frozen")

    def build(self, scenario: Any, seed: int) -> Fault | None:
        return PauseFault(self, seed) if self.enabled else None


def _record_missed(fault: ScheduledFault, run: RunControl, action: str) -> None:
    """Scheduled actions the run ended before (the controller's loop stops at the end time)."""
    for offset in fault.missed():
        fault.record(run, t=run.t_go + offset, t_end=run.t_go + offset, target=fault.settings.target,
                     action=f"{action}-skipped", reason="the run ended before the scheduled time was reached",
                     offset_s=round(offset, 3))


class KillFault(ScheduledFault):
    name = "kill"

    def __init__(self, settings: KillSettings, seed: int):
        super().__init__(settings, seed)
        self.restarts: list[tuple[float, WorkerHandle]] = []  # (due epoch time, the killed worker)
        self.started: list[WorkerHandle] = []  # restarted incarnations
        self.stopping = False

    def tick(self, run: RunControl) -> None:
        now = time.time()
        for _ in self.due(run, now):
            self._kill_one(run)
        due = [item for item in self.restarts if item[0] <= now]
        for item in due:
            self.restarts.remove(item)
            self._restart(run, item[1])

    def restarts_pending(self) -> bool:
        return bool(self.restarts)

    def stop(self, run: RunControl) -> None:
        self.stopping = True
        _record_missed(self, run, "kill")
        for _due, worker in self.restarts:
            self.record(run, t=time.time(), target=worker.name, action="restart-cancelled", reason="the run ended")
        self.restarts = []
        # An incarnation that is not ready yet may not even handle SIGTERM: it never worked, end it here.
        for worker in self.started:
            if not worker.alive() or worker.ready():
                continue
            t = time.time()
            pid = worker.pid
            code = run.kill([worker]).get(worker.name)
            self.record(run, t=t, t_end=time.time(), target=worker.name, action="restart-aborted", pid=pid,
                        exit_code=code, reason="the run ended before the new incarnation was ready")

    def _kill_one(self, run: RunControl) -> None:
        target = self.settings.target
        candidates = live_candidates(run.workers(), target)
        t = time.time()
        if not candidates:
            self.record(run, t=t, t_end=t, target=target, action="kill-skipped", reason="no live worker")
            return
        worker = self.rng.choice(candidates)
        pid = worker.pid
        code = run.kill([worker]).get(worker.name)
        t_end = time.time()
        restart_at = None
        if self.settings.restart and not self.stopping and code is not None:  # never beside a live predecessor
            restart_at = t_end + self.settings.restart_delay_ms / 1000.0
            self.restarts.append((restart_at, worker))
        self.record(run, t=t, t_end=t_end, target=worker.name, action="kill", signal="SIGKILL", pid=pid,
                    role=worker.role, exit_code=code, offset_s=round(t - run.t_go, 3),
                    restart_at=restart_at)

    def _restart(self, run: RunControl, old: WorkerHandle) -> None:
        t = time.time()
        worker = run.restart(old)
        self.started.append(worker)
        self.record(run, t=t, t_end=time.time(), target=old.name, action="restart", incarnation=worker.incarnation,
                    pid=worker.pid, spec=run.layout.spec(worker.stem).name)


class PauseFault(ScheduledFault):
    name = "pause"

    def __init__(self, settings: PauseSettings, seed: int):
        super().__init__(settings, seed)
        self.paused: list[tuple[float, float, WorkerHandle, int | None]] = []  # (t stopped, due epoch, worker, pid)

    def tick(self, run: RunControl) -> None:
        now = time.time()
        for item in [p for p in self.paused if p[1] <= now]:
            self._resume(run, item, ended_by="schedule")
        for _ in self.due(run, now):
            self._pause_one(run)

    def stop(self, run: RunControl) -> None:
        for item in list(self.paused):
            self._resume(run, item, ended_by="end of run")
        _record_missed(self, run, "pause")

    def _pause_one(self, run: RunControl) -> None:
        frozen = {id(p[2]) for p in self.paused}
        candidates = [w for w in live_candidates(run.workers(), self.settings.target) if id(w) not in frozen]
        t = time.time()
        if not candidates:
            self.record(run, t=t, t_end=t, target=self.settings.target, action="pause-skipped",
                        reason="no live worker that is not already paused")
            return
        worker = self.rng.choice(candidates)
        if run.pause(worker):
            self.paused.append((t, t + self.settings.duration_ms / 1000.0, worker, worker.pid))

    def _resume(self, run: RunControl, item: tuple[float, float, WorkerHandle, int | None], *, ended_by: str) -> None:
        self.paused.remove(item)
        t, _, worker, pid = item
        resumed = run.resume(worker)
        self.record(run, t=t, t_end=time.time(), target=worker.name, action="pause", signal="SIGSTOP",
                    pid=pid, role=worker.role, planned_ms=self.settings.duration_ms, resumed=resumed,
                    ended_by=ended_by, offset_s=round(t - run.t_go, 3))
