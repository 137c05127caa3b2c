"""Scenario model: TOML file -> validated dataclasses.

Every key has a default. A key is written in dotted form (``checkpoint.mode``)
on the command line (``--set``) and in ``[matrix]``; in the file it is the
usual TOML table form. Worker entries (``[[workers]]``) are addressed as
``workers.<role>.<key>`` and apply to every entry of that role.

Errors raise :class:`ScenarioError` naming the file, the key and what is
allowed; the command line turns it into one line and exit code 2.

The model knows its own keys only. Fault sections and worker roles come
from a :class:`Catalog` handed in by the layer that composes them
(``walstress.catalog``): each fault module and each role module declares
its settings dataclass next to its implementation, and the scenario
checks a file against whatever the catalog holds.

Per-cell expectations: ``expect``/``expect_fraction`` hold for every cell
unless an ``[[expect_when]]`` rule matches the cell. Each rule is
``match = {"KEY" = value, ...}`` (dotted keys, values checked like any
setting), ``expect = "..."``, an optional ``fraction`` and an optional
``cause`` and ``cause_fraction`` (what that share of the damaged runs must
be attributed to, like ``expect_cause``/``expect_cause_fraction``); the first rule whose every key equals the cell's value
sets that cell's expectation (rules win over ``expect``, also over ``--set
expect=...``)::

    [[expect_when]]
    match = {"faults.lock_breaker.enabled" = true}
    expect = "damaged"
    fraction = 0.8
    cause = "lock_lost"

Checkpoint strategies (``checkpoint.*``): ``mode`` x trigger, where the
trigger is ``every_writes`` (on each writer's own connection), checkpointer
workers (``interval_ms``), ``on_close``, ``after_fts_maintenance`` (writers
run FTS5 ``'optimize'`` or ``('merge', fts_merge_pages)`` every
``fts_every_writes`` commits, then checkpoint), or none of them with
``mode = "NONE"`` (only ``database.wal_autocheckpoint``).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from walstress.errors import ScenarioError
from walstress.loading import LoadError, ensure_on_path, load_object
from walstress.storage import FILESYSTEMS, unavailable
from walstress.settings import (
    Registry,
    SettingError,
    coerce_value,
    did_you_mean,
    field_named,
    field_type,
    parse_set_value,
    resolve_path,
    setting,
    setting_meta,
    tomllib,
)

CHECKPOINT_MODES = ("PASSIVE", "FULL", "RESTART", "TRUNCATE", "NONE")
LOCKING_VFS = ("unix", "unix-dotfile", "unix-excl", "unix-none")
VERDICTS = ("clean", "lost-writes", "corrupt", "errors")
EXPECTATIONS = VERDICTS + ("damaged", "any")


@dataclass
class SqliteSettings:
    driver: str = setting("stdlib", choices=("stdlib", "apsw"), doc="which Python binding loads SQLite")
    version: str = setting("system", doc='"system" or an SQLite version X.Y.Z (apsw driver)')


@dataclass
class DatabaseSettings:
    pages: int = setting(65536, min=8, max=4_000_000, doc="template size in pages")
    page_size: int = setting(4096, choices=(512, 1024, 2048, 4096, 8192, 16384, 32768, 65536))
    schema: str = setting("hermes", choices=("hermes", "minimal"))
    seed: int = setting(0, min=0, doc="seed of the template's synthetic content")
    journal_mode: str = setting("WAL", choices=("WAL", "DELETE", "TRUNCATE", "PERSIST", "MEMORY", "OFF"),
                                doc="WAL is kept in the file; the rollback modes are set on every connection")
    cache_size: int = setting(0, min=-1_000_000_000, max=1_000_000_000,
                              doc="PRAGMA cache_size of every worker connection (pages, or -KiB); 0: SQLite's default")
    synchronous: str = setting("default", choices=("default", "OFF", "NORMAL", "FULL", "EXTRA"))
    mmap_size: int = setting(0, min=0, kind="bytes")
    wal_autocheckpoint: int = setting(1000, min=0)
    busy_timeout_ms: int = setting(1000, min=0, max=600_000, kind="ms")
    journal_size_limit: int = setting(-1, min=-1, kind="bytes")
    foreign_keys: bool = setting(True)
    filesystem: str = setting("native", choices=FILESYSTEMS, doc="where the database lives: the run dir, tmpfs, "
                                                                 "or a FUSE mount (see storage/)")
    shm_guests: str = setting("", doc="fuse-split-shm: groups or roles on the guest side (default: every other "
                                      "worker)")
    template: str = setting("", kind="path", doc="your database file: the template is a consistent copy of it "
                                                 "(what its -wal holds included); the file is never written")
    schema_sql: str = setting("", kind="path", doc="a file of CREATE statements to build the template from")
    fill: str = setting("", kind="code", doc='fills a schema_sql database to `pages`: "fill.sql" (statements '
                                             'with generated :parameters) or "file.py:function" (fill(conn, rng, '
                                             'target_pages))')
    fill_rows: int = setting(100, min=1, max=1_000_000, doc="fill.sql: times each statement runs per round")
    verify: str = setting("", kind="entry", doc='"file.py:function" that reads acknowledged rows back itself: '
                                                'verify(db_path, expected) -> refs missing or stale')

    @property
    def builtin_schema(self) -> bool:
        """True when the template is one of walstress's own schemas (not the user's file or DDL)."""
        return not (self.template or self.schema_sql)


@dataclass
class CheckpointSettings:
    mode: str = setting("PASSIVE", choices=CHECKPOINT_MODES)
    every_writes: int = setting(0, min=0, doc="writers checkpoint on their own connection every N commits (0: off)")
    interval_ms: int = setting(1000, min=1, max=3_600_000, kind="ms", doc="period of checkpointer workers")
    on_close: bool = setting(False, doc="checkpoint with the mode before closing a connection")
    fts_maintenance: str = setting("none", choices=("none", "optimize", "merge"),
                                   doc="writers run FTS5 'optimize' or ('merge', fts_merge_pages) on every FTS table")
    fts_merge_pages: int = setting(500, min=1, max=1_000_000, doc="N of INSERT INTO fts(fts, rank) VALUES('merge', N)")
    fts_every_writes: int = setting(200, min=1, doc="FTS5 maintenance every N commits of each writer thread")
    after_fts_maintenance: bool = setting(False, doc="checkpoint with the mode right after each FTS5 maintenance")


@dataclass
class SearchSettings:
    """What ``walstress search`` explores (``[search]``): see search/space.py."""

    runs: int = setting(1, min=1, max=100, doc="runs per example; an example fails when one of them does")
    expect: str = setting("clean", choices=EXPECTATIONS, doc="the property: every run's verdict meets it (a run "
                                                            "that ends in errors is reported, not a failure)")
    max_examples: int = setting(100, min=1, max=1_000_000, doc="examples to try at the most")
    budget: float = setting(900.0, min=1.0, max=7 * 86400, kind="duration", doc="time to look for a failure")
    confirm_runs: int = setting(5, min=1, max=1000, doc="runs that judge each shrink step")
    confirm_min: int = setting(2, min=1, max=1000, doc="failing runs (of confirm_runs) a shrink step must keep")
    shrink_budget: float = setting(1800.0, min=0.0, max=7 * 86400, kind="duration", doc="time to shrink a failure")
    faults: list = setting([], kind="list", doc="fault sections that are each maybe on (their `enabled` key)")
    vary: dict = setting({}, kind="table", doc='key = [values] | {min = a, max = b} | "any"')

    @property
    def active(self) -> bool:
        return bool(self.vary or self.faults)


@dataclass
class CrashSettings:
    """What ``walstress crash`` explores (``[crash]``): see crash/."""

    model: str = setting("posix-weak", choices=("posix-weak", "posix-ordered", "lying"),
                         doc="which crash states the storage allows: any reordering between syncs, each file's "
                             "writes in order, or syncs that do nothing")
    max_states: int = setting(20000, min=1, max=10_000_000, doc="distinct crash states to check at the most")
    budget: float = setting(600.0, min=1.0, max=7 * 86400, kind="duration", doc="time to check states")
    jobs: int = setting(0, min=0, max=1024, doc="checking processes (0: one per core)")
    after_cut: str = setting("none", choices=("none", "delete-journal"),
                             doc="delete-journal: the hot journal (-journal or -wal) is gone before the reopen")
    classes: list = setting([], kind="list", doc="the classes of states to explore (default: all the model's)")


@dataclass
class LockWatchSettings:
    """The kernel's view of SQLite's locks during a run (``[lock_watch]``): see lockwatch.py."""

    hz: float = setting(20.0, min=0.0, max=200.0, doc="samples of /proc/locks and the workers' descriptors a "
                                                      "second; 0 turns the watch off")
    libraries_every: float = setting(1.0, min=0.1, max=3600.0, kind="duration",
                                     doc="how often each worker's mapped SQLite libraries are read")


@dataclass
class WorkerSettings:
    """What every ``[[workers]]`` entry has. A role's module derives its own settings from this
    class (its fields become ``workers.<role>.<key>``) and may say, in class variables, what
    the role contributes to the checks."""

    # its commits go through the ledger: a whole run without one acknowledged write says "errors"
    writes_ledger: ClassVar[bool] = False
    # it updates and deletes template rows: the template's ids are split among such threads
    shares_template_rows: ClassVar[bool] = False
    # it runs checkpoint.fts_maintenance
    runs_fts_maintenance: ClassVar[bool] = False

    role: str = setting("writer", doc="the worker role")
    group: str = setting("", doc="a name for these workers (default: the role): they are named <group>-<n>, and "
                                 "faults name them by it (roles, target)")
    count: int = setting(1, min=0, max=256)
    connection: str = setting("persistent", choices=("persistent", "per-op"))
    threads: int = setting(1, min=1, max=64)
    pause_ms: int = setting(0, min=0, max=600_000, kind="ms", doc="sleep between operations")
    vfs: str = setting("unix", choices=LOCKING_VFS, doc="SQLite's locking protocol for these workers' connections: "
                                                        "POSIX locks (unix), lock files (unix-dotfile), an "
                                                        "exclusive open (unix-excl) or none (unix-none)")

    def validate(self, scenario: "Scenario") -> None:
        """Raise SettingError (or ValueError) for a combination this role cannot run."""

    def required_tables(self, scenario: "Scenario") -> tuple[str, ...]:
        """Tables this role reads or writes; a template without them cannot run it."""
        return ()

    def expects_writes(self) -> bool:
        """Whether this worker's acknowledged writes are expected in the ledger: when every such worker
        of a finished run acknowledged none, the run says "errors"."""
        return type(self).writes_ledger


@dataclass(frozen=True)
class Catalog:
    """What a scenario may name besides its own keys: fault sections and worker roles,
    each a settings dataclass."""

    fault_sections: Registry[type]
    roles: Registry[type[WorkerSettings]]
    default_workers: tuple[tuple[str, int], ...] = (("writer", 2), ("reader", 1))

    def __deepcopy__(self, memo: dict) -> "Catalog":  # shared by every copy of a scenario
        return self


@dataclass
class Scenario:
    name: str = setting("scenario")
    description: str = setting("")
    seed: int = setting(0, min=0)
    duration: float = setting(30.0, min=0.1, max=7 * 86400, kind="duration")
    repeat: int = setting(1, min=1, max=10_000)
    expect: str = setting("clean", choices=EXPECTATIONS)
    expect_fraction: float = setting(1.0, min=0.0, max=1.0, doc="share of a cell's runs that must match expect")
    expect_cause: str = setting("", doc="the cause (checks/causes.py) that expect_cause_fraction of the damaged runs "
                                        "must be attributed to; empty: any")
    expect_cause_fraction: float = setting(0.8, min=0.0, max=1.0, doc="share of a cell's damaged runs that must be "
                                                                      "attributed to expect_cause")
    sqlite: SqliteSettings = field(default_factory=SqliteSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    checkpoint: CheckpointSettings = field(default_factory=CheckpointSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    lock_watch: LockWatchSettings = field(default_factory=LockWatchSettings)
    crash: CrashSettings = field(default_factory=CrashSettings)
    faults: dict[str, Any] = field(default_factory=dict)
    workers: list[WorkerSettings] = field(default_factory=list)
    matrix: dict[str, list[Any]] = field(default_factory=dict)
    expect_when: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""
    catalog: Catalog | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------ views
    def to_dict(self) -> dict:
        data = {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)
                if f.name not in ("source", "catalog")}
        for name in _SECTIONS:
            data[name] = dataclasses.asdict(getattr(self, name))
        data["workers"] = [dataclasses.asdict(w) for w in self.workers]
        data["faults"] = {name: dataclasses.asdict(section) for name, section in self.faults.items()}
        return data

    def flat(self) -> dict[str, Any]:
        """Every scalar key in dotted form (fault sections present in the scenario included)."""
        out: dict[str, Any] = {}
        for key in _SCALAR_TOP:
            out[key] = getattr(self, key)
        for section in _SECTIONS:
            for f in dataclasses.fields(_SECTIONS[section]):
                out[f"{section}.{f.name}"] = getattr(getattr(self, section), f.name)
        for key, value in self.faults.items():
            out[f"faults.{key}"] = value
        return out

    def get(self, key: str) -> Any:
        return self.flat()[key]

    def workers_of(self, name: str) -> list[WorkerSettings]:
        """The active entries of a role, or of a group."""
        return [w for w in self.workers if name in (w.role, w.group) and w.count > 0]

    def active_workers(self) -> list[WorkerSettings]:
        return [w for w in self.workers if w.count > 0]

    def worker_names(self) -> list[tuple[str, WorkerSettings]]:
        """Every worker process of the scenario: (``<group>-<index>``, its settings), numbered per group
        (the group is the role unless an entry names one)."""
        names = []
        counters: dict[str, int] = {}
        for spec in self.workers:
            group = spec.group or spec.role
            for _ in range(spec.count):
                index = counters.get(group, 0)
                counters[group] = index + 1
                names.append((f"{group}-{index}", spec))
        return names

    def role_names(self) -> tuple[str, ...]:
        return _catalog(self).roles.names()

    def group_names(self) -> tuple[str, ...]:
        """The names faults may use for a set of workers: every role, and every group of the scenario."""
        groups = [w.group for w in self.workers if w.group]
        return tuple(dict.fromkeys([*self.role_names(), *groups]))


_SECTIONS: dict[str, type] = {
    "sqlite": SqliteSettings,
    "database": DatabaseSettings,
    "checkpoint": CheckpointSettings,
    "search": SearchSettings,
    "lock_watch": LockWatchSettings,
    "crash": CrashSettings,
}
_SCALAR_TOP = ("name", "description", "seed", "duration", "repeat", "expect", "expect_fraction", "expect_cause",
               "expect_cause_fraction")


def _catalog(scenario: Scenario) -> Catalog:
    if scenario.catalog is None:
        raise RuntimeError("this scenario was built without a catalog of faults and roles "
                           "(use walstress.load_scenario or walstress.catalog.scenario_from_dict)")
    return scenario.catalog


# ------------------------------------------------------------------- key table
def known_keys(catalog: Catalog) -> list[str]:
    keys = list(_SCALAR_TOP)
    for section, cls in _SECTIONS.items():
        keys += [f"{section}.{f.name}" for f in dataclasses.fields(cls)]
    for section, cls in catalog.fault_sections.items():
        keys += [f"faults.{section}.{f.name}" for f in dataclasses.fields(cls)]
    for role, role_cls in catalog.roles.items():
        keys += [f"workers.{role}.{f.name}" for f in dataclasses.fields(role_cls) if f.name != "role"]
    return keys


def _unknown(source: str, key: str, candidates: list[str]) -> ScenarioError:
    return ScenarioError(source, key, f"unknown key{did_you_mean(key, candidates)}")


def _set_checked(source: str, key: str, target: Any, f: dataclasses.Field, value: Any, *, from_text: bool) -> None:
    try:
        checked = coerce_value(f, value, from_text=from_text)
    except ValueError as exc:
        shown = json.dumps(value) if not isinstance(value, str) or not from_text else value
        raise ScenarioError(source, key, f"{shown} is not allowed; expected {exc}") from None
    kind = setting_meta(f).get("kind")
    if kind in ("path", "entry", "code"):  # relative to the scenario file (to the working folder for --set)
        checked = resolve_path(checked, base_dir_of(source), kind)
    setattr(target, f.name, checked)


def base_dir_of(source: str) -> Path:
    """The folder relative paths of a scenario are taken from: its file's, else the working folder."""
    path = Path(source)
    if source and not source.startswith(("<", "--")) and path.is_file():
        return path.resolve().parent
    return Path.cwd()


