"""The ledger check on hand-written ledgers and a real database."""

from __future__ import annotations

import json
import sqlite3
import time
import types
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from walstress.checks.ledger import check_ledger
from walstress.errors import ScenarioError
from walstress.history import HistoryWriter, read_records
from walstress.ledger import RowOp, _encode_value, content_crc, decode_ops, encode_ops, row_crc
from walstress.workers.base import Actor
from walstress.catalog import scenario_from_dict


def make_db(path, rows):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE messages(id INTEGER PRIMARY KEY, content TEXT)")
    conn.executemany("INSERT INTO messages VALUES (?, ?)", rows)
    conn.commit()
    conn.close()


def test_commit_order_is_the_order_of_the_prepare_lines(tmp_path):
    # X prepared (under the write lock) before Y, but Y's acknowledgement was written first:
    # the row holds Y's content, which is right, and nothing is lost
    make_db(tmp_path / "db", [(5, "B")])
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    (ledger / "x.ledger").write_text(f"P 1 100.0 U5:{content_crc('A')}\nA 1 103.0\n")
    (ledger / "y.ledger").write_text(f"P 1 101.0 U5:{content_crc('B')}\nA 1 102.0\n")
    result = check_ledger(tmp_path / "db", ledger)
    assert result.lost_ids == [] and result.present_writes == 1


def test_lost_stale_resurrected_and_indeterminate(tmp_path):
    make_db(tmp_path / "db", [(1, "one"), (2, "old"), (3, "back"), (4, "whatever")])
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    (ledger / "w.ledger").write_text(
        f"P 1 1.0 I1:{content_crc('one')} I9:{content_crc('nine')}\nA 1 1.1\n"   # 9 missing
        f"P 2 2.0 U2:{content_crc('new')}\nA 2 2.1\n"                            # 2 stale
        f"P 3 3.0 D3\nA 3 3.1\n"                                                  # 3 deleted, back
        f"P 4 4.0 U4:{content_crc('x')}\n"                                        # 4 indeterminate
        f"P 5 5.0 I7:{content_crc('seven')}\nF 5 5.1\n"                           # rolled back
        f"P 6 6.0 I8:1\nA 6")                                                     # torn last line
    result = check_ledger(tmp_path / "db", ledger)
    assert result.lost_ids == [2, 3, 9]
    assert {d["id"]: d["found"] for d in result.lost_details}[9] == "missing"
    assert result.indeterminate_ids == [4, 8]
    assert result.failed_transactions == 1 and result.present_writes == 1


def test_wal_reset_race_does_not_share_rows_with_writers():
    with pytest.raises(ScenarioError, match="workers.wal-reset-race.count"):
        scenario_from_dict({"checkpoint": {"mode": "PASSIVE"},
                            "workers": [{"role": "wal-reset-race"}, {"role": "writer"}]})


def test_any_table_and_key(tmp_path):
    """Rows of any table, written through the general ledger form: WITHOUT ROWID with a text key,
    a composite key, INTEGER PRIMARY KEY and a plain rowid table."""
    from walstress.ledger import LedgerWriter, RowOp, read_ledger

    db = tmp_path / "db"
    conn = sqlite3.connect(db)
    conn.executescript("""
        CREATE TABLE kv(k TEXT PRIMARY KEY, v BLOB, hits INTEGER) WITHOUT ROWID;
        CREATE TABLE grid(x INTEGER, y INTEGER, colour TEXT, PRIMARY KEY (x, y));
        CREATE TABLE jobs(id INTEGER PRIMARY KEY, state TEXT, result REAL);
        CREATE TABLE notes(body TEXT);
        INSERT INTO kv VALUES ('a b', x'00ff', 1), ('kept', x'01', 2);
        INSERT INTO grid VALUES (1, 2, 'red'), (3, 4, 'blue');
        INSERT INTO jobs VALUES (7, 'done', 1.0);
        INSERT INTO notes(rowid, body) VALUES (12, 'hello');
    """)
    conn.commit()
    conn.close()
    writer = LedgerWriter(tmp_path / "ledger" / "app-t0.ledger")
    ops = [
        RowOp.written("kv", "a b", {"v": b"\x00\xff", "hits": 1}),       # present
        RowOp.written("kv", "lost key", {"v": b"\x02", "hits": 0}),      # WITHOUT ROWID, text key: missing
        RowOp.written("grid", (1, 2), {"colour": "green"}),             # composite key: stale (still red)
        RowOp.written("grid", {"x": 3, "y": 4}, {"colour": "blue"}),    # composite key by name: present
        RowOp.written("jobs", 7, {"state": "done", "result": 1}),       # 1 and 1.0: the same value
        RowOp.written("notes", 12, None),                               # rowid table, presence only
        RowOp.deleted("kv", "kept"),                                    # deleted, but back
    ]
    writer.acknowledge(writer.prepare(ops))
    writer.close()
    result = check_ledger(db, tmp_path / "ledger")
    assert result.error is None and result.key_errors == []
    assert sorted(result.lost_ids) == ['grid:[1,2]', 'kv:"kept"', 'kv:"lost key"']
    found = {d["id"]: d["found"] for d in result.lost_details}
    assert found['kv:"lost key"'] == "missing" and found['kv:"kept"'] == "row present"
    assert found["grid:[1,2]"].startswith("checksum")
    assert result.present_writes == 4 and result.tables == ["grid", "jobs", "kv", "notes"]
    assert len(read_ledger(tmp_path / "ledger").transactions[0].ops) == len(ops)


