"""The layering of walstress holds (import-linter contracts in pyproject.toml), and would catch a breach."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "harness" / "walstress"


def lint_imports(cwd: Path, python_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(python_path)}
    command = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
               "sys.exit(lint_imports_command())", "--no-cache"]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_every_contract_is_kept():
    pytest.importorskip("importlinter")
    proc = lint_imports(ROOT, ROOT / "harness")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def contract_name(contract_id: str) -> str:
    from walstress.settings import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return next(c["name"] for c in config["contracts"] if c["id"] == contract_id)


@pytest.mark.parametrize("module, line, contract", [
    ("controller.py", "from walstress.judge import judge_run", "controller-never-judges"),
    ("faults/process.py", "from walstress.controller import RunContext", "faults-act-through-runcontrol"),
    ("scenario.py", "import walstress.faults.registry", "model-knows-no-implementation"),
    ("checks/ledger.py", "import walstress.api", "nothing-imports-the-faces"),
    ("report/data.py", "from walstress.runner import load_results", "report-reads-run-dirs"),
    ("history.py", "import walstress.scenario", "layers"),
])
def test_an_upward_import_breaks_a_contract(tmp_path, module, line, contract):
    pytest.importorskip("importlinter")
    copy = tmp_path / "harness" / "walstress"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = copy / module
    target.write_text(target.read_text() + f"\n{line}  # an upward import\n")
    proc = lint_imports(tmp_path, tmp_path / "harness")
    assert proc.returncode != 0
    report = proc.stdout.replace("\n", "")  # import-linter wraps long contract names
    assert f"{contract_name(contract)} BROKEN" in report, proc.stdout
