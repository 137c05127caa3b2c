"""The trace of a run, the crash states a storage model allows, and how to build one.

A *trace* (recorded by ``faults.crash_trace``) is the starting content of
the database folder plus every write, truncate, sync and delete the
workers made there, merged from all processes in CLOCK_MONOTONIC order. A
sync covers the writes of its file issued before it *began*; it counts from
the moment it *ended*.

A *cut* is a point of that order: what was issued before it happened, and
of that, a file holds for sure what its last completed sync covered (its
*durable* image); the rest of its writes are *pending*. Cuts are taken
just before every sync (the longest pending window), just after every sync,
and just after every acknowledged commit.

A *crash state* is a cut plus a choice of which pending writes reached the
disk, by class:

    prefix      every pending write persisted (all of them issued)
    none        no pending write persisted (each file at its durable image)
    omit-one    every pending write but one persisted
    reorder     one file's pending writes persisted, another's not
    torn-sector one pending write persisted only up to a 512-byte sector
    torn-page   one pending write persisted only up to a page boundary
    zero-tail   one pending write that grew its file: the new size persisted,
                the data not (zeros)
    lost-tail   (lying storage) every write from some earlier sync on lost

Storage models (``crash.model``): ``posix-weak`` allows every class above
but lost-tail; ``posix-ordered`` keeps each file's writes in order (prefix,
none, reorder, zero-tail, torn of the last write only); ``lying`` ignores
syncs (nothing is durable but the starting content: prefix, none and
lost-tail at every earlier sync). The ``-shm`` never survives.
"""

from __future__ import annotations

import bisect
import hashlib
import mmap
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from walstress.faults.trace import INITIAL_DIR, TRACE_DIR
from walstress.faults.vfs import TRACE_MAGIC, read_undo_log

MODELS = ("posix-weak", "posix-ordered", "lying")
CLASSES = ("prefix", "none", "omit-one", "reorder", "torn-sector", "torn-page", "zero-tail", "lost-tail")
MODEL_CLASSES = {   # in the order they are explored: the fewest, most telling states first
    "posix-weak": ("prefix", "none", "reorder", "zero-tail", "omit-one", "torn-page", "torn-sector"),
    "posix-ordered": ("prefix", "none", "reorder", "zero-tail", "torn-page", "torn-sector"),
    "lying": ("prefix", "none", "lost-tail"),
}
SECTOR = 512


@dataclass(frozen=True)
class Op:
    index: int        # position in the merged trace
    kind: str         # W write, T truncate, S sync, D delete
    file: str         # the file's name in the database folder ("state.db-wal")
    ns: int           # CLOCK_MONOTONIC when issued (a sync: when it began)
    end_ns: int       # a sync: when it ended; otherwise ns
    wall: float       # wall clock, seconds
    offset: int = 0   # W: where; T: the new size
    length: int = 0   # W: bytes
    source: str = ""
    data_at: int = 0  # W: where its bytes start in its trace file


@dataclass
class Trace:
    folder: Path                      # the run's crash-trace folder
    ops: list[Op]                     # W/T/D in issue order, S at their end
    initial: dict[str, bytes]         # file name -> starting content
    db_name: str
    page_size: int
    _maps: dict[str, Any] = field(default_factory=dict, repr=False)

    def data(self, op: Op) -> bytes:
        handle = self._maps.get(op.source)
        if handle is None:
            with open(op.source, "rb") as f:
                handle = self._maps[op.source] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return bytes(handle[op.data_at:op.data_at + op.length])

    def files(self) -> list[str]:
        names = dict.fromkeys([*self.initial, *(op.file for op in self.ops)])
        return [n for n in names if not n.endswith("-shm")]

    def summary(self) -> dict[str, Any]:
        counts: dict[str, dict[str, int]] = {}
        for op in self.ops:
            counts.setdefault(op.file, {}).setdefault(op.kind, 0)
            counts[op.file][op.kind] += 1
        span = (self.ops[-1].wall - self.ops[0].wall) if self.ops else 0.0
        return {"ops": len(self.ops), "by_file": counts, "seconds": round(span, 3), "page_size": self.page_size}


