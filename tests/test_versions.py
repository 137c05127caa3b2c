"""SQLite versions as an axis: apsw installs per version, the version check, the
wal-reset race on the system SQLite.

The install tests use pip for real (one apsw wheel, a few seconds each).
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import platform
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from walstress import cli, runner
from walstress.api import load_scenario
from walstress.runner import run_scenario
from walstress.errors import EnvironmentProblem
from walstress.sqlite import versions
from walstress.sqlite.versions import (
    IndexFile,
    PipLocations,
    available_versions,
    ensure_apsw,
    installed_version_dir,
    list_releases,
    parse_version,
    pip_locations,
    releases_from_files,
    shipped_releases,
    versions_between,
    wheel_fits_here,
)

PROJECT = Path(__file__).resolve().parent.parent
TINY = {
    "name": "tiny-apsw", "seed": 11, "duration": "1.5s", "expect": "clean",
    "sqlite": {"driver": "apsw", "version": "3.51.3"},
    "database": {"schema": "minimal", "pages": 200},
    "checkpoint": {"mode": "PASSIVE", "every_writes": 20},
    "workers": [{"role": "writer", "count": 1}, {"role": "reader", "count": 1}],
}

def wheel(release: str, python: str = "cp311", platform_tag: str = "manylinux_2_28_x86_64") -> str:
    return f"apsw-{release}-{python}-{python}-{platform_tag}.whl"


def fits_cp311_linux(python_tag: str, abi_tag: str, platform_tag: str) -> bool:
    return python_tag == "cp311" and platform_tag.endswith("x86_64") and "linux" in platform_tag


def test_releases_keep_the_newest_build_of_each_sqlite_version_with_a_wheel_that_fits():
    files = [IndexFile(wheel("3.54.1.0")), IndexFile(wheel("3.53.3.0")), IndexFile(wheel("3.53.3.1")),
             IndexFile(wheel("3.53.3.2"), yanked=True),                  # yanked: not offered
             IndexFile(wheel("3.52.0.0", python="cp312")),               # not for this Python
             IndexFile(wheel("3.50.0.0", platform_tag="win_amd64")),     # not for this machine
             IndexFile("apsw-3.49.0.0.tar.gz"),                          # source only: never built here
             IndexFile(wheel("3.51.2.0")), IndexFile(wheel("3.46.0.1")), IndexFile(wheel("3.46.0.0")),
             IndexFile("apsw-3.38.5.post1-cp311-cp311-linux_x86_64.whl"), IndexFile("index.html")]
    releases = releases_from_files(files, fits=fits_cp311_linux)
    assert releases == {"3.54.1": "3.54.1.0", "3.53.3": "3.53.3.1", "3.51.2": "3.51.2.0", "3.46.0": "3.46.0.1"}
    assert versions_between("3.51.0", "3.53.9", list(releases)) == ["3.51.2", "3.53.3"]
    assert versions_between("3.54.1", "3.51.2", list(releases)) == ["3.51.2", "3.53.3", "3.54.1"]


def test_wheel_tags_are_matched_against_this_interpreter():
    here = f"cp{sys.version_info.major}{sys.version_info.minor}"
    machine = platform.machine()
    assert wheel_fits_here(here, here, f"manylinux_2_17_{machine}.manylinux2014_{machine}") == \
        sys.platform.startswith("linux")
    assert wheel_fits_here("py3", "none", "any")
    assert not wheel_fits_here("cp27", "cp27mu", "any")
    assert not wheel_fits_here(here, here, "manylinux_2_17_s390x") or machine == "s390x"
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":   # a glibc newer than this one's
        assert not wheel_fits_here(here, here, f"manylinux_2_999_{machine}")


class Index(http.server.BaseHTTPRequestHandler):
    """A package index with the simple repository API: the JSON form for those who ask for it, else HTML."""
    pages: dict[str, list[tuple[str, bool]]] = {}
    authorizations: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        self.authorizations.append(self.headers.get("Authorization", ""))
        files = self.pages.get(self.path)
        if files is None:
            self.send_error(404)
            return
        if "application/vnd.pypi.simple.v1+json" in self.headers.get("Accept", ""):
            body = json.dumps({"meta": {"api-version": "1.1"}, "name": "apsw", "files": [
                {"filename": n, "url": f"../../f/{n}", "hashes": {}, "yanked": y} for n, y in files]}).encode()
            kind = "application/vnd.pypi.simple.v1+json"
        else:
            body = ("<!DOCTYPE html><html><body>" + "".join(
                f'<a href="../../f/{n}#sha256=00"{" data-yanked" if y else ""}>{n}</a><br>' for n, y in files)
                + "</body></html>").encode()
            kind = "text/html"
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def index_server():
    here = f"cp{sys.version_info.major}{sys.version_info.minor}"
    tag = f"manylinux_2_28_{platform.machine()}"
    Index.pages = {"/json/apsw/": [(wheel("3.51.3.0", here, tag), False), (wheel("3.51.4.0", here, tag), True)],
                   "/html/apsw/": [(wheel("3.50.4.0", here, tag), False), (wheel("3.50.5.0", here, tag), True)]}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Index)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", here, tag
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the wheels served are Linux wheels")
def test_indexes_and_find_links_of_every_kind_are_read(index_server, tmp_path):
    url, here, tag = index_server
    links = tmp_path / "wheels"
    links.mkdir()
    (links / wheel("3.49.2.0", here, tag)).write_bytes(b"")
    files_index = tmp_path / "simple" / "apsw"
    files_index.mkdir(parents=True)
    (files_index / "index.html").write_text(f'<a href="x/{wheel("3.48.0.0", here, tag)}">w</a>')
    locations = PipLocations(indexes=[f"{url}/json", f"{url}/html", f"{url}/other", (tmp_path / "simple").as_uri(),
                                      (tmp_path / "nothing").as_uri()],
                             find_links=[str(links), "http://127.0.0.1:1/closed"])
    releases, answered, failed = list_releases(locations)
    private = list_releases(PipLocations(indexes=[url.replace("//", "//me:s%40cret@") + "/json"], find_links=[]))
    assert private[0] == {"3.51.3": "3.51.3.0"}
    assert Index.authorizations[-1] == "Basic " + base64.b64encode(b"me:s@cret").decode()  # as pip sends them
    # the JSON form asked for and used; the HTML form where the index gives only that; yanked files left out;
    # an index without the project (404, or no folder) is no error; a closed port is one
    assert releases == {"3.51.3": "3.51.3.0", "3.50.4": "3.50.4.0", "3.49.2": "3.49.2.0", "3.48.0": "3.48.0.0"}
    assert len(answered) == 6 and failed == [failed[0]] and failed[0].startswith("http://127.0.0.1:1/closed: ")


def test_pip_configuration_gives_the_locations():
    listed = ("global.extra-index-url='file:///a/simple file:///b/simple'\n"
              "global.find-links='/opt/wheels'\n"
              "global.index-url='https://mirror.example/simple'\n"
              ":env:.index-url='https://env.example/simple'\n"
              "global.cert='/etc/ca.pem'\n")
    found = pip_locations(listed, "https://default.example/simple")
    assert found.indexes == ["https://env.example/simple", "file:///a/simple", "file:///b/simple"]
    assert found.find_links == ["/opt/wheels"] and found.cafile == "/etc/ca.pem"
    assert pip_locations("", "https://default.example/simple").indexes == ["https://default.example/simple"]
    assert pip_locations(":env:.no-index='true'\n", "https://default.example/simple").indexes == []


@pytest.fixture
def pip_settings(monkeypatch):
    """Only what the test sets: no pip configuration file, no PIP_* of this machine; returns setenv."""
    for key in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    return monkeypatch.setenv


def test_available_versions_reads_the_index_pip_is_configured_with(index_server, tmp_path, pip_settings):
    url, _, _ = index_server
    pip_settings("PIP_INDEX_URL", f"{url}/json")
    pip_settings("PIP_EXTRA_INDEX_URL", f"{url}/html")
    assert available_versions(tmp_path) == ["3.50.4", "3.51.3"]   # through `pip config list`, for real
    cached = json.loads((tmp_path / "sqlite" / "apsw-versions.json").read_text())
    assert cached["source"]["indexes"] == [f"{url}/json", f"{url}/html"]


def test_no_index_answering_falls_back_to_the_shipped_list(tmp_path, pip_settings, capfd):
    pip_settings("PIP_INDEX_URL", "http://127.0.0.1:1/simple")
    versions = available_versions(tmp_path)
    assert versions == sorted(shipped_releases(), key=parse_version)
    assert "using the list shipped with walstress" in capfd.readouterr().err
    assert not (tmp_path / "sqlite" / "apsw-versions.json").exists()  # not kept: the next call asks again


def _sqlite_versions(value, under_sqlite: bool = False) -> set[str]:
    """The SQLite versions a parsed scenario names: every x.y.z text under a key that says sqlite (sqlite,
    sqlite.version, a matrix of them)."""
    if isinstance(value, dict):
        return set().union(*(_sqlite_versions(v, under_sqlite or "sqlite" in k) for k, v in value.items()))
    if isinstance(value, list):
        return set().union(*(_sqlite_versions(v, under_sqlite) for v in value))
    return {value} if under_sqlite and isinstance(value, str) and re.fullmatch(r"3\.\d+\.\d+", value) else set()


def test_the_shipped_list_names_the_versions_the_scenarios_use():
    try:
        import tomllib
    except ImportError:   # Python 3.10
        import tomli as tomllib
    shipped = shipped_releases()
    used: set[str] = set()
    for path in (PROJECT / "scenarios").rglob("*.toml"):
        used |= _sqlite_versions(tomllib.loads(path.read_text()))
    assert {"3.50.4", "3.51.2", "3.51.3", "3.54.1"} <= used   # what the shipped scenarios test, matrices included
    assert used <= set(shipped), sorted(used - set(shipped))
    assert all(release.startswith(version + ".") for version, release in shipped.items())


@pytest.fixture(scope="session")
def apsw_3513(cache_dir) -> Path:
    """apsw with SQLite 3.51.3 in the session's cache (WALSTRESS_CACHE_DIR)."""
    return ensure_apsw("3.51.3")


