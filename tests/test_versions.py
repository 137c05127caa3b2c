"""SQLite versions as an axis: apsw installs per version, the version check, the
wal-reset race on the system SQLite.

The install tests use pip for real (one apsw wheel, a few seconds each).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from walstress import cli, runner
from walstress.api import load_scenario
from walstress.runner import run_scenario
from walstress.sqlite.versions import apsw_releases, ensure_apsw, installed_version_dir, versions_between

PROJECT = Path(__file__).resolve().parent.parent
TINY = {
    "name": "tiny-apsw", "seed": 11, "duration": "1.5s", "expect": "clean",
    "sqlite": {"driver": "apsw", "version": "3.51.3"},
    "database": {"schema": "minimal", "pages": 200},
    "checkpoint": {"mode": "PASSIVE", "every_writes": 20},
    "workers": [{"role": "writer", "count": 1}, {"role": "reader", "count": 1}],
}

PIP_OUTPUT = """apsw (3.54.1.0)
Available versions: 3.54.1.0, 3.53.3.1, 3.53.3.0, 3.51.3.0, 3.51.2.0, 3.46.0.1, 3.46.0.0, 3.38.5.post1, 3.8.11.1.post1
"""


def test_apsw_releases_keep_the_newest_build_of_each_sqlite_version():
    releases = apsw_releases(PIP_OUTPUT)
    assert releases == {"3.54.1": "3.54.1.0", "3.53.3": "3.53.3.1", "3.51.3": "3.51.3.0", "3.51.2": "3.51.2.0",
                        "3.46.0": "3.46.0.1"}
    assert versions_between("3.51.0", "3.53.9", list(releases)) == ["3.51.2", "3.51.3", "3.53.3"]
    assert versions_between("3.54.1", "3.51.3", list(releases)) == ["3.51.3", "3.53.3", "3.54.1"]


@pytest.fixture(scope="session")
def apsw_3513(cache_dir) -> Path:
    """apsw with SQLite 3.51.3 in the session's cache (WALSTRESS_CACHE_DIR)."""
    return ensure_apsw("3.51.3")