def test_a_key_that_does_not_fit_the_table_is_named(tmp_path):
    from walstress.ledger import LedgerWriter, RowOp

    db = tmp_path / "db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE grid(x, y, colour, PRIMARY KEY (x, y))")
    conn.close()
    writer = LedgerWriter(tmp_path / "ledger" / "w.ledger")
    writer.acknowledge(writer.prepare([RowOp.written("grid", 5, {"colour": "red"}),
                                       RowOp.written("nosuch", 1, {"a": 1})]))
    writer.close()
    result = check_ledger(db, tmp_path / "ledger")
    assert len(result.key_errors) == 2 and result.lost_ids == []
    assert "grid: key 5 has 1 value(s); the table's key is (x, y)" in result.key_errors
    assert "no table 'nosuch'" in " ".join(result.key_errors)


def test_a_row_that_came_back_in_an_older_version_is_stale(tmp_path):
    """Found values are compared with the row's earlier acknowledged versions and with the template."""
    make_db(tmp_path / "template", [(1, "t1"), (2, "t2"), (3, "t3")])
    make_db(tmp_path / "db", [(1, "v1"), (2, "t2"), (3, "other")])   # 1: earlier ack, 2: template, 3: neither
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    (ledger / "w.ledger").write_text(
        f"P 1 1.0 U1:{content_crc('v1')}\nA 1 1.1\n"
        f"P 2 2.0 U1:{content_crc('v2')} U2:{content_crc('v2')} U3:{content_crc('v2')}\nA 2 2.1\n")
    result = check_ledger(tmp_path / "db", ledger, template=tmp_path / "template")
    details = {d["id"]: d for d in result.lost_details}
    assert result.lost_ids == [1, 2, 3] and result.stale_rows == 2
    assert details[1]["stale"] == "earlier" and "earlier acknowledged version" in details[1]["found"]
    assert details[2]["stale"] == "template" and "the run started from" in details[2]["found"]
    assert "stale" not in details[3]
    # without the template only the earlier version is known
    assert check_ledger(tmp_path / "db", ledger).stale_rows == 1


def test_a_row_whose_text_is_not_utf8_reads_as_changed(tmp_path):
    # damage that leaves the b-tree whole can leave bytes in a text column that do not decode
    make_db(tmp_path / "db", [(1, "one"), (2, "two")])
    conn = sqlite3.connect(tmp_path / "db")
    conn.execute("UPDATE messages SET content = CAST(x'74f677' AS TEXT) WHERE id = 2")
    conn.commit()
    conn.close()
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    (ledger / "w.ledger").write_text(f"P 1 1.0 I1:{content_crc('one')} I2:{content_crc('two')}\nA 1 1.1\n")
    result = check_ledger(tmp_path / "db", ledger)
    assert result.lost_ids == [2], "the damaged row is lost; the whole one is read back"
    assert {d["id"]: d["found"] for d in result.lost_details}[2] != "missing"


