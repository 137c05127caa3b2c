"""What programs and people do to a database's files: the file mechanisms of SQLite's
"How To Corrupt An SQLite Database File", each with its control.

faults.backup_copy     copy the database at ``at`` while the writes go on, as a backup job
                       would: ``"db-only"`` (the database file alone, no -wal), ``"staggered"``
                       (the database, then its -wal ``stagger_ms`` later), or one of the two ways
                       SQLite documents as safe, ``"backup-api"`` and ``"vacuum-into"``, run by a
                       process of their own. The *copy* is judged, as a restored backup would be:
                       ``integrity_check``, and every row acknowledged before the copy began (and
                       not changed after) must be in it.
faults.journal_tamper  a crash at ``at`` (every worker SIGKILLed; in rollback mode at the first
                       moment from then on that a -journal exists), then the hot journal (the
                       -journal, or the -wal in WAL mode) is deleted, renamed, replaced by another
                       database's hot journal (``"foreign"``), or kept (``"keep"``, the control).
                       The final database is judged as the next program to open it sees it.
faults.db_alias        the workers of ``roles`` open the database through another name: a hard
                       link (SQLite names the -wal and -shm after the name it is given, so they
                       get WAL files of their own) or a symbolic link (SQLite follows it: the
                       control).
faults.db_replace      at the times of a schedule the database is unlinked, renamed, or replaced
                       by a copy of itself (copied, then renamed over it: a restore, or an editor's
                       "atomic save") while connections have it open.
faults.stray_write     a thread in each worker of ``roles`` closes its log file's descriptor, opens
                       a database connection (SQLite takes the lowest free number: that one) and
                       keeps writing log lines to the old number ("stale"): they land in the
                       database. The control (``"own"``) opens its log again for every line. The
                       thread writes only when /proc says the number really is the database's.

Each records what it did as ``fault`` records, has a cause rule for the
damage it leaves (``CAUSES``), and backup_copy a judge hook for its copies.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

from walstress.checks.causes import Cause, Damage, watch_evidence
from walstress.checks.findings import Finding, RunEvidence
from walstress.faults.base import Fault, FaultSettings, RunControl, setting
from walstress.faults.schedule import (
    ScheduledFault,
    applies_to,
    check_roles,
    check_schedule,
    parse_names,
    parse_times,
    start_counted,
)
from walstress.layout import RunLayout
from walstress.runspec import WorkerSpec

BACKUP_METHODS = ("db-only", "staggered", "backup-api", "vacuum-into")
SAFE_BACKUPS = ("backup-api", "vacuum-into")
_NATIVE_ONLY = ("native", "tmpfs")


def _journal_path(db: str, journal_mode: str) -> str:
    return db + ("-wal" if journal_mode == "WAL" else "-journal")


def _size(path: str | Path) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _fault_records(run: RunEvidence, name: str) -> list[dict[str, Any]]:
    return [r for r in run.records if r.get("type") == "fault" and r.get("name") == name]


# ------------------------------------------------------------------ backup copy
@dataclass
class BackupCopySettings(FaultSettings):
    section: ClassVar[str] = "backup_copy"
    enabled: bool = setting(False, doc="copy the database while the writes go on, and judge the copy")
    method: str = setting("db-only", choices=BACKUP_METHODS, doc="how the copy is made")
    at: str = setting("", doc='when, after go (default: half way through the run), e.g. "2.5s"; several: "2, 4"')
    stagger_ms: int = setting(300, min=0, max=600_000, kind="ms", doc='"staggered": the -wal this long after the db')

    def validate(self, scenario: Any) -> None:
        if not self.enabled:
            return
        try:
            parse_times(self.at)
        except ValueError as exc:
            raise ValueError(f"faults.backup_copy.at: {self.at!r} is not a list of times ({exc})") from None
        if self.method == "staggered" and scenario.database.journal_mode != "WAL":
            raise ValueError('faults.backup_copy.method = "staggered" copies the -wal: it needs journal_mode = "WAL"')

    def build(self, scenario: Any, seed: int) -> Fault | None:
        return BackupCopyFault(self) if self.enabled else None


_SAFE_COPY = """
import sqlite3, sys
source, target, method = sys.argv[1], sys.argv[2], sys.argv[3]
src = sqlite3.connect(source, timeout=30)
if method == "vacuum-into":
    src.execute("VACUUM INTO ?", (target,))
