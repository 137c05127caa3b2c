"""The durability ledger: acknowledged commits, kept outside the database.

Each writing thread owns one append-only text file. A transaction writes
three kinds of lines, each stored in the file's page cache at once (through
a shared memory map, so it survives the death of the process that wrote it):

    P <txn> <t> <ops>            before COMMIT: what the transaction changed
    A <txn> <t>                  after COMMIT returned: acknowledged
    F <txn> <t>                  the transaction was rolled back: not committed

A ``P`` with neither ``A`` nor ``F`` (the process died, or COMMIT failed in
an unclear way) is *indeterminate*: its rows may be in either state, never
"lost".

``<ops>`` is one of two forms:

- the built-in roles' compact form for the ``messages`` table, tokens
  ``I<id>:<crc>`` (inserted with content checksum), ``U<id>:<crc>``
  (content updated) and ``D<id>`` (deleted);
- any table and key: ``J`` followed by a JSON array of
  ``{"a": "W"|"D", "t": table, "k": key, "c": crc, "cols": [...]}``: the row
  of ``table`` with ``key`` was written (``W``: it must hold the values whose
  checksum is ``c`` in the columns ``cols``) or deleted (``D``). A key is a
  scalar (the table's primary key, or its rowid), a list (a composite
  primary key, in order) or an object ``{column: value}``.

The checksum of a row's values is :func:`row_crc`; for one text (or NULL)
column it equals :func:`content_crc` of the text, so both forms agree on
``messages``.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import re
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Union


def content_crc(content: str | bytes | None) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        content = content.encode("utf-8", "surrogatepass")
    return zlib.crc32(content)


def _encode_value(value: Any) -> bytes:
    """One column value, as the checksum sees it: SQLite's storage classes, with integral reals as integers
    (a REAL column reads 1 back as 1.0)."""
    kind = type(value)   # the common storage classes by their exact type first (a checksum per written row)
    if kind is int:
        return b"\x00int:" + str(value).encode()
    if kind is str:
        return value.encode("utf-8", "surrogatepass")
    if kind is bytes:
        return b"\x00blob:" + value
    if value is None:
        return b"\x00null"
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        value = int(value)
    if isinstance(value, int):
        return b"\x00int:" + str(value).encode()
    if isinstance(value, float):
        return b"\x00real:" + repr(value).encode()
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return b"\x00blob:" + bytes(value)
    raise TypeError(f"a column value of type {type(value).__name__} (store it as text, a number or bytes)")


def row_crc(values: Mapping[str, Any], names: Iterable[str] | None = None) -> int:
    """Checksum of a row's values, by column name: the same whatever order the columns come in
    (``names``: the columns already sorted)."""
    if len(values) == 1:
        (only,) = values.values()
        if only is None or isinstance(only, str):
            return content_crc(only)  # the built-in roles' checksum of a messages row's content
    parts = []
    for name in names or sorted(values):
        parts.append(_COLUMN_PREFIXES.get(name) or _column_prefix(name))
        parts.append(_encode_value(values[name]))
    return zlib.crc32(b"".join(parts)[1:])


_COLUMN_PREFIXES: dict[str, bytes] = {}


def _column_prefix(name: str) -> bytes:
    """``\\x1f<name>=``, made once per column name (the checksum joins columns with \\x1f)."""
    if len(_COLUMN_PREFIXES) > 4096:
        _COLUMN_PREFIXES.clear()
    prefix = _COLUMN_PREFIXES[name] = b"\x1f" + name.encode() + b"="
    return prefix


def key_text(key: Any) -> str:
    """A key as canonical JSON (object keys sorted)."""
    return json.dumps(key, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


Ref = Union[int, str]


def row_ref(table: str, key: Any) -> Ref:
    """How a row is named in results: the id for a ``messages`` row with an integer key (as the built-in
    roles have always named it), else ``table:key`` with the key as JSON (a one-column key by its value)."""
    if isinstance(key, Mapping) and len(key) == 1:
        (key,) = key.values()
    if table == "messages" and isinstance(key, int) and not isinstance(key, bool):
        return key
    return f"{table}:{key_text(key)}"


@dataclass(slots=True)
class LedgerOp:
    """The built-in roles' change of one ``messages`` row (compact form)."""

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

    # the general view, shared with RowOp
    @property
    def table(self) -> str:
        return "messages"

    @property
    def key(self) -> Any:
        return {"id": self.row_id}

    @property
    def cols(self) -> tuple[str, ...]:
        return () if self.action == "D" else ("content",)

    @property
    def deletes(self) -> bool:
        return self.action == "D"

    @property
    def ref(self) -> Ref:
        return self.row_id


