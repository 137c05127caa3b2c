"""The file mechanisms of "How To Corrupt An SQLite Database File", small and real.

Each test runs one short scenario (minimal schema, 300-600 pages, a few
seconds) with a mechanism and checks what the fault did, what the judge
made of it and which cause it named; each control stays clean. The shipped
scenarios under scenarios/mechanisms/ run the same mechanisms at size, five
times per cell, in ``nox -s repro``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from walstress import run
from walstress.catalog import scenario_from_dict
from walstress.errors import ScenarioError
from walstress.history import read_history

DAMAGED = ("corrupt", "lost-writes")


def scenario(name: str, *, faults: dict | None = None, workers: list | None = None, checkpoints: bool = True,
             **database) -> dict:
    """checkpoints=False: none at all, not even SQLite's automatic one (so every commit stays in the -wal)."""
    if not checkpoints and database.get("journal_mode", "WAL") == "WAL":
        database.setdefault("wal_autocheckpoint", 0)
    return {
        "name": name, "seed": 31, "duration": "3s", "expect": "any",
        "database": {"schema": "minimal", "pages": 400, **database},
        "checkpoint": {"mode": "PASSIVE", "every_writes": 200} if checkpoints else {"mode": "NONE"},
        "workers": workers or [{"role": "writer", "count": 2}, {"role": "reader", "count": 1}],
        "faults": faults or {},
    }


def one(data: dict, tmp_path: Path, cache_dir: Path) -> dict:
    return run(data, tmp_path, cache_dir=cache_dir).runs[0]


@pytest.mark.parametrize("method", ["db-only", "backup-api"])
def test_a_backup_copy_is_judged_as_a_restored_backup(method, tmp_path, cache_dir):
    # no checkpoint: every commit of the run is in the -wal, so a copy of the db file alone lacks them all
    # (with checkpoints, one that ended just before the copy could leave nothing to lose)
    res = one(scenario(f"backup-{method}", faults={"backup_copy": {"enabled": True, "method": method, "at": "1.5s"}},
                       checkpoints=False), tmp_path, cache_dir)
    (copy,) = res["backup_copies"]
    assert copy["method"] == method and copy["checked_rows"] > 0
    assert (Path(res["run_dir"]) / copy["copy_dir"] / "state.db").is_file()
    if method == "db-only":  # the -wal held every commit since the template: the copy lacks them
        assert copy["lost"] > 0 or not copy["integrity_ok"]
        assert res["verdict"] in DAMAGED and res["cause"]["id"] == "backup_copy", res["reason"]
        assert "backup copy taken at" in res["reason"]
    else:
        assert copy["lost"] == 0 and copy["integrity_ok"]
        assert res["verdict"] == "clean", res["reason"]


@pytest.mark.parametrize("action", ["delete", "keep"])
def test_a_hot_wal_deleted_after_a_crash_loses_its_commits(action, tmp_path, cache_dir):
    res = one(scenario(f"hot-wal-{action}", faults={"journal_tamper": {"enabled": True, "action": action, "at": "1s"}},
                       checkpoints=False), tmp_path, cache_dir)
    (tamper,) = [f for f in res["faults"] if f["name"] == "journal_tamper"]
    assert tamper["detail"]["hot"] and tamper["detail"]["journal"] == "state.db-wal"
    assert set(tamper["detail"]["killed"]) == {"writer-0", "writer-1", "reader-0"}
    assert res["duration_s"] < 2.5  # the crash ended the run
    if action == "delete":
        assert res["verdict"] == "lost-writes" and res["cause"]["id"] == "journal_tampered", res["reason"]
        assert "was deleted" in res["cause"]["sentence"]
    else:
        assert res["verdict"] == "clean", res["reason"]  # WAL recovery replays the kept -wal


def test_another_databases_hot_journal_is_prepared_from_the_run_database(tmp_path, cache_dir):
    res = one(scenario("foreign", faults={"journal_tamper": {"enabled": True, "action": "foreign", "at": "1s"}},
                       workers=[{"role": "writer", "count": 2, "batch": 30}], journal_mode="DELETE", cache_size=10,
                       checkpoints=False), tmp_path, cache_dir)
    (tamper,) = [f for f in res["faults"] if f["name"] == "journal_tamper"]
    assert tamper["target"] == "state.db-journal" and tamper["detail"]["foreign_bytes"] > 0
    assert (Path(res["run_dir"]) / "foreign" / "other.db").is_file()
    assert res["verdict"] in DAMAGED, res["reason"]


