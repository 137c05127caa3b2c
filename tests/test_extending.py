"""A role and a check from outside walstress: one module and one registration line each (README).

The role's module lives in tests/extending/, which the worker processes
cannot import by name: they load it from its file, as they would a user's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from walstress import run
from walstress.checks.registry import CHECKS, register_check
from walstress.workers.registry import ROLES, register_role

from extending.count_role import ROLE
from extending.stall_check import StallCheck


@pytest.fixture
def counter_role():
    register_role(ROLE)
    yield ROLE
    ROLES.unregister(ROLE.name)


@pytest.fixture
def stall_check():
    check = register_check(StallCheck(limit_s=1.0))
    yield check
    CHECKS.unregister(check.name)


def counter_scenario(**faults) -> dict:
    return {"name": "counter", "duration": "3s", "database": {"schema": "hermes", "pages": 300},
            "workers": [{"role": "counter", "count": 1, "pause_ms": 20, "table": "sessions"}], "faults": faults}


def test_a_registered_role_runs_in_its_own_processes(cache_dir, tmp_path, counter_role):
    result = run(counter_scenario(), tmp_path / "out")
    res = result.runs[0]
    assert res["verdict"] == "clean", res["reason"]
    assert res["ops"]["count"]["ok"] >= 20
    assert res["workers"][0]["role"] == "counter" and res["workers"][0]["exit_code"] == 0
    spec = json.loads((Path(res["run_dir"]) / "specs" / "counter-0.json").read_text())
    assert spec["settings"]["table"] == "sessions" and spec["actor"].endswith(":Counter")


def test_a_registered_role_has_its_own_keys(counter_role):
    from walstress.errors import ScenarioError

    with pytest.raises(ScenarioError, match="table.*one of messages, sessions"):
        run(counter_scenario() | {"workers": [{"role": "counter", "table": "jobs"}]}, "unused")
    with pytest.raises(ScenarioError, match="'batch' is a setting of the role\\(s\\) writer, sql, not of counter"):
        run(counter_scenario() | {"workers": [{"role": "counter", "batch": 3}]}, "unused")


def test_a_registered_check_votes_on_the_verdict(cache_dir, tmp_path, counter_role, stall_check):
    frozen = run(counter_scenario(pause={"enabled": True, "target": "counter", "at": "1",
                                         "duration_ms": 1600}), tmp_path / "paused")
    res = frozen.runs[0]
    assert res["verdict"] == "errors" and res["reason"].startswith("no operation finished for"), res["reason"]
    assert {"check": "stall", "verdict": "errors", "reason": res["reason"], "excuses": [],
            "excused": False} in res["findings"]
    steady = run(counter_scenario(), tmp_path / "steady").runs[0]
    assert steady["verdict"] == "clean", steady["reason"]
    assert not [f for f in steady["findings"] if f["check"] == "stall"]


@pytest.mark.parametrize("module, first_line", [
    ("count_role.py", "@dataclass"), ("stall_check.py", "class StallCheck:")])
def test_the_readme_shows_the_real_code(module, first_line):
    """The README's "Adding a role" / "Adding a check" code is this module's code, line for line."""
    import textwrap

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    source = (Path(__file__).resolve().parent / "extending" / module).read_text()
    start = readme.index(f"    {first_line}\n")
    end = readme.index("\n\nand ", start)
    shown = textwrap.dedent(readme[start:end]).strip()
    assert shown in source
