"""``walstress search``: find a scenario that breaks the property, shrink it, write it as a plain file.

    walstress search scenarios/search-hazards.toml --budget 15m

1. Hypothesis explores the scenario's ``[search]`` space (engine.py): every
   example is ``search.runs`` real, short runs; the search stops at the
   first example with a failing run, or when the budget or
   ``search.max_examples`` is spent ("no failure in N examples (M runs)").
2. The failing example is shrunk (shrink.py): a smaller scenario is kept
   only when it still fails in at least ``search.confirm_min`` of
   ``search.confirm_runs`` runs.
3. The result is measured once more (``confirm_runs`` runs, k/N) and
   written to ``found/<name>-<hash>.toml``, a plain scenario file that
   ``walstress run`` runs, with the measured k/N and the search's story in
   its header; the whole log is ``search.json`` in the output folder.

Hypothesis's example database lives in the cache dir (one per search
space), so a second search of the same scenario starts from the last
failure. CI jobs share it by keeping that folder (``--example-db DIR``)
between jobs, or read a database published as a GitHub artifact with
``--example-db github:OWNER/REPO``.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Callable

from hypothesis.database import (
    DirectoryBasedExampleDatabase,
    ExampleDatabase,
    GitHubArtifactDatabase,
    MultiplexedDatabase,
    ReadOnlyDatabase,
)

from walstress.database.template import default_cache_dir
from walstress.errors import UsageError
from walstress.scenario import Scenario
from walstress.search.engine import SearchLog, database_key, find_failure, measure
from walstress.search.found import write_found
from walstress.search.shrink import shrink
from walstress.search.space import apply_example, axes, base_of

__all__ = ["example_database", "run_search"]


def example_database(scenario: Scenario, spec: str | None, cache_dir: str | Path | None) -> ExampleDatabase:
    """The search's Hypothesis example database: a folder per search space, in the cache or under ``spec``;
    ``github:OWNER/REPO`` adds the database a CI job published as an artifact, read-only."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    local = DirectoryBasedExampleDatabase(str(root / "hypothesis" / database_key(scenario)))
    if not spec:
        return local
    if spec.startswith("github:"):
        owner, _, repo = spec[len("github:"):].partition("/")
        if not owner or not repo:
            raise UsageError(f"--example-db {spec}: expected github:OWNER/REPO")
        return MultiplexedDatabase(local, ReadOnlyDatabase(GitHubArtifactDatabase(owner, repo)))
    return DirectoryBasedExampleDatabase(str(Path(spec) / database_key(scenario)))


def run_search(scenario: Scenario, out: str | Path, *, budget_s: float | None = None,
               max_examples: int | None = None, runs: int | None = None, found_dir: str | Path = "found",
               example_db: str | None = None, cache_dir: str | Path | None = None, shrink_failure: bool = True,
               say: Callable[[str], None] = print) -> dict[str, Any]:
    """Search, shrink and write; returns the summary (also in ``out/search.json``)."""
    if not scenario.search.active:
        raise UsageError(f"{scenario.source}: the scenario has no search space; add [search] with "
                         "faults = [...] and/or a [search.vary] table")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    search = scenario.search
    budget = budget_s if budget_s is not None else search.budget
    examples = max_examples if max_examples is not None else search.max_examples
    per_example = runs if runs is not None else search.runs
    log = SearchLog(scenario=scenario.source, axes=axes(scenario))
    say(f"search: {len(log.axes)} axes, up to {examples} examples of {per_example} run(s), budget {budget:g} s")
    found = find_failure(scenario, out, log=log, budget_s=budget, max_examples=examples, runs=per_example,
                         example_db=example_database(scenario, example_db, cache_dir), cache_dir=cache_dir,
                         say=say)
    summary: dict[str, Any] = {"examples": len(log.examples), "runs": log.runs, "log": str(out / "search.json")}
    if found is None:
        log.write(out / "search.json")
        summary.update(status="none", message=f"no failure in {len(log.examples)} examples ({log.runs} runs)")
        return summary
    example, outcome = found
    log.found = {"params": example, "verdicts": outcome.verdicts, "reasons": outcome.reasons}
    say(f"failure: {outcome.verdicts} with {example}; shrinking")
    failing = apply_example(base_of(scenario), example)
    started = time.monotonic()
    smallest = failing
    if shrink_failure:
        smallest = shrink(failing, scenario, list(log.axes), out, expect=search.expect,
                          confirm_runs=search.confirm_runs, confirm_min=search.confirm_min,
                          budget_s=search.shrink_budget, cache_dir=cache_dir, log=log, say=say)
    final = measure(smallest, out / "final", search.confirm_runs, scenario.seed + 99_000, search.expect,
                    cache_dir=cache_dir)
    log.final = {"failing": final.failing, "runs": final.runs, "verdicts": final.verdicts,
                 "reasons": final.reasons, "shrink_seconds": round(time.monotonic() - started, 3)}
    written = write_found(_as_found(smallest, final.failing, final.runs), Path(found_dir), _header(scenario, log))
    log.write(out / "search.json")
    summary.update(status="found", file=str(written), failing=final.failing, runs_measured=final.runs,
                   message=f"found: {written} fails in {final.failing} of {final.runs} runs")
    return summary


def _as_found(scenario: Scenario, failing: int, runs: int) -> Scenario:
    found = copy.deepcopy(scenario)
    found.name = f"found-{scenario.name}"
    found.description = f"found by walstress search from {scenario.source}; failed in {failing} of {runs} runs"
    found.repeat = runs
    found.expect = "damaged" if scenario.search.expect == "clean" else "any"
    found.expect_fraction = round(max(0.2, (failing - 1) / runs) if runs else 1.0, 2)
    return found


def _header(scenario: Scenario, log: SearchLog) -> list[str]:
    final = log.final or {}
    lines = [f"Found by `walstress search {scenario.source}`.",
             f"Fails the property (every run {scenario.search.expect}) in {final.get('failing')} of "
             f"{final.get('runs')} runs, measured after shrinking: {', '.join(final.get('verdicts') or [])}.",
             f"Search: {len(log.examples)} examples, {log.runs} runs, {len(log.invalid)} combinations refused; "
             "targets reached: " + ", ".join(f"{k} {v:.3g}" for k, v in sorted(log.best_signals.items())) + ".",
             f"First failure: {log.found['params'] if log.found else '-'}",
             "Shrink steps kept (each still failing at the stated rate):"]
    kept = [s for s in log.shrink_steps if s["kept"]]
    lines += [f"  - {s['change']} ({s['failing']} of {s['runs']} failing)" for s in kept] or ["  (none)"]
    lines.append(f"Tried but not kept: {sum(1 for s in log.shrink_steps if not s['kept'])}.")
    if final.get("reasons"):
        lines.append(f"A failing run: {next((r for r in final['reasons'] if r), '')[:150]}")
    return lines
