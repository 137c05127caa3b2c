"""Ledger check: every acknowledged change must be in the final database.

The expected state of a row is given by the last transaction that touched it
(in commit order across all ledgers: the order of their P lines). A row
acknowledged as written must be present with the same checksum over the
columns written; a row acknowledged as deleted must stay deleted. Rows whose
last transaction is indeterminate are not judged.

Rows are found by their key: the columns a key names (``{column: value}``),
else the table's primary key (``PRAGMA table_info``), else its rowid; so
rowid tables, INTEGER PRIMARY KEY, composite and text keys and WITHOUT
ROWID tables all work. A scenario may give its own read-back
(``database.verify = "module:function"``) for data that is not a plain
row: it receives the database path and the expected rows and returns the
refs it finds missing or stale.
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from walstress.checks.findings import Finding, RunEvidence, is_lock_error
from walstress.checks.sqltext import tolerant
from walstress.ledger import Ledger, Ref, read_ledger, row_crc, row_ref
from walstress.loading import LoadError, load_object

LOST_IDS_IN_SUMMARY = 1000
_CHUNK = 400


@dataclass(frozen=True, slots=True)
class Expected:
    """What an acknowledged change says a row must be."""

    table: str
    key: Any
    deleted: bool
    crc: int | None            # None: the row must only exist
    cols: tuple[str, ...]

    @property
    def ref(self) -> Ref:
        return row_ref(self.table, self.key)

    def describe(self) -> str:
        if self.deleted:
            return "deleted"
        return f"checksum {self.crc} over {', '.join(self.cols)}" if self.crc is not None else "present"


Verify = Callable[[str, list[Expected]], Iterable[Ref]]


@dataclass
class LedgerResult:
    acked_transactions: int = 0
    failed_transactions: int = 0
    indeterminate_transactions: int = 0
    acked_writes: int = 0          # rows whose expected state comes from an acknowledged change
    present_writes: int = 0        # of those, rows found in the expected state
    lost_ids: list[Ref] = field(default_factory=list)
    lost_details: list[dict] = field(default_factory=list)
    indeterminate_ids: list[Ref] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    ledger_files: int = 0
    garbled_lines: int = 0
    error: str | None = None       # the database could not be read back (damage, or a lock)
    key_errors: list[str] = field(default_factory=list)  # ledger entries that do not fit the schema
    stale_rows: int = 0            # lost rows that hold an older version of themselves (earlier or template)
    changed_rows: int = 0          # lost rows found with other values (stale ones included)

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
        data["key_errors"] = self.key_errors[:20]
        return data


def expected_states(ledger: Ledger, until: float | None = None) -> tuple[dict[Ref, Expected], set[Ref]]:
    """ref -> the state acknowledged changes leave; and the refs whose last change is indeterminate.

    With ``until`` (a copy of the database taken at that time): only changes acknowledged before it,
    and no row that any change touched from then on (it may be in the copy in either state)."""
    # Order by the P line: it is written while the writer holds SQLite's write lock (after
    # BEGIN IMMEDIATE, before COMMIT), so P times follow commit order. The A line comes after
    # the lock is released, and a preempted thread may write it after a later commit's A.
    events = sorted(((txn.t_prepare, txn) for txn in ledger.transactions if txn.state != "failed"),
                    key=lambda e: e[0])
    expected: dict[Ref, Expected] = {}
    indeterminate: set[Ref] = set()
    late: set[Ref] = set()
    if until is not None:
        late = {op.ref for txn in ledger.transactions if txn.state != "failed"
                and (txn.state != "acked" or txn.t_end is None or txn.t_end >= until or txn.t_prepare >= until)
                for op in txn.ops}
    for _, txn in events:
        for op in txn.ops:
            ref = op.ref
            if ref in late:
                continue
            if txn.state == "acked":
                expected[ref] = Expected(op.table, op.key, op.deletes, None if op.deletes else op.crc, op.cols)
                indeterminate.discard(ref)
            else:
                expected.pop(ref, None)
                indeterminate.add(ref)
    return expected, indeterminate


class KeyError_(ValueError):
    """A ledger key that does not fit the table (a bug of the code that wrote the ledger)."""


class RowReader:
    """Reads rows back by key, and the checksum of the columns a change wrote."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self._keys: dict[str, tuple[str, ...]] = {}

    def key_columns(self, table: str) -> tuple[str, ...]:
        if table not in self._keys:
            info = self.conn.execute(f"PRAGMA table_info({_quote(table)})").fetchall()
            if not info:
                raise KeyError_(f"no table {table!r} in the database")
            pk = sorted((row[5], row[1]) for row in info if row[5])
            self._keys[table] = tuple(name for _, name in pk) or ("rowid",)
        return self._keys[table]

    def key_of(self, exp: Expected) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        """(key columns, key values) of an expected row."""
        if isinstance(exp.key, dict):
            return tuple(exp.key), tuple(exp.key.values())
        columns = self.key_columns(exp.table)
        values = tuple(exp.key) if isinstance(exp.key, list) else (exp.key,)
        if len(values) != len(columns):
            raise KeyError_(f"{exp.table}: key {exp.key!r} has {len(values)} value(s); the table's key is "
                            f"({', '.join(columns)})")
        return columns, values

    def read(self, rows: list[Expected]) -> dict[Ref, int | None | bool]:
        """ref -> row_crc of the found values (True when the row exists and no columns are checked);
        absent refs were not found."""
        groups: dict[tuple[str, tuple[str, ...], tuple[str, ...]], list[tuple[Expected, tuple[Any, ...]]]] = {}
        for exp in rows:
            columns, values = self.key_of(exp)
            groups.setdefault((exp.table, columns, () if exp.deleted else exp.cols), []).append((exp, values))
        found: dict[Ref, int | None | bool] = {}
        for (table, columns, cols), members in groups.items():
            by_key = {values: exp for exp, values in members}
            selected = ", ".join(_quote(c) for c in columns + cols)
            target = _quote(columns[0]) if len(columns) == 1 else "(" + ", ".join(_quote(c) for c in columns) + ")"
            keys = list(by_key)
            for start in range(0, len(keys), _CHUNK):
                part = keys[start:start + _CHUNK]
                if len(columns) == 1:
                    marks = ", ".join("?" for _ in part)
                    params: list[Any] = [k[0] for k in part]
                else:
                    row = "(" + ", ".join("?" for _ in columns) + ")"
                    marks = "VALUES " + ", ".join(row for _ in part)
                    params = [v for k in part for v in k]
                sql = f"SELECT {selected} FROM {_quote(table)} WHERE {target} IN ({marks})"
                try:
                    records = self.conn.execute(sql, params).fetchall()
                except UnicodeDecodeError:   # damaged text: read it as bytes, so the row reads as changed
                    records = self._tolerant(sql, selected, columns + cols, params)
                for record in records:
                    key = tuple(record[:len(columns)])
                    hit = by_key.get(key)
                    if hit is None:
                        continue
                    values = record[len(columns):]
                    found[hit.ref] = row_crc(dict(zip(cols, values))) if cols else True
        return found


    def _tolerant(self, sql: str, selected: str, names: tuple[str, ...], params: list[Any]) -> list[tuple[Any, ...]]:
        """The rows of ``sql`` with text that is not valid UTF-8 decoded with replacement characters."""
        parts = [f"typeof({_quote(c)}) = 'text', CASE WHEN typeof({_quote(c)}) = 'text' THEN CAST({_quote(c)} AS "
                 f"BLOB) ELSE {_quote(c)} END" for c in names]
        out = []
        for record in self.conn.execute(sql.replace(selected, ", ".join(parts), 1), params):
            out.append(tuple(record[i + 1].decode("utf-8", "replace") if record[i] else record[i + 1]
                             for i in range(0, len(record), 2)))
        return out


