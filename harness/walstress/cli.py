"""The walstress command: parse, call, print.

Conventions of every subcommand: ``-q/--quiet`` (only the final verdict line
and errors), ``-v/--verbose`` (more progress detail; a traceback with an
internal error); ``--json`` on the commands with a result (the JSON alone on
stdout, everything meant for people on stderr); an error is one line on
stderr, ``walstress CMD: ...``; long options are never abbreviated.

Exit codes: 0 every verdict matched its expectation (check: healthy), 1 one
did not (check: damaged), 2 usage, scenario or environment error, 3 an
internal error (a bug: -v shows its traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, NoReturn

from walstress.errors import ScenarioError, UsageError, WalstressError

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3

_USAGE_EXIT = "2 usage, scenario or environment error (one line on stderr, nothing on stdout)"


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each option's default after its help, unless the help already names one; the epilog as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or not action.option_strings or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


class _ArgumentError(UsageError):
    """A usage error found while parsing: it knows which (sub)command's parser found it."""

    def __init__(self, message: str, prog: str):
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # --dur is not --duration (pytest refuses it too)
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:  # exit 2 with one line, as argparse does, but ours
        raise _ArgumentError(f"{message} (see '{self.prog} --help')", self.prog)


def _epilog(exits: list[str], examples: list[str]) -> str:
    import textwrap

    exits = [*exits, "3 internal error (a bug: -v shows its traceback); 130 interrupted"]
    return ("exit codes:\n" + "".join(textwrap.fill(line, 79, initial_indent="  ", subsequent_indent="    ") + "\n"
                                      for line in exits)
            + "\nexamples:\n" + "".join(f"  {line}\n" for line in examples))


_VERDICT_EXITS = ["0 every cell's verdicts matched its expectation",
                  "1 a cell did not (the last line says how many runs and which cells)", _USAGE_EXIT]

