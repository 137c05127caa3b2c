"""Turn a matrix result into sentences a bug reporter can paste.

``explain(results)`` reads the per-cell counts of a results.json (``runs``,
``corrupt``, ``lost``, ``errors``, ``params``) and, for every matrix axis
(a "factor"), compares the share of damaged runs (corrupt or lost-writes)
between its levels, summed over the other axes.

It states only what the counts support:
- a factor *changes the verdict* when two of its levels differ by Fisher's
  exact test (two-sided) at p < 0.05, Bonferroni-corrected when the factor
  has more than two levels;
- it *made no difference* when every level has the same damaged share and
  at least ``MIN_RUNS_FOR_NO_DIFFERENCE`` runs;
- otherwise there are *too few runs to tell*.

Runs judged "errors" say nothing about corruption and are left out of the
comparison (and counted in a sentence of their own).
"""

from __future__ import annotations

from math import comb
from typing import Any

__all__ = ["explain", "fisher_exact", "factor_levels", "SIGNIFICANCE", "MIN_RUNS_FOR_NO_DIFFERENCE"]

SIGNIFICANCE = 0.05
MIN_RUNS_FOR_NO_DIFFERENCE = 3


def fisher_exact(a: int, b: int, c: int, d: int) -> float:
    """Two-sided p of Fisher's exact test for the 2x2 table [[a, b], [c, d]].

    The p-value is the sum of the probabilities (hypergeometric, margins
    fixed) of every table no more likely than the observed one.
    """
    if min(a, b, c, d) < 0:
        raise ValueError("counts must be >= 0")
    row1, row2, col1 = a + b, c + d, a + c
    total = row1 + row2
    if total == 0:
        return 1.0
    denominator = comb(total, col1)

    def probability(x: int) -> float:
        return comb(row1, x) * comb(row2, col1 - x) / denominator

    observed = probability(a)
    low, high = max(0, col1 - row2), min(row1, col1)
    p = sum(pr for pr in (probability(x) for x in range(low, high + 1)) if pr <= observed * (1 + 1e-9))
    return min(1.0, p)


