"""Scenario files: defaults, overrides, matrix expansion and clear errors (exit 2, key named)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from walstress.cli import main as cli_main
from walstress.errors import ScenarioError
from walstress.catalog import known_keys, load_scenario, scenario_from_dict
from walstress.scenario import apply_overrides, expand_matrix
from walstress.settings import parse_duration_seconds, parse_size_bytes

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_key_has_a_default():
    scenario = scenario_from_dict({})
    flat = {k: v for k, v in scenario.flat().items() if not k.startswith("faults.")}
    # the documented defaults (README), written out here independently of the dataclasses
    assert flat == {
        "name": "scenario", "description": "", "seed": 0, "duration": 30.0, "repeat": 1, "expect": "clean",
        "expect_fraction": 1.0, "crash.model": "posix-weak", "crash.max_states": 20000, "crash.budget": 600.0, "crash.jobs": 0, "crash.after_cut": "none", "crash.classes": [], "expect_cause": "", "expect_cause_fraction": 0.8, "lock_watch.hz": 20.0, "lock_watch.libraries_every": 1.0, "sqlite.driver": "stdlib", "sqlite.version": "system",
        "database.pages": 65536, "database.page_size": 4096, "database.schema": "hermes", "database.seed": 0,
        "database.journal_mode": "WAL", "database.cache_size": 0, "database.synchronous": "default", "database.mmap_size": 0,
        "database.wal_autocheckpoint": 1000, "database.busy_timeout_ms": 1000,
        "database.journal_size_limit": -1, "database.foreign_keys": True, "database.template": "", "database.filesystem": "native", "database.shm_guests": "",
        "database.schema_sql": "", "database.fill": "", "database.fill_rows": 100, "database.verify": "",
        "checkpoint.mode": "PASSIVE", "checkpoint.every_writes": 0, "checkpoint.interval_ms": 1000,
        "checkpoint.on_close": False, "checkpoint.fts_maintenance": "none", "checkpoint.fts_merge_pages": 500,
        "checkpoint.fts_every_writes": 200, "checkpoint.after_fts_maintenance": False,
        "search.runs": 1, "search.expect": "clean", "search.max_examples": 100, "search.budget": 900.0,
        "search.confirm_runs": 5, "search.confirm_min": 2, "search.shrink_budget": 1800.0, "search.faults": [],
        "search.vary": {},
    }
    # every fault key has a default too (the section's dataclass default applies when it is absent)
    assert all(key in known_keys() for key in scenario.flat())
    assert scenario.checkpoint.mode == "PASSIVE"
    assert scenario.database.pages == 65536 and scenario.database.page_size == 4096
    assert [w.role for w in scenario.workers] == ["writer", "reader"]


def test_shipped_scenarios_load():
    for path in sorted((ROOT / "scenarios").glob("*.toml")):
        scenario = load_scenario(path)
        assert expand_matrix(scenario), path


@pytest.mark.parametrize("text, seconds", [("30s", 30.0), ("500ms", 0.5), ("2m", 120.0), (12, 12.0), ("1.5", 1.5)])
def test_durations(text, seconds):
    assert parse_duration_seconds(text) == pytest.approx(seconds)


@given(st.integers(min_value=0, max_value=10**7))
def test_duration_units_agree(ms):
    assert parse_duration_seconds(f"{ms}ms") == pytest.approx(ms / 1000.0)
    assert parse_duration_seconds(f"{ms}s") == pytest.approx(float(ms))


def test_sizes():
    assert parse_size_bytes("64MiB") == 64 << 20
    assert parse_size_bytes("1g") == 1 << 30
    assert parse_size_bytes(4096) == 4096
    with pytest.raises(ValueError):
        parse_size_bytes("lots")


def test_overrides_are_typed(tmp_path):
    path = write(tmp_path, 'duration = "10s"\n[checkpoint]\nmode = "PASSIVE"\n')
    scenario = load_scenario(path, ["checkpoint.mode=truncate", "duration=500ms", "database.mmap_size=1GiB",
                                    "workers.writer.count=4", "checkpoint.on_close=true"])
    assert scenario.checkpoint.mode == "TRUNCATE"
    assert scenario.duration == 0.5
    assert scenario.database.mmap_size == 1 << 30
    assert scenario.workers_of("writer")[0].count == 4
    assert scenario.checkpoint.on_close is True


def test_set_list_makes_a_matrix_axis(tmp_path):
    path = write(tmp_path, '[matrix]\n"checkpoint.mode" = ["PASSIVE", "TRUNCATE"]\n')
    scenario = load_scenario(path, ["database.synchronous=[NORMAL, FULL]"])
    cells = expand_matrix(scenario)
    assert len(cells) == 4
    assert {(c.scenario.checkpoint.mode, c.scenario.database.synchronous) for c in cells} == {
        ("PASSIVE", "NORMAL"), ("PASSIVE", "FULL"), ("TRUNCATE", "NORMAL"), ("TRUNCATE", "FULL")}
    assert [c.cell_id for c in cells] == ["cell-000", "cell-001", "cell-002", "cell-003"]


@pytest.mark.parametrize("text, key, words", [
    ('[checkpoint]\nmod = "FULL"\n', "checkpoint.mod", "did you mean 'checkpoint.mode'"),
    ('[checkpoint]\nmode = "SLOW"\n', "checkpoint.mode", "PASSIVE, FULL, RESTART, TRUNCATE, NONE"),
    ('[database]\npages = "many"\n', "database.pages", "an integer"),
    ('[database]\npages = 2\n', "database.pages", "at least 8"),
    ('duration = "soon"\n', "duration", "a duration"),
    ('[sqlite]\nversion = "3.51.2"\n', "sqlite.version", "apsw"),
    ('[[workers]]\ncount = 2\n', "workers[0].role", "missing"),
    ('[[workers]]\nrole = "writer"\nthreds = 2\n', "workers[0].threds", "did you mean 'workers[0].threads'"),
    ('[[workers]]\nrole = "writer"\ncount = 0\n', "workers", "no workers"),
    ('[matrix]\n"checkpoint.mode" = ["PASSIVE", "SOMETIMES"]\n', "matrix.checkpoint.mode", "one of"),
    ('[[workers]]\nrole = "checkpointer"\n[checkpoint]\nmode = "NONE"\n', "checkpoint.mode", "NONE"),
])
def test_bad_scenarios_name_file_and_key(tmp_path, text, key, words):
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert str(path) in message and key in message and words in message, message


def test_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(ScenarioError, match="invalid TOML"):
        load_scenario(write(tmp_path, "name = \n"))
    with pytest.raises(ScenarioError, match="no such scenario file"):
        load_scenario(tmp_path / "nope.toml")


def test_bad_override_is_named():
    scenario = scenario_from_dict({})
    with pytest.raises(ScenarioError, match="checkpoint.every_writes.*at least 0"):
        apply_overrides(scenario, ["checkpoint.every_writes=-5"])
    with pytest.raises(ScenarioError, match="expected KEY=VALUE"):
        apply_overrides(scenario, ["checkpoint.mode"])


def test_cli_exits_2_with_one_line_and_no_traceback(tmp_path, capsys):
    path = write(tmp_path, '[checkpoint]\nmode = "SLOW"\n')
    assert cli_main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and "checkpoint.mode" in err and str(path) in err
    assert cli_main(["run", str(tmp_path / "missing.toml")]) == 2
    assert cli_main(["run", "scenarios/smoke.toml", "--set", "database.pagez=10"]) == 2
    assert "did you mean 'database.pages'" in capsys.readouterr().err


def test_cli_subprocess_exit_code(tmp_path):
    path = write(tmp_path, '[database]\nschema = "postgres"\n')
    proc = subprocess.run([sys.executable, "-m", "walstress", "run", str(path)], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    assert "database.schema" in proc.stderr and "hermes, minimal" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cell_labels_say_what_varies():
    scenario = scenario_from_dict({"matrix": {"checkpoint.mode": ["PASSIVE"], "workers.writer.count": [3],
                                              "database.foreign_keys": [False]}})
    assert expand_matrix(scenario)[0].label == "mode=PASSIVE writer.count=3 foreign_keys=false"


def test_unknown_worker_role_is_named():
    with pytest.raises(ScenarioError, match="unknown worker role 'writr'; did you mean 'writer'"):
        apply_overrides(scenario_from_dict({}), ["workers.writr.count=3"])


def test_cli_version_and_usage_errors(capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("walstress ")
    assert cli_main([]) == 2
    assert capsys.readouterr().err == "walstress: the following arguments are required: COMMAND (see 'walstress --help')\n"
    assert cli_main(["run"]) == 2
    assert "run: the following arguments are required: scenario" in capsys.readouterr().err