# name: (help, exit codes, two examples); the help lists the commands in build_parser's order
COMMANDS_HELP: dict[str, tuple[str, list[str], list[str]]] = {
    "run": ("run a scenario file (every matrix cell x repeat)", _VERDICT_EXITS,
            ["walstress run scenarios/smoke.toml --duration 10s",
             "walstress run scenarios/hermes-45383-matrix.toml --repeat 3 --json > results.json"]),
    "check": ("read-only diagnosis of a database file",
              ["0 healthy", "1 damaged (the first line says DAMAGED and why)",
               "2 error: not checkable, or a usage error (one line on stderr; with --json the diagnosis, "
               "verdict \"error\", on stdout)"],
              ["walstress check app.db", "walstress check app.db --json | jq .verdict"]),
    "report": ("judge again and rebuild the report of an output folder or of one run dir", _VERDICT_EXITS
               + ["(a cell folder, cell-NNN, is refused: give its output folder or one of its run dirs)"],
               ["walstress report reports/smoke-20250101-120000",
                "walstress report reports/smoke-20250101-120000/cell-000/run-000 --json"]),
    "merge": ("join the results of shard runs (walstress run --shard K/N)",
              _VERDICT_EXITS[:1] + ["1 a cell did not match, or no shard ran a cell", _USAGE_EXIT],
              ["walstress merge shard-1 shard-2 --out merged",
               "walstress merge shard-*/results.json --out merged --json"]),
    "explain": ("say in sentences which factor of a matrix changes the verdict",
                ["0 explained", _USAGE_EXIT],
                ["walstress explain reports/hermes-45383-matrix-20250101-120000",
                 "walstress explain results.json --json"]),
    "bisect": ("find the first SQLite version whose verdict differs (apsw driver)",
               ["0 a first changed version was found (the last lines name it)",
                "1 no change in the range, or a version gave errors (the conclusion says which)", _USAGE_EXIT],
               ["walstress bisect scenarios/hermes-45383.toml --versions 3.50.0..3.54.1",
                "walstress bisect s.toml --versions 3.44.0..3.51.0 --repeat 3 --json > bisect.json"]),
    "build": ("build a template database", ["0 built (the line says what)", _USAGE_EXIT],
              ["walstress build --out big.db", "walstress build --out small.db --schema minimal --pages 300 --json"]),
    "search": ("look for a scenario that breaks the property, shrink it, write it to found/",
               ["0 nothing found within the budget", "1 a failing scenario was found and written (the line names it)",
                _USAGE_EXIT],
               ["walstress search scenarios/search.toml --budget 10m",
                "walstress search s.toml --max-examples 20 --runs 1 --json"]),
    "repro": ("write one standalone Python file that reproduces a scenario's mechanism",
              ["0 written (the line names the file)", _USAGE_EXIT],
              ["walstress repro reports/x/cell-000/run-000", "walstress repro scenarios/fork-open-connection.toml "
               "--out fork.py"]),
    "init": ("write a commented starter scenario for your database file or your code",
             ["0 written (the line names the file)", _USAGE_EXIT],
             ["walstress init --db app.db", "walstress init --entry worker.py:work --out mine.toml --force"]),
    "bench": ("every benchmark next to its baseline, in one run (bench.json, bench.md)",
              ["0 every benchmark ran", _USAGE_EXIT],
              ["walstress bench --size tiny", "walstress bench --only 1,3 --json > bench.json"]),
    "crash": ("record a run's I/O once, then check every crash state a storage model allows (explore), or one "
              "saved state again (replay)", ["see 'walstress crash explore --help' and 'walstress crash replay --help'"],
              ["walstress crash explore scenarios/crash/wal-full.toml",
               "walstress crash replay reports/crash-x/failing/smallest.json"]),
    "crash explore": ("check the crash states of a scenario's run",
                      ["0 every state checked is clean", "1 one is not (the summary counts them, the lines below "
                       "name three)", _USAGE_EXIT],
                      ["walstress crash explore scenarios/crash/wal-full.toml --budget 1m",
                       "walstress crash explore reports/x/cell-000/run-000 --model lying --json"]),
    "crash replay": ("rebuild one saved crash state and check it again",
                     ["0 its verdict is the recorded one", "1 it is not (the line says both)", _USAGE_EXIT],
                     ["walstress crash replay reports/crash-x/failing/smallest.json",
                      "walstress crash replay state.json --keep /tmp/state --json"]),
    "watch": ("watch running processes' SQLite locks from /proc, read-only, and print lost locks, deleted -wal/-shm "
              "in use and two SQLite libraries as they happen",
              ["0 nothing was seen", "1 a hazard was seen (the lines and the summary say which)", _USAGE_EXIT],
              ["walstress watch 1234 --duration 60s", "walstress watch $(pgrep -f myapp) --children --json"]),
}


def _common(*, json_help: str | None) -> argparse.ArgumentParser:
    """The options every subcommand takes: -q, -v and, where the command has a result, --json."""
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    talk = common.add_mutually_exclusive_group()
    talk.add_argument("-q", "--quiet", action="store_true", help="only the final line (the verdict) and errors")
    talk.add_argument("-v", "--verbose", action="count", default=0,
                      help="more progress detail; an internal error's traceback")
    if json_help:
        common.add_argument("--json", action="store_true", help=f"{json_help} on stdout (the rest on stderr)")
    return common


def _add(sub: Any, name: str, json_help: str | None = None, *, group: bool = False) -> argparse.ArgumentParser:
    """A subcommand's parser; a group of subcommands (crash) leaves -q and -v to its own subcommands."""
    import textwrap

    text, exits, examples = COMMANDS_HELP[name]
    return sub.add_parser(name.rpartition(" ")[2], help=text, description=textwrap.fill(text[0].upper() + text[1:] + ".", 79),
                          epilog=_epilog(exits, examples), parents=[] if group else [_common(json_help=json_help)])


def _set_option(parser: argparse.ArgumentParser, more: str = "") -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a scenario key" + more)


