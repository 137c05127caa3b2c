"""Known causes: what the evidence of a damaged run says did it.

The verdict says *that* a run was damaged; a cause says *why*, and only
where the evidence allows. Each rule below reads what the run left (the
lock watch's events, the power cut's record, the ledger's stale rows, the
final file's zero pages) and either names its cause, with the evidence, or
stays silent. The rules are tried in order of precedence (a lock loss
explains the deleted -wal it leads to, not the other way round); the first
that holds is *the* cause, the others are kept as further evidence. When
none holds, the cause is ``unknown``: never a guess.

Evidence must come before the damage: before SQLite's first corruption
error when a worker saw one, else before the checks at the run's end.

    two_libraries      a worker had two SQLite libraries mapped and lost its locks
    lock_lost          a worker had the database and its -shm open but no POSIX lock on one
    split_wal          one database file used with two different -shm (so two -wal) files
    deleted_wal        a worker kept using a -wal/-shm/-journal (or database) that was deleted
    sync_not_honoured  a power cut on storage that acknowledged fsync without writing through
    no_journal         journal_mode=OFF or MEMORY (with a crash before the damage, or without)
    unsynced_loss      a power cut with synchronous=OFF (or NORMAL, losses after the last sync)
    wal_reset_race     acknowledged rows came back older or mixed (pages from before their commit),
                       integrity ok, on a SQLite with the WAL-reset race (3.7.0 - 3.51.2, less the
                       backports)
    zero_filled_pages  b-tree pages of the final file are all zeros
    stale_rows         acknowledged rows came back in an older version (mechanism not told)
    unknown            none of the above

Faults add rules of their own (``faults/registry.py``, ``CAUSE_HOOKS``):
they are tried first, since a fault knows what it did.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Sequence

from walstress.checks.findings import RunEvidence
from walstress.history import first_corruption_error_at
from walstress.settings import Registry

DAMAGED = ("corrupt", "lost-writes")
LOCK_EVENTS_KEPT = 20


@dataclass(frozen=True)
class Damage:
    """When a damaged run's damage was first seen."""

    verdict: str
    t_go: float | None
    first_error_t: float | None     # SQLite's first corruption error (epoch seconds)
    end_t: float | None             # the end of the run: the checks found it there

    @property
    def deadline(self) -> float:
        """Evidence after this came too late to be a cause."""
        for t in (self.first_error_t, self.end_t):
            if t is not None:
                return t
        return float("inf")

    def at(self, t: float | None) -> str:
        """A time of the run as text: "2.31 s" after the go."""
        if t is None or self.t_go is None:
            return "an unknown time"
        offset = t - self.t_go
        if offset <= -0.005:
            return f"{-offset:.2f} s before the go"
        return f"{max(offset, 0.0):.2f} s"   # a sample taken as the go was given: 0.00, not -0.00

    def before(self, t: float) -> str:
        """", 0.42 s before the first corruption error" / ", before the checks at the end found the damage"."""
        if self.first_error_t is not None:
            gap = self.first_error_t - t
            if gap < 0:   # lock-watch evidence first seen within one sample after the error
                return (f", seen {-gap * 1000:.0f} ms after the first corruption error but within one lock-watch "
                        "sample of it: it may have come first")
            return f", {gap * 1000:.0f} ms before the first corruption error" if gap < 0.1 else \
                f", {gap:.2f} s before the first corruption error"
        return ", before the checks at the end found the damage"


@dataclass
class Cause:
    id: str
    title: str
    sentence: str
    evidence: list[str] = field(default_factory=list)
    t: float | None = None          # when its evidence was first seen

    def to_dict(self, damage: Damage | None = None) -> dict[str, Any]:
        data = asdict(self)
        data["t_s"] = round(self.t - damage.t_go, 3) if (self.t is not None and damage and damage.t_go) else None
        return data


CauseRule = Callable[[RunEvidence, Damage], "Cause | None"]
RULES: Registry[CauseRule] = Registry("cause")


def register_cause(name: str, rule: CauseRule) -> CauseRule:
    """Add a rule after the built-in ones (a fault's rules go through ``faults/registry.py``)."""
    return RULES.register(name, rule)


