"""Tests of the pytest plugin (harness/walstress/pytest_plugin.py) and of the run command's machine output.

Every run here is real: worker processes on a real database, judged by the
real checks. Runs are tiny (300 pages, 1.5-2 s) so the file stays fast.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from walstress.pytest_plugin import junit_suite_properties, recorded_properties
from walstress.settings import tomllib

pytest_plugins = ("pytester",)

SCENARIOS = Path(__file__).parent / "scenarios"


def junit_properties(path: Path) -> dict[str, dict[str, list[str]]]:
    """test id -> property name -> values, from the test suite properties of a JUnit XML file (xunit2)."""
    out: dict[str, dict[str, list[str]]] = {}
    root = ET.parse(path).getroot()
    for case in root.iter("testcase"):
        assert case.find("properties") is None, "xunit2 has no properties on a test case"
    for prop in root.iter("property"):
        test_id, _, name = prop.get("name", "").rpartition("::")
        out.setdefault(test_id, {}).setdefault(name, []).append(prop.get("value", ""))
    return out


# ---------------------------------------------------------------- in-process
@pytest.mark.walstress("scenarios/tiny.toml", expect="clean")
def test_marker_runs_the_scenario_before_the_body(walstress_result, request, tmp_path_factory):
    assert walstress_result.ok
    assert walstress_result.verdicts == ["clean"]
    run = walstress_result.runs[0]
    assert run["writes"]["acked"] > 0
    assert run["writes"]["lost"] == 0
    assert run["integrity"]["ok"]
    assert run["sqlite"]["worker_versions"] == [sqlite3.sqlite_version]
    # the run dir belongs to this session (and xdist worker): no path shared with another worker
    run_dir = Path(run["run_dir"])
    assert run_dir.is_relative_to(tmp_path_factory.getbasetemp())
    assert (run_dir / "db" / "state.db").is_file()
    props = dict(recorded_properties(request.node))
    # the test case's user properties too, unless JUnit XML is written as xunit2 (suite properties then)
    in_user_properties = {name for name, _ in request.node.user_properties} >= set(props)
    assert in_user_properties is not junit_suite_properties(request.config)
    assert props["walstress_verdict"] == "clean"
    assert props["walstress_sqlite_version"] == sqlite3.sqlite_version
    assert props["walstress_acked_writes"] == run["writes"]["acked"]
    assert props["walstress_run_dir"] == str(run_dir)


def test_run_fixture_takes_a_dict_and_overrides(walstress_run, tmp_path):
    data = tomllib.loads((SCENARIOS / "tiny.toml").read_text())
    result = walstress_run(data, "checkpoint.mode=PASSIVE", "workers.checkpointer.count=0", duration="1.5s")
    assert result.path == tmp_path / "walstress-1" / "results.json"
    assert json.loads(result.path.read_text())["ok"] is True
    values = result.data["scenario"]["values"]
    assert values["checkpoint"]["mode"] == "PASSIVE"
    run = result.runs[0]
    assert run["verdict"] == "clean"
    assert Path(run["run_dir"]).is_relative_to(tmp_path)
    assert {w["role"] for w in run["workers"]} == {"writer", "reader"}
    assert run["writes"]["acked"] == run["writes"]["present"] > 0


def test_template_fixture_is_cached_and_real(walstress_template, tmp_path, request, shared_cache):
    first = walstress_template(pages=300)
    assert walstress_template(pages=300) == first
    assert first.parent.parent == shared_cache
    copy = walstress_template(pages=300, copy=True)
    assert copy.parent == tmp_path and copy.stat().st_size == first.stat().st_size
    conn = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA page_count").fetchone()[0] >= 300
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] > 0
    finally:
        conn.close()


def test_run_command_exit_code_json_and_results_path(tmp_path, shared_cache):
    base = [sys.executable, "-m", "walstress", "run", str(SCENARIOS / "tiny.toml"), "--duration", "1.5",
            "--cache-dir", str(shared_cache)]
    # a healthy run where a corruption was expected: exit 1, JSON on stdout, the path on stderr
    # (exit 0 on a match is covered by the matrix tests)
    differing = subprocess.run(base + ["--out", str(tmp_path / "b"), "--json", "--set", "expect=corrupt"],
                               capture_output=True, text=True, timeout=180)
    assert differing.returncode == 1, differing.stderr
    data = json.loads(differing.stdout)
    assert data["ok"] is False
    assert data["cells"][0]["results"][0]["verdict"] == "clean"
    assert data["totals"]["mismatched_cells"] == ["cell-000"]
    assert f"results: {tmp_path / 'b' / 'results.json'}" in differing.stderr
    # a usage error is exit 2 and names the key
    wrong = subprocess.run(base + ["--out", str(tmp_path / "c"), "--set", "checkpoint.mode=SOMETIMES"],
                           capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2
    assert "checkpoint.mode" in wrong.stderr and not (tmp_path / "c").exists()


# ------------------------------------------------------- inner pytest sessions
def test_scenario_files_are_collected_only_when_named(pytester):
    shutil.copy(SCENARIOS / "matrix.toml", pytester.path / "matrix.toml")
    pytester.makepyfile(test_other="def test_nothing():\n    pass\n")
    default = pytester.runpytest_subprocess("--collect-only", "-q")
    default.assert_outcomes()
    assert "matrix.toml" not in default.stdout.str()
    assert "test_other.py::test_nothing" in default.stdout.str()
    named = pytester.runpytest_subprocess("--collect-only", "-q", "matrix.toml")
    lines = [line for line in named.stdout.lines if "::" in line]
    assert lines == ["matrix.toml::cell-000[mode=PASSIVE]", "matrix.toml::cell-001[mode=TRUNCATE]"]
    # --walstress-scenarios adds the file to what the session collects anyway
    added = pytester.runpytest_subprocess("--collect-only", "-q", "--walstress-scenarios", "matrix.toml")
    lines = [line for line in added.stdout.lines if "::" in line]
    assert sorted(lines) == ["matrix.toml::cell-000[mode=PASSIVE]", "matrix.toml::cell-001[mode=TRUNCATE]",
                             "test_other.py::test_nothing"]


def test_xdist_runs_one_item_per_cell(pytester, monkeypatch):
    # the default cache (one per session, shared by the workers): a fresh one, built once
    monkeypatch.delenv("WALSTRESS_CACHE_DIR", raising=False)
    shutil.copy(SCENARIOS / "matrix.toml", pytester.path / "matrix.toml")
    result = pytester.runpytest_subprocess("-n", "2", "-v", "matrix.toml", "--junitxml=junit.xml",
                                           "--walstress-duration=1.5")
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    assert "2 workers [2 items]" in out
    for item in ("matrix.toml::cell-000[mode=PASSIVE]", "matrix.toml::cell-001[mode=TRUNCATE]"):
        assert f"PASSED {item}" in out
    props = junit_properties(pytester.path / "junit.xml")
    # under xdist too, each test's numbers reach the XML (as the test suite's properties, xunit2)
    assert set(props) == {"matrix.toml::cell-000[mode=PASSIVE]", "matrix.toml::cell-001[mode=TRUNCATE]"}
    results = []
    for name, values in props.items():
        assert values["walstress_verdict"] == ["clean"], name
        assert values["walstress_sqlite_version"] == [sqlite3.sqlite_version]
        assert int(values["walstress_acked_writes"][0]) > 0
        assert values["walstress_lost_writes"] == ["0"]
        results.append(json.loads(Path(values["walstress_results"][0]).read_text()))
    # each worker ran its cell in its own folder; both used one template, built once
    run_dirs = {Path(r["cells"][0]["results"][0]["run_dir"]) for r in results}
    assert len({d.parents[2] for d in run_dirs}) == 2
    templates = [t for r in results for t in r["templates"]]
    assert len({t["path"] for t in templates}) == 1
    assert [t["built_now"] for t in templates].count(True) == 1
    assert Path(templates[0]["path"]).parents[1].name == "walstress-cache"


DAMAGE_TESTS = """
from pathlib import Path

