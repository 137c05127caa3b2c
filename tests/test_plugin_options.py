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
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest


pytest_plugins = ("pytester",)

SCENARIOS = Path(__file__).parent / "scenarios"
MATRIX_CELLS = ["matrix.toml::cell-000[mode=PASSIVE]", "matrix.toml::cell-001[mode=TRUNCATE]"]


def collected(result: pytest.RunResult) -> list[str]:
    return sorted(line for line in result.stdout.lines if "::" in line)


# ---------------------------------------------------------------- ini options
def test_every_option_is_an_ini_option_and_the_command_line_wins(pytester):
    shutil.copy(SCENARIOS / "matrix.toml", pytester.path / "matrix.toml")
    pytester.makeini("""
        [pytest]
        walstress_scenarios = matrix.toml
        walstress_set =
            checkpoint.mode=["PASSIVE", "FULL", "RESTART"]
        """)
    help_text = pytester.runpytest_subprocess("--help").stdout.str()
    for name in ("scenarios", "set", "duration", "repeat", "out", "cache_dir"):
        assert f"walstress_{name} (" in help_text, name  # listed among the ini options
    from_ini = pytester.runpytest_subprocess("--collect-only", "-q")
    assert collected(from_ini) == ["matrix.toml::cell-000[mode=PASSIVE]", "matrix.toml::cell-001[mode=FULL]",
                                   "matrix.toml::cell-002[mode=RESTART]"]
    # a list on the command line replaces the ini's list
    from_args = pytester.runpytest_subprocess("--collect-only", "-q", "--walstress-set", "checkpoint.mode=FULL")
    assert collected(from_args) == ["matrix.toml::cell-000"]


def test_ini_run_options_take_effect(pytester, shared_cache):
    shutil.copy(SCENARIOS / "tiny.toml", pytester.path / "tiny.toml")
    pytester.makeini(f"""
        [pytest]
        walstress_scenarios = tiny.toml
        walstress_duration = 1s
        walstress_repeat = 2
        walstress_out = runs
        walstress_cache_dir = {shared_cache}
        """)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    data = json.loads((pytester.path / "runs" / "tiny-cell-000" / "results.json").read_text())
    assert data["scenario"]["values"]["duration"] == 1.0
    runs = data["cells"][0]["results"]
    assert [run["verdict"] for run in runs] == ["clean", "clean"]
    assert {t["path"] for t in data["templates"]} and all(
        Path(t["path"]).is_relative_to(shared_cache) for t in data["templates"])


# ------------------------------------------------------------- usage errors
@pytest.mark.parametrize(("args", "message"), [
    (["--walstress-duration=abc"],
     'walstress: --walstress-duration: abc is not a duration such as 30, "30s", "500ms" or "2m"'),
    (["--walstress-duration=0"], "walstress: --walstress-duration: 0: a duration must be more than 0"),
    (["--walstress-repeat=-1"], "walstress: --walstress-repeat: -1: at least 1 run per cell"),
    (["--walstress-repeat=two"], "walstress: --walstress-repeat: two is not a whole number"),
    (["--walstress-set", "no-equals-sign"], "walstress: --walstress-set no-equals-sign: expected KEY=VALUE"),
    # a key or value is checked against the scenario files the overrides apply to
    (["matrix.toml", "--walstress-set", "nosuch.key=1"], "walstress: --walstress-set nosuch.key=1: unknown key"),
    (["--walstress-scenarios=matrix.toml", "--walstress-set", "expect=clean",
      "--walstress-set", "checkpoint.mode=SOMETIMES"],
     "walstress: --walstress-set checkpoint.mode=SOMETIMES: SOMETIMES is not allowed; expected one of"),
    (["matrix.toml", "--walstress-set", "workers.opener.pause_ms=5"],
     "walstress: --walstress-set workers.opener.pause_ms=5: the scenario has no opener workers"),
    (["--walstress-scenarios", "missing.toml"],
     "walstress: --walstress-scenarios: missing.toml: no such scenario file"),
])
def test_a_wrong_option_value_is_a_usage_error(pytester, args, message):
    shutil.copy(SCENARIOS / "matrix.toml", pytester.path / "matrix.toml")
    pytester.makepyfile(test_x="def test_x():\n    raise AssertionError('ran')\n")
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR == 4
    errors = [line for line in result.stderr.lines if line.strip()]
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"ERROR: {message}"), errors[0]
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert "ran" not in result.stdout.str()


