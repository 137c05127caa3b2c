"""``walstress bisect``: the first SQLite version whose verdict differs.

The scenario runs with ``sqlite.driver = "apsw"`` at the versions that have
an apsw release between A and B. Both ends are run first; if their outcomes
differ, a binary search narrows the change down to two neighbouring
versions. A version's outcome is "damaged" when any of its runs was corrupt
or lost writes, "clean" when every run was clean, "errors" otherwise (an
errors outcome stops the search: it says nothing about corruption).

A binary search assumes one change point. The WAL-reset fix breaks that
assumption on purpose: it shipped in 3.51.3 and was backported to 3.50.7
and 3.44.6, for which no apsw release exists. Every bisect says so.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from walstress.errors import UsageError
from walstress.catalog import load_scenario
from walstress.runner import run_scenario
from walstress.scenario import Scenario
from walstress.sqlite.versions import available_versions, parse_version, versions_between

__all__ = ["BACKPORT_NOTE", "BACKPORTED_FIX_VERSIONS", "bisect_versions", "outcome_of", "parse_range"]

BACKPORTED_FIX_VERSIONS = ("3.44.6", "3.50.7")
BACKPORT_NOTE = ("Note: SQLite 3.50.7 and 3.44.6 carry a backport of the WAL-reset fix (first fixed in 3.51.3), "
                 "and no apsw release exists for either, so they cannot be run here. A range that includes them "
                 "is not one clean cut between 'affected' and 'fixed': read its result with care.")


def parse_range(text: str) -> tuple[str, str]:
    """``"3.50.0..3.54.1"`` -> ("3.50.0", "3.54.1")."""
    low, sep, high = str(text).partition("..")
    try:
        if not sep:
            raise ValueError
        parse_version(low)
        parse_version(high)
    except ValueError:
        raise UsageError(f"--versions {text!r}: expected A..B such as 3.50.0..3.54.1") from None
    if parse_version(low) > parse_version(high):
        low, high = high, low
    return low.strip(), high.strip()


def outcome_of(results: dict[str, Any]) -> dict[str, Any]:
    """The evidence of one version: counts over its runs and the outcome they give."""
    cells = results.get("cells", [])
    runs = sum(c["runs"] for c in cells)
    corrupt = sum(c["corrupt"] for c in cells)
    lost = sum(c["lost"] for c in cells)
    errors = sum(c["errors"] for c in cells)
    clean = sum(c["clean"] for c in cells)
    if corrupt + lost:
        outcome = "damaged"
    elif runs and clean == runs:
        outcome = "clean"
    else:
        outcome = "errors"
    firsts = [c.get("time_to_first_failure_s") for c in cells if c.get("time_to_first_failure_s") is not None]
    versions = sorted({v for c in cells for r in c.get("results", []) for v in r.get("sqlite", {}).get("worker_versions", [])})
    return {"outcome": outcome, "runs": runs, "clean": clean, "corrupt": corrupt, "lost": lost, "errors": errors,
            "time_to_first_failure_s": min(firsts) if firsts else None, "loaded_versions": versions}


def _evidence_text(entry: dict[str, Any]) -> str:
    text = (f"SQLite {entry['version']}: {entry['outcome']} ({entry['corrupt']} corrupt, {entry['lost']} lost-writes, "
            f"{entry['clean']} clean, {entry['errors']} errors of {entry['runs']} runs")
    if entry.get("time_to_first_failure_s") is not None:
        text += f"; first failure after {entry['time_to_first_failure_s']} s"
    return text + f") -> {entry['results']}"


def _scenario_for(path: str | Path, overrides: list[str], version: str) -> Scenario:
    scenario = load_scenario(path, list(overrides) + [f"sqlite={version}"])
    for key in [k for k in scenario.matrix if k == "sqlite" or k.startswith("sqlite.")]:
        scenario.matrix.pop(key)
    return scenario


def bisect_versions(scenario_path: str | Path, versions: str, *, overrides: list[str] | None = None,
                    repeat: int | None = None, out_dir: str | Path | None = None,
                    cache_dir: str | Path | None = None, console: Any = None,
                    say: Callable[[str], None] = print,
                    runner: Callable[..., dict[str, Any]] | None = None,
                    known_versions: list[str] | None = None) -> dict[str, Any]:
    """Run the search; print the evidence as it comes; write ``bisect.json``; return its content."""
    runner = runner or run_scenario
    overrides = list(overrides or [])
    low, high = parse_range(versions)
    probe = _scenario_for(scenario_path, overrides, low)  # checks the file and the overrides at once
    if probe.matrix:
        axes = ", ".join(probe.matrix)
        raise UsageError(f"bisect runs one cell per version, but the scenario also varies {axes}; "
                         "pin each with --set KEY=VALUE")
    candidates = versions_between(low, high, known_versions if known_versions is not None else available_versions())
    if len(candidates) < 2:
        raise UsageError(f"--versions {low}..{high}: {len(candidates)} SQLite version(s) with an apsw release in "
                         "that range; bisect needs at least two")
    out = Path(out_dir) if out_dir else Path("reports") / f"bisect-{probe.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    includes_backport = [v for v in BACKPORTED_FIX_VERSIONS
                         if parse_version(low) <= parse_version(v) <= parse_version(high)]
    state: dict[str, Any] = {
        "scenario": str(scenario_path), "overrides": overrides, "range": [low, high], "candidates": candidates,
        "repeat": repeat or probe.repeat, "tried": [], "first_changed": None, "last_unchanged": None,
        "conclusion": None, "backport_note": BACKPORT_NOTE, "range_includes_backports": includes_backport,
        "started_at": time.time(),
    }
    tried: dict[str, dict[str, Any]] = {}

    def save() -> None:
        state["tried"] = sorted(tried.values(), key=lambda e: parse_version(e["version"]))
        (out / "bisect.json").write_text(json.dumps(state, indent=1, default=str))

    def evaluate(version: str) -> str:
        scenario = _scenario_for(scenario_path, overrides, version)
        folder = out / f"sqlite-{version}"
        results = runner(scenario, folder, repeat=repeat, cache_dir=cache_dir, console=console)
        entry = {"version": version, **outcome_of(results), "results": str(folder / "results.json"),
                 "order": len(tried) + 1}
        tried[version] = entry
        save()
        say(_evidence_text(entry))
        return entry["outcome"]

    say(f"bisect {probe.name} over {len(candidates)} SQLite versions with an apsw release: "
        f"{candidates[0]} .. {candidates[-1]}")
    say(BACKPORT_NOTE)
    if includes_backport:
        say(f"This range includes {' and '.join(includes_backport)}: versions on both sides of a backport may "
            "differ from the versions next to them in the search.")
    save()
    lo_i, hi_i = 0, len(candidates) - 1
    lo_outcome = evaluate(candidates[lo_i])
    hi_outcome = evaluate(candidates[hi_i]) if lo_outcome != "errors" else "errors"
    if "errors" in (lo_outcome, hi_outcome):
        bad = candidates[lo_i] if lo_outcome == "errors" else candidates[hi_i]
        state["conclusion"] = f"stopped: SQLite {bad} gave errors, which say nothing about corruption (see its results)"
    elif lo_outcome == hi_outcome:
        state["conclusion"] = (f"no change: SQLite {candidates[lo_i]} and {candidates[hi_i]} are both {lo_outcome}; "
                               "a change and its reversal in between would not show")
    else:
        while hi_i - lo_i > 1:
            mid = (lo_i + hi_i) // 2
            outcome = evaluate(candidates[mid])
            if outcome == "errors":
                state["conclusion"] = (f"stopped: SQLite {candidates[mid]} gave errors; the change lies between "
                                       f"{candidates[lo_i]} and {candidates[hi_i]}")
                break
            if outcome == lo_outcome:
                lo_i = mid
            else:
                hi_i = mid
        else:
            first, last = tried[candidates[hi_i]], tried[candidates[lo_i]]
            state["first_changed"] = first["version"]
            state["last_unchanged"] = last["version"]
            state["conclusion"] = (
                f"SQLite {first['version']} is the first version in {low}..{high} whose verdict differs: "
                f"{last['version']} is {last['outcome']} ({last['corrupt'] + last['lost']}/{last['runs']} runs damaged), "
                f"{first['version']} is {first['outcome']} ({first['corrupt'] + first['lost']}/{first['runs']} runs damaged)")
    state["finished_at"] = time.time()
    save()
    say(state["conclusion"])
    say(f"evidence: {out / 'bisect.json'}")
    return state
