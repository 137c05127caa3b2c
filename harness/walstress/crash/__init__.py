"""``walstress crash``: every crash state a storage model allows, from one recorded run.

    walstress crash explore scenarios/crash/wal-full.toml --model posix-weak
    walstress crash explore reports/x/cell-000/run-000          # a run recorded with faults.crash_trace
    walstress crash replay crash-out/failing/smallest.json

``explore`` runs the scenario's first cell once with ``faults.crash_trace``
(or takes a run dir that has a trace), enumerates the crash states of the
trace (``model.py``), checks them in worker processes (``check.py``), one
per core unless told, until every state was checked or the budget (states,
time) ran out, and writes ``crash.json``, ``crash.md``, the trace figure
and, for every class with a failing state, its smallest one as a JSON file
that ``replay`` rebuilds and checks again.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from walstress.crash.check import build_position, check_chunk, init_worker, replay_state
from walstress.crash.model import (CLASSES, MODEL_CLASSES, MODELS, Cut, Trace, Variant, cut_points, load_trace,
                                   variants, windows)
from walstress.errors import UsageError, WalstressError
from walstress.faults.trace import INITIAL_DIR, TRACE_DIR
from walstress.ledger import read_ledger

__all__ = ["explore", "replay", "MODELS", "CLASSES"]

CHUNK = 48
VERDICTS = ("clean", "lost-writes", "corrupt")
ProgressFn = Callable[[str], None]


def _scenario_of(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "scenario.json").read_text())["scenario"]


def _sqlite_paths(run_dir: Path) -> list[str]:
    specs = sorted((run_dir / "specs").glob("*.json"))
    if not specs:
        return []
    return list(json.loads(specs[0].read_text()).get("sqlite_paths") or [])


def record(target: str | Path, out_dir: Path, overrides: list[str], *, cache_dir: str | Path | None = None,
           progress: ProgressFn | None = None) -> Path:
    """A run dir with a trace: ``target`` itself, or one run of the scenario's first cell, recorded."""
    path = Path(target)
    if path.is_dir() and (path / TRACE_DIR).is_dir():
        return path
    if path.is_dir():
        raise UsageError(f"crash: {path} is a folder without a crash trace; give a scenario file, or a run dir "
                         "of a run made with faults.crash_trace.enabled = true")
    from walstress.catalog import load_scenario
    from walstress.runner import run_scenario
    from walstress.scenario import expand_matrix

    scenario = load_scenario(path, [*overrides, "faults.crash_trace.enabled=true", "repeat=1"])
    cells = expand_matrix(scenario)
    if progress:
        note = f" (its first of {len(cells)} cells)" if len(cells) > 1 else ""
        progress(f"recording {scenario.name}{note}: {scenario.duration:g} s with every write, truncate and sync traced")
    run_scenario(scenario, out_dir / "recording", cache_dir=cache_dir, cells_filter=lambda all_cells: all_cells[:1])
    run_dir = out_dir / "recording" / cells[0].cell_id / "run-000"
    if not (run_dir / TRACE_DIR).is_dir():
        raise WalstressError(f"crash: the recording run left no trace in {run_dir} (see its logs)")
    return run_dir


