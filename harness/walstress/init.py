"""``walstress init``: a commented starter scenario for your database file or your code.

    walstress init --db app.db                      # your tables, driven by SQL (role = "sql")
    walstress init --entry worker.py:work           # your function as a worker (role = "python")
    walstress init --db app.db --entry worker.py:work

The database is read from a private copy (never opened or written in
place); for each of its tables the starter has an INSERT with generated
values for every column, an UPDATE and a DELETE by key, and a read. The
file it writes loads as it is (it is checked before it is kept) and runs
with ``walstress run``; a matrix with the lock breaker is there, commented
out, to compare against.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from walstress.catalog import load_scenario
from walstress.database.snapshot import copy_database
from walstress.errors import ScenarioError, UsageError
from walstress.loading import LoadError, ensure_on_path, load_object
from walstress.scenario_schema import SHIPPED as SCHEMA
from walstress.tomlwriter import value as toml_value

MAX_TABLES = 4


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _generator(declared: str, *, key: bool) -> dict[str, Any]:
    """A generator for a column of this declared type (SQLite's affinity rules, roughly)."""
    t = declared.upper()
    if "INT" in t:
        return {"int": [1, 2**31 - 1] if key else [0, 1_000_000]}
    if any(word in t for word in ("REAL", "FLOA", "DOUB")):
        return {"real": [0.0, 1000.0]}
    if "BLOB" in t or not t:
        return {"blob": [16, 512]} if not key else {"uuid": True}
    return {"uuid": True} if key else {"text": [8, 200]}


def describe_tables(db: Path) -> list[dict[str, Any]]:
    """Tables of a database (from a private copy): name, columns (name, type, pk order, not null), rows."""
    with tempfile.TemporaryDirectory(prefix="walstress-init-") as tmp:
        status, _stable = copy_database(db, Path(tmp))
        if status.get(""):
            raise UsageError(f"{db}: cannot read it: {status['']}")
        conn = sqlite3.connect(Path(tmp) / db.name)
        try:
            names = [r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                "AND sql NOT LIKE 'CREATE VIRTUAL%' ORDER BY name")]
            tables = []
            for name in names:
                if any(name.startswith(f"{other}_") for other in names if other != name):
                    continue  # the shadow tables of a virtual table
                columns = [{"name": r[1], "type": r[2] or "", "pk": r[5], "notnull": bool(r[3])}
                           for r in conn.execute(f"PRAGMA table_info({_quote(name)})")]
                rows = conn.execute(f"SELECT count(*) FROM {_quote(name)}").fetchone()[0]
                tables.append({"name": name, "columns": columns, "rows": rows})
            return tables
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"{db}: cannot read its schema: {exc} (walstress check {db} tells more)") from None
        finally:
            conn.close()


def sql_statements(table: dict[str, Any]) -> list[dict[str, Any]]:
    """INSERT with generated values, UPDATE and DELETE by key, and a read, for one table."""
    name = _quote(table["name"])
    columns = table["columns"]
    keys = sorted((c for c in columns if c["pk"]), key=lambda c: c["pk"])
    rowid_key = len(keys) == 1 and "INT" in keys[0]["type"].upper()  # INTEGER PRIMARY KEY: SQLite picks it
    inserted = [c for c in columns if not (rowid_key and c["pk"])]
    if not inserted:
        return []
    statements: list[dict[str, Any]] = [{
        "sql": f"INSERT INTO {name}({', '.join(_quote(c['name']) for c in inserted)}) "
               f"VALUES ({', '.join('?' for _ in inserted)})",
        "weight": 5, "params": [_generator(c["type"], key=bool(c["pk"])) for c in inserted]}]
    values = [c for c in columns if not c["pk"]]
    key_cols = [c["name"] for c in keys] or ["rowid"]
    where = " AND ".join(f"{c if c == 'rowid' else _quote(c)} = ?" for c in key_cols)
    key_params = [{"key": table["name"], "part": i} if len(key_cols) > 1 else {"key": table["name"]}
                  for i in range(len(key_cols))]
    if values:
        statements.append({"sql": f"UPDATE {name} SET {_quote(values[0]['name'])} = ? WHERE {where}",
                           "weight": 3, "params": [_generator(values[0]["type"], key=False), *key_params]})
    statements.append({"sql": f"DELETE FROM {name} WHERE {where}", "weight": 1, "params": key_params})
    statements.append({"sql": f"SELECT count(*) FROM {name}", "weight": 1})
    return statements


