"""A small, defensive reader of the SQLite database file format.

Used to say *which* b-tree a page belongs to when ``PRAGMA integrity_check``
names a bare page number. It is only ever pointed at a private copy of a
database: it opens the file with plain file calls, which on POSIX would drop
SQLite's locks if this process also had the live file open (closing any
descriptor of a file drops every POSIX lock the process holds on it).

Nothing here raises on a damaged file. A problem found while walking (a
garbage page type, an out-of-range child, a loop) is recorded as a message and
that branch of the walk stops; the rest of the file is still walked.

File format facts used (SQLite "Database File Format" document):
- 100-byte header on page 1; page size at offset 16 (1 means 65536).
- b-tree page header at offset 0 (100 on page 1): type byte 2/5/10/13
  (interior index / interior table / leaf index / leaf table), cell count at
  +3, right-most child at +8 on interior pages; cell pointer array after the
  8- or 12-byte header.
- cells that do not fit in the page spill into a chain of overflow pages,
  each starting with the 4-byte number of the next one.
- freelist: trunk pages (next trunk, leaf count, leaf page numbers).
- auto_vacuum databases have pointer-map pages at 2, 2+J, 2+2J, ... with
  J = usable_size / 5 + 1; the page holding byte 2**30 is never used.
"""

from __future__ import annotations

import os
import sqlite3
import struct
from dataclasses import dataclass, field
from typing import BinaryIO

__all__ = [
    "FREELIST",
    "LOCK_BYTE_PAGE",
    "PTRMAP",
    "SCHEMA_TREE",
    "NotADatabaseError",
    "PageMap",
    "btree_roots",
    "btree_roots_from_file",
    "page_owners",
    "decode_header",
    "parse_header",
    "read_header",
    "schema_rows_from_file",
    "walk_pages",
]

HEADER_MAGIC = b"SQLite format 3\x00"
SCHEMA_TREE = "sqlite_schema"
FREELIST = "(freelist)"
PTRMAP = "(ptrmap)"
LOCK_BYTE_PAGE = "(lock-byte page)"

_PAGE_TYPES = {2: "interior index", 5: "interior table", 10: "leaf index", 13: "leaf table"}
_ENCODINGS = {1: "utf-8", 2: "utf-16le", 3: "utf-16be"}
_MAX_DEPTH = 64          # a real b-tree of 2**32 pages is < 30 levels deep
_MAX_PROBLEMS = 1000     # keep the problem list readable on a shredded file


class NotADatabaseError(ValueError):
    """The file does not start with a usable SQLite header."""


def parse_header(raw: bytes, file_size: int) -> dict:
    """Decode the 100-byte database header. Raises NotADatabaseError."""
    if len(raw) < 100:
        raise NotADatabaseError(f"file too short for an SQLite header ({len(raw)} bytes)")
    if not raw.startswith(HEADER_MAGIC):
        raise NotADatabaseError("header string 'SQLite format 3' missing")
    fields = decode_header(raw, file_size)
    if not fields["page_size_valid"]:
        raise NotADatabaseError(f"invalid page size {fields['page_size']} in header")
    return fields