def _cache_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", help="template cache folder (default: ~/.cache/walstress)")


def build_parser() -> argparse.ArgumentParser:
    from walstress.version import __version__

    parser = _Parser(prog="walstress", description="Reproduce SQLite WAL corruption on demand.",
                     epilog=_epilog(["0 as expected (check: healthy)", "1 not as expected (check: damaged); "
                                     "the last line says why", _USAGE_EXIT],
                                    ["walstress run scenarios/smoke.toml", "walstress check app.db"]))
    parser.add_argument("--version", action="version", version=f"walstress {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    run = _add(sub, "run", "results.json")
    run.add_argument("scenario", help="scenario TOML file")
    _set_option(run, " (a [list] makes it a matrix axis)")
    run.add_argument("--out", help="output folder (default: reports/<name>-<time>)")
    run.add_argument("--repeat", type=int, help="runs per cell (default: the scenario's repeat)")
    run.add_argument("--duration", help='run length per run, e.g. 30, "30s", "500ms" (the same as --set duration=...)')
    _cache_dir_option(run)
    run.add_argument("--shard", metavar="K/N",
                     help="run only the cells whose index %% N == K-1 (join the shards with walstress merge)")
    run.add_argument("--keep", choices=("failed", "all", "none"), default="failed",
                     help="which runs keep their database files: failed (damaged, or not as expected), "
                          "all, none; every run keeps its verdict, history, ledger and figures")

    build = _add(sub, "build", "what was built")
    build.add_argument("--pages", type=int, default=65536, help="at least this many pages")
    build.add_argument("--page-size", type=int, default=4096, help="bytes per page")
    build.add_argument("--schema", default="hermes", help='"hermes" (the bug report\'s schema) or "minimal"')
    build.add_argument("--seed", type=int, default=0, help="seed of the synthetic messages")
    build.add_argument("--out", required=True, help="database file to create (must not exist)")

    check = _add(sub, "check", "the diagnosis")
    check.add_argument("db", help="database file; its -wal is read too; nothing is written")

    report = _add(sub, "report", "the results")
    report.add_argument("run_dir", help="output folder of walstress run (results.json or cell-NNN/run-NNN inside) "
                                        "or one run dir (cell-NNN/run-NNN)")

    merge = _add(sub, "merge", "the joined results.json")
    merge.add_argument("dirs", nargs="+", metavar="DIR", help="output folders (or results.json files) of the shards")
    merge.add_argument("--out", required=True, help="output folder of the joined results")

    bisect = _add(sub, "bisect", "bisect.json")
    bisect.add_argument("scenario", help="scenario TOML file (one cell once the SQLite axes are removed)")
    bisect.add_argument("--versions", required=True, metavar="A..B", help="SQLite versions to search, e.g. 3.50.0..3.54.1")
    _set_option(bisect)
    bisect.add_argument("--repeat", type=int, help="runs per version (default: the scenario's repeat)")
    bisect.add_argument("--duration", help="run length per run (the same as --set duration=...)")
    bisect.add_argument("--out", help="output folder (default: reports/bisect-<name>-<time>)")
    _cache_dir_option(bisect)

    search = _add(sub, "search", "the search's summary")
    search.add_argument("scenario", help="scenario TOML file with a [search] table")
    _set_option(search)
    search.add_argument("--budget", help='time to look for a failure, e.g. "10m" (default: search.budget)')
    search.add_argument("--max-examples", type=int, help="examples at the most (default: search.max_examples)")
    search.add_argument("--runs", type=int, help="runs per example (default: search.runs)")
    search.add_argument("--out", help="output folder (default: reports/search-<name>-<time>)")
    search.add_argument("--found", default="found", help="where the found scenario is written")
    search.add_argument("--example-db", metavar="DIR|github:OWNER/REPO",
                        help="Hypothesis's example database (default: one per search space in the cache dir)")
    search.add_argument("--no-shrink", action="store_true", help="write the first failing example as it was found")
    _cache_dir_option(search)

    repro = _add(sub, "repro")
    repro.add_argument("target", help="a run dir (cell-NNN/run-NNN), an output folder or a one-cell scenario file")
    repro.add_argument("--out", default="repro.py", help="the file to write")
    _set_option(repro)

    init = _add(sub, "init")
    init.add_argument("--db", help="your database file (read from a private copy, never written)")
    init.add_argument("--entry", metavar="MODULE:FUNCTION", help='your worker function, "file.py:work" or "pkg.mod:work"')
    init.add_argument("--out", default="walstress.toml", help="the scenario file to write")
    init.add_argument("--force", action="store_true", help="overwrite --out if it exists")

    explain = _add(sub, "explain", "the sentences")
    explain.add_argument("results", help="results.json or an output folder")

    bench = _add(sub, "bench", "bench.json")
    bench.add_argument("--size", choices=("full", "tiny"), default="full",
                       help="full: the README's sizes (tens of minutes); tiny: small databases, seconds")
    bench.add_argument("--only", help="comma-separated benchmark numbers (1-12), e.g. 1,3,7 (default: all)")
    bench.add_argument("--out", help="output folder (default: reports/bench-<time>)")
    _cache_dir_option(bench)

    crash = _add(sub, "crash", group=True)
    crash_sub = crash.add_subparsers(dest="crash_command", required=True, parser_class=_Parser, metavar="COMMAND")
    explore = _add(crash_sub, "crash explore", "crash.json")
    explore.add_argument("target", help="scenario TOML file (its first cell is run once, traced), or a run dir "
                                        "recorded with faults.crash_trace")
    _set_option(explore)
    explore.add_argument("--model", choices=("posix-weak", "posix-ordered", "lying"),
                         help="storage model (default: crash.model, posix-weak)")
    explore.add_argument("--max-states", type=int, help="distinct states to check at the most (default: "
                                                        "crash.max_states)")
    explore.add_argument("--budget", help='time to check states, e.g. "10m" (default: crash.budget)')
    explore.add_argument("--jobs", type=int, help="checking processes (default: one per core)")
    explore.add_argument("--after-cut", choices=("none", "delete-journal"),
                         help="what happens after the cut (default: crash.after_cut)")
    explore.add_argument("--classes", help="comma-separated classes of states (default: all the model's)")
    explore.add_argument("--out", help="output folder (default: reports/crash-<name>-<time>)")
    _cache_dir_option(explore)
    replay = _add(crash_sub, "crash replay", "the result")
    replay.add_argument("state", help="a state file written by explore (failing/smallest.json)")
    replay.add_argument("--keep", help="leave the state's files in this folder (default: a temporary folder)")

    watch = _add(sub, "watch", "one JSON record a line (every record, locks included)")
    watch.add_argument("pids", nargs="+", type=int, metavar="PID", help="processes to watch")
    watch.add_argument("--hz", type=float, default=20.0, help="samples a second")
    watch.add_argument("--duration", help='stop after this long, e.g. "60s" (default: until the processes exit)')
    watch.add_argument("--children", action="store_true", help="also watch the processes' children")
    watch.add_argument("--locks", action="store_true", help="also print the locks each process holds, every second "
                                                            "(-v does too)")
    return parser


def leaf_commands(parser: argparse.ArgumentParser | None = None) -> list[tuple[list[str], argparse.ArgumentParser]]:
    """Every command that runs something, as its words and its parser: ["run"], ..., ["crash", "explore"]."""
    found: list[tuple[list[str], argparse.ArgumentParser]] = []

    def walk(words: list[str], node: argparse.ArgumentParser) -> None:
        subs = [a for a in node._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            found.append((words, node))
        for action in subs:
            for name, child in action.choices.items():
                walk([*words, name], child)

    walk([], parser or build_parser())
    return [(words, node) for words, node in found if words]


def _overrides(args: argparse.Namespace) -> list[str]:
    """--set KEY=VALUE arguments, with --duration X as the override duration=X."""
    overrides = list(args.overrides)
    if getattr(args, "duration", None) is not None:
        overrides.append(f"duration={args.duration}")
    return overrides


def _as_json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def _people(args: argparse.Namespace) -> Any:
    """Where text meant for people goes: stdout, or stderr when stdout carries JSON."""
    return sys.stderr if _as_json(args) else sys.stdout


def _tell(args: argparse.Namespace, text: str) -> None:
    """A result line for people, unless --quiet."""
    if not args.quiet:
        print(text, file=_people(args), flush=True)


def _progress(args: argparse.Namespace) -> Callable[[str], None]:
    """Progress lines on stderr; none with --quiet."""
    def say(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)
    return say


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=1, default=str), flush=True)


