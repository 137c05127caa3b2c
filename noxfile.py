"""nox sessions for walstress.

    nox                       lint, tests and smoke (the default; tag "ci")
    nox -s tests -- -x        the README's test command on each Python; arguments go to pytest
    nox -s wheel              build the wheel, install it (not editable) and run the tests against it
    nox -s lint               ruff, mypy and the layering contracts (lint-imports)
    nox -s apsw_releases      refresh the shipped list of SQLite versions apsw has wheels for
    nox -s nightly            property and stateful tests with the nightly Hypothesis profile
    nox -s smoke              the 15 s smoke scenario
    nox -s stress             full-size (65K pages) healthy stress, a matrix of checkpoint modes
    nox -s repro              every shipped reproduction (scenarios/*.toml but smoke) against its expect
    nox -s sqlite             the smoke scenario on each SQLite version in SQLITE_VERSIONS (apsw)
    nox -s bench              walstress bench at full size: every benchmark next to its baseline
    nox -s crash              every shipped crash exploration (scenarios/crash/) against its verdict
    nox -s damage             `walstress check` on 2,000 damaged databases (the damage corpus)

Tags group the sessions: ``nox -t ci`` (lint, tests, wheel, smoke), ``nox -t repro``
(every reproduction: repro, crash and the SQLite versions), ``nox -t long``
(everything that takes more than a few minutes). ``nox -l`` lists them all.
tests and wheel run on each Python of PYTHONS this machine has (a missing one
is skipped, not an error); the virtual environments are made with uv when it
is installed, else with virtualenv.

For smoke, stress, repro and sqlite, arguments after ``--`` pass
through to ``walstress run`` (e.g. ``-- --duration 5 --set seed=3`` or
``-- --shard 2/4``); scenario files given first replace the session's
default scenarios. Output goes to reports/nox-<session>-<time>/ unless
``--out`` is passed. Every session installs the project through its own
extras, so a fresh machine needs only Python >= 3.10 and nox.
"""

from __future__ import annotations

import json
import shlex
import tempfile
import time
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
SCENARIOS = ROOT / "scenarios"
REPORTS = ROOT / "reports"
SMOKE = SCENARIOS / "smoke.toml"

# Before, inside and after the WAL-reset bug (3.7.0 - 3.51.2; fixed in 3.51.3,
# backported to 3.50.7 and 3.44.6): the system-like 3.40.1, the reporter's
# bundled 3.50.4, the last affected and the first fixed release, the newest.
SQLITE_VERSIONS = ["3.40.1", "3.44.2", "3.50.4", "3.51.2", "3.51.3", "3.54.1"]

# The full-size healthy stress: the reporter's database size and FTS5 schema,
# every checkpoint mode; a healthy SQLite must stay clean in each cell.
STRESS_SETTINGS = [
    "database.schema=hermes",
    "database.pages=65536",
    'checkpoint.mode=["PASSIVE", "FULL", "RESTART", "TRUNCATE"]',
    "workers.writer.count=4",
    "workers.reader.count=2",
    "duration=30s",
]

# The Pythons the package supports (requires-python); sessions with python=PYTHONS skip the ones not installed.
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]

nox.options.sessions = ["lint", "tests", "smoke"]
nox.options.error_on_missing_interpreters = False
nox.options.default_venv_backend = "uv|virtualenv"


def readme_test_command() -> list[list[str]]:
    """The README's test command (its second indented line), split into its commands at ``&&``."""
    lines = [ln.strip() for ln in (ROOT / "README.md").read_text().splitlines() if ln.startswith("    ")]
    return [shlex.split(part) for part in lines[1].split("&&")]


def _install(session: nox.Session, extras: str = "") -> None:
    session.install("-e", f".[{extras}]" if extras else ".")


def _split_posargs(session: nox.Session, default: list[Path]) -> tuple[list[str], bool, list[str]]:
    """(scenarios, whether they were given, walstress arguments): leading *.toml
    arguments replace the default scenarios; the rest goes to walstress."""
    args = list(session.posargs)
    files: list[str] = []
    while args and args[0].endswith(".toml"):
        files.append(args.pop(0))
    return (files or [str(p) for p in default]), bool(files), args