def unknown(damage: Damage) -> Cause:
    return Cause("unknown", "unknown", "Cause unknown: the run left no evidence of a known mechanism "
                 "(no lost lock, second -wal, deleted -wal, power cut, old version or zero page was seen before the damage).")


# ------------------------------------------------------------------ evidence
def events(run: RunEvidence, kind: str) -> list[dict[str, Any]]:
    return [r for r in run.records if r.get("type") == kind]


def lock_watch_ran(run: RunEvidence) -> bool:
    return any(r.get("type") in ("lock_watch", "locks") for r in run.records)


def _name(path: str) -> str:
    return os.path.basename(path or "") or "the database"


def _worker_versions(run: RunEvidence) -> list[str]:
    return sorted({w["sqlite_version"] for w in run.workers if w.get("sqlite_version")})


def _version_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        return ()


def has_wal_reset_race(version: str) -> bool:
    """SQLite 3.7.0 through 3.51.2, except 3.50.7+ and 3.44.6+ (the backports of the fix)."""
    v = _version_tuple(version)
    if len(v) < 3 or v < (3, 7, 0) or v > (3, 51, 2):
        return False
    if v[:2] == (3, 50) and v[2] >= 7:
        return False
    if v[:2] == (3, 44) and v[2] >= 6:
        return False
    return True


# --------------------------------------------------------------------- rules
def _two_libraries(run: RunEvidence, damage: Damage) -> Cause | None:
    """Two libraries mapped before the damage, in a process the watch saw lose its locks (at any time:
    the loss shows the mechanism at work there; the libraries were in place before the damage)."""
    seen = [r for r in events(run, "two_libraries") if r["t"] <= damage.deadline]
    if not seen:
        return None
    lost: dict[Any, dict[str, Any]] = {}
    for rec in events(run, "lock_lost"):
        lost.setdefault(rec.get("pid"), rec)
    watched = lock_watch_ran(run)
    for rec in seen:
        loss = lost.get(rec.get("pid"))
        if watched and loss is None:
            continue  # two libraries, but the watch saw this process keep its locks
        libraries = rec.get("libraries") or {}
        names = ", ".join(f"{os.path.basename(path)} ({source[:10]})" for path, source in libraries.items())
        sentence = f"{rec.get('worker')} had two SQLite libraries mapped ({names}): each keeps its own list of " \
                   "open files, so one's close() drops the other's POSIX locks"
        evidence = [rec.get("msg", "")]
        t = rec["t"]
        if loss is not None:
            when = damage.before(loss["t"]) if loss["t"] <= damage.deadline else ""
            sentence += f"; it lost its locks on {_name(loss.get('file', ''))} at {damage.at(loss['t'])}{when}"
            evidence.append(loss.get("msg", ""))
            t = min(t, loss["t"])
        return Cause("two_libraries", "two SQLite libraries in one process", sentence + ".", evidence, t)
    return None


def watch_period(run: RunEvidence) -> float:
    """Seconds between two lock-watch samples (0 when it did not run)."""
    hz = float(((run.scenario.get("lock_watch") or {}).get("hz")) or 0.0)
    return 1.0 / hz if hz > 0 else 0.0


def watch_evidence(run: RunEvidence, kind: str, damage: Damage) -> list[dict[str, Any]]:
    """The lock watch's events of ``kind`` that may have come before the damage: what it first saw at t
    happened after the sample before, up to one sampling period earlier."""
    period = watch_period(run)
    return [r for r in events(run, kind) if r["t"] - period <= damage.deadline]


def _lock_lost(run: RunEvidence, damage: Damage) -> Cause | None:
    lost = watch_evidence(run, "lock_lost", damage)
    if not lost:
        return None
    first = lost[0]
    what = "POSIX locks on" if first.get("which") == "database" else "POSIX lock on the -shm of"
    workers = sorted({r.get("worker", "?") for r in lost})
    sentence = (f"{first.get('worker')} lost its {what} {_name(first.get('file', ''))} at {damage.at(first['t'])}"
                f"{damage.before(first['t'])}")
    if len(workers) > 1:
        sentence += f" ({len(workers)} workers lost locks: {', '.join(workers[:6])})"
    evidence = [r.get("msg", "") for r in lost[:5]]
    return Cause("lock_lost", "lock loss", sentence + ".", evidence, first["t"])