def _end_with_verdict(args: argparse.Namespace, data: dict[str, Any]) -> int:
    """The last line of run, report and merge: runs, as expected, verdicts; the exit code it explains."""
    from walstress.console import verdict_line

    if _as_json(args):
        _print_json(data)
    stream = _people(args)
    print(verdict_line(data, stream), file=stream, flush=True)
    return EXIT_OK if data.get("ok") else EXIT_MISMATCH


def _tell_runs(args: argparse.Namespace, data: dict[str, Any]) -> None:
    """With -v: every run's verdict and reason, one line each."""
    if not args.verbose:
        return
    from walstress.console import paint_verdict

    stream = _people(args)
    for cell in data.get("cells", []):
        for run in cell["results"]:
            verdict = paint_verdict(run["verdict"].upper(), run["verdict"], stream)
            print(f"  {cell['cell_id']}/run-{run.get('repeat_index', 0):03d}: {verdict}: {run['reason']}",
                  file=stream)


def _cmd_run(args: argparse.Namespace) -> int:
    from walstress.api import load_scenario, run
    from walstress.console import Console, summary_table

    scenario = load_scenario(args.scenario, _overrides(args))
    if args.repeat is not None and args.repeat < 1:
        raise UsageError("--repeat must be at least 1")
    out = Path(args.out) if args.out else Path("reports") / f"{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    console = Console(sys.stderr, quiet=args.quiet, verbose=args.verbose)
    shard = None
    if args.shard:
        from walstress.runner import parse_shard

        try:
            shard = parse_shard(args.shard)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    result = run(scenario, out, repeat=args.repeat, cache_dir=args.cache_dir, console=console, shard=shard,
                 keep=args.keep)
    _after_run(result.data, out)
    _tell(args, summary_table(result.data))
    if len(result.data["cells"]) > 1:
        from walstress.explain import explain

        _tell(args, "\n".join(explain(result.data)))
    _tell(args, f"results: {result.path}")
    return _end_with_verdict(args, result.data)