def _quote(name: str) -> str:
    if name == "rowid":
        return name
    return '"' + name.replace('"', '""') + '"'


def check_ledger(db_path: str | Path, ledger_dir: str | Path, *, verify: Verify | None = None,
                 template: str | Path | None = None, until: float | None = None) -> LedgerResult:
    """Read every acknowledged row back; a row found with other values is also compared with the
    earlier acknowledged versions of it and with the ``template`` the run started from (a *stale*
    row: an older version came back)."""
    ledger = read_ledger(ledger_dir)
    result = LedgerResult(ledger_files=len(ledger.files), garbled_lines=ledger.garbled_lines)
    for txn in ledger.transactions:
        if txn.state == "acked":
            result.acked_transactions += 1
        elif txn.state == "failed":
            result.failed_transactions += 1
        else:
            result.indeterminate_transactions += 1
    expected, indeterminate = expected_states(ledger, until)
    result.indeterminate_ids = sorted(indeterminate, key=_sort_key)
    result.acked_writes = len(expected)
    result.tables = sorted({exp.table for exp in expected.values()})
    if not expected:
        return result
    ordered = sorted(expected.values(), key=lambda e: _sort_key(e.ref))
    if verify is not None:
        try:
            bad = set(verify(str(db_path), ordered))
        except sqlite3.Error as exc:
            result.error = f"the scenario's verify function: {exc}"
            return result
        for exp in ordered:
            if exp.ref in bad:
                _lost(result, exp, "not as expected (the scenario's verify function)")
            else:
                result.present_writes += 1
        return result
    try:
        conn = sqlite3.connect(str(db_path), timeout=10.0)
    except sqlite3.Error as exc:
        result.error = f"could not open the database: {exc}"
        return result
    tolerant(conn)   # damaged text reads as other values, not as an error
    try:
        reader = RowReader(conn)
        readable = []
        for exp in ordered:
            try:
                reader.key_of(exp)
                readable.append(exp)
            except KeyError_ as exc:
                result.key_errors.append(str(exc))
        found = reader.read(readable)
    except sqlite3.Error as exc:
        result.error = f"could not read {', '.join(result.tables)}: {exc}"
        return result
    finally:
        conn.close()
    changed = []
    for exp in readable:
        actual = found.get(exp.ref)
        if exp.deleted:
            if actual is None:
                result.present_writes += 1
            else:
                _lost(result, exp, "row present")
        elif actual is None:
            _lost(result, exp, "missing")
        elif exp.crc is not None and actual != exp.crc:
            changed.append((exp, actual))
        else:
            result.present_writes += 1
    if changed:
        _changed_rows(result, changed, ledger, template)
        result.lost_ids.sort(key=_sort_key)
        result.lost_details.sort(key=lambda d: _sort_key(d["id"]))
    return result


