"""Your own database, schema, code and SQL: user templates, the python and sql roles, the general ledger.

Everything runs for real: SQLite, worker processes, files. Short runs on small databases.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from walstress import run
from walstress.checks.btree import btree_roots, page_owners
from walstress.errors import ScenarioError
from walstress.judge import judge_run

ROOT = Path(__file__).resolve().parent.parent

WORKER = textwrap.dedent('''
    def work(ctx):
        """Writes rows of kv (WITHOUT ROWID, text key) and grid (composite key) through ctx.transaction."""
        conn = ctx.connect()
        n = 0
        while not ctx.stop.is_set():
            key = f"{ctx.worker}-{ctx.thread}-{n}"
            n += 1
            try:
                with ctx.transaction(conn) as txn:
                    conn.execute("INSERT INTO kv(k, v, hits) VALUES (?, randomblob(30), 0)", (key,))
                    txn.wrote("kv", key)
                    x, y = ctx.rng.randint(0, 9), n % 50 + 100 * ctx.thread
                    colour = ctx.rng.choice(["red", "green", "blue"])
                    conn.execute("INSERT INTO grid VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET colour = excluded.colour",
                                 (x, y, colour))
                    txn.wrote("grid", (x, y), {"colour": colour, "x": x, "y": y})
            except Exception as exc:
                if "locked" not in str(exc):
                    raise
            with ctx.op("read"):
                conn.execute("SELECT count(*) FROM kv").fetchall()

    def boom(ctx):
        raise ValueError("boom in the user's code\\nsecond line")

    def two(ctx, extra):
        pass
    ''')


def make_app_db(folder: Path) -> sqlite3.Connection:
    """A WAL database whose last 50 rows exist only in its -wal; the returned connection keeps it so."""
    conn = sqlite3.connect(folder / "app.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.executescript("""
        CREATE TABLE kv(k TEXT PRIMARY KEY, v BLOB, hits INTEGER) WITHOUT ROWID;
        CREATE TABLE grid(x INTEGER, y INTEGER, colour TEXT, PRIMARY KEY (x, y));
        CREATE INDEX grid_colour ON grid(colour);
    """)
    for i in range(1500):
        conn.execute("INSERT INTO kv VALUES (?, randomblob(60), ?)", (f"old-{i:05d}", i))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for i in range(50):
        conn.execute("INSERT INTO kv VALUES (?, randomblob(60), ?)", (f"wal-only-{i:02d}", i))
    return conn


def hashes(db: Path) -> dict[str, str]:
    return {side: hashlib.sha256(Path(f"{db}{side}").read_bytes()).hexdigest()
            for side in ("", "-wal", "-shm") if Path(f"{db}{side}").exists()}


@pytest.fixture
def app(tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    conn = make_app_db(tmp_path)
    yield tmp_path
    conn.close()


def app_scenario(**workers) -> dict:
    entry = {"role": "python", "entry": "worker.py:work", "count": 2, "threads": 2, **workers}
    return {"name": "app", "duration": "2.5s", "database": {"template": "app.db"}, "workers": [entry]}


def write_scenario(folder: Path, data: dict) -> Path:
    lines = [f'name = "{data["name"]}"', f'duration = "{data["duration"]}"', "[database]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in data["database"].items()]
    for worker in data["workers"]:
        lines.append("[[workers]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in worker.items()]
    path = folder / "app.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_your_database_is_copied_consistently_and_never_written(app, cache_dir, monkeypatch):
    monkeypatch.chdir(app)
    before = hashes(app / "app.db")
    assert set(before) == {"", "-wal", "-shm"}
    result = run(write_scenario(app, app_scenario()), app / "out")
    res = result.runs[0]
    assert res["verdict"] == "clean", res["reason"]
    assert hashes(app / "app.db") == before  # db, -wal and -shm byte for byte
    template = Path(result.data["templates"][0]["path"])
    assert result.data["templates"][0]["kind"] == "user" and result.data["templates"][0]["built_now"]
    conn = sqlite3.connect(template)
    try:
        assert conn.execute("SELECT count(*) FROM kv WHERE k LIKE 'wal-only-%'").fetchone()[0] == 50
        assert conn.execute("SELECT count(*) FROM kv").fetchone()[0] == 1550
    finally:
        conn.close()
    assert not Path(f"{template}-wal").exists()
    assert set(res["ledger"]["tables"]) == {"kv", "grid"} and res["writes"]["acked"] > 100
    again = run(write_scenario(app, app_scenario()), app / "again")  # the same bytes: the cached template
    assert again.data["templates"][0]["built_now"] is False
    assert again.data["templates"][0]["path"] == str(template)


def test_lost_and_stale_rows_of_your_tables_are_named(app, cache_dir, monkeypatch, tmp_path_factory):
    """A WITHOUT ROWID row with a text key removed, a composite-key row changed: lost-writes, both named."""
    monkeypatch.chdir(app)
    res = run(write_scenario(app, app_scenario()), app / "out").runs[0]
    assert res["verdict"] == "clean", res["reason"]
    run_dir = tmp_path_factory.mktemp("judged") / "run"
    shutil.copytree(res["run_dir"], run_dir)
    db = run_dir / "db" / "state.db"
    ledger_rows = [json.loads(line.split(" ", 3)[3][1:]) for path in (run_dir / "ledger").glob("*.ledger")
                   for line in path.read_text().splitlines() if line.startswith("P ")]
    kv_key = next(op["k"] for ops in ledger_rows for op in ops if op["t"] == "kv")
    grid = next(op for ops in ledger_rows for op in ops if op["t"] == "grid")
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("DELETE FROM kv WHERE k = ?", (kv_key,))
        expected = conn.execute("SELECT colour FROM grid WHERE x = ? AND y = ?", grid["k"]).fetchone()[0]
        conn.execute("UPDATE grid SET colour = ? WHERE x = ? AND y = ?", (expected + "!", *grid["k"]))
    conn.close()
    judged = judge_run(run_dir)
    assert judged["verdict"] == "lost-writes", judged["reason"]
    lost = set(judged["writes"]["lost_ids"])
    assert f'kv:"{kv_key}"' in lost and f"grid:[{grid['k'][0]},{grid['k'][1]}]" in lost and len(lost) == 2
    found = {d["id"]: d["found"] for d in judged["ledger"]["lost_details"]}
    assert found[f'kv:"{kv_key}"'] == "missing" and found[f"grid:[{grid['k'][0]},{grid['k'][1]}]"].startswith("checksum")


def test_damage_is_named_after_your_tables(app, cache_dir, monkeypatch, tmp_path_factory):
    monkeypatch.chdir(app)
    res = run(write_scenario(app, app_scenario()), app / "out").runs[0]
    run_dir = tmp_path_factory.mktemp("damaged") / "run"
    shutil.copytree(res["run_dir"], run_dir)
    db = run_dir / "db" / "state.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    roots = btree_roots(conn)
    conn.close()
    owners = page_owners(db, roots)
    root = next(p for p, name in roots.items() if name == "kv")
    with open(db, "r+b") as handle:  # a private copy of a finished run
        def leaf(page: int) -> bool:
            handle.seek((page - 1) * 4096)
            return handle.read(1) == b"\x0a"  # a leaf of an index b-tree: WITHOUT ROWID rows live there

        victim = max(p for p, name in owners.items() if name == "kv" and p != root and leaf(p))
        handle.seek((victim - 1) * 4096 + 8)
        handle.write(random.Random(victim).randbytes(4096 - 8))
    judged = judge_run(run_dir)
    assert judged["verdict"] == "corrupt"
    assert "kv" in judged["integrity"]["damaged_objects"] and "kv" in judged["reason"]


def test_a_worker_function_that_raises_is_errors_with_its_first_line(app, cache_dir, monkeypatch):
    monkeypatch.chdir(app)
    res = run(write_scenario(app, app_scenario(entry="worker.py:boom", count=1, threads=1)), app / "out").runs[0]
    assert res["verdict"] == "errors"
    assert "python-0: ValueError: boom in the user's code" in res["reason"] and "second line" not in res["reason"]
    log = (Path(res["run_dir"]) / "logs" / "python-0.log").read_text()
    assert "Traceback (most recent call last)" in log and 'raise ValueError("boom' in log


@pytest.mark.parametrize("entry, words", [
    ("worker.py:nothing", "has no 'nothing'"),
    ("no_such_module:work", "cannot import 'no_such_module'"),
    ("worker.py:two", "must take one argument (the context)"),
    ("worker.py", '"package.module:function" or "file.py:function"'),
])
def test_a_bad_entry_exits_2_before_anything_starts(app, entry, words):
    path = write_scenario(app, app_scenario(entry=entry))
    proc = subprocess.run([sys.executable, "-m", "walstress", "run", str(path), "--out", str(app / "out")],
                          capture_output=True, text=True, cwd=app, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert str(path) in proc.stderr and "workers" in proc.stderr and words in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert not (app / "out").exists()


def test_own_connections_refuse_faults_that_need_walstress_connections(app, monkeypatch):
    monkeypatch.chdir(app)
    data = app_scenario(connections="own")
    with pytest.raises(ScenarioError, match="workers.python.connections.*faults.io_delay"):
        run({**data, "sqlite": {"driver": "apsw"}, "faults": {"io_delay": {"write_ms": 1}}}, app / "out")


def test_built_in_roles_need_their_tables(app, cache_dir, monkeypatch):
    monkeypatch.chdir(app)
    data = app_scenario()
    data["workers"] = [{"role": "writer", "count": 1}]
    with pytest.raises(ScenarioError, match="workers.writer.*messages.*role = \"python\""):
        run(data, app / "out")


def test_your_schema_and_sql_with_a_fill_script(tmp_path, cache_dir, monkeypatch):
    """schema_sql + fill.sql build the template; the sql role's writes are ledgered through RETURNING."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "schema.sql").write_text(
        "CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;\n"
        "CREATE TABLE grid(x INTEGER, y INTEGER, colour TEXT, PRIMARY KEY (x, y));\n"
        "CREATE TABLE notes(body TEXT);\n")
    (tmp_path / "fill.sql").write_text("INSERT INTO kv VALUES (:uuid, :text);\nINSERT INTO notes VALUES (:short);\n")
    statements = [
        {"sql": "INSERT INTO kv(k, v) VALUES (?, ?)", "weight": 4, "params": [{"uuid": True}, {"text": [5, 80]}]},
        {"sql": "UPDATE kv SET v = ? WHERE k = ?", "weight": 2, "params": [{"text": [5, 80]}, {"key": "kv"}]},
        {"sql": "DELETE FROM kv WHERE k = ?", "weight": 1, "params": [{"key": "kv"}]},
        {"sql": "INSERT INTO grid VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET colour = excluded.colour",
         "weight": 2, "params": [{"int": [0, 9]}, {"int": [0, 9]}, {"choice": ["red", "blue"]}]},
        {"sql": "INSERT INTO notes(body) VALUES (?)", "weight": 1, "params": [{"text": [1, 20]}]},
        {"sql": "SELECT count(*) FROM kv", "weight": 1},
    ]
    data = {"name": "sql", "duration": "2.5s",
            "database": {"schema_sql": "schema.sql", "fill": "fill.sql", "pages": 120},
            "workers": [{"role": "sql", "count": 2, "batch": 3, "statements": statements}]}
    result = run(data, tmp_path / "out")
    res = result.runs[0]
    assert res["verdict"] == "clean", res["reason"]
    assert set(res["ledger"]["tables"]) == {"kv", "grid", "notes"} and res["writes"]["acked"] > 100
    template = Path(result.data["templates"][0]["path"])
    conn = sqlite3.connect(template)
    assert conn.execute("PRAGMA page_count").fetchone()[0] >= 120
    conn.close()
    info = json.loads(template.with_suffix(".json").read_text())
    assert info["tables"] == ["grid", "kv", "notes"] and info["fill_rounds"] >= 1
    # deleting an acknowledged notes row (a plain rowid table) behind the harness's back is caught
    db = Path(res["run_dir"]) / "db" / "state.db"
    ledger = [line for path in (Path(res["run_dir"]) / "ledger").glob("*.ledger")
              for line in path.read_text().splitlines() if line.startswith("P ") and '"t":"notes"' in line]
    rowid = next(op["k"] for op in json.loads(ledger[-1].split(" ", 3)[3][1:]) if op["t"] == "notes")
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("DELETE FROM notes WHERE rowid = ?", (rowid,))
    conn.close()
    judged = judge_run(res["run_dir"])
    assert judged["verdict"] == "lost-writes" and judged["writes"]["lost_ids"] == [f"notes:{rowid}"]


