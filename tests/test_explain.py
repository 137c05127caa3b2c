"""``walstress.explain``: sentences from matrix counts, only as strong as the counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from walstress import cli
from walstress.explain import explain, fisher_exact

PROJECT = Path(__file__).resolve().parent.parent


def _cell(index: int, params: dict, runs: int, corrupt: int = 0, lost: int = 0, errors: int = 0) -> dict:
    return {"cell_id": f"cell-{index:03d}", "label": " ".join(f"{k.split('.')[-1]}={v}" for k, v in params.items()),
            "params": params, "runs": runs, "corrupt": corrupt, "lost": lost, "errors": errors,
            "clean": runs - corrupt - lost - errors, "expect": "any", "matches_expect": True, "matching": runs,
            "time_to_first_failure_s": 1.0 if corrupt + lost else None}


def test_fisher_exact_known_values():
    assert fisher_exact(5, 0, 0, 5) == pytest.approx(2 / 252)
    assert fisher_exact(3, 0, 0, 3) == pytest.approx(0.1)
    assert fisher_exact(8, 2, 1, 5) == pytest.approx(0.034965, abs=1e-6)
    assert fisher_exact(2, 3, 2, 3) == pytest.approx(1.0)
    assert fisher_exact(0, 0, 0, 0) == 1.0


def test_a_factor_that_changes_the_verdict_and_one_that_does_not():
    cells = []
    index = 0
    for mode in ("TRUNCATE", "PASSIVE"):
        for breaker in (True, False):
            damaged = 5 if breaker else 0
            cells.append(_cell(index, {"checkpoint.mode": mode, "faults.lock_breaker.enabled": breaker}, 5,
                               corrupt=damaged))
            index += 1
    text = explain({"scenario": {"name": "hermes"}, "cells": cells})
    assert text[0] == "hermes: 4 cells, 20 runs: 10 corrupt, 0 lost-writes, 10 clean."
    breaker = next(s for s in text if s.startswith("lock breaker"))
    assert breaker.startswith("lock breaker changes the verdict: on: 10/10 corrupt, off: 0/10 damaged")
    assert "Fisher's exact test" in breaker and "p < 0.001" in breaker
    mode = next(s for s in text if s.startswith("checkpoint mode"))
    assert mode == "checkpoint mode made no difference (TRUNCATE: 5/10 corrupt, PASSIVE: 5/10 corrupt)."


def test_too_few_runs_to_tell():
    cells = [_cell(0, {"checkpoint.mode": "TRUNCATE"}, 2, lost=2), _cell(1, {"checkpoint.mode": "PASSIVE"}, 2)]
    sentence = explain({"cells": cells})[1]
    assert sentence.startswith("checkpoint mode: too few runs to tell (TRUNCATE: 2/2 lost-writes, PASSIVE: 0/2 damaged")
    assert "p = 0.333" in sentence
    same = explain({"cells": [_cell(0, {"checkpoint.mode": "A"}, 1), _cell(1, {"checkpoint.mode": "B"}, 1)]})[1]
    assert "too few runs to tell" in same and "made no difference" not in same


def test_three_levels_are_corrected_for_the_pairs_and_errors_left_out():
    cells = [_cell(0, {"sqlite": "3.51.2"}, 5, lost=5), _cell(1, {"sqlite": "3.51.3"}, 5),
             _cell(2, {"sqlite": "3.54.1"}, 6, errors=1)]
    text = explain({"cells": cells})
    assert any("ended in errors" in s for s in text)
    sentence = next(s for s in text if s.startswith("SQLite"))
    assert "SQLite changes the verdict: 3.51.2: 5/5 lost-writes, 3.51.3: 0/5 damaged, 3.54.1: 0/5 damaged" in sentence
    assert "Bonferroni-corrected over 3 pairs" in sentence and "p = 0.024" in sentence


def test_explain_a_real_tiny_matrix(cache_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_after_run", lambda results, out: None)  # figures are not under test here
    out = tmp_path / "tiny-matrix"
    code = cli.main(["run", str(PROJECT / "tests" / "scenarios" / "matrix.toml"), "--out", str(out), "--quiet",
                     "--duration", "1.5s"])
    assert code == 0
    capsys.readouterr()
    assert cli.main(["explain", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "tiny-matrix: 2 cells, 2 runs: 0 corrupt, 0 lost-writes, 2 clean."
    assert printed[1].startswith("checkpoint mode: too few runs to tell (PASSIVE: 0/1 damaged, TRUNCATE: 0/1 damaged)")


def test_explain_needs_a_results_file(tmp_path, capsys):
    assert cli.main(["explain", str(tmp_path)]) == 2
    assert "no results.json" in capsys.readouterr().err
