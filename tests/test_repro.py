"""walstress repro: a standalone file (the standard library, apsw where needed) that reproduces a mechanism."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from walstress.cli import main
from walstress.repro import MECHANISMS, write_repro

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"
STDLIB = set(sys.stdlib_module_names)


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add((node.module or "").split(".")[0])
    return names


def fresh_python(tmp_path: Path) -> Path:
    """A venv without pip, walstress or anything else: what a SQLite developer has."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    return venv / "bin" / "python"


def run_repro(python: Path, path: Path, *args: str, pythonpath: str = "", timeout: int = 600):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": pythonpath} if pythonpath else {"PATH": "/usr/bin:/bin"}
    return subprocess.run([str(python), str(path), *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=path.parent)


@pytest.mark.parametrize("scenario, sets, mechanism, extra", [
    ("lock-breaker.toml", ["checkpoint.mode=TRUNCATE", "faults.lock_breaker.enabled=true"], "lock_breaker", set()),
    ("two-libraries.toml", ["faults.two_libraries.enabled=true"], "two_libraries", {"apsw"}),
    ("fork-open-connection.toml", ["faults.fork.enabled=true"], "fork", set()),
    ("power-loss.toml", ["database.synchronous=OFF", "faults.power_loss.rollback=torn"], "power_loss", {"apsw"}),
    ("wal-reset-race.toml", ["sqlite=3.51.2"], "wal_reset_race", {"apsw"}),
])
def test_each_mechanism_writes_a_file_of_the_standard_library(tmp_path, scenario, sets, mechanism, extra):
    path, found = write_repro(SCENARIOS / scenario, tmp_path / "repro.py", sets)
    assert found == mechanism and mechanism in MECHANISMS
    assert imports_of(path) - STDLIB == extra
    text = path.read_text()
    assert "walstress" not in text.split('"""', 2)[2]  # only the header names where it came from
    assert "# repro:" not in text and "noqa" not in text


def test_the_lock_breaker_file_runs_without_walstress(tmp_path):
    path, _ = write_repro(SCENARIOS / "lock-breaker.toml", tmp_path / "lock.py",
                          ["faults.lock_breaker.enabled=true", "checkpoint.mode=PASSIVE", "database.pages=400"])
    proc = run_repro(fresh_python(tmp_path), path, "--runs", "1", "--seconds", "2")
    assert proc.returncode in (0, 1), proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last in ("REPRODUCED 1/1", "NOT REPRODUCED 0/1") and (proc.returncode == 0) == (last == "REPRODUCED 1/1")
    assert "run 1:" in proc.stdout and "Traceback" not in proc.stderr


@pytest.mark.parametrize("target, sets, words", [
    ("smoke.toml", [], "no mechanism a reproducer file can express is on"),
    ("power-loss.toml", [], "has 6 cells"),
    ("quickstart.toml", ["faults.lock_breaker.enabled=true", "checkpoint.mode=PASSIVE", "faults.kill.enabled=true",
                         "faults.kill.at=1"], "faults.kill is on"),
])
def test_what_a_file_cannot_express_is_said(tmp_path, capsys, target, sets, words):
    args = ["repro", str(SCENARIOS / target), "--out", str(tmp_path / "r.py")]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert not (tmp_path / "r.py").exists()


@pytest.mark.slow
def test_lock_breaker_file_reproduces_in_4_of_5(tmp_path):
    path, _ = write_repro(SCENARIOS / "lock-breaker.toml", tmp_path / "lock.py",
                          ["checkpoint.mode=TRUNCATE", "faults.lock_breaker.enabled=true"])
    proc = run_repro(fresh_python(tmp_path), path, timeout=900)
    reproduced = int(proc.stdout.strip().splitlines()[-1].split()[-1].split("/")[0])
    assert reproduced >= 4, proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("version, expected", [("3.51.2", "REPRODUCED 5/5"), ("3.51.3", "NOT REPRODUCED 0/5")])
def test_race_file_reproduces_on_3_51_2_and_not_on_3_51_3(tmp_path, cache_dir, version, expected):
    from walstress.sqlite.versions import ensure_apsw

    apsw_dir = ensure_apsw(version)
    path, _ = write_repro(SCENARIOS / "wal-reset-race.toml", tmp_path / "race.py", [f"sqlite={version}"])
    proc = run_repro(fresh_python(tmp_path), path, pythonpath=str(apsw_dir), timeout=900)
    assert proc.stdout.strip().splitlines()[-1] == expected, proc.stdout + proc.stderr