def _split_wal(run: RunEvidence, damage: Damage) -> Cause | None:
    found = watch_evidence(run, "split_wal", damage)
    if not found:
        return None
    first = found[0]
    files = first.get("shm_files") or {}
    listing = "; ".join(f"{os.path.basename(path)} by {', '.join(workers)}" for path, workers in files.items())
    return Cause("split_wal", "one database, two WALs",
                 f"From {damage.at(first['t'])}{damage.before(first['t'])}, the database was used with "
                 f"{len(files)} different -shm files ({listing}): each has its own WAL index and -wal, so commits "
                 "in one are invisible to the other and their checkpoints overwrite each other.",
                 [r.get("msg", "") for r in found[:5]], first["t"])


def _deleted_wal(run: RunEvidence, damage: Damage) -> Cause | None:
    found = watch_evidence(run, "deleted_open", damage)
    cut = (_power(run) or {}).get("cut_t")
    if cut is not None:   # the power cut deletes the -shm itself (it never survives): not a cause
        found = [r for r in found if r["t"] < cut]
    if not found:
        return None
    first = found[0]
    sentence = (f"{first.get('worker')} kept using {_name(first.get('file', ''))} after it was deleted (seen at "
                f"{damage.at(first['t'])}{damage.before(first['t'])})")
    return Cause("deleted_wal", "a deleted file still in use", sentence + ".",
                 [r.get("msg", "") for r in found[:5]], first["t"])


def _power(run: RunEvidence) -> dict[str, Any] | None:
    info = run.extras.get("power_loss")
    return info if isinstance(info, dict) and info.get("cut_t") is not None else None


def _sync_not_honoured(run: RunEvidence, damage: Damage) -> Cause | None:
    info = _power(run)
    if not info or not info.get("sync_not_honoured"):
        return None
    fs = (run.scenario.get("database") or {}).get("filesystem", "native")
    return Cause("sync_not_honoured", "sync not honoured",
                 f"The power went at {damage.at(info['cut_t'])} on storage that acknowledged fsync without "
                 f"writing through (database.filesystem = {fs}): {info.get('lost', 0)} acknowledged rows lost.",
                 [f"power cut at {damage.at(info['cut_t'])}", f"{info.get('lost', 0)} rows lost"], info["cut_t"])


def _crash_times(run: RunEvidence) -> list[float]:
    """Power cuts and kills: faults that ended workers without a close."""
    return [r["t"] for r in run.records if r.get("type") == "fault"
            and r.get("name") in ("power_loss", "kill")]


def _no_journal(run: RunEvidence, damage: Damage) -> Cause | None:
    mode = str((run.scenario.get("database") or {}).get("journal_mode", "WAL")).upper()
    if mode not in ("OFF", "MEMORY"):
        return None
    crashes = [t for t in _crash_times(run) if t <= damage.deadline]
    title = f"journal_mode={mode}"
    if crashes:
        return Cause("no_journal", f"{title} and a crash",
                     f"A crash at {damage.at(crashes[0])} with journal_mode={mode}: a transaction cut in the middle "
                     "has no journal on disk to be rolled back from.",
                     [f"journal_mode={mode}", f"{len(crashes)} crash(es) before the damage"], crashes[0])
    first = damage.at(damage.first_error_t) if damage.first_error_t is not None else "the end of the run"
    return Cause("no_journal", title,
                 f"journal_mode={mode}: changes reach the database file with no rollback journal on disk; the damage "
                 f"(first seen at {first}) came before any crash.", [f"journal_mode={mode}", "no crash before the "
                                                                     "damage"])