def load_trace(run_dir: str | Path) -> Trace:
    """The merged trace of a run dir (its crash-trace folder)."""
    folder = Path(run_dir) / TRACE_DIR
    initial_dir = folder / INITIAL_DIR
    if not initial_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} has no crash trace (run the scenario with faults.crash_trace.enabled)")
    initial = {p.name: p.read_bytes() for p in sorted(initial_dir.iterdir()) if p.is_file()
               and not p.name.endswith("-shm")}
    db_name = min((n for n in initial if "-" not in n.rsplit(".", 1)[-1]), key=len, default="state.db")
    raw = []
    for path in sorted(folder.glob("*.trace")):
        for rec in read_undo_log(path, TRACE_MAGIC):
            name = os.path.basename(rec.path)
            if name.endswith("-shm"):
                continue
            order = rec.b if rec.kind == "S" else rec.ns   # a sync counts when it ended
            raw.append((order, rec.ns, rec.seq, rec, name))
    raw.sort(key=lambda item: (item[0], item[1], item[3].source, item[2]))
    ops = []
    for index, (order, ns, _, rec, name) in enumerate(raw):
        if rec.kind == "W":
            ops.append(Op(index, "W", name, ns, ns, rec.c / 1e9, rec.a, rec.b, rec.source, rec.data_offset))
        elif rec.kind == "T":
            ops.append(Op(index, "T", name, ns, ns, rec.c / 1e9, rec.a))
        elif rec.kind == "S":
            ops.append(Op(index, "S", name, ns, order, rec.c / 1e9))
        else:
            ops.append(Op(index, "D", name, ns, ns, rec.c / 1e9))
    header = initial.get(db_name, b"")
    page_size = int.from_bytes(header[16:18], "big") if len(header) >= 18 else 4096
    page_size = 65536 if page_size == 1 else (page_size or 4096)
    return Trace(folder, ops, initial, db_name, page_size)


# ------------------------------------------------------------------- cuts
@dataclass(frozen=True)
class Cut:
    position: int        # ops[:position] happened
    reason: str          # before-sync / after-sync / after-ack
    wall: float          # wall clock at the cut


def cut_points(trace: Trace, ack_walls: list[float]) -> list[Cut]:
    """Before and after every sync, and after every acknowledged commit; in trace order, deduplicated."""
    cuts: dict[int, Cut] = {}
    ops = trace.ops
    walls = [op.wall for op in ops]
    for op in ops:
        if op.kind == "S" and op.index > 0:
            # the cut's time is that of the last operation before it (a sync's record: when it ended)
            cuts.setdefault(op.index, Cut(op.index, "before-sync", ops[op.index - 1].wall))
            cuts.setdefault(op.index + 1, Cut(op.index + 1, "after-sync", op.wall))
    for wall in ack_walls:
        position = bisect.bisect_right(walls, wall)
        cuts.setdefault(position, Cut(position, "after-ack", wall))
    return [cuts[k] for k in sorted(cuts) if 0 < k <= len(ops)]


@dataclass
class FileWindow:
    """One file at a cut: the ops that made its durable image, and the pending ones after them."""

    durable: list[Op]
    pending: list[Op]
    deleted: bool = False     # the file was deleted (durably) and not written since


def windows(trace: Trace, position: int, *, lying: bool = False) -> dict[str, FileWindow]:
    """Per file, at a cut: durable and pending ops (a delete is durable at once; with ``lying``, syncs
    make nothing durable)."""
    issued: dict[str, list[Op]] = {}
    last_sync: dict[str, Op] = {}
    for op in trace.ops[:position]:
        if op.kind == "S":
            last_sync[op.file] = op
        elif op.kind == "D":
            issued[op.file] = [op]
        else:
            issued.setdefault(op.file, []).append(op)
    out: dict[str, FileWindow] = {}
    for name in trace.files():
        ops = issued.get(name, [])
        sync = None if lying else last_sync.get(name)
        durable: list[Op] = []
        pending: list[Op] = []
        for op in ops:
            (durable if op.kind == "D" or (sync is not None and op.ns < sync.ns) else pending).append(op)
        out[name] = FileWindow(durable, pending, deleted=len(ops) == 1 and ops[0].kind == "D")
    return out