def _after_run(results: dict, out: Path) -> None:
    """Hook for the report package: figures and pages after the workers stopped."""
    try:
        from walstress.report import build_report
    except ImportError:
        return
    try:
        build_report(out, results)
    except Exception as exc:  # a report problem never changes a verdict
        print(f"walstress: report not built: {exc!r}", file=sys.stderr)


def _cmd_build(args: argparse.Namespace) -> int:
    from walstress.database.template import build_database

    say = _progress(args)

    def progress(text: str) -> None:
        if not text.startswith("built "):  # the summary line below says it
            say(f"  {text}")

    try:
        info = build_database(args.out, schema=args.schema, pages=args.pages, page_size=args.page_size,
                              seed=args.seed, progress=progress)
    except (ValueError, KeyError) as exc:
        raise UsageError(str(exc).strip("'\"")) from None
    except FileExistsError as exc:
        name = exc.filename or str(exc)
        raise UsageError(f"{name} exists; choose another --out or remove it") from None
    if args.verbose:
        say(f"  schema {info['schema']}, seed {info['seed']}, SQLite {info['sqlite_version']}")
    if _as_json(args):
        _print_json(info)
    line = (f"built {info['path']}: {info['pages']:,} pages of {info['page_size']} bytes, "
            f"{info['messages']:,} messages, {info['sessions']:,} sessions in {info['build_seconds']:.1f} s")
    print(line, file=_people(args))
    return EXIT_OK


