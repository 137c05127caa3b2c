"""Shared pieces of the fault modules: schedules, targets, counted windows.

A schedule says when a fault acts, in seconds after the run's ``go``:

    at            "2, 5.5s, 800ms"   fixed times
    every_ms      2000               every 2 s (first at 2 s)
    random_count  3                  three times drawn from the run seed,
                                     uniform over the run

The three may be combined; times at or after the end of the run are
dropped. A target names which worker a process fault acts on: a role
(``writer``: one live worker of that role, picked with the seed), a worker
name (``writer-1``) or ``any`` (one live worker of any role).

A controller-side fault acting at the times of a schedule derives from
:class:`ScheduledFault`.

Hazards that act thousands of times a second (the lock breaker) do not
write one record per action: :class:`ActionWindows` records one ``fault``
record per second with the count of actions by outcome.
"""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Any, Callable, Iterable, Iterator

from walstress.faults.base import Fault, RunControl, WorkerHandle
from walstress.settings import parse_duration_seconds
from walstress.runspec import WorkerSpec


def parse_times(text: str) -> list[float]:
    """"2, 5.5s, 800ms" -> [2.0, 5.5, 0.8]; raises ValueError."""
    times = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        value = parse_duration_seconds(part)
        if value < 0:
            raise ValueError(f"{part!r} is negative")
        times.append(value)
    return sorted(times)


def parse_names(text: str) -> list[str]:
    """"writer, opener" -> ["writer", "opener"]."""
    return [part.strip() for part in str(text).split(",") if part.strip()]


def check_schedule(section: str, at: str, every_ms: int, random_count: int) -> None:
    """ValueError naming the key when a schedule is unusable."""
    try:
        parse_times(at)
    except ValueError as exc:
        raise ValueError(f"faults.{section}.at: {at!r} is not a list of times such as \"2, 5.5s, 800ms\" ({exc})") from None
    if not parse_times(at) and not every_ms and not random_count:
        raise ValueError(f"faults.{section}: enabled but never acts; set faults.{section}.at, "
                         f"faults.{section}.every_ms or faults.{section}.random_count")


def check_roles(section: str, key: str, text: str, scenario: Any) -> list[str]:
    roles = scenario.group_names()
    names = parse_names(text)
    if not names:
        raise ValueError(f"faults.{section}.{key}: empty; a comma-separated list of roles ({', '.join(roles)})")
    bad = [n for n in names if n not in roles]
    if bad:
        raise ValueError(f"faults.{section}.{key}: {bad[0]!r} is not a role; one of {', '.join(roles)}")
    return names


def check_target(section: str, scenario: Any, target: str) -> None:
    """A role with workers, a worker name of the scenario, or "any"."""
    roles = scenario.group_names()
    if target == "any":
        return
    if target in roles:
        if not scenario.workers_of(target):
            raise ValueError(f"faults.{section}.target: {target!r} but the scenario has no {target} workers")
        return
    names = [name for name, _ in scenario.worker_names()]
    if target not in names:
        shown = ", ".join(names[:8])
        raise ValueError(f"faults.{section}.target: {target!r} is not \"any\", a role ({', '.join(roles)}) "
                         f"nor a worker of the scenario ({shown})")


def schedule_times(at: str, every_ms: int, random_count: int, duration: float, rng: random.Random) -> list[float]:
    """Offsets in seconds after go, ascending, all before the end of the run."""
    times = [t for t in parse_times(at) if t < duration]
    if every_ms:
        step = every_ms / 1000.0
        k = 1
        while k * step < duration:
            times.append(k * step)
            k += 1
    for _ in range(random_count):
        times.append(rng.uniform(0.0, duration))
    return sorted(times)