def decode_header(raw: bytes, file_size: int) -> dict:
    """The fields of a 100-byte header as they are, in range or not (``page_size_valid`` says whether the
    page size is one SQLite can have; counts that depend on it are then taken from the header alone);
    ``text_encoding_code`` is the raw encoding field."""
    page_size = struct.unpack_from(">H", raw, 16)[0]
    if page_size == 1:
        page_size = 65536
    page_size_valid = 512 <= page_size <= 65536 and not page_size & (page_size - 1)
    (write_version, read_version, reserved_bytes, max_frac, min_frac, leaf_frac) = (
        struct.unpack_from(">6B", raw, 18)
    )
    (change_counter, page_count_header, freelist_trunk, freelist_count, schema_cookie,
     schema_format, default_cache_size, largest_root, text_encoding, user_version,
     incremental_vacuum, application_id) = struct.unpack_from(">12I", raw, 24)
    version_valid_for, sqlite_version_number = struct.unpack_from(">II", raw, 92)
    file_pages = file_size // page_size if page_size_valid else 0
    # The in-header size is only trusted when it was written by a version
    # that maintains it (change counter matches "version valid for").
    page_count_valid = page_count_header > 0 and change_counter == version_valid_for
    return {
        "page_size": page_size,
        "page_size_valid": page_size_valid,
        "usable_size": page_size - reserved_bytes,
        "reserved_bytes": reserved_bytes,
        "write_version": write_version,
        "read_version": read_version,
        "wal_mode": write_version == 2 and read_version == 2,
        "payload_fractions": [max_frac, min_frac, leaf_frac],
        "change_counter": change_counter,
        "page_count_header": page_count_header,
        "page_count_valid": page_count_valid,
        "page_count": page_count_header if page_count_valid else file_pages,
        "file_pages": file_pages,
        "file_size_bytes": file_size,
        "freelist_trunk": freelist_trunk,
        "freelist_count": freelist_count,
        "schema_cookie": schema_cookie,
        "schema_format": schema_format,
        "default_cache_size": default_cache_size,
        "auto_vacuum": largest_root != 0,
        "incremental_vacuum": incremental_vacuum != 0,
        "largest_root_page": largest_root,
        "text_encoding": _ENCODINGS.get(text_encoding, f"unknown({text_encoding})"),
        "text_encoding_code": text_encoding,
        "user_version": user_version,
        "application_id": application_id,
        "version_valid_for": version_valid_for,
        "sqlite_version_number": sqlite_version_number,
    }


def read_header(path: str | os.PathLike) -> dict:
    """Read and decode the header of the database file at ``path``.

    Raises OSError if the file cannot be read and NotADatabaseError if it
    has no valid SQLite header.
    """
    with open(path, "rb") as f:
        raw = f.read(100)
        size = os.fstat(f.fileno()).st_size
    return parse_header(raw, size)


def btree_roots(conn: sqlite3.Connection) -> dict[int, str]:
    """Root page -> name of every b-tree listed in the schema (page 1 included).

    Covers tables, indexes (also automatic ``sqlite_autoindex_*``) and the
    shadow tables of virtual tables (FTS5 ``*_data``, ``*_idx``, ...). Virtual
    tables themselves, views and triggers have no b-tree (root page 0).
    """
    roots: dict[int, str] = {1: SCHEMA_TREE}
    # sqlite_master is the name every SQLite version understands.
    for _type, name, rootpage in conn.execute(
            "SELECT type, name, rootpage FROM sqlite_master"):
        if isinstance(rootpage, int) and rootpage > 1 and rootpage not in roots:
            roots[rootpage] = str(name)
    return roots


def schema_rows_from_file(path: str | os.PathLike) -> tuple[list[tuple], list[str]]:
    """Decode the sqlite_schema table straight from the file.

    Returns (rows, problems); each row is (type, name, tbl_name, rootpage,
    sql). For when SQLite itself refuses to read the schema.
    """
    rows: list[tuple] = []
    try:
        with open(path, "rb") as f:
            walker = _Walker(f)
            rows = walker.schema_rows()
            return rows, walker.problems
    except (OSError, NotADatabaseError) as exc:
        return rows, [str(exc)]


def btree_roots_from_file(path: str | os.PathLike) -> dict[int, str]:
    """Like btree_roots, but read from the file without SQLite."""
    roots: dict[int, str] = {1: SCHEMA_TREE}
    rows, _problems = schema_rows_from_file(path)
    for row in rows:
        name, rootpage = row[1], row[3]
        if isinstance(rootpage, int) and rootpage > 1 and rootpage not in roots:
            roots[rootpage] = str(name)
    return roots