def _cmd_check(args: argparse.Namespace) -> int:
    from walstress.checks.cli_check import main_check
    from walstress.console import paint_verdict

    return main_check(args.db, args.json, quiet=args.quiet,
                      paint=lambda text, verdict: paint_verdict(text, verdict, sys.stdout))


def _report_target(target: Path) -> None:
    """Refuse, with a line saying what report takes, a folder that is neither an output folder nor a run dir."""
    if not target.exists():
        raise UsageError(f"{target}: no such folder")
    if not target.is_dir():
        raise UsageError(f"{target}: not a folder; give an output folder of walstress run or one run dir")
    if (target / "scenario.json").is_file() or (target / "results.json").is_file():
        return
    if any((cell / "scenario.json").is_file() for cell in target.glob("cell-*/run-*")):
        return
    if any((run / "scenario.json").is_file() for run in target.glob("run-*")):
        raise UsageError(f"{target} is one cell's folder; report takes its output folder ({target.parent}) "
                         f"or one of its run dirs ({target / 'run-000'})")
    raise UsageError(f"{target}: neither an output folder of walstress run (results.json or cell-NNN/run-NNN "
                     "inside) nor a run dir (scenario.json inside)")


def _cmd_report(args: argparse.Namespace) -> int:
    from walstress.runner import rejudge_dir

    target = Path(args.run_dir)
    _report_target(target)
    data = rejudge_dir(target)
    _after_run(data, target)
    if data.get("cells"):
        from walstress.console import summary_table

        _tell_runs(args, data)
        _tell(args, summary_table(data))
    elif data.get("run"):
        from walstress.console import paint_verdict

        run = data["run"]
        verdict = paint_verdict(run["verdict"].upper(), run["verdict"], _people(args))
        _tell(args, f"{verdict}: {run['reason']} (expect {data.get('expect', 'clean')})")
    _tell(args, f"report: {target / 'report.md'}")
    return _end_with_verdict(args, data)


def _cmd_merge(args: argparse.Namespace) -> int:
    from walstress.runner import merge_results

    try:
        data = merge_results(args.dirs, args.out)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    out = Path(args.out)
    _after_run(data, out)
    from walstress.console import summary_table

    _tell_runs(args, data)
    _tell(args, summary_table(data))
    if data.get("missing_cells"):
        _tell(args, f"missing cells (no shard ran them): {', '.join(data['missing_cells'])}")
    _tell(args, f"results: {out / 'results.json'}")
    return _end_with_verdict(args, data)


def _cmd_bisect(args: argparse.Namespace) -> int:
    from walstress.bisect import bisect_versions
    from walstress.console import Console

    if args.repeat is not None and args.repeat < 1:
        raise UsageError("--repeat must be at least 1")
    # the evidence as it comes: on stdout for people; on stderr with --json; none with --quiet
    say = _progress(args) if _as_json(args) or args.quiet else print
    outcome = bisect_versions(args.scenario, args.versions, overrides=_overrides(args), repeat=args.repeat,
                              out_dir=args.out, cache_dir=args.cache_dir,
                              console=Console(sys.stderr, quiet=args.quiet, verbose=args.verbose),
                              say=say)
    if _as_json(args):
        _print_json(outcome)
    elif args.quiet:  # the conclusion, which the evidence lines ended with
        print(outcome["conclusion"])
    return EXIT_OK if outcome.get("first_changed") else EXIT_MISMATCH


