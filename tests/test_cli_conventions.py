"""The command line's conventions, on every subcommand, through real processes.

Every subcommand is found in the parser (a new one is never forgotten): its
--help (exit 0, usage on stdout), its --json where it has one (JSON alone on
stdout), a bad argument (exit 2, one line on stderr, nothing on stdout); all
with TERM=dumb and never an escape in what is printed.
"""

from __future__ import annotations

import argparse
import re
import json
import os
import pty
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from walstress.cli import build_parser, leaf_commands
from walstress.lockwatch import available as lockwatch_available

PROJECT = Path(__file__).resolve().parents[1]
TINY = PROJECT / "tests" / "scenarios" / "tiny.toml"
LEAVES = {" ".join(words): parser for words, parser in leaf_commands()}

# subcommands whose --json is not exercised here, and why (each still gets --help and a bad argument)
JSON_NOT_RUN = {
    "bisect": "needs apsw builds of two SQLite versions (downloads, a run per version: minutes)",
}
# subcommands without --json: they write one file and name it
NO_JSON = {"init", "repro"}
# subcommands whose --json is run by a test of their own: one run's folder for four, one recording for two
ON_A_RUN = {"run", "report", "merge", "explain"}
ON_A_RECORDING = {"crash explore", "crash replay"}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT / "harness"), env.get("PYTHONPATH")])),
               TERM="dumb", COLUMNS="100", PYTHONWARNINGS="ignore")
    env.update(extra)
    return env