# The fast encodings (ledger P lines, op records) say exactly what the general JSON encoder says.
_keys = st.one_of(st.integers(), st.text(max_size=12), st.floats(allow_nan=False, allow_infinity=False),
                  st.lists(st.one_of(st.integers(), st.text(max_size=5)), max_size=3),
                  st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))
_values = st.one_of(st.none(), st.integers(), st.text(max_size=20), st.binary(max_size=20),
                    st.floats(allow_nan=False))
_ops = st.lists(st.one_of(
    st.builds(RowOp.written, st.text(min_size=1, max_size=10), _keys,
              st.one_of(st.none(), st.dictionaries(st.text(min_size=1, max_size=6), _values, max_size=4))),
    st.builds(RowOp.deleted, st.text(min_size=1, max_size=10), _keys)), min_size=1, max_size=4)


@given(_ops)
@settings(max_examples=300, deadline=None)
def test_ledger_lines_encode_as_the_json_encoder_does(ops):
    line = encode_ops(ops)
    assert line == "J" + json.dumps([op.to_json() for op in ops], separators=(",", ":"), ensure_ascii=True)
    assert decode_ops(line) == ops


@given(st.sampled_from(["write", "read", "wr\u00efte \"x\""]), st.floats(min_value=0, max_value=2e9),
       st.dictionaries(st.sampled_from(["rows", "n", "count"]), st.integers(), max_size=2))
@settings(max_examples=200, deadline=None)
def test_op_records_encode_as_the_json_encoder_does(tmp_path_factory, kind, t0, extra):
    path = tmp_path_factory.mktemp("ops") / "h.jsonl"
    history = HistoryWriter(path, flush_records=1)
    actor = Actor.__new__(Actor)   # only what record_op reads
    actor.name, actor.thread_index, actor._op_prefixes = "python-0", 3, {}
    actor.ctx = types.SimpleNamespace(history=history)
    m0 = time.perf_counter()
    actor.record_op(kind, t0, m0, **extra)
    history.close()
    (rec,) = list(read_records(path))
    assert list(rec) == ["type", "worker", "thread", "kind", "t", "ms", "ok", "err", *extra]
    assert rec["t"] == t0 and rec["kind"] == kind and rec["worker"] == "python-0" and rec["thread"] == 3
    assert rec["ok"] is True and rec["err"] is None and 0 <= rec["ms"] < 60_000
    assert all(rec[k] == v for k, v in extra.items())


def reference_crc(values: dict) -> int:
    """The row checksum as documented: columns by name, ``name=value`` joined by \\x1f, each value as the
    ledger encodes one; a lone text or NULL column is its text's CRC (what row_crc makes faster: the column
    prefixes made once, the join)."""
    lone = next(iter(values.values())) if len(values) == 1 else b""
    if lone is None or isinstance(lone, str):
        return content_crc(lone)
    return zlib.crc32(b"\x1f".join(name.encode() + b"=" + _encode_value(values[name]) for name in sorted(values)))


@given(st.dictionaries(st.text(min_size=1, max_size=6), st.one_of(_values, st.booleans(), st.just(2.0)),
                       min_size=1, max_size=5))
@settings(max_examples=500, deadline=None)
def test_row_checksums_are_the_documented_ones(values):
    assert row_crc(values) == reference_crc(values)


# --------------------------------------------------------- the ledger's file
def _lines(path):
    return path.read_bytes().decode("ascii").splitlines()


def test_ledger_lines_cross_the_mapped_windows_and_the_file_is_cut_to_them(tmp_path, monkeypatch):
    import mmap

    from walstress.ledger import LedgerWriter, read_ledger

    monkeypatch.setattr(LedgerWriter, "CHUNK", mmap.ALLOCATIONGRANULARITY)   # a window per page: many crossings
    path = tmp_path / "ledger" / "w-t0.ledger"
    writer = LedgerWriter(path)
    ops = [RowOp.written("kv", f"key-{i}", {"v": "x" * (i % 50)}) for i in range(300)]
    big = [RowOp.written("kv", f"big-{i}", {"v": "y" * 100}) for i in range(100)]  # one line > a window
    for op in ops:
        writer.acknowledge(writer.prepare([op]))
    writer.acknowledge(writer.prepare(big))
    assert path.stat().st_size % mmap.ALLOCATIONGRANULARITY == 0, "while open, the file is whole windows"
    writer.close()
    writer.close()   # idempotent
    lines = _lines(path)
    assert len(lines) == 2 * 301 and path.read_bytes().endswith(b"\n") and b"\0" not in path.read_bytes()
    ledger = read_ledger(path.parent)
    assert [t.state for t in ledger.transactions] == ["acked"] * 301 and ledger.garbled_lines == 0
    assert ledger.transactions[-1].ops == big
    # reopened, it appends after what is there
    again = LedgerWriter(path)
    again.fail(again.prepare([ops[0]]))
    again.close()
    assert _lines(path)[:602] == lines and _lines(path)[602].startswith("P 1 ") and _lines(path)[603].startswith("F 1 ")


