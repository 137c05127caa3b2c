"""The ``wal-reset-race`` role: SQLite's WAL-reset race, on purpose.

SQLite 3.7.0 through 3.51.2 (fixed in 3.51.3; backported to 3.50.7 and
3.44.6) has a data race between two checkpoints and a writer: a checkpoint
copies the whole WAL (nBackfill = mxFrame); a second checkpoint starts at
once and reads the WAL-index header; before it looks at nBackfill, a writer
commits and resets the WAL (nBackfill = 0, a new generation from frame 1).
The second checkpoint, still holding the old header, copies and records the
old frame count as backfilled. Once the new WAL grows past that count, the
next checkpoint skips the new generation's first frames: committed
transactions vanish, and ``integrity_check`` may still say ``ok``.

What widens the window is memory-mapped I/O: when the racing checkpoint
sees a changed header it unmaps the database file before it goes on, and
unmapping a large, fully touched mapping takes a while. So this role needs
``database.mmap_size`` (1 GiB in the shipped scenario) and a database of
tens of thousands of pages, which the racing connection maps by counting
the ``messages`` rows after every round.

One worker process, one thread of this role (``threads = 1``), three
connections: a writer, a checkpointer that completes, and a checkpointer
that races; the racing checkpoint runs in a second thread. A round is:

    1. canary write            (writer: one acknowledged UPDATE)
    2. complete a checkpoint   (checkpointer A, ``checkpoint.mode``)
    3. race: checkpoint B in the second thread  |  canary write
    4. count messages on B     (maps the file through B's mmap)
    5. read back the recent canaries on A

A canary write changes the ``content`` of one existing ``messages`` row to
a text of the same length in bytes, so it rewrites one leaf page in place
and nothing else. The role drops the FTS sync triggers before it starts
(recorded in the history): with them, each canary would also rewrite FTS5
pages and a skipped frame would show as FTS damage instead of the lost
write it is. Every canary goes through the ledger (``U<id>:<crc>``), so the
normal ledger check judges the run. With ``stop_on_loss`` the role stops
after the round in which it first reads a canary back wrong, which ends
the run early: the run's duration is then the time to the first failure.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, ClassVar

from dataclasses import dataclass

from walstress.ledger import LedgerOp, content_crc
from walstress.scenario import WorkerSettings
from walstress.settings import SettingError, setting
from walstress.sqlite.driver import Connection, is_sqlite_error
from walstress.workers.base import Actor, Role, WorkerContext, roll_back_failed

VERIFY_WINDOW = 1000       # canaries read back after each round (the most recent ones)
MIN_CANARY_BYTES = 24      # rows with shorter content are not used as canaries
PICK_ATTEMPTS = 50


@dataclass
class WalResetRaceSettings(WorkerSettings):
    writes_ledger: ClassVar[bool] = True

    rounds: int = setting(0, min=0, max=100_000_000, doc="rounds to run, 0 = until the run ends")
    stop_on_loss: bool = setting(True, doc="stop once a canary write is seen lost")

    def required_tables(self, scenario: Any) -> tuple[str, ...]:
        return ("messages",)

    def validate(self, scenario: Any) -> None:
        if self.threads != 1:
            raise SettingError("workers.wal-reset-race.threads", "must be 1 (the role runs its own racing thread)")
        if scenario.checkpoint.mode == "NONE" or scenario.database.journal_mode != "WAL":
            raise SettingError("checkpoint.mode", 'the wal-reset-race role needs WAL and a checkpoint mode other '
                                                  'than "NONE"')
        others = [w for w in scenario.active_workers() if w is not self]
        if self.count != 1 or any(w.role == self.role or type(w).shares_template_rows for w in others):
            # its canaries update any template row: a second writer of the same rows would make
            # the ledger's expected state ambiguous
            raise SettingError("workers.wal-reset-race.count", "must be 1, and the role cannot share a scenario "
                                                               "with roles that update template rows (writer, opener)")


class WalResetRace(Actor):
    kind = "race"

    def __init__(self, ctx: WorkerContext, thread_index: int):
        super().__init__(ctx, thread_index)
        self.per_op = False
        self.writer: Connection | None = None
        self.completer: Connection | None = None
        self.racer: Connection | None = None
        self.expected: "OrderedDict[int, int]" = OrderedDict()  # row id -> content crc
        self.rounds_limit = int(self.options.rounds)
        self.stop_on_loss = bool(self.options.stop_on_loss)
        self.rounds_done = 0
        self.first_loss: dict[str, Any] | None = None

    # ---------------------------------------------------------------- setup
    def setup(self) -> None:
        self.ledger = self.ctx.ledger(self.thread_index)
        self.writer = self.open()
        self.completer = self.open()
        self.racer = self.open()
        low, high = self.spec.facts.id_range
        self.low, self.high = int(low), int(high)
        if self.high <= self.low:
            raise RuntimeError("wal-reset-race needs a template with messages rows to use as canaries")
        dropped = self._drop_sync_triggers()
        self.ctx.history.record({"type": "note", "worker": self.name, "thread": self.thread_index, "t": time.time(),
                                 "msg": f"wal-reset-race: dropped the messages triggers {dropped} so that a canary "
                                        "write changes one leaf page only"})

    @staticmethod
    def _opened(conn: Connection | None) -> Connection:
        """``conn``, which setup() opened and teardown() has not closed yet."""
        if conn is None:
            raise RuntimeError("wal-reset-race: a connection used before setup() or after teardown()")
        return conn

    def _drop_sync_triggers(self) -> list[str]:
        conn = self._opened(self.writer)
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'messages' ORDER BY name")]
        if names:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for name in names:
                    conn.execute(f'DROP TRIGGER IF EXISTS "{name}"')
                conn.execute("COMMIT")
            except Exception:
                conn.rollback_quietly()
                raise
        return names

    def teardown(self) -> None:
        for attr in ("racer", "completer", "writer"):
            conn = getattr(self, attr)
            setattr(self, attr, None)
            if conn is not None:
                conn.close()
        self.conn = None

    # ----------------------------------------------------------------- steps
    def canary(self, round_index: int) -> bool:
        """One acknowledged same-length UPDATE of a messages row. False when it failed."""
        conn = self._opened(self.writer)
        t0, m0 = time.time(), time.perf_counter()
        txn = None
        try:
            for _ in range(PICK_ATTEMPTS):
                row_id = self.rng.randint(self.low, self.high)
                conn.execute("BEGIN IMMEDIATE")
                size = conn.scalar("SELECT length(CAST(content AS BLOB)) FROM messages WHERE id = ?", (row_id,))
                if size is None or size < MIN_CANARY_BYTES:
                    conn.execute("ROLLBACK")
                    continue
                text = self._canary_text(round_index, int(size))
                conn.execute("UPDATE messages SET content = ? WHERE id = ?", (text, row_id))
                crc = content_crc(text)
                txn = self.ledger.prepare([LedgerOp("U", row_id, crc)])
                conn.execute("COMMIT")
                break
            else:
                raise RuntimeError(f"no messages row with content of {MIN_CANARY_BYTES}+ bytes found")
        except Exception as exc:
            if not is_sqlite_error(exc):
                raise
            roll_back_failed(conn, self.ledger, txn)
            self.record_op("write", t0, m0, err=exc, round=round_index)
            return False
        self.ledger.acknowledge(txn)
        self.expected.pop(row_id, None)
        self.expected[row_id] = crc
        self.record_op("write", t0, m0, rows=1, round=round_index)
        return True

    def _canary_text(self, round_index: int, size: int) -> str:
        head = f"canary {self.name} round {round_index} "
        body = "".join(f"{self.rng.getrandbits(32):08x}" for _ in range(size // 8 + 1))
        return (head + body)[:size]

    def map_file(self) -> None:
        """Count messages on the racing connection: every leaf of the table goes through its mmap."""
        t0, m0 = time.time(), time.perf_counter()
        try:
            rows = self._opened(self.racer).scalar("SELECT count(*) FROM messages")
        except Exception as exc:
            if not is_sqlite_error(exc):
                raise
            self.record_op("read", t0, m0, err=exc)
            return
        self.record_op("read", t0, m0, rows=int(rows or 0))

    def verify(self, round_index: int, started: float) -> list[int]:
        """Read back the most recent canaries; the ids whose content is not what was committed."""
        ids = list(self.expected)[-VERIFY_WINDOW:]
        t0, m0 = time.time(), time.perf_counter()
        found: dict[int, int] = {}
        try:
            for start in range(0, len(ids), 500):
                part = ids[start:start + 500]
                marks = ",".join("?" * len(part))
                for row_id, content in self._opened(self.completer).execute(
                        f"SELECT id, content FROM messages WHERE id IN ({marks})", part):
                    found[int(row_id)] = content_crc(content)
        except Exception as exc:
            if not is_sqlite_error(exc):
                raise
            self.record_op("verify", t0, m0, err=exc, round=round_index)
            return []
        lost = [i for i in ids if found.get(i) != self.expected[i]]
        self.record_op("verify", t0, m0, rows=len(ids), lost=len(lost), round=round_index)
        if lost and self.first_loss is None:
            self.first_loss = {"round": round_index, "elapsed_s": round(time.monotonic() - started, 3),
                               "ids": lost[:20]}
            self.ctx.history.record({"type": "race_loss", "worker": self.name, "thread": self.thread_index,
                                     "t": time.time(), **self.first_loss, "lost": len(lost)})
        return lost

    # ------------------------------------------------------------------ loop
    def run(self) -> None:
        stop = self.ctx.stop
        barrier = threading.Barrier(2)
        finished = threading.Event()
        quit_flag = threading.Event()

        def racing_thread() -> None:
            while True:
                try:
                    barrier.wait()
                except threading.BrokenBarrierError:
                    return
                if quit_flag.is_set():
                    return
                self.run_checkpoint(self._opened(self.racer), "race")
                finished.set()

        helper = threading.Thread(target=racing_thread, name=f"{self.name}-race", daemon=True)
        helper.start()
        started = time.monotonic()
        round_index = 0
        try:
            while not stop.is_set():
                if self.rounds_limit and round_index >= self.rounds_limit:
                    break
                round_index += 1
                self.canary(round_index)
                self.run_checkpoint(self._opened(self.completer), "complete")
                finished.clear()
                try:
                    barrier.wait(timeout=30)
                except threading.BrokenBarrierError:
                    break
                self.canary(round_index)
                finished.wait(timeout=60)
                self.map_file()
                self.rounds_done = round_index
                lost = self.verify(round_index, started)
                if lost and self.stop_on_loss:
                    break
                if self.pause_s:
                    stop.wait(self.pause_s)
        finally:
            quit_flag.set()
            barrier.abort()
            helper.join(timeout=60)
            self.ctx.history.record({
                "type": "race_summary", "worker": self.name, "thread": self.thread_index, "t": time.time(),
                "rounds": self.rounds_done, "seconds": round(time.monotonic() - started, 3),
                "canaries": len(self.expected), "first_loss": self.first_loss,
            })
            self.ctx.history.record({
                "type": "note", "worker": self.name, "thread": self.thread_index, "t": time.time(),
                "msg": (f"wal-reset-race: {self.rounds_done} rounds in {time.monotonic() - started:.2f} s; "
                        + (f"first lost canary in round {self.first_loss['round']} after "
                           f"{self.first_loss['elapsed_s']} s" if self.first_loss else "no canary read back wrong")),
            })


ROLE = Role("wal-reset-race", WalResetRaceSettings, WalResetRace)