@pytest.mark.parametrize("kind", ["hardlink", "symlink"])
def test_a_database_opened_through_a_link(kind, tmp_path, cache_dir):
    # a reader through the other name too: its connection (and so its -shm) is open from before the go, so the
    # lock watch sees both -shm names even when the openers' short visits fail at once
    workers = [{"role": "writer", "count": 2}, {"role": "opener", "count": 2, "pause_ms": 5},
               {"role": "reader", "count": 1}]
    res = one(scenario(f"alias-{kind}", faults={"db_alias": {"enabled": True, "kind": kind,
                                                             "roles": "opener,reader"}}, workers=workers),
              tmp_path, cache_dir)
    db_dir = Path(res["run_dir"]) / "db"
    alias = db_dir / "state-alias.db"
    assert alias.is_symlink() is (kind == "symlink")
    splits = res["lock_watch"]["split_wal"]
    if kind == "hardlink":  # the openers' own -shm, next to the writers'
        assert splits and sorted(Path(p).name for p in splits[0]["shm_files"]) == ["state-alias.db-shm",
                                                                                    "state.db-shm"]
        if res["verdict"] in DAMAGED:
            assert res["cause"]["id"] == "db_alias"
    else:  # SQLite follows the link: one -wal, one -shm
        assert not splits and not (db_dir / "state-alias.db-wal").exists()
        assert res["verdict"] == "clean", res["reason"]


def test_a_database_replaced_in_use_is_seen_by_the_lock_watch(tmp_path, cache_dir):
    workers = [{"role": "writer", "count": 2}, {"role": "opener", "count": 1, "pause_ms": 5}]
    res = one(scenario("replace", faults={"db_replace": {"enabled": True, "action": "replace", "at": "1.5s"}},
                       workers=workers), tmp_path, cache_dir)
    (act,) = [f for f in res["faults"] if f["name"] == "db_replace"]
    assert act["detail"]["outcome"] == "ok"
    deleted = res["lock_watch"]["deleted_open"]
    assert {Path(d["file"]).name for d in deleted} >= {"state.db"}
    assert {d["worker"] for d in deleted} >= {"writer-0", "writer-1"}
    if res["verdict"] in DAMAGED:
        assert res["cause"]["id"] in ("deleted_wal", "split_wal", "lock_lost", "db_replaced"), res["cause"]


@pytest.mark.parametrize("mode", ["stale", "own"])
def test_a_write_through_a_reused_descriptor(mode, tmp_path, cache_dir):
    res = one(scenario(f"stray-{mode}", faults={"stray_write": {"enabled": True, "mode": mode, "interval_ms": 100}}),
              tmp_path, cache_dir)
    outcomes = res["fault_summary"]["stray_write"]["outcomes"]
    if mode == "stale":
        assert outcomes.get("landed in the database", 0) > 5, outcomes
        assert res["verdict"] == "corrupt" and res["cause"]["id"] == "stray_write", res["reason"]
    else:
        assert set(outcomes) == {"own file"}
        assert res["verdict"] == "clean", res["reason"]


def test_schema_changes_and_mode_switches_under_open_connections_stay_clean(tmp_path, cache_dir):
    workers = [{"role": "writer", "count": 2, "connection": "per-op", "pause_ms": 2},
               {"role": "schema-changer", "count": 1, "pause_ms": 50},
               {"role": "mode-switcher", "count": 1, "pause_ms": 50, "vacuum": True}]
    res = one(scenario("ddl", workers=workers), tmp_path, cache_dir)
    assert res["verdict"] == "clean", res["reason"]
    records = read_history(Path(res["run_dir"]) / "history")
    ddl = [r for r in records if r.get("type") == "op" and r.get("kind") == "ddl" and r.get("ok")]
    assert {" ".join(r["sql"].split()[:2]) for r in ddl} >= {"CREATE INDEX", "ALTER TABLE", "DROP INDEX"}
    switches = [r for r in records if r.get("type") == "op" and r.get("kind") == "switch"]
    assert switches and all(r.get("back_in_wal") for r in switches if r.get("ok"))


def test_rollback_journal_modes_are_set_on_every_connection(tmp_path, cache_dir):
    # PERSIST is no property of the file: a connection that did not set it would use DELETE and leave no
    # journal; only connections that set it keep one after each commit, its header zeroed
    res = one(scenario("persist", journal_mode="PERSIST", checkpoints=False), tmp_path, cache_dir)
    assert res["verdict"] == "clean", res["reason"]
    db = Path(res["run_dir"]) / "db"
    journal = db / "state.db-journal"
    assert journal.is_file() and journal.stat().st_size > 0
    assert not (db / "state.db-wal").exists()


def test_mechanism_settings_are_checked():
    with pytest.raises(ScenarioError, match="faults.journal_tamper.at"):
        scenario_from_dict({"duration": "2s", "faults": {"journal_tamper": {"enabled": True, "at": "5s"}}})
    with pytest.raises(ScenarioError, match="staggered"):
        scenario_from_dict({"database": {"journal_mode": "DELETE"}, "checkpoint": {"mode": "NONE"},
                            "faults": {"backup_copy": {"enabled": True, "method": "staggered"}}})
    with pytest.raises(ScenarioError, match="mode-switcher"):
        scenario_from_dict({"database": {"journal_mode": "DELETE"}, "checkpoint": {"mode": "NONE"},
                            "workers": [{"role": "mode-switcher"}]})
    with pytest.raises(ScenarioError, match="faults.db_alias.roles"):
        scenario_from_dict({"faults": {"db_alias": {"enabled": True, "roles": "nobody"}}})