def test_a_killed_writers_lines_are_kept_and_its_zero_tail_is_skipped_and_cut(tmp_path):
    import os
    import signal

    from walstress.ledger import LedgerWriter, read_ledger, trim_ledger_files

    path = tmp_path / "ledger" / "w-t0.ledger"
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:   # the writer: 50 acknowledged transactions and one left prepared, then it waits to die
        try:
            writer = LedgerWriter(path)
            for i in range(50):
                writer.acknowledge(writer.prepare([RowOp.written("kv", i, {"v": i})]))
            writer.prepare([RowOp.written("kv", 50, {"v": 50})])
            os.write(ready_w, b"x")
            time.sleep(60)
        finally:
            os._exit(1)
    try:
        assert os.read(ready_r, 1) == b"x"
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert path.read_bytes().endswith(b"\0"), "the killed writer's window is still in the file"
    ledger = read_ledger(path.parent)   # read as it was left: every line, the zeros skipped
    assert [t.state for t in ledger.transactions] == ["acked"] * 50 + ["pending"] and ledger.garbled_lines == 0
    trim_ledger_files(path.parent)
    assert path.read_bytes().endswith(b"\n") and len(_lines(path)) == 101
    assert [t.state for t in read_ledger(path.parent).transactions] == ["acked"] * 50 + ["pending"]


def test_where_the_file_cannot_be_mapped_each_line_is_written(tmp_path, monkeypatch):
    import mmap

    from walstress import ledger as ledger_module

    def refuse(*args, **kwargs):
        raise OSError(19, "No such device")   # what a file system without shared mappings says

    monkeypatch.setattr(mmap, "mmap", refuse)
    path = tmp_path / "ledger" / "w-t0.ledger"
    (path.parent).mkdir()
    path.write_bytes(b"P 1 1.000000 I1:5\nA 1 1.100000\n\0\0\0")   # a killed writer's file, reopened
    writer = ledger_module.LedgerWriter(path)
    writer.acknowledge(writer.prepare([RowOp.written("kv", "a", {"v": 1})]))
    assert len(_lines(path)) == 4, "each line is in the file as soon as it is written"
    writer.close()
    assert _lines(path)[:2] == ["P 1 1.000000 I1:5", "A 1 1.100000"] and _lines(path)[3].startswith("A 1 ")
    assert b"\0" not in path.read_bytes()


def test_history_records_from_many_threads_are_each_written_once_in_order(tmp_path):
    """Records are buffered without the lock (a deque) and their lines made at flush: threads recording at
    once, with flushes racing the appends, lose none, write none twice, and keep each thread's order."""
    import threading

    path = tmp_path / "h.jsonl"
    history = HistoryWriter(path, flush_records=7, flush_seconds=0.001)
    per_thread = 3000

    def work(index: int) -> None:
        for n in range(per_thread):
            if n % 2:
                history.record({"type": "note", "thread": index, "n": n})
            else:
                history.record_later('{{"type":"op","thread":{},"n":{}}}'.format, index, n)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    history.close()
    history.record({"type": "note", "after": "close"})   # dropped, not raised
    records = list(read_records(path))
    assert len(records) == 4 * per_thread and "after" not in records[-1]
    for index in range(4):
        assert [r["n"] for r in records if r["thread"] == index] == list(range(per_thread))


