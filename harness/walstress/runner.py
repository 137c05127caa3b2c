"""Run every cell of a scenario, repeats included, judge each run, and aggregate results.json.

For each cell and repeat: the controller runs it (``controller.execute_run``),
then the judge reads what it left (``judge.judge_run``). Shards (``--shard
K/N``) run a share of the cells; :func:`merge_results` joins them again.
"""

from __future__ import annotations

import json
import os
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

from walstress.version import __version__
from walstress.checks.findings import matches
from walstress.controller import execute_run
from walstress.database.template import get_template
from walstress.database.user import TemplateError, schema_template, user_template
from walstress.environment import environment_info
from walstress.errors import EnvironmentProblem, ScenarioError
from walstress.faults.base import FaultPlan, build_plan
from walstress.judge import judge_run, known_causes
from walstress.layout import RunLayout
from walstress.scenario import Cell, Scenario, expand_matrix, scenario_to_jsonable
from walstress.settings import did_you_mean

RESULTS_SCHEMA_VERSION = 1


def sqlite_paths_for(scenario: Scenario) -> list[str]:
    """Folders to put first on a worker's sys.path so it loads the asked-for SQLite."""
    if scenario.sqlite.driver == "stdlib":
        return []
    if scenario.sqlite.version == "system":
        try:
            import apsw  # noqa: F401
        except ImportError:
            raise EnvironmentProblem('sqlite.driver = "apsw" needs apsw: pip install "walstress[apsw]"') from None
        return []
    try:
        from walstress.sqlite.versions import ensure_apsw
    except ImportError:
        raise EnvironmentProblem("SQLite versions other than the system one are not available in this build") from None
    return [str(ensure_apsw(scenario.sqlite.version))]


def cell_summary(cell: Cell, runs: list[dict[str, Any]]) -> dict[str, Any]:
    return summarize_cell(cell.cell_id, cell.label, cell.params, cell.scenario.expect,
                          cell.scenario.expect_fraction, runs, expect_cause=cell.scenario.expect_cause,
                          cause_fraction=cell.scenario.expect_cause_fraction)


def cause_counts(runs: list[dict[str, Any]]) -> dict[str, int]:
    """cause id -> damaged runs attributed to it."""
    counts: dict[str, int] = {}
    for run in runs:
        cause = run.get("cause")
        if run["verdict"] in ("corrupt", "lost-writes") and cause:
            counts[cause["id"]] = counts.get(cause["id"], 0) + 1
    return counts


def cause_matches(expect_cause: str, expect_fraction: float, runs: list[dict[str, Any]]) -> tuple[int, bool]:
    """(damaged runs attributed to expect_cause, whether enough are): vacuous without an expected cause
    or damaged runs (the verdict's expectation speaks for those)."""
    damaged = [r for r in runs if r["verdict"] in ("corrupt", "lost-writes")]
    if not expect_cause:
        return 0, True
    named = sum(1 for r in damaged if (r.get("cause") or {}).get("id") == expect_cause)
    return named, not damaged or named >= expect_fraction * len(damaged) - 1e-9


def cell_matches(expect: str, expect_fraction: float, runs: list[dict[str, Any]]) -> tuple[int, bool]:
    """(runs whose verdict matches expect, whether enough do): at least expect_fraction of them."""
    matching = sum(1 for r in runs if matches(expect, r["verdict"]))
    return matching, bool(runs) and matching >= expect_fraction * len(runs) - 1e-9


