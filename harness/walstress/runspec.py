"""The run contract: what the controller tells each worker process.

A :class:`WorkerSpec` is built once by the controller, written to
``specs/<stem>.json`` and read back by the worker through the same type;
nothing changes it afterwards (a restarted worker gets a new spec through
:meth:`WorkerSpec.reincarnated`). Every path a worker needs comes from the
run's :class:`~walstress.layout.RunLayout`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from walstress.layout import RunLayout
from walstress.scenario import CheckpointSettings, Scenario

SPEC_FORMAT = 2
_SEED_STEP = 7919  # a restarted incarnation draws other random streams than the one it replaces


@dataclass(frozen=True)
class ConnectionOptions:
    """How every worker connection is opened and set up."""

    driver: str
    expected_sqlite_version: str
    busy_timeout_ms: int
    synchronous: str
    mmap_size: int
    wal_autocheckpoint: int
    journal_size_limit: int
    foreign_keys: bool
    extra_pragmas: tuple[str, ...] = ()  # asked for by fault sections (faults.fsync)
    journal_mode: str = "WAL"            # WAL is a property of the file; the others are set per connection
    cache_size: int = 0                  # 0: SQLite's default

    def pragmas(self) -> list[str]:
        out = []
        if self.journal_mode != "WAL":
            out.append(f"PRAGMA journal_mode={self.journal_mode}")
        if self.cache_size:
            out.append(f"PRAGMA cache_size={int(self.cache_size)}")
        if self.synchronous != "default":
            out.append(f"PRAGMA synchronous={self.synchronous}")
        if self.mmap_size:
            out.append(f"PRAGMA mmap_size={int(self.mmap_size)}")
        out.append(f"PRAGMA wal_autocheckpoint={int(self.wal_autocheckpoint)}")
        if self.journal_size_limit != -1:
            out.append(f"PRAGMA journal_size_limit={int(self.journal_size_limit)}")
        out.append(f"PRAGMA foreign_keys={'ON' if self.foreign_keys else 'OFF'}")
        out.extend(self.extra_pragmas)
        return out

    @classmethod
    def of(cls, scenario: Scenario, extra_pragmas: list[str]) -> "ConnectionOptions":
        db = scenario.database
        return cls(driver=scenario.sqlite.driver, expected_sqlite_version=scenario.sqlite.version,
                   busy_timeout_ms=db.busy_timeout_ms, synchronous=db.synchronous, mmap_size=db.mmap_size,
                   wal_autocheckpoint=db.wal_autocheckpoint, journal_size_limit=db.journal_size_limit,
                   foreign_keys=db.foreign_keys, extra_pragmas=tuple(extra_pragmas), journal_mode=db.journal_mode,
                   cache_size=db.cache_size)


@dataclass(frozen=True)
class TemplateFacts:
    """What the controller read from the fresh copy of the template before the run."""

    journal_mode: str
    id_range: tuple[int, int]       # min and max messages.id
    session_ids: tuple[str, ...]    # recent sessions, for writers and readers to pick from
    pages: int


@dataclass(frozen=True)
class WorkerSpec:
    name: str                       # writer-0
    role: str
    group: str                      # the workers' group name ("" when it is the role)
    actor: str                      # "module:Class" that plays the role
    settings_class: str             # "module:Class" of the role's WorkerSettings dataclass
    role_file: str                  # the file of that module (for roles registered outside walstress)
    settings: dict[str, Any]        # the role's settings, as data
    writes_ledger: bool             # its commits go through the ledger (what the role tells the checks)
    run_dir: str
    seed: int
    duration: float
    parent_pid: int
    schema: str
    database_seed: int
    connection: ConnectionOptions
    checkpoint: CheckpointSettings
    facts: TemplateFacts
    partition: tuple[int, int]      # (first index, total): template rows with id % total == index + thread
    sqlite_paths: tuple[str, ...] = ()
    python_path: tuple[str, ...] = ()   # folders for the scenario's own code (its file's folder, the working one)
    db_file: str = ""                   # where the database is opened, when not the run dir's db/ (a mount)
    faults: dict[str, dict[str, Any]] = field(default_factory=dict)
    incarnation: int = 0
    format: int = SPEC_FORMAT

    # ---------------------------------------------------------------- paths
    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.run_dir)

    @property
    def stem(self) -> str:
        """This incarnation's file name stem: ``writer-0``, or ``writer-0.i1`` after a restart."""
        return self.name if self.incarnation == 0 else f"{self.name}.i{self.incarnation}"

    @property
    def db_path(self) -> str:
        """Where this worker opens the database (through a mount when the file system is FUSE)."""
        return self.db_file or str(self.layout.db_path)

    @property
    def threads(self) -> int:
        return int(self.settings.get("threads", 1))

    def ledger_path(self, thread_index: int) -> Path:
        return self.layout.ledger(self.stem, thread_index)

    # ------------------------------------------------------------ lifecycle
    def reincarnated(self, incarnation: int) -> "WorkerSpec":
        """The spec of a new process for the same worker (after a kill): own files, own random streams."""
        return dataclasses.replace(self, incarnation=incarnation, seed=self.seed + _SEED_STEP * incarnation)

    # ---------------------------------------------------------- serialising
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WorkerSpec":
        if data.get("format") != SPEC_FORMAT:
            raise ValueError(f"worker spec format {data.get('format')!r}, expected {SPEC_FORMAT}")
        values = dict(data)
        connection = dict(values["connection"])
        connection["extra_pragmas"] = tuple(connection.get("extra_pragmas") or ())
        values["connection"] = ConnectionOptions(**connection)
        values["checkpoint"] = CheckpointSettings(**values["checkpoint"])
        facts = dict(values["facts"])
        values["facts"] = TemplateFacts(journal_mode=facts["journal_mode"], id_range=tuple(facts["id_range"]),
                                        session_ids=tuple(facts["session_ids"]), pages=int(facts["pages"]))
        values["partition"] = tuple(values["partition"])
        values["sqlite_paths"] = tuple(values.get("sqlite_paths") or ())
        values["python_path"] = tuple(values.get("python_path") or ())
        return cls(**values)

    def write(self) -> Path:
        path = self.layout.spec(self.stem)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def read(cls, path: str | Path) -> "WorkerSpec":
        return cls.from_dict(json.loads(Path(path).read_text()))