def test_without_posix_fallocate_the_ledger_file_only_grows(tmp_path, monkeypatch):
    """Where the platform has no posix_fallocate (macOS), a window is reserved by growing the file."""
    import os

    from walstress.ledger import LedgerWriter, read_ledger

    monkeypatch.delattr(os, "posix_fallocate")
    writer = LedgerWriter(tmp_path / "ledger" / "w-t0.ledger")
    writer.acknowledge(writer.prepare([RowOp.written("kv", "a", {"v": 1})]))
    assert (tmp_path / "ledger" / "w-t0.ledger").stat().st_size == LedgerWriter.CHUNK
    writer.close()
    assert [t.state for t in read_ledger(tmp_path / "ledger").transactions] == ["acked"]


def _acked(folder):
    from walstress.ledger import read_ledger

    ledger = read_ledger(folder)
    return [t.state for t in ledger.transactions], ledger.garbled_lines


def test_a_full_disk_as_a_line_crosses_windows_fails_that_line_only(tmp_path, monkeypatch):
    """No room for the next window: the line that needed it fails with nothing of it left in the file,
    the lines before it stay, and the writer carries on (a line longer than a window too) once there is."""
    import errno
    import mmap

    from walstress import ledger as ledger_module

    monkeypatch.setattr(ledger_module.LedgerWriter, "CHUNK", mmap.ALLOCATIONGRANULARITY)
    writer = ledger_module.LedgerWriter(tmp_path / "ledger" / "w-t0.ledger")
    op = [RowOp.written("kv", "k", {"v": 1})]
    while writer._at < writer.CHUNK - 200:
        writer.acknowledge(writer.prepare(op))
    before = writer.acknowledged
    reserve = ledger_module._reserve

    def full(fd, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ledger_module, "_reserve", full)
    with pytest.raises(OSError):
        writer.prepare([RowOp.written("kv", f"k{i}", {"v": i}) for i in range(8)])
    monkeypatch.setattr(ledger_module, "_reserve", reserve)
    writer.acknowledge(writer.prepare([RowOp.written("kv", f"big-{i}", {"v": "x" * 60}) for i in range(100)]))
    writer.acknowledge(writer.prepare(op))
    writer.close()
    states, garbled = _acked(tmp_path / "ledger")
    assert states == ["acked"] * (before + 2) and garbled == 0
    assert (tmp_path / "ledger" / "w-t0.ledger").read_bytes().endswith(b"\n")


def test_a_line_written_in_part_is_taken_back(tmp_path, monkeypatch):
    """Where every line is written (no map), a write that stops half way (a full disk) leaves no part of
    the line for the next one to join, and close() does not cut the lines after it."""
    import errno
    import mmap
    import os

    from walstress import ledger as ledger_module

    def refuse(*args, **kwargs):
        raise OSError(19, "No such device")

    monkeypatch.setattr(mmap, "mmap", refuse)
    writer = ledger_module.LedgerWriter(tmp_path / "ledger" / "w-t0.ledger")
    op = [RowOp.written("kv", "k", {"v": 1})]
    writer.acknowledge(writer.prepare(op))
    pwrite = os.pwrite
    calls = []

    def half_then_full(fd, data, offset):
        calls.append(len(data))
        if len(calls) == 1:
            return pwrite(fd, bytes(data)[:len(data) // 2], offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", half_then_full)
    with pytest.raises(OSError):
        writer.prepare(op)
    monkeypatch.setattr(os, "pwrite", pwrite)
    writer.acknowledge(writer.prepare(op))
    writer.close()
    assert _acked(tmp_path / "ledger") == (["acked", "acked"], 0)


def test_a_reopened_file_loses_its_torn_line_not_the_next_one(tmp_path):
    from walstress.ledger import LedgerWriter

    path = tmp_path / "ledger" / "w-t0.ledger"
    path.parent.mkdir()
    path.write_bytes(b'P 1 1.000000 J[{"a":"W","t":"kv","k":"a","c":1,"cols":["v"]}]\nA 1 1.100000\nP 2 1.2 J[{"a"')
    writer = LedgerWriter(path)
    writer.acknowledge(writer.prepare([RowOp.written("kv", "b", {"v": 2})]))
    writer.close()
    assert _acked(path.parent) == (["acked", "acked"], 0)
    assert [line[0] for line in _lines(path)] == ["P", "A", "P", "A"]
