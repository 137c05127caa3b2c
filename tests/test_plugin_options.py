"""The pytest plugin as a pytest user expects it.

Inner sessions run in subprocesses (a clean interpreter each); the runs are
tiny (300 pages, 1 s), and most checks only collect.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from walstress.pytest_plugin import template_cache_dir

pytest_plugins = ("pytester",)

SCENARIOS = Path(__file__).parent / "scenarios"
MATRIX_CELLS = ["matrix.toml::cell-000[mode=PASSIVE]", "matrix.toml::cell-001[mode=TRUNCATE]"]


@pytest.fixture(scope="session")
def shared_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return template_cache_dir(request.config, tmp_path_factory)


def collected(result: pytest.RunResult) -> list[str]:
    return sorted(line for line in result.stdout.lines if "::" in line)


# ---------------------------------------------------------------- testpaths
def test_scenarios_option_adds_to_testpaths(pytester):
    shutil.copy(SCENARIOS / "matrix.toml", pytester.path / "matrix.toml")
    pytester.mkdir("checks")
    (pytester.path / "checks" / "test_kept.py").write_text("def test_kept():\n    pass\n")
    pytester.makepyfile(test_outside="def test_outside():\n    pass\n")  # not in testpaths
    pytester.makeini("[pytest]\ntestpaths = checks\n")
    plain = pytester.runpytest_subprocess("--collect-only", "-q")
    assert collected(plain) == ["checks/test_kept.py::test_kept"]
    added = pytester.runpytest_subprocess("--collect-only", "-q", "--walstress-scenarios=matrix.toml")
    assert collected(added) == ["checks/test_kept.py::test_kept", *MATRIX_CELLS]


# ------------------------------------------------------------------ fixtures
def test_scenario_cells_take_the_fixtures_of_their_conftest(pytester, shared_cache):
    """A cell is a test function to fixtures: a conftest's autouse fixtures of every scope apply."""
    shutil.copy(SCENARIOS / "tiny.toml", pytester.path / "tiny.toml")
    pytester.makeconftest("""
        import pytest

        SEEN = []

        @pytest.fixture(scope="module", autouse=True)
        def per_module():
            SEEN.append("module")

        @pytest.fixture(autouse=True)
        def per_test(request):
            SEEN.append(request.node.name)

        def pytest_sessionfinish(session):
            print("SEEN", SEEN)
        """)
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", "tiny.toml",
                                           "--walstress-duration=1", f"--walstress-cache-dir={shared_cache}")
    result.assert_outcomes(passed=1)
    assert "SEEN ['module', 'cell-000']" in result.stdout.str()


# ------------------------------------------------------------------ imports
HEAVY = ("walstress.api", "walstress.runner", "walstress.judge", "walstress.report", "walstress.controller",
         "walstress.catalog", "sqlite3", "apsw", "matplotlib")


def test_importing_the_plugin_loads_nothing_heavy():
    code = ("import sys, json, pytest; before = set(sys.modules); import walstress.pytest_plugin; "
            "print(json.dumps(sorted(set(sys.modules) - before)))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "harness")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                         timeout=60).stdout
    added = json.loads(out)
    assert not [name for name in added if name.split(".")[0] in ("sqlite3", "apsw", "matplotlib")
                or name in HEAVY or name.startswith("walstress.report")], added
    assert set(added) <= {"walstress", "walstress.version", "walstress.pytest_plugin"}, added


def test_a_session_that_never_uses_the_plugin_loads_nothing_heavy(pytester):
    pytester.makeconftest("""
        import json, sys

        def pytest_sessionfinish(session):
            loaded = sorted(m for m in sys.modules if m.startswith("walstress") or m.split(".")[0] in
                            ("sqlite3", "_sqlite3", "apsw", "matplotlib"))
            print("LOADED", json.dumps(loaded))
        """)
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    line = next(line for line in result.stdout.lines if "LOADED " in line)
    assert json.loads(line.split("LOADED ", 1)[1]) == ["walstress", "walstress.pytest_plugin", "walstress.version"]