@dataclass
class PageMap:
    """Result of a walk over every b-tree, the freelist and pointer maps."""

    owners: dict[int, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    page_size: int = 0
    page_count: int = 0          # pages the walk considered (from the file size)
    page_count_header: int = 0

    @property
    def unowned(self) -> list[int]:
        """Pages that no b-tree, freelist or pointer map refers to."""
        return [p for p in range(1, self.page_count + 1) if p not in self.owners]

    def counts(self) -> dict[str, int]:
        """Number of pages per owner."""
        out: dict[str, int] = {}
        for name in self.owners.values():
            out[name] = out.get(name, 0) + 1
        return out


def walk_pages(path: str | os.PathLike, roots: dict[int, str]) -> PageMap:
    """Walk every b-tree in ``roots`` plus freelist and pointer maps."""
    try:
        with open(path, "rb") as f:
            walker = _Walker(f)
            walker.walk_all(roots)
            return walker.result()
    except (OSError, NotADatabaseError) as exc:
        return PageMap(problems=[f"cannot walk the file: {exc}"])


def page_owners(path: str | os.PathLike, roots: dict[int, str]) -> dict[int, str]:
    """Page number -> owner name ("(freelist)", "(ptrmap)" for non-b-tree pages)."""
    return walk_pages(path, roots).owners


class _Walker:
    def __init__(self, f: BinaryIO):
        self.f = f
        raw = f.read(100)
        size = os.fstat(f.fileno()).st_size
        self.header = parse_header(raw, size)
        self.page_size: int = self.header["page_size"]
        self.usable: int = self.header["usable_size"]
        # Pages that physically exist; a header count beyond that would only
        # produce unreadable pages.
        self.npages: int = self.header["file_pages"]
        self.owners: dict[int, str] = {}
        self.problems: list[str] = []
        u = self.usable
        self.table_max_local = u - 35
        self.index_max_local = (u - 12) * 64 // 255 - 23
        self.min_local = (u - 12) * 32 // 255 - 23

    # -- helpers --------------------------------------------------------
    def result(self) -> PageMap:
        return PageMap(owners=self.owners, problems=self.problems,
                       page_size=self.page_size, page_count=self.npages,
                       page_count_header=self.header["page_count_header"])

    def problem(self, msg: str) -> None:
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(msg)
        elif len(self.problems) == _MAX_PROBLEMS:
            self.problems.append("... more problems not recorded")

    def read(self, pgno: int) -> bytes | None:
        self.f.seek((pgno - 1) * self.page_size)
        data = self.f.read(self.page_size)
        if len(data) != self.page_size:
            self.problem(f"page {pgno}: short read ({len(data)} bytes)")
            return None
        return data

    def claim(self, pgno: int, owner: str, ref: str) -> bool:
        """Record ``owner`` for ``pgno``; False if the page must not be read."""
        if pgno < 1 or pgno > self.npages:
            self.problem(f"invalid page number {pgno} {ref} ({owner})")
            return False
        prev = self.owners.get(pgno)
        if prev is not None:
            self.problem(f"2nd reference to page {pgno} (owned by {prev}) {ref} ({owner})")
            return False
        self.owners[pgno] = owner
        return True

    def local_size(self, payload: int, index: bool) -> int:
        max_local = self.index_max_local if index else self.table_max_local
        if payload <= max_local:
            return payload
        m = self.min_local
        k = m + (payload - m) % (self.usable - 4)
        return k if k <= max_local else m

    # -- the walk -------------------------------------------------------
    def walk_all(self, roots: dict[int, str]) -> None:
        h = self.header
        if h["auto_vacuum"]:
            step = self.usable // 5 + 1
            p = 2
            while p <= self.npages:
                self.claim(p, PTRMAP, "as pointer-map page")
                p += step
        lock_page = (1 << 30) // self.page_size + 1
        if lock_page <= self.npages:
            self.owners.setdefault(lock_page, LOCK_BYTE_PAGE)
        self.walk_freelist(h["freelist_trunk"], h["freelist_count"])
        if 1 not in roots:
            roots = {1: SCHEMA_TREE, **roots}
        for root in sorted(roots):
            self.walk_tree(root, roots[root])

    def walk_freelist(self, trunk: int, expected: int) -> None:
        max_leaves = self.usable // 4 - 2
        seen = 0
        ref = "as freelist trunk in header"
        while trunk:
            if not self.claim(trunk, FREELIST, ref):
                return
            seen += 1
            data = self.read(trunk)
            if data is None:
                return
            nxt, n = struct.unpack_from(">II", data, 0)
            if n > max_leaves:
                self.problem(f"freelist trunk page {trunk}: {n} leaves, more than {max_leaves}")
                n = max_leaves
            for leaf in struct.unpack_from(f">{n}I", data, 8):
                if self.claim(leaf, FREELIST, f"as freelist leaf of trunk {trunk}"):
                    seen += 1
            ref = f"as next freelist trunk after {trunk}"
            trunk = nxt
        if seen != expected:
            self.problem(f"freelist: header says {expected} pages, walk found {seen}")

    def walk_tree(self, root: int, name: str) -> None:
        stack = [(root, 0, "as root page")]
        read = self.read
        claim = self.claim
        while stack:
            pgno, depth, ref = stack.pop()
            if not claim(pgno, name, ref):
                continue
            if depth > _MAX_DEPTH:
                self.problem(f"page {pgno} ({name}): b-tree deeper than {_MAX_DEPTH}")
                continue
            data = read(pgno)
            if data is None:
                continue
            for child, cref in self.parse_btree_page(pgno, data, name):
                stack.append((child, depth + 1, cref))

    def parse_btree_page(self, pgno: int, data: bytes, name: str,
                         cells_out: list | None = None) -> list[tuple[int, str]]:
        """Children of one b-tree page; follows its overflow chains itself.

        With ``cells_out`` (leaf table pages only) the full payload of each
        cell is appended to it, for decoding schema records.
        """
        hdr = 100 if pgno == 1 else 0
        kind = data[hdr]
        if kind not in _PAGE_TYPES:
            self.problem(f"page {pgno} ({name}): not a b-tree page (type byte {kind})")
            return []
        interior = kind in (2, 5)
        ncell = (data[hdr + 3] << 8) | data[hdr + 4]
        ptr_start = hdr + (12 if interior else 8)
        usable = self.usable
        max_cells = (usable - ptr_start) // 2
        if ncell > max_cells:
            self.problem(f"page {pgno} ({name}): {ncell} cells cannot fit in a page")
            ncell = max_cells
        children: list[tuple[int, str]] = []
        if interior:
            right = struct.unpack_from(">I", data, hdr + 8)[0]
            children.append((right, f"as right child of page {pgno}"))
        if ncell == 0:
            return children
        offsets = struct.unpack_from(f">{ncell}H", data, ptr_start)
        low = ptr_start + 2 * ncell
        index = kind in (2, 10)
        max_local = self.index_max_local if index else self.table_max_local
        for i, off in enumerate(offsets):
            if off < low or off >= usable - 3:
                self.problem(f"page {pgno} ({name}) cell {i}: offset {off} out of range")
                continue
            if kind == 5:
                child = struct.unpack_from(">I", data, off)[0]
                children.append((child, f"as child of page {pgno} cell {i}"))
                continue
            pos = off
            if kind == 2:
                if off + 6 > usable:
                    self.problem(f"page {pgno} ({name}) cell {i}: offset {off} out of range")
                    continue
                child = struct.unpack_from(">I", data, off)[0]
                children.append((child, f"as child of page {pgno} cell {i}"))
                pos += 4
            # payload size varint, fast paths for 1 and 2 bytes
            b0 = data[pos]
            if b0 < 0x80:
                payload = b0
                pos += 1
            elif data[pos + 1] < 0x80:
                payload = ((b0 & 0x7F) << 7) | data[pos + 1]
                pos += 2
            else:
                payload, pos = _varint(data, pos, usable)
                if payload < 0:
                    self.problem(f"page {pgno} ({name}) cell {i}: bad payload size")
                    continue
            if kind == 13:
                if cells_out is None and payload <= max_local:
                    continue
                _rowid, pos = _varint(data, pos, usable)
                if pos < 0:
                    self.problem(f"page {pgno} ({name}) cell {i}: bad rowid")
                    continue
            elif payload <= max_local:
                continue
            local = self.local_size(payload, index)
            if pos + local > usable:
                self.problem(f"page {pgno} ({name}) cell {i}: payload runs off the page")
                continue
            if payload <= max_local:
                if cells_out is not None:
                    cells_out.append(data[pos:pos + local])
                continue
            if pos + local + 4 > usable:
                self.problem(f"page {pgno} ({name}) cell {i}: overflow pointer off the page")
                continue
            first = struct.unpack_from(">I", data, pos + local)[0]
            rest = self.walk_overflow(first, payload - local, pgno, i, name,
                                      cells_out is not None)
            if cells_out is not None and rest is not None:
                cells_out.append(data[pos:pos + local] + rest)
        return children

    def walk_overflow(self, first: int, remaining: int, pgno: int, cell: int,
                      name: str, collect: bool) -> bytes | None:
        per_page = self.usable - 4
        if remaining > self.npages * per_page:
            self.problem(f"page {pgno} ({name}) cell {cell}: payload larger than the file")
            return None
        need = -(-remaining // per_page)
        chunks: list[bytes] = []
        cur = first
        ref = f"as overflow of page {pgno} cell {cell}"
        for k in range(need):
            if not self.claim(cur, name, ref):
                return None
            data = self.read(cur)
            if data is None:
                return None
            if collect:
                chunks.append(data[4:4 + min(per_page, remaining - k * per_page)])
            nxt = struct.unpack_from(">I", data, 0)[0]
            if k == need - 1:
                if nxt != 0:
                    self.problem(f"overflow page {cur} ({name}): chain longer than payload")
                break
            if nxt == 0:
                self.problem(f"overflow page {cur} ({name}): chain ends early "
                             f"({k + 1} of {need} pages)")
                return None
            ref = f"as next overflow page after {cur}"
            cur = nxt
        return b"".join(chunks) if collect else b""

    # -- schema records -------------------------------------------------
    def schema_rows(self) -> list[tuple]:
        encoding = {"utf-16le": "utf-16-le", "utf-16be": "utf-16-be"}.get(
            self.header["text_encoding"], "utf-8")
        rows: list[tuple] = []
        stack = [(1, 0)]
        visited: set[int] = set()
        while stack:
            pgno, depth = stack.pop()
            if pgno in visited or pgno < 1 or pgno > self.npages or depth > _MAX_DEPTH:
                self.problem(f"sqlite_schema: bad or repeated page {pgno}")
                continue
            visited.add(pgno)
            data = self.read(pgno)
            if data is None:
                continue
            cells: list[bytes] = []
            hdr = 100 if pgno == 1 else 0
            children = self.parse_btree_page(pgno, data, SCHEMA_TREE, cells)
            if data[hdr] == 13:
                for payload in cells:
                    rec = _decode_record(payload, encoding)
                    if rec is not None and len(rec) >= 5:
                        rows.append(tuple(rec[:5]))
            stack.extend((c, depth + 1) for c, _ref in children)
        # the overflow pages claimed along the way are not kept
        self.owners.clear()
        return rows


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """Decode a varint at ``pos``; returns (value, new_pos) or (-1, -1)."""
    value = 0
    for i in range(9):
        if pos + i >= end:
            return -1, -1
        b = data[pos + i]
        if i == 8:
            return (value << 8) | b, pos + 9
        value = (value << 7) | (b & 0x7F)
        if b < 0x80:
            return value, pos + i + 1
    return -1, -1


def _decode_record(payload: bytes, encoding: str) -> list | None:
    """Decode an SQLite record; None if it is malformed."""
    hlen, pos = _varint(payload, 0, len(payload))
    if hlen < 1 or hlen > len(payload):
        return None
    types = []
    while pos < hlen:
        t, pos = _varint(payload, pos, hlen)
        if t < 0:
            return None
        types.append(t)
    body = hlen
    out: list = []
    sizes = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 8, 7: 8, 8: 0, 9: 0}
    for t in types:
        if t in sizes:
            n = sizes[t]
            chunk = payload[body:body + n]
            if len(chunk) != n:
                return None
            if t == 0:
                out.append(None)
            elif t == 7:
                out.append(struct.unpack(">d", chunk)[0])
            elif t == 8:
                out.append(0)
            elif t == 9:
                out.append(1)
            else:
                out.append(int.from_bytes(chunk, "big", signed=True))
            body += n
        elif t >= 12:
            n = (t - 12) // 2
            chunk = payload[body:body + n]
            if len(chunk) != n:
                return None
            out.append(chunk if t % 2 == 0 else chunk.decode(encoding, "replace"))
            body += n
        else:
            return None
    return out