def test_install_is_cached_and_loads_that_sqlite(apsw_3513, cache_dir):
    marker = json.loads((apsw_3513 / "walstress-apsw.json").read_text())
    assert marker["sqlite_version"] == "3.51.3" and marker["apsw_release"].startswith("3.51.3.")
    assert installed_version_dir("3.51.3") == apsw_3513
    assert ensure_apsw("3.51.3") == apsw_3513  # reused: same folder, same marker
    assert json.loads((apsw_3513 / "walstress-apsw.json").read_text()) == marker
    out = subprocess.run([sys.executable, "-c", "import apsw; print(apsw.sqlite_lib_version())"],
                         env={"PYTHONPATH": str(apsw_3513), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert out.stdout.strip() == "3.51.3"


def test_two_processes_installing_one_version_at_once(tmp_path, cache_dir):
    cache = tmp_path / "cache"
    cache.mkdir()
    # the list of releases is shared from the session cache, so only the install races
    (cache / "sqlite").mkdir()
    shared_list = cache_dir / "sqlite" / "apsw-versions.json"
    if shared_list.exists():
        (cache / "sqlite" / "apsw-versions.json").write_bytes(shared_list.read_bytes())
    code = ("import sys; from walstress.sqlite.versions import ensure_apsw; "
            f"print(ensure_apsw('3.51.2', cache_dir={str(cache)!r}))")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    folders = {out.strip() for out, _ in outputs}
    assert folders == {str(cache / "sqlite" / "apsw-3.51.2")}
    leftovers = [p.name for p in (cache / "sqlite").iterdir() if p.name.startswith(".apsw-")]
    assert leftovers == []  # the staging folders were renamed or removed
    marker = json.loads((cache / "sqlite" / "apsw-3.51.2" / "walstress-apsw.json").read_text())
    assert marker["sqlite_version"] == "3.51.2"


def test_workers_report_the_version_they_loaded(apsw_3513, tmp_path):
    scenario = load_scenario(dict(TINY))
    results = run_scenario(scenario, tmp_path / "out", cache_dir=None)
    run = results["cells"][0]["results"][0]
    assert run["verdict"] == "clean", run["reason"]
    assert run["sqlite"]["worker_versions"] == ["3.51.3"]
    assert {w["sqlite_version"] for w in run["workers"]} == {"3.51.3"}


def test_a_worker_loading_another_version_is_an_error(apsw_3513, tmp_path, monkeypatch):
    # A broken install: the folder for 3.51.2 really holds 3.51.3. The worker
    # checks what it loaded; the judge turns the mismatch into "errors".
    monkeypatch.setattr(runner, "sqlite_paths_for", lambda scenario: [str(apsw_3513)])
    scenario = load_scenario(dict(TINY), ["sqlite.version=3.51.2"])
    results = run_scenario(scenario, tmp_path / "out")
    run = results["cells"][0]["results"][0]
    assert run["verdict"] == "errors"
    assert any("loaded SQLite 3.51.3 but 3.51.2 was asked for" in p for p in run["worker_problems"]), run
    assert any(w["exit_code"] == 4 for w in run["workers"])  # EXIT_VERSION_MISMATCH
    assert not results["ok"]


def test_unknown_version_exits_2_listing_the_available_ones(cache_dir, tmp_path, capsys):
    code = cli.main(["run", str(PROJECT / "tests" / "scenarios" / "tiny.toml"), "--set", "sqlite=3.50.7",
                     "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "3.50.7" in err and "3.51.3" in err and "3.50.4" in err
    assert not (tmp_path / "out" / "cell-000").exists()  # failed before any run


def test_wal_reset_race_role_runs_its_rounds(cache_dir, tmp_path):
    """The role's mechanics on a small database: rounds, canaries in the ledger, triggers dropped.

    At this size the race rarely hits, so the verdict may be either; the
    reproduction itself is the slow test below (it needs a 65K-page template).
    """
    scenario = load_scenario(PROJECT / "scenarios" / "wal-reset-race.toml",
                             ["sqlite=stdlib", "database.pages=300", "workers.wal-reset-race.rounds=15",
                              "workers.wal-reset-race.stop_on_loss=false", "duration=20"])
    results = run_scenario(scenario, tmp_path / "race", repeat=1)
    run = results["cells"][0]["results"][0]
    assert run["verdict"] in ("clean", "lost-writes"), run["reason"]
    assert run["ledger"]["acked_transactions"] == 30  # two canaries per round
    assert run["integrity"]["ok"]
    history = (Path(run["run_dir"]) / "history" / "wal-reset-race-0.jsonl").read_text().splitlines()
    summary = next(json.loads(line) for line in history if '"race_summary"' in line)
    assert summary["rounds"] == 15
    assert any("dropped the messages triggers" in line for line in history)
    checkpoints = [json.loads(line) for line in history if '"type":"checkpoint"' in line]
    assert {c["source"] for c in checkpoints} == {"complete", "race"} and len(checkpoints) == 30


@pytest.mark.slow
def test_wal_reset_race_loses_a_write_on_the_system_sqlite(cache_dir, tmp_path):
    """The system SQLite is 3.40.1 on the reference machine (inside 3.7.0..3.51.2).

    Slow: it needs the 65,536-page template (about 11 s to build); the first
    lost canary then comes after 1 to 10 s (measured: 5 of 5 runs).
    """
    import sqlite3

    from walstress.sqlite.versions import parse_version

    version = parse_version(sqlite3.sqlite_version)
    if version >= (3, 51, 3) or version in ((3, 50, 7), (3, 44, 6)):
        pytest.skip(f"system SQLite {sqlite3.sqlite_version} has the WAL-reset fix")
    scenario = load_scenario(PROJECT / "scenarios" / "wal-reset-race.toml",
                             ["sqlite=stdlib", "workers.wal-reset-race.rounds=0", "duration=30"])
    results = run_scenario(scenario, tmp_path / "race", repeat=1)
    run = results["cells"][0]["results"][0]
    assert run["verdict"] == "lost-writes", run["reason"]
    assert run["integrity"]["ok"]  # the damage is a lost write, invisible to integrity_check
    assert run["writes"]["lost"] >= 1 and run["writes"]["lost"] < run["writes"]["acked"]
    assert run["duration_s"] < 30.0  # the role stopped at the first lost canary


@pytest.mark.slow
def test_wal_reset_race_differential_3_51_2_vs_3_51_3(cache_dir, tmp_path):
    """The fix, seen from outside: 3.51.2 loses a canary, 3.51.3 stays clean for 200 rounds."""
    scenario = load_scenario(PROJECT / "scenarios" / "wal-reset-race.toml",
                             ['sqlite=["3.51.2", "3.51.3"]', "workers.wal-reset-race.rounds=200", "duration=60"])
    results = run_scenario(scenario, tmp_path / "race", repeat=1)
    verdicts = {c["params"]["sqlite"]: c["results"][0]["verdict"] for c in results["cells"]}
    assert verdicts == {"3.51.2": "lost-writes", "3.51.3": "clean"}
    assert results["ok"]


def test_without_pip_the_indexes_come_from_the_environment_and_an_install_says_what_is_missing(
        index_server, tmp_path, monkeypatch, pip_settings):
    # an environment made by uv has no pip: the PIP_* variables still name the indexes, and installing a
    # version says what to do instead of failing inside a subprocess
    url, _, _ = index_server
    monkeypatch.setattr(versions, "_have_pip", lambda: False)
    pip_settings("PIP_INDEX_URL", f"{url}/json")
    assert versions.pip_config_text() == f":env:.index-url='{url}/json'\n"
    assert available_versions(tmp_path) == ["3.51.3"]
    with pytest.raises(EnvironmentProblem, match="needs pip, which this Python does not have"):
        ensure_apsw("3.51.3", tmp_path)