@dataclass(slots=True)
class RowOp:
    """The change of one row of any table: written with these values (W), or deleted (D)."""

    action: str                        # "W" or "D"
    table: str
    key: Any                           # scalar, list (composite key) or {column: value}
    crc: int | None = None             # row_crc of the written columns
    cols: tuple[str, ...] = ()         # the columns the checksum covers

    def __post_init__(self) -> None:
        if self.action not in ("W", "D"):
            raise ValueError(f"a row change is W (written) or D (deleted), not {self.action!r}")
        self.cols = tuple(self.cols)

    @classmethod
    def written(cls, table: str, key: Any, row: Mapping[str, Any] | None) -> "RowOp":
        """A row written with these column values (None: only that the row exists)."""
        values = row or {}
        names = tuple(sorted(values))
        op = object.__new__(cls)   # the fields are known good here: no __post_init__ check (once a transaction)
        op.action, op.table, op.key, op.cols = "W", table, _plain_key(key), names
        op.crc = row_crc(values, names) if values else None
        return op

    @classmethod
    def deleted(cls, table: str, key: Any) -> "RowOp":
        return cls("D", table, _plain_key(key))

    def encode(self) -> str:
        """``to_json()`` as compact ASCII JSON; the table's and the columns' texts are made once per process
        (a user's code writes the same few tables over and over)."""
        table = _JSON_TEXTS.get(self.table) or _json_text(self.table)
        key = _json_compact(self.key)
        if self.action == "D":
            return f'{{"a":"D","t":{table},"k":{key}}}'
        cols = _JSON_TEXTS.get(self.cols) or _json_text(self.cols)
        return f'{{"a":"W","t":{table},"k":{key},"c":{"null" if self.crc is None else self.crc},"cols":{cols}}}'

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"a": self.action, "t": self.table, "k": self.key}
        if self.action == "W":
            out["c"] = self.crc
            out["cols"] = list(self.cols)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "RowOp":
        return cls(str(data["a"]), str(data["t"]), data["k"], data.get("c"), tuple(data.get("cols") or ()))

    @property
    def deletes(self) -> bool:
        return self.action == "D"

    @property
    def ref(self) -> Ref:
        return row_ref(self.table, self.key)


_JSON_TEXTS: dict[Any, str] = {}


_PLAIN_TEXT = re.compile(r'[ !#-\[\]-~]*')   # printable ASCII but for " and \\: JSON text as it is


def _json_compact(value: Any) -> str:
    kind = type(value)   # what json.dumps gives for an int and for plain text, without its machinery
    if kind is int:
        return str(value)
    if kind is str and _PLAIN_TEXT.fullmatch(value):
        return f'"{value}"'
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


def _json_text(value: str | tuple[str, ...]) -> str:
    if len(_JSON_TEXTS) > 4096:  # bounded: a user's code may name tables or columns without end
        _JSON_TEXTS.clear()
    text = _JSON_TEXTS[value] = _json_compact(list(value) if isinstance(value, tuple) else value)
    return text


def _plain_key(key: Any) -> Any:
    """A key as JSON data: tuples become lists; anything else must already be JSON."""
    kind = type(key)
    if kind is str or kind is int:  # the usual key, without the checks below (once a written row)
        return key
    if isinstance(key, tuple):
        return [_plain_key(k) for k in key]
    if isinstance(key, Mapping):
        return {str(k): _plain_key(v) for k, v in key.items()}
    if isinstance(key, (bytes, bytearray)):
        raise TypeError("a key cannot be bytes (use text or numbers)")
    if key is not None and not isinstance(key, (int, float, str, list)):
        raise TypeError(f"a key of type {type(key).__name__} (use text, numbers, a tuple or a dict)")
    return key


AnyOp = Union[LedgerOp, RowOp]