def _level_text(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if key == "sqlite" and value == "stdlib":
        return "stdlib (system SQLite)"
    return str(value)


def _factor_name(key: str) -> str:
    if key == "sqlite":
        return "SQLite"
    parts = key.split(".")
    if parts[0] == "faults" and len(parts) >= 3:
        name = parts[1] if parts[-1] == "enabled" else f"{parts[1]} {parts[-1]}"
    elif parts[0] == "sqlite" and len(parts) == 2:
        name = f"SQLite {parts[1]}"
    elif parts[0] == "workers" and len(parts) == 3:
        name = f"{parts[1]} {parts[2]}"
    elif len(parts) >= 2:
        name = f"{parts[-2]} {parts[-1]}"
    else:
        name = key
    return name.replace("_", " ")


def _key_text(value: Any) -> str:
    return repr(value) if not isinstance(value, (str, bool, int, float)) else f"{type(value).__name__}:{value}"


def factor_levels(cells: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Per level of one factor, in order of appearance: runs, damaged, corrupt, lost, errors."""
    levels: dict[str, dict[str, Any]] = {}
    for cell in cells:
        params = cell.get("params") or {}
        if key not in params:
            continue
        value = params[key]
        entry = levels.setdefault(_key_text(value), {"value": value, "text": _level_text(key, value), "cells": 0,
                                                     "runs": 0, "damaged": 0, "corrupt": 0, "lost": 0, "errors": 0})
        corrupt, lost, errors = int(cell.get("corrupt", 0)), int(cell.get("lost", 0)), int(cell.get("errors", 0))
        entry["cells"] += 1
        entry["runs"] += int(cell.get("runs", 0)) - errors  # errors say nothing about corruption
        entry["damaged"] += corrupt + lost
        entry["corrupt"] += corrupt
        entry["lost"] += lost
        entry["errors"] += errors
    return list(levels.values())


def _counts_text(level: dict[str, Any]) -> str:
    k, n = level["damaged"], level["runs"]
    if k == 0:
        return f"{level['text']}: 0/{n} damaged"
    if level["corrupt"] == k:
        return f"{level['text']}: {k}/{n} corrupt"
    if level["lost"] == k:
        return f"{level['text']}: {k}/{n} lost-writes"
    return f"{level['text']}: {k}/{n} damaged ({level['corrupt']} corrupt, {level['lost']} lost-writes)"


def _p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _explain_factor(key: str, levels: list[dict[str, Any]]) -> str:
    name = _factor_name(key)
    counted = [lv for lv in levels if lv["runs"] > 0]
    listing = ", ".join(_counts_text(lv) for lv in counted)
    if len(counted) < 2:
        return f"{name}: fewer than two levels with judged runs; nothing to compare ({listing or 'no runs'})."
    pairs = [(i, j) for i in range(len(counted)) for j in range(i + 1, len(counted))]
    best_p, best_pair = 1.0, pairs[0]
    for i, j in pairs:
        a, b = counted[i], counted[j]
        p = fisher_exact(a["damaged"], a["runs"] - a["damaged"], b["damaged"], b["runs"] - b["damaged"])
        if p < best_p:
            best_p, best_pair = p, (i, j)
    corrected = min(1.0, best_p * len(pairs))
    rates = [lv["damaged"] / lv["runs"] for lv in counted]
    if corrected < SIGNIFICANCE:
        a, b = counted[best_pair[0]], counted[best_pair[1]]
        hi, lo = (a, b) if a["damaged"] / a["runs"] >= b["damaged"] / b["runs"] else (b, a)
        test = f"Fisher's exact test, {hi['text']} vs {lo['text']}: {_p_text(corrected)}"
        if len(pairs) > 1:
            test += f", Bonferroni-corrected over {len(pairs)} pairs"
        return f"{name} changes the verdict: {listing} ({test})."
    if max(rates) == min(rates):
        fewest = min(lv["runs"] for lv in counted)
        if fewest >= MIN_RUNS_FOR_NO_DIFFERENCE:
            return f"{name} made no difference ({listing})."
        return (f"{name}: too few runs to tell ({listing}); the same share at every level, but fewer than "
                f"{MIN_RUNS_FOR_NO_DIFFERENCE} runs at some level.")
    return (f"{name}: too few runs to tell ({listing}; Fisher's exact test {_p_text(corrected)}"
            f"{', Bonferroni-corrected' if len(pairs) > 1 else ''}, not below {SIGNIFICANCE}); run more repeats.")


def _cause_expectation(cell: dict[str, Any]) -> str:
    """"; cause lock_lost expected, 3/5 damaged runs" when a cell expects a cause."""
    if not cell.get("expect_cause"):
        return ""
    damaged = int(cell.get("corrupt", 0)) + int(cell.get("lost", 0))
    return f"; cause {cell['expect_cause']} expected, {cell.get('cause_matching', 0)}/{damaged} damaged runs"


def _cause_sentence(cell: dict[str, Any]) -> str | None:
    """"cause lock_lost in 5 of 5 damaged runs; in the first: writer-0 lost ..." (None without causes)."""
    counts = cell.get("causes") or {}
    damaged = int(cell.get("corrupt", 0)) + int(cell.get("lost", 0))
    if not counts or not damaged:
        return None
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    text = "cause " + ", ".join(f"{name} in {count} of {damaged}" for name, count in ranked) + " damaged runs"
    first = next((r.get("cause") for r in cell.get("results") or []
                  if r.get("verdict") in ("corrupt", "lost-writes") and r.get("cause")), None)
    if first and first.get("id") != "unknown":
        text += f"; in the first: {first['sentence']}"
    elif first:
        text += " (unknown: no evidence of a known mechanism)"
    return text + ("" if text.endswith(".") else ".")


def explain(results: dict[str, Any]) -> list[str]:
    """Sentences about a results.json: overall counts, then one per matrix factor."""
    cells = list(results.get("cells") or [])
    if not cells:
        return ["No cells were run: nothing to explain."]
    runs = sum(int(c.get("runs", 0)) for c in cells)
    corrupt = sum(int(c.get("corrupt", 0)) for c in cells)
    lost = sum(int(c.get("lost", 0)) for c in cells)
    errors = sum(int(c.get("errors", 0)) for c in cells)
    name = (results.get("scenario") or {}).get("name", "the scenario")
    sentences = [f"{name}: {len(cells)} cell{'s' if len(cells) != 1 else ''}, {runs} run{'s' if runs != 1 else ''}: "
                 f"{corrupt} corrupt, {lost} lost-writes, {runs - corrupt - lost - errors} clean"
                 + (f", {errors} errors" if errors else "") + "."]
    if errors:
        sentences.append(f"{errors} run{'s' if errors != 1 else ''} ended in errors (a harness or SQLite failure that "
                         "says nothing about corruption); they are left out of the comparisons below.")
    keys: list[str] = []
    for cell in cells:
        for key in (cell.get("params") or {}):
            if key not in keys:
                keys.append(key)
    if not keys:
        cell = cells[0]
        level = {"text": cell.get("label") or name, "damaged": int(cell.get("corrupt", 0)) + int(cell.get("lost", 0)),
                 "runs": int(cell.get("runs", 0)) - int(cell.get("errors", 0)),
                 "corrupt": int(cell.get("corrupt", 0)), "lost": int(cell.get("lost", 0))}
        sentences.append(f"No matrix: one cell ({_counts_text(level)}); nothing to compare.")
    for key in keys:
        levels = factor_levels(cells, key)
        if len(levels) < 2:
            continue
        sentences.append(_explain_factor(key, levels))
    damaged_cells = [c for c in cells if c.get("time_to_first_failure_s") is not None]
    for cell in damaged_cells:
        label = cell.get('label') or cell.get('cell_id')
        cause = _cause_sentence(cell)
        if cause:
            sentences.append(f"{label}: {cause}")
        sentences.append(f"{label}: first damage seen after "
                         f"{cell['time_to_first_failure_s']} s of run time (the cell's runs in order; within "
                         f"the failing run, SQLite's first corruption error, else the checks at its end).")
    mismatched = [c for c in cells if not c.get("matches_expect", True)]
    if mismatched:
        sentences.append("Cells whose verdicts did not match their expectation: "
                         + ", ".join(f"{c.get('label') or c['cell_id']} (expected {c.get('expect')}, "
                                     f"{c.get('matching', 0)}/{c.get('runs', 0)} matched{_cause_expectation(c)})"
                                     for c in mismatched) + ".")
    return sentences