class ScheduledFault(Fault):
    """A controller-side fault acting at the times of its settings' schedule (``at``, ``every_ms``,
    ``random_count``), drawn from the run seed; ``done`` counts the times acted on (or skipped)."""

    def __init__(self, settings: Any, seed: int):
        self.settings = settings
        self.rng = random.Random(f"{seed}:{self.name}")
        self.times: list[float] = []
        self.done = 0

    def start(self, run: RunControl) -> None:
        s = self.settings
        self.times = schedule_times(s.at, s.every_ms, s.random_count, run.duration, self.rng)

    def due(self, run: RunControl, now: float) -> Iterator[int]:
        """Indexes of the scheduled times reached by ``now``, each counted done before it is yielded."""
        while self.done < len(self.times) and run.t_go + self.times[self.done] <= now:
            self.done += 1
            yield self.done - 1

    def missed(self) -> list[float]:
        """Offsets the run ended before reaching (the controller's loop stops at the end time); all count done."""
        offsets = self.times[self.done:]
        self.done = len(self.times)
        return offsets


def live_candidates(workers: Iterable[WorkerHandle], target: str) -> list[WorkerHandle]:
    """Live worker processes a target may mean, by name order."""
    out = []
    for worker in workers:
        if not worker.alive():
            continue
        if target in ("any", worker.role, worker.spec.group, worker.name):
            out.append(worker)
    return sorted(out, key=lambda w: w.name)


def wait_for_go(spec: WorkerSpec, stop: Any) -> float | None:
    """Block until the controller's go file exists; its time, or None when stopped first."""
    go_path = spec.layout.go
    while not stop.is_set():
        if go_path.exists():
            return time.time()
        stop.wait(0.005)
    return None


class ActionWindows:
    """Counts actions by outcome; one ``fault`` record per window (default 1 s)."""

    def __init__(self, history: Any, name: str, target: str, detail: dict[str, Any] | None = None,
                 window_s: float = 1.0):
        self.history = history
        self.name = name
        self.target = target
        self.detail = dict(detail or {})
        self.window_s = window_s
        self.total = 0
        self._counts: dict[str, int] = {}
        self._t0 = time.time()

    def add(self, outcome: str = "ok", n: int = 1) -> None:
        self._counts[outcome] = self._counts.get(outcome, 0) + n
        self.total += n

    def maybe_flush(self) -> None:
        if time.time() - self._t0 >= self.window_s:
            self.flush()

    def flush(self) -> None:
        now = time.time()
        if self._counts:
            count = sum(self._counts.values())
            self.history.record({"type": "fault", "name": self.name, "t": self._t0, "t_end": now,
                                 "target": self.target,
                                 "detail": {**self.detail, "count": count, "outcomes": dict(self._counts)}})
        self._counts = {}
        self._t0 = now


# ------------------------------------------------------- worker-side threads
def applies_to(roles_text: str, spec: WorkerSpec) -> bool:
    """Is the worker of ``spec`` one of the roles or groups named in ``roles_text``?"""
    names = parse_names(roles_text)
    return spec.role in names or (bool(spec.group) and spec.group in names)


def start_thread(name: str, body: Callable[[threading.Event], None], stop: threading.Event) -> Callable[[], None]:
    """Run body(local_stop) in a daemon thread; the returned closer stops and joins it."""
    local = threading.Event()

    def relay() -> None:  # the worker's stop also stops the hazard
        while not local.is_set():
            if stop.wait(0.05):
                local.set()

    thread = threading.Thread(target=body, args=(local,), name=name, daemon=True)
    watcher = threading.Thread(target=relay, name=f"{name}-stop", daemon=True)
    thread.start()
    watcher.start()

    def close() -> None:
        local.set()
        thread.join(timeout=2.0)
        watcher.join(timeout=1.0)

    return close


def start_counted(section: str, spec: WorkerSpec, history: Any, detail: dict[str, Any], stop: threading.Event,
                   loop: Callable[[threading.Event, Callable[[str], None]], None]) -> Callable[[], None]:
    """Start a hazard thread that counts its actions: after go, ``loop(local_stop, count)`` acts until
    stopped and calls ``count(outcome)`` once per action; one ``fault`` record per second by outcome."""
    windows = ActionWindows(history, section, spec.name, {**detail, "pid": os.getpid()})

    def count(outcome: str) -> None:
        windows.add(outcome)
        windows.maybe_flush()

    def body(local: threading.Event) -> None:
        if wait_for_go(spec, local) is None:
            return
        windows._t0 = time.time()
        loop(local, count)
        windows.flush()

    return start_thread(f"{spec.name}-{section.replace('_', '-')}", body, stop)