else:
    dst = sqlite3.connect(target)
    src.backup(dst)
    dst.close()
src.close()
"""


class BackupCopyFault(Fault):
    """Copies the database at the ``at`` times; each copy in its own folder under ``backups/``."""

    name = "backup_copy"

    def __init__(self, settings: BackupCopySettings):
        self.settings = settings
        self.times: list[float] = []
        self.done = 0
        self.child: subprocess.Popen | None = None

    def start(self, run: RunControl) -> None:
        times = parse_times(self.settings.at) or [run.duration / 2]
        self.times = [t for t in times if t < run.duration]

    def tick(self, run: RunControl) -> None:
        while self.done < len(self.times) and time.time() >= run.t_go + self.times[self.done]:
            self.copy(run, self.done)
            self.done += 1

    def copy(self, run: RunControl, n: int) -> None:
        method = self.settings.method
        folder = run.layout.fault_dir("backups") / f"copy-{n}"
        folder.mkdir(parents=True, exist_ok=True)
        source = str(run.db_path)
        target = folder / os.path.basename(source)
        t0 = time.time()
        detail: dict[str, Any] = {"method": method, "copy_dir": str(folder.relative_to(run.layout.run_dir))}
        try:
            if method in SAFE_BACKUPS:
                self.child = subprocess.Popen([sys.executable, "-c", _SAFE_COPY, source, str(target), method],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                _, err = self.child.communicate(timeout=max(30.0, run.duration))
                if self.child.returncode != 0:
                    raise RuntimeError((err or "").strip().splitlines()[-1] if err else f"exit {self.child.returncode}")
            else:
                shutil.copyfile(source, target)  # what `cp state.db backup/` does
                detail["db_bytes"] = _size(target)
                if method == "staggered":
                    time.sleep(self.settings.stagger_ms / 1000.0)
                    detail["wal_bytes"] = _size(source + "-wal")
                    if detail["wal_bytes"] is not None:
                        shutil.copyfile(source + "-wal", str(target) + "-wal")
            detail["outcome"] = "ok"
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
            detail["outcome"] = f"error: {exc}"
        finally:
            self.child = None
        self.record(run, t=t0, t_end=time.time(), target=os.path.basename(source), **detail)

    def stop(self, run: RunControl) -> None:
        child = self.child
        if child is not None and child.poll() is None:
            child.kill()
            child.wait(timeout=30)


def judge_backup_copies(run: RunEvidence) -> list[Finding]:
    """Each copy as a restored backup: integrity_check, and the rows acknowledged before it began."""
    copies = [r for r in _fault_records(run, "backup_copy") if (r.get("detail") or {}).get("outcome") == "ok"]
    if not copies:
        return []
    from walstress.checks.integrity import integrity_findings, run_integrity
    from walstress.checks.ledger import check_ledger

    t_go = run.t_go or 0.0
    summary, findings = [], []
    for rec in copies:
        detail = rec["detail"]
        db = run.layout.run_dir / detail["copy_dir"] / run.layout.db_path.name
        integrity = run_integrity(db).to_dict()
        ledger = check_ledger(db, run.layout.ledger_dir, until=rec["t"])
        when = f"the {detail['method']} backup copy taken at {rec['t'] - t_go:.2f} s"
        summary.append({"t_s": round(rec["t"] - t_go, 3), "method": detail["method"], "integrity_ok": integrity["ok"],
                        "checked_rows": ledger.acked_writes, "lost": ledger.lost, "copy_dir": detail["copy_dir"]})
        for finding in integrity_findings(integrity, "backup_copy"):
            findings.append(Finding("backup_copy", finding.verdict, f"{when}: {finding.reason}"))
        if ledger.error:
            findings.append(Finding("backup_copy", "corrupt", f"{when}: its rows cannot be read: {ledger.error}"))
        elif ledger.lost:
            findings.append(Finding("backup_copy", "lost-writes",
                                    f"{when} lacks {ledger.lost} of the {ledger.acked_writes} rows acknowledged "
                                    "before it began"))
    run.extras["backup_copies"] = summary
    return findings


def backup_cause(run: RunEvidence, damage: Damage) -> Cause | None:
    bad = [c for c in run.extras.get("backup_copies") or [] if not c["integrity_ok"] or c["lost"]]
    if not bad:
        return None
    first = bad[0]
    how = {"db-only": "copied the database file without its -wal",
           "staggered": "copied the database file and its -wal at different moments"}.get(
        first["method"], f"copied it with {first['method']}")
    return Cause("backup_copy", "a backup copied while writes went on",
                 f"The backup at {first['t_s']:.2f} s {how} while the writes went on: the copy "
                 + ("fails integrity_check" if not first["integrity_ok"] else
                    f"lacks {first['lost']} rows acknowledged before it began") + ".",
                 [f"{c['method']} copy at {c['t_s']} s: integrity {'ok' if c['integrity_ok'] else 'failed'}, "
                  f"{c['lost']} of {c['checked_rows']} rows missing" for c in bad])


# --------------------------------------------------------------- journal tamper
@dataclass
class JournalTamperSettings(FaultSettings):
    section: ClassVar[str] = "journal_tamper"
    enabled: bool = setting(False, doc="crash every worker, then do `action` to the hot journal")
    action: str = setting("delete", choices=("delete", "rename", "foreign", "keep"),
                          doc="what happens to the hot -journal/-wal after the crash")
    at: str = setting("2s", doc="when the crash comes, after go")
    wait_hot_ms: int = setting(5000, min=0, max=600_000, kind="ms",
                               doc="from `at`, wait this long at most for a journal to exist before crashing")

    def validate(self, scenario: Any) -> None:
        if not self.enabled:
            return
        times = parse_times(self.at)
        if len(times) != 1:
            raise ValueError(f'faults.journal_tamper.at: {self.at!r}: one time, e.g. "2s"')
        if times[0] >= scenario.duration:
            raise ValueError(f"faults.journal_tamper.at: {self.at!r} is not before the end of the run "
                             f"(duration {scenario.duration:g} s)")

    def build(self, scenario: Any, seed: int) -> Fault | None:
        return JournalTamperFault(self, scenario.database.journal_mode) if self.enabled else None

    def prepare_files(self, db_path: Path, layout: RunLayout) -> None:
        if self.enabled and self.action == "foreign":
            make_foreign_journal(db_path, layout.fault_dir("foreign"), "WAL" if _wal_header(db_path) else "DELETE")


def _wal_header(db_path: Path) -> bool:
    """The database file's header says WAL (read and write versions 2)."""
    with open(db_path, "rb") as handle:
        header = handle.read(20)
    return len(header) == 20 and header[18] == 2


