"""The fault registry: scenario sections, controller-side plans, worker-side hooks.

A fault is declared once, as a dataclass whose ``section`` names its
scenario table ``[faults.<section>]``, and one line in ``registry.py``:

    @dataclass
    class LockBreakerSettings(FaultSettings):
        section: ClassVar[str] = "lock_breaker"
        enabled: bool = setting(False)
        interval_ms: int = setting(1, min=1, kind="ms")

        def build(self, scenario, seed):      # controller side (optional)
            return LockBreakerFault(self, seed) if self.enabled else None

Its fields become scenario keys (``faults.lock_breaker.interval_ms``), with
the same validation and ``--set`` support as every other key. A section's
``validate(scenario)`` may raise ValueError for impossible combinations.

Controller side, a :class:`Fault` is driven by the controller through
:class:`FaultPlan`: ``start`` after every worker is ready, ``tick`` about
every 50 ms, ``stop`` before the workers are stopped. It acts only through
the :class:`RunControl` the controller hands it (the run's settings and
paths; the workers, which it may kill, pause, resume or restart; the
history), never on processes or the controller directly. It records what it
did as ``fault`` records in the history (``name``, ``t``, ``t_end``,
``target``, ``detail``) so reports can shade the windows.

A section may add PRAGMAs to every worker connection
(``connection_pragmas``), environment variables to every worker process
(``worker_env``), files next to the database before the workers start
(``prepare_files``) and another path to open it by (``worker_db_path``).

Worker side, each worker process calls :func:`worker_hooks` with its spec;
sections may implement ``install_in_worker(spec, history, stop)`` (start a
thread, patch the environment) and ``open_connection_hook(spec)`` (return a
VFS name for apsw connections, or None).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar, Protocol, Sequence

from walstress.layout import RunLayout
from walstress.runspec import WorkerSpec
from walstress.scenario import Scenario
from walstress.settings import setting

__all__ = ["Fault", "FaultPlan", "FaultSettings", "RunControl", "WorkerHandle", "build_plan", "setting"]


class WorkerHandle(Protocol):
    """One worker process as a fault sees it."""

    @property
    def name(self) -> str: ...

    @property
    def role(self) -> str: ...

    @property
    def incarnation(self) -> int: ...

    @property
    def stem(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    @property
    def spec(self) -> WorkerSpec: ...

    def alive(self) -> bool: ...

    def ready(self) -> bool: ...


class RunControl(Protocol):
    """What a controller-side fault may see of and do to the run in flight."""

    scenario: Scenario
    layout: RunLayout
    db_path: Path          # the database as the workers open it (through a mount, for FUSE file systems)
    seed: int
    duration: float        # this run's length in seconds
    t_go: float            # when the workers were let go (epoch seconds; 0 before)

    def workers(self, *, alive_only: bool = True) -> list[WorkerHandle]: ...

    def live_pids(self) -> dict[str, int]: ...

    def kill(self, workers: Sequence[WorkerHandle]) -> dict[str, int | None]:
        """SIGKILL them all at once and reap them; exit codes by name (None: not reaped in time)."""
        ...

    def pause(self, worker: WorkerHandle) -> bool: ...

    def resume(self, worker: WorkerHandle) -> bool: ...

    def restart(self, worker: WorkerHandle) -> WorkerHandle:
        """Start a new incarnation of a worker whose process ended."""
        ...

    def record(self, rec: dict[str, Any]) -> None: ...

    def storage_cut(self) -> dict[str, Any]:
        """The storage loses what it had not written through (a power cut); what it dropped."""
        ...


class FaultSettings:
    """Base for fault sections; subclasses are dataclasses with a ``section`` name."""

    section: ClassVar[str] = ""

    def build(self, scenario: Any, seed: int) -> "Fault | None":
        return None

    def validate(self, scenario: Any) -> None:
        return None

    def worker_env(self, worker_name: str, role: str) -> dict[str, str]:
        """Extra environment for a worker process (e.g. LD_PRELOAD of eatmydata)."""
        return {}

    def connection_pragmas(self) -> list[str]:
        """PRAGMAs every worker connection runs after the scenario's own (e.g. faults.fsync's fullfsync)."""
        return []

    def prepare_files(self, db_path: Path, layout: RunLayout) -> None:
        """Before any worker starts, with the run's database in place (e.g. make a link to it)."""
        return None

    def worker_db_path(self, name: str, role: str, group: str, path: str) -> str | None:
        """The path a worker opens the database by, when not ``path`` (e.g. through a link); None: ``path``."""
        return None

    def acts_on_connections(self, scenario: Any) -> bool:
        """Whether this section acts through the connections walstress opens (its VFS shim), and so cannot
        reach connections that user code opens on its own."""
        return False


class Fault:
    """Controller-side behaviour of one fault during a run."""

    name = "fault"

    def start(self, run: RunControl) -> None:
        pass

    def tick(self, run: RunControl) -> None:
        pass

    def stop(self, run: RunControl) -> None:
        pass

    def restarts_pending(self) -> bool:
        return False

    def record(self, run: RunControl, *, t: float | None = None, t_end: float | None = None,
               target: str | None = None, **detail: Any) -> None:
        run.record({"type": "fault", "name": self.name, "t": time.time() if t is None else t,
                    "t_end": t_end, "target": target, "detail": detail})


class FaultPlan:
    """All faults of one run; the controller calls these in order."""

    def __init__(self, faults: list[Fault], sections: dict[str, Any]):
        self.faults = faults
        self.sections = sections

    def start(self, run: RunControl) -> None:
        for fault in self.faults:
            fault.start(run)

    def tick(self, run: RunControl) -> None:
        for fault in self.faults:
            fault.tick(run)

    def stop(self, run: RunControl) -> None:
        for fault in reversed(self.faults):
            fault.stop(run)

    def restarts_pending(self) -> bool:
        return any(fault.restarts_pending() for fault in self.faults)

    def connection_pragmas(self) -> list[str]:
        pragmas: list[str] = []
        for section in self.sections.values():
            pragmas.extend(section.connection_pragmas())
        return pragmas

    def prepare_files(self, db_path: Path, layout: RunLayout) -> None:
        for section in self.sections.values():
            section.prepare_files(db_path, layout)

    def worker_db_path(self, name: str, role: str, group: str, path: str) -> str:
        for section in self.sections.values():
            other = section.worker_db_path(name, role, group, path)
            if other:
                path = other
        return path

    def worker_env(self, worker_name: str, role: str) -> dict[str, str]:
        env: dict[str, str] = {}
        for section in self.sections.values():
            env.update(section.worker_env(worker_name, role))
        return env


def build_plan(scenario: Any, seed: int) -> FaultPlan:
    faults = []
    for name, section in scenario.faults.items():
        fault = section.build(scenario, seed)
        if fault is not None:
            faults.append(fault)
    return FaultPlan(faults, dict(scenario.faults))