def summarize_cell(cell_id: str, label: str, params: dict[str, Any], expect: str, expect_fraction: float,
                   runs: list[dict[str, Any]], *, expect_cause: str = "", cause_fraction: float = 0.8) -> dict[str, Any]:
    counts = {v: sum(1 for r in runs if r["verdict"] == v) for v in ("clean", "corrupt", "lost-writes", "errors")}
    matching, matched = cell_matches(expect, expect_fraction, runs)
    cause_named, cause_ok = cause_matches(expect_cause, cause_fraction, runs)
    first_failure = None
    elapsed = 0.0
    for run in runs:
        if run["verdict"] in ("corrupt", "lost-writes"):
            # within the failing run: SQLite's first corruption error, else the run's end (the checks)
            within = run.get("first_corruption_error_s")
            first_failure = round(elapsed + (within if within is not None else run.get("duration_s", 0.0)), 3)
            break
        elapsed += run.get("duration_s", 0.0)
    return {
        "cell_id": cell_id,
        "label": label,
        "params": params,
        "expect": expect,
        "expect_fraction": expect_fraction,
        "runs": len(runs),
        "clean": counts["clean"],
        "corrupt": counts["corrupt"],
        "lost": counts["lost-writes"],
        "errors": counts["errors"],
        "matching": matching,
        "matches_expect": matched and cause_ok,
        "expect_cause": expect_cause,
        "expect_cause_fraction": cause_fraction,
        "causes": cause_counts(runs),
        "cause_matching": cause_named,
        "lock_lost_runs": sum(1 for r in runs if ((r.get("lock_watch") or {}).get("counts") or {}).get("lock_lost")),
        "time_to_first_failure_s": first_failure,
        "wal_peak_bytes": max((r.get("wal_peak_bytes", 0) for r in runs), default=0),
        "results": runs,
    }


def _run_dir(out_dir: Path, cell: Cell, index: int) -> Path:
    return out_dir / cell.cell_id / f"run-{index:03d}"


def run_scenario(scenario: Scenario, out_dir: str | Path, *, repeat: int | None = None,
                 cache_dir: str | Path | None = None,
                 console: Any = None, cells_filter: Callable[[list[Cell]], list[Cell]] | None = None,
                 shard: tuple[int, int] | None = None, keep: str = "all") -> dict[str, Any]:
    """Run a scenario (all cells x repeats) into out_dir; write and return results.json's content.

    ``shard = (K, N)`` runs only the cells whose index % N == K - 1 (cell ids
    stay global); ``merge_results`` joins the shards' folders again. ``keep``
    says which runs keep their database files once judged (``KEEP``): every
    run, only those whose verdict was damaged or missed the expectation
    ("failed": what ``walstress run`` does), or none; the verdict, history,
    ledger and checks stay for all.
    """
    if keep not in KEEP:
        raise ValueError(f"keep={keep!r}: one of {', '.join(KEEP)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    cells = expand_matrix(scenario)
    cells_total = len(cells)
    if shard is not None:
        cells = [cell for cell in cells if cell.index % shard[1] == shard[0] - 1]
    if cells_filter is not None:
        cells = cells_filter(cells)
    # Every cell's SQLite is resolved (installed if need be) before anything
    # runs, so that an unknown version fails at once, not after hours.
    _check_causes(cells)
    repeats = repeat or scenario.repeat
    for cell in cells:   # before anything runs (execute_run refuses it too)
        for index in range(repeats):
            RunLayout(_run_dir(out_dir, cell, index)).refuse_if_used()
    cell_sqlite_paths = {cell.cell_id: sqlite_paths_for(cell.scenario) for cell in cells}
    results: dict[str, Any] = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "walstress_version": __version__,
        "scenario": {"name": scenario.name, "description": scenario.description, "source": scenario.source,
                     "seed": scenario.seed, "matrix": scenario.matrix, "values": scenario_to_jsonable(scenario)},
        "repeat": repeats,
        "started_at": started,
        "environment": environment_info(out_dir),
        "templates": [],
        "cells": [],
    }
    if shard is not None:
        results["shard"] = {"index": shard[0], "count": shard[1], "cells_total": cells_total,
                            "cell_ids": [cell.cell_id for cell in cells]}
    results_path = out_dir / "results.json"
    templates: dict[tuple, Path] = {}
    for cell in cells:
        key = _template_key(cell.scenario)
        if key not in templates:
            t0 = time.time()
            path, built, entry = _resolve_template(cell.scenario, cache_dir, console)
            templates[key] = path
            results["templates"].append({"path": str(path), "built_now": built,
                                         "seconds": round(time.time() - t0, 3), **entry})
            if console:
                console.template_ready(path, built, time.time() - t0)
        _check_tables(cell.scenario, templates[key])
    for cell in cells:
        sqlite_paths = cell_sqlite_paths[cell.cell_id]
        cs = cell.scenario
        template = templates[_template_key(cs)]
        runs: list[dict[str, Any]] = []
        for index in range(repeats):
            run_dir = _run_dir(out_dir, cell, index)
            seed = cs.seed + index
            if console:
                console.run_started(cell, index, repeats, run_dir)
            execute_run(cs, run_dir, template, seed=seed, sqlite_paths=sqlite_paths,
                        progress=partial(console.run_progress, cell, index) if console else None,
                        faults=_fault_plan(cs, seed))
            result = judge_run(run_dir)
            result["repeat_index"] = index
            if keep == "none" or (keep == "failed" and result["verdict"] == "clean" and matches(cs.expect, "clean")):
                result["db_pruned"] = prune_database(run_dir, result["verdict"], keep)
            runs.append(result)
            if console:
                console.run_finished(cell, index, result)
        summary = cell_summary(cell, runs)
        results["cells"].append(summary)
        _write_results(results, results_path, started)
    _write_results(results, results_path, started)
    return results