import pytest

from walstress.checks.btree import btree_roots_from_file, page_owners, read_header


def damage_messages(db: Path) -> int:
    # overwrite the pages of the messages b-tree below its root, as a stray write would
    page_size = read_header(db)["page_size"]
    roots = btree_roots_from_file(db)
    owners = page_owners(db, roots)
    pages = sorted(p for p, owner in owners.items() if owner == "messages" and p not in roots)
    with open(db, "r+b") as f:
        for page in pages:
            f.seek((page - 1) * page_size)
            f.write(bytes([0xA5]) * page_size)
    return len(pages)


@pytest.mark.walstress("tiny.toml", expect="corrupt")
def test_marker_expects_corruption(walstress_result):
    raise RuntimeError("the body of a test whose expectation failed ran")


def test_clean_until_damaged(walstress_run):
    result = walstress_run("tiny.toml", expect="clean")
    db = Path(result.runs[0]["run_dir"]) / "db" / "state.db"
    assert not Path(f"{db}-wal").exists()
    assert damage_messages(db) > 0
    walstress_run.check(walstress_run.rejudge(result))
"""


def test_regression_fails_both_ways_with_the_run_dir(pytester, shared_cache):
    shutil.copy(SCENARIOS / "tiny.toml", pytester.path / "tiny.toml")
    pytester.makepyfile(test_regress=DAMAGE_TESTS)
    result = pytester.runpytest_subprocess(
        "-n", "2", "test_regress.py", "tiny.toml", "--walstress-set", "expect=corrupt",
        f"--walstress-cache-dir={shared_cache}", "--junitxml=junit.xml")
    # the damaged database fails its expectation of clean; the healthy runs of the
    # marked test and of tiny.toml (its expect set to corrupt) fail an expectation of corrupt
    result.assert_outcomes(passed=0, failed=3)
    assert result.ret == 1
    out = result.stdout.str()
    assert "expected clean, got 1 corrupt" in out
    assert "! corrupt: " in out
    assert out.count("expected corrupt, got 1 clean") >= 2  # once per failing test, again in summaries
    assert "the body of a test whose expectation failed ran" not in out
    # each failure names its run dir (with CI set, pytest repeats full messages in the summary)
    run_dirs = sorted({line.split("run dir: ", 1)[1].strip() for line in result.stdout.lines if "run dir: " in line})
    assert len(run_dirs) == 3
    verdicts = sorted(json.loads((Path(d) / "run.json").read_text())["verdict"] for d in run_dirs)
    assert verdicts == ["clean", "clean", "corrupt"]
    cases = {case.get("name"): case for case in ET.parse(pytester.path / "junit.xml").iter("testcase")}
    for name in ("test_marker_expects_corruption", "test_clean_until_damaged", "cell-000"):
        failure = cases[name].find("failure")
        assert failure is not None
        assert "run dir: " in failure.get("message", "") + (failure.text or "")


def test_a_project_with_its_own_harness_package_keeps_it(pytester):
    """walstress's import package is `walstress`: a project's own `harness` package is not shadowed,
    while the walstress plugin (loaded in every pytest run of this environment) still works."""
    pytester.mkpydir("harness")
    (pytester.path / "harness" / "__init__.py").write_text("ANSWER = 42\n")
    pytester.makepyfile(test_own="""
        import harness

        def test_own_harness(walstress_template):
            assert harness.ANSWER == 42
            assert harness.__file__.startswith(str(__import__("pathlib").Path(__file__).parent))
            assert walstress_template(schema="minimal", pages=50).exists()
        """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=1)
    assert "--walstress-scenarios" in pytester.runpytest_subprocess("--help").stdout.str()