def walstress(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "walstress", *args], capture_output=True, text=True, cwd=cwd,
                          env=_env(), timeout=timeout)
    assert "\x1b" not in proc.stdout + proc.stderr, (args, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, (args, proc.stderr)
    return proc


def _one_error_line(proc: subprocess.CompletedProcess, command: str) -> str:
    assert proc.returncode == 2, (command, proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == "", (command, proc.stdout)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and proc.stderr.endswith("\n"), (command, proc.stderr)
    assert lines[0].startswith(f"walstress {command}: "), (command, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder with a small SQLite file."""
    folder = tmp_path_factory.mktemp("cli")
    with sqlite3.connect(folder / "small.db") as db:
        db.execute("CREATE TABLE t(x)")
        db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
    db.close()
    return folder


def _json_args(command: str, work: Path, cache_dir: Path) -> list[str]:
    return {
        "check": ["check", str(work / "small.db")],
        "build": ["build", "--out", str(work / f"built-{time.monotonic_ns()}.db"), "--schema", "minimal",
                  "--pages", "64"],
        "search": ["search", str(work / "search.toml"), "--out", str(work / "search"), "--found",
                   str(work / "found"), "--cache-dir", str(cache_dir)],
        "bench": ["bench", "--size", "tiny", "--only", "1", "--out", str(work / "bench"), "--cache-dir",
                  str(cache_dir)],
    }[command]


def test_every_subcommand_is_found_and_takes_the_common_options():
    assert {"run", "check", "report", "merge", "explain", "bisect", "build", "crash explore", "crash replay",
            "watch"} <= set(LEAVES)
    for name, parser in LEAVES.items():
        options = parser._option_string_actions
        assert {"-q", "--quiet", "-v", "--verbose"} <= set(options), name
        assert ("--json" in options) == (name not in NO_JSON), name


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


def test_no_parser_takes_an_abbreviated_option_and_every_default_is_told():
    for parser in _parsers(build_parser()):
        assert parser.allow_abbrev is False, parser.prog
        # each option's entry in the help as printed: from its line to the next option's
        entries = [" ".join(entry.split()) for entry in re.split(r"\n(?=  -)", parser.format_help())]
        for action in parser._actions:
            if action.option_strings and action.default not in (None, False, [], argparse.SUPPRESS):
                (entry,) = [e for e in entries if e.startswith(action.option_strings[0] + " ")
                            or e.startswith(action.option_strings[0] + ",") or e == action.option_strings[0]]
                assert "default" in entry, (parser.prog, entry)


@pytest.mark.parametrize("command", sorted(LEAVES))
def test_help(command, tmp_path):
    proc = walstress(*command.split(), "--help", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith(f"usage: walstress {command} ")
    epilog = proc.stdout.split("\nexit codes:\n", 1)[1]
    codes, examples = epilog.split("\nexamples:\n")
    assert "  0 " in codes and "  2 " in codes and "  3 internal error" in codes, codes
    lines = examples.strip().splitlines()
    assert len(lines) == 2 and all(line.strip().startswith(f"walstress {command.split()[0]}") for line in lines)


@pytest.mark.parametrize("command", sorted(LEAVES))
def test_a_bad_argument_is_one_line_on_stderr(command, tmp_path):
    _one_error_line(walstress(*command.split(), "--no-such-option", cwd=tmp_path), command)


def test_an_abbreviated_option_is_refused(work):
    line = _one_error_line(walstress("check", str(work / "small.db"), "--verb", cwd=work), "check")
    assert "unrecognized arguments: --verb" in line
    line = _one_error_line(walstress("crash", "explore", "x.toml", "--max-st", "3", cwd=work), "crash explore")
    assert "unrecognized arguments: --max-st 3" in line
    line = _one_error_line(walstress("crash", "-q", "explore", "x.toml", cwd=work), "crash")
    assert "give it after 'walstress crash explore'" in line


@pytest.mark.parametrize("command", sorted(set(LEAVES) - NO_JSON - ON_A_RUN - ON_A_RECORDING))
def test_json_alone_on_stdout(command, work, cache_dir):
    if command in JSON_NOT_RUN:
        pytest.skip(JSON_NOT_RUN[command])
    if command == "watch":
        if lockwatch_available() is not None:
            pytest.skip(str(lockwatch_available()))
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            proc = walstress("watch", str(sleeper.pid), "--duration", "0.4s", "--json", cwd=work)
        finally:
            sleeper.kill()
            sleeper.wait()
        assert proc.returncode == 0, proc.stderr
        records = [json.loads(line) for line in proc.stdout.splitlines()]  # JSON lines, one record each
        assert records and all(isinstance(r, dict) and "type" in r for r in records)
        return
    else:
        if command == "search":
            (work / "search.toml").write_text(
                'name = "s"\nseed = 3\nduration = "1s"\n[database]\nschema = "minimal"\npages = 300\n'
                '[[workers]]\nrole = "writer"\ncount = 1\n'
                '[search]\nruns = 1\nmax_examples = 1\n[search.vary]\n"checkpoint.mode" = ["PASSIVE"]\n')
        proc = walstress(*_json_args(command, work, cache_dir), "--json", cwd=work)
    assert proc.returncode in (0, 1), (command, proc.stderr)
    data = json.loads(proc.stdout)   # the whole of stdout is one JSON document
    assert isinstance(data, dict) and data


def test_run_report_merge_explain(tmp_path, cache_dir):
    """Two 1 s cells, the second expecting damage it does not get: each command's JSON and verdict line."""
    out = tmp_path / "out"
    verdict = ("walstress: 2 runs, 1 as expected, 1 not: 2 clean; "
               "1 cell not as expected (cell-001 expected damaged)")
    proc = walstress("run", str(TINY), "--set", "duration=1s", "--set", "expect=[clean, damaged]", "--out",
                     str(out), "--cache-dir", str(cache_dir), "-v", "--json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    assert data["ok"] is False and [c["matches_expect"] for c in data["cells"]] == [True, False]
    assert proc.stderr.splitlines()[-1] == verdict, proc.stderr
    assert proc.stderr.count("     run dir ") == 2, "-v tells each run's folder"
    # report -q: the verdict line alone; the same exit code
    again = walstress("report", str(out), "-q", cwd=tmp_path)
    assert (again.returncode, again.stdout, again.stderr) == (1, verdict + "\n", "")
    merged = walstress("merge", str(out), "--out", str(tmp_path / "merged"), "--json", "-q", cwd=tmp_path)
    assert merged.returncode == 1 and merged.stderr == verdict + "\n"
    assert [c["cell_id"] for c in json.loads(merged.stdout)["cells"]] == ["cell-000", "cell-001"]
    explained = walstress("explain", str(out), "--json", cwd=tmp_path)
    assert explained.returncode == 0 and explained.stderr == ""
    sentences = json.loads(explained.stdout)["sentences"]
    assert sentences[0].startswith("tiny: 2 cells, 2 runs") and any("expect=damaged" in s for s in sentences)
    # a cell folder is refused with the folders report takes
    line = _one_error_line(walstress("report", str(tmp_path / "out" / "cell-000"), cwd=tmp_path), "report")
    assert "one cell's folder" in line and str(tmp_path / "out" / "cell-000" / "run-000") in line
    assert not (tmp_path / "out" / "cell-000" / "report.md").exists()


def test_crash_explore_and_replay(tmp_path, cache_dir):
    """A recording explored on lying storage loses synced commits; its smallest failing state replays."""
    scenario = tmp_path / "crash.toml"
    scenario.write_text('name = "crash"\nseed = 3\nduration = "0.8s"\n[sqlite]\ndriver = "apsw"\n'
                        '[database]\nschema = "minimal"\npages = 300\nsynchronous = "FULL"\ncache_size = 20\n'
                        '[checkpoint]\nmode = "PASSIVE"\nevery_writes = 10\n'
                        '[[workers]]\nrole = "writer"\ncount = 1\nbatch = 5\npause_ms = 20\n')
    explored = walstress("crash", "explore", str(scenario), "--model", "lying", "--max-states", "20", "--jobs", "1",
                         "--out", str(tmp_path / "crash"), "--cache-dir", str(cache_dir), "--json", "-q",
                         cwd=tmp_path)
    assert explored.returncode == 1, explored.stderr
    report = json.loads(explored.stdout)
    assert report["verdict"] == "lost-writes" and report["failing"]
    assert explored.stderr.count("\n") == 1 and "distinct crash states checked" in explored.stderr
    replayed = walstress("crash", "replay", report["failing"][0]["file"], "--json", cwd=tmp_path)
    assert replayed.returncode == 0 and json.loads(replayed.stdout)["as_recorded"] is True
    assert replayed.stderr.startswith("replayed: lost-writes")


def test_check_errors_are_one_line_and_quiet_is_the_verdict(work):
    missing = walstress("check", str(work / "missing.db"), cwd=work)
    assert _one_error_line(missing, "check") == f"walstress check: no such file: {work / 'missing.db'}"
    quiet = walstress("check", str(work / "small.db"), "-q", cwd=work)
    assert quiet.returncode == 0 and quiet.stdout == f"HEALTHY: {work / 'small.db'}\n" and quiet.stderr == ""
    full = walstress("check", str(work / "small.db"), cwd=work)
    assert full.stdout.startswith(quiet.stdout) and len(full.stdout.splitlines()) > 1


def _on_a_terminal(args: list[str], cwd: Path, **env: str) -> str:
    """What walstress prints when stdout and stderr are a terminal."""
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "walstress", *args], stdin=subprocess.DEVNULL,
                              stdout=terminal, stderr=terminal, cwd=cwd, env=_env(**env), timeout=60)
        os.close(terminal)
        terminal = -1
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:   # the terminal's other side is closed: all was read
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.returncode == 0
        return b"".join(chunks).decode()
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)


def test_colour_only_on_a_terminal_and_never_with_no_color_or_a_dumb_terminal(work):
    args = ["check", str(work / "small.db"), "-q"]
    assert "\x1b[32mHEALTHY\x1b[0m" in _on_a_terminal(args, work, TERM="xterm")
    assert "\x1b" not in _on_a_terminal(args, work, TERM="xterm", NO_COLOR="1")
    assert "\x1b" not in _on_a_terminal(args, work, TERM="dumb")
