"""Read-only diagnosis of any database file (``walstress check DB``).

The user's database, -wal, -shm and -journal are never written, nor opened
by SQLite: the database and its -wal/-journal are copied into a private
directory and every check runs on the copy. The copy is made by a child
process, because closing a descriptor of a file drops every POSIX lock this
process holds on it, including locks of SQLite connections that the calling
process (a test, a worker) may have open on the same file.

A copy of a database that is being written can be torn (the -wal copied
after a checkpoint restarted it, say). The copy is retried until the files'
size and modification time stay put; if they never do, the result says so.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from walstress.checks.btree import NotADatabaseError, read_header
from walstress.checks.fileinfo import header_report, wal_report
from walstress.checks.causes import file_cause
from walstress.checks.integrity import run_integrity
from walstress.checks.sqltext import DB_ERRORS, error_text, tolerant
from walstress.database.snapshot import COMPANIONS, copy_database

__all__ = ["check_database", "format_check"]

HEALTHY, DAMAGED, ERROR = "healthy", "damaged", "error"
_MAX_REPORT_LINES = 50

def _row_counts(db: Path) -> dict[str, int | str]:
    counts: dict[str, int | str] = {}
    try:
        conn = tolerant(sqlite3.connect(db.absolute().as_uri() + "?mode=ro", uri=True))
    except DB_ERRORS:
        return counts
    try:
        names = [n for (n, sql) in conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name")
            if not (sql or "").lstrip().upper().startswith("CREATE VIRTUAL")]
        for name in names:
            q = '"' + name.replace('"', '""') + '"'
            try:
                counts[name] = conn.execute(f"SELECT count(*) FROM {q}").fetchone()[0]
            except DB_ERRORS as exc:
                counts[name] = f"error: {error_text(exc)}"
    except DB_ERRORS:
        pass
    finally:
        conn.close()
    return counts


def check_database(path, *, workdir=None) -> dict:
    """Diagnose the database at ``path`` without modifying it.

    verdict: "healthy" (integrity_check and every FTS5 check ok), "damaged"
    (anything else SQLite says of a file it was given, a file it cannot open
    at all included) or "error" (the file could not be looked at: missing,
    not a regular file, unreadable, or the copy failed). With
    ``workdir`` the copy is kept in a new directory under it
    (``copy_dir``); otherwise it is deleted.
    """
    t0 = time.perf_counter()
    src = Path(path)
    result: dict = {
        "path": str(path),
        "verdict": ERROR,
        "reason": "",
        "integrity": None,
        "copied_wal": False,
        "copied_journal": False,
        "wal_bytes": None,
        "copy_stable": None,
        "page_size": None,
        "page_count": None,
        "freelist_count": None,
        "journal_mode": None,
        "text_encoding": None,
        "auto_vacuum": None,
        "row_counts": {},
        "header": None,
        "wal": None,
        "not_checked": [],
        "cause": None,
        "sqlite_version": sqlite3.sqlite_version,
        "copy_dir": None,
        "seconds": 0.0,
    }

    def done(verdict: str, reason: str) -> dict:
        result["verdict"] = verdict
        result["reason"] = reason
        result["seconds"] = round(time.perf_counter() - t0, 3)
        return result

    if not src.exists():
        return done(ERROR, f"no such file: {src}")
    if not src.is_file():
        return done(ERROR, f"not a regular file: {src}")
    if not os.access(src, os.R_OK):
        return done(ERROR, f"not readable: {src}")

    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="walstress-check-", dir=workdir))
    if workdir is not None:
        result["copy_dir"] = str(tmp)
    try:
        status, stable = copy_database(src, tmp)
        result["copy_stable"] = stable
        if status[""] is not None:
            return done(ERROR, f"cannot copy {src}: {status['']}")
        for suffix in COMPANIONS:
            if status[suffix] not in (None, "missing"):
                return done(ERROR, f"cannot copy {src}{suffix}: {status[suffix]}")
        copy = tmp / src.name
        wal = tmp / (src.name + "-wal")
        result["copied_wal"] = status["-wal"] is None
        result["copied_journal"] = status["-journal"] is None
        if result["copied_wal"]:
            result["wal_bytes"] = wal.stat().st_size
        verdict = _check_copy(copy, result, stable)
        return done(*verdict)
    except Exception as exc:  # the diagnosis must answer, whatever happens
        return done(ERROR, f"check failed: {type(exc).__name__}: {exc}")
    finally:
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)


def _check_copy(copy: Path, result: dict, stable: bool) -> tuple[str, str]:
    """SQLite decides (integrity_check and FTS5's checks on the copy); the header and the -wal's frames
    say what the bytes are, also where SQLite cannot open the file at all."""
    head = header_report(copy)
    result["header"] = head
    wal = wal_report(Path(f"{copy}-wal"), head.get("page_size"))
    result["wal"] = wal
    header: dict | None = None
    if head["state"] in ("valid", "damaged"):
        try:
            header = read_header(copy)
        except NotADatabaseError:
            header = None    # a header string with garbage behind it: damaged
        if header is not None:
            result["journal_mode"] = "wal" if header["wal_mode"] else "rollback"

    integ = run_integrity(copy)
    result["integrity"] = integ.to_dict()
    after: dict | None
    try:
        after = read_header(copy)      # checkpointed: the latest page count
    except (OSError, NotADatabaseError):
        after = header
    if after is not None:
        result["page_size"] = after["page_size"]
        result["page_count"] = after["page_count"]
        result["freelist_count"] = after["freelist_count"]
        result["text_encoding"] = after["text_encoding"]
        result["auto_vacuum"] = after["auto_vacuum"]
        if result["journal_mode"] is None:
            result["journal_mode"] = "wal" if after["wal_mode"] else "rollback"
    if integ.open_error is None or integ.messages:
        result["row_counts"] = _row_counts(copy)
    result["not_checked"] = _not_checked(integ, head)

    if integ.ok:
        if head["state"] == "empty" and not (wal or {}).get("frames_with_salt"):
            return HEALTHY, ("empty file (0 bytes): SQLite opens it as an empty database, no tables "
                             "(integrity_check ok)")
        checked = [t for t, v in integ.fts.items() if v == "ok"]
        skipped = [t for t in integ.fts if t not in checked]
        reason = "integrity_check ok; " + (
            f"FTS5 ok ({', '.join(checked)})" if checked else "no FTS5 table checked")
        if skipped:
            reason += f"; FTS5 not checked (module missing): {', '.join(skipped)}"
        return HEALTHY, reason
    reason = _header_reason(head) or _damage_reason(integ)
    result["cause"] = file_cause(result["integrity"])
    if not stable:
        reason += ("; the files changed while they were copied, so the copy may be "
                   "torn: check again when the database is idle")
    return DAMAGED, reason


def _header_reason(head: dict) -> str:
    """The reason when the header itself keeps SQLite out."""
    if head["state"] == "short":
        return f"not an SQLite database any more: {head['damaged_fields'][0]}"
    if head["state"] != "missing":
        return ""
    text = (f"the header string 'SQLite format 3' is gone (the file starts with {head['first_bytes']}): SQLite "
            "cannot open it")
    if head.get("guessed_page_size"):
        text += (f"; the pages behind it look like a database with {head['guessed_page_size']}-byte pages "
                 f"({head['btree_pages_seen']} b-tree page headers seen)")
    else:
        text += "; nothing behind it looks like SQLite pages either"
    return text


def _not_checked(integ, head: dict) -> list[str]:
    """What could not be checked, and why."""
    out = []
    if integ.open_error and not integ.messages:
        out.append(f"b-trees, FTS5 and rows: SQLite stopped before checking them ({integ.open_error})")
    for table, verdict in integ.fts.items():
        if verdict.startswith("skipped"):
            out.append(f"FTS5 table {table}: {verdict}")
    if head["state"] in ("missing", "short"):
        out.append("the header's fields: the header is gone")
    return out


def _damage_reason(integ) -> str:
    parts = []
    problems = [m for m in integ.messages if m not in ("ok", "*** in database main ***")]
    if problems:
        parts.append(f"integrity_check reported {len(problems)} problem line(s)")
    bad_fts = [t for t, v in integ.fts.items() if v != "ok" and not v.startswith("skipped")]
    if bad_fts:
        parts.append("FTS5 integrity-check failed for " + ", ".join(bad_fts))
    if integ.open_error:
        parts.append(f"SQLite error: {integ.open_error}")
    if integ.damaged_objects:
        objs = integ.damaged_objects
        more = f" (+{len(objs) - 6} more)" if len(objs) > 6 else ""
        parts.append("damaged: " + ", ".join(objs[:6]) + more)
    return "; ".join(parts) or "integrity check failed"


def _file_lines(result: dict) -> list[str]:
    """The header's state and the -wal's frames, where they are not what a healthy file has."""
    lines = []
    head = result.get("header") or {}
    if head.get("state") == "damaged":
        lines.append("  header: damaged: " + "; ".join(head["damaged_fields"]))
    elif head.get("state") == "missing" and head.get("guessed_page_size"):
        lines.append(f"  header: gone; page size {head['guessed_page_size']} guessed from "
                     f"{head['btree_pages_seen']} b-tree page headers")
    if head.get("tail_bytes"):
        lines.append(f"  file size: not a multiple of the page size ({head['tail_bytes']} bytes after the last page)")
    wal = result.get("wal") or {}
    if wal.get("problems"):
        lines.append(f"  -wal: {wal.get('frames', 0)} frames, {wal.get('frames_with_salt', 0)} with the header's "
                     f"salt: " + "; ".join(wal["problems"]))
    counts = result.get("row_counts") or {}
    if counts:
        shown = ", ".join(f"{name} {count}" for name, count in list(counts.items())[:8])
        lines.append(f"  rows: {shown}" + (f" (+{len(counts) - 8} tables)" if len(counts) > 8 else ""))
    for item in result.get("not_checked") or []:
        lines.append(f"  not checked: {item}")
    return lines


def format_check(result: dict) -> str:
    """A short human report: verdict first, then what is damaged and why."""
    lines = [f"{result['verdict'].upper()}: {result['path']}", f"  {result['reason']}"]
    facts = []
    if result.get("page_size"):
        facts.append(f"page size {result['page_size']}")
    if result.get("page_count") is not None:
        facts.append(f"{result['page_count']} pages")
    if result.get("journal_mode"):
        facts.append(f"journal {result['journal_mode']}")
    if result.get("copied_wal"):
        facts.append(f"-wal {result.get('wal_bytes') or 0} bytes included")
    integ = result.get("integrity")
    if integ:
        facts.append(f"SQLite {integ.get('sqlite_version')}")
        facts.append(f"checked in {integ.get('seconds', 0):.2f} s")
    if facts:
        lines.append("  " + ", ".join(facts))
    if result.get("copy_stable") is False:
        lines.append("  warning: the database changed while it was copied")
    lines.extend(_file_lines(result))
    if not integ or result["verdict"] == HEALTHY:
        return "\n".join(lines)
    if result.get("cause"):
        lines.append(f"cause: {result['cause']['sentence']}")
    if integ.get("damaged_objects"):
        lines.append("damaged objects: " + ", ".join(integ["damaged_objects"]))
    for table, verdict in (integ.get("fts") or {}).items():
        if verdict != "ok":
            lines.append(f"FTS5 {table}: {verdict}")
    if integ.get("open_error"):
        lines.append(f"SQLite error: {integ['open_error']}")
    messages = [m for m in integ.get("named_messages") or integ.get("messages") or []
                if m != "ok"]
    room = max(_MAX_REPORT_LINES - len(lines) - 2, 10)
    if messages:
        lines.append("integrity_check:")
        lines.extend("  " + m for m in messages[:room])
        if len(messages) > room:
            lines.append(f"  ... and {len(messages) - room} more lines (see --json)")
    elif integ.get("walk_problems"):
        lines.append("file walk:")
        walk = integ["walk_problems"]
        lines.extend("  " + m for m in walk[:room])
        if len(walk) > room:
            lines.append(f"  ... and {len(walk) - room} more lines (see --json)")
    return "\n".join(lines)