def _unsynced_loss(run: RunEvidence, damage: Damage) -> Cause | None:
    info = _power(run)
    if not info:
        return None
    synchronous = str(info.get("synchronous") or "").upper()
    lost, after, synced = info.get("lost", 0), info.get("lost_after_last_sync", 0), info.get("lost_although_synced", 0)
    if synchronous == "OFF":
        detail = (f"{lost} acknowledged rows lost" if lost else "the database was left torn")
        return Cause("unsynced_loss", "unsynced writes lost at a power cut",
                     f"The power went at {damage.at(info['cut_t'])} with synchronous=OFF (SQLite never syncs): "
                     f"{detail}.", ["synchronous=OFF", f"lost {lost}, after the last sync {after}"], info["cut_t"])
    if synchronous == "NORMAL" and lost and after == lost and not synced:
        return Cause("unsynced_loss", "unsynced writes lost at a power cut",
                     f"The power went at {damage.at(info['cut_t'])} with synchronous=NORMAL: all {lost} lost rows "
                     "were acknowledged after the last WAL sync.",
                     ["synchronous=NORMAL", f"lost {lost}, all after the last sync"], info["cut_t"])
    return None


def _stale(run: RunEvidence) -> int:
    return int((run.results.get("ledger") or {}).get("stale_rows") or 0)


def _wal_reset_race(run: RunEvidence, damage: Damage) -> Cause | None:
    ledger = run.results.get("ledger") or {}
    changed, stale = int(ledger.get("changed_rows") or 0), _stale(run)
    integrity = run.results.get("integrity") or {}
    if not changed or not integrity.get("ok") or damage.verdict != "lost-writes" or _power(run):
        return None
    affected = [v for v in _worker_versions(run) if has_wal_reset_race(v)]
    if not affected:
        return None
    mixed = changed - stale
    what = f"{stale} in an older version" if not mixed else (
        f"{stale} in an older version, {mixed} mixed (some of their pages from before the commit)" if stale
        else f"{mixed} mixed (some of their pages from before the commit)")
    return Cause("wal_reset_race", "WAL-reset race",
                 f"{changed} acknowledged rows came back {what} while integrity_check says ok, on SQLite "
                 f"{', '.join(affected)}, which has the WAL-reset race (3.7.0 - 3.51.2; fixed in 3.51.3, 3.50.7 and "
                 "3.44.6): a checkpoint recorded a stale frame count and skipped a new WAL generation's frames.",
                 [f"{changed} rows changed ({stale} stale)", "integrity ok", f"SQLite {', '.join(affected)}"])


def zero_pages_cause(integrity: dict[str, Any] | None, whose: str = "") -> Cause | None:
    """The b-tree pages that are all zeros, as a cause (from a run's checks or from a file alone)."""
    pages = (integrity or {}).get("zero_pages") or []
    if not pages:
        return None
    shown = ", ".join(str(p) for p in pages[:8]) + (" ..." if len(pages) > 8 else "")
    return Cause("zero_filled_pages", "zero-filled pages",
                 f"{len(pages)} b-tree page(s){whose} are all zeros (pages {shown}): a write that never reached the "
                 "file, or a file extended and never filled.", [f"zero pages: {shown}"])


def _zero_pages(run: RunEvidence, damage: Damage) -> Cause | None:
    return zero_pages_cause(run.results.get("integrity"), " of the final database")


def _stale_rows(run: RunEvidence, damage: Damage) -> Cause | None:
    stale = _stale(run)
    if not stale:
        return None
    return Cause("stale_rows", "an older version came back",
                 f"{stale} acknowledged rows came back in an older version of themselves: committed changes were "
                 "undone (a frame or page from before them won); the mechanism is not told by the evidence.",
                 [f"{stale} stale rows"])


for _name_, _rule in (("two_libraries", _two_libraries), ("lock_lost", _lock_lost), ("split_wal", _split_wal),
                      ("deleted_wal", _deleted_wal),
                      ("sync_not_honoured", _sync_not_honoured), ("no_journal", _no_journal),
                      ("unsynced_loss", _unsynced_loss), ("wal_reset_race", _wal_reset_race),
                      ("zero_filled_pages", _zero_pages), ("stale_rows", _stale_rows)):
    register_cause(_name_, _rule)


# ------------------------------------------------------------------ the result
def damage_of(run: RunEvidence, verdict: str) -> Damage:
    first_error = first_corruption_error_at(run.records)
    stop = next((r["t"] for r in run.records if r.get("type") == "run_stop"), None)
    end = stop if stop is not None else (run.records[-1]["t"] if run.records else None)
    return Damage(verdict, run.t_go, first_error, end)


