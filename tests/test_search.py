"""walstress search: Hypothesis over a scenario's [search] space, real runs, shrinking at a stated rate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from walstress import load_scenario
from walstress.cli import main
from walstress.search import run_search
from walstress.search.engine import _explain, fails, signals

BASE = {
    "name": "tiny-search", "seed": 3, "duration": "1.5s",
    "database": {"schema": "minimal", "pages": 300},
    "checkpoint": {"mode": "TRUNCATE", "every_writes": 50},
    "workers": [{"role": "writer", "count": 1}, {"role": "opener", "count": 1, "pause_ms": 5}],
}


def test_a_space_without_hazards_spends_its_budget(tmp_path, cache_dir):
    scenario = load_scenario({**BASE, "search": {"runs": 1, "max_examples": 3, "vary": {
        "checkpoint.mode": ["PASSIVE", "TRUNCATE"], "workers.writer.count": {"min": 1, "max": 2}}}})
    said: list[str] = []
    summary = run_search(scenario, tmp_path / "out", found_dir=tmp_path / "found", cache_dir=cache_dir,
                         say=said.append)
    assert summary["status"] == "none" and summary["message"] == "no failure in 3 examples (3 runs)"
    assert not (tmp_path / "found").exists()
    log = json.loads((tmp_path / "out" / "search.json").read_text())
    assert len(log["examples"]) == 3 and all(e["verdicts"] == ["clean"] for e in log["examples"])
    assert not list((tmp_path / "out" / "examples").glob("*"))  # what passed is not kept


def test_the_lock_breaker_is_found_and_shrunk_to_one_hazard(tmp_path, cache_dir):
    """fork and the lock breaker each maybe on: the found scenario keeps the breaker alone."""
    data = {**BASE, "faults": {"lock_breaker": {"enabled": False, "roles": "writer"},
                               "fork": {"enabled": False, "interval_ms": 300, "roles": "writer"}},
            "search": {"runs": 1, "max_examples": 30, "confirm_runs": 3, "confirm_min": 2,
                       "shrink_budget": "4m", "faults": ["lock_breaker", "fork"]}}
    scenario = load_scenario(data)
    summary = run_search(scenario, tmp_path / "out", found_dir=tmp_path / "found", cache_dir=cache_dir,
                         say=lambda text: None)
    assert summary["status"] == "found", summary
    found = load_scenario(summary["file"])
    assert found.faults["lock_breaker"].enabled and "fork" not in found.faults
    assert found.expect == "damaged" and found.duration <= 1.5
    log = json.loads((tmp_path / "out" / "search.json").read_text())
    kept = [s["change"] for s in log["shrink_steps"] if s["kept"]]
    refused = [s["change"] for s in log["shrink_steps"] if not s["kept"]]
    assert "turn off faults.lock_breaker" in refused
    assert log["found"]["params"]["faults.lock_breaker.enabled"] is True
    text = Path(summary["file"]).read_text()
    assert f"in {summary['failing']} of {summary['runs_measured']} runs" in text
    assert all(change in text for change in kept)  # the header tells every kept step
    assert summary["failing"] >= 2
    # the example database: a second search of the same space starts from the failure it saved
    again = run_search(scenario, tmp_path / "again", found_dir=tmp_path / "found2", cache_dir=cache_dir,
                       shrink_failure=False, say=lambda text: None)
    assert again["status"] == "found" and again["examples"] == 1


def test_a_space_where_nothing_can_run_is_explained(tmp_path, cache_dir, capsys):
    path = tmp_path / "s.toml"
    path.write_text('duration = "1s"\n[database]\nschema = "minimal"\npages = 300\n'
                    '[[workers]]\nrole = "writer"\n[search]\nmax_examples = 3\n'
                    '[search.vary]\n"workers.writer.count" = [0]\n')
    assert main(["search", str(path), "--out", str(tmp_path / "out"), "--cache-dir", str(cache_dir)]) == 2
    err = capsys.readouterr().err
    assert "every combination of [search.vary] was refused" in err and "Traceback" not in err


def test_explanations_and_the_property():
    assert "raise search.runs" in _explain(type("Flaky", (Exception,), {})("x"))  # type: ignore[arg-type]
    assert fails("clean", "corrupt") and fails("clean", "lost-writes") and not fails("clean", "errors")
    assert not fails("damaged", "corrupt") and fails("damaged", "clean")
    assert signals([{"wal_peak_bytes": 2 << 20, "writes": {"lost": 3}, "errors": {"corrupt": 2},
                     "checkpoints": {"busy": 1}, "latency_ms": {"write": {"max_ms": 1500}}}]) == {
        "wal_peak_mib": 2.0, "busy_checkpoints": 1.0, "longest_op_s": 1.5, "corruption_errors": 2.0, "lost_rows": 3.0}


@pytest.mark.parametrize("search, words", [
    ({"faults": ["io_delay"]}, "not a fault section that can be switched on"),
    ({"vary": {"database.pages": "any"}}, '"any" needs a key with a set of choices'),
    ({"confirm_min": 6}, "more than search.confirm_runs"),
])
def test_bad_search_tables_are_named(search, words):
    from walstress.errors import ScenarioError

    with pytest.raises(ScenarioError, match="search") as info:
        load_scenario({**BASE, "search": search})
    assert words in str(info.value)
