"""Stateful tests of the core: connections, the ledger, checkpoints, held reads, crash and restart.

A Hypothesis state machine drives real SQLite (apsw, through walstress's VFS
shim with its undo log) and walstress's own ledger and ledger check:
persistent and per-operation connections, several at once, writes and
deletes acknowledged in the ledger the way the workers do it, checkpoints of
every mode, read transactions held open, and a crash: the files are taken as
a power cut leaves them (every change since the last sync of each file
undone from the undo log, the -shm gone) and the database is reopened there.
Invariants after every step: integrity_check says ok, and the ledger check
finds every acknowledged row.

A machine with a deliberately broken system (one acknowledged write that
never reaches the database) must be caught, and shrunk to a few steps.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

apsw = pytest.importorskip("apsw")

from walstress.checks.ledger import check_ledger  # noqa: E402
from walstress.faults.power_loss import merge_undo_logs, roll_back  # noqa: E402
from walstress.faults.vfs import UndoWriter, ensure_registered, shim_state  # noqa: E402
from walstress.ledger import LedgerWriter, RowOp  # noqa: E402

MODES = ("PASSIVE", "FULL", "RESTART", "TRUNCATE")
MAX_CONNECTIONS = 3


class Core(RuleBasedStateMachine):
    """The system under test; ``lose_write`` names the write whose COMMIT a broken system drops."""

    lose_write: int | None = None
    last_steps: int = 0

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="walstress-stateful-"))
        self.generation = 0
        self.vfs = ensure_registered()
        self.state = shim_state()
        self.saved_undo = self.state.undo
        self.ledger = LedgerWriter(self.root / "ledger" / "core-t0.ledger")
        self.writes = 0
        self.next_key = 1
        self.keys: list[int] = []
        self.steps = 0
        self._open_generation()
        conn = self.connect()
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        self.connections: list = []
        self.held = None

    # ------------------------------------------------------------ plumbing
    def _open_generation(self) -> None:
        self.folder = self.root / f"gen-{self.generation}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.db = self.folder / "core.db"
        self.state.undo = UndoWriter(self.folder / "undo", f"core{self.generation}", self.folder)

    def connect(self):
        conn = apsw.Connection(str(self.db), vfs=self.vfs)
        conn.setbusytimeout(2000)
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    def write(self, conn, key: int, value: str, *, delete: bool = False) -> None:
        self.writes += 1
        conn.execute("BEGIN IMMEDIATE")
        if delete:
            conn.execute("DELETE FROM kv WHERE k = ?", (key,))
            op = RowOp.deleted("kv", key)
        else:
            conn.execute("INSERT INTO kv VALUES (?, ?) ON CONFLICT DO UPDATE SET v = excluded.v", (key, value))
            op = RowOp.written("kv", key, {"k": key, "v": value})
        txn = self.ledger.prepare([op])
        if self.writes == self.lose_write:
            conn.execute("ROLLBACK")  # the broken system: the write is gone, yet acknowledged below
        else:
            conn.execute("COMMIT")
        self.ledger.acknowledge(txn)

    def step(self) -> None:
        self.steps += 1
        type(self).last_steps = self.steps

    # --------------------------------------------------------------- rules
    @precondition(lambda self: len(self.connections) < MAX_CONNECTIONS)
    @rule()
    def open_connection(self) -> None:
        self.step()
        self.connections.append(self.connect())

    @precondition(lambda self: self.connections)
    @rule(index=st.integers(0, MAX_CONNECTIONS - 1))
    def close_connection(self, index: int) -> None:
        self.step()
        conn = self.connections.pop(index % len(self.connections))
        if conn is self.held:
            conn.execute("COMMIT")
            self.held = None
        conn.close()

    @precondition(lambda self: self.connections)
    @rule(index=st.integers(0, MAX_CONNECTIONS - 1), value=st.text(min_size=0, max_size=300))
    def write_persistent(self, index: int, value: str) -> None:
        self.step()
        conn = self.connections[index % len(self.connections)]
        if conn is self.held:
            return  # a connection inside a read transaction does not write here
        key = self.next_key
        self.next_key += 1
        self.write(conn, key, value)
        self.keys.append(key)

    @rule(value=st.text(min_size=0, max_size=300), overwrite=st.booleans())
    def write_per_op(self, value: str, overwrite: bool) -> None:
        self.step()
        key = random.Random(len(value)).choice(self.keys) if overwrite and self.keys else self.next_key
        if key == self.next_key:
            self.next_key += 1
            self.keys.append(key)
        conn = self.connect()
        self.write(conn, key, value)
        conn.close()

    @precondition(lambda self: self.keys)
    @rule(pick=st.integers(0, 10**6))
    def delete(self, pick: int) -> None:
        self.step()
        key = self.keys.pop(pick % len(self.keys))
        conn = self.connect()
        self.write(conn, key, "", delete=True)
        conn.close()

    @rule(mode=st.sampled_from(MODES))
    def checkpoint(self, mode: str) -> None:
        self.step()
        conn = self.connect()
        conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()  # busy when a read is held: fine
        conn.close()

    @precondition(lambda self: self.connections and self.held is None)
    @rule(index=st.integers(0, MAX_CONNECTIONS - 1))
    def hold_read(self, index: int) -> None:
        self.step()
        conn = self.connections[index % len(self.connections)]
        conn.execute("BEGIN")
        conn.execute("SELECT count(*) FROM kv").fetchall()
        self.held = conn

    @precondition(lambda self: self.held is not None)
    @rule()
    def release_read(self) -> None:
        self.step()
        self.held.execute("COMMIT")
        self.held = None

    @rule()
    def crash_and_restart(self) -> None:
        """A power cut: the files as they would be after a reboot, and the application started again."""
        self.step()
        old_folder, old_db = self.folder, self.db
        cut = self.root / f"gen-{self.generation + 1}"
        cut.mkdir()
        for suffix in ("", "-wal"):  # the files at the moment of the cut (the -shm does not survive)
            if Path(f"{old_db}{suffix}").exists():
                shutil.copyfile(f"{old_db}{suffix}", cut / f"{old_db.name}{suffix}")
        plans = merge_undo_logs(old_folder / "undo")  # what had been synced at that moment
        for conn in self.connections:  # the old processes are gone (what they do now is after the cut)
            conn.close()
        self.connections, self.held = [], None
        self.generation += 1
        self._open_generation()
        renamed = {}
        for path, plan in plans.items():
            plan.path = str(self.folder / Path(path).name)
            renamed[plan.path] = plan
        roll_back(renamed, "all", random.Random(self.generation))  # every unsynced change undone

    # ---------------------------------------------------------- invariants
    @invariant()
    def integrity_and_every_acknowledged_row(self) -> None:
        # checked on a copy: Python's sqlite3 is another SQLite library than apsw's, and its close() of the
        # live file would take the -wal away from the apsw connections of this process (two libraries)
        scratch = self.root / "check"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        for suffix in ("", "-wal"):
            if Path(f"{self.db}{suffix}").exists():
                shutil.copyfile(f"{self.db}{suffix}", scratch / f"core.db{suffix}")
        conn = sqlite3.connect(scratch / "core.db")
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            conn.close()
        result = check_ledger(scratch / "core.db", self.root / "ledger")
        assert result.error is None and result.key_errors == []
        assert result.lost_ids == [], f"acknowledged rows lost: {result.lost_details[:3]}"

    def teardown(self) -> None:
        for conn in self.connections:
            conn.close()
        self.ledger.close()
        self.state.undo = self.saved_undo
        shutil.rmtree(self.root, ignore_errors=True)


def test_the_core_keeps_every_acknowledged_write():
    Core.lose_write = None
    run_state_machine_as_test(Core, settings=settings(stateful_step_count=25,
                                                      suppress_health_check=[HealthCheck.too_slow]))


def test_a_broken_system_is_caught_and_shrunk(capsys):
    """The 3rd write is acknowledged but rolled back: caught, and shrunk to at most 5 steps."""

    class Broken(Core):
        lose_write = 3

    with pytest.raises(AssertionError, match="acknowledged rows lost"):
        run_state_machine_as_test(Broken, settings=settings(
            max_examples=200, stateful_step_count=30, deadline=None, database=None, derandomize=True,
            suppress_health_check=list(HealthCheck)))
    assert Broken.last_steps <= 5  # the last run Hypothesis made is the shrunk example