def _changed_rows(result: LedgerResult, changed: list[tuple[Expected, Any]], ledger: Ledger,
                  template: str | Path | None) -> None:
    """Rows found with other values: an earlier acknowledged version, the template's, or neither."""
    earlier: dict[Ref, set[int]] = {}
    for txn in ledger.transactions:
        if txn.state == "acked":
            for op in txn.ops:
                if op.crc is not None and not op.deletes:
                    earlier.setdefault(op.ref, set()).add(op.crc)
    original: dict[Ref, Any] = {}
    if template is not None and Path(template).is_file():
        try:
            conn = sqlite3.connect(Path(template).absolute().as_uri() + "?mode=ro", uri=True, timeout=5.0)
            try:
                original = RowReader(conn).read([exp for exp, _ in changed])
            finally:
                conn.close()
        except (sqlite3.Error, KeyError_):
            original = {}
    result.changed_rows += len(changed)
    for exp, actual in changed:
        if actual in earlier.get(exp.ref, ()):
            _lost(result, exp, f"checksum {actual}: an earlier acknowledged version", stale="earlier")
        elif exp.ref in original and original[exp.ref] == actual:
            _lost(result, exp, f"checksum {actual}: the version the run started from", stale="template")
        else:
            _lost(result, exp, f"checksum {actual}")


def _lost(result: LedgerResult, exp: Expected, found: str, *, stale: str | None = None) -> None:
    result.lost_ids.append(exp.ref)
    detail = {"id": exp.ref, "table": exp.table, "key": exp.key, "expected": exp.describe(), "found": found}
    if stale:
        detail["stale"] = stale
        result.stale_rows += 1
    result.lost_details.append(detail)


def _sort_key(ref: Ref) -> tuple[int, Any]:
    return (0, ref) if isinstance(ref, int) else (1, ref)


# ------------------------------------------------------------ as a run check
class LedgerCheck:
    """Every acknowledged change of the run's ledger must be in the final database.

    Writes ``checks/lost_ids.txt`` (every lost id; run.json keeps the first ones)."""

    name = "ledger"

    def __call__(self, run: RunEvidence) -> list[Finding]:
        if not run.layout.db_path.exists():
            run.results[self.name] = None
            return []  # the integrity check says so
        verify_path = (run.scenario.get("database") or {}).get("verify") or ""
        verify = None
        if verify_path:
            try:
                verify = load_object(verify_path, base_dir=run.scenario.get("source_dir") or None)
            except LoadError as exc:
                run.results[self.name] = None
                return [Finding(self.name, "errors", f"database.verify: {exc}")]
        result = check_ledger(run.layout.db_path, run.layout.ledger_dir, verify=verify,
                              template=run.template)
        run.layout.checks_dir.mkdir(exist_ok=True)
        run.layout.check_file("lost_ids.txt").write_text("".join(f"{i}\n" for i in result.lost_ids))
        data = result.to_dict()
        run.results[self.name] = data
        if result.error:
            verdict = "errors" if is_lock_error(result.error) else "corrupt"
            return [Finding(self.name, verdict, f"acknowledged rows could not be read back: {result.error}")]
        findings = []
        if result.key_errors:
            findings.append(Finding(self.name, "errors", f"{len(result.key_errors)} ledger entries do not fit the "
                                                         f"schema: {result.key_errors[0]}"))
        if result.lost:
            ids = ", ".join(str(i) for i in result.lost_ids[:8])
            more = "" if result.lost <= 8 else f" and {result.lost - 8} more"
            findings.append(Finding(self.name, "lost-writes",
                                    f"{result.lost} of {result.acked_writes} acknowledged rows lost (ids {ids}{more})"))
        return findings


def all_lost_ids(run: RunEvidence) -> list[Ref]:
    """Every lost row of a judged run: checks/lost_ids.txt has them all, run.json only the first ones."""
    path = run.layout.check_file("lost_ids.txt")
    if path.exists():
        return [parse_ref(line) for line in path.read_text().splitlines() if line]
    return list((run.results.get("ledger") or {}).get("lost_ids") or [])


def parse_ref(text: str) -> Ref:
    """A ref as written in lost_ids.txt: an integer id, or ``table:key``."""
    return int(text) if text.lstrip("-").isdigit() else text