@pytest.mark.parametrize("statement, words", [
    ({"sql": "INSERT INTO kv VALUES (?, ?); DELETE FROM kv", "params": []}, "not one complete statement"),
    ({"sql": "SELECT 1", "params": [{"int": [5, 1]}]}, "int = [low, high]"),
    ({"sql": "SELECT 1", "weight": -1}, "0 or more"),
    ({"sql": "SELECT 1", "colour": "red"}, "unknown key"),
])
def test_bad_sql_statements_are_named(statement, words):
    data = {"workers": [{"role": "sql", "statements": [statement]}]}
    with pytest.raises(ScenarioError, match="workers.sql.statements|params") as info:
        run(data, "unused")
    assert words in str(info.value)


def test_init_writes_a_starter_that_runs(app, cache_dir, monkeypatch):
    monkeypatch.chdir(app)
    from walstress.cli import main

    assert main(["init", "--db", "app.db", "--entry", "worker.py:work", "--out", "mine.toml"]) == 0
    text = (app / "mine.toml").read_text()
    assert 'template = "app.db"' in text and 'entry = "worker.py:work"' in text and 'role = "sql"' in text
    assert "# [faults.lock_breaker]" in text
    from walstress.scenario_schema import SHIPPED
    assert text.splitlines()[0] == f"#:schema {SHIPPED.as_uri()}"  # an editor's TOML server finds the schema
    result = run(app / "mine.toml", app / "out", overrides=["duration=2s", "repeat=1"])
    res = result.runs[0]
    assert res["verdict"] == "clean", res["reason"]
    assert {"kv", "grid"} <= set(res["ledger"]["tables"])  # the sql workers ledgered both of the app's tables
    assert main(["init", "--db", "app.db", "--out", "mine.toml"]) == 2  # never overwrites unasked


