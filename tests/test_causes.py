"""Known causes: which evidence names which cause, in which order, and when it says "unknown".

The rules read a run's evidence (history records, the checks' results, the
faults' extras); these tests hand them evidence written the way a run
writes it, to pin the rules down. Real runs that end in each cause are in
test_lock_hazards.py (lock loss), test_repro.py and ``nox -s repro``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from walstress.checks.causes import attribute, cause_text, has_wal_reset_race, hazards_seen
from walstress.checks.findings import RunEvidence
from walstress.checks.integrity import run_integrity
from walstress.history import first_corruption_error
from walstress.layout import RunLayout
from walstress.runner import cause_matches

GO = 1000.0


def evidence(tmp_path: Path, records: list[dict], *, results: dict | None = None, extras: dict | None = None,
             scenario: dict | None = None, versions: tuple[str, ...] = ("3.40.1",)) -> RunEvidence:
    base = [{"type": "run_start", "t": GO - 1}, {"type": "go", "t": GO}]
    tail = [{"type": "run_stop", "t": GO + 30}]
    return RunEvidence(layout=RunLayout(tmp_path), scenario=scenario or {"database": {"journal_mode": "WAL"}},
                       records=sorted(base + records + tail, key=lambda r: r["t"]), summary={},
                       workers=[{"name": f"w{i}", "sqlite_version": v} for i, v in enumerate(versions)],
                       worker_problems=[], partial=False, results=results or {}, extras=extras or {})


def lock_lost(t: float, worker: str = "writer-1", pid: int = 11) -> dict:
    return {"type": "lock_lost", "t": GO + t, "worker": worker, "pid": pid, "file": "/x/db/state.db",
            "which": "database", "still_held": ["DMS(r)"], "msg": f"{worker} has state.db ... no POSIX lock"}


def corruption_error(t: float, ms: float = 0.0) -> dict:
    return {"type": "op", "t": GO + t, "ms": ms, "worker": "opener-0", "kind": "read", "ok": False, "err": "corrupt"}


WATCHED = {"type": "lock_watch", "t": GO + 30, "hz": 20, "samples": 600, "cpu_s": 0.1, "core_share": 0.003}


def test_a_lock_lost_before_the_first_corruption_error_is_the_cause(tmp_path):
    run = evidence(tmp_path, [lock_lost(2.31), corruption_error(2.73), WATCHED])
    out = attribute(run, "corrupt")
    assert out["cause"]["id"] == "lock_lost" and out["cause"]["t_s"] == 2.31
    assert out["cause"]["sentence"] == ("writer-1 lost its POSIX locks on state.db at 2.31 s, 0.42 s before the "
                                        "first corruption error.")
    assert cause_text(out).startswith("Cause: lock loss. writer-1 lost")
    assert out["lock_watch"]["counts"]["lock_lost"] == 1


@pytest.mark.parametrize("t, said", [(-0.001, "at 0.00 s,"), (-0.5, "at 0.50 s before the go,")])
def test_a_lock_lost_as_the_go_was_given_is_dated_without_a_minus_sign(tmp_path, t, said):
    run = evidence(tmp_path, [lock_lost(t), corruption_error(0.4), WATCHED])
    sentence = attribute(run, "corrupt")["cause"]["sentence"]
    assert said in sentence and "-0." not in sentence, sentence


def test_a_lock_loss_seen_within_one_sample_after_the_first_error_may_have_come_first(tmp_path):
    # sampled at 20 Hz: a loss first seen 30 ms after the error happened up to 50 ms before it was seen
    watched = {"lock_watch": {"hz": 20.0}, "database": {"journal_mode": "WAL"}}
    out = attribute(evidence(tmp_path, [corruption_error(1.0), lock_lost(1.03), WATCHED], scenario=watched),
                    "corrupt")
    assert out["cause"]["id"] == "lock_lost"
    assert "seen 30 ms after the first corruption error but within one lock-watch sample" in out["cause"]["sentence"]
    late = attribute(evidence(tmp_path, [corruption_error(1.0), lock_lost(1.08), WATCHED], scenario=watched),
                     "corrupt")
    assert late["cause"]["id"] == "unknown"


def test_an_error_is_dated_when_sqlite_reported_it_not_when_its_operation_began(tmp_path):
    # a write that waited 1.67 s on a lock began before the lock was lost and failed after it: the loss
    # still comes first (records are dated by when an operation began)
    run = evidence(tmp_path, [corruption_error(0.37, ms=1666.0), lock_lost(1.5), WATCHED])
    out = attribute(run, "corrupt")
    assert out["cause"]["id"] == "lock_lost", out["cause"]
    assert "0.54 s before the first corruption error" in out["cause"]["sentence"]
    first = first_corruption_error([corruption_error(0.37, ms=1666.0), corruption_error(1.0, ms=10.0)])
    assert first is not None and first["t"] == GO + 1.0


def test_evidence_after_the_damage_is_no_cause_and_unknown_is_not_replaced_by_a_guess(tmp_path):
    run = evidence(tmp_path, [corruption_error(1.0), lock_lost(2.0), WATCHED])
    out = attribute(run, "corrupt")
    assert out["cause"]["id"] == "unknown" and out["causes"] == []
    assert "no evidence of a known mechanism" in out["cause"]["sentence"]


def test_without_a_corruption_error_the_end_of_the_run_is_the_deadline(tmp_path):
    run = evidence(tmp_path, [lock_lost(29.0), WATCHED])
    out = attribute(run, "lost-writes")
    assert out["cause"]["id"] == "lock_lost"
    assert out["cause"]["sentence"].endswith("before the checks at the end found the damage.")


def test_two_libraries_explain_the_lock_loss_of_their_process(tmp_path):
    libs = {"type": "two_libraries", "t": GO + 0.5, "worker": "writer-1", "pid": 11,
            "libraries": {"/usr/lib/libsqlite3.so.0": "2022-12-28 14:03:47 df5c", "/venv/apsw/__init__.so":
                          "2026-01-09 17:27:48 b270"}, "msg": "writer-1 has 2 SQLite libraries mapped"}
    run = evidence(tmp_path, [libs, lock_lost(1.0), corruption_error(3.0), WATCHED])
    out = attribute(run, "corrupt")
    assert [c["id"] for c in out["causes"]] == ["two_libraries", "lock_lost"]
    assert "two SQLite libraries mapped" in out["cause"]["sentence"]
    assert "lost its locks on state.db at 1.00 s, 2.00 s before the first corruption error" in out["cause"]["sentence"]
    # a loss seen only after the first error still shows the mechanism at work in that process
    late = evidence(tmp_path, [libs, corruption_error(0.8), lock_lost(1.0), WATCHED])
    assert attribute(late, "corrupt")["cause"]["id"] == "two_libraries"
    # the same process kept its locks while the watch looked: the libraries are not named the cause
    kept = evidence(tmp_path, [libs, lock_lost(1.0, worker="opener-0", pid=12), corruption_error(3.0), WATCHED])
    assert attribute(kept, "corrupt")["cause"]["id"] == "lock_lost"


def test_a_run_that_was_not_damaged_has_no_cause_but_says_what_the_watch_saw(tmp_path):
    run = evidence(tmp_path, [lock_lost(0.05), WATCHED])
    out = attribute(run, "clean")
    assert out["cause"] is None and out["causes"] == []
    assert hazards_seen(out) == "writer-1 lost its locks on state.db at 0.05 s"


@pytest.mark.parametrize("version, affected", [
    ("3.7.0", True), ("3.6.23", False), ("3.44.5", True), ("3.44.6", False), ("3.50.6", True), ("3.50.7", False),
    ("3.51.2", True), ("3.51.3", False), ("3.54.1", False), ("", False)])
def test_wal_reset_race_versions(version, affected):
    assert has_wal_reset_race(version) is affected


def test_stale_rows_with_integrity_ok_name_the_wal_reset_race_only_on_an_affected_version(tmp_path):
    results = {"integrity": {"ok": True, "zero_pages": []}, "ledger": {"stale_rows": 3, "changed_rows": 3}}
    race = attribute(evidence(tmp_path, [WATCHED], results=results, versions=("3.51.2",)), "lost-writes")
    assert race["cause"]["id"] == "wal_reset_race" and "SQLite 3.51.2" in race["cause"]["sentence"]
    fixed = attribute(evidence(tmp_path, [WATCHED], results=results, versions=("3.51.3",)), "lost-writes")
    assert fixed["cause"]["id"] == "stale_rows"
    assert "mechanism is not told" in fixed["cause"]["sentence"]
    # a row of mixed versions (an overflow chain half from before the commit) is the race's work too
    mixed = {"integrity": {"ok": True}, "ledger": {"stale_rows": 0, "changed_rows": 1}}
    out = attribute(evidence(tmp_path, [WATCHED], results=mixed, versions=("3.51.2",)), "lost-writes")
    assert out["cause"]["id"] == "wal_reset_race" and "1 mixed" in out["cause"]["sentence"]
    assert attribute(evidence(tmp_path, [WATCHED], results=mixed, versions=("3.54.1",)),
                     "lost-writes")["cause"]["id"] == "unknown"


def power(synchronous: str, lost: int, after: int) -> dict:
    return {"power_loss": {"cut_t": GO + 5.0, "synchronous": synchronous, "lost": lost,
                           "lost_after_last_sync": after, "lost_although_synced": lost - after}}


def test_a_power_cut_names_unsynced_loss_only_where_sqlite_did_not_promise_durability(tmp_path):
    cut = [{"type": "fault", "name": "power_loss", "t": GO + 5.0}, WATCHED]
    off = attribute(evidence(tmp_path, cut, extras=power("OFF", 12, 12)), "lost-writes")
    assert off["cause"]["id"] == "unsynced_loss" and "synchronous=OFF" in off["cause"]["sentence"]
    normal = attribute(evidence(tmp_path, cut, extras=power("NORMAL", 4, 4)), "lost-writes")
    assert normal["cause"]["id"] == "unsynced_loss"
    # FULL and rows lost that had been synced: that is not explained by anything known
    full = attribute(evidence(tmp_path, cut, extras=power("FULL", 4, 0)), "lost-writes")
    assert full["cause"]["id"] == "unknown"


def test_no_journal_and_a_crash(tmp_path):
    records = [{"type": "fault", "name": "kill", "t": GO + 2.0}, WATCHED]
    out = attribute(evidence(tmp_path, records, scenario={"database": {"journal_mode": "OFF"}}), "corrupt")
    assert out["cause"]["id"] == "no_journal" and "A crash at 2.00 s with journal_mode=OFF" in out["cause"]["sentence"]
    # damage before any crash: the journal mode is still what the evidence points at, and says so
    early = attribute(evidence(tmp_path, [corruption_error(0.01), *records],
                               scenario={"database": {"journal_mode": "MEMORY"}}), "corrupt")
    assert early["cause"]["id"] == "no_journal" and "came before any crash" in early["cause"]["sentence"]


def test_zero_filled_pages_are_found_in_a_real_file(tmp_path):
    db = tmp_path / "z.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO t(v) VALUES (?)", [("x" * 200,) for _ in range(400)])
    conn.commit()
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 't'").fetchone()[0]
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(db, "r+b") as handle:  # a leaf of t, two pages after its root, all zeros
        handle.seek((root + 1) * page_size)
        handle.write(bytes(page_size))
    integrity = run_integrity(db).to_dict()
    assert not integrity["ok"] and integrity["zero_pages"] == [root + 2]
    out = attribute(evidence(tmp_path, [WATCHED], results={"integrity": integrity}), "corrupt")
    assert out["cause"]["id"] == "zero_filled_pages" and f"pages {root + 2}" in out["cause"]["sentence"]


def test_an_expected_cause_holds_for_the_damaged_runs_only():
    runs = [{"verdict": "corrupt", "cause": {"id": "lock_lost"}}] * 4 + \
           [{"verdict": "lost-writes", "cause": {"id": "unknown"}}, {"verdict": "clean", "cause": None}]
    assert cause_matches("lock_lost", 0.8, runs) == (4, True)
    assert cause_matches("lock_lost", 1.0, runs) == (4, False)
    assert cause_matches("", 1.0, runs) == (0, True)
    assert cause_matches("lock_lost", 1.0, [{"verdict": "clean", "cause": None}]) == (0, True)


def test_an_unknown_expected_cause_is_a_scenario_error_before_anything_runs(tmp_path):
    from walstress import run
    from walstress.errors import ScenarioError

    with pytest.raises(ScenarioError, match="unknown cause 'lock_lots'.*lock_lost"):
        run({"duration": "1s", "expect_cause": "lock_lots", "database": {"schema": "minimal", "pages": 300}},
            tmp_path)
    assert not (tmp_path / "cell-000").exists()


def test_files_a_power_cut_deletes_itself_are_no_cause(tmp_path):
    deleted = {"type": "deleted_open", "t": GO + 5.2, "worker": "writer-0", "pid": 11, "file": "/x/db/state.db-shm",
               "msg": "writer-0 has state.db-shm open after it was deleted"}
    cut = [{"type": "fault", "name": "power_loss", "t": GO + 5.0}, deleted, WATCHED]
    out = attribute(evidence(tmp_path, cut, extras=power("FULL", 4, 0)), "lost-writes")
    assert out["cause"]["id"] == "unknown", out["cause"]   # nothing else in this evidence names a cause
    before = attribute(evidence(tmp_path, [{**deleted, "t": GO + 4.0}, *cut[:1], WATCHED],
                                extras=power("FULL", 4, 0)), "lost-writes")
    assert before["cause"]["id"] == "deleted_wal", before["cause"]
