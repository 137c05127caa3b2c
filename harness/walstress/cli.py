"""The walstress command: parse, call, print. Exit codes:
0 every verdict matched its expectation (check: healthy), 1 one did not
(check: damaged), 2 usage, scenario or environment error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import NoReturn

from walstress.errors import ScenarioError, UsageError, WalstressError

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # exit 2 with one line, as argparse does, but ours
        command = self.prog.partition(" ")[2]
        raise UsageError(f"{command + ': ' if command else ''}{message} (see '{self.prog} --help')")


def _parser() -> argparse.ArgumentParser:
    from walstress.version import __version__

    parser = _Parser(prog="walstress", description="Reproduce SQLite WAL corruption on demand.")
    parser.add_argument("--version", action="version", version=f"walstress {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run a scenario file (every matrix cell x repeat)")
    run.add_argument("scenario", help="scenario TOML file")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a scenario key (a [list] makes it a matrix axis)")
    run.add_argument("--out", help="output folder (default reports/<name>-<time>)")
    run.add_argument("--repeat", type=int, help="runs per cell (overrides the scenario's repeat)")
    run.add_argument("--duration", help='run length per run, e.g. 30, "30s", "500ms" (the same as --set duration=...)')
    run.add_argument("--cache-dir", help="template cache folder")
    run.add_argument("--json", action="store_true", help="print results.json on stdout")
    run.add_argument("--quiet", action="store_true", help="no progress output")
    run.add_argument("--shard", metavar="K/N",
                     help="run only the cells whose index %% N == K-1 (join the shards with walstress merge)")
    run.add_argument("--keep", choices=("failed", "all", "none"), default="failed",
                     help="which runs keep their database files: failed (default: damaged, or not as expected), "
                          "all, none; every run keeps its verdict, history, ledger and figures")

    build = sub.add_parser("build", help="build a template database")
    build.add_argument("--pages", type=int, default=65536, help="at least this many pages (default 65536)")
    build.add_argument("--page-size", type=int, default=4096, help="bytes per page (default 4096)")
    build.add_argument("--schema", default="hermes", help='"hermes" (the bug report\'s schema) or "minimal"')
    build.add_argument("--seed", type=int, default=0, help="seed of the synthetic messages (default 0)")
    build.add_argument("--out", required=True, help="database file to create (must not exist)")

    check = sub.add_parser("check", help="read-only diagnosis of a database file (exit 0 healthy, 1 damaged, 2 error)")
    check.add_argument("db", help="database file; its -wal is read too; nothing is written")
    check.add_argument("--json", action="store_true", help="print the diagnosis as JSON")

    report = sub.add_parser("report", help="judge again and rebuild the report of an output folder or one run dir")
    report.add_argument("run_dir", help="output folder of walstress run (with results.json) or one cell-NNN/run-NNN")
    report.add_argument("--json", action="store_true", help="print the results as JSON")

    merge = sub.add_parser("merge", help="join the results of shard runs (walstress run --shard K/N)")
    merge.add_argument("dirs", nargs="+", metavar="DIR", help="output folders (or results.json files) of the shards")
    merge.add_argument("--out", required=True, help="output folder of the joined results")
    merge.add_argument("--json", action="store_true", help="print the joined results.json on stdout")

    bisect = sub.add_parser("bisect", help="find the first SQLite version whose verdict differs (apsw driver)")
    bisect.add_argument("scenario", help="scenario TOML file (one cell once the SQLite axes are removed)")
    bisect.add_argument("--versions", required=True, metavar="A..B", help="SQLite versions to search, e.g. 3.50.0..3.54.1")
    bisect.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    bisect.add_argument("--repeat", type=int, help="runs per version (default: the scenario's repeat)")
    bisect.add_argument("--duration", help="run length per run (the same as --set duration=...)")
    bisect.add_argument("--out", help="output folder (default reports/bisect-<name>-<time>)")
    bisect.add_argument("--cache-dir", help="template cache folder")
    bisect.add_argument("--quiet", action="store_true", help="no progress output of the runs")

    search = sub.add_parser("search", help="look for a scenario that breaks the property, shrink it, write it "
                                           "to found/ (exit 1 when found, 0 when not)")
    search.add_argument("scenario", help="scenario TOML file with a [search] table")
    search.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    search.add_argument("--budget", help='time to look for a failure, e.g. "10m" (default: search.budget)')
    search.add_argument("--max-examples", type=int, help="examples at the most (default: search.max_examples)")
    search.add_argument("--runs", type=int, help="runs per example (default: search.runs)")
    search.add_argument("--out", help="output folder (default reports/search-<name>-<time>)")
    search.add_argument("--found", default="found", help="where the found scenario is written (default found/)")
    search.add_argument("--example-db", metavar="DIR|github:OWNER/REPO",
                        help="Hypothesis's example database (default: one per search space in the cache dir)")
    search.add_argument("--no-shrink", action="store_true", help="write the first failing example as it was found")
    search.add_argument("--cache-dir", help="template cache folder")
    search.add_argument("--quiet", action="store_true", help="no progress lines")

    repro = sub.add_parser("repro", help="write one standalone Python file that reproduces a scenario's mechanism")
    repro.add_argument("target", help="a run dir (cell-NNN/run-NNN), an output folder or a one-cell scenario file")
    repro.add_argument("--out", default="repro.py", help="the file to write (default repro.py)")
    repro.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    init = sub.add_parser("init", help="write a commented starter scenario for your database file or your code")
    init.add_argument("--db", help="your database file (read from a private copy, never written)")
    init.add_argument("--entry", metavar="MODULE:FUNCTION", help='your worker function, "file.py:work" or "pkg.mod:work"')
    init.add_argument("--out", default="walstress.toml", help="the scenario file to write (default walstress.toml)")
    init.add_argument("--force", action="store_true", help="overwrite --out if it exists")

    explain = sub.add_parser("explain", help="say in sentences which factor of a matrix changes the verdict")
    explain.add_argument("results", help="results.json or an output folder")

    bench = sub.add_parser("bench", help="every benchmark next to its baseline, in one run (bench.json, bench.md)")
    bench.add_argument("--size", choices=("full", "tiny"), default="full",
                       help="full: the README's sizes (tens of minutes); tiny: small databases, seconds")
    bench.add_argument("--only", help="comma-separated benchmark numbers (1-11), e.g. 1,3,7")
    bench.add_argument("--out", help="output folder (default reports/bench-<time>)")
    bench.add_argument("--cache-dir", help="template cache folder")
    bench.add_argument("--json", action="store_true", help="print bench.json on stdout")

    crash = sub.add_parser("crash", help="record a run's I/O once, then check every crash state a storage model "
                                         "allows (explore), or one saved state again (replay)")
    crash_sub = crash.add_subparsers(dest="crash_command", required=True, parser_class=_Parser)
    explore = crash_sub.add_parser("explore", help="check the crash states of a scenario's run (exit 1 when one "
                                                   "is not clean)")
    explore.add_argument("target", help="scenario TOML file (its first cell is run once, traced), or a run dir "
                                        "recorded with faults.crash_trace")
    explore.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="override a scenario key")
    explore.add_argument("--model", choices=("posix-weak", "posix-ordered", "lying"),
                         help="storage model (default: crash.model, posix-weak)")
    explore.add_argument("--max-states", type=int, help="distinct states to check at the most (crash.max_states)")
    explore.add_argument("--budget", help='time to check states, e.g. "10m" (crash.budget)')
    explore.add_argument("--jobs", type=int, help="checking processes (default: one per core)")
    explore.add_argument("--after-cut", choices=("none", "delete-journal"), help="what happens after the cut")
    explore.add_argument("--classes", help="comma-separated classes of states (default: all the model's)")
    explore.add_argument("--out", help="output folder (default reports/crash-<name>-<time>)")
    explore.add_argument("--cache-dir", help="template cache (default ~/.cache/walstress)")
    explore.add_argument("--json", action="store_true", help="print crash.json on stdout")
    replay = crash_sub.add_parser("replay", help="rebuild one saved crash state and check it again (exit 0 when "
                                                 "its verdict is the recorded one)")
    replay.add_argument("state", help="a state file written by explore (failing/smallest.json)")
    replay.add_argument("--keep", help="leave the state's files in this folder")
    replay.add_argument("--json", action="store_true", help="print the result as JSON")

    watch = sub.add_parser("watch", help="watch running processes' SQLite locks from /proc, read-only, and print "
                                         "lost locks, deleted -wal/-shm in use and two SQLite libraries as they "
                                         "happen (exit 1 when one was seen)")
    watch.add_argument("pids", nargs="+", type=int, metavar="PID", help="processes to watch")
    watch.add_argument("--hz", type=float, default=20.0, help="samples a second (default 20)")
    watch.add_argument("--duration", help='stop after this long, e.g. "60s" (default: until the processes exit)')
    watch.add_argument("--children", action="store_true", help="also watch the processes' children")
    watch.add_argument("--locks", action="store_true", help="also print the locks each process holds, every second")
    watch.add_argument("--json", action="store_true", help="one JSON record a line (every record, locks included)")
    return parser


def _overrides(args: argparse.Namespace) -> list[str]:
    """--set KEY=VALUE arguments, with --duration X as the override duration=X."""
    overrides = list(args.overrides)
    if getattr(args, "duration", None) is not None:
        overrides.append(f"duration={args.duration}")
    return overrides


def _cmd_run(args: argparse.Namespace) -> int:
    from walstress.api import load_scenario, run
    from walstress.console import Console, summary_table

    scenario = load_scenario(args.scenario, _overrides(args))
    if args.repeat is not None and args.repeat < 1:
        raise UsageError("--repeat must be at least 1")
    out = Path(args.out) if args.out else Path("reports") / f"{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    console = Console(sys.stderr, quiet=args.quiet)
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
    if args.json:
        print(json.dumps(result.data, indent=1, default=str))
    else:
        print(summary_table(result.data))
        if len(result.data["cells"]) > 1:
            from walstress.explain import explain

            print("\n".join(explain(result.data)))
    print(f"results: {result.path}", file=sys.stderr if args.json else sys.stdout)
    return EXIT_OK if result.ok else EXIT_MISMATCH


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

    def progress(text: str) -> None:
        if not text.startswith("built "):  # the summary line below says it
            print(f"  {text}", file=sys.stderr)

    try:
        info = build_database(args.out, schema=args.schema, pages=args.pages, page_size=args.page_size,
                              seed=args.seed, progress=progress)
    except (ValueError, KeyError) as exc:
        raise UsageError(str(exc).strip("'\"")) from None
    except FileExistsError as exc:
        name = exc.filename or str(exc)
        raise UsageError(f"{name} exists; choose another --out or remove it") from None
    print(f"built {info['path']}: {info['pages']:,} pages of {info['page_size']} bytes, "
          f"{info['messages']:,} messages, {info['sessions']:,} sessions in {info['build_seconds']:.1f} s")
    return EXIT_OK


def _cmd_check(args: argparse.Namespace) -> int:
    from walstress.checks.cli_check import main_check

    return main_check(args.db, args.json)


def _cmd_report(args: argparse.Namespace) -> int:
    from walstress.runner import rejudge_dir

    target = Path(args.run_dir)
    if not target.exists():
        raise UsageError(f"{target}: no such run dir")
    data = rejudge_dir(target)
    _after_run(data, target)
    if args.json:
        print(json.dumps(data, indent=1, default=str))
    else:
        from walstress.console import summary_table

        if data.get("cells"):
            print(summary_table(data))
        elif data.get("run"):
            run = data["run"]
            print(f"{run['verdict'].upper()}: {run['reason']} (expect {data.get('expect', 'clean')})")
        print(f"report: {target / 'report.md'}")
    return EXIT_OK if data.get("ok") else EXIT_MISMATCH


def _cmd_merge(args: argparse.Namespace) -> int:
    from walstress.runner import merge_results

    try:
        data = merge_results(args.dirs, args.out)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    out = Path(args.out)
    _after_run(data, out)
    if args.json:
        print(json.dumps(data, indent=1, default=str))
    else:
        from walstress.console import summary_table

        print(summary_table(data))
        if data.get("missing_cells"):
            print(f"missing cells (no shard ran them): {', '.join(data['missing_cells'])}")
    print(f"results: {out / 'results.json'}", file=sys.stderr if args.json else sys.stdout)
    return EXIT_OK if data.get("ok") else EXIT_MISMATCH


def _cmd_bisect(args: argparse.Namespace) -> int:
    from walstress.bisect import bisect_versions
    from walstress.console import Console

    if args.repeat is not None and args.repeat < 1:
        raise UsageError("--repeat must be at least 1")
    outcome = bisect_versions(args.scenario, args.versions, overrides=_overrides(args), repeat=args.repeat,
                              out_dir=args.out, cache_dir=args.cache_dir,
                              console=Console(sys.stderr, quiet=args.quiet), say=print)
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
    for sentence in explain(data):
        print(sentence)
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

    def say(text: str) -> None:
        if not args.quiet:
            print(text, file=sys.stderr, flush=True)

    summary = run_search(scenario, out, budget_s=budget, max_examples=args.max_examples, runs=args.runs,
                         found_dir=args.found, example_db=args.example_db, cache_dir=args.cache_dir,
                         shrink_failure=not args.no_shrink, say=say)
    print(summary["message"])
    print(f"log: {summary['log']}")
    return EXIT_MISMATCH if summary["status"] == "found" else EXIT_OK


def _cmd_repro(args: argparse.Namespace) -> int:
    from walstress.repro import write_repro

    path, mechanism = write_repro(args.target, args.out, args.overrides)
    print(f"wrote {path} ({mechanism.replace('_', ' ')}); run it anywhere with: python3 {path}")
    return EXIT_OK


def _cmd_init(args: argparse.Namespace) -> int:
    from walstress.init import write_starter

    path = write_starter(args.out, db=args.db, entry=args.entry, force=args.force)
    print(f"wrote {path}; try it:  walstress run {path} --set duration=5s --set repeat=1")
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
        if args.json:
            print(json.dumps(result, indent=1))
        else:
            print(f"replayed: {result['verdict']}" + (f" ({result['why']})" if result["why"] else "")
                  + ("; as recorded" if result["as_recorded"] else f"; recorded: {result['recorded_verdict']}"))
        return EXIT_OK if result["as_recorded"] else EXIT_MISMATCH
    if args.max_states is not None and args.max_states < 1:
        raise UsageError("--max-states must be at least 1")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    target = Path(args.target)
    out = Path(args.out) if args.out else Path("reports") / f"crash-{target.stem or target.name}-" \
        f"{time.strftime('%Y%m%d-%H%M%S')}"
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    progress = None if args.json else (lambda text: print(text, file=sys.stderr, flush=True))
    report = explore(target, out, overrides=args.overrides, model=args.model, max_states=args.max_states,
                     budget_s=_duration_option("--budget", args.budget), jobs=args.jobs, after=args.after_cut,
                     classes=classes, cache_dir=args.cache_dir, progress=progress)
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        totals = report["totals"]
        print(f"{totals['explored']} distinct crash states checked of {totals['possible']} ({report['model']}, "
              f"stopped by {report['stopped_by']}, {report['states_per_second']} states/s): {totals['clean']} clean, "
              f"{totals['lost_synced']} with synced commits lost, {totals['corrupt']} corrupt")
        for state in report["failing"][:3]:
            print(f"  {state['verdict']}: {state['why']} -> {state.get('file')}")
        print(f"report: {out / 'crash.md'}")
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
    progress = None if args.json else (lambda text: print(text, file=sys.stderr, flush=True))

    def save(result: dict) -> None:   # after every benchmark: a suite stopped half way keeps its rows
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(result, indent=1) + "\n")
        (out / "bench.md").write_text(markdown(result))

    try:
        result = run_suite(args.size, only=only, cache_dir=args.cache_dir, progress=progress, on_rows=save)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    save(result)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for row in result["rows"]:
            print(format_row(row))
        print(f"bench: {out / 'bench.json'}, {out / 'bench.md'}")
    return EXIT_OK


def _cmd_watch(args: argparse.Namespace) -> int:
    from walstress.watch import watch

    return watch(args.pids, hz=args.hz, duration=_duration_option("--duration", args.duration),
                 children=args.children, as_json=args.json, show_locks=args.locks)


COMMANDS = {"bench": _cmd_bench, "crash": _cmd_crash, "watch": _cmd_watch, "repro": _cmd_repro, "search": _cmd_search, "init": _cmd_init, "run": _cmd_run, "build": _cmd_build, "check": _cmd_check, "report": _cmd_report,
            "merge": _cmd_merge, "bisect": _cmd_bisect, "explain": _cmd_explain}


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except BrokenPipeError:  # the reader of our output went away (e.g. | head): not an error of ours
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK
    except (ScenarioError, UsageError, WalstressError) as exc:
        print(f"walstress: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("walstress: interrupted; every worker was stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