KEEP = ("all", "failed", "none")


def prune_database(run_dir: Path, verdict: str, keep: str) -> int:
    """Remove a judged run's database files (its db folder's contents); a note says so. Bytes freed."""
    layout = RunLayout(run_dir)
    folder = layout.pruned_note.parent
    freed = 0
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.is_file() and not path.is_symlink():
            freed += path.stat().st_size
            path.unlink()
    why = ("keep = none: no run keeps its database" if keep == "none" else
           "the run was clean as expected: its database was not kept (walstress run --keep all keeps it)")
    if folder.is_dir():
        layout.pruned_note.write_text(json.dumps({"pruned_at": time.time(), "verdict": verdict, "bytes": freed,
                                                  "keep": keep, "why": why}))
    return freed


def _check_causes(cells: list[Cell]) -> None:
    """An expected cause must be one a run can be attributed to."""
    known = known_causes()
    for cell in cells:
        cause = cell.scenario.expect_cause
        if cause and cause not in known:
            raise ScenarioError(cell.scenario.source, "expect_cause",
                                f"unknown cause {cause!r}{did_you_mean(cause, known)}; causes: {', '.join(known)}")


def _template_key(scenario: Scenario) -> tuple:
    db = scenario.database
    if db.template:
        return ("user", db.template)
    if db.schema_sql:
        return ("schema_sql", db.schema_sql, db.fill, db.fill_rows, db.pages, db.page_size, db.seed)
    return ("builtin", db.schema, db.pages, db.page_size, db.seed)


def _resolve_template(scenario: Scenario, cache_dir: str | Path | None, console: Any) -> tuple[Path, bool, dict]:
    """The cell's template: walstress's own schema, the user's file, or the user's DDL; built if need be."""
    db = scenario.database
    progress = console.build_progress if console else None
    try:
        if db.template:
            path, built = user_template(db.template, cache_dir=cache_dir, progress=progress)
            return path, built, {"kind": "user", "source": db.template}
        if db.schema_sql:
            path, built = schema_template(db.schema_sql, fill=db.fill, pages=db.pages, page_size=db.page_size,
                                          seed=db.seed, fill_rows=db.fill_rows, cache_dir=cache_dir,
                                          progress=progress)
            return path, built, {"kind": "schema_sql", "schema_sql": db.schema_sql, "fill": db.fill,
                                 "pages": db.pages, "page_size": db.page_size, "seed": db.seed}
    except TemplateError as exc:
        key = "database.template" if db.template else "database.schema_sql"
        raise ScenarioError(scenario.source, key, str(exc)) from None
    path, built = get_template(schema=db.schema, pages=db.pages, page_size=db.page_size, seed=db.seed,
                               cache_dir=cache_dir, progress=progress)
    return path, built, {"kind": "builtin", "schema": db.schema, "pages": db.pages, "page_size": db.page_size,
                         "seed": db.seed}