def lock_watch_summary(run: RunEvidence) -> dict[str, Any] | None:
    """What the lock watch saw, for run.json (None when it did not run)."""
    if not lock_watch_ran(run):
        return None
    t_go = run.t_go
    stats: dict[str, Any] = next((r for r in reversed(run.records) if r.get("type") == "lock_watch"), {})

    def kept(kind: str, fields: Sequence[str]) -> list[dict[str, Any]]:
        return [{"t_s": round(r["t"] - t_go, 3) if t_go else None, **{k: r.get(k) for k in fields}}
                for r in events(run, kind)[:LOCK_EVENTS_KEPT]]

    libraries: dict[str, dict[str, str]] = {}
    for rec in events(run, "sqlite_libraries"):
        libraries[rec.get("worker", "?")] = rec.get("libraries") or {}
    return {
        "hz": stats.get("hz"), "samples": stats.get("samples"), "cpu_s": stats.get("cpu_s"),
        "core_share": stats.get("core_share"),
        "counts": {kind: len(events(run, kind)) for kind in ("lock_lost", "lock_regained", "deleted_open",
                                                             "split_wal", "two_libraries")},
        "lock_lost": kept("lock_lost", ("worker", "pid", "file", "which", "still_held")),
        "deleted_open": kept("deleted_open", ("worker", "pid", "file")),
        "two_libraries": kept("two_libraries", ("worker", "pid", "libraries")),
        "split_wal": kept("split_wal", ("shm_files",)),
        "libraries": libraries,
    }


def attribute(run: RunEvidence, verdict: str, extra_rules: Iterable[CauseRule] = ()) -> dict[str, Any]:
    """run.json's ``cause`` (None for a run that was not damaged), ``causes`` and ``lock_watch``."""
    out: dict[str, Any] = {"lock_watch": lock_watch_summary(run), "cause": None, "causes": []}
    if verdict not in DAMAGED:
        return out
    damage = damage_of(run, verdict)
    found: list[Cause] = []
    for rule in [*extra_rules, *(entry for _, entry in RULES.items())]:
        cause = rule(run, damage)
        if cause is not None and all(c.id != cause.id for c in found):
            found.append(cause)
    primary = found[0] if found else unknown(damage)
    out["cause"] = primary.to_dict(damage)
    out["causes"] = [c.to_dict(damage) for c in found]
    return out


def cause_text(result: dict[str, Any]) -> str | None:
    """One line for a judged run: "cause: lock loss: writer-1 lost ..." (None when not damaged)."""
    cause = result.get("cause")
    if not cause:
        return None
    if cause["id"] == "unknown":
        return cause["sentence"]
    return f"Cause: {cause['title']}. {cause['sentence']}"


def file_cause(integrity: dict[str, Any] | None) -> dict[str, Any]:
    """The cause a damaged file alone shows (``walstress check``): zero-filled b-tree pages, else unknown;
    lock losses, power cuts and stale versions need a run's evidence."""
    zeros = zero_pages_cause(integrity)
    if zeros is not None:
        return {"id": zeros.id, "title": zeros.title, "sentence": zeros.sentence}
    return {"id": "unknown", "title": "unknown",
            "sentence": "Cause unknown: the file alone does not show a known mechanism (a lost lock, a deleted -wal "
                        "or a power cut leave no trace in it; run the workload under walstress to see them)."}


def hazards_seen(result: dict[str, Any]) -> str | None:
    """What the lock watch saw in a run that was not damaged: "writer-0 lost its locks on state.db at
    0.05 s; 2 deleted files in use" (None when it saw nothing)."""
    watch = result.get("lock_watch") or {}
    parts = []
    lost = watch.get("lock_lost") or []
    if lost:
        first = lost[0]
        parts.append(f"{first.get('worker')} lost its locks on {_name(first.get('file', ''))} at {first.get('t_s')} s"
                     + (f" ({watch['counts']['lock_lost']} losses)" if watch["counts"]["lock_lost"] > 1 else ""))
    for kind, text in (("deleted_open", "deleted files in use"), ("split_wal", "databases used with two -shm files"),
                       ("two_libraries", "processes with two SQLite libraries")):
        count = (watch.get("counts") or {}).get(kind, 0)
        if count:
            parts.append(f"{count} {text}")
    return "; ".join(parts) or None
