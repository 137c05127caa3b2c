"""The fault registry: scenario sections, controller-side plans, worker-side hooks.

A fault is declared once, as a dataclass registered under ``faults.<name>``:

    @register("lock_breaker")
    @dataclass
    class LockBreakerSettings(FaultSettings):
        enabled: bool = setting(False)
        interval_ms: int = setting(1, min=1, kind="ms")

        def build(self, scenario, seed):      # controller side (optional)
            return LockBreakerFault(self, seed) if self.enabled else None

Its fields become scenario keys (``faults.lock_breaker.interval_ms``), with
the same validation and ``--set`` support as every other key. A section's
``validate(scenario)`` may raise ValueError for impossible combinations.

Controller side, a :class:`Fault` is driven by the controller through
:class:`FaultPlan`: ``start`` after every worker is ready, ``tick`` about
every 50 ms, ``stop`` before the workers are stopped; it records what it did
as ``fault`` records in the history (``name``, ``t``, ``t_end``, ``target``,
``detail``) so reports can shade the windows.

Worker side, each worker process calls :func:`worker_hooks` with its spec;
sections may implement ``install_in_worker(spec, history, stop)`` (start a
thread, patch the environment) and ``open_connection_hook(spec)`` (return a
VFS name for apsw connections, or None).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

from walstress.scenario import _field, register_fault_section


def setting(default: Any, **meta: Any) -> Any:
    """A fault setting: same metadata as scenario keys (choices, min, max, kind, doc)."""
    return _field(default, **meta)


class FaultSettings:
    """Base for fault sections; subclasses are dataclasses."""

    def build(self, scenario: Any, seed: int) -> "Fault | None":
        return None

    def validate(self, scenario: Any) -> None:
        return None

    def worker_env(self, worker_name: str, role: str) -> dict[str, str]:
        """Extra environment for a worker process (e.g. LD_PRELOAD of eatmydata)."""
        return {}


def register(name: str) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"fault section {name} must be a dataclass")
        register_fault_section(name, cls)
        return cls

    return wrap


class Fault:
    """Controller-side behaviour of one fault during a run."""

    name = "fault"

    def start(self, ctx: Any) -> None:
        pass

    def tick(self, ctx: Any) -> None:
        pass

    def stop(self, ctx: Any) -> None:
        pass

    def restarts_pending(self, ctx: Any) -> bool:
        return False

    def record(self, ctx: Any, *, t: float | None = None, t_end: float | None = None,
               target: str | None = None, **detail: Any) -> None:
        ctx.history.record({"type": "fault", "name": self.name, "t": time.time() if t is None else t,
                            "t_end": t_end, "target": target, "detail": detail})


class FaultPlan:
    """All faults of one run; the controller calls these in order."""

    def __init__(self, faults: list[Fault], sections: dict[str, Any]):
        self.faults = faults
        self.sections = sections

    def start(self, ctx: Any) -> None:
        for fault in self.faults:
            fault.start(ctx)

    def tick(self, ctx: Any) -> None:
        for fault in self.faults:
            fault.tick(ctx)

    def stop(self, ctx: Any) -> None:
        for fault in reversed(self.faults):
            fault.stop(ctx)

    def restarts_pending(self, ctx: Any) -> bool:
        return any(fault.restarts_pending(ctx) for fault in self.faults)

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