def encode_ops(ops: Iterable[AnyOp]) -> str:
    if type(ops) is list and len(ops) == 1 and type(ops[0]) is RowOp:
        return "J[" + ops[0].encode() + "]"   # a user transaction's usual one row
    ops = list(ops)
    if ops and all(isinstance(op, LedgerOp) for op in ops):
        return " ".join(op.encode() for op in ops)  # type: ignore[union-attr]
    general = [op if isinstance(op, RowOp) else RowOp("D" if op.deletes else "W", op.table, op.key, op.crc, op.cols)
               for op in ops]
    return "J[" + ",".join(op.encode() for op in general) + "]"


def decode_ops(text: str) -> list[AnyOp]:
    text = text.strip()
    if text.startswith("J"):
        data = json.loads(text[1:])
        if not isinstance(data, list):
            raise ValueError("the ops of a J line must be a JSON array")
        return [RowOp.from_json(item) for item in data]
    return [LedgerOp.decode(token) for token in text.split()]


class LedgerWriter:
    """One thread's ledger file, appended through a shared memory map: a stored line is in the file's page
    cache at once (readers see it, and it outlives this process if it is killed) with no system call per
    line, which is the point: the ledger's cost is what it adds to every user transaction.

    A line's newline is stored after the rest of it, so a line that ends in one is whole, whenever the
    writer was killed. The file grows by chunks reserved before a byte goes into them (with
    ``posix_fallocate`` where the platform has it, so a full disk is an error of the line being stored,
    and the writer carries on once there is room); a line that does not fit the mapped window is written
    with ``pwrite`` and the window moves on; a line that could not be stored leaves nothing behind. The
    file is cut to its lines by :meth:`close`; a killed writer's file ends in zeros (or a torn line),
    which readers skip and :func:`trim_ledger_files` cuts. Where the file cannot be mapped at all, every
    line is a ``pwrite``."""

    CHUNK = 1 << 18

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self._txn = 0
        self.acknowledged = 0
        end = _data_end(self._fd)              # after the lines already there (a reopened file)
        os.ftruncate(self._fd, end)            # not after a killed writer's zeros or torn line
        self._base = end - end % self.CHUNK    # the mapped window's place in the file
        self._at = end - self._base            # where the next line goes in the window
        self._limit = -1                       # a line that ends before this fits the window (-1: none)
        self._map: mmap.mmap | None = None
        try:
            self._map_window(self._base)
        except OSError:                        # no shared mappings here: every line is written
            os.ftruncate(self._fd, end)

    def _map_window(self, base: int) -> None:
        """Map the chunk at ``base`` (reserved first) in place of the current window."""
        _reserve(self._fd, base + self.CHUNK)
        window = mmap.mmap(self._fd, self.CHUNK, mmap.MAP_SHARED, mmap.PROT_WRITE | mmap.PROT_READ, offset=base)
        if self._map is not None:
            self._map.close()
        self._map, self._limit = window, self.CHUNK
        self._at += self._base - base
        self._base = base

    def _store(self, line: bytes) -> None:
        """Append one line (given without its newline). Kept short: it runs twice per transaction."""
        at = self._at
        end = at + len(line)
        if end < self._limit:
            window = self._map
            window[at:end] = line   # type: ignore[index]
            window[end] = 10        # type: ignore[index]   # the newline last: a line that has one is whole
            self._at = end + 1
        else:
            self._store_slow(line + b"\n")

    def _store_slow(self, data: bytes) -> None:
        """A line past the window's end (or with no window): reserve what it needs, write it, move the
        window to where the next line goes. If it cannot be stored, nothing of it stays in the file."""
        start = self._base + self._at
        end = start + len(data)
        mapped = self._map is not None
        if mapped:
            _reserve(self._fd, end - end % self.CHUNK + self.CHUNK)   # before a byte of it is written
        written = 0
        try:
            while written < len(data):
                written += os.pwrite(self._fd, memoryview(data)[written:], start + written)
        except OSError:
            if written and mapped:
                os.pwrite(self._fd, bytes(written), start)   # reserved: zeros, as if never written
            elif written:
                os.ftruncate(self._fd, start)
            raise
        self._at += len(data)
        if mapped and end - end % self.CHUNK != self._base:
            try:
                self._map_window(end - end % self.CHUNK)
            except OSError:                    # the line is stored; later ones are written
                self._map.close()   # type: ignore[union-attr]
                self._map, self._limit = None, -1

    def prepare(self, ops: Iterable[AnyOp]) -> int:
        """Record what the open transaction changed; call right before COMMIT."""
        self._txn += 1
        self._store(f"P {self._txn} {_stamp()} {encode_ops(ops)}".encode("ascii"))
        return self._txn

    def acknowledge(self, txn: int) -> None:
        """COMMIT returned successfully: the transaction is acknowledged."""
        self._store(f"A {txn} {_stamp()}".encode("ascii"))
        self.acknowledged += 1

    def fail(self, txn: int) -> None:
        """The transaction was certainly rolled back."""
        self._store(f"F {txn} {_stamp()}".encode("ascii"))

    def close(self) -> None:
        """Unmap and cut the file to its lines (idempotent; a line stored after it raises OSError)."""
        if self._fd < 0:
            return
        try:
            if self._map is not None:
                self._map.close()
                self._map = None
            os.ftruncate(self._fd, self._base + self._at)
        except (OSError, ValueError):
            pass
        finally:
            os.close(self._fd)
            self._fd, self._limit = -1, -1