def _descriptors(trace: Trace, cuts: list[Cut], model: str, classes: tuple[str, ...],
                 possible: dict[str, int], budget: int | None = None) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """The (cut, variant) pairs to check. With a ``budget`` of states, each class gets an even share (what
    a smaller class leaves goes to the next), taken at an even stride over the trace so that every part of
    it is explored; the classes are handed out in turns, a chunk at a time, so that a check stopped by its
    budget has explored every class alike."""
    per_cut: list[tuple[Cut, list[Variant]]] = []
    for cut in cuts:
        lying = model == "lying"
        found = [v for v in variants(trace, cut, model, windows(trace, cut.position, lying=lying)) if v.cls in classes]
        per_cut.append((cut, found))
        for v in found:
            possible[v.cls] = possible.get(v.cls, 0) + 1
    left = budget
    queues: list[list[tuple[int, Cut, Variant]]] = []
    for number, cls in enumerate(classes):
        # in the order of the position the files are built at, so each checking process moves forward
        chosen = sorted(((build_position(cut, v, model), cut, v) for cut, found in per_cut for v in found
                         if v.cls == cls), key=lambda item: (item[0], item[1].position))
        if left is not None:
            share = -(-left // (len(classes) - number))
            if share == 0:
                chosen = []
            elif len(chosen) > share:
                stride = len(chosen) / share
                chosen = [chosen[int(i * stride)] for i in range(share)]
            left = max(0, left - len(chosen))
        queues.append(chosen)
    turn = 0
    while any(queues):
        for queue in queues:   # a chunk of each class in turn (a chunk goes to one checking process)
            for _, cut, v in queue[turn * CHUNK:(turn + 1) * CHUNK]:
                yield ({"position": cut.position, "reason": cut.reason, "wall": cut.wall}, v.to_dict())
        turn += 1
        queues = [q if len(q) > turn * CHUNK else [] for q in queues]


def _chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def explore(target: str | Path, out_dir: str | Path, *, overrides: list[str] | None = None,
            model: str | None = None, max_states: int | None = None, budget_s: float | None = None,
            jobs: int | None = None, after: str | None = None, classes: list[str] | None = None,
            cache_dir: str | Path | None = None, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Record (or take) a trace, check its crash states; the content of crash.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run_dir = record(target, out, list(overrides or []), cache_dir=cache_dir, progress=progress)
    scenario = _scenario_of(run_dir)
    settings = scenario.get("crash") or {}
    model = model or settings.get("model", "posix-weak")
    if model not in MODELS:
        raise UsageError(f"crash: --model {model!r}: one of {', '.join(MODELS)}")
    after = after or settings.get("after_cut", "none")
    max_states = int(max_states or settings.get("max_states", 20000))
    budget_s = float(budget_s or settings.get("budget", 600.0))
    jobs = int(jobs or settings.get("jobs", 0) or os.cpu_count() or 1)
    wanted = tuple(c for c in (classes or settings.get("classes") or MODEL_CLASSES[model]) if c in CLASSES)
    unknown = [c for c in (classes or []) if c not in MODEL_CLASSES[model]]
    if unknown:
        raise UsageError(f"crash: class {unknown[0]!r} is not one of {model}'s: {', '.join(MODEL_CLASSES[model])}")

    t0 = time.time()
    trace = load_trace(run_dir)
    ledger = read_ledger(run_dir / "ledger")
    acks = sorted(t.t_end for t in ledger.transactions if t.state == "acked" and t.t_end is not None)
    cuts = cut_points(trace, acks)
    possible: dict[str, int] = {}
    # a share of the budget per class, with room for the states that turn out to be the same
    descriptors = list(_descriptors(trace, cuts, model, wanted, possible, budget=int(max_states * 1.5)))
    if progress:
        progress(f"trace: {trace.summary()['ops']} operations, {len(acks)} acknowledged commits, {len(cuts)} cuts; "
                 f"{sum(possible.values())} crash states allowed by {model}, {len(descriptors)} chosen; checking "
                 f"with {jobs} process(es)")
    results, elapsed, stopped = _check_all(run_dir, out, descriptors, model, after, scenario, jobs, max_states,
                                          budget_s, sum(len(c) for c in trace.initial.values()), progress)
    if stopped == "every state checked" and len(descriptors) < sum(possible.values()):
        stopped = "the sampled states ran out"
    report = _summarize(run_dir, trace, model, after, scenario, possible, results, elapsed, stopped, jobs,
                        len(acks), len(cuts), t0)
    report["sampled"] = len(descriptors)   # the states handed to the checking processes (before dedup)
    _write_failing(out, run_dir, model, after, report)
    (out / "crash.json").write_text(json.dumps(report, indent=1, default=str))
    from walstress.crash.report import write_report

    write_report(out, report, trace)
    return report


def _check_all(run_dir: Path, out: Path, descriptors: list[Any], model: str, after: str, scenario: dict[str, Any],
               jobs: int, max_states: int, budget_s: float, state_bytes: int,
               progress: ProgressFn | None) -> tuple[list[dict[str, Any]], float, str]:
    # each checking process holds one state and its recovered copy at a time: room for 4 databases each
    need = 4 * jobs * state_bytes
    states_root = Path(tempfile.mkdtemp(prefix="walstress-crash-", dir=_scratch(need)))
    ctx = multiprocessing.get_context("spawn")
    pool = ctx.Pool(jobs, initializer=init_worker,
                    initargs=(str(run_dir), str(states_root), _sqlite_paths(run_dir), model, after, scenario))
    results: list[dict[str, Any]] = []
    seen: set[str] = set()
    started = time.monotonic()
    stopped = "every state checked"
    next_note = started + 10
    try:
        for chunk in pool.imap(check_chunk, _chunks(iter(descriptors), CHUNK)):
            for result in chunk:
                if result["key"] in seen:
                    continue
                seen.add(result["key"])
                results.append(result)
            now = time.monotonic()
            if progress and now >= next_note:
                next_note = now + 10
                progress(f"  {len(results)} distinct states checked in {now - started:.0f} s "
                         f"({sum(1 for r in results if r['verdict'] != 'clean')} not clean)")
            if len(results) >= max_states:
                stopped = f"the budget of {max_states} states"
                break
            if now - started >= budget_s:
                stopped = f"the time budget of {budget_s:g} s"
                break
    finally:
        pool.terminate()
        pool.join()
        shutil.rmtree(states_root, ignore_errors=True)
    return results, time.monotonic() - started, stopped


def _scratch(need: int = 0) -> str | None:
    """Where the states' files go: ``WALSTRESS_CRASH_SCRATCH`` when set; else memory (/dev/shm), where
    there is one with room for ``need`` bytes (a container's is often 64 MiB), as the states are many and
    short-lived; else the temporary folder."""
    chosen = os.environ.get("WALSTRESS_CRASH_SCRATCH")
    if chosen:
        Path(chosen).mkdir(parents=True, exist_ok=True)
        return chosen
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        return None
    return str(shm) if shutil.disk_usage(shm).free > need else None


def _summarize(run_dir: Path, trace: Trace, model: str, after: str, scenario: dict[str, Any],
               possible: dict[str, int], results: list[dict[str, Any]], elapsed: float, stopped: str, jobs: int,
               acks: int, cuts: int, t0: float) -> dict[str, Any]:
    by_class: dict[str, dict[str, Any]] = {}
    for cls in possible:
        by_class[cls] = {"possible": possible[cls], "explored": 0, "clean": 0, "lost_synced": 0,
                         "lost_unsynced": 0, "corrupt": 0}
    smallest: dict[str, dict[str, Any]] = {}
    for result in results:
        entry = by_class[result["variant"]["cls"]]
        entry["explored"] += 1
        verdict = result["verdict"]
        entry["clean" if verdict == "clean" else "corrupt" if verdict == "corrupt" else "lost_synced"] += 1
        if result["lost_unsynced"]:
            entry["lost_unsynced"] += 1
        if verdict != "clean":
            key = f"{result['variant']['cls']}:{verdict}"
            size = (Variant.from_dict(result["variant"]).size, result["position"])
            if key not in smallest or size < smallest[key]["_size"]:
                smallest[key] = {**result, "_size": size}
    totals = {k: sum(c[k] for c in by_class.values()) for k in ("possible", "explored", "clean", "lost_synced",
                                                                 "lost_unsynced", "corrupt")}
    recovered = len({r["logical"] for r in results})
    database = scenario.get("database") or {}
    failing = [{k: v for k, v in s.items() if k != "_size"} for _, s in sorted(smallest.items(),
                                                                            key=lambda kv: kv[1]["_size"])]
    return {
        "run_dir": str(run_dir), "model": model, "after_cut": after,
        "journal_mode": database.get("journal_mode"), "synchronous": database.get("synchronous"),
        "trace": trace.summary(), "acknowledged_commits": acks, "cuts": cuts,
        "classes": by_class, "totals": totals, "recovered_databases": recovered,
        "stopped_by": stopped, "jobs": jobs, "check_seconds": round(elapsed, 2),
        "states_per_second": round(len(results) / elapsed, 1) if elapsed else None,
        "seconds": round(time.time() - t0, 2), "failing": failing,
        "verdict": "clean" if not failing else ("corrupt" if any(f["verdict"] == "corrupt" for f in failing)
                                                 else "lost-writes"),
    }


def _write_failing(out: Path, run_dir: Path, model: str, after: str, report: dict[str, Any]) -> None:
    folder = out / "failing"
    if folder.exists():
        shutil.rmtree(folder)
    if not report["failing"]:
        return
    folder.mkdir(parents=True)
    for index, state in enumerate(report["failing"]):
        name = "smallest.json" if index == 0 else f"{state['variant']['cls']}-{state['verdict']}.json"
        data = {"run_dir": str(run_dir), "model": model, "after_cut": after,
                "cut": {"position": state["position"], "reason": state["reason"], "wall": state["wall"]},
                "variant": state["variant"], "verdict": state["verdict"], "why": state["why"]}
        (folder / name).write_text(json.dumps(data, indent=1))
        state["file"] = str(folder / name)


def replay(state_file: str | Path, *, keep: str | Path | None = None) -> dict[str, Any]:
    """Rebuild one crash state from its file and check it again; the state's result, with ``as_recorded``."""
    path = Path(state_file)
    try:
        data = json.loads(path.read_text())
        run_dir = Path(data["run_dir"])
        cut, variant = Cut(**data["cut"]), Variant.from_dict(data["variant"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"crash replay: {path} is not a crash state file ({exc})") from None
    if not (run_dir / TRACE_DIR).is_dir():
        raise WalstressError(f"crash replay: the recorded run {run_dir} is gone; its trace is needed")
    need = 4 * sum(p.stat().st_size for p in (run_dir / TRACE_DIR / INITIAL_DIR).iterdir() if p.is_file())
    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="walstress-replay-", dir=_scratch(need))) / "state"
    try:
        result = replay_state(run_dir, cut, variant, data.get("model", "posix-weak"), data.get("after_cut", "none"),
                              _scenario_of(run_dir), folder, _sqlite_paths(run_dir))
    finally:
        if not keep:
            shutil.rmtree(folder.parent, ignore_errors=True)
    result["as_recorded"] = result["verdict"] == data.get("verdict")
    result["recorded_verdict"] = data.get("verdict")
    return result
