"""Crash exploration: the storage models on a hand-made trace, and explore/replay on a real recording.

The model tests build a trace of two files by hand and check which states
each model allows and what the files hold in each. The end-to-end tests
record one short run of a tiny database (minimal schema, 300 pages,
about thirty commits) through the VFS shim and check a few hundred of its
crash states in real SQLite: WAL with synchronous FULL stays clean under
posix-weak, lying storage loses acknowledged commits, a rollback journal
deleted after the cut leaves corrupt states, and a saved state replays to
its verdict. The shipped scenarios under scenarios/crash/ run the same at
size (8,000 pages, thousands of states) in ``nox -s crash``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from walstress.crash import explore, replay
from walstress.crash.model import Builder, Cut, Op, Trace, Variant, variants, windows
from walstress.errors import UsageError

PAGE = 1024


# ------------------------------------------------------------ the models, by hand
@pytest.fixture
def trace(tmp_path: Path) -> Trace:
    """t.db starts as one page of 1s; the WAL gets a page of 2s, a sync, then a page of 3s, while the db
    gets a page of 4s at offset 1 page (growing it): a sync of the WAL only."""
    source = tmp_path / "bytes"
    source.write_bytes(b"\x02" * PAGE + b"\x03" * PAGE + b"\x04" * PAGE)
    s = str(source)
    ops = [
        Op(0, "W", "t.db-wal", 10, 10, 1.0, 0, PAGE, s, 0),
        Op(1, "S", "t.db-wal", 11, 12, 1.1),
        Op(2, "W", "t.db-wal", 13, 13, 1.2, PAGE, PAGE, s, PAGE),
        Op(3, "W", "t.db", 14, 14, 1.3, PAGE, PAGE, s, 2 * PAGE),
    ]
    return Trace(tmp_path, ops, {"t.db": b"\x01" * PAGE}, "t.db", PAGE)


def _classes(found: list[Variant]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in found:
        out[v.cls] = out.get(v.cls, 0) + 1
    return out


def test_a_sync_makes_the_writes_issued_before_it_durable(trace):
    wins = windows(trace, 4)
    assert [op.index for op in wins["t.db-wal"].durable] == [0]
    assert [op.index for op in wins["t.db-wal"].pending] == [2]
    assert [op.index for op in wins["t.db"].pending] == [3] and not wins["t.db"].durable
    lying = windows(trace, 4, lying=True)
    assert [op.index for op in lying["t.db-wal"].pending] == [0, 2], "a sync that lies makes nothing durable"


def test_each_model_allows_its_classes(trace):
    cut = Cut(4, "after-ack", 1.3)
    wins = windows(trace, 4)
    weak = list(variants(trace, cut, "posix-weak", wins))
    # prefix, none, one reorder per file, both writes grow their file (zero-tail), omit either write,
    # and a page write torn at its one inner sector boundary (no inner page boundary in a 1-page write)
    assert _classes(weak) == {"prefix": 1, "none": 1, "reorder": 2, "zero-tail": 2, "omit-one": 2, "torn-sector": 2}
    ordered = list(variants(trace, cut, "posix-ordered", wins))
    assert "omit-one" not in _classes(ordered) and _classes(ordered)["reorder"] == 2
    lying = list(variants(trace, cut, "lying", windows(trace, 4, lying=True)))
    assert _classes(lying) == {"prefix": 1, "none": 1, "lost-tail": 1}


def test_a_state_holds_what_its_variant_says(trace):
    cut, wins = Cut(4, "after-ack", 1.3), windows(trace, 4)
    builder = Builder(trace)
    full = builder.build(cut, Variant("prefix"), wins)
    assert full.files["t.db"] == b"\x01" * PAGE + b"\x04" * PAGE
    assert full.files["t.db-wal"] == b"\x02" * PAGE + b"\x03" * PAGE
    none = builder.build(cut, Variant("none", unsynced=("t.db", "t.db-wal")), wins)
    assert none.files["t.db"] == b"\x01" * PAGE and none.files["t.db-wal"] == b"\x02" * PAGE
    zero = builder.build(cut, Variant("zero-tail", zeros=3), wins)
    assert zero.files["t.db"] == b"\x01" * PAGE + bytes(PAGE), "the new size persisted, the data did not"
    torn = builder.build(cut, Variant("torn-sector", torn=(2, 512)), wins)
    assert torn.files["t.db-wal"] == b"\x02" * PAGE + b"\x03" * 512
    assert len({full.key, none.key, zero.key, torn.key}) == 4
    assert builder.build(cut, Variant("prefix"), wins).key == full.key, "the same content has the same key"


# ------------------------------------------------------------ a real recording
def _scenario(folder: Path, name: str, *, journal_mode: str = "WAL", synchronous: str = "FULL",
              extra: str = "") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(f"""
name = "{name}"
seed = 3
duration = "0.8s"
expect = "clean"

[sqlite]
driver = "apsw"

[database]
schema = "minimal"
pages = 300
journal_mode = "{journal_mode}"
synchronous = "{synchronous}"
cache_size = 20
busy_timeout_ms = 5000

[checkpoint]
mode = "{'PASSIVE' if journal_mode == 'WAL' else 'NONE'}"
every_writes = 10