def test_install_is_cached_and_loads_that_sqlite(apsw_3513, cache_dir):
    marker = json.loads((apsw_3513 / "walstress-apsw.json").read_text())
    assert marker["sqlite_version"] == "3.51.3" and marker["apsw_release"].startswith("3.51.3.")
    assert installed_version_dir("3.51.3") == apsw_3513
    assert ensure_apsw("3.51.3") == apsw_3513  # reused: same folder, same marker
    assert json.loads((apsw_3513 / "walstress-apsw.json").read_text()) == marker
    out = subprocess.run([sys.executable, "-c", "import apsw; print(apsw.sqlite_lib_version())"],
                         env={"PYTHONPATH": str(apsw_3513), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert out.stdout.strip() == "3.51.3"


def test_two_processes_installing_one_version_at_once(tmp_path, cache_dir):
    cache = tmp_path / "cache"
    cache.mkdir()
    # the list of releases is shared from the session cache, so only the install races
    (cache / "sqlite").mkdir()
    shared_list = cache_dir / "sqlite" / "apsw-versions.json"
    if shared_list.exists():
        (cache / "sqlite" / "apsw-versions.json").write_bytes(shared_list.read_bytes())
    code = ("import sys; from walstress.sqlite.versions import ensure_apsw; "
            f"print(ensure_apsw('3.51.2', cache_dir={str(cache)!r}))")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    folders = {out.strip() for out, _ in outputs}
    assert folders == {str(cache / "sqlite" / "apsw-3.51.2")}
    leftovers = [p.name for p in (cache / "sqlite").iterdir() if p.name.startswith(".apsw-")]
    assert leftovers == []  # the staging folders were renamed or removed
    marker = json.loads((cache / "sqlite" / "apsw-3.51.2" / "walstress-apsw.json").read_text())
    assert marker["sqlite_version"] == "3.51.2"


def test_workers_report_the_version_they_loaded(apsw_3513, tmp_path):
    scenario = load_scenario(dict(TINY))
    results = run_scenario(scenario, tmp_path / "out", cache_dir=None)
    run = results["cells"][0]["results"][0]
    assert run["verdict"] == "clean", run["reason"]
    assert run["sqlite"]["worker_versions"] == ["3.51.3"]
    assert {w["sqlite_version"] for w in run["workers"]} == {"3.51.3"}


def test_a_worker_loading_another_version_is_an_error(apsw_3513, tmp_path, monkeypatch):
    # A broken install: the folder for 3.51.2 really holds 3.51.3. The worker
    # checks what it loaded; the judge turns the mismatch into "errors".
    monkeypatch.setattr(runner, "sqlite_paths_for", lambda scenario: [str(apsw_3513)])
    scenario = load_scenario(dict(TINY), ["sqlite.version=3.51.2"])
    results = run_scenario(scenario, tmp_path / "out")
    run = results["cells"][0]["results"][0]
    assert run["verdict"] == "errors"
    assert any("loaded SQLite 3.51.3 but 3.51.2 was asked for" in p for p in run["worker_problems"]), run
    assert any(w["exit_code"] == 4 for w in run["workers"])  # EXIT_VERSION_MISMATCH
    assert not results["ok"]


def test_unknown_version_exits_2_listing_the_available_ones(cache_dir, tmp_path, capsys):
    code = cli.main(["run", str(PROJECT / "tests" / "scenarios" / "tiny.toml"), "--set", "sqlite=3.50.7",
                     "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "3.50.7" in err and "3.51.3" in err and "3.50.4" in err
    assert not (tmp_path / "out" / "cell-000").exists()  # failed before any run


def test_wal_reset_race_role_runs_its_rounds(cache_dir, tmp_path):
    """The role's mechanics on a small database: rounds, canaries in the ledger, triggers dropped.

    At this size the race rarely hits, so the verdict may be either; the
    reproduction itself is the slow test below (it needs a 65K-page template).
    """
    scenario = load_scenario(PROJECT / "scenarios" / "wal-reset-race.toml",
                             ["sqlite=stdlib", "database.pages=300", "workers.wal-reset-race.rounds=15",
                              "workers.wal-reset-race.stop_on_loss=false", "duration=20"])
    results = run_scenario(scenario, tmp_path / "race", repeat=1)
    run = results["cells"][0]["results"][0]
    assert run["verdict"] in ("clean", "lost-writes"), run["reason"]
    assert run["ledger"]["acked_transactions"] == 30  # two canaries per round
    assert run["integrity"]["ok"]
    history = (Path(run["run_dir"]) / "history" / "wal-reset-race-0.jsonl").read_text().splitlines()
    summary = next(json.loads(line) for line in history if '"race_summary"' in line)
    assert summary["rounds"] == 15
    assert any("dropped the messages triggers" in line for line in history)
    checkpoints = [json.loads(line) for line in history if '"type":"checkpoint"' in line]
    assert {c["source"] for c in checkpoints} == {"complete", "race"} and len(checkpoints) == 30


@pytest.mark.slow
def test_wal_reset_race_loses_a_write_on_the_system_sqlite(cache_dir, tmp_path):
    """The system SQLite is 3.40.1 on the reference machine (inside 3.7.0..3.51.2).

    Slow: it needs the 65,536-page template (about 11 s to build); the first
    lost canary then comes after 1 to 10 s (measured: 5 of 5 runs).
    """
    import sqlite3

    from walstress.sqlite.versions import parse_version

    version = parse_version(sqlite3.sqlite_version)
    if version >= (3, 51, 3) or version in ((3, 50, 7), (3, 44, 6)):
        pytest.skip(f"system SQLite {sqlite3.sqlite_version} has the WAL-reset fix")
    scenario = load_scenario(PROJECT / "scenarios" / "wal-reset-race.toml",
                             ["sqlite=stdlib", "workers.wal-reset-race.rounds=0", "duration=30"])
    results = run_scenario(scenario, tmp_path / "race", repeat=1)
    run = results["cells"][0]["results"][0]
    assert run["verdict"] == "lost-writes", run["reason"]
    assert run["integrity"]["ok"]  # the damage is a lost write, invisible to integrity_check
    assert run["writes"]["lost"] >= 1 and run["writes"]["lost"] < run["writes"]["acked"]
    assert run["duration_s"] < 30.0  # the role stopped at the first lost canary


@pytest.mark.slow
def test_wal_reset_race_differential_3_51_2_vs_3_51_3(cache_dir, tmp_path):
    """The fix, seen from outside: 3.51.2 loses a canary, 3.51.3 stays clean for 200 rounds."""
    scenario = load_scenario(PROJECT / "scenarios" / "wal-reset-race.toml",
                             ['sqlite=["3.51.2", "3.51.3"]', "workers.wal-reset-race.rounds=200", "duration=60"])
    results = run_scenario(scenario, tmp_path / "race", repeat=1)
    verdicts = {c["params"]["sqlite"]: c["results"][0]["verdict"] for c in results["cells"]}
    assert verdicts == {"3.51.2": "lost-writes", "3.51.3": "clean"}
    assert results["ok"]