def _cmd_explain(args: argparse.Namespace) -> int:
    from walstress.explain import explain
    from walstress.runner import load_results

    path = Path(args.results)
    if not (path / "results.json" if path.is_dir() else path).is_file():
        raise UsageError(f"{path}: no results.json")
    try:
        data = load_results(path)
    except ValueError as exc:
        raise UsageError(f"{path}: not a results.json ({exc})") from None
    sentences = explain(data)
    if _as_json(args):
        _print_json({"results": str(path), "sentences": sentences})
    else:
        print("\n".join(sentences[:1] if args.quiet else sentences))
    return EXIT_OK


def _cmd_search(args: argparse.Namespace) -> int:
    from walstress.api import load_scenario
    from walstress.search import run_search

    scenario = load_scenario(args.scenario, args.overrides)
    budget = _duration_option("--budget", args.budget)
    for name in ("max_examples", "runs"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    out = Path(args.out) if args.out else Path("reports") / f"search-{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    summary = run_search(scenario, out, budget_s=budget, max_examples=args.max_examples, runs=args.runs,
                         found_dir=args.found, example_db=args.example_db, cache_dir=args.cache_dir,
                         shrink_failure=not args.no_shrink, say=_progress(args))
    if _as_json(args):
        _print_json(summary)
    _tell(args, f"log: {summary['log']}")
    print(summary["message"], file=_people(args))
    return EXIT_MISMATCH if summary["status"] == "found" else EXIT_OK


def _cmd_repro(args: argparse.Namespace) -> int:
    from walstress.repro import write_repro

    path, mechanism = write_repro(args.target, args.out, args.overrides)
    print(f"wrote {path}" if args.quiet else
          f"wrote {path} ({mechanism.replace('_', ' ')}); run it anywhere with: python3 {path}")
    return EXIT_OK


def _cmd_init(args: argparse.Namespace) -> int:
    from walstress.init import write_starter

    path = write_starter(args.out, db=args.db, entry=args.entry, force=args.force)
    print(f"wrote {path}" if args.quiet else
          f"wrote {path}; try it:  walstress run {path} --set duration=5s --set repeat=1")
    return EXIT_OK


def _duration_option(option: str, value: str | None) -> float | None:
    """A duration option's seconds ("90s", "15m"), None when not given; a usage error when malformed."""
    from walstress.settings import parse_duration_seconds

    if value is None:
        return None
    try:
        return parse_duration_seconds(value)
    except ValueError as exc:
        raise UsageError(f"{option} {value!r}: expected {exc}") from None


def _cmd_crash(args: argparse.Namespace) -> int:
    from walstress.crash import explore, replay

    if args.crash_command == "replay":
        result = replay(args.state, keep=args.keep)
        if _as_json(args):
            _print_json(result)
        print(f"replayed: {result['verdict']}" + (f" ({result['why']})" if result["why"] else "")
              + ("; as recorded" if result["as_recorded"] else f"; recorded: {result['recorded_verdict']}"),
              file=_people(args))
        return EXIT_OK if result["as_recorded"] else EXIT_MISMATCH
    if args.max_states is not None and args.max_states < 1:
        raise UsageError("--max-states must be at least 1")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    target = Path(args.target)
    out = Path(args.out) if args.out else Path("reports") / f"crash-{target.stem or target.name}-" \
        f"{time.strftime('%Y%m%d-%H%M%S')}"
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    report = explore(target, out, overrides=args.overrides, model=args.model, max_states=args.max_states,
                     budget_s=_duration_option("--budget", args.budget), jobs=args.jobs, after=args.after_cut,
                     classes=classes, cache_dir=args.cache_dir, progress=None if args.quiet else _progress(args))
    if _as_json(args):
        _print_json(report)
    totals = report["totals"]
    for state in report["failing"][:3]:
        _tell(args, f"  {state['verdict']}: {state['why']} -> {state.get('file')}")
    _tell(args, f"report: {out / 'crash.md'}")
    print(f"{totals['explored']} distinct crash states checked of {totals['possible']} ({report['model']}, "
          f"stopped by {report['stopped_by']}, {report['states_per_second']} states/s): {totals['clean']} clean, "
          f"{totals['lost_synced']} with synced commits lost, {totals['corrupt']} corrupt", file=_people(args))
    return EXIT_OK if report["verdict"] == "clean" else EXIT_MISMATCH