def make_foreign_journal(db_path: Path, folder: Path, journal_mode: str) -> Path:
    """Another database's hot journal: a copy of the run's database, changed in a transaction whose
    journal (or -wal) is saved while it is hot. Its path (``folder/foreign-journal``)."""
    import sqlite3

    folder.mkdir(parents=True, exist_ok=True)
    other = folder / "other.db"
    shutil.copyfile(db_path, other)
    saved = folder / "foreign-journal"
    conn = sqlite3.connect(other, isolation_level=None)
    try:
        if journal_mode == "WAL":
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA wal_autocheckpoint=0")
            conn.execute("CREATE TABLE walstress_foreign(x BLOB)")
            for _ in range(20):
                conn.execute("INSERT INTO walstress_foreign VALUES (randomblob(3000))")
            shutil.copyfile(str(other) + "-wal", saved)
        else:
            conn.execute("PRAGMA journal_mode=DELETE")
            conn.execute("PRAGMA cache_size=2")  # spill: the journal is synced and the file written mid-way
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("CREATE TABLE walstress_foreign(x BLOB)")
            for _ in range(60):
                conn.execute("INSERT INTO walstress_foreign VALUES (randomblob(3000))")
            shutil.copyfile(str(other) + "-journal", saved)
            conn.execute("ROLLBACK")
    finally:
        conn.close()
    return saved


