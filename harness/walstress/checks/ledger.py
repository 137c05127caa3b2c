"""Ledger check: every acknowledged change must be in the final database.

The expected state of a row is given by the last transaction that touched it
(in commit order across all ledgers: the order of their P lines). Acknowledged inserts and updates must be
present with the same content checksum; acknowledged deletes must stay
deleted. Rows whose last transaction is indeterminate are not judged.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path

from walstress.checks.findings import Finding, RunEvidence, is_lock_error
from walstress.ledger import Ledger, content_crc, read_ledger

LOST_IDS_IN_SUMMARY = 1000


@dataclass
class LedgerResult:
    acked_transactions: int = 0
    failed_transactions: int = 0
    indeterminate_transactions: int = 0
    acked_writes: int = 0          # rows whose expected state comes from an acknowledged change
    present_writes: int = 0        # of those, rows found in the expected state
    lost_ids: list[int] = field(default_factory=list)
    lost_details: list[dict] = field(default_factory=list)
    indeterminate_ids: list[int] = field(default_factory=list)
    ledger_files: int = 0
    garbled_lines: int = 0
    error: str | None = None

    @property
    def lost(self) -> int:
        return len(self.lost_ids)

    def to_dict(self, *, cap: int = LOST_IDS_IN_SUMMARY) -> dict:
        data = asdict(self)
        data["lost"] = self.lost
        data["lost_ids"] = self.lost_ids[:cap]
        data["lost_ids_truncated"] = self.lost > cap
        data["lost_details"] = self.lost_details[:cap]
        data["indeterminate_ids"] = self.indeterminate_ids[:cap]
        data["indeterminate"] = len(self.indeterminate_ids)
        return data


def expected_states(ledger: Ledger) -> tuple[dict[int, tuple[str, int | None]], set[int]]:
    """row id -> (action, crc) from acknowledged changes; and the indeterminate ids."""
    # Order by the P line: it is written while the writer holds SQLite's write lock (after
    # BEGIN IMMEDIATE, before COMMIT), so P times follow commit order. The A line comes after
    # the lock is released, and a preempted thread may write it after a later commit's A.
    events = []
    for txn in ledger.transactions:
        if txn.state == "failed":
            continue
        events.append((txn.t_prepare, txn))
    events.sort(key=lambda e: e[0])
    expected: dict[int, tuple[str, int | None]] = {}
    indeterminate: set[int] = set()
    for _, txn in events:
        for op in txn.ops:
            if txn.state == "acked":
                expected[op.row_id] = (op.action, op.crc)
                indeterminate.discard(op.row_id)
            else:
                expected.pop(op.row_id, None)
                indeterminate.add(op.row_id)
    return expected, indeterminate


def check_ledger(db_path: str | Path, ledger_dir: str | Path, *, table: str = "messages") -> LedgerResult:
    ledger = read_ledger(ledger_dir)
    result = LedgerResult(ledger_files=len(ledger.files), garbled_lines=ledger.garbled_lines)
    for txn in ledger.transactions:
        if txn.state == "acked":
            result.acked_transactions += 1
        elif txn.state == "failed":
            result.failed_transactions += 1
        else:
            result.indeterminate_transactions += 1
    expected, indeterminate = expected_states(ledger)
    result.indeterminate_ids = sorted(indeterminate)
    result.acked_writes = len(expected)
    if not expected:
        return result
    try:
        found = _read_rows(Path(db_path), table, sorted(expected))
    except sqlite3.Error as exc:
        result.error = f"could not read {table}: {exc}"
        return result
    for row_id in sorted(expected):
        action, crc = expected[row_id]
        actual = found.get(row_id)
        if action == "D":
            if actual is None:
                result.present_writes += 1
            else:
                result.lost_ids.append(row_id)
                result.lost_details.append({"id": row_id, "expected": "deleted", "found": "row present"})
        elif actual is None:
            result.lost_ids.append(row_id)
            result.lost_details.append({"id": row_id, "expected": "inserted" if action == "I" else "updated", "found": "missing"})
        elif actual != crc:
            result.lost_ids.append(row_id)
            result.lost_details.append({"id": row_id, "expected": f"content crc {crc}", "found": f"content crc {actual}"})
        else:
            result.present_writes += 1
    return result


def _read_rows(db_path: Path, table: str, ids: list[int]) -> dict[int, int]:
    """id -> content checksum for the given ids that exist."""
    conn = sqlite3.connect(str(db_path), timeout=10.0)
    try:
        found: dict[int, int] = {}
        chunk = 500
        for start in range(0, len(ids), chunk):
            part = ids[start : start + chunk]
            marks = ",".join("?" * len(part))
            for row_id, content in conn.execute(f"SELECT id, content FROM {table} WHERE id IN ({marks})", part):
                found[int(row_id)] = content_crc(content)
        return found
    finally:
        conn.close()


# ------------------------------------------------------------ as a run check
class LedgerCheck:
    """Every acknowledged change of the run's ledger must be in the final database.

    Writes ``checks/lost_ids.txt`` (every lost id; run.json keeps the first ones)."""

    name = "ledger"

    def __call__(self, run: RunEvidence) -> list[Finding]:
        if not run.layout.db_path.exists():
            run.results[self.name] = None
            return []  # the integrity check says so
        result = check_ledger(run.layout.db_path, run.layout.ledger_dir)
        run.layout.checks_dir.mkdir(exist_ok=True)
        run.layout.check_file("lost_ids.txt").write_text("".join(f"{i}\n" for i in result.lost_ids))
        data = result.to_dict()
        run.results[self.name] = data
        if result.error:
            verdict = "errors" if is_lock_error(result.error) else "corrupt"
            return [Finding(self.name, verdict, f"acknowledged rows could not be read back: {result.error}")]
        if result.lost:
            ids = ", ".join(str(i) for i in result.lost_ids[:8])
            more = "" if result.lost <= 8 else f" and {result.lost - 8} more"
            return [Finding(self.name, "lost-writes",
                            f"{result.lost} of {result.acked_writes} acknowledged rows lost (ids {ids}{more})")]
        return []


def all_lost_ids(run: RunEvidence) -> list[int]:
    """Every lost id of a judged run: checks/lost_ids.txt has them all, run.json only the first ones."""
    path = run.layout.check_file("lost_ids.txt")
    if path.exists():
        try:
            return [int(line) for line in path.read_text().split()]
        except ValueError:
            pass
    return list((run.results.get("ledger") or {}).get("lost_ids") or [])
