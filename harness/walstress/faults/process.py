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

import json
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from walstress.faults.base import Fault, FaultSettings, register, setting
from walstress.faults.schedule import ScheduledFault, check_schedule, check_target, live_candidates

_REAP_TIMEOUT_S = 10.0
_SEED_STEP = 7919  # a restarted incarnation draws other random streams than the one it replaces


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


@register("kill")
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


@register("pause")
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


def _send(worker: Any, sig: int) -> bool:
    if worker.popen is None or worker.popen.poll() is not None:
        return False
    try:
        worker.popen.send_signal(sig)
    except (ProcessLookupError, OSError):
        return False
    return True


def _kill_and_reap(ctx: Any, worker: Any) -> int | None:
    """SIGKILL a worker (marked fault_killed by the caller), reap it, record its exit."""
    _send(worker, signal.SIGCONT)  # a paused worker dies all the same; SIGCONT is harmless here
    _send(worker, signal.SIGKILL)
    try:
        code = worker.popen.wait(timeout=_REAP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None
    worker.exit_code = code
    ctx.history.record({"type": "worker_exit", "worker": worker.name, "pid": worker.popen.pid, "t": time.time(),
                        "exit_code": code, "stopped_by_controller": False,
                        "killed_by_controller": False, "fault_killed": True})
    return code


def _record_missed(fault: ScheduledFault, ctx: Any, action: str) -> None:
    """Scheduled actions the run ended before (the controller's loop stops at the end time)."""
    for offset in fault.missed():
        fault.record(ctx, t=ctx.t_go + offset, t_end=ctx.t_go + offset, target=fault.settings.target,
                     action=f"{action}-skipped", reason="the run ended before the scheduled time was reached",
                     offset_s=round(offset, 3))


class KillFault(ScheduledFault):
    name = "kill"

    def __init__(self, settings: KillSettings, seed: int):
        super().__init__(settings, seed)
        self.restarts: list[tuple[float, Any]] = []  # (due epoch time, killed WorkerProcess)
        self.incarnations: dict[str, int] = {}
        self.started: list[tuple[Any, Path]] = []  # restarted incarnations and their ready files
        self.stopping = False

    def tick(self, ctx: Any) -> None:
        now = time.time()
        for _ in self.due(ctx, now):
            self._kill_one(ctx)
        due = [item for item in self.restarts if item[0] <= now]
        for item in due:
            self.restarts.remove(item)
            self._restart(ctx, item[1])

    def restarts_pending(self, ctx: Any) -> bool:
        return bool(self.restarts)

    def stop(self, ctx: Any) -> None:
        self.stopping = True
        _record_missed(self, ctx, "kill")
        for due, worker in self.restarts:
            self.record(ctx, t=time.time(), target=worker.name, action="restart-cancelled", reason="the run ended")
        self.restarts = []
        # An incarnation that is not ready yet may not even handle SIGTERM: it never worked, end it here.
        for worker, ready_path in self.started:
            if worker.popen is None or worker.popen.poll() is not None or ready_path.exists():
                continue
            t = time.time()
            pid = worker.popen.pid
            worker.fault_killed = True
            code = _kill_and_reap(ctx, worker)
            self.record(ctx, t=t, t_end=time.time(), target=worker.name, action="restart-aborted", pid=pid,
                        exit_code=code, reason="the run ended before the new incarnation was ready")

    def _kill_one(self, ctx: Any) -> None:
        target = self.settings.target
        candidates = live_candidates(ctx.workers, target)
        t = time.time()
        if not candidates:
            self.record(ctx, t=t, t_end=t, target=target, action="kill-skipped", reason="no live worker")
            return
        worker = self.rng.choice(candidates)
        worker.fault_killed = True
        pid = worker.popen.pid
        code = _kill_and_reap(ctx, worker)
        t_end = time.time()
        restart_at = None
        if self.settings.restart and not self.stopping and code is not None:  # never beside a live predecessor
            restart_at = t_end + self.settings.restart_delay_ms / 1000.0
            self.restarts.append((restart_at, worker))
        self.record(ctx, t=t, t_end=t_end, target=worker.name, action="kill", signal="SIGKILL", pid=pid,
                    role=worker.role, exit_code=code, offset_s=round(t - ctx.t_go, 3),
                    restart_at=restart_at)

    def _restart(self, ctx: Any, old: Any) -> None:
        from walstress.controller import WorkerProcess, start_worker

        k = self.incarnations.get(old.name, 0) + 1
        self.incarnations[old.name] = k
        spec = json.loads(Path(old.spec_path).read_text())
        base = spec.get("base_name", spec["name"])
        stem = f"{base}.i{k}"
        run_dir = Path(ctx.run_dir)
        spec.update({
            "incarnation": k,
            "base_name": base,
            "seed": int(spec["seed"]) + _SEED_STEP * k,
            "history_path": str(run_dir / "history" / f"{stem}.jsonl"),
            "ready_path": str(run_dir / "control" / f"ready-{stem}"),
            "ledger_name": stem,
        })
        spec_path = run_dir / "specs" / f"{stem}.json"
        spec_path.write_text(json.dumps(spec, indent=1))
        worker = WorkerProcess(name=old.name, role=old.role, spec_path=spec_path,
                               log_path=run_dir / "logs" / f"{stem}.log")
        env = ctx.faults.worker_env(old.name, old.role) if ctx.faults is not None else {}
        t = time.time()
        start_worker(ctx, worker, list(spec.get("sqlite_paths") or []), env)
        ctx.workers.append(worker)
        self.started.append((worker, Path(spec["ready_path"])))
        assert worker.popen is not None  # start_worker started it (or raised)
        self.record(ctx, t=t, t_end=time.time(), target=old.name, action="restart", incarnation=k,
                    pid=worker.popen.pid, spec=spec_path.name)


class PauseFault(ScheduledFault):
    name = "pause"

    def __init__(self, settings: PauseSettings, seed: int):
        super().__init__(settings, seed)
        self.paused: list[tuple[float, float, Any, int]] = []  # (t stopped, due epoch, worker, pid)

    def tick(self, ctx: Any) -> None:
        now = time.time()
        for item in [p for p in self.paused if p[1] <= now]:
            self._resume(ctx, item, ended_by="schedule")
        for _ in self.due(ctx, now):
            self._pause_one(ctx)

    def stop(self, ctx: Any) -> None:
        for item in list(self.paused):
            self._resume(ctx, item, ended_by="end of run")
        _record_missed(self, ctx, "pause")

    def _pause_one(self, ctx: Any) -> None:
        frozen = {id(p[2]) for p in self.paused}
        candidates = [w for w in live_candidates(ctx.workers, self.settings.target) if id(w) not in frozen]
        t = time.time()
        if not candidates:
            self.record(ctx, t=t, t_end=t, target=self.settings.target, action="pause-skipped",
                        reason="no live worker that is not already paused")
            return
        worker = self.rng.choice(candidates)
        pid = worker.popen.pid
        if _send(worker, signal.SIGSTOP):
            self.paused.append((t, t + self.settings.duration_ms / 1000.0, worker, pid))

    def _resume(self, ctx: Any, item: tuple[float, float, Any, int], *, ended_by: str) -> None:
        self.paused.remove(item)
        t, _, worker, pid = item
        resumed = _send(worker, signal.SIGCONT)
        self.record(ctx, t=t, t_end=time.time(), target=worker.name, action="pause", signal="SIGSTOP",
                    pid=pid, role=worker.role, planned_ms=self.settings.duration_ms, resumed=resumed,
                    ended_by=ended_by, offset_s=round(t - ctx.t_go, 3))