# --------------------------------------------------------------- variants
@dataclass(frozen=True)
class Variant:
    """Which pending ops persist: every pending op, except those in ``dropped``; ``keep_bytes`` cuts one
    write short (torn); ``zeros`` makes one write's data zeros; ``lost_from`` (lying) drops every op of
    a file from that index on; ``unsynced`` files keep none of their pending ops."""

    cls: str
    dropped: tuple[int, ...] = ()
    unsynced: tuple[str, ...] = ()
    torn: tuple[int, int] | None = None          # (op index, bytes that persisted)
    zeros: int | None = None                     # op index
    lost_from: int | None = None                 # op index (lying)

    def to_dict(self) -> dict[str, Any]:
        return {"cls": self.cls, "dropped": list(self.dropped), "unsynced": list(self.unsynced),
                "torn": list(self.torn) if self.torn else None, "zeros": self.zeros, "lost_from": self.lost_from}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Variant":
        return cls(data["cls"], tuple(data.get("dropped") or ()), tuple(data.get("unsynced") or ()),
                   tuple(data["torn"]) if data.get("torn") else None, data.get("zeros"), data.get("lost_from"))

    @property
    def size(self) -> int:
        """How far from "everything issued persisted" the state is (for the smallest failing state)."""
        return len(self.dropped) + len(self.unsynced) + (self.torn is not None) + (self.zeros is not None) + \
            (self.lost_from is not None)


def variants(trace: Trace, cut: Cut, model: str, wins: dict[str, FileWindow]) -> Iterator[Variant]:
    """The states a model allows at one cut, class by class (the cheapest first)."""
    classes = MODEL_CLASSES[model]
    pending = {name: w.pending for name, w in wins.items() if w.pending}
    yield Variant("prefix")
    if not pending:
        return
    if "none" in classes:
        yield Variant("none", unsynced=tuple(sorted(pending)))
    if "reorder" in classes and len(pending) > 1:
        for name in sorted(pending):
            yield Variant("reorder", unsynced=(name,))
    writes = [op for ops in pending.values() for op in ops if op.kind == "W"]
    writes.sort(key=lambda op: op.index)
    if model == "posix-ordered":
        writes = [ops[-1] for ops in pending.values() if ops and ops[-1].kind == "W"]
    if "zero-tail" in classes:
        sizes = _sizes_before(trace, wins)
        for op in writes:
            if op.offset + op.length > sizes.get(op.index, 0):
                yield Variant("zero-tail", zeros=op.index)
    if "omit-one" in classes:
        for op in writes:
            yield Variant("omit-one", dropped=(op.index,))
    if "torn-page" in classes:
        for op in writes:
            for keep in range(trace.page_size, op.length, trace.page_size):
                yield Variant("torn-page", torn=(op.index, keep))
    if "torn-sector" in classes:
        for op in writes:
            for keep in range(SECTOR, op.length, SECTOR):
                if keep % trace.page_size:
                    yield Variant("torn-sector", torn=(op.index, keep))
    if "lost-tail" in classes:
        syncs = [op for op in trace.ops[:cut.position] if op.kind == "S"]
        for sync in syncs:
            yield Variant("lost-tail", lost_from=sync.index)


def _sizes_before(trace: Trace, wins: dict[str, FileWindow]) -> dict[int, int]:
    """For each pending write: its file's size just before it was issued."""
    out: dict[int, int] = {}
    for name, win in wins.items():
        size = 0 if win.deleted else len(trace.initial.get(name, b""))
        for op in win.durable + win.pending:
            if op.kind == "D":
                size = 0
            elif op.kind == "T":
                size = op.offset
            elif op.kind == "W":
                out[op.index] = size
                size = max(size, op.offset + op.length)
    return out


# ------------------------------------------------------------ materialize
@dataclass
class Built:
    files: dict[str, bytes | None]   # name -> content (None: the file does not exist)
    key: str                         # a hash of every file's content
    file_keys: dict[str, str]        # name -> a hash of its content
    base_keys: dict[str, str] = field(default_factory=dict)   # name -> key of its durable image
    touched: dict[str, list[tuple[int, int]]] = field(default_factory=dict)   # name -> (offset, length) written
                                                                              # over the durable image


