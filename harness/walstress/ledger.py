"""The durability ledger: acknowledged commits, kept outside the database.

Each writing thread owns one append-only text file. A transaction writes
three kinds of lines, each with one unbuffered ``os.write`` (so it survives
the death of the process that wrote it):

    P <txn> <t> <op> <op> ...    before COMMIT: what the transaction changed
    A <txn> <t>                  after COMMIT returned: acknowledged
    F <txn> <t>                  the transaction was rolled back: not committed

where an op is ``I<id>:<crc>`` (row inserted with content checksum),
``U<id>:<crc>`` (content updated) or ``D<id>`` (row deleted). A ``P`` with
neither ``A`` nor ``F`` (the process died, or COMMIT failed in an unclear
way) is *indeterminate*: its rows may be in either state, never "lost".
"""

from __future__ import annotations

import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator


def content_crc(content: str | bytes | None) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        content = content.encode("utf-8", "surrogatepass")
    return zlib.crc32(content)


@dataclass
class LedgerOp:
    action: str  # "I", "U" or "D"
    row_id: int
    crc: int | None = None

    def encode(self) -> str:
        if self.action == "D":
            return f"D{self.row_id}"
        return f"{self.action}{self.row_id}:{self.crc}"

    @classmethod
    def decode(cls, text: str) -> "LedgerOp":
        action = text[0]
        if action not in "IUD":
            raise ValueError(text)
        if action == "D":
            return cls("D", int(text[1:]))
        row, _, crc = text[1:].partition(":")
        return cls(action, int(row), int(crc))


class LedgerWriter:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._txn = 0
        self.acknowledged = 0

    def _write(self, line: str) -> None:
        os.write(self._fd, (line + "\n").encode("ascii"))

    def prepare(self, ops: Iterable[LedgerOp]) -> int:
        """Record what the open transaction changed; call right before COMMIT."""
        self._txn += 1
        encoded = " ".join(op.encode() for op in ops)
        self._write(f"P {self._txn} {time.time():.6f} {encoded}")
        return self._txn

    def acknowledge(self, txn: int) -> None:
        """COMMIT returned successfully: the transaction is acknowledged."""
        self._write(f"A {txn} {time.time():.6f}")
        self.acknowledged += 1

    def fail(self, txn: int) -> None:
        """The transaction was certainly rolled back."""
        self._write(f"F {txn} {time.time():.6f}")

    def close(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass


@dataclass
class LedgerTxn:
    source: str
    txn: int
    t_prepare: float
    ops: list[LedgerOp]
    state: str = "pending"  # pending / acked / failed
    t_end: float | None = None


@dataclass
class Ledger:
    transactions: list[LedgerTxn] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    garbled_lines: int = 0


def read_ledger_file(path: Path) -> Iterator[tuple[str, list[str]]]:
    with open(path, "r", encoding="ascii", errors="replace") as handle:
        for line in handle:
            if not line.endswith("\n"):
                break  # torn last line: the write never completed
            parts = line.split()
            if parts:
                yield parts[0], parts[1:]


def read_ledger(folder: str | Path) -> Ledger:
    ledger = Ledger()
    folder = Path(folder)
    if not folder.is_dir():
        return ledger
    for path in sorted(folder.glob("*.ledger")):
        ledger.files.append(path.name)
        open_txns: dict[int, LedgerTxn] = {}
        for kind, fields in read_ledger_file(path):
            try:
                txn = int(fields[0])
                when = float(fields[1])
                if kind == "P":
                    entry = LedgerTxn(path.stem, txn, when, [LedgerOp.decode(f) for f in fields[2:]])
                    open_txns[txn] = entry
                    ledger.transactions.append(entry)
                elif kind in ("A", "F") and txn in open_txns:
                    entry = open_txns.pop(txn)
                    entry.state = "acked" if kind == "A" else "failed"
                    entry.t_end = when
                else:
                    ledger.garbled_lines += 1
            except (ValueError, IndexError):
                ledger.garbled_lines += 1
    return ledger