[[workers]]
role = "writer"
count = 1
batch = 5
pause_ms = 20
{extra}
""")
    return path


@pytest.fixture(scope="module")
def wal_full(tmp_path_factory, cache_dir) -> dict:
    """One recorded run of the WAL scenario, explored under posix-weak."""
    folder = tmp_path_factory.mktemp("crash-wal")
    scratch = folder / "scratch"
    os.environ["WALSTRESS_CRASH_SCRATCH"] = str(scratch)
    report = explore(_scenario(folder, "crash-wal-full"), folder / "out", model="posix-weak", max_states=250,
                     jobs=2, cache_dir=cache_dir)
    return {"folder": folder, "report": report, "scratch": scratch}


def test_wal_with_full_sync_is_clean_in_every_explored_state(wal_full):
    report = wal_full["report"]
    totals = report["totals"]
    assert report["verdict"] == "clean", report["failing"][:2]
    assert report["acknowledged_commits"] >= 10 and report["cuts"] > report["acknowledged_commits"]
    assert totals["explored"] >= 100 and totals["possible"] >= totals["explored"]
    assert totals["clean"] == totals["explored"] and totals["corrupt"] == 0
    explored = {cls for cls, entry in report["classes"].items() if entry["explored"]}
    assert {"prefix", "none", "zero-tail", "omit-one", "torn-sector"} <= explored, report["classes"]
    assert report["recovered_databases"] > 1
    out = wal_full["folder"] / "out"
    assert json.loads((out / "crash.json").read_text())["totals"] == totals
    assert "posix-weak" in (out / "crash.md").read_text()
    assert not list(wal_full["scratch"].iterdir()), "the states' scratch folder is removed"


def test_storage_that_ignores_sync_loses_acknowledged_commits(wal_full, tmp_path):
    run_dir = wal_full["report"]["run_dir"]   # the same recording, judged under another model
    report = explore(run_dir, tmp_path / "lying", model="lying", max_states=150, jobs=2)
    assert report["verdict"] == "lost-writes", report["totals"]
    assert report["totals"]["lost_synced"] > 0 and report["totals"]["corrupt"] == 0
    # what SQLite decides here: every state recovers to a sound database, and one holding all that was
    # written (prefix) keeps every acknowledged commit; the losses are those of states the sync skipped
    prefix, tail = report["classes"]["prefix"], report["classes"]["lost-tail"]
    assert prefix["explored"] > 0 and prefix["clean"] == prefix["explored"], prefix
    assert tail["explored"] > 0 and tail["corrupt"] == 0 and tail["lost_synced"] > 0, tail
    smallest = report["failing"][0]
    assert "sync not honoured" in smallest["why"]
    again = replay(smallest["file"])
    assert again["verdict"] == "lost-writes" and again["as_recorded"], again


def test_a_deleted_hot_journal_leaves_corrupt_states_that_replay(tmp_path, cache_dir):
    path = _scenario(tmp_path, "crash-rollback", journal_mode="DELETE")
    report = explore(path, tmp_path / "out", after="delete-journal", max_states=300, jobs=2, cache_dir=cache_dir)
    assert report["verdict"] == "corrupt", report["totals"]
    corrupt = [s for s in report["failing"] if s["verdict"] == "corrupt"]
    assert corrupt and Path(corrupt[0]["file"]).is_file()
    result = subprocess.run([sys.executable, "-m", "walstress", "crash", "replay", corrupt[0]["file"]],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "corrupt" in result.stdout and "as recorded" in result.stdout


def test_the_rollback_journal_repairs_the_same_states(tmp_path, cache_dir):
    path = _scenario(tmp_path, "crash-rollback", journal_mode="DELETE")
    report = explore(path, tmp_path / "out", max_states=200, jobs=2, cache_dir=cache_dir)
    assert report["verdict"] == "clean", report["failing"][:2]
    assert report["totals"]["explored"] >= 100


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "walstress", "crash", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_bad_input_is_a_usage_error_with_one_line(tmp_path, wal_full):
    (tmp_path / "plain").mkdir()
    (tmp_path / "not-a-state.json").write_text("{}")
    cases = [
        (["explore", str(tmp_path / "missing.toml")], "missing.toml"),
        (["explore", str(tmp_path / "plain")], "without a crash trace"),
        (["explore", wal_full["report"]["run_dir"], "--max-states", "0"], "--max-states"),
        (["explore", wal_full["report"]["run_dir"], "--classes", "torn-page", "--model", "lying"], "torn-page"),
        (["replay", str(tmp_path / "not-a-state.json")], "not a crash state file"),
    ]
    for args, words in cases:
        result = _cli(*args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert words in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
    with pytest.raises(UsageError):
        explore(wal_full["report"]["run_dir"], tmp_path / "x", model="ext4")


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "killed"])
def test_an_interrupted_or_killed_explorer_leaves_no_process_or_state_behind(how, wal_full, tmp_path):
    scratch = tmp_path / "scratch"
    proc = subprocess.Popen([sys.executable, "-m", "walstress", "crash", "explore", wal_full["report"]["run_dir"],
                             "--out", str(tmp_path / "out"), "--jobs", "2", "--max-states", "100000"],
                            env={**os.environ, "WALSTRESS_CRASH_SCRATCH": str(scratch)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (scratch.is_dir() and list(scratch.glob("*/w*"))):
        time.sleep(0.05)
    assert proc.poll() is None, "the exploration ended before it could be interrupted"
    checkers = psutil.Process(proc.pid).children(recursive=True)
    assert checkers, "the states are checked in child processes"
    proc.send_signal(how)
    proc.wait(timeout=30)
    gone, alive = psutil.wait_procs(checkers, timeout=15)
    assert not alive, f"checking processes left behind: {[p.pid for p in alive]}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and list(scratch.iterdir()):
        time.sleep(0.1)
    assert not list(scratch.iterdir()), "the states' folder is removed"