def _take_out(name: str, args: list[str]) -> tuple[Path, list[str]]:
    """The output folder: --out from the arguments (taken out of them), else reports/nox-NAME-TIME."""
    rest: list[str] = []
    out: Path | None = None
    items = iter(args)
    for arg in items:
        if arg == "--out":
            out = Path(next(items, ""))
        elif arg.startswith("--out="):
            out = Path(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    return (out or REPORTS / f"nox-{name}-{time.strftime('%Y%m%d-%H%M%S')}"), rest


def _outs(root: Path, scenarios: list[str]) -> list[tuple[str, Path]]:
    """One scenario writes to root itself; several write to root/<scenario stem>."""
    if len(scenarios) == 1:
        return [(scenarios[0], root)]
    return [(scenario, root / Path(scenario).stem) for scenario in scenarios]


def _walstress_run(session: nox.Session, scenario: str, out: Path, args: list[str],
                   extra: list[str] | None = None, keep_going: bool = False) -> dict | None:
    """walstress run into out; returns its results.json (None if the run wrote none).

    Exit 1 (a verdict differs from its expect) does not stop the session here;
    callers decide from results["ok"]. Exit 2 (usage, scenario or environment
    error) does, unless keep_going.
    """
    command = ["walstress", "run", scenario]
    for setting in extra or []:
        command += ["--set", setting]
    command += ["--out", str(out), *args]
    session.run(*command, success_codes=[0, 1, 2] if keep_going else [0, 1])
    results = out / "results.json"
    return json.loads(results.read_text()) if results.is_file() else None


def _run_all(session: nox.Session, name: str, default: list[Path],
             extra: list[str] | None = None, extra_if_default: bool = False) -> list[tuple[str, dict | None]]:
    scenarios, given, args = _split_posargs(session, default)
    root, args = _take_out(name, args)
    settings = extra if (not extra_if_default or not given) else None
    return [(scenario, _walstress_run(session, scenario, out, args, settings))
            for scenario, out in _outs(root, scenarios)]


def _require_ok(session: nox.Session, outcomes: list[tuple[str, dict | None]]) -> None:
    differing = [scenario for scenario, data in outcomes if data is None or not data.get("ok")]
    if differing:
        session.error(f"verdicts differ from expect in: {', '.join(differing)}")


@nox.session(python=PYTHONS, tags=["ci"])
def tests(session: nox.Session) -> None:
    """The README's test command, as written there (arguments after -- are added to pytest's)."""
    install, test = readme_test_command()
    if install[:2] != ["pip", "install"] or test[:3] != ["python", "-m", "pytest"]:
        session.error(f"the README's test command is not 'pip install ... && python -m pytest ...': {install} {test}")
    session.install("pip")   # walstress installs apsw builds with pip; an environment made by uv has none
    session.install(*install[2:])
    session.run(*test, *session.posargs)


@nox.session(python=PYTHONS, tags=["ci"])
def wheel(session: nox.Session) -> None:
    """Build the wheel, install it with its test extra (not editable) and run the test suite against it:
    what a user installs must hold every module and data file the tests reach."""
    folder = Path(tempfile.mkdtemp(prefix="walstress-wheel-"))
    session.install("build")   # the standard front end: works in a uv environment (which has no pip) too
    session.run("python", "-m", "build", "--wheel", "--outdir", str(folder), ".", silent=True)
    (built,) = folder.glob("walstress-*.whl")
    session.install("pip", f"{built}[test]")   # pip: as in the tests session
    where = session.run("python", "-c", "import walstress; print(walstress.__file__)", silent=True)
    if str(ROOT / "harness") in str(where):
        session.error(f"walstress is imported from the source tree ({where.strip()}), not from the wheel")
    session.log(f"testing {built.name}, imported from {str(where).strip()}")
    _, test = readme_test_command()
    session.run(*test, *session.posargs)


@nox.session
def apsw_releases(session: nox.Session) -> None:
    """Read the package indexes pip is configured with and rewrite the list of SQLite versions apsw has
    wheels for that walstress ships (harness/walstress/sqlite/apsw-releases.json; used when no index answers)."""
    _install(session)
    session.run("python", "-m", "walstress.sqlite.versions", "--write-shipped")


@nox.session(tags=["long"])
def nightly(session: nox.Session) -> None:
    """Property and stateful tests with the nightly Hypothesis profile (more examples, failures kept)."""
    _install(session, "test")
    session.run("pytest", "tests/test_stateful.py", "tests/test_scenario.py", *session.posargs,
                env={"HYPOTHESIS_PROFILE": "nightly"})


@nox.session(tags=["long"])
def damage(session: nox.Session) -> None:
    """`walstress check` on the damage corpus: 2,000 damaged databases (``-- N`` for another count), each
    answered healthy or damaged without an exception, in bounded time, in agreement with SQLite."""
    _install(session, "test")
    count = session.posargs[0] if session.posargs else "2000"
    if not count.isdigit() or int(count) < 1:
        session.error(f"nox -s damage -- N: N is a number of examples, not {count!r}")
    session.run("pytest", "tests/test_check_damage.py", "-q",
                env={"WALSTRESS_DAMAGE_EXAMPLES": count})


@nox.session(tags=["ci"])
def lint(session: nox.Session) -> None:
    """ruff, mypy and the import-linter contracts of the layers (rules and settings in pyproject.toml)."""
    _install(session, "lint")
    session.run("ruff", "check", "harness", "noxfile.py", "tests")
    session.run("mypy")
    session.run("lint-imports")


@nox.session(tags=["ci"])
def smoke(session: nox.Session) -> None:
    """The smoke scenario: a short healthy run that must be clean."""
    _install(session)
    _require_ok(session, _run_all(session, "smoke", [SMOKE]))


@nox.session(tags=["long"])
def stress(session: nox.Session) -> None:
    """Full-size healthy stress: 65K-page hermes database, every checkpoint mode; must be clean.

    Scenario files given after -- run as they are, without the full-size settings.
    """
    _install(session)
    _require_ok(session, _run_all(session, "stress", [SMOKE], STRESS_SETTINGS, extra_if_default=True))


def reproductions() -> list[Path]:
    """Every shipped scenario but smoke, the mechanisms of "How To Corrupt", and every example's scenarios;
    each declares its own expect."""
    shipped = sorted(p for p in SCENARIOS.glob("*.toml") if p.name != SMOKE.name)
    mechanisms = sorted((SCENARIOS / "mechanisms").glob("*.toml"))
    return shipped + mechanisms + sorted((ROOT / "examples").glob("*/*.toml"))


def _cell_lines(data: dict) -> list[tuple[str, str, str, bool]]:
    lines = []
    for cell in data.get("cells", []):
        verdicts = ",".join(run["verdict"] for run in cell["results"])
        lines.append((f"{cell['cell_id']} {cell['label']}", cell["expect"], verdicts, bool(cell["matches_expect"])))
    return lines


@nox.session(tags=["repro", "long"])
def repro(session: nox.Session) -> None:
    """Every shipped reproduction against its expected verdict; fails when one differs."""
    _install(session, "apsw")  # several reproductions drive SQLite through apsw
    scenarios, _given, args = _split_posargs(session, reproductions())
    if not scenarios:
        session.skip("no reproduction scenarios under scenarios/")
    root, args = _take_out("repro", args)
    table: list[tuple[str, str, str, str, bool]] = []
    for scenario in scenarios:
        path = Path(scenario)
        name = f"{path.parent.name}-{path.stem}" if path.parent.parent.name == "examples" else path.stem
        data = _walstress_run(session, scenario, root / name, args, keep_going=True)
        if data is None:
            table.append((name, "-", "-", "no results (see the error above)", False))
            continue
        for cell, expect, verdicts, ok in _cell_lines(data):
            table.append((name, cell, expect, verdicts, ok))
    session.log("reproductions:")
    for name, cell, expect, verdicts, ok in table:
        session.log(f"  {'ok  ' if ok else 'DIFF'} {name} [{cell}] expect {expect}: {verdicts}")
    root.mkdir(parents=True, exist_ok=True)
    (root / "repro-summary.json").write_text(json.dumps(
        [{"scenario": n, "cell": c, "expect": e, "verdicts": v, "matches": ok} for n, c, e, v, ok in table],
        indent=1))
    differing = [f"{n} [{c}]" for n, c, _, _, ok in table if not ok]
    if differing:
        session.error(f"{len(differing)} of {len(table)} reproduction cell(s) differ from expect: "
                      + "; ".join(differing))
    session.log(f"all {len(table)} reproduction cell(s) match their expected verdicts")


@nox.session(tags=["repro", "long"])
@nox.parametrize("version", SQLITE_VERSIONS, ids=SQLITE_VERSIONS)
def sqlite(session: nox.Session, version: str) -> None:
    """The smoke scenario on one SQLite version (the apsw wheel that bundles it)."""
    session.install("-e", ".[apsw]", f"apsw~={version}.0")
    loaded = str(session.run("python", "-c", "import apsw; print(apsw.sqlite_lib_version())", silent=True))
    if loaded.strip() != version:
        session.error(f"apsw loads SQLite {loaded.strip()}, not {version}")
    outcomes = _run_all(session, f"sqlite-{version}", [SMOKE], ["sqlite.driver=apsw"])
    for scenario, data in outcomes:
        if data is None:
            continue
        runs = [run for cell in data["cells"] for run in cell["results"]]
        seen = sorted({v for run in runs for v in run["sqlite"]["worker_versions"]})
        if seen != [version]:
            session.error(f"{scenario}: workers loaded SQLite {seen}, not {version}")
    _require_ok(session, outcomes)


@nox.session(tags=["long"])
def bench(session: nox.Session) -> None:
    """Every benchmark of ``walstress bench`` at full size, each next to its baseline (bench.json, bench.md);
    arguments after ``--`` go to walstress bench (e.g. ``-- --only 1,3,7`` or ``-- --size tiny``)."""
    _install(session, "apsw")   # the WAL-reset race on SQLite 3.51.2 needs apsw
    root, args = _take_out("bench", list(session.posargs))
    session.run("walstress", "bench", *args, "--out", str(root))   # full size unless --size says otherwise


# The crash explorations and what each must find: (scenario, extra arguments, verdict)
CRASH_EXPLORATIONS = [
    ("wal-full.toml", [], "clean"),
    ("wal-full.toml", ["--model", "posix-ordered", "--max-states", "3000"], "clean"),
    ("wal-full.toml", ["--model", "lying", "--max-states", "3000"], "lost-writes"),
    ("wal-off.toml", [], "corrupt"),
    ("rollback-full.toml", [], "clean"),
    ("rollback-full.toml", ["--after-cut", "delete-journal"], "corrupt"),
]


@nox.session(tags=["repro", "long"])
def crash(session: nox.Session) -> None:
    """Every shipped crash exploration (scenarios/crash/) against the verdict it must reach, with the
    smallest failing state of each replayed; arguments after ``--`` go to ``walstress crash explore``."""
    _install(session, "apsw")
    root, args = _take_out("crash", list(session.posargs))
    table = []
    for number, (name, extra, want) in enumerate(CRASH_EXPLORATIONS):
        out = root / f"{number:02d}-{Path(name).stem}"
        session.run("walstress", "crash", "explore", str(SCENARIOS / "crash" / name), *extra, *args,
                    "--out", str(out), success_codes=[0, 1])
        report = json.loads((out / "crash.json").read_text())
        replayed = "-"
        if report["failing"]:
            session.run("walstress", "crash", "replay", report["failing"][0]["file"])
            replayed = "as recorded"
        totals = report["totals"]
        table.append((f"{name} {' '.join(extra)}".strip(), want, report["verdict"], totals, report, replayed))
    session.log("crash explorations:")
    for label, want, got, totals, report, replayed in table:
        session.log(f"  {'ok  ' if got == want else 'DIFF'} {label}: {got} (want {want}); {totals['explored']} of "
                    f"{totals['possible']} states, {totals['corrupt']} corrupt, {totals['lost_synced']} lost synced; "
                    f"{report['states_per_second']} states/s; smallest replayed: {replayed}")
    (root / "crash-summary.json").write_text(json.dumps(
        [{"exploration": label, "want": want, "verdict": got, "totals": totals,
          "states_per_second": report["states_per_second"], "seconds": report["seconds"]}
         for label, want, got, totals, report, _ in table], indent=1) + "\n")
    differing = [label for label, want, got, *_ in table if got != want]
    if differing:
        session.error(f"{len(differing)} crash exploration(s) differ: " + "; ".join(differing))
