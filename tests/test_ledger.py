"""The ledger check on hand-written ledgers and a real database."""

from __future__ import annotations

import sqlite3

import pytest

from walstress.checks.ledger import check_ledger
from walstress.errors import ScenarioError
from walstress.ledger import content_crc
from walstress.catalog import scenario_from_dict


def make_db(path, rows):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE messages(id INTEGER PRIMARY KEY, content TEXT)")
    conn.executemany("INSERT INTO messages VALUES (?, ?)", rows)
    conn.commit()
    conn.close()


def test_commit_order_is_the_order_of_the_prepare_lines(tmp_path):
    # X prepared (under the write lock) before Y, but Y's acknowledgement was written first:
    # the row holds Y's content, which is right, and nothing is lost
    make_db(tmp_path / "db", [(5, "B")])
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    (ledger / "x.ledger").write_text(f"P 1 100.0 U5:{content_crc('A')}\nA 1 103.0\n")
    (ledger / "y.ledger").write_text(f"P 1 101.0 U5:{content_crc('B')}\nA 1 102.0\n")
    result = check_ledger(tmp_path / "db", ledger)
    assert result.lost_ids == [] and result.present_writes == 1


def test_lost_stale_resurrected_and_indeterminate(tmp_path):
    make_db(tmp_path / "db", [(1, "one"), (2, "old"), (3, "back"), (4, "whatever")])
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    (ledger / "w.ledger").write_text(
        f"P 1 1.0 I1:{content_crc('one')} I9:{content_crc('nine')}\nA 1 1.1\n"   # 9 missing
        f"P 2 2.0 U2:{content_crc('new')}\nA 2 2.1\n"                            # 2 stale
        f"P 3 3.0 D3\nA 3 3.1\n"                                                  # 3 deleted, back
        f"P 4 4.0 U4:{content_crc('x')}\n"                                        # 4 indeterminate
        f"P 5 5.0 I7:{content_crc('seven')}\nF 5 5.1\n"                           # rolled back
        f"P 6 6.0 I8:1\nA 6")                                                     # torn last line
    result = check_ledger(tmp_path / "db", ledger)
    assert result.lost_ids == [2, 3, 9]
    assert {d["id"]: d["found"] for d in result.lost_details}[9] == "missing"
    assert result.indeterminate_ids == [4, 8]
    assert result.failed_transactions == 1 and result.present_writes == 1


def test_wal_reset_race_does_not_share_rows_with_writers():
    with pytest.raises(ScenarioError, match="workers.wal-reset-race.count"):
        scenario_from_dict({"checkpoint": {"mode": "PASSIVE"},
                            "workers": [{"role": "wal-reset-race"}, {"role": "writer"}]})