class Builder:
    """Builds states; keeps each file's durable image between calls, so that states taken in the
    order of their cuts cost the pending writes only (and a file that has none costs nothing)."""

    def __init__(self, trace: Trace):
        self.trace = trace
        self._images: dict[str, tuple[tuple[int, ...], bytes | None, str]] = {}   # name -> (op ids, content, hash)

    def durable(self, name: str, win: FileWindow) -> tuple[bytes | None, str]:
        ids = tuple(op.index for op in win.durable)
        cached = self._images.get(name)
        if cached is not None and cached[0] == ids:
            return cached[1], cached[2]
        if cached is not None and ids[:len(cached[0])] == cached[0] and cached[1] is not None:
            data: bytearray | None = bytearray(cached[1])
            todo = win.durable[len(cached[0]):]
        else:
            start = self.trace.initial.get(name)
            data = bytearray(start) if start is not None else None
            todo = win.durable
        for op in todo:
            data = _apply_op(self.trace, data, op, Variant("prefix"))
        content = bytes(data) if data is not None else None
        digest = _digest(content)
        self._images[name] = (ids, content, digest)
        return content, digest

    def build(self, cut: Cut, variant: Variant, wins: dict[str, FileWindow]) -> Built:
        files: dict[str, bytes | None] = {}
        keys: dict[str, str] = {}
        bases: dict[str, str] = {}
        touched: dict[str, list[tuple[int, int]]] = {}
        for name in sorted(wins):
            win = wins[name]
            base, digest = self.durable(name, win)
            bases[name] = digest
            chosen = [] if name in variant.unsynced else [
                op for op in win.pending if op.index not in variant.dropped
                and not (variant.lost_from is not None and op.index >= variant.lost_from)]
            if not chosen:
                files[name], keys[name] = base, digest
                continue
            data = bytearray(base) if base is not None else None
            for op in chosen:
                data = _apply_op(self.trace, data, op, variant)
            touched[name] = [(op.offset, op.length) if op.kind == "W" else (op.offset, -1) for op in chosen
                             if op.kind != "D"]
            content = bytes(data) if data is not None else None
            files[name], keys[name] = content, _digest(content)
        total = hashlib.blake2b(digest_size=16)
        for name in sorted(keys):
            total.update(f"{name}={keys[name]};".encode())
        return Built(files, total.hexdigest(), keys, bases, touched)


def _digest(content: bytes | None) -> str:
    return "-" if content is None else hashlib.blake2b(content, digest_size=16).hexdigest()


def _apply_op(trace: Trace, data: bytearray | None, op: Op, variant: Variant) -> bytearray | None:
    if op.kind == "D":
        return None
    data = bytearray() if data is None else data
    if op.kind == "T":
        del data[op.offset:]
        return data
    chunk = trace.data(op)
    if variant.torn is not None and variant.torn[0] == op.index:
        chunk = chunk[:variant.torn[1]]
    if variant.zeros == op.index:
        chunk = bytes(len(chunk))
    if len(data) < op.offset:
        data.extend(bytes(op.offset - len(data)))
    data[op.offset:op.offset + len(chunk)] = chunk
    return data


def write_state(built: Built, folder: Path, *, keep: dict[str, str] | None = None) -> dict[str, str]:
    """Put the state's files in ``folder``; anything else there (the -shm included) is removed. A file
    whose content key is the same as in ``keep`` (what the folder holds now) is not written again.
    Returns what the folder holds."""
    folder.mkdir(parents=True, exist_ok=True)
    keep = dict(keep or {})
    for path in folder.iterdir():
        if path.is_file() and built.files.get(path.name) is None:
            path.unlink()
            keep.pop(path.name, None)
    for name, content in built.files.items():
        if content is None:
            keep.pop(name, None)
            continue
        if keep.get(name) != built.file_keys[name]:
            (folder / name).write_bytes(content)
            keep[name] = built.file_keys[name]
    return keep
