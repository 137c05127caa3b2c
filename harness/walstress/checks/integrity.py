"""SQLite's own integrity checks, with b-tree names added to the messages.

``run_integrity`` runs ``PRAGMA integrity_check`` and FTS5's
``'integrity-check'`` command on every FTS5 table (SQLite before 3.44 leaves
FTS5 out of integrity_check). It opens the database read-write and writes to
it (a checkpoint), so it must only be pointed at a private copy: see
``diagnose.check_database`` for the read-only entry point.

Every sqlite3 error becomes part of the result; nothing here raises on a
damaged database.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from walstress.checks.btree import btree_roots, btree_roots_from_file, walk_pages
from walstress.checks.findings import Finding, RunEvidence, is_lock_error
from walstress.checks.sqltext import DB_ERRORS, error_text, tolerant

__all__ = [
    "IntegrityCheck",
    "IntegrityResult",
    "integrity_findings",
    "fts5_tables",
    "name_message",
    "objects_in_message",
    "run_integrity",
]

_OK = "ok"
_SKIPPED = "skipped: "


@dataclass
class IntegrityResult:
    ok: bool = False
    messages: list[str] = field(default_factory=list)
    named_messages: list[str] = field(default_factory=list)
    fts: dict[str, str] = field(default_factory=dict)
    damaged_objects: list[str] = field(default_factory=list)
    open_error: str | None = None
    seconds: float = 0.0
    sqlite_version: str = sqlite3.sqlite_version
    # problems the file walk found on its own (informational: SQLite's
    # messages decide ``ok``); filled only when the checks found damage
    walk_problems: list[str] = field(default_factory=list)
    checkpoint: list | None = None  # (busy, log, checkpointed) or None
    # b-tree pages that are all zeros (written over or never filled: a torn or lost write)
    zero_pages: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


# "Tree 23" (newer SQLite: the root page of the b-tree being checked), or
# "page 63857", "Page 64517", "tree page 7", "reference to page 9"; not
# "page number N" (an out-of-range pointer, not a page of the file).
# A number already followed by its name (group 4) is left alone.
_NUMBER_RE = re.compile(r"\b(?:(Tree)|([Pp]age)) (\d+)(?!\d)"
                        r"( \((?:owned by )?(?:[^()\s]+|\([^()\s]+\))\))?")
_OBJECT_RES = [
    re.compile(r"\bindex ([^\s:,]+)"),               # wrong # of entries in index X
    re.compile(r"\bNULL value in ([^\s.:]+)\."),     # NULL value in table.column
    re.compile(r"\bconstraint failed in ([^\s:,]+)"),
    re.compile(r"\bin table ([^\s:,]+)"),
]
_NAMED_RE = re.compile(r"\bTree \d+ \(([^()\s]+)\)|\(owned by ([^()\s]+)\)")


def name_message(line: str, roots: dict[int, str], owners: dict[int, str]) -> str:
    """Add b-tree names to one integrity_check line.

    "Tree 23 page 9: ..." -> "Tree 23 (messages) page 9: ..."; a page gets
    "(owned by NAME)" unless NAME is the tree already named before it on the
    line. Numbers nobody owns are left as they are.
    """
    current_tree: str | None = None

    def sub(m: re.Match) -> str:
        nonlocal current_tree
        number = int(m.group(3))
        if m.group(1):
            name = roots.get(number)
            current_tree = name
            return f"{m.group(0)} ({name})" if name and not m.group(4) else m.group(0)
        owner = owners.get(number)
        if not owner or owner == current_tree or m.group(4):
            return m.group(0)
        return f"{m.group(0)} (owned by {owner})"

    return _NUMBER_RE.sub(sub, line)


def objects_in_message(named_line: str) -> list[str]:
    """Table/index names a (named) message speaks of, in order of appearance."""
    found: list[tuple[int, str]] = []
    for rx in _OBJECT_RES:
        found.extend((m.start(), m.group(1)) for m in rx.finditer(named_line))
    found.extend((m.start(), m.group(1) or m.group(2))
                 for m in _NAMED_RE.finditer(named_line))
    # dict.fromkeys: drops repeats, keeps the first appearance
    return list(dict.fromkeys(n for _pos, n in sorted(found) if not n.startswith("(")))


def fts5_tables(conn: sqlite3.Connection) -> list[str]:
    """Names of the FTS5 virtual tables in the schema."""
    out = []
    for name, sql in conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND sql IS NOT NULL"):
        if re.match(r"\s*CREATE\s+VIRTUAL\s+TABLE\b.*?\bUSING\s+fts5\b", sql or "",
                    re.IGNORECASE | re.DOTALL):
            out.append(name)
    return out


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _fts_ok(verdict: str) -> bool:
    return verdict == _OK or verdict.startswith(_SKIPPED)


def _integrity_rows(conn: sqlite3.Connection, max_errors: int) -> tuple[list[str], str | None]:
    """Rows of integrity_check and the error that stopped it, if any.

    integrity_check can fail half way (it scans tables to check indexes),
    and Python's cursor reads one row ahead, so a statement that fails
    after its first row loses that row. A function called for each row as
    SQLite produces it keeps them all.
    """
    rows: list[str] = []

    def capture(text):
        rows.append("" if text is None else str(text))
        return 0

    try:
        conn.create_function("walstress_capture_row", 1, capture)
        conn.execute("SELECT walstress_capture_row(integrity_check) "
                     f"FROM pragma_integrity_check({max_errors})").fetchall()
        return rows, None
    except DB_ERRORS as exc:
        if rows or "no such table" not in error_text(exc):
            return rows, error_text(exc)
    # an SQLite without table-valued pragmas
    try:
        for (text,) in conn.execute(f"PRAGMA integrity_check({max_errors})"):
            rows.append("" if text is None else str(text))
    except DB_ERRORS as exc:
        return rows, error_text(exc)
    return rows, None


def run_integrity(db_path, *, max_errors: int = 10000) -> IntegrityResult:
    """Run integrity_check and the FTS5 integrity-check on ``db_path``.

    Only for a private copy: it checkpoints the copy's -wal into it first
    (so the file walk that names pages sees the latest pages).
    """
    t0 = time.perf_counter()
    res = IntegrityResult(sqlite_version=sqlite3.sqlite_version)
    path = Path(db_path)
    if not path.is_file():
        res.open_error = f"no such file: {path}"
        res.seconds = time.perf_counter() - t0
        return res
    uri = path.absolute().as_uri() + "?mode=rw"
    roots: dict[int, str] = {}
    conn = None
    try:
        conn = tolerant(sqlite3.connect(uri, uri=True, timeout=5.0, isolation_level=None))
        try:
            row = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            res.checkpoint = list(row) if row else None
        except DB_ERRORS:
            pass
        rows, error = _integrity_rows(conn, int(max_errors))
        for text in rows:
            res.messages.extend(text.splitlines() or [""])
        if error is not None:
            res.open_error = error
        if rows or error is None:
            for table in fts5_tables(conn):
                q = _quote(table)
                try:
                    conn.execute(f"INSERT INTO {q}({q}) VALUES('integrity-check')")
                    res.fts[table] = _OK
                except DB_ERRORS as exc:
                    text = error_text(exc)
                    # an SQLite built without FTS5 cannot check it: not damage
                    res.fts[table] = (f"{_SKIPPED}{text}" if "no such module" in text
                                      else text)
            try:
                roots = btree_roots(conn)
            except DB_ERRORS:
                roots = {}
    except DB_ERRORS as exc:
        res.open_error = res.open_error or error_text(exc)
    finally:
        if conn is not None:
            try:
                conn.close()
            except DB_ERRORS:
                pass

    res.ok = (res.open_error is None and res.messages == [_OK]
              and all(_fts_ok(v) for v in res.fts.values()))
    if res.ok:
        res.named_messages = list(res.messages)
    else:
        _name_damage(res, path, roots)
    res.seconds = time.perf_counter() - t0
    return res


_WALK_NAME_RE = re.compile(r"\((?!owned by)([^()\s]+)\)")


def _name_damage(res: IntegrityResult, path: Path, roots: dict[int, str]) -> None:
    """Fill named_messages, damaged_objects and walk_problems."""
    if not roots:
        roots = btree_roots_from_file(path)
    pmap = walk_pages(path, roots)
    owners = dict(pmap.owners)
    res.walk_problems = list(pmap.problems)
    res.zero_pages = zero_btree_pages(path, owners, pmap.page_size)
    lines = [m for m in res.messages if m != _OK]
    wanted = {int(n) for line in lines for n in re.findall(r"\b[Pp]age (\d+)", line)}
    missing = {p for p in wanted if p not in owners and 0 < p <= pmap.page_count}
    if missing:
        owners.update(_owners_from_dbstat(path, missing))
    damaged: list[str] = []
    for line in res.messages:
        named = line if line == _OK else name_message(line, roots, owners)
        res.named_messages.append(named)
        damaged.extend(objects_in_message(named))
    for table, verdict in res.fts.items():
        if not _fts_ok(verdict):
            damaged.append(table)
    if not damaged:
        # SQLite named nothing (e.g. only "database disk image is
        # malformed"): fall back on what the walk of the file found
        for problem in res.walk_problems:
            damaged.extend(m.group(1) for m in _WALK_NAME_RE.finditer(problem))
    res.damaged_objects = list(dict.fromkeys(n for n in damaged if not n.startswith("(")))


def zero_btree_pages(path: Path, owners: dict[int, str], page_size: int, *, cap: int = 1000) -> list[int]:
    """Pages a b-tree refers to whose every byte is zero (the freelist and pointer maps left out)."""
    wanted = sorted(p for p, owner in owners.items() if not owner.startswith("("))
    if not wanted or page_size <= 0:
        return []
    zeros = bytes(page_size)
    found: list[int] = []
    try:
        with open(path, "rb") as handle:
            for pgno in wanted:
                handle.seek((pgno - 1) * page_size)
                if handle.read(page_size) == zeros:
                    found.append(pgno)
                    if len(found) >= cap:
                        break
    except OSError:
        return found
    return found


def _owners_from_dbstat(path: Path, wanted: set[int]) -> dict[int, str]:
    """Fallback owner lookup through the dbstat table, where compiled in."""
    found: dict[int, str] = {}
    try:
        conn = tolerant(sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True))
    except DB_ERRORS:
        return found
    try:
        for pageno, name in conn.execute("SELECT pageno, name FROM dbstat"):
            if pageno in wanted:
                found[pageno] = name
                if len(found) == len(wanted):
                    break
    except DB_ERRORS:
        pass
    finally:
        conn.close()
    return found


# ------------------------------------------------------------ as a run check
INTEGRITY_LINES_IN_RESULT = 50


def integrity_findings(integrity: dict, check: str = "integrity") -> list[Finding]:
    """What an integrity result says: nothing when the file is healthy."""
    fts_bad = {name: text for name, text in (integrity.get("fts") or {}).items() if text != "ok"}
    open_error = integrity.get("open_error")
    if open_error and not integrity.get("damaged_objects"):
        if is_lock_error(open_error):  # another process still holds it: says nothing
            return [Finding(check, "errors", f"the final database could not be checked: {open_error}")]
        return [Finding(check, "corrupt", f"the final database cannot be checked: {open_error}")]
    if integrity.get("ok", False) and not fts_bad:
        return []
    objects = integrity.get("damaged_objects") or sorted(fts_bad)
    lines = integrity.get("named_messages") or integrity.get("messages") or [""]
    first = next((line for line in lines if not line.startswith("*** in database")), lines[0]).strip()
    if first in ("", "ok") and fts_bad:  # integrity_check passed; an FTS5 check did not
        name = next(iter(fts_bad))
        first = f"{name}: {fts_bad[name]}"
    where = f" in {', '.join(objects[:4])}" if objects else ""
    if open_error:
        first = f"{first[:120]} (then: {open_error})" if first and first != "ok" else open_error
    return [Finding(check, "corrupt", f"integrity check failed{where}: {first[:160]}")]


class IntegrityCheck:
    """``PRAGMA integrity_check`` and FTS5's integrity-check on the run's final database.

    Writes ``checks/integrity.txt`` (every line, b-trees named) and ``checks/fts.json``."""

    name = "integrity"

    def __call__(self, run: RunEvidence) -> list[Finding]:
        db_path = run.layout.db_path
        if not db_path.exists():
            run.results[self.name] = None
            return [Finding(self.name, "errors", "the run left no database to check")]
        result = run_integrity(db_path)
        run.layout.checks_dir.mkdir(exist_ok=True)
        run.layout.check_file("integrity.txt").write_text("\n".join(result.named_messages or result.messages) + "\n")
        run.layout.check_file("fts.json").write_text(json.dumps(result.fts, indent=1))
        data = result.to_dict()
        findings = integrity_findings(data, self.name)
        for key in ("messages", "named_messages"):  # the whole list is in checks/integrity.txt
            lines = data[key]
            data[key] = lines[:INTEGRITY_LINES_IN_RESULT]
            data[f"{key}_total"] = len(lines)
        run.results[self.name] = data
        return findings
