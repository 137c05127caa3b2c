"""pytest plugin: walstress scenarios as regression tests.

Loaded through the ``pytest11`` entry point (name ``walstress``; disable with
``-p no:walstress``). Importing it loads nothing of walstress but its option
handling: the runner, the judge, the SQLite drivers and the report load when
a walstress fixture, marker, option or scenario file is used. It offers:

``walstress_run`` (fixture)
    ``walstress_run(source, *overrides, expect=None, duration=None,
    repeat=None, check=True)`` runs a scenario (a TOML file or a dict) in the
    test's tmp dir and returns the parsed :class:`walstress.Result`. With
    ``check`` (the default) the test fails, naming every run dir, when a cell
    does not match its expectation. ``walstress_run.check(result, expect)``
    and ``walstress_run.rejudge(result)`` check or judge a finished run again.

``walstress_template`` (fixture)
    ``walstress_template(schema="minimal", pages=2000, page_size=4096,
    seed=0, copy=False)``: the path of a cached template database (treat it
    as read-only), or with ``copy=True`` a fresh copy in the test's tmp dir.

``@pytest.mark.walstress(scenario, *overrides, expect=None, duration=None, repeat=None)``
    runs the scenario before the test body (while the test is set up); the
    test fails unless every cell matches ``expect`` (default: the scenario's
    own). The body may take the ``walstress_result`` fixture to look at the
    numbers.

Scenario files
    ``pytest scenarios/x.toml`` turns each matrix cell into its own test
    item, so ``pytest -n auto`` spreads cells over cores. Only ``.toml``
    files named explicitly are collected, never by discovery.
    ``--walstress-scenarios=FILE`` (or the ini option ``walstress_scenarios``)
    adds files to what the session collects anyway (``testpaths`` or the
    arguments). ``--walstress-set``, ``--walstress-duration`` and
    ``--walstress-repeat`` apply to those files. A cell is a test function
    to fixtures: a conftest's autouse fixtures apply to it.

Options
    Every ``--walstress-NAME`` option is also the ini option
    ``walstress_NAME`` (``[tool.pytest.ini_options]``, pytest.ini, ...); the
    command line wins, a list on the command line replacing the ini's list.
    Values are checked when pytest starts: a wrong one is a usage error
    (exit 4) naming the option.

Every run attaches its verdict, SQLite version and key numbers to the test
report (``report.walstress_properties``) and to the JUnit XML: under the
default ``junit_family`` (xunit2), which has no properties on a test case,
as properties of the test suite named ``<test id>::walstress_<name>``; under
``xunit1`` or ``legacy`` as the test case's properties (``user_properties``).
Every failure message names the run dirs. Under pytest-xdist each worker
writes run dirs under its own base temp dir; templates go to one cache per
test session (``--walstress-cache-dir``, ``$WALSTRESS_CACHE_DIR`` or the ini
option to choose another), which is safe under concurrent builders (an
``flock`` per key).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from walstress.api import Result

MARKER = "walstress"
PROPERTY_PREFIX = "walstress_"
REPORT_ATTRIBUTE = "walstress_properties"

_SETTINGS = pytest.StashKey["Settings"]()
_REQUESTED = pytest.StashKey[set]()
_CACHE_DIR = pytest.StashKey[Path]()
_MARKER_RESULT = pytest.StashKey["Result"]()
_RESULTS = pytest.StashKey[dict]()
_PROPERTIES = pytest.StashKey[list[tuple[str, object]]]()

# name -> (metavar, help, ini type); --walstress-NAME on the command line, walstress_NAME in the ini
_OPTIONS: dict[str, tuple[str, str, str]] = {
    "scenarios": ("FILE", "scenario TOML file to collect besides the session's other tests, one test item "
                          "per matrix cell (repeatable)", "linelist"),
    "set": ("KEY=VALUE", "override a key of the collected scenario files (repeatable)", "linelist"),
    "duration": ("SECONDS", 'run length for the collected scenario files, e.g. 5 or "500ms"', "string"),
    "repeat": ("N", "runs per cell for the collected scenario files", "string"),
    "out": ("DIR", "keep the run dirs of collected scenario files under DIR (default: pytest's tmp dirs)",
            "string"),
    "cache-dir": ("DIR", "template cache (default: $WALSTRESS_CACHE_DIR, else one per test session)", "string"),
}


# ------------------------------------------------------------------- options
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("walstress", "walstress scenarios as tests")
    for name, (metavar, text, ini_type) in _OPTIONS.items():
        dest = f"walstress_{name.replace('-', '_')}"
        if ini_type == "linelist":
            group.addoption(f"--walstress-{name}", dest=dest, action="append", default=None,
                            metavar=metavar, help=f"{text}; ini: {dest}")
        else:
            group.addoption(f"--walstress-{name}", dest=dest, default=None, metavar=metavar,
                            help=f"{text}; ini: {dest}")
        parser.addini(dest, f"walstress: {text} (--walstress-{name} wins)", type=ini_type)  # type: ignore[arg-type]


@dataclass
class Settings:
    """The walstress options of a session: the command line's, else the ini file's, checked."""

    scenarios: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    overrides_from: str = ""
    duration: str | None = None
    repeat: int | None = None
    out: Path | None = None
    cache_dir: Path | None = None
    cache_dir_given: bool = False  # on the command line, which wins over $WALSTRESS_CACHE_DIR


def _raw(config: pytest.Config, name: str) -> tuple[Any, str, Path]:
    """(value, where it came from, folder relative paths are taken from); value None when unset."""
    dest = f"walstress_{name.replace('-', '_')}"
    value = config.getoption(dest)
    if value not in (None, []):
        return value, f"--walstress-{name}", config.invocation_params.dir
    ini = config.getini(dest)
    base = config.inipath.parent if config.inipath is not None else config.rootpath
    if ini not in (None, "", []):
        return ini, f"{dest} (ini {config.inipath.name if config.inipath else ''})", base
    return None, "", base


def _usage(where: str, message: str) -> pytest.UsageError:
    return pytest.UsageError(f"walstress: {where}: {message}")


def read_settings(config: pytest.Config) -> Settings:
    """The session's walstress options; a wrong value raises :class:`pytest.UsageError` (exit 4)."""
    settings = Settings()
    value, where, base = _raw(config, "scenarios")
    for name in value or []:
        path = Path(name) if Path(name).is_absolute() else base / name
        if not path.is_file():
            raise _usage(where, f"{name}: " + ("no such scenario file" if not path.exists() else "not a file"))
        settings.scenarios.append(str(name) if where.startswith("--") else str(path))
    value, where, _ = _raw(config, "duration")
    if value is not None:
        from walstress.settings import parse_duration_seconds

        try:
            seconds = parse_duration_seconds(value)
        except ValueError as exc:
            raise _usage(where, f"{value} is not {exc}") from None
        if seconds <= 0:
            raise _usage(where, f"{value}: a duration must be more than 0")
        settings.duration = str(value)
    value, where, _ = _raw(config, "repeat")
    if value is not None:
        try:
            settings.repeat = int(value)
        except ValueError:
            raise _usage(where, f"{value} is not a whole number") from None
        if settings.repeat < 1:
            raise _usage(where, f"{value}: at least 1 run per cell")
    for name in ("out", "cache-dir"):
        value, where, base = _raw(config, name)
        if value is None:
            continue
        path = Path(value).expanduser()
        path = path if path.is_absolute() else base / path
        if name == "out":
            settings.out = path
        else:
            settings.cache_dir, settings.cache_dir_given = path, where.startswith("--")
    value, where, _ = _raw(config, "set")
    if value:
        settings.overrides = [str(item) for item in value]
        settings.overrides_from = where
        for item in settings.overrides:
            if "=" not in item:
                raise _usage(f"{where} {item}", "expected KEY=VALUE")
    return settings