def worker_summaries(layout: RunLayout) -> list[dict[str, Any]]:
    """What the judge needs of each worker a run started (first incarnations, by name), from the specs of
    this format or of the first one (run dirs written before the run contract was typed)."""
    out: dict[str, dict[str, Any]] = {}
    entry: dict[str, Any]
    for path in sorted(layout.specs_dir.glob("*.json")):
        try:
            data = json.loads(path.read_text())
            if data.get("format") == SPEC_FORMAT:
                spec = WorkerSpec.from_dict(data)
                entry = {"name": spec.name, "role": spec.role, "threads": spec.threads,
                         "expected_sqlite_version": spec.connection.expected_sqlite_version,
                         "driver": spec.connection.driver, "writes_ledger": spec.writes_ledger}
            else:  # format 1: the role's settings under "worker", the connection's at the top
                entry = {"name": data["name"], "role": data["role"], "threads": data["worker"]["threads"],
                         "expected_sqlite_version": data.get("expected_sqlite_version", "system"),
                         "driver": data.get("driver"),
                         "writes_ledger": data["role"] in ("writer", "wal-reset-race")}
        except (ValueError, KeyError, TypeError):
            continue
        out.setdefault(str(entry["name"]), entry)
    return list(out.values())


def read_specs(layout: RunLayout) -> list[WorkerSpec]:
    """Every spec a run wrote (first incarnations and restarts), by file name."""
    specs = []
    for path in sorted(layout.specs_dir.glob("*.json")):
        try:
            specs.append(WorkerSpec.read(path))
        except (ValueError, KeyError, TypeError):
            continue  # a spec of another format: not this run's workers
    return specs