def _check_tables(scenario: Scenario, template: Path) -> None:
    """Every role's tables are in the template (the user's file or DDL may not have the built-in ones)."""
    if scenario.database.builtin_schema:
        return
    try:
        info = json.loads(template.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return
    tables = set(info.get("tables") or [])
    for worker in scenario.active_workers():
        missing = [t for t in worker.required_tables(scenario) if t not in tables]
        if missing:
            where = scenario.database.template or scenario.database.schema_sql
            raise ScenarioError(scenario.source, f"workers.{worker.role}",
                                f"the {worker.role} role uses the table(s) {', '.join(missing)} of walstress's own "
                                f"schemas, which {where} does not have; drive your schema with role = \"python\" "
                                'or role = "sql"')


def _fault_plan(scenario: Scenario, seed: int) -> FaultPlan | None:
    """The run's faults (None when the scenario has none)."""
    return build_plan(scenario, seed) if scenario.faults else None


def _write_results(results: dict[str, Any], path: Path, started: float, *, keep_times: bool = False) -> None:
    """Write results.json atomically; keep_times keeps the run's own finish time (a re-judgement)."""
    if not (keep_times and results.get("finished_at")):
        results["finished_at"] = time.time()
        results["elapsed_s"] = round(results["finished_at"] - started, 3)
    results["ok"] = (all(c["matches_expect"] for c in results["cells"]) and bool(results["cells"])
                     and not results.get("missing_cells"))
    results["totals"] = {
        "cells": len(results["cells"]),
        "runs": sum(c["runs"] for c in results["cells"]),
        "matching": sum(c["matching"] for c in results["cells"]),
        "clean": sum(c["clean"] for c in results["cells"]),
        "corrupt": sum(c["corrupt"] for c in results["cells"]),
        "lost": sum(c["lost"] for c in results["cells"]),
        "errors": sum(c["errors"] for c in results["cells"]),
        "mismatched_cells": [c["cell_id"] for c in results["cells"] if not c["matches_expect"]],
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str))
    os.replace(tmp, path)


