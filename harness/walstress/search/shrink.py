"""Shrink a failing scenario to the smallest that still fails, at a stated rate.

A concurrent failure reproduces with some probability, so a smaller
candidate is kept only when it still fails in at least ``confirm_min`` of
``confirm_runs`` real runs (the runs stop early as soon as that is reached,
or can no longer be). Candidates, tried in this order, each one change:

1. turn off one fault (a hazard that is not needed goes);
2. remove one group of workers; halve a group's count; one thread per worker;
3. halve the run's length (down to 1 s);
4. halve the database (walstress's own schemas, down to 300 pages);
5. simpler checkpoints: no writer checkpoints, no FTS5 maintenance, no
   checkpoint on close, PASSIVE;
6. every other searched key back to the scenario's own value.

Shrinking goes in passes (each change tried once a pass, on the scenario as
it is then) and ends when a whole pass keeps nothing, or the shrink budget
is spent. Every step, kept or not, is logged with its count.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from walstress.errors import ScenarioError
from walstress.scenario import Scenario, apply_setting, key_value, validate
from walstress.search.engine import Outcome, SearchLog, measure

MIN_DURATION_S = 1.0
MIN_PAGES = 300
Candidate = tuple[str, Callable[[Scenario], None]]


def _set(key: str, value: Any) -> Callable[[Scenario], None]:
    def change(scenario: Scenario) -> None:
        apply_setting(scenario, key, value, source=scenario.source)
    return change


def _entry(index: int, name: str, value: Any) -> Callable[[Scenario], None]:
    """Change one [[workers]] entry (entries of one role may differ: groups)."""
    def change(scenario: Scenario) -> None:
        setattr(scenario.workers[index], name, value)
    return change


def _without_fault(name: str) -> Callable[[Scenario], None]:
    def change(scenario: Scenario) -> None:
        scenario.faults.pop(name, None)
    return change


def _fault_on(section: Any) -> bool:
    enabled = getattr(section, "enabled", None)
    if enabled is not None:
        return bool(enabled)
    return section != type(section)()  # a section without an on switch acts when it differs from its defaults


def candidates(current: Scenario, original: Scenario, searched: list[str]) -> Iterator[Candidate]:
    for name, section in current.faults.items():
        if _fault_on(section):
            yield f"turn off faults.{name}", _without_fault(name)
    active = [(index, w) for index, w in enumerate(current.workers) if w.count > 0]
    for index, worker in active:
        name = worker.group or worker.role
        if len(active) > 1:
            yield f"remove the {name} workers", _entry(index, "count", 0)
        if worker.count > 1:
            yield f"fewer {name} workers: {worker.count} -> {worker.count // 2}", _entry(index, "count",
                                                                                         worker.count // 2)
        if worker.threads > 1:
            yield f"one thread per {name} worker (was {worker.threads})", _entry(index, "threads", 1)
    if current.duration > MIN_DURATION_S:
        shorter = max(MIN_DURATION_S, round(current.duration / 2, 3))
        yield f"shorter runs: {current.duration:g} s -> {shorter:g} s", _set("duration", shorter)
    db = current.database
    if db.builtin_schema and db.pages > MIN_PAGES:
        smaller = max(MIN_PAGES, db.pages // 2)
        yield f"a smaller database: {db.pages} -> {smaller} pages", _set("database.pages", smaller)
    ck = current.checkpoint
    if ck.every_writes:
        yield f"no writer checkpoints (were every {ck.every_writes} writes)", _set("checkpoint.every_writes", 0)
    if ck.fts_maintenance != "none":
        yield f"no FTS5 maintenance (was {ck.fts_maintenance})", _fts_off
    if ck.on_close:
        yield "no checkpoint on close", _set("checkpoint.on_close", False)
    if ck.mode not in ("PASSIVE", "NONE"):
        yield f"PASSIVE checkpoints (were {ck.mode})", _set("checkpoint.mode", "PASSIVE")
    for key in searched:  # what the rules above do not make smaller: back to the scenario's own value
        if key.startswith(("faults.", "workers.")) or key in ("duration", "database.pages", "checkpoint.mode"):
            continue
        mine, theirs = key_value(current, key), key_value(original, key)
        if mine != theirs:
            yield f"{key} back to {theirs!r} (was {mine!r})", _set(key, theirs)


def _fts_off(scenario: Scenario) -> None:
    scenario.checkpoint.after_fts_maintenance = False
    scenario.checkpoint.fts_maintenance = "none"


def _fingerprint(scenario: Scenario) -> str:
    data = scenario.to_dict()
    for name in ("name", "description", "matrix", "expect_when", "search"):
        data.pop(name, None)
    return json.dumps(data, sort_keys=True, default=str)


def shrink(failing: Scenario, original: Scenario, searched: list[str], out: Path, *, expect: str,
           confirm_runs: int, confirm_min: int, budget_s: float, cache_dir: str | Path | None, log: SearchLog,
           say: Callable[[str], None]) -> Scenario:
    """The smallest scenario reached that still fails at the stated rate.

    Passes over the candidates: in a pass each change is tried once (the
    candidates are made again from the current scenario after a kept step);
    a new pass starts when the last one kept something. A scenario seen
    before is never tried again, so no two changes can undo each other
    forever."""
    deadline = time.monotonic() + budget_s
    current = failing
    visited = {_fingerprint(current)}
    tried: set[str] = set()
    pass_kept = False
    step = 0

    def decided(failed: int, done: int) -> bool:
        return failed >= confirm_min or failed + (confirm_runs - done) < confirm_min

    while True:
        if time.monotonic() >= deadline:
            log.note = "the shrink budget ran out; the scenario may shrink further"
            return current
        chosen = None
        for description, change in candidates(current, original, searched):
            if description in tried:
                continue
            tried.add(description)
            candidate = copy.deepcopy(current)
            try:
                change(candidate)
                validate(candidate)
            except ScenarioError:
                continue
            fingerprint = _fingerprint(candidate)
            if fingerprint in visited:
                continue
            visited.add(fingerprint)
            chosen = (description, candidate)
            break
        if chosen is None:
            if not pass_kept:
                return current  # a whole pass kept nothing: as small as it gets
            tried, pass_kept = set(), False
            continue
        description, candidate = chosen
        step += 1
        outcome: Outcome = measure(candidate, out / "shrink" / f"step-{step:03d}", confirm_runs,
                                   original.seed + 10_000 + 100 * step, expect, cache_dir=cache_dir,
                                   stop_when=decided, keep=False)
        kept = outcome.failing >= confirm_min
        log.shrink_steps.append({"step": step, "change": description, "kept": kept, "failing": outcome.failing,
                                 "runs": outcome.runs, "verdicts": outcome.verdicts, "seconds": outcome.seconds})
        say(f"shrink {step}: {description}: {outcome.failing} of {outcome.runs} failing -> "
            f"{'kept' if kept else 'not kept'}")
        if kept:
            current = candidate
            pass_kept = True