def starter(db: Path | None, entry: str | None, out: Path) -> str:
    base = out.parent.resolve()
    lines = [f"#:schema {SCHEMA.as_uri()}",   # keys completed and checked in an editor with a TOML server
             "# A starter scenario written by `walstress init`: edit it, then",
             f"#   walstress run {out}",
             "# Every key has a default; the README lists them all. Paths are relative to this file.",
             f'name = "{out.stem}"',
             'description = "My workload under walstress"',
             "seed = 1",
             'duration = "20s"          # one run; --set duration=60s for longer',
             "repeat = 3                # runs per cell",
             'expect = "clean"          # what a healthy system gives', ""]
    tables: list[dict[str, Any]] = []
    lines.append("[database]")
    if db is not None:
        tables = describe_tables(db)
        lines += [f"template = {toml_value(os.path.relpath(db.resolve(), base))}   # copied consistently, never written",
                  "busy_timeout_ms = 5000", ""]
    else:
        lines += ['schema = "minimal"         # or: template = "your.db", or schema_sql = "schema.sql"',
                  "pages = 2000", ""]
    if entry is not None:
        module, _, function = entry.rpartition(":")
        if module.endswith(".py") and not Path(module).is_absolute():
            entry = f"{os.path.relpath(Path(module).resolve(), base)}:{function}"
        lines += ["# Your code: called once per thread as work(ctx) until ctx.stop is set. ctx.connect() gives a",
                  "# connection with every fault installed; ctx.transaction(conn) ledgers what txn.wrote(...) says.",
                  "[[workers]]", 'role = "python"', f"entry = {toml_value(entry)}", "count = 2", "threads = 1",
                  "args = {}", ""]
    written = 0
    for table in tables[:MAX_TABLES]:
        statements = sql_statements(table)
        if not statements:
            continue
        written += 1
        lines += [f"# Writes of table {table['name']} ({table['rows']:,} rows now), ledgered through RETURNING.",
                  "[[workers]]", 'role = "sql"', f'group = "sql-{written}"', "count = 2", "batch = 2",
                  "statements = ["]
        lines += [f"  {toml_value(s)}," for s in statements]
        lines += ["]", ""]
    if entry is None and not written:
        lines += ["[[workers]]", 'role = "writer"', "count = 2", "", "[[workers]]", 'role = "reader"', "count = 1", ""]
    lines += ["[checkpoint]", 'mode = "PASSIVE"            # PASSIVE | FULL | RESTART | TRUNCATE | NONE',
              "every_writes = 0             # writers checkpoint every N commits (built-in writer role)", "",
              "# A known hazard to compare with: a thread that opens the database file with plain open()/close()",
              "# in your workers' processes (on POSIX that close() drops SQLite's locks). Uncomment both tables:",
              "# [faults.lock_breaker]", "# enabled = false",
              f"# roles = \"{'python' if entry else 'sql'}\"", "#",
              "# [matrix]", '# "faults.lock_breaker.enabled" = [false, true]', ""]
    return "\n".join(lines)


def write_starter(out: str | Path, *, db: str | None = None, entry: str | None = None, force: bool = False) -> Path:
    """Write the starter scenario to ``out`` and check that it loads; its path."""
    path = Path(out)
    if path.exists() and not force:
        raise UsageError(f"{path} exists; choose another --out or pass --force")
    db_path = Path(db) if db else None
    if db_path is not None and not db_path.is_file():
        raise UsageError(f"--db {db}: no such file")
    if entry is not None:
        if ":" not in entry:
            raise UsageError(f'--entry {entry}: expected "package.module:function" or "file.py:function"')
        ensure_on_path([str(Path.cwd())])
        try:
            load_object(entry)
        except LoadError as exc:
            raise UsageError(f"--entry {entry}: {exc}") from None
    text = starter(db_path, entry, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    try:
        load_scenario(tmp)
    except ScenarioError as exc:
        tmp.unlink()
        raise UsageError(f"the starter for these inputs does not load ({exc.message}); please report it") from None
    tmp.replace(path)
    return path