def load_results(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    return json.loads(path.read_text())


def rejudge_dir(target: str | Path, judge: Callable[[Path], dict[str, Any]] = judge_run) -> dict[str, Any]:
    """Judge every run under an output folder again and rewrite results.json.

    Works on a folder whose controller died: cells and runs are found on disk,
    and the results are marked partial.
    """
    target = Path(target)
    if (target / "scenario.json").exists() and not (target / "results.json").exists():
        run = judge(target)
        expect = json.loads((target / "scenario.json").read_text())["scenario"].get("expect", "clean")
        return {"cells": [], "ok": matches(expect, run["verdict"]), "expect": expect, "run": run}
    previous: dict[str, Any] = {}
    if (target / "results.json").exists():
        previous = load_results(target)
    known = {c["cell_id"]: c for c in previous.get("cells", [])}
    cells = []
    partial = not previous or bool(previous.get("partial"))
    for cell_dir in sorted(p for p in target.glob("cell-*") if p.is_dir()):
        runs = []
        for run_dir in sorted(p for p in cell_dir.glob("run-*") if (p / "scenario.json").exists()):
            result = judge(run_dir)
            result["repeat_index"] = int(run_dir.name.split("-")[-1])
            runs.append(result)
            partial = partial or result["partial"]
        if not runs:
            continue
        meta = json.loads((Path(runs[0]["run_dir"]) / "scenario.json").read_text())["scenario"]
        old = known.get(cell_dir.name, {})
        cells.append(summarize_cell(cell_dir.name, old.get("label", meta["name"]), old.get("params", {}),
                                    meta["expect"], meta.get("expect_fraction", 1.0), runs,
                                    expect_cause=meta.get("expect_cause", ""),
                                    cause_fraction=meta.get("expect_cause_fraction", 0.8)))
    results = dict(previous) if previous else {
        "schema_version": RESULTS_SCHEMA_VERSION, "walstress_version": __version__,
        "scenario": {"name": target.name, "description": "", "source": "", "seed": 0, "matrix": {}, "values": {}},
        "repeat": max((c["runs"] for c in cells), default=0), "started_at": time.time(),
        "environment": environment_info(target), "templates": [],
    }
    results["cells"] = cells
    results["partial"] = partial
    if partial and not previous:
        results["note"] = "results rebuilt from a run dir whose controller did not finish"
    results["rejudged_at"] = time.time()
    _write_results(results, target / "results.json", results.get("started_at", time.time()), keep_times=True)
    return results


# ------------------------------------------------------------------- shards
def parse_shard(text: str) -> tuple[int, int]:
    """``"2/3"`` -> (2, 3): the second of three shards. ValueError otherwise."""
    left, sep, right = str(text).partition("/")
    try:
        index, count = int(left), int(right)
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected K/N such as 1/2") from None
    if not sep or count < 1 or not 1 <= index <= count:
        raise ValueError(f"--shard {text!r}: expected K/N with 1 <= K <= N")
    return index, count


def _scenario_identity(results: dict[str, Any]) -> str:
    scenario = results.get("scenario", {})
    values = dict(scenario.get("values", {}))
    return json.dumps({"name": scenario.get("name"), "seed": scenario.get("seed"), "values": values,
                       "matrix": scenario.get("matrix"), "repeat": results.get("repeat")}, sort_keys=True, default=str)


def merge_results(sources: list[str | Path], out_dir: str | Path) -> dict[str, Any]:
    """Join the results.json of shard runs of one scenario into ``out_dir/results.json``.

    The shards must come from the same scenario (same values, matrix, seed
    and repeat) and must not overlap. Each cell folder is linked into
    ``out_dir`` (a symbolic link), so ``walstress report OUT`` can judge
    every run again. Raises ValueError with a message for the user.
    """
    if not sources:
        raise ValueError("merge needs at least one results folder")
    out_dir = Path(out_dir)
    loaded = []
    for source in sources:
        path = Path(source)
        file = path / "results.json" if path.is_dir() else path
        if not file.is_file():
            raise ValueError(f"{source}: no results.json")
        loaded.append((file.parent, load_results(file)))
    identity = _scenario_identity(loaded[0][1])
    cells: dict[str, dict[str, Any]] = {}
    shards = []
    for folder, data in loaded:
        if _scenario_identity(data) != identity:
            raise ValueError(f"{folder}: results of a different scenario (or other settings) than {loaded[0][0]}")
        for cell in data.get("cells", []):
            if cell["cell_id"] in cells:
                raise ValueError(f"{folder}: cell {cell['cell_id']} is also in another shard")
            cells[cell["cell_id"]] = {**cell, "source_dir": str(folder.resolve())}
        shards.append({"dir": str(folder.resolve()), "shard": data.get("shard"),
                       "cells": [c["cell_id"] for c in data.get("cells", [])],
                       "elapsed_s": data.get("elapsed_s"), "partial": bool(data.get("partial"))})
    totals = {s["shard"]["cells_total"] for _, s in loaded if s.get("shard")}
    expected_total = totals.pop() if len(totals) == 1 else None
    first = loaded[0][1]
    merged: dict[str, Any] = {key: value for key, value in first.items()
                              if key not in ("cells", "shard", "totals", "ok", "finished_at", "elapsed_s")}
    merged["started_at"] = min(d.get("started_at", time.time()) for _, d in loaded)
    merged["templates"] = [t for _, d in loaded for t in d.get("templates", [])]
    merged["cells"] = [cells[key] for key in sorted(cells, key=lambda k: int(k.split("-")[-1]))]
    merged["merged_from"] = shards
    missing = []
    if expected_total is not None:
        missing = [f"cell-{i:03d}" for i in range(expected_total) if f"cell-{i:03d}" not in cells]
    merged["missing_cells"] = missing
    merged["partial"] = bool(missing) or any(s["partial"] for s in shards)
    out_dir.mkdir(parents=True, exist_ok=True)
    for cell in merged["cells"]:
        link = out_dir / cell["cell_id"]
        target = Path(cell["source_dir"]) / cell["cell_id"]
        if link.resolve() == target.resolve() or not target.exists():
            continue
        if link.is_symlink():
            link.unlink()
        if not link.exists():
            link.symlink_to(target, target_is_directory=True)
    merged["finished_at"] = max((d.get("finished_at") or 0.0) for _, d in loaded) or time.time()
    merged["elapsed_s"] = max((s["elapsed_s"] or 0.0) for s in shards)
    merged["elapsed_note"] = "elapsed_s of the slowest shard (shards may run in parallel)"
    _write_results(merged, out_dir / "results.json", merged["started_at"], keep_times=True)
    return merged
