"""Scenario model: TOML file -> validated dataclasses.

Every key has a default. A key is written in dotted form (``checkpoint.mode``)
on the command line (``--set``) and in ``[matrix]``; in the file it is the
usual TOML table form. Worker entries (``[[workers]]``) are addressed as
``workers.<role>.<key>`` and apply to every entry of that role.

Errors raise :class:`ScenarioError` naming the file, the key and what is
allowed; the command line turns it into one line and exit code 2.

Per-cell expectations: ``expect``/``expect_fraction`` hold for every cell
unless an ``[[expect_when]]`` rule matches the cell. Each rule is
``match = {"KEY" = value, ...}`` (dotted keys, values checked like any
setting), ``expect = "..."`` and an optional ``fraction``; the first rule
whose every key equals the cell's value sets that cell's expectation (rules
win over ``expect``, also over ``--set expect=...``)::

    [[expect_when]]
    match = {"faults.lock_breaker.enabled" = true}
    expect = "damaged"
    fraction = 0.8

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
import difflib
import itertools
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from walstress.errors import ScenarioError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

CHECKPOINT_MODES = ("PASSIVE", "FULL", "RESTART", "TRUNCATE", "NONE")
VERDICTS = ("clean", "lost-writes", "corrupt", "errors")
EXPECTATIONS = VERDICTS + ("damaged", "any")
ROLES = ("writer", "reader", "checkpointer", "opener", "wal-reset-race")


def _meta(*, choices=None, min=None, max=None, kind=None, doc=""):
    return {"choices": choices, "min": min, "max": max, "kind": kind, "doc": doc}


def _field(default, **meta):
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=_meta(**meta))
    return field(default=default, metadata=_meta(**meta))


@dataclass
class SqliteSettings:
    driver: str = _field("stdlib", choices=("stdlib", "apsw"), doc="which Python binding loads SQLite")
    version: str = _field("system", doc='"system" or an SQLite version X.Y.Z (apsw driver)')


@dataclass
class DatabaseSettings:
    pages: int = _field(65536, min=8, max=4_000_000, doc="template size in pages")
    page_size: int = _field(4096, choices=(512, 1024, 2048, 4096, 8192, 16384, 32768, 65536))
    schema: str = _field("hermes", choices=("hermes", "minimal"))
    seed: int = _field(0, min=0, doc="seed of the template's synthetic content")
    journal_mode: str = _field("WAL", choices=("WAL", "DELETE", "TRUNCATE", "PERSIST"))
    synchronous: str = _field("default", choices=("default", "OFF", "NORMAL", "FULL", "EXTRA"))
    mmap_size: int = _field(0, min=0, kind="bytes")
    wal_autocheckpoint: int = _field(1000, min=0)
    busy_timeout_ms: int = _field(1000, min=0, max=600_000, kind="ms")
    journal_size_limit: int = _field(-1, min=-1, kind="bytes")
    foreign_keys: bool = _field(True)


@dataclass
class CheckpointSettings:
    mode: str = _field("PASSIVE", choices=CHECKPOINT_MODES)
    every_writes: int = _field(0, min=0, doc="writers checkpoint on their own connection every N commits (0: off)")
    interval_ms: int = _field(1000, min=1, max=3_600_000, kind="ms", doc="period of checkpointer workers")
    on_close: bool = _field(False, doc="checkpoint with the mode before closing a connection")
    fts_maintenance: str = _field("none", choices=("none", "optimize", "merge"),
                                  doc="writers run FTS5 'optimize' or ('merge', fts_merge_pages) on every FTS table")
    fts_merge_pages: int = _field(500, min=1, max=1_000_000, doc="N of INSERT INTO fts(fts, rank) VALUES('merge', N)")
    fts_every_writes: int = _field(200, min=1, doc="FTS5 maintenance every N commits of each writer thread")
    after_fts_maintenance: bool = _field(False, doc="checkpoint with the mode right after each FTS5 maintenance")


@dataclass
class WorkerSpec:
    role: str = _field("writer", choices=ROLES)
    count: int = _field(1, min=0, max=256)
    connection: str = _field("persistent", choices=("persistent", "per-op"))
    threads: int = _field(1, min=1, max=64)
    pause_ms: int = _field(0, min=0, max=600_000, kind="ms", doc="sleep between operations")
    # writer
    batch: int = _field(2, min=1, max=1000, doc="messages inserted per write transaction")
    insert_weight: int = _field(70, min=0)
    update_weight: int = _field(20, min=0)
    delete_weight: int = _field(10, min=0)
    retries: int = _field(15, min=0, max=1000, doc="retries on busy/locked, as the reporter's code")
    # reader
    hold_ms: int = _field(0, min=0, max=3_600_000, kind="ms", doc="keep each read transaction open this long")
    # opener
    write_probability: float = _field(0.2, min=0.0, max=1.0, doc="share of opener visits that write")
    # wal-reset-race (workers/walrace.py)
    rounds: int = _field(0, min=0, max=100_000_000, doc="wal-reset-race: rounds to run, 0 = until the run ends")
    stop_on_loss: bool = _field(True, doc="wal-reset-race: stop once a canary write is seen lost")


@dataclass
class Scenario:
    name: str = _field("scenario")
    description: str = _field("")
    seed: int = _field(0, min=0)
    duration: float = _field(30.0, min=0.1, max=7 * 86400, kind="duration")
    repeat: int = _field(1, min=1, max=10_000)
    expect: str = _field("clean", choices=EXPECTATIONS)
    expect_fraction: float = _field(1.0, min=0.0, max=1.0, doc="share of a cell's runs that must match expect")
    sqlite: SqliteSettings = field(default_factory=SqliteSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    checkpoint: CheckpointSettings = field(default_factory=CheckpointSettings)
    faults: dict = field(default_factory=dict)
    workers: list = field(default_factory=list)
    matrix: dict = field(default_factory=dict)
    expect_when: list = field(default_factory=list)
    source: str = ""

    # ------------------------------------------------------------------ views
    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data.pop("source", None)
        return data

    def flat(self) -> dict[str, Any]:
        """Every scalar key in dotted form (workers as workers.<role>.<key>)."""
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

    def workers_of(self, role: str) -> list[WorkerSpec]:
        return [w for w in self.workers if w.role == role and w.count > 0]

    def worker_names(self) -> list[tuple[str, WorkerSpec]]:
        """Every worker process of the scenario: (``<role>-<index>``, its spec), numbered per role."""
        names = []
        counters: dict[str, int] = {}
        for spec in self.workers:
            for _ in range(spec.count):
                index = counters.get(spec.role, 0)
                counters[spec.role] = index + 1
                names.append((f"{spec.role}-{index}", spec))
        return names


_SECTIONS: dict[str, type] = {
    "sqlite": SqliteSettings,
    "database": DatabaseSettings,
    "checkpoint": CheckpointSettings,
}
_SCALAR_TOP = ("name", "description", "seed", "duration", "repeat", "expect", "expect_fraction")
_WORKER_FIELDS = {f.name: f for f in dataclasses.fields(WorkerSpec)}

# Fault sections are declared by walstress.faults (a registry of dataclasses);
# the scenario only knows that they exist.
FAULT_SECTIONS: dict[str, type] = {}


def register_fault_section(name: str, cls: type) -> None:
    FAULT_SECTIONS[name] = cls


def _load_fault_sections() -> None:
    """Fault modules register their sections when the faults package is imported."""
    import walstress.faults  # noqa: F401


# --------------------------------------------------------------- value parsing
_DURATION_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ms|s|sec|m|min|h)?\s*$", re.I)
_SIZE_RE = re.compile(r"^\s*(-?[0-9]+)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?\s*$", re.I)
_SIZE_FACTORS = {
    None: 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024,
    "m": 1 << 20, "mb": 1000**2, "mib": 1 << 20, "g": 1 << 30, "gb": 1000**3, "gib": 1 << 30,
}
_DURATION_FACTORS = {None: 1.0, "s": 1.0, "sec": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration_seconds(value: Any) -> float:
    """"30s", "500ms", "2m", 30, 1.5 -> seconds (float)."""
    if isinstance(value, bool):
        raise ValueError("a duration, not a boolean")
    if isinstance(value, (int, float)):
        return float(value)
    match = _DURATION_RE.match(str(value))
    if not match:
        raise ValueError('a duration such as 30, "30s", "500ms" or "2m"')
    number, unit = match.groups()
    return float(number) * _DURATION_FACTORS[unit.lower() if unit else None]


def parse_size_bytes(value: Any) -> int:
    """"64MiB", "1g", 4096 -> bytes (int)."""
    if isinstance(value, bool):
        raise ValueError("a size, not a boolean")
    if isinstance(value, int):
        return value
    match = _SIZE_RE.match(str(value))
    if not match:
        raise ValueError('a size such as 4096, "64MiB" or "1GiB"')
    number, unit = match.groups()
    return int(number) * _SIZE_FACTORS[unit.lower() if unit else None]


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def coerce_value(f: dataclasses.Field, value: Any, *, from_text: bool = False) -> Any:
    """Check and convert one value for field f; raise ValueError saying what is allowed."""
    meta: Mapping[str, Any] = f.metadata or {}
    kind = meta.get("kind")
    tp = f.type if not isinstance(f.type, str) else {"int": int, "float": float, "str": str, "bool": bool}.get(f.type, str)
    if from_text and isinstance(value, str):
        value = _parse_text_value(value, tp, kind)
    if kind == "duration":
        result: Any = parse_duration_seconds(value)
    elif kind == "ms":
        if isinstance(value, str):
            result = int(round(parse_duration_seconds(value) * 1000)) if not value.strip().lstrip("-").isdigit() else int(value)
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError('milliseconds such as 500 or "2s"')
        else:
            result = int(value)
    elif kind == "bytes":
        result = parse_size_bytes(value)
    elif tp is bool:
        if not isinstance(value, bool):
            raise ValueError("true or false")
        result = value
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ValueError(_type_name(int))
        result = value
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(_type_name(float))
        result = float(value)
    elif tp is str:
        if not isinstance(value, str):
            raise ValueError(_type_name(str))
        result = value
    else:
        result = value
    choices = meta.get("choices")
    if choices is not None:
        if isinstance(result, str):
            canonical = {str(c).lower(): c for c in choices}
            if result.lower() not in canonical:
                raise ValueError("one of " + ", ".join(str(c) for c in choices))
            result = canonical[result.lower()]
        elif result not in choices:
            raise ValueError("one of " + ", ".join(str(c) for c in choices))
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and result < lo:
        raise ValueError(f"at least {lo}")
    if hi is not None and result > hi:
        raise ValueError(f"at most {hi}")
    return result


def _parse_text_value(text: str, tp: Any, kind: str | None) -> Any:
    """Interpret a --set value: TOML literal where it parses, else the plain string."""
    stripped = text.strip()
    if tp is str or kind in ("duration", "ms", "bytes"):
        if stripped.startswith('"') and stripped.endswith('"') and len(stripped) >= 2:
            return stripped[1:-1]
        if kind is None:
            return stripped
    try:
        return tomllib.loads(f"v = {stripped}")["v"]
    except tomllib.TOMLDecodeError:
        if tp is bool and stripped.lower() in ("yes", "on", "1", "no", "off", "0"):
            return stripped.lower() in ("yes", "on", "1")
        return stripped


def parse_set_value(text: str) -> Any:
    """Parse the right-hand side of --set when it is a list (a matrix axis)."""
    stripped = text.strip()
    try:
        return tomllib.loads(f"v = {stripped}")["v"]
    except tomllib.TOMLDecodeError:
        inner = stripped[1:-1]
        return [part.strip().strip('"') for part in inner.split(",") if part.strip()]


# ------------------------------------------------------------------- key table
def known_keys(roles: tuple[str, ...] = ROLES) -> list[str]:
    _load_fault_sections()
    keys = list(_SCALAR_TOP)
    for section, cls in _SECTIONS.items():
        keys += [f"{section}.{f.name}" for f in dataclasses.fields(cls)]
    for section, cls in FAULT_SECTIONS.items():
        keys += [f"faults.{section}.{f.name}" for f in dataclasses.fields(cls)]
    for role in roles:
        keys += [f"workers.{role}.{name}" for name in _WORKER_FIELDS if name != "role"]
    return keys


def _unknown(source: str, key: str, candidates: list[str]) -> ScenarioError:
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ScenarioError(source, key, f"unknown key{hint}")


def _field_of(cls: type, name: str) -> dataclasses.Field | None:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f
    return None


def _known_field(cls: type, name: str) -> dataclasses.Field:
    """The field ``name`` of ``cls``, which the code names and so must exist."""
    f = _field_of(cls, name)
    if f is None:
        raise LookupError(f"{cls.__name__} has no field {name!r}")
    return f


def _set_checked(source: str, key: str, target: Any, f: dataclasses.Field, value: Any, *, from_text: bool) -> None:
    try:
        setattr(target, f.name, coerce_value(f, value, from_text=from_text))
    except ValueError as exc:
        shown = json.dumps(value) if not isinstance(value, str) or not from_text else value
        raise ScenarioError(source, key, f"{shown} is not allowed; expected {exc}") from None


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
    parts = key.split(".")
    top = parts[0]
    if len(parts) == 1 and top in _SCALAR_TOP:
        _set_checked(source, key, scenario, _known_field(Scenario, top), value, from_text=from_text)
        return
    if key == "sqlite":
        _set_sqlite_library(scenario, value, source)
        return
    if top in _SECTIONS and len(parts) == 2:
        f = _field_of(_SECTIONS[top], parts[1])
        if f is not None:
            _set_checked(source, key, getattr(scenario, top), f, value, from_text=from_text)
            return
    if top == "faults" and len(parts) == 3 and parts[1] in FAULT_SECTIONS:
        cls = FAULT_SECTIONS[parts[1]]
        f = _field_of(cls, parts[2])
        if f is not None:
            section = scenario.faults.setdefault(parts[1], cls())
            if isinstance(section, dict):
                section = cls()
                scenario.faults[parts[1]] = section
            _set_checked(source, key, section, f, value, from_text=from_text)
            return
    if top == "workers" and len(parts) == 3:
        role, name = parts[1], parts[2]
        if role not in ROLES:
            close = difflib.get_close_matches(role, ROLES, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ScenarioError(source, key, f"unknown worker role '{role}'{hint} (roles: {', '.join(ROLES)})")
        f = _WORKER_FIELDS.get(name)
        if f is not None and name != "role":
            entries = [w for w in scenario.workers if w.role == role]
            if not entries:
                if name == "count" and not from_text and value == 0:
                    return
                if name != "count":
                    raise ScenarioError(source, key, f"the scenario has no {role} workers; set workers.{role}.count first")
                entries = [WorkerSpec(role=role)]
                scenario.workers.append(entries[0])
            for entry in entries:
                _set_checked(source, key, entry, f, value, from_text=from_text)
            return
    raise _unknown(source, key, known_keys())


def _build_worker(source: str, index: int, table: Any) -> WorkerSpec:
    where = f"workers[{index}]"
    if not isinstance(table, dict):
        raise ScenarioError(source, where, "each [[workers]] entry must be a table")
    if "role" not in table:
        raise ScenarioError(source, f"{where}.role", "missing; one of " + ", ".join(ROLES))
    spec = WorkerSpec()
    for name, value in table.items():
        f = _WORKER_FIELDS.get(name)
        if f is None:
            raise _unknown(source, f"{where}.{name}", [f"{where}.{n}" for n in _WORKER_FIELDS])
        _set_checked(source, f"{where}.{name}", spec, f, value, from_text=False)
    return spec


def _default_workers() -> list[WorkerSpec]:
    return [WorkerSpec(role="writer", count=2), WorkerSpec(role="reader", count=1)]


def scenario_from_dict(data: dict, *, source: str = "<dict>", default_name: str = "scenario") -> Scenario:
    """Build a Scenario from a parsed TOML-like dict. Raises ScenarioError."""
    if not isinstance(data, dict):
        raise ScenarioError(source, None, "a scenario must be a table")
    _load_fault_sections()
    data = copy.deepcopy(data)
    scenario = Scenario(name=default_name, source=source)
    workers = data.pop("workers", None)
    matrix = data.pop("matrix", {})
    faults = data.pop("faults", {})
    expect_when = data.pop("expect_when", [])
    if workers is None:
        scenario.workers = _default_workers()
    else:
        if not isinstance(workers, list):
            raise ScenarioError(source, "workers", "must be an array of tables ([[workers]])")
        scenario.workers = [_build_worker(source, i, t) for i, t in enumerate(workers)]
    for key, value in _flatten_table(data).items():
        apply_setting(scenario, key, value, source=source)
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
    if parts[0] == "faults" and len(parts) == 3 and parts[1] in FAULT_SECTIONS:
        section = scenario.faults.get(parts[1]) or FAULT_SECTIONS[parts[1]]()
        return getattr(section, parts[2])
    if parts[0] == "workers" and len(parts) == 3:
        entries = [w for w in scenario.workers if w.role == parts[1]]
        if not entries:
            return 0 if parts[2] == "count" else None
        return getattr(entries[0], parts[2])
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
        unknown = sorted(set(rule) - {"match", "expect", "fraction"})
        if unknown:
            raise ScenarioError(source, f"{where}.{unknown[0]}", "unknown key; allowed: match, expect, fraction")
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
        out.append({"match": checked, "expect": expect, "fraction": fraction})
    return out


def _apply_expect_when(cell_scenario: Scenario, rules: list[dict]) -> None:
    """The first rule whose every match key equals the cell's value sets the cell's expectation."""
    for rule in rules:
        if all(key_value(cell_scenario, key) == value for key, value in rule["match"].items()):
            cell_scenario.expect = rule["expect"]
            if rule.get("fraction") is not None:
                cell_scenario.expect_fraction = rule["fraction"]
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
    if key in ("name", "description", "repeat", "matrix"):
        raise ScenarioError(source, where, f"{key} cannot vary in a matrix")
    checked = []
    for value in values:
        probe = copy.deepcopy(scenario)
        try:
            apply_setting(probe, key, value, source=source)
        except ScenarioError as exc:
            raise ScenarioError(source, where, exc.message) from None
        checked.append(probe.get(key) if key in probe.flat() else value)
    scenario.matrix[key] = checked


def validate(scenario: Scenario) -> None:
    """Combinations that cannot work."""
    src = scenario.source
    if scenario.sqlite.driver == "stdlib" and scenario.sqlite.version != "system":
        raise ScenarioError(src, "sqlite.version", f'"{scenario.sqlite.version}" needs sqlite.driver = "apsw"; the stdlib driver uses the system SQLite ("system")')
    if scenario.sqlite.version != "system" and not re.fullmatch(r"3\.\d+\.\d+", scenario.sqlite.version):
        raise ScenarioError(src, "sqlite.version", f'"{scenario.sqlite.version}" is not "system" nor a version like "3.51.3"')
    active = [w for w in scenario.workers if w.count > 0]
    if not active:
        raise ScenarioError(src, "workers", "no workers with count > 0")
    for w in active:
        if w.role == "writer" and w.insert_weight + w.update_weight + w.delete_weight == 0:
            raise ScenarioError(src, "workers.writer.insert_weight", "insert, update and delete weights are all 0")
        if w.role == "wal-reset-race" and w.threads != 1:
            raise ScenarioError(src, "workers.wal-reset-race.threads", "must be 1 (the role runs its own racing thread)")
        if w.role == "wal-reset-race" and (scenario.checkpoint.mode == "NONE" or scenario.database.journal_mode != "WAL"):
            raise ScenarioError(src, "checkpoint.mode", 'the wal-reset-race role needs WAL and a checkpoint mode other than "NONE"')
        if w.role == "wal-reset-race" and (w.count != 1 or any(o.role in ("writer", "opener") for o in active)):
            # its canaries update any template row: a second writer of the same rows would make
            # the ledger's expected state ambiguous
            raise ScenarioError(src, "workers.wal-reset-race.count", "must be 1, and the role cannot share a "
                                "scenario with writer or opener workers")
    if scenario.checkpoint.mode == "NONE" and scenario.workers_of("checkpointer"):
        raise ScenarioError(src, "checkpoint.mode", 'is "NONE" but the scenario has checkpointer workers')
    if scenario.database.journal_mode != "WAL" and scenario.checkpoint.mode != "NONE" and (
        scenario.checkpoint.every_writes or scenario.workers_of("checkpointer")
    ):
        raise ScenarioError(src, "database.journal_mode", f'checkpoints need journal_mode = "WAL", not "{scenario.database.journal_mode}"')
    ck = scenario.checkpoint
    if ck.after_fts_maintenance and ck.fts_maintenance == "none":
        raise ScenarioError(src, "checkpoint.after_fts_maintenance", 'is true but checkpoint.fts_maintenance is "none"')
    if ck.after_fts_maintenance and ck.mode == "NONE":
        raise ScenarioError(src, "checkpoint.after_fts_maintenance", 'is true but checkpoint.mode is "NONE"')
    if ck.fts_maintenance != "none" and not scenario.workers_of("writer"):
        raise ScenarioError(src, "checkpoint.fts_maintenance", "is done by writers, but the scenario has no writer workers")
    for section in scenario.faults.values():
        check = getattr(section, "validate", None)
        if check is not None:
            try:
                check(scenario)
            except ValueError as exc:
                raise ScenarioError(src, None, str(exc)) from None


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> Scenario:
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
    scenario = scenario_from_dict(data, source=source, default_name=path.stem)
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
    data = scenario.to_dict()
    data["faults"] = {
        name: dataclasses.asdict(section)
        if dataclasses.is_dataclass(section) and not isinstance(section, type) else section
        for name, section in scenario.faults.items()
    }
    return data


def worker_to_dict(spec: WorkerSpec) -> dict:
    return dataclasses.asdict(spec)