def _cmd_bench(args: argparse.Namespace) -> int:
    from walstress.bench.suite import format_row, markdown, run_suite

    only = None
    if args.only:
        try:
            only = [int(part) for part in args.only.split(",") if part.strip()]
        except ValueError:
            raise UsageError(f"--only {args.only!r}: benchmark numbers separated by commas, e.g. 1,3,7") from None
    out = Path(args.out) if args.out else Path("reports") / f"bench-{time.strftime('%Y%m%d-%H%M%S')}"

    def save(result: dict) -> None:   # after every benchmark: a suite stopped half way keeps its rows
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(result, indent=1) + "\n")
        (out / "bench.md").write_text(markdown(result))

    try:
        result = run_suite(args.size, only=only, cache_dir=args.cache_dir,
                           progress=None if args.quiet else _progress(args), on_rows=save)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    save(result)
    if _as_json(args):
        _print_json(result)
    for row in result["rows"]:
        _tell(args, format_row(row))
    print(f"bench: {len(result['rows'])} benchmarks in {out / 'bench.json'}, {out / 'bench.md'}", file=_people(args))
    return EXIT_OK


def _cmd_watch(args: argparse.Namespace) -> int:
    from walstress.watch import watch

    return watch(args.pids, hz=args.hz, duration=_duration_option("--duration", args.duration),
                 children=args.children, as_json=args.json, show_locks=args.locks or args.verbose > 0,
                 quiet=args.quiet)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "bench": _cmd_bench, "crash": _cmd_crash, "watch": _cmd_watch, "repro": _cmd_repro, "search": _cmd_search,
    "init": _cmd_init, "run": _cmd_run, "build": _cmd_build, "check": _cmd_check, "report": _cmd_report,
    "merge": _cmd_merge, "bisect": _cmd_bisect, "explain": _cmd_explain}


def _prog(args: argparse.Namespace | None) -> str:
    """``walstress``, ``walstress run``, ``walstress crash explore``: the prefix of an error line."""
    if args is None:
        return "walstress"
    words = [args.command] + ([args.crash_command] if getattr(args, "crash_command", None) else [])
    return " ".join(["walstress", *words])


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    args: argparse.Namespace | None = None
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra:  # said by the subcommand that was given them, not by the top level
            words = [args.command] + ([args.crash_command] if getattr(args, "crash_command", None) else [])
            leaf = dict((tuple(w), p) for w, p in leaf_commands(parser)).get(tuple(words), parser)
            known = [word for word in extra if word in leaf._option_string_actions]
            if known:  # e.g. "walstress crash -q explore": an option of the subcommand, given before it
                raise _ArgumentError(f"{' '.join(known)}: an option of '{leaf.prog}'; give it after "
                                     f"'{leaf.prog}'", leaf.prog.rpartition(" ")[0])
            leaf.error(f"unrecognized arguments: {' '.join(extra)}")
        return COMMANDS[args.command](args)
    except BrokenPipeError:  # the reader of our output went away (e.g. | head): not an error of ours
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK
    except _ArgumentError as exc:
        print(f"{exc.prog}: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except (ScenarioError, UsageError, WalstressError) as exc:
        text = _one_line(str(exc))
        if args is not None and text.startswith(f"{args.command}: "):  # "watch: ..." said by the module itself
            text = text[len(args.command) + 2:]
        print(f"{_prog(args)}: {text}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a file or folder we were pointed at: the user can act on it
        print(f"{_prog(args)}: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{_prog(args)}: interrupted; every worker was stopped", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours: one line, the traceback with -v
        verbose = args is not None and bool(args.verbose)
        if verbose:
            import traceback

            traceback.print_exc()
        print(f"{_prog(args)}: internal error: {type(exc).__name__}: {_one_line(str(exc))}"
              + ("" if verbose else " (-v shows the traceback)"),
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