class JournalTamperFault(Fault):
    name = "journal_tamper"

    def __init__(self, settings: JournalTamperSettings, journal_mode: str):
        self.settings = settings
        self.journal_mode = journal_mode
        self.done = False

    def tick(self, run: RunControl) -> None:
        if self.done:
            return
        now = time.time()
        start = run.t_go + parse_times(self.settings.at)[0]
        if now < start:
            return
        journal = _journal_path(str(run.db_path), self.journal_mode)
        waited_out = now >= start + self.settings.wait_hot_ms / 1000.0
        if not (_size(journal) or 0) and not waited_out:
            return  # no journal yet: wait for one (a transaction in flight)
        self.done = True
        codes = run.kill(run.workers())
        size = _size(journal)
        detail: dict[str, Any] = {"action": self.settings.action, "journal": os.path.basename(journal),
                                  "journal_bytes": size, "hot": bool(size), "killed": sorted(codes),
                                  "waited_s": round(now - start, 3)}
        try:
            if self.settings.action == "delete" and size is not None:
                os.unlink(journal)
            elif self.settings.action == "rename" and size is not None:
                os.rename(journal, journal + ".moved")
            elif self.settings.action == "foreign":
                shutil.copyfile(run.layout.fault_dir("foreign") / "foreign-journal", journal)
                detail["foreign_bytes"] = _size(journal)
            detail["outcome"] = "ok"
        except OSError as exc:
            detail["outcome"] = f"error: {exc}"
        self.record(run, t=now, t_end=time.time(), target=os.path.basename(journal), **detail)


def journal_cause(run: RunEvidence, damage: Damage) -> Cause | None:
    for rec in _fault_records(run, "journal_tamper"):
        detail = rec.get("detail") or {}
        if detail.get("action") == "keep" or detail.get("outcome") != "ok" or not detail.get("hot"):
            continue
        what = {"delete": "deleted", "rename": "renamed",
                "foreign": "replaced by another database's hot journal"}[detail["action"]]
        t = (rec["t"] - run.t_go) if run.t_go else 0.0
        return Cause("journal_tampered", "a hot journal deleted, renamed or mispaired",
                     f"After the crash at {t:.2f} s the hot {detail['journal']} ({detail['journal_bytes']} bytes) "
                     f"was {what}: the next open could not roll back or recover from it.",
                     [f"{detail['journal']} {what}"], rec["t"])
    return None


# -------------------------------------------------------------------- db alias
@dataclass
class DbAliasSettings(FaultSettings):
    section: ClassVar[str] = "db_alias"
    enabled: bool = setting(False, doc="the workers of `roles` open the database through another name")
    kind: str = setting("hardlink", choices=("hardlink", "symlink"), doc="what the other name is")
    roles: str = setting("opener", doc="comma-separated roles or groups that use the other name")

    def validate(self, scenario: Any) -> None:
        check_roles("db_alias", "roles", self.roles, scenario)
        if self.enabled and scenario.database.filesystem not in _NATIVE_ONLY:
            raise ValueError(f"faults.db_alias needs database.filesystem = native or tmpfs, not "
                             f"{scenario.database.filesystem}")

    def alias(self, db_path: Path | str) -> Path:
        path = Path(db_path)
        return path.with_name(f"{path.stem}-alias{path.suffix}")

    def prepare_files(self, db_path: Path, layout: RunLayout) -> None:
        if not self.enabled:
            return
        alias = self.alias(db_path)
        if self.kind == "hardlink":
            os.link(db_path, alias)
        else:
            os.symlink(db_path.name, alias)

    def worker_db_path(self, name: str, role: str, group: str, path: str) -> str | None:
        if not self.enabled:
            return None
        names = parse_names(self.roles)
        return str(self.alias(path)) if role in names or (group and group in names) else None