def _check_overrides(settings: Settings, files: set[Path]) -> None:
    """The overrides applied to each scenario file they apply to: an unknown key or a wrong value is a
    usage error. (With no scenario file in the session they apply to nothing: only their form counts.)"""
    if not settings.overrides or not files:
        return
    from walstress import catalog
    from walstress.errors import ScenarioError

    for path in sorted(files):
        try:
            catalog.load_scenario(path, settings.overrides)
        except ScenarioError as exc:
            if exc.source != "--set":  # the file's own problem: reported when it is collected
                continue
            item = next((o for o in settings.overrides if o.partition("=")[0].strip() == exc.key), exc.key)
            raise _usage(f"{settings.overrides_from} {item}", f"{exc.message} (in {path.name})") from None


def settings_of(config: pytest.Config) -> Settings:
    settings = config.stash.get(_SETTINGS, None)
    if settings is None:
        settings = config.stash[_SETTINGS] = read_settings(config)
    return settings


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(scenario, *overrides, expect=None, duration=None, repeat=None): run a walstress "
        "scenario (file or dict) before the test; fail unless every cell matches expect",
    )
    settings = settings_of(config)
    config.pluginmanager.register(_Summary(config), "walstress-summary")
    if settings.scenarios:  # added to the session's arguments (testpaths included), never replacing them
        named = {_arg_path(config, arg) for arg in config.args}
        for name in settings.scenarios:
            if _arg_path(config, name) not in named:
                config.args.append(name)
    config.stash[_REQUESTED] = _requested_files(config)
    _check_overrides(settings, config.stash[_REQUESTED])


