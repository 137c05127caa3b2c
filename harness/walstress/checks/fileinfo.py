"""What the bytes of a database file and its -wal say before SQLite opens them.

``header_report`` names the state of the 100-byte header (``valid``,
``damaged`` with the fields that are out of range, ``missing`` when the
header string is gone, ``short``, ``empty``) and, when the page size cannot
be read from it, guesses it from the shape of the pages behind it (b-tree
page headers at every multiple of the page size). ``wal_report`` says
whether a -wal belongs to the database: its header, its page size and how
many frames carry the header's salt (SQLite ignores the others).

Reads are bounded: the header, at most ``_SAMPLES`` page headers per
candidate page size, and the -wal's frame headers (24 bytes each) up to
``_MAX_FRAMES``; nothing is allocated by a size read from the file.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, BinaryIO

from walstress.checks.btree import HEADER_MAGIC, decode_header

__all__ = ["header_report", "wal_report"]

_PAGE_SIZES = tuple(1 << n for n in range(9, 17))   # 512 .. 65536
_SAMPLES = 256
_MAX_FRAMES = 1_000_000
_WAL_MAGIC = (0x377F0682, 0x377F0683)
_BTREE_TYPES = {2: 12, 5: 12, 10: 8, 13: 8}      # page type -> header size


def header_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The header's state and the fields that are out of range; a page-size guess when it is gone."""
    size = os.stat(path).st_size
    out: dict[str, Any] = {"state": "valid", "file_bytes": size, "damaged_fields": [], "page_size": None,
                           "guessed_page_size": None, "btree_pages_seen": None}
    if size == 0:
        out["state"] = "empty"
        return out
    with open(path, "rb") as f:
        raw = f.read(100)
        if len(raw) < 100:
            out["state"] = "short"
            out["damaged_fields"].append(f"file of {size} bytes, shorter than the 100-byte header")
            return out
        if not raw.startswith(HEADER_MAGIC):
            out["state"] = "missing"
            out["first_bytes"] = raw[:16].hex(" ")
            _guess(f, size, out)
            return out
        damaged = out["damaged_fields"]
        fields = decode_header(raw, size)
        if not fields["page_size_valid"]:
            damaged.append(f"page size ({fields['page_size']}: not a power of two from 512 to 65536)")
            _guess(f, size, out)
        else:
            out["page_size"] = fields["page_size"]
        if fields["write_version"] not in (1, 2) or fields["read_version"] not in (1, 2):
            damaged.append(f"file format versions ({fields['write_version']}, {fields['read_version']}: 1 or 2 each)")
        if fields["payload_fractions"] != [64, 32, 32]:
            damaged.append(f"payload fractions ({', '.join(map(str, fields['payload_fractions']))}: must be 64, 32, "
                           "32)")
        if out["page_size"] and fields["usable_size"] < 480:
            damaged.append(f"reserved bytes per page ({fields['reserved_bytes']}: leaves {fields['usable_size']} "
                           "usable bytes, fewer than 480)")
        if fields["schema_format"] not in (1, 2, 3, 4):
            damaged.append(f"schema format ({fields['schema_format']}: 1 to 4)")
        if fields["text_encoding_code"] not in (1, 2, 3):
            damaged.append(f"text encoding ({fields['text_encoding_code']}: 1, 2 or 3)")
        if out["page_size"]:
            out["file_pages"] = file_pages = fields["file_pages"]
            out["page_count"] = count = fields["page_count"]
            if fields["page_count_valid"] and fields["page_count_header"] > file_pages:
                damaged.append(f"page count ({fields['page_count_header']} in the header, the file holds "
                               f"{file_pages})")
            if fields["freelist_trunk"] > count:
                damaged.append(f"first freelist trunk page ({fields['freelist_trunk']}, beyond the last page {count})")
            if fields["freelist_count"] > count:
                damaged.append(f"freelist page count ({fields['freelist_count']}, more than the {count} pages)")
            if size % out["page_size"]:
                out["tail_bytes"] = size % out["page_size"]
        if damaged:
            out["state"] = "damaged"
    return out


def _guess(f: BinaryIO, size: int, out: dict[str, Any]) -> None:
    """The smallest page size at which (nearly) as many b-tree page headers line up as at any size."""
    scores: dict[int, tuple[float, int]] = {}
    for page_size in _PAGE_SIZES:
        count = min(size // page_size - 1, _SAMPLES)
        if count < 1:
            continue
        seen = 0
        for k in range(1, count + 1):
            f.seek(k * page_size)
            if _looks_like_btree_page(f.read(8), page_size):
                seen += 1
        scores[page_size] = (seen / count, seen)
    best = max((score for score, _ in scores.values()), default=0.0)
    if best < 0.25:   # nothing in the file looks like pages of an SQLite database
        return
    chosen = min(ps for ps, (score, _) in scores.items() if score >= 0.9 * best)
    out["guessed_page_size"] = chosen
    out["btree_pages_seen"] = scores[chosen][1]


def _looks_like_btree_page(head: bytes, page_size: int) -> bool:
    if len(head) < 8 or head[0] not in _BTREE_TYPES:
        return False
    first_free, cells, content = struct.unpack_from(">HHH", head, 1)
    content = content or 65536
    need = _BTREE_TYPES[head[0]] + 2 * cells
    return need <= page_size and content <= page_size and (cells == 0 or content >= need) and \
        first_free < page_size


def wal_report(wal: str | os.PathLike[str], db_page_size: int | None) -> dict[str, Any] | None:
    """The -wal's header and frames: whether it can belong to the database (None when there is none)."""
    path = Path(wal)
    if not path.is_file():
        return None
    size = path.stat().st_size
    out: dict[str, Any] = {"bytes": size, "header_valid": False, "page_size": None, "frames": 0,
                           "frames_with_salt": 0, "problems": []}
    if size < 32:
        if size:
            out["problems"].append(f"{size} bytes: shorter than the 32-byte WAL header")
        return out
    with open(path, "rb") as f:
        raw = f.read(32)
        magic, version, page_size, _seq, salt1, salt2 = struct.unpack_from(">6I", raw, 0)
        if magic not in _WAL_MAGIC or version != 3007000:
            out["problems"].append(f"no WAL header (magic {magic:#010x}, version {version})")
            return out
        if page_size == 1:
            page_size = 65536
        if page_size not in _PAGE_SIZES:
            out["problems"].append(f"invalid page size {page_size} in the WAL header")
            return out
        out.update(header_valid=True, page_size=page_size)
        if db_page_size and page_size != db_page_size:
            out["problems"].append(f"page size {page_size}, the database's is {db_page_size}")
        frame = 24 + page_size
        frames = min((size - 32) // frame, _MAX_FRAMES)
        out["frames"] = frames
        salted = 0
        for k in range(frames):
            f.seek(32 + k * frame)
            head = f.read(24)
            if len(head) == 24 and struct.unpack_from(">II", head, 8) == (salt1, salt2):
                salted += 1
        out["frames_with_salt"] = salted
        if frames and not salted:
            out["problems"].append("no frame carries the WAL header's salt: SQLite ignores every frame")
    return out