def _stamp() -> str:
    """The time now as epoch seconds with 6 decimals, made from integers (a float's formatting costs twice as
    much, twice a transaction)."""
    micro = str(time.time_ns() // 1000)
    return f"{micro[:-6]}.{micro[-6:]}"


def _reserve(fd: int, size: int) -> None:
    """The file is at least ``size`` bytes, its blocks allocated where the platform can (without
    ``posix_fallocate``, as on macOS, the file only grows, and a full disk shows when a page is written)."""
    have = os.fstat(fd).st_size
    if have >= size:
        return
    fallocate = getattr(os, "posix_fallocate", None)
    try:
        if fallocate is not None:
            fallocate(fd, have, size - have)
            return
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    os.ftruncate(fd, size)


def _data_end(fd: int) -> int:
    """Where a ledger file's whole lines end: after its last newline (what a killed writer left after it,
    zeros or a torn line, is not a line)."""
    end = os.fstat(fd).st_size
    while end > 0:
        start = max(0, end - 65536)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


def trim_ledger_files(folder: str | Path) -> None:
    """Cut the zero tail a killed writer left in its ledger file (call once no writer is alive)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for path in folder.glob("*.ledger"):
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            end = _data_end(fd)
            if end < os.fstat(fd).st_size:
                os.ftruncate(fd, end)
        finally:
            os.close(fd)


@dataclass(slots=True)
class LedgerTxn:
    source: str
    txn: int
    t_prepare: float
    ops: list[AnyOp]
    state: str = "pending"  # pending / acked / failed
    t_end: float | None = None


@dataclass
class Ledger:
    transactions: list[LedgerTxn] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    garbled_lines: int = 0


def read_ledger_file(path: Path) -> Iterator[tuple[str, list[str]]]:
    """(kind, [txn, t, ops text]) per complete line; a torn last line is dropped."""
    with open(path, "r", encoding="ascii", errors="replace") as handle:
        for line in handle:
            if not line.endswith("\n"):
                break  # torn last line (the write never completed), or a killed writer's zero tail
            parts = line.rstrip("\n").split(" ", 3)
            if parts and parts[0]:
                yield parts[0], parts[1:]


def read_ledger(folder: str | Path) -> Ledger:
    ledger = Ledger()
    folder = Path(folder)
    if not folder.is_dir():
        return ledger
    for path in sorted(folder.glob("*.ledger")):
        ledger.files.append(path.name)
        source = path.stem
        open_txns: dict[int, LedgerTxn] = {}
        for kind, fields in read_ledger_file(path):
            try:
                txn = int(fields[0])
                when = float(fields[1])
                if kind == "P":
                    entry = LedgerTxn(source, txn, when, decode_ops(fields[2] if len(fields) > 2 else ""))
                    open_txns[txn] = entry
                    ledger.transactions.append(entry)
                elif kind in ("A", "F") and txn in open_txns:
                    entry = open_txns.pop(txn)
                    entry.state = "acked" if kind == "A" else "failed"
                    entry.t_end = when
                else:
                    ledger.garbled_lines += 1
            except (ValueError, IndexError, KeyError, TypeError):
                ledger.garbled_lines += 1
    return ledger