def test_init_refuses_what_it_cannot_use(app, monkeypatch, capsys):
    monkeypatch.chdir(app)
    from walstress.cli import main

    assert main(["init", "--entry", "worker.py:nope"]) == 2
    assert "has no 'nope'" in capsys.readouterr().err
    assert main(["init", "--db", "missing.db"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not (app / "walstress.toml").exists()


class _CommitsThenFails:
    """A connection whose COMMIT goes through and then reports an error: SQLite's "disk I/O error" after the
    commit reached the WAL is the real case; the ledger cannot know which side of it the rows are on."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def execute(self, sql: str, *args):
        result = self.conn.execute(sql, *args)
        if sql == "COMMIT":
            raise sqlite3.OperationalError("disk I/O error")
        return result


def test_a_transactions_ledger_for_every_way_it_ends(tmp_path, cache_dir):
    """ctx.transaction on a real connection: committed (P, A); the body raised (rolled back before any P);
    COMMIT refused with the transaction still open (P, then F once rolled back); COMMIT failed after it went
    through (P alone: indeterminate, never failed by a later transaction's failure). Every error is an op
    record of the transaction's kind."""
    from walstress.bench.overhead import python_actor
    from walstress.history import read_records
    from walstress.ledger import read_ledger

    run_dir = tmp_path / "run"
    with python_actor(run_dir, cache_dir=cache_dir) as actor:
        ctx = actor.context
        conn = ctx.connect()
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("CREATE TABLE parent(id INTEGER PRIMARY KEY)")
        conn.execute("CREATE TABLE child(id INTEGER PRIMARY KEY, "
                     "parent INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)")

        def refused(child: int) -> None:   # a deferred foreign key: COMMIT fails, the transaction stays open
            with pytest.raises(sqlite3.IntegrityError):
                with ctx.transaction(conn) as txn:
                    conn.execute("INSERT INTO child VALUES (?, 99)", (child,))
                    txn.wrote("child", child, {"parent": 99})
            assert not conn.in_transaction

        def body_raises() -> None:
            with pytest.raises(ZeroDivisionError):
                with ctx.transaction(conn) as txn:
                    conn.execute("INSERT INTO parent VALUES (2)")
                    txn.wrote("parent", 2, {"id": 2})
                    1 / 0
            assert not conn.in_transaction

        with ctx.transaction(conn) as txn:                                   # ledger txn 1: acknowledged
            conn.execute("INSERT INTO parent VALUES (1)")
            txn.wrote("parent", 1, {"id": 1})
        body_raises()                                                        # no ledger txn
        refused(1)                                                           # txn 2: failed
        with pytest.raises(sqlite3.OperationalError):                        # txn 3: indeterminate
            with ctx.transaction(_CommitsThenFails(conn), kind="upsert") as txn:
                conn.execute("INSERT INTO parent VALUES (3)")
                txn.wrote("parent", 3, {"id": 3})
        body_raises()                                                        # txn 3 stays indeterminate
        refused(2)                                                           # txn 4: failed
        rows = [r[0] for r in conn.execute("SELECT id FROM parent ORDER BY id")]
    assert rows == [1, 3], "the unclear COMMIT went through; nothing else but the first"
    ledger = read_ledger(run_dir / "ledger")
    assert [(t.txn, t.state) for t in ledger.transactions] == [(1, "acked"), (2, "failed"), (3, "pending"),
                                                              (4, "failed")]
    assert ledger.garbled_lines == 0
    ops = [r for path in (run_dir / "history").glob("*.jsonl") for r in read_records(path) if r["type"] == "op"]
    assert [(r["kind"], r["ok"], r["err"], r.get("msg")) for r in ops] == [
        ("write", True, None, None), ("write", False, "other", "division by zero"),
        ("write", False, "other", "FOREIGN KEY constraint failed"), ("upsert", False, "ioerr", "disk I/O error"),
        ("write", False, "other", "division by zero"), ("write", False, "other", "FOREIGN KEY constraint failed")]
    assert ops[0]["rows"] == 1
