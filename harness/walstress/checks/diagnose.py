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

from walstress.checks.btree import HEADER_MAGIC, NotADatabaseError, read_header
from walstress.checks.causes import file_cause
from walstress.checks.integrity import run_integrity
from walstress.database.snapshot import COMPANIONS, copy_database

__all__ = ["check_database", "format_check"]

HEALTHY, DAMAGED, ERROR = "healthy", "damaged", "error"
_MAX_REPORT_LINES = 50

def _row_counts(db: Path) -> dict[str, int | str]:
    counts: dict[str, int | str] = {}
    try:
        conn = sqlite3.connect(db.absolute().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error:
        return counts
    try:
        names = [n for (n, sql) in conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name")
            if not (sql or "").lstrip().upper().startswith("CREATE VIRTUAL")]
        for name in names:
            q = '"' + name.replace('"', '""') + '"'
            try:
                counts[name] = conn.execute(f"SELECT count(*) FROM {q}").fetchone()[0]
            except sqlite3.Error as exc:
                counts[name] = f"error: {exc}"
    except sqlite3.Error:
        pass
    finally:
        conn.close()
    return counts


def check_database(path, *, workdir=None) -> dict:
    """Diagnose the database at ``path`` without modifying it.

    verdict: "healthy" (integrity_check and every FTS5 check ok), "damaged"
    (any problem, including a corruption error while opening) or "error"
    (missing, unreadable, or not an SQLite database at all). With
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
        if workdir is not None:
            result["copy_dir"] = str(tmp)
        return done(*verdict)
    except Exception as exc:  # the diagnosis must answer, whatever happens
        return done(ERROR, f"check failed: {type(exc).__name__}: {exc}")
    finally:
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)


def _check_copy(copy: Path, result: dict, stable: bool) -> tuple[str, str]:
    size = copy.stat().st_size
    wal_bytes = result["wal_bytes"] or 0
    header: dict | None = None
    if size == 0:
        if wal_bytes <= 32:       # a WAL header alone holds no pages
            return ERROR, "empty file (0 bytes): no SQLite database in it"
    else:
        with open(copy, "rb") as f:   # the private copy, never the original
            magic = f.read(len(HEADER_MAGIC))
        if magic != HEADER_MAGIC:
            return ERROR, "not an SQLite database (header string missing)"
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

    if integ.ok:
        checked = [t for t, v in integ.fts.items() if v == "ok"]
        skipped = [t for t in integ.fts if t not in checked]
        reason = "integrity_check ok; " + (
            f"FTS5 ok ({', '.join(checked)})" if checked else "no FTS5 table checked")
        if skipped:
            reason += f"; FTS5 not checked (module missing): {', '.join(skipped)}"
        return HEALTHY, reason
    reason = _damage_reason(integ)
    result["cause"] = file_cause(result["integrity"])
    if not stable:
        reason += ("; the files changed while they were copied, so the copy may be "
                   "torn: check again when the database is idle")
    return DAMAGED, reason


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