def alias_cause(run: RunEvidence, damage: Damage) -> Cause | None:
    settings = (run.scenario.get("faults") or {}).get("db_alias") or {}
    if not settings.get("enabled") or settings.get("kind") != "hardlink":
        return None
    splits = [r for r in run.records if r.get("type") == "split_wal"]
    evidence = [f"faults.db_alias: {settings.get('kind')} for {settings.get('roles')}"]
    if splits:
        evidence.append(splits[0].get("msg", ""))
    return Cause("db_alias", "one database under two names",
                 f"The workers of {settings.get('roles')} opened the database through a hard link: SQLite names "
                 "the -wal and -shm after the name it is given, so they had a WAL of their own"
                 + (f" (the lock watch saw the two -shm files from {splits[0]['t'] - (run.t_go or 0):.2f} s)"
                    if splits else "") + ".", evidence)


# ------------------------------------------------------------------- db replace
@dataclass
class DbReplaceSettings(FaultSettings):
    section: ClassVar[str] = "db_replace"
    enabled: bool = setting(False, doc="unlink, rename or replace the database file while it is in use")
    action: str = setting("replace", choices=("unlink", "rename", "replace"),
                          doc="replace: copy it, then rename the copy over it (a new file at the same name)")
    at: str = setting("", doc='times after go, e.g. "2, 5.5s"')
    every_ms: int = setting(0, min=0, max=86_400_000, kind="ms", doc="act every interval (0: off)")
    random_count: int = setting(0, min=0, max=10_000, doc="act this many times at seeded random times")

    def validate(self, scenario: Any) -> None:
        if self.enabled:
            check_schedule("db_replace", self.at, self.every_ms, self.random_count)
            if scenario.database.filesystem not in _NATIVE_ONLY:
                raise ValueError(f"faults.db_replace needs database.filesystem = native or tmpfs, not "
                                 f"{scenario.database.filesystem}")

    def build(self, scenario: Any, seed: int) -> Fault | None:
        return DbReplaceFault(self, seed) if self.enabled else None


class DbReplaceFault(ScheduledFault):
    name = "db_replace"

    def tick(self, run: RunControl) -> None:
        for n in self.due(run, time.time()):
            db = str(run.db_path)
            t0 = time.time()
            detail: dict[str, Any] = {"action": self.settings.action, "db_bytes": _size(db)}
            try:
                if self.settings.action == "unlink":
                    os.unlink(db)
                elif self.settings.action == "rename":
                    os.rename(db, f"{db}.moved-{n}")
                else:
                    staged = f"{db}.new-{n}"
                    shutil.copyfile(db, staged)
                    os.rename(staged, db)
                detail["outcome"] = "ok"
            except OSError as exc:
                detail["outcome"] = f"error: {exc}"
            self.record(run, t=t0, t_end=time.time(), target=os.path.basename(db), **detail)

    def stop(self, run: RunControl) -> None:
        for offset in self.missed():
            t = run.t_go + offset
            self.record(run, t=t, t_end=t, target=os.path.basename(str(run.db_path)), action=self.settings.action,
                        outcome="skipped", reason="the run ended first")


def replace_cause(run: RunEvidence, damage: Damage) -> Cause | None:
    done = [r for r in _fault_records(run, "db_replace") if (r.get("detail") or {}).get("outcome") == "ok"
            and r["t"] <= damage.deadline]
    if not done or watch_evidence(run, "deleted_open", damage) or watch_evidence(run, "split_wal", damage):
        return None  # the lock watch's evidence (in time) names it better
    first = done[0]
    t = first["t"] - run.t_go if run.t_go else 0.0
    return Cause("db_replaced", "the database unlinked, renamed or replaced in use",
                 f"At {t:.2f} s the database file was {first['detail']['action']}d while connections had it open.",
                 [f"{r['detail']['action']} at {r['t'] - (run.t_go or 0):.2f} s" for r in done[:5]], first["t"])