# ------------------------------------------------------------------ assembling
def _flatten_table(table: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten_table(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _set_sqlite_library(scenario: Scenario, value: Any, source: str) -> None:
    """The key ``sqlite`` sets driver and version at once, so one matrix axis can
    mix them: "stdlib" (the system SQLite), "apsw" (the installed apsw) or an
    SQLite version such as "3.51.2" (apsw built with that SQLite)."""
    text = value.strip().strip('"') if isinstance(value, str) else None
    if text in ("stdlib", "system"):
        driver, version = "stdlib", "system"
    elif text == "apsw":
        driver, version = "apsw", "system"
    elif text is not None and re.fullmatch(r"3\.\d+\.\d+", text):
        driver, version = "apsw", text
    else:
        shown = json.dumps(value) if not isinstance(value, str) else value
        raise ScenarioError(source, "sqlite", f'{shown} is not allowed; expected "stdlib", "apsw" or an SQLite '
                                              'version such as "3.51.3" (loaded through apsw)')
    scenario.sqlite.driver = driver
    scenario.sqlite.version = version


def apply_setting(scenario: Scenario, key: str, value: Any, *, source: str, from_text: bool = False) -> None:
    """Set one dotted key on a scenario, checking it."""
    catalog = _catalog(scenario)
    parts = key.split(".")
    top = parts[0]
    if len(parts) == 1 and top in _SCALAR_TOP:
        _set_checked(source, key, scenario, _known_field(Scenario, top), value, from_text=from_text)
        return
    if key == "sqlite":
        _set_sqlite_library(scenario, value, source)
        return
    if top in _SECTIONS and len(parts) == 2:
        f = field_named(_SECTIONS[top], parts[1])
        if f is not None:
            _set_checked(source, key, getattr(scenario, top), f, value, from_text=from_text)
            return
    if top == "faults" and len(parts) == 3 and parts[1] in catalog.fault_sections:
        cls = catalog.fault_sections.get(parts[1])
        f = field_named(cls, parts[2])
        if f is not None:
            section = scenario.faults.get(parts[1])
            if section is None:
                section = scenario.faults[parts[1]] = cls()
            _set_checked(source, key, section, f, value, from_text=from_text)
            return
    if top == "workers" and len(parts) == 3:
        _set_worker_key(scenario, catalog, key, value, source=source, from_text=from_text)
        return
    raise _unknown(source, key, known_keys(catalog))


def _set_worker_key(scenario: Scenario, catalog: Catalog, key: str, value: Any, *, source: str,
                    from_text: bool) -> None:
    """``workers.<role>.<name>``: set on every entry of that role (count creates one)."""
    _, role, name = key.split(".")
    if role not in catalog.roles:
        roles = catalog.roles.names()
        raise ScenarioError(source, key, f"unknown worker role '{role}'{did_you_mean(role, roles)} "
                                         f"(roles: {', '.join(roles)})")
    cls = catalog.roles.get(role)
    f = field_named(cls, name)
    if f is None or name == "role":
        raise _role_key_error(source, key, role, name, catalog)
    entries = [w for w in scenario.workers if w.role == role]
    if not entries:
        if name == "count" and not from_text and value == 0:
            return
        if name != "count":
            raise ScenarioError(source, key, f"the scenario has no {role} workers; set workers.{role}.count first")
        entries = [cls(role=role)]
        scenario.workers.append(entries[0])
    for entry in entries:
        _set_checked(source, key, entry, f, value, from_text=from_text)


def _role_key_error(source: str, key: str, role: str, name: str, catalog: Catalog,
                    shown_key: str | None = None) -> ScenarioError:
    """An unknown worker key: a setting of other roles says so, else "did you mean"."""
    owners = [other for other, cls in catalog.roles.items() if field_named(cls, name) is not None]
    if owners and name != "role":
        return ScenarioError(source, shown_key or key, f"'{name}' is a setting of the role(s) {', '.join(owners)}, "
                                                       f"not of {role}")
    own = [f.name for f in dataclasses.fields(catalog.roles.get(role)) if f.name != "role"]
    prefix = (shown_key or key).rsplit(".", 1)[0]
    return _unknown(source, shown_key or key, [f"{prefix}.{n}" for n in own])


def _known_field(cls: type, name: str) -> dataclasses.Field:
    """The field ``name`` of ``cls``, which the code names and so must exist."""
    f = field_named(cls, name)
    if f is None:
        raise LookupError(f"{cls.__name__} has no field {name!r}")
    return f


def _build_worker(source: str, index: int, table: Any, catalog: Catalog) -> WorkerSettings:
    where = f"workers[{index}]"
    roles = catalog.roles.names()
    if not isinstance(table, dict):
        raise ScenarioError(source, where, "each [[workers]] entry must be a table")
    if "role" not in table:
        raise ScenarioError(source, f"{where}.role", "missing; one of " + ", ".join(roles))
    role = table["role"]
    if not isinstance(role, str) or role not in catalog.roles:
        hint = did_you_mean(role, roles) if isinstance(role, str) else ""
        raise ScenarioError(source, f"{where}.role", f"{json.dumps(role)} is not allowed; expected one of "
                                                     f"{', '.join(roles)}{hint}")
    cls = catalog.roles.get(role)
    spec = cls(role=role)
    for name, value in table.items():
        if name == "role":
            continue
        f = field_named(cls, name)
        if f is None:
            raise _role_key_error(source, f"workers.{role}.{name}", role, name, catalog,
                                  shown_key=f"{where}.{name}")
        _set_checked(source, f"{where}.{name}", spec, f, value, from_text=False)
    return spec


def _default_workers(catalog: Catalog) -> list[WorkerSettings]:
    return [catalog.roles.get(role)(role=role, count=count) for role, count in catalog.default_workers
            if role in catalog.roles]


def scenario_from_dict(data: dict, *, catalog: Catalog, source: str = "<dict>",
                       default_name: str = "scenario") -> Scenario:
    """Build a Scenario from a parsed TOML-like dict. Raises ScenarioError."""
    if not isinstance(data, dict):
        raise ScenarioError(source, None, "a scenario must be a table")
    data = copy.deepcopy(data)
    scenario = Scenario(name=default_name, source=source, catalog=catalog)
    workers = data.pop("workers", None)
    matrix = data.pop("matrix", {})
    faults = data.pop("faults", {})
    search = data.pop("search", {})
    expect_when = data.pop("expect_when", [])
    if workers is None:
        scenario.workers = _default_workers(catalog)
    else:
        if not isinstance(workers, list):
            raise ScenarioError(source, "workers", "must be an array of tables ([[workers]])")
        scenario.workers = [_build_worker(source, i, t, catalog) for i, t in enumerate(workers)]
    for key, value in _flatten_table(data).items():
        apply_setting(scenario, key, value, source=source)
    if not isinstance(search, dict):
        raise ScenarioError(source, "search", "must be a table")
    for key, value in search.items():  # search.vary is one table of dotted keys: not flattened
        apply_setting(scenario, f"search.{key}", value, source=source)
    if not isinstance(faults, dict):
        raise ScenarioError(source, "faults", "must be a table")
    for key, value in _flatten_table(faults, "faults.").items():
        apply_setting(scenario, key, value, source=source)
    if not isinstance(matrix, dict):
        raise ScenarioError(source, "matrix", "must be a table of key = [values]")
    for key, values in _flatten_matrix(matrix).items():
        add_matrix_axis(scenario, key, values, source=source)
    scenario.expect_when = _build_expect_when(scenario, expect_when, source)
    validate(scenario)
    return scenario


def key_value(scenario: Scenario, key: str) -> Any:
    """The value of one dotted key (fault keys and workers.<role>.<key> included)."""
    parts = key.split(".")
    sections = _catalog(scenario).fault_sections
    if parts[0] == "faults" and len(parts) == 3 and parts[1] in sections:
        section = scenario.faults.get(parts[1]) or sections.get(parts[1])()
        return getattr(section, parts[2])
    if parts[0] == "workers" and len(parts) == 3:
        entries = [w for w in scenario.workers if w.role == parts[1]]
        if not entries:
            return 0 if parts[2] == "count" else None
        return getattr(entries[0], parts[2])
    if key == "sqlite":  # the combined key, as _set_sqlite_library reads it
        if scenario.sqlite.driver == "stdlib":
            return "stdlib"
        return "apsw" if scenario.sqlite.version == "system" else scenario.sqlite.version
    return scenario.get(key)


def _build_expect_when(scenario: Scenario, rules: Any, source: str) -> list[dict]:
    """[[expect_when]] tables -> [{"match": {key: value}, "expect": str, "fraction": float | None}]."""
    if not isinstance(rules, list):
        raise ScenarioError(source, "expect_when", "must be an array of tables ([[expect_when]])")
    out = []
    for index, rule in enumerate(rules):
        where = f"expect_when[{index}]"
        if not isinstance(rule, dict):
            raise ScenarioError(source, where, "each [[expect_when]] entry must be a table")
        unknown = sorted(set(rule) - {"match", "expect", "fraction", "cause", "cause_fraction"})
        if unknown:
            raise ScenarioError(source, f"{where}.{unknown[0]}",
                                "unknown key; allowed: match, expect, fraction, cause, cause_fraction")
        match = rule.get("match")
        if not isinstance(match, dict) or not match:
            raise ScenarioError(source, f"{where}.match", 'must be a non-empty table such as {"checkpoint.mode" = "TRUNCATE"}')
        checked: dict[str, Any] = {}
        for key, value in _flatten_table(match).items():
            probe = copy.deepcopy(scenario)
            try:
                apply_setting(probe, key, value, source=source)
            except ScenarioError as exc:
                raise ScenarioError(source, f"{where}.match.{key}", exc.message) from None
            checked[key] = key_value(probe, key)
        if "expect" not in rule:
            raise ScenarioError(source, f"{where}.expect", "missing; one of " + ", ".join(EXPECTATIONS))
        try:
            expect = coerce_value(_known_field(Scenario, "expect"), rule["expect"])
        except ValueError as exc:
            raise ScenarioError(source, f"{where}.expect", f"{json.dumps(rule['expect'])} is not allowed; expected {exc}") from None
        fraction = None
        if "fraction" in rule:
            try:
                fraction = coerce_value(_known_field(Scenario, "expect_fraction"), rule["fraction"])
            except ValueError as exc:
                raise ScenarioError(source, f"{where}.fraction", f"{json.dumps(rule['fraction'])} is not allowed; expected {exc}") from None
        cause = rule.get("cause")
        if cause is not None and not (isinstance(cause, str) and re.fullmatch(r"[a-z][a-z0-9_]*", cause)):
            raise ScenarioError(source, f"{where}.cause", f"{json.dumps(cause)}: the name of a cause, such as "
                                                          '"lock_lost"')
        cause_fraction = None
        if "cause_fraction" in rule:
            try:
                cause_fraction = coerce_value(_known_field(Scenario, "expect_cause_fraction"), rule["cause_fraction"])
            except ValueError as exc:
                raise ScenarioError(source, f"{where}.cause_fraction",
                                    f"{json.dumps(rule['cause_fraction'])} is not allowed; expected {exc}") from None
        out.append({"match": checked, "expect": expect, "fraction": fraction, "cause": cause,
                    "cause_fraction": cause_fraction})
    return out


def _apply_expect_when(cell_scenario: Scenario, rules: list[dict]) -> None:
    """The first rule whose every match key equals the cell's value sets the cell's expectation."""
    for rule in rules:
        if all(key_value(cell_scenario, key) == value for key, value in rule["match"].items()):
            cell_scenario.expect = rule["expect"]
            if rule.get("fraction") is not None:
                cell_scenario.expect_fraction = rule["fraction"]
            if rule.get("cause") is not None:
                cell_scenario.expect_cause = rule["cause"]
            if rule.get("cause_fraction") is not None:
                cell_scenario.expect_cause_fraction = rule["cause_fraction"]
            return


def _flatten_matrix(matrix: dict) -> dict[str, Any]:
    # [matrix] accepts both "checkpoint.mode" = [...] and checkpoint = {mode = [...]}
    out: dict[str, Any] = {}
    for key, value in matrix.items():
        if isinstance(value, dict):
            for sub, subvalue in _flatten_matrix(value).items():
                out[f"{key}.{sub}"] = subvalue
        else:
            out[key] = value
    return out


def add_matrix_axis(scenario: Scenario, key: str, values: Any, *, source: str) -> None:
    where = f"matrix.{key}"
    if not isinstance(values, list) or not values:
        raise ScenarioError(source, where, "must be a non-empty list of values")
    if key in ("name", "description", "repeat", "matrix") or key.startswith("search."):
        raise ScenarioError(source, where, f"{key} cannot vary in a matrix")
    checked = []
    for value in values:
        probe = copy.deepcopy(scenario)
        try:
            apply_setting(probe, key, value, source=source)
        except ScenarioError as exc:
            raise ScenarioError(source, where, exc.message) from None
        # the combined key keeps its words ("system", "3.51.2"): they name the cells
        checked.append(value.strip() if key == "sqlite" and isinstance(value, str) else key_value(probe, key))
    scenario.matrix[key] = checked


def validate(scenario: Scenario) -> None:
    """Combinations that cannot work: the scenario's own, then each role's and each fault section's."""
    src = scenario.source
    if scenario.sqlite.driver == "stdlib" and scenario.sqlite.version != "system":
        raise ScenarioError(src, "sqlite.version", f'"{scenario.sqlite.version}" needs sqlite.driver = "apsw"; the stdlib driver uses the system SQLite ("system")')
    if scenario.sqlite.version != "system" and not re.fullmatch(r"3\.\d+\.\d+", scenario.sqlite.version):
        raise ScenarioError(src, "sqlite.version", f'"{scenario.sqlite.version}" is not "system" nor a version like "3.51.3"')
    active = scenario.active_workers()
    if not active:
        raise ScenarioError(src, "workers", "no workers with count > 0")
    ck = scenario.checkpoint
    if ck.after_fts_maintenance and ck.fts_maintenance == "none":
        raise ScenarioError(src, "checkpoint.after_fts_maintenance", 'is true but checkpoint.fts_maintenance is "none"')
    if ck.after_fts_maintenance and ck.mode == "NONE":
        raise ScenarioError(src, "checkpoint.after_fts_maintenance", 'is true but checkpoint.mode is "NONE"')
    _validate_database(scenario)
    _validate_search(scenario)
    _validate_locking(scenario)
    roles = scenario.role_names()
    for worker in scenario.workers:
        if worker.group and (worker.group in roles and worker.group != worker.role
                             or not re.fullmatch(r"[A-Za-z0-9_.]+(-[A-Za-z0-9_.]+)*", worker.group)):
            raise ScenarioError(src, f"workers.{worker.role}.group", f"{worker.group!r}: a name of letters, digits, "
                                                                     "_ . and - that is not another role's")
    if ck.fts_maintenance != "none" and not any(type(w).runs_fts_maintenance for w in active):
        raise ScenarioError(src, "checkpoint.fts_maintenance", "is done by writers, but the scenario has no "
                                                               "writer workers")
    for item in [*active, *scenario.faults.values()]:
        check = getattr(item, "validate", None)
        if check is None:
            continue
        try:
            check(scenario)
        except SettingError as exc:
            raise ScenarioError(src, exc.key, exc.message) from None
        except ValueError as exc:
            raise ScenarioError(src, None, str(exc)) from None


def _validate_database(scenario: Scenario) -> None:
    src, db = scenario.source, scenario.database
    why = unavailable(db.filesystem)
    if why:
        raise ScenarioError(src, "database.filesystem", f'"{db.filesystem}" cannot be had here: {why}')
    if db.filesystem == "fuse-split-shm" and db.mmap_size:
        raise ScenarioError(src, "database.mmap_size", "is not 0, but fuse-split-shm keeps the database out of the "
                                                       "page cache (so that both views read the same bytes), which "
                                                       "memory mapping needs")
    if db.shm_guests and db.filesystem != "fuse-split-shm":
        raise ScenarioError(src, "database.shm_guests", 'names the guest side of filesystem = "fuse-split-shm"')
    if db.template and db.schema_sql:
        raise ScenarioError(src, "database.schema_sql", "and database.template both say where the template comes "
                                                        "from; set one")
    for key, value in (("database.template", db.template), ("database.schema_sql", db.schema_sql)):
        if value and not Path(value).is_file():
            raise ScenarioError(src, key, f"{value}: no such file")
    if db.fill and not db.schema_sql:
        raise ScenarioError(src, "database.fill", "fills a database built from database.schema_sql; set it too")
    if db.fill and ":" not in Path(db.fill).name and not Path(db.fill).is_file():
        raise ScenarioError(src, "database.fill", f"{db.fill}: no such file")
    for key, value in (("database.fill", db.fill if ":" in Path(db.fill).name else ""),
                       ("database.verify", db.verify)):
        if value:
            ensure_on_path(user_code_path(scenario))
            try:
                function = load_object(value)
            except LoadError as exc:
                raise ScenarioError(src, key, str(exc)) from None
            if not callable(function):
                raise ScenarioError(src, key, f"{value} is not a function")


def _validate_locking(scenario: Scenario) -> None:
    """Another locking protocol than unix: SQLite must have it, and no fault may need the VFS shim."""
    other = sorted({w.vfs for w in scenario.active_workers() if w.vfs != "unix"})
    if not other:
        return
    for name in other:
        probe = None
        try:  # the stdlib's SQLite tells whether it has the VFS (apsw's builds have the same unix VFS family)
            import sqlite3

            probe = sqlite3.connect(f"file:walstress-vfs-probe?mode=memory&vfs={name}", uri=True)
        except Exception as exc:
            raise ScenarioError(scenario.source, "workers.vfs", f'"{name}" is not a VFS of this SQLite: {exc}') from None
        finally:
            if probe is not None:
                probe.close()
    for fault, section in scenario.faults.items():
        acts = getattr(section, "acts_on_connections", None)
        if acts is not None and acts(scenario):
            raise ScenarioError(scenario.source, "workers.vfs", f"{', '.join(other)} for some workers, but "
                                                               f"faults.{fault} wraps the unix VFS of every "
                                                               "connection (its VFS shim); use one or the other")


def _validate_search(scenario: Scenario) -> None:
    """Each [search] axis names a known key, with values that key takes."""
    src, search = scenario.source, scenario.search
    catalog = _catalog(scenario)
    if search.confirm_min > search.confirm_runs:
        raise ScenarioError(src, "search.confirm_min", f"{search.confirm_min} is more than search.confirm_runs "
                                                       f"({search.confirm_runs})")
    for name in search.faults:
        cls = catalog.fault_sections.get(name) if isinstance(name, str) and name in catalog.fault_sections else None
        if cls is None or field_named(cls, "enabled") is None:
            names = [n for n, c in catalog.fault_sections.items() if field_named(c, "enabled") is not None]
            raise ScenarioError(src, "search.faults", f"{name!r} is not a fault section that can be switched on; "
                                                      f"one of {', '.join(names)}")
    for key, spec in search.vary.items():
        where = f"search.vary.{key}"
        f = field_for_key(scenario, key)
        if f is None or key in ("name", "description", "repeat", "expect", "expect_fraction", "expect_cause",
                                "expect_cause_fraction"):
            raise ScenarioError(src, where, f"not a key a search can vary{did_you_mean(key, known_keys(catalog))}")
        meta = setting_meta(f)
        if spec == "any":
            if meta.get("choices") is None and field_type(f) is not bool:
                raise ScenarioError(src, where, '"any" needs a key with a set of choices or true/false; give '
                                                "[values] or {min = ..., max = ...}")
            continue
        if isinstance(spec, dict):
            if set(spec) != {"min", "max"} or field_type(f) not in (int, float) and meta.get("kind") not in (
                    "duration", "ms", "bytes"):
                raise ScenarioError(src, where, "{min = ..., max = ...} is for a number; give [values] for others")
            values = [spec["min"], spec["max"]]
        elif isinstance(spec, list) and spec:
            values = spec
        else:
            raise ScenarioError(src, where, 'a list of values, {min = ..., max = ...} or "any"')
        checked = []
        for value in values:
            probe = copy.deepcopy(scenario)
            try:
                apply_setting(probe, key, value, source=src)
            except ScenarioError as exc:
                raise ScenarioError(src, where, exc.message) from None
            checked.append(key_value(probe, key))
        if isinstance(spec, dict) and checked[0] > checked[1]:
            raise ScenarioError(src, where, f"min {spec['min']!r} is above max {spec['max']!r}")


def field_for_key(scenario: Scenario, key: str) -> dataclasses.Field | None:
    """The settings field a dotted key sets (workers.<role>.<key> and faults included), or None."""
    catalog = _catalog(scenario)
    parts = key.split(".")
    if len(parts) == 1 and key in _SCALAR_TOP:
        return field_named(Scenario, key)
    if len(parts) == 2 and parts[0] in _SECTIONS and parts[0] != "search":
        return field_named(_SECTIONS[parts[0]], parts[1])
    if len(parts) == 3 and parts[0] == "faults" and parts[1] in catalog.fault_sections:
        return field_named(catalog.fault_sections.get(parts[1]), parts[2])
    if len(parts) == 3 and parts[0] == "workers" and parts[1] in catalog.roles:
        return field_named(catalog.roles.get(parts[1]), parts[2])
    return None


def user_code_path(scenario: Scenario) -> list[str]:
    """Where the scenario's own code is imported from: its file's folder, and the working folder."""
    return list(dict.fromkeys([str(base_dir_of(scenario.source)), str(Path.cwd())]))


def load_scenario(path: str | Path, overrides: list[str] | None = None, *, catalog: Catalog) -> Scenario:
    """Read a scenario file and apply ``KEY=VALUE`` overrides."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ScenarioError(source, None, "no such scenario file" if not path.exists() else "not a file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ScenarioError(source, None, "not a UTF-8 text file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(source, None, f"invalid TOML: {exc}") from None
    scenario = scenario_from_dict(data, catalog=catalog, source=source, default_name=path.stem)
    apply_overrides(scenario, overrides or [])
    return scenario


def apply_overrides(scenario: Scenario, overrides: list[str]) -> None:
    for item in overrides:
        if "=" not in item:
            raise ScenarioError("--set", item, "expected KEY=VALUE")
        key, _, text = item.partition("=")
        key = key.strip()
        if text.strip().startswith("["):
            add_matrix_axis(scenario, key, parse_set_value(text), source="--set")
        else:
            apply_setting(scenario, key, text, source="--set", from_text=True)
            scenario.matrix.pop(key, None)
    validate(scenario)


# --------------------------------------------------------------------- matrix
@dataclass
class Cell:
    index: int
    params: dict[str, Any]
    scenario: Scenario

    @property
    def cell_id(self) -> str:
        return f"cell-{self.index:03d}"

    @property
    def label(self) -> str:
        if not self.params:
            return self.scenario.name
        return " ".join(f"{short_key(k)}={json.dumps(v) if isinstance(v, bool) else v}"
                        for k, v in self.params.items())


def short_key(key: str) -> str:
    """A matrix key as cell labels show it: checkpoint.mode -> mode,
    faults.lock_breaker.enabled -> lock_breaker.enabled, workers.writer.count -> writer.count."""
    parts = key.split(".")
    return ".".join(parts[1:]) if len(parts) == 3 else parts[-1]


def expand_matrix(scenario: Scenario) -> list[Cell]:
    """Cartesian product of the [matrix] axes, in file order."""
    axes = list(scenario.matrix.items())
    cells = []
    combos = itertools.product(*[values for _, values in axes]) if axes else [()]
    for index, combo in enumerate(combos):
        cell_scenario = copy.deepcopy(scenario)
        cell_scenario.matrix = {}
        params = {}
        for (key, _), value in zip(axes, combo):
            apply_setting(cell_scenario, key, value, source=scenario.source)
            params[key] = value
        _apply_expect_when(cell_scenario, scenario.expect_when)
        validate(cell_scenario)
        cells.append(Cell(index=index, params=params, scenario=cell_scenario))
    return cells


def scenario_to_jsonable(scenario: Scenario) -> dict:
    return scenario.to_dict()


def settings_to_dict(settings: Any) -> dict:
    """A settings dataclass (a worker entry, a fault section) as plain data."""
    return dataclasses.asdict(settings)