def test_overrides_valid_for_the_named_scenario_are_accepted(pytester):
    """A key only some scenarios have (here an opener's) is no error for a scenario that has it."""
    text = (SCENARIOS / "tiny.toml").read_text() + '\n[[workers]]\nrole = "opener"\ncount = 1\n'
    (pytester.path / "opens.toml").write_text(text)
    result = pytester.runpytest_subprocess("--collect-only", "-q", "opens.toml",
                                           "--walstress-set", "workers.opener.pause_ms=5")
    assert result.ret == 0, result.stderr.str()
    assert collected(result) == ["opens.toml::cell-000"]


def test_a_wrong_ini_value_is_a_usage_error_naming_the_ini_option(pytester):
    pytester.makeini("[pytest]\nwalstress_duration = soon\n")
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess()
    assert result.ret == 4
    assert [line for line in result.stderr.lines if line.strip()] == [
        'ERROR: walstress: walstress_duration (ini tox.ini): soon is not a duration such as 30, "30s", '
        '"500ms" or "2m"']


# ---------------------------------------------------------------- JUnit XML
MARKED = """
import pytest

@pytest.mark.walstress("tiny.toml", "duration=1s")
def test_marked(walstress_result):
    assert walstress_result.ok
"""


# every warning an error; pytest-benchmark (where installed) warns on its own under an outer xdist run
STRICT = ("-W", "error", "-p", "no:benchmark", "-p", "no:cacheprovider")


def test_junit_xml_carries_the_properties_without_a_warning(pytester, shared_cache):
    shutil.copy(SCENARIOS / "tiny.toml", pytester.path / "tiny.toml")
    pytester.makepyfile(test_marked=MARKED)
    result = pytester.runpytest_subprocess(
        *STRICT, "test_marked.py", "--junitxml=junit.xml",
        f"--walstress-cache-dir={shared_cache}")
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    assert "warnings summary" not in out and "Warning" not in out + result.stderr.str()
    root = ET.parse(pytester.path / "junit.xml").getroot()
    suite = root.find("testsuite")
    assert suite is not None
    case = suite.find("testcase")
    assert case is not None and case.get("name") == "test_marked"
    assert case.find("properties") is None  # xunit2 (the default family) has none on a test case
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["test_marked.py::test_marked::walstress_verdict"] == "clean"
    assert props["test_marked.py::test_marked::walstress_expect"] == "clean"
    assert int(props["test_marked.py::test_marked::walstress_acked_writes"]) > 0
    run_dir = Path(props["test_marked.py::test_marked::walstress_run_dir"])
    assert json.loads((run_dir / "run.json").read_text())["verdict"] == "clean"
    # a family with test case properties gets them there
    xunit1 = pytester.runpytest_subprocess(
        *STRICT, "test_marked.py", "--junitxml=junit1.xml",
        "-o", "junit_family=xunit1", f"--walstress-cache-dir={shared_cache}")
    xunit1.assert_outcomes(passed=1)
    case = ET.parse(pytester.path / "junit1.xml").getroot().find("testsuite/testcase")
    assert case is not None
    case_props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert case_props["walstress_verdict"] == "clean"


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
    # the ini option too
    pytester.makeini("[pytest]\ntestpaths = checks\nwalstress_scenarios = matrix.toml\n")
    from_ini = pytester.runpytest_subprocess("--collect-only", "-q")
    assert collected(from_ini) == ["checks/test_kept.py::test_kept", *MATRIX_CELLS]


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
