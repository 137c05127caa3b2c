"""``walstress repro``: one standalone Python file that reproduces a scenario's mechanism.

    walstress repro reports/lock-breaker-<time>/cell-002/run-000 --out repro.py
    walstress repro scenarios/wal-reset-race.toml --set sqlite=3.51.2 --out race.py
    python3 repro.py            # REPRODUCED k/N (exit 0) or NOT REPRODUCED 0/N (exit 1)

The file needs only the standard library (and apsw where the mechanism
does: a chosen SQLite version, two libraries, a VFS). It builds the small
database the scenario needs, runs the workload and the fault as plain
processes and threads with the scenario's seed, checks integrity and the
acknowledged writes, and says whether the damage came. It is made from the
pieces in ``templates/`` (common parts, one per mechanism) with the
scenario's values written in; it covers the lock breaker, two SQLite
libraries in one process, fork with an open connection, the WAL-reset race
and power loss. A scenario it cannot express gets a sentence saying why,
never a file that would not reproduce it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from walstress.catalog import load_scenario, scenario_from_dict
from walstress.errors import WalstressError
from walstress.faults.schedule import parse_names
from walstress.scenario import Scenario, apply_overrides, expand_matrix

TEMPLATES = Path(__file__).resolve().parent / "templates"
MECHANISMS: dict[str, tuple[str, ...]] = {
    "lock_breaker": ("common", "_workload", "lock_breaker"),
    "two_libraries": ("common", "_workload", "two_libraries"),
    "fork": ("common", "_workload", "fork"),
    "power_loss": ("common", "power_loss"),
    "wal_reset_race": ("wal_reset_race",),
}
NEEDS_APSW = {"two_libraries", "power_loss"}
_PROCESS_FAULTS = ("lock_breaker", "two_libraries", "fork", "power_loss")
_WORKLOAD_ROLES = {"writer", "opener"}
_LEFT_OUT_ROLES = {"reader", "checkpointer"}


class CannotExpress(WalstressError):
    """The scenario has something a reproducer file cannot do; the message says what."""


# ------------------------------------------------------------------ the input
def scenario_of(target: str | Path, overrides: list[str] | None = None) -> Scenario:
    """A scenario file (one cell), a run dir (its cell's scenario) or an output folder (its first damaged run)."""
    path = Path(target)
    if path.is_file():
        scenario = load_scenario(path, overrides)
        cells = expand_matrix(scenario)
        if len(cells) != 1:
            labels = ", ".join(c.label for c in cells[:6])
            raise CannotExpress(f"{path} has {len(cells)} cells ({labels}); a reproducer is of one: pin the "
                                "matrix with --set KEY=VALUE, or give a run dir (cell-NNN/run-NNN)")
        return cells[0].scenario
    if (path / "scenario.json").is_file():
        return _run_scenario(path, overrides)
    if (path / "results.json").is_file():
        results = json.loads((path / "results.json").read_text())
        runs = [r for c in results.get("cells", []) for r in c.get("results", [])]
        damaged = [r for r in runs if r.get("verdict") in ("corrupt", "lost-writes")]
        chosen = (damaged or runs)[:1]
        if not chosen:
            raise CannotExpress(f"{path}: its results.json has no runs")
        return _run_scenario(Path(chosen[0]["run_dir"]), overrides)
    raise CannotExpress(f"{target}: not a scenario file, a run dir (with scenario.json) or an output folder")


def _run_scenario(run_dir: Path, overrides: list[str] | None) -> Scenario:
    data = json.loads((run_dir / "scenario.json").read_text())["scenario"]
    for key in ("matrix", "expect_when"):
        data.pop(key, None)
    scenario = scenario_from_dict(data, source=str(run_dir / "scenario.json"), default_name=data.get("name", "run"))
    if overrides:
        apply_overrides(scenario, overrides)
    return scenario


# ------------------------------------------------------------ the mechanism
def mechanism_of(scenario: Scenario) -> str:
    on = [name for name in _PROCESS_FAULTS if getattr(scenario.faults.get(name), "enabled", False)]
    if scenario.workers_of("wal-reset-race"):
        on.append("wal_reset_race")
    others = [name for name, section in scenario.faults.items()
              if name not in _PROCESS_FAULTS and _acts(section)]
    if others:
        raise CannotExpress(f"faults.{others[0]} is on, and a reproducer file covers the lock breaker, two "
                            "libraries, fork, power loss and the WAL-reset race only")
    if len(on) > 1:
        raise CannotExpress(f"{' and '.join(on)} are on at once; a reproducer shows one mechanism: turn the others "
                            "off (walstress search shrinks a finding to one)")
    if not on:
        raise CannotExpress("no mechanism a reproducer file can express is on (the lock breaker, two libraries, "
                            "fork, power loss or the wal-reset-race role); walstress repro writes those")
    mechanism = on[0]
    if not scenario.database.builtin_schema:
        raise CannotExpress("the scenario runs on your own database or schema; a reproducer file builds its own "
                            "small database, so it would not reproduce your case: attach the scenario instead")
    roles = {w.role for w in scenario.active_workers()}
    if mechanism != "wal_reset_race":
        strange = roles - _WORKLOAD_ROLES - _LEFT_OUT_ROLES
        if strange:
            raise CannotExpress(f"the {', '.join(sorted(strange))} workers run code a reproducer file does not "
                                "have; it covers the built-in writer and opener workload")
        if "writer" not in roles:
            raise CannotExpress("the scenario has no writer workers; the reproducer's workload is the writers'")
    return mechanism


def _acts(section: Any) -> bool:
    enabled = getattr(section, "enabled", None)
    if enabled is not None:
        return bool(enabled)
    return section != type(section)()


def _count(scenario: Scenario, role: str) -> int:
    return sum(w.count * w.threads for w in scenario.workers_of(role))


def _setting(scenario: Scenario, role: str, name: str, default: Any) -> Any:
    entries = scenario.workers_of(role)
    return getattr(entries[0], name, default) if entries else default


def parameters(mechanism: str, scenario: Scenario) -> dict[str, Any]:
    """The values the reproducer's ``# repro: param`` lines get."""
    db, ck = scenario.database, scenario.checkpoint
    runs = scenario.repeat if scenario.repeat > 1 else 5
    params: dict[str, Any] = {"PAGES": db.pages, "SECONDS": float(scenario.duration), "RUNS": runs,
                              "SEED": scenario.seed, "BUSY_TIMEOUT_S": db.busy_timeout_ms / 1000.0}
    if mechanism == "wal_reset_race":
        race = scenario.workers_of("wal-reset-race")[0]
        return {"DRIVER": scenario.sqlite.driver,
                "SQLITE_VERSION": "" if scenario.sqlite.version == "system" else scenario.sqlite.version,
                "PAGES": db.pages,
                "MMAP_SIZE": db.mmap_size or (1 << 30), "CHECKPOINT_MODE": ck.mode,
                "ROUNDS": getattr(race, "rounds", 0) or 300, "SECONDS": float(scenario.duration), "RUNS": runs,
                "SEED": scenario.seed}
    if mechanism == "power_loss":
        cut = scenario.faults["power_loss"]
        synchronous = db.synchronous if db.synchronous != "default" else "FULL"
        params.update(SYNCHRONOUS=synchronous, ROLLBACK=cut.rollback, KEEP_PROBABILITY=cut.keep_probability,
                      SECTOR_BYTES=cut.sector_bytes, THREADS=max(1, _count(scenario, "writer")),
                      CHECKPOINT_EVERY=ck.every_writes or 50)
        return params
    params.update(CHILDREN=[("writer", _count(scenario, "writer")), ("opener", _count(scenario, "opener"))],
                  CHECKPOINT_MODE=ck.mode if ck.mode != "NONE" else "PASSIVE",
                  CHECKPOINT_EVERY=ck.every_writes if ck.mode != "NONE" else 0,
                  OPENER_PAUSE_S=_setting(scenario, "opener", "pause_ms", 5) / 1000.0,
                  OPENER_WRITES=float(_setting(scenario, "opener", "write_probability", 0.2)))
    fault = scenario.faults[mechanism]
    roles = parse_names(getattr(fault, "roles", "writer"))
    if mechanism == "lock_breaker":
        if set(roles) - _WORKLOAD_ROLES:
            raise CannotExpress(f"faults.lock_breaker.roles = {fault.roles!r}; the reproducer breaks locks in "
                                "writer and opener processes only")
        params.update(BREAKER_INTERVAL_S=fault.interval_ms / 1000.0, BREAKER_FILE=fault.target,
                      BREAKER_ROLES=tuple(roles))
    elif set(roles) != {"writer"}:
        raise CannotExpress(f"faults.{mechanism}.roles = {fault.roles!r}; the reproducer runs it in the writers")
    elif mechanism == "two_libraries":
        params.update(SECOND_INTERVAL_S=fault.interval_ms / 1000.0, SECOND_WORK=fault.work,
                      SECOND_PER_OP=fault.connection == "per-op")
    elif mechanism == "fork":
        params.update(FORK_INTERVAL_S=fault.interval_ms / 1000.0, CHILD_ACTION=fault.child_action,
                      HOLD_READ=bool(fault.hold_read))
    return params


# ---------------------------------------------------------------- rendering
_PARAM = re.compile(r"^(?P<name>[A-Z_]+) = (?P<value>.+?)\s+# repro: param\s+(?P<doc>.*)$")
_NOQA = re.compile(r"\s+# noqa.*$")


def _python(item: Any) -> str:
    if isinstance(item, float) and item.is_integer() and abs(item) < 1e15:
        return repr(item)
    if isinstance(item, list):
        return "[" + ", ".join(_python(v) for v in item) + "]"
    return repr(item)


def render(mechanism: str, params: dict[str, Any], header: list[str]) -> str:
    imports: list[str] = []
    body: list[str] = []
    used: set[str] = set()
    for name in MECHANISMS[mechanism]:
        text = (TEMPLATES / f"{name}.py").read_text()
        replaced = re.findall(r"^def (\w+)\(.*# noqa: F811", text, re.M)
        for line in text.splitlines():
            if "# repro: drop" in line:
                continue
            if re.match(r"^(import |from )", line):
                if line not in imports:
                    imports.append(line)
                continue
            match = _PARAM.match(line)
            if match:
                key = match["name"]
                shown = _python(params[key]) if key in params else match["value"]
                used.add(key)
                line = f"{key} = {shown}  # {match['doc']}"
            body.append(_NOQA.sub("", line))
        body.append("")
        for function in replaced:  # a later piece's function of the same name replaces the earlier one
            body = _without_function(body, function, keep_last=True)
    missing = sorted(set(params) - used)
    if missing:
        raise RuntimeError(f"the {mechanism} pieces have no parameter {missing[0]}")
    stdlib = sorted(line for line in imports if line != "import apsw")
    third = [line for line in imports if line == "import apsw"]
    text = "\n".join(["#!/usr/bin/env python3", '"""' + "\n".join(header) + '\n"""', "", *stdlib,
                      *([""] + third if third else []), "", *_squeeze(body)]).rstrip() + "\n"
    compile(text, "repro.py", "exec")
    return text


def _without_function(lines: list[str], name: str, *, keep_last: bool) -> list[str]:
    starts = [i for i, line in enumerate(lines) if line.startswith(f"def {name}(")]
    drop = starts[:-1] if keep_last else starts
    out, skipping = [], False
    for i, line in enumerate(lines):
        if i in drop:
            skipping = True
            continue
        if skipping and line and not line[0].isspace():
            skipping = False
        if not skipping:
            out.append(line)
    return out


def _squeeze(lines: list[str]) -> list[str]:
    """At most two blank lines in a row, as a reader expects."""
    out: list[str] = []
    for line in lines:
        if line == "" and len(out) >= 2 and out[-1] == "" and out[-2] == "":
            continue
        out.append(line)
    return out


def header_for(mechanism: str, scenario: Scenario, params: dict[str, Any], name: str = "repro.py") -> list[str]:
    needs = "the Python standard library"
    if mechanism in NEEDS_APSW or (mechanism == "wal_reset_race" and params["DRIVER"] == "apsw"):
        version = params.get("SQLITE_VERSION") or scenario.sqlite.version
        needs += " and apsw" + (f" built with SQLite {version} (pip install 'apsw=={version}.*')"
                                if version and version != "system" else "")
    titles = {"lock_breaker": "a stray open()/close() of the live database drops SQLite's POSIX locks",
              "two_libraries": "two SQLite libraries in one process on one database",
              "fork": "fork() with an open SQLite connection",
              "power_loss": "a power cut: what was not synced is gone",
              "wal_reset_race": "SQLite's WAL-reset race (3.7.0 - 3.51.2) loses committed transactions"}
    lines = [f"Reproducer: {titles[mechanism]}.", "",
             f"Written by walstress repro from {scenario.source} (scenario {scenario.name}, seed {scenario.seed}).",
             f"Needs {needs}.", "",
             f"    python3 {name} [--runs N]",
             "", "prints REPRODUCED k/N (exit 0) or NOT REPRODUCED 0/N (exit 1). Each run starts from a fresh",
             "copy of a small database built here; what a run acknowledged is checked after it."]
    left_out = sorted({w.role for w in scenario.active_workers()} & _LEFT_OUT_ROLES)
    if left_out and mechanism != "wal_reset_race":
        lines.append(f"The scenario's {' and '.join(left_out)} workers are left out (not needed for the mechanism).")
    if mechanism != "wal_reset_race" and scenario.sqlite.driver == "apsw" and mechanism != "power_loss":
        lines.append(f"The scenario ran SQLite {scenario.sqlite.version} through apsw; this file uses Python's "
                     "sqlite3 (its SQLite is printed first).")
    return lines


def write_repro(target: str | Path, out: str | Path, overrides: list[str] | None = None) -> tuple[Path, str]:
    scenario = scenario_of(target, overrides)
    mechanism = mechanism_of(scenario)
    params = parameters(mechanism, scenario)
    path = Path(out)
    text = render(mechanism, params, header_for(mechanism, scenario, params, path.name))
    path.write_text(text)
    path.chmod(0o755)
    return path, mechanism