# ------------------------------------------------------------------ stray write
@dataclass
class StrayWriteSettings(FaultSettings):
    section: ClassVar[str] = "stray_write"
    enabled: bool = setting(False, doc="a thread writes through a descriptor it has closed")
    mode: str = setting("stale", choices=("stale", "own"), doc="own: the thread reopens its own file (the control)")
    roles: str = setting("writer", doc="comma-separated roles or groups whose processes have the thread")
    interval_ms: int = setting(200, min=1, max=3_600_000, kind="ms", doc="one close-open-write round this often")
    bytes: int = setting(64, min=1, max=4096, doc="bytes a stray write puts down")

    def validate(self, scenario: Any) -> None:
        check_roles("stray_write", "roles", self.roles, scenario)

    def install_in_worker(self, spec: WorkerSpec, history: Any, stop: threading.Event) -> Callable[[], None] | None:
        if not self.enabled or not applies_to(self.roles, spec):
            return None
        return _stray_thread(self, spec, history, stop)


_FD_LOCK = threading.Lock()


def _stray_thread(settings: StrayWriteSettings, spec: WorkerSpec, history: Any,
                  stop: threading.Event) -> Callable[[], None]:
    from walstress.sqlite.driver import connect

    log = spec.layout.control_file(f"stray-{spec.stem}.log")
    db = os.path.realpath(spec.db_path)
    rng = random.Random(f"{spec.seed}:{spec.name}:stray_write")
    payload = f"stray log line from {spec.name}\n".encode() * 128

    def reuse() -> tuple[int, Any]:
        """Close the log's descriptor, then open a connection: SQLite takes the lowest free number."""
        with _FD_LOCK:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.close(fd)                                  # closed, but the number is kept (the bug)
            conn = connect(spec.db_path, driver=spec.connection.driver,
                           busy_timeout_ms=spec.connection.busy_timeout_ms)
        conn.execute("SELECT count(*) FROM sqlite_master")  # the connection is in use, and stays open
        return fd, conn

    def write_once(fd: int) -> str:
        data = payload[:settings.bytes]
        if settings.mode == "own":
            own = os.open(log, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(own, data)
            finally:
                os.close(own)
            return "own file"
        try:
            target = os.path.realpath(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            return "closed (not written)"
        if target != db:
            return "elsewhere (not written)"
        size = os.fstat(fd).st_size
        raw = os.pread(fd, 2, 16)
        page = 65536 if raw == b"\x00\x01" else int.from_bytes(raw, "big") or 4096
        if size <= 2 * page or page <= settings.bytes + 8:
            return "database too small"
        offset = rng.randrange(1, size // page) * page + rng.randrange(8, page - settings.bytes)
        os.pwrite(fd, data, offset)
        return "landed in the database"

    def loop(local: threading.Event, count: Callable[[str], None]) -> None:
        try:
            fd, conn = reuse()
        except Exception as exc:  # an SQLite error opening: counted, and nothing else done
            count(f"error: {type(exc).__name__}")
            return
        try:
            while not local.wait(settings.interval_ms / 1000.0):
                count(write_once(fd))
        finally:
            conn.close()

    return start_counted("stray_write", spec, history, {"mode": settings.mode, "bytes": settings.bytes}, stop, loop)


def stray_cause(run: RunEvidence, damage: Damage) -> Cause | None:
    landed = [r for r in _fault_records(run, "stray_write")
              if ((r.get("detail") or {}).get("outcomes") or {}).get("landed in the database")
              and r["t"] <= damage.deadline]
    if not landed:
        return None
    count = sum(r["detail"]["outcomes"]["landed in the database"] for r in landed)
    first = landed[0]
    t = first["t"] - run.t_go if run.t_go else 0.0
    return Cause("stray_write", "a write through a closed-then-reused descriptor",
                 f"From {t:.2f} s, {first.get('target')} wrote {count} times through a descriptor it had closed; "
                 "SQLite had opened the database on that number, so the writes landed in it.",
                 [f"{count} stray writes into the database"], first["t"])


CAUSES = {"backup_copy": backup_cause, "journal_tampered": journal_cause, "db_alias": alias_cause,
          "db_replaced": replace_cause, "stray_write": stray_cause}

__all__ = ["BackupCopySettings", "JournalTamperSettings", "DbAliasSettings", "DbReplaceSettings",
           "StrayWriteSettings", "judge_backup_copies", "make_foreign_journal", "CAUSES"]
