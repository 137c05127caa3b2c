"""The search: Hypothesis proposes examples, each a real walstress run; the first failing one is kept.

Each example is the scenario with one value per axis (space.py), run
``search.runs`` times (short runs, small databases). It *fails* when a run's
verdict does not meet ``search.expect`` (default: clean); a run that ends
in ``errors`` says nothing about the property and is only counted.

Hypothesis generates and then *targets*: every example reports the signals
that lead toward damage (``target()``: WAL peak, busy checkpoints, the
longest operation, corruption errors seen during the run, lost rows), so
the search climbs toward them instead of sampling blind; every verdict is
an ``event()``. Hypothesis's own shrinking is off: a concurrent failure
reproduces with a probability, so shrink.py shrinks with a stated rate. A
failing example is remembered, so Hypothesis's replay of it gives the same
answer (no "flaky" error), and it is saved in Hypothesis's example
database, so the next search of the same scenario starts from it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from hypothesis import HealthCheck, Phase, Verbosity, event, given, reject, settings, target
from hypothesis import strategies as st
from hypothesis.database import ExampleDatabase
from hypothesis.errors import HypothesisException

from walstress.checks.findings import matches
from walstress.errors import ScenarioError, WalstressError
from walstress.runner import run_scenario
from walstress.scenario import Scenario
from walstress.search.space import apply_example, axes, base_of, strategies

MIB = float(1 << 20)
SIGNALS = ("wal_peak_mib", "busy_checkpoints", "longest_op_s", "corruption_errors", "lost_rows")


class ExampleFailed(Exception):
    """Raised inside the Hypothesis test when an example breaks the property (ends the search)."""


def fails(expect: str, verdict: str) -> bool:
    """Does a run break the property? A run in ``errors`` never does (it is a harness or SQLite failure)."""
    return verdict != "errors" and not matches(expect, verdict)


def signals(runs: list[dict[str, Any]]) -> dict[str, float]:
    """What leads toward damage, over the runs of one example (bigger is closer)."""
    longest = 0.0
    for run in runs:
        for summary in (run.get("latency_ms") or {}).values():
            longest = max(longest, float(summary.get("max_ms") or 0.0) / 1000.0)
    return {
        "wal_peak_mib": max((r.get("wal_peak_bytes", 0) for r in runs), default=0) / MIB,
        "busy_checkpoints": float(sum((r.get("checkpoints") or {}).get("busy", 0) for r in runs)),
        "longest_op_s": longest,
        "corruption_errors": float(sum((r.get("errors") or {}).get("corrupt", 0) for r in runs)),
        "lost_rows": float(sum((r.get("writes") or {}).get("lost", 0) for r in runs)),
    }


@dataclass
class Outcome:
    """What the runs of one scenario (an example, or a shrink candidate) gave."""

    verdicts: list[str]
    failing: int
    errors: int
    seconds: float
    signals: dict[str, float]
    reasons: list[str]
    folder: str

    @property
    def runs(self) -> int:
        return len(self.verdicts)


RunCell = Callable[[Scenario, Path, int, int], list[dict[str, Any]]]


def run_cell(scenario: Scenario, folder: Path, runs: int, seed: int, *, cache_dir: str | Path | None) -> list[dict]:
    """``runs`` real runs of a one-cell scenario into folder, seeds from ``seed`` on."""
    cell = copy.deepcopy(scenario)
    cell.seed = seed
    cell.repeat = runs
    results = run_scenario(cell, folder, repeat=runs, cache_dir=cache_dir)
    return [run for c in results["cells"] for run in c["results"]]


def measure(scenario: Scenario, folder: Path, runs: int, seed: int, expect: str, *,
            cache_dir: str | Path | None, stop_when: Callable[[int, int], bool] | None = None,
            keep: bool = True) -> Outcome:
    """Run a scenario ``runs`` times, one run at a time so that ``stop_when(failing, done)`` may end it early."""
    started = time.monotonic()
    verdicts: list[str] = []
    reasons: list[str] = []
    collected: list[dict[str, Any]] = []
    failing = 0
    for index in range(runs):
        got = run_cell(scenario, folder / f"run-{index:02d}", 1, seed + index, cache_dir=cache_dir)
        collected.extend(got)
        for run in got:
            verdicts.append(run["verdict"])
            reasons.append(run["reason"])
            failing += fails(expect, run["verdict"])
        if stop_when is not None and stop_when(failing, index + 1):
            break
    outcome = Outcome(verdicts, failing, verdicts.count("errors"), round(time.monotonic() - started, 3),
                      signals(collected), reasons, str(folder))
    if not keep and not failing:
        shutil.rmtree(folder, ignore_errors=True)  # what passed is not evidence: keep the disk small
    return outcome


@dataclass
class SearchLog:
    scenario: str
    axes: dict[str, Any]
    started_at: float = field(default_factory=time.time)
    examples: list[dict[str, Any]] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    runs: int = 0
    seconds: float = 0.0
    best_signals: dict[str, float] = field(default_factory=dict)
    found: dict[str, Any] | None = None
    shrink_steps: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    note: str | None = None

    def add(self, params: dict[str, Any], outcome: Outcome) -> None:
        self.examples.append({"params": params, **asdict(outcome)})
        self.runs += outcome.runs
        for name, value in outcome.signals.items():
            self.best_signals[name] = max(self.best_signals.get(name, 0.0), value)

    def write(self, path: Path) -> None:
        self.seconds = round(time.time() - self.started_at, 3)
        path.write_text(json.dumps(asdict(self), indent=1, default=str) + "\n")


def database_key(scenario: Scenario) -> str:
    """Examples of one search space share an example database; another space gets its own."""
    ident = json.dumps({"name": scenario.name, "source": scenario.source, "axes": axes(scenario),
                        "expect": scenario.search.expect}, sort_keys=True, default=str)
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def find_failure(scenario: Scenario, out: Path, *, log: SearchLog, budget_s: float, max_examples: int,
                 runs: int, example_db: ExampleDatabase | None, cache_dir: str | Path | None,
                 say: Callable[[str], None]) -> tuple[dict[str, Any], Outcome] | None:
    """Let Hypothesis look for an example that breaks the property; the first one found, or None."""
    base = base_of(scenario)
    expect = scenario.search.expect
    deadline = time.monotonic() + budget_s
    memo: dict[str, Outcome] = {}
    found: list[tuple[dict[str, Any], Outcome]] = []
    counter = [0]

    @settings(database=example_db, max_examples=max_examples, deadline=None, derandomize=False,
              phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target], verbosity=Verbosity.quiet,
              suppress_health_check=list(HealthCheck), report_multiple_bugs=False, print_blob=False)
    @given(st.fixed_dictionaries(strategies(scenario)))
    def probe(example: dict[str, Any]) -> None:
        key = json.dumps(example, sort_keys=True, default=str)
        if key in memo:  # Hypothesis replays a failing example: the same answer, no flakiness
            if memo[key].failing:
                raise ExampleFailed(key)
            return
        if found or time.monotonic() >= deadline:
            reject()  # the budget is spent (or the search is over): no more runs
        try:
            candidate = apply_example(base, example)
        except ScenarioError as exc:
            log.invalid.append(f"{example}: {exc.message}")
            event("invalid combination")
            reject()
        counter[0] += 1
        index = counter[0]
        folder = out / "examples" / f"example-{index:03d}"
        outcome = measure(candidate, folder, runs, scenario.seed + 1000 * index, expect, cache_dir=cache_dir,
                          stop_when=lambda failing, done: failing > 0, keep=False)
        memo[key] = outcome
        log.add(example, outcome)
        for verdict in outcome.verdicts:
            event(f"verdict: {verdict}")
        for name, value in outcome.signals.items():
            target(value, label=name)
        say(f"example {index}: {', '.join(outcome.verdicts)} in {outcome.seconds:.1f} s  "
            f"{_short(example)}")
        if outcome.failing:
            found.append((example, outcome))
            raise ExampleFailed(key)

    try:
        probe()
    except ExampleFailed:
        pass
    except HypothesisException as exc:  # flaky, health checks, unsatisfiable: explained, never a traceback
        if not found:
            raise WalstressError(_explain(exc)) from None
    return found[0] if found else None


def _short(example: dict[str, Any]) -> str:
    return " ".join(f"{k.split('.', 1)[-1]}={v}" for k, v in example.items())


def _explain(exc: HypothesisException) -> str:
    name = type(exc).__name__
    if name == "Unsatisfiable":
        return ("search: no example could run: every combination of [search.vary] was refused by the scenario's "
                "checks (see search.json's invalid list); widen the space")
    if name in ("Flaky", "FlakyFailure", "FlakyReplay"):
        return ("search: Hypothesis saw a failure it could not reproduce; a concurrent failure happens with a "
                "probability: raise search.runs so that each example runs more often")
    if name == "FailedHealthCheck":
        return f"search: Hypothesis refused the search space: {str(exc).splitlines()[0]}"
    return f"search: Hypothesis stopped: {name}: {str(exc).splitlines()[0] if str(exc) else ''}"