def _arg_path(config: pytest.Config, arg: str) -> Path:
    path = Path(str(arg).split("::", 1)[0])
    return (path if path.is_absolute() else config.invocation_params.dir / path).resolve()


def _requested_files(config: pytest.Config) -> set[Path]:
    """The .toml files named on the command line (--walstress-scenarios are among them by now), resolved."""
    return {_arg_path(config, arg) for arg in config.args if str(arg).split("::", 1)[0].endswith(".toml")}


def pytest_report_header(config: pytest.Config) -> str | None:
    if not config.stash.get(_REQUESTED, None):
        return None
    import sqlite3

    from walstress.version import __version__

    return f"walstress {__version__}, SQLite {sqlite3.sqlite_version} (python stdlib)"


# ------------------------------------------------------------ shared helpers
def template_cache_dir(config: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One template cache per test session, shared by the xdist workers of that session."""
    cached = config.stash.get(_CACHE_DIR, None)
    if cached is not None:
        return cached
    settings = settings_of(config)
    # the command line, then $WALSTRESS_CACHE_DIR, then the ini
    explicit = settings.cache_dir if settings.cache_dir_given else (
        os.environ.get("WALSTRESS_CACHE_DIR") or settings.cache_dir)
    if explicit:
        path = Path(explicit)
    else:
        base = tmp_path_factory.getbasetemp()
        if hasattr(config, "workerinput"):  # an xdist worker's basetemp is <session dir>/popen-gwN
            base = base.parent
        path = base / "walstress-cache"
    path.mkdir(parents=True, exist_ok=True)
    config.stash[_CACHE_DIR] = path
    return path


def _safe_name(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text)[:limit] or "walstress"


def _resolve_source(source: Any, anchors: list[Path]) -> Any:
    """A dict as is; a relative path tried against each anchor folder in turn."""
    if isinstance(source, dict):
        return source
    path = Path(source)
    if path.is_absolute():
        return path
    for anchor in anchors:
        candidate = anchor / path
        if candidate.exists():
            return candidate
    return path


def _overrides(overrides: tuple | list, expect: str | None) -> list[str]:
    items = [str(o) for o in overrides]
    if expect is not None:
        items.append(f"expect={expect}")
    return items


def _run_scenario(cache_dir: Path, source: Any, overrides: list[str], out_dir: Path, *,
                  duration: Any = None, repeat: int | None = None, cell_index: int | None = None) -> Result:
    """Run a scenario (or one of its cells) into out_dir with the session's template cache."""
    from walstress.api import Result, load_scenario
    from walstress.runner import run_scenario

    if duration is not None:
        overrides = [*overrides, f"duration={duration}"]
    scenario = load_scenario(source, overrides)
    cells_filter = None
    if cell_index is not None:
        def cells_filter(cells: list) -> list:
            return [cell for cell in cells if cell.index == cell_index]
    data = run_scenario(scenario, out_dir, repeat=repeat, cache_dir=cache_dir,
                        cells_filter=cells_filter)
    return Result(data=data, path=Path(out_dir) / "results.json")


def _matches(cell: dict[str, Any], expect: str | None) -> bool:
    if expect is None:
        return bool(cell["matches_expect"])
    from walstress.runner import cell_matches

    return cell_matches(expect, cell.get("expect_fraction", 1.0), cell["results"])[1]


def mismatch_message(result: Result, expect: str | None = None) -> str | None:
    """None when every cell matches its expectation; else a message naming every run dir."""
    cells = result.cells
    bad = [cell for cell in cells if not _matches(cell, expect)]
    if cells and not bad:
        return None
    scenario = result.data.get("scenario", {}).get("name", "?")
    if not cells:
        return f"walstress: scenario {scenario} ran no cell; results: {result.path}"
    lines = [f"walstress: {len(bad)} of {len(cells)} cell(s) of scenario {scenario} did not match the expectation"]
    from walstress.checks.findings import matches

    for cell in bad:
        wanted = expect or cell["expect"]
        counts = ", ".join(f"{cell[k]} {k}" for k in ("clean", "corrupt", "lost", "errors") if cell.get(k))
        lines.append(f"  {cell['cell_id']} [{cell['label']}]: expected {wanted}, got {counts or 'no runs'}")
        for run in cell["results"]:
            flag = "  " if matches(wanted, run["verdict"]) else "! "
            lines.append(f"   {flag}{run['verdict']}: {run['reason']}")
            lines.append(f"     run dir: {run['run_dir']}")
    lines.append(f"  results: {result.path}")
    return "\n".join(lines)


def _cell_properties(cell: dict[str, Any], scenario: str, prefix: str) -> list[tuple[str, object]]:
    runs = cell["results"]
    versions = sorted({v for run in runs for v in run.get("sqlite", {}).get("worker_versions", [])})
    p99s = [run.get("latency_ms", {}).get("write", {}).get("p99_ms") for run in runs]
    p99s = [p for p in p99s if p is not None]
    values: list[tuple[str, object]] = [
        ("scenario", scenario),
        ("cell", f"{cell['cell_id']} {cell['label']}"),
        ("expect", cell["expect"]),
        ("verdict", ",".join(run["verdict"] for run in runs)),
        ("matches_expect", bool(cell["matches_expect"])),
        ("sqlite_version", ",".join(versions) or "unknown"),
        ("runs", cell["runs"]),
        ("acked_writes", sum(run["writes"]["acked"] for run in runs)),
        ("lost_writes", sum(run["writes"]["lost"] for run in runs)),
        ("wal_peak_bytes", cell.get("wal_peak_bytes", 0)),
        ("checkpoints", sum(run.get("checkpoints", {}).get("count", 0) for run in runs)),
        ("write_p99_ms", max(p99s) if p99s else ""),
        ("run_dir", ",".join(run["run_dir"] for run in runs)),
    ]
    return [(f"{PROPERTY_PREFIX}{prefix}{name}", value) for name, value in values]


def record_result(item: pytest.Item, result: Result) -> None:
    """Attach verdicts and key numbers to the item's report (JUnit XML properties too).

    A result judged again (same results.json) replaces what its first judgement attached.
    """
    results: dict[str, Result] = item.stash.setdefault(_RESULTS, {})
    results[str(result.path)] = result
    properties: list[tuple[str, object]] = []
    for each in results.values():
        scenario = each.data.get("scenario", {}).get("name", "?")
        for cell in each.cells:
            prefix = "" if len(each.cells) == 1 else f"{cell['cell_id']}_"
            properties.extend(_cell_properties(cell, scenario, prefix))
        properties.append((f"{PROPERTY_PREFIX}results", str(each.path)))
    item.stash[_PROPERTIES] = properties
    if junit_suite_properties(item.config):
        return
    kept = [(name, value) for name, value in item.user_properties
            if not (isinstance(name, str) and name.startswith(PROPERTY_PREFIX))]
    item.user_properties[:] = kept + properties


def recorded_properties(item: pytest.Item) -> list[tuple[str, object]]:
    """The walstress properties recorded on a test item (its report's ``walstress_properties``)."""
    recorded: list[tuple[str, object]] | None = item.stash.get(_PROPERTIES, None)
    return list(recorded or [])


def junit_suite_properties(config: pytest.Config) -> bool:
    """True when JUnit XML is written in a family without test case properties (xunit2, the default)."""
    if not config.getoption("xmlpath", None):
        return False
    try:
        return config.getini("junit_family") == "xunit2"
    except ValueError:  # the junitxml plugin is disabled
        return False


def _fail_if_mismatch(result: Result, expect: str | None = None) -> None:
    message = mismatch_message(result, expect)
    if message is not None:
        pytest.fail(message, pytrace=False)


# ------------------------------------------------------------------ fixtures
class WalstressRunner:
    """The ``walstress_run`` fixture: run scenarios inside a test."""

    def __init__(self, item: pytest.Item, tmp_path: Path, cache_dir: Path):
        self._item = item
        self._tmp_path = tmp_path
        self._cache_dir = cache_dir
        self._count = 0

    def __call__(self, source: str | Path | dict, *overrides: str, expect: str | None = None,
                 duration: Any = None, repeat: int | None = None, check: bool = True) -> Result:
        anchors = [Path(str(self._item.path)).parent, self._item.config.rootpath,
                   self._item.config.invocation_params.dir]
        self._count += 1
        out_dir = self._tmp_path / f"walstress-{self._count}"
        result = _run_scenario(self._cache_dir, _resolve_source(source, anchors),
                               _overrides(overrides, expect), out_dir, duration=duration, repeat=repeat)
        record_result(self._item, result)
        if check:
            _fail_if_mismatch(result)
        return result

    def check(self, result: Result, expect: str | None = None) -> Result:
        """Fail the test unless every cell matches ``expect`` (default: each cell's own)."""
        _fail_if_mismatch(result, expect)
        return result

    def rejudge(self, result: Result) -> Result:
        """Judge every run of a finished result again from its run dirs (history + database)."""
        from walstress.api import Result
        from walstress.runner import rejudge_dir

        data = rejudge_dir(result.path.parent)
        fresh = Result(data=data, path=result.path)
        record_result(self._item, fresh)
        return fresh


@pytest.fixture
def walstress_run(request: pytest.FixtureRequest, tmp_path: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> WalstressRunner:
    """Run a walstress scenario (file or dict, with overrides) in the test's tmp dir."""
    return WalstressRunner(request.node, tmp_path, template_cache_dir(request.config, tmp_path_factory))


@pytest.fixture
def walstress_template(request: pytest.FixtureRequest, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """``walstress_template(schema="minimal", pages=2000, page_size=4096, seed=0, copy=False)`` -> Path."""
    cache_dir = template_cache_dir(request.config, tmp_path_factory)
    copies = iter(range(1, 1_000_000))

    def get(schema: str = "minimal", pages: int = 2000, page_size: int = 4096, seed: int = 0, *,
            copy: bool = False) -> Path:
        from walstress.database.template import copy_template, get_template

        path, _built = get_template(schema=schema, pages=pages, page_size=page_size, seed=seed,
                                    cache_dir=cache_dir)
        if not copy:
            return path
        dest = tmp_path / f"template-{next(copies)}-{path.name}"
        copy_template(path, dest)
        return dest

    return get


def _marker_result(item: pytest.Item, tmp_path_factory: pytest.TempPathFactory) -> Result:
    """Run the scenario of the item's walstress marker once; later calls reuse the result."""
    cached = item.stash.get(_MARKER_RESULT, None)
    if cached is not None:
        return cached
    marker = item.get_closest_marker(MARKER)
    if marker is None or not marker.args:
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.{MARKER} needs a scenario (file or dict)")
    source, *positional = marker.args
    known = {"expect", "overrides", "set", "duration", "repeat"}
    unknown = set(marker.kwargs) - known
    if unknown:
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.{MARKER}: unknown argument(s) "
                                f"{', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    overrides = list(positional) + list(marker.kwargs.get("overrides", ())) + list(marker.kwargs.get("set", ()))
    anchors = [Path(str(item.path)).parent, item.config.rootpath, item.config.invocation_params.dir]
    out_dir = tmp_path_factory.mktemp(f"walstress-{_safe_name(item.name)}-", numbered=True)
    result = _run_scenario(template_cache_dir(item.config, tmp_path_factory), _resolve_source(source, anchors),
                           _overrides(overrides, marker.kwargs.get("expect")), out_dir,
                           duration=marker.kwargs.get("duration"), repeat=marker.kwargs.get("repeat"))
    record_result(item, result)
    item.stash[_MARKER_RESULT] = result
    return result


@pytest.fixture
def walstress_result(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Result:
    """The result of the test's ``@pytest.mark.walstress`` scenario (run while the test is set up)."""
    if request.node.get_closest_marker(MARKER) is None:
        raise pytest.UsageError(f"{request.node.nodeid}: walstress_result needs @pytest.mark.{MARKER}(...)")
    return _marker_result(request.node, tmp_path_factory)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A marked test sets up ``walstress_result`` (which runs the scenario), whether it asks for it or not."""
    for item in items:
        if isinstance(item, pytest.Function) and item.get_closest_marker(MARKER) is not None \
                and "walstress_result" not in item.fixturenames:
            item.fixturenames = [*item.fixturenames, "walstress_result"]  # not the list shared by parametrized tests


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    """A marked test fails before its body runs when a verdict differs from the expectation."""
    result = item.stash.get(_MARKER_RESULT, None)
    if result is not None:
        _fail_if_mismatch(result)


# ------------------------------------------------- scenario files as test items
def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix != ".toml":
        return None
    requested = parent.config.stash.get(_REQUESTED, set())
    if not requested or file_path.resolve() not in requested:
        return None
    return ScenarioFile.from_parent(parent, path=file_path)


class ScenarioFile(pytest.Module):
    """A scenario TOML file: one item per matrix cell.

    A :class:`pytest.Module` (of an empty module, nothing imported) so that its cells are test functions
    to fixtures of every scope, a conftest's module-scoped autouse fixtures included.
    """

    def _getobj(self) -> Any:
        import types

        return types.ModuleType(f"walstress_scenario_{_safe_name(self.path.stem)}")

    def _overrides(self) -> list[str]:
        """--walstress-set, and --walstress-duration as the override duration=X (collected and run alike)."""
        settings = settings_of(self.config)
        overrides = list(settings.overrides)
        duration = settings.duration
        if duration is not None:
            overrides.append(f"duration={duration}")
        return overrides

    def collect(self) -> Iterator[pytest.Item]:
        from walstress.api import load_scenario
        from walstress.errors import WalstressError
        from walstress.scenario import expand_matrix

        try:
            cells = expand_matrix(load_scenario(self.path, self._overrides()))
        except WalstressError as exc:
            raise self.CollectError(str(exc)) from None
        for cell in cells:
            label = _safe_name(cell.label.replace(" ", ","), limit=80) if cell.params else ""
            name = f"{cell.cell_id}[{label}]" if label else cell.cell_id
            yield ScenarioCell.from_parent(self, name=name, callobj=_cell_fixtures, cell_index=cell.index,
                                           label=cell.label, expect=cell.scenario.expect)


def _cell_fixtures(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The fixtures a scenario cell sets up (its signature is what counts)."""


class ScenarioCell(pytest.Function):
    """One matrix cell of a scenario file: its runs, judged against its ``expect``.

    A :class:`pytest.Function` (of :func:`_cell_fixtures`) only to set up fixtures: ``tmp_path_factory``
    gives its run dirs and the session's template cache.
    """

    def __init__(self, *, cell_index: int, label: str, expect: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.cell_index = cell_index
        self.label = label
        self.expect = expect

    def _out_dir(self) -> Path:
        stem = _safe_name(f"{self.path.stem}-cell-{self.cell_index:03d}", limit=60)
        root = settings_of(self.config).out
        if not root:
            return self._factory().mktemp(f"{stem}-", numbered=True)
        base = Path(root)
        base.mkdir(parents=True, exist_ok=True)
        for suffix in range(1000):
            candidate = base / (stem if suffix == 0 else f"{stem}-{suffix}")
            try:
                candidate.mkdir()
                return candidate
            except FileExistsError:
                continue
        raise RuntimeError(f"no free run folder for {stem} under {base}")

    def _factory(self) -> pytest.TempPathFactory:
        return self.funcargs["tmp_path_factory"]  # type: ignore[return-value]

    def runtest(self) -> None:
        parent = self.parent
        assert isinstance(parent, ScenarioFile)
        result = _run_scenario(template_cache_dir(self.config, self._factory()), self.path, parent._overrides(),
                               self._out_dir(), repeat=settings_of(self.config).repeat, cell_index=self.cell_index)
        record_result(self, result)
        _fail_if_mismatch(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        from walstress.errors import WalstressError

        if isinstance(excinfo.value, pytest.fail.Exception):
            return str(excinfo.value)
        if isinstance(excinfo.value, WalstressError):  # a scenario or environment problem: no traceback
            return f"walstress: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"walstress {self.path.name}::{self.name} (expect {self.expect})"


# --------------------------------------------------------------- reporting
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    outcome = yield
    report = outcome.get_result()
    properties = item.stash.get(_PROPERTIES, None)
    if properties and (report.when == "call" or (report.when == "setup" and report.failed)):
        setattr(report, REPORT_ATTRIBUTE, [list(pair) for pair in properties])  # crosses xdist as JSON
    results = item.stash.get(_RESULTS, None)
    if not results or not report.failed:
        return
    text = str(report.longrepr) if report.longrepr is not None else ""
    dirs = [run["run_dir"] for result in results.values() for run in result.runs if run["run_dir"] not in text]
    if dirs:  # a failure the plugin did not word itself (e.g. an assert on the numbers)
        block = "\n".join(f"run dir: {d}" for d in dirs)
        if hasattr(report.longrepr, "addsection"):
            report.longrepr.addsection("walstress run dirs", block)
        else:
            report.longrepr = f"{text}\n{block}"


def _junit_suite_writer(config: pytest.Config) -> Any:
    """The ``add_global_property`` of this process's JUnit XML writer (what ``record_testsuite_property``
    calls), when the XML is written here in a family without test case properties; else None."""
    if not junit_suite_properties(config) or hasattr(config, "workerinput"):
        return None
    for plugin in config.pluginmanager.get_plugins():
        add = getattr(plugin, "add_global_property", None)
        if callable(add):
            return add
    return None


class _Summary:
    """Per walstress test report (on the xdist controller too): one summary line, and under xunit2 the
    JUnit XML test suite's properties."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.lines: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        pairs = getattr(report, REPORT_ATTRIBUTE, None)
        if not pairs:
            return
        add = _junit_suite_writer(self.config)
        if add is not None:
            for name, value in pairs:
                add(f"{report.nodeid}::{name}", value)
        props = {name[len(PROPERTY_PREFIX):]: value for name, value in pairs}
        if "verdict" not in props:
            return
        self.lines.append(
            f"{report.nodeid}: {props['verdict']} (expect {props.get('expect')}, "
            f"SQLite {props.get('sqlite_version')}, acked {props.get('acked_writes')}, "
            f"lost {props.get('lost_writes')}, WAL peak {props.get('wal_peak_bytes')} B) "
            f"{props.get('run_dir')}")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.lines:
            terminalreporter.section("walstress")
            for line in self.lines:
                terminalreporter.write_line(line)
