"""One run: copy the template, start workers, run, stop, check, judge.

Layout of a run dir:
    scenario.json       the resolved scenario of this cell
    db/state.db         the database under test (and its -wal/-shm)
    history/*.jsonl     controller, sampler and one file per worker
    ledger/*.ledger     acknowledged commits, one file per writing thread
    specs/*.json        what each worker was told
    logs/*.log          each worker's stdout/stderr
    checks/             full integrity output
    run.json            the run's result (written again by ``walstress report``)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from walstress.history import HistoryWriter, by_type, read_history
from walstress.metrics import summarize_history
from walstress.sampler import Sampler
from walstress.scenario import Scenario, scenario_to_jsonable, worker_to_dict

DB_NAME = "state.db"
STOP_GRACE_SECONDS = 10.0
READY_TIMEOUT_SECONDS = 120.0
PACKAGE_PARENT = Path(__file__).resolve().parent.parent  # the folder that holds the walstress package


@dataclass
class WorkerProcess:
    name: str
    role: str
    spec_path: Path
    log_path: Path
    popen: subprocess.Popen | None = None
    exit_code: int | None = None
    stopped_by_controller: bool = False
    killed_by_controller: bool = False
    fault_killed: bool = False


@dataclass
class RunContext:
    """What faults and the progress display may see of a run in flight."""

    scenario: Scenario
    run_dir: Path
    db_path: Path
    history: HistoryWriter
    workers: list[WorkerProcess] = field(default_factory=list)
    t_go: float = 0.0
    sampler: Sampler | None = None
    duration: float = 0.0        # this run's length (--duration may override the scenario's)
    faults: Any = None           # the run's FaultPlan, or None

    def live_pids(self) -> dict[str, int]:
        return {w.name: w.popen.pid for w in self.workers if w.popen is not None and w.popen.poll() is None}


def _worker_env(extra_paths: list[str]) -> dict[str, str]:
    env = dict(os.environ)
    paths = list(extra_paths) + [str(PACKAGE_PARENT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop("PYTHONSTARTUP", None)
    return env


def prepare_database(template: Path, db_path: Path, scenario: Scenario) -> dict[str, Any]:
    """Fresh copy of the template, journal mode set, facts the workers need."""
    from walstress.database.template import copy_template

    db_path.parent.mkdir(parents=True, exist_ok=True)
    copy_template(template, db_path)
    conn = sqlite3.connect(str(db_path), isolation_level=None)
    try:
        mode = conn.execute(f"PRAGMA journal_mode={scenario.database.journal_mode}").fetchone()[0]
        low, high = conn.execute("SELECT coalesce(min(id),0), coalesce(max(id),0) FROM messages").fetchone()
        if scenario.database.schema == "hermes":
            sessions = [r[0] for r in conn.execute("SELECT id FROM sessions ORDER BY started_at DESC LIMIT 200")]
        else:
            sessions = [r[0] for r in conn.execute("SELECT DISTINCT session_id FROM messages LIMIT 200")]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    finally:
        conn.close()
    return {"journal_mode": mode, "template_id_range": [int(low), int(high)], "session_ids": sessions,
            "pages": int(pages)}


def write_worker_specs(ctx: RunContext, facts: dict[str, Any], seed: int, sqlite_paths: list[str]) -> None:
    scenario = ctx.scenario
    run_dir = ctx.run_dir
    for sub in ("specs", "logs", "control", "ledger", "history"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    named = scenario.worker_names()
    partition_total = sum(spec.threads for _, spec in named if spec.role in ("writer", "opener")) or 1
    base = 0
    for name, spec in named:
        entry = {
            "name": name, "role": spec.role, "seed": seed, "duration": ctx.duration, "database_seed": scenario.database.seed,
            "parent_pid": os.getpid(), "db_path": str(ctx.db_path),
            "history_path": str(run_dir / "history" / f"{name}.jsonl"),
            "ledger_dir": str(run_dir / "ledger"),
            "ready_path": str(run_dir / "control" / f"ready-{name}"),
            "go_path": str(run_dir / "control" / "go"),
            "driver": scenario.sqlite.driver, "expected_sqlite_version": scenario.sqlite.version,
            "busy_timeout_ms": scenario.database.busy_timeout_ms,
            "synchronous": scenario.database.synchronous, "mmap_size": scenario.database.mmap_size,
            "wal_autocheckpoint": scenario.database.wal_autocheckpoint,
            "journal_size_limit": scenario.database.journal_size_limit,
            "foreign_keys": scenario.database.foreign_keys,
            "schema": scenario.database.schema,
            "checkpoint": {
                "mode": scenario.checkpoint.mode, "every_writes": scenario.checkpoint.every_writes,
                "interval_ms": scenario.checkpoint.interval_ms, "on_close": scenario.checkpoint.on_close,
                "fts_maintenance": scenario.checkpoint.fts_maintenance,
                "fts_merge_pages": scenario.checkpoint.fts_merge_pages,
                "fts_every_writes": scenario.checkpoint.fts_every_writes,
                "after_fts_maintenance": scenario.checkpoint.after_fts_maintenance,
            },
            "worker": worker_to_dict(spec),
            "thread_partition_base": base, "thread_partition_total": partition_total,
            "template_id_range": facts["template_id_range"], "session_ids": facts["session_ids"],
            "sqlite_paths": sqlite_paths,
            "faults": scenario_to_jsonable(scenario)["faults"],
        }
        if spec.role in ("writer", "opener"):
            base += spec.threads
        spec_path = run_dir / "specs" / f"{name}.json"
        spec_path.write_text(json.dumps(entry, indent=1))
        ctx.workers.append(WorkerProcess(name=name, role=spec.role, spec_path=spec_path,
                                         log_path=run_dir / "logs" / f"{name}.log"))


def start_worker(ctx: RunContext, worker: WorkerProcess, sqlite_paths: list[str],
                 extra_env: dict[str, str] | None = None) -> None:
    log = open(worker.log_path, "ab")
    env = _worker_env(sqlite_paths)
    env.update(extra_env or {})
    try:
        worker.popen = subprocess.Popen(
            [sys.executable, "-m", "walstress.workers", str(worker.spec_path)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=env, close_fds=True,
        )
    finally:
        log.close()
    worker.exit_code = None
    ctx.history.record({"type": "worker_spawn", "worker": worker.name, "role": worker.role,
                        "pid": worker.popen.pid, "t": time.time()})


def stop_workers(ctx: RunContext, grace_seconds: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM every live worker, wait, SIGKILL what is left, reap all."""
    live = [(w, w.popen) for w in ctx.workers if w.popen is not None and w.popen.poll() is None]
    for worker, _popen in live:
        worker.stopped_by_controller = True
        _signal(worker, signal.SIGTERM)
        _signal(worker, signal.SIGCONT)  # a worker still frozen by a pause fault must run to stop
    deadline = time.monotonic() + grace_seconds
    for worker, popen in live:
        remaining = max(0.0, deadline - time.monotonic())
        try:
            popen.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            worker.killed_by_controller = True
            _signal(worker, signal.SIGKILL)
            popen.wait(timeout=10)
    reap_all(ctx)


def kill_workers(ctx: RunContext) -> None:
    for worker in ctx.workers:
        if worker.popen is not None and worker.popen.poll() is None:
            worker.killed_by_controller = True
            _signal(worker, signal.SIGKILL)
    reap_all(ctx)


def _signal(worker: WorkerProcess, sig: int) -> None:
    if worker.popen is None:  # never started: nothing to signal
        return
    try:
        worker.popen.send_signal(sig)
    except (ProcessLookupError, OSError):
        pass


def reap_all(ctx: RunContext) -> None:
    for worker in ctx.workers:
        if worker.popen is None or worker.exit_code is not None:
            continue
        try:
            code = worker.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _signal(worker, signal.SIGKILL)
            code = worker.popen.wait()
        worker.exit_code = code
        ctx.history.record({"type": "worker_exit", "worker": worker.name, "pid": worker.popen.pid,
                            "t": time.time(), "exit_code": code,
                            "stopped_by_controller": worker.stopped_by_controller,
                            "killed_by_controller": worker.killed_by_controller,
                            "fault_killed": worker.fault_killed})


ProgressFn = Callable[[dict[str, Any]], None]


def execute_run(scenario: Scenario, run_dir: Path, template: Path, *, seed: int,
                sqlite_paths: list[str] | None = None, duration: float | None = None,
                progress: ProgressFn | None = None, faults: Any = None) -> dict[str, Any]:
    """Run one cell once, then judge it. Always reaps every worker it started."""
    from walstress.judge import judge_run

    sqlite_paths = sqlite_paths or []
    duration = scenario.duration if duration is None else duration
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "scenario.json").write_text(json.dumps(
        {"scenario": scenario_to_jsonable(scenario), "seed": seed, "duration": duration}, indent=1, default=str))
    db_path = run_dir / "db" / DB_NAME
    history = HistoryWriter(run_dir / "history" / "controller.jsonl", flush_records=1, flush_seconds=0)
    ctx = RunContext(scenario=scenario, run_dir=run_dir, db_path=db_path, history=history, duration=duration,
                     faults=faults)
    history.record({"type": "run_start", "t": time.time(), "pid": os.getpid(), "seed": seed, "duration": duration})
    facts = prepare_database(template, db_path, scenario)
    history.record({"type": "note", "t": time.time(), "msg": "database prepared", **{k: v for k, v in facts.items() if k != "session_ids"}})
    write_worker_specs(ctx, facts, seed, sqlite_paths)
    sampler_history = HistoryWriter(run_dir / "history" / "sampler.jsonl")
    ctx.sampler = Sampler(db_path, sampler_history, ctx.live_pids)
    interrupted: BaseException | None = None
    try:
        for worker in ctx.workers:
            extra_env = faults.worker_env(worker.name, worker.role) if faults is not None else None
            start_worker(ctx, worker, sqlite_paths, extra_env)
        _wait_ready(ctx)
        ctx.sampler.start()
        (run_dir / "control" / "go").touch()
        ctx.t_go = time.time()
        history.record({"type": "go", "t": ctx.t_go})
        if faults is not None:
            faults.start(ctx)
        _run_for(ctx, duration, progress, faults)
    except BaseException as exc:  # Ctrl-C, a failed start: stop everything, keep what was recorded
        interrupted = exc
    finally:
        if faults is not None:
            try:
                faults.stop(ctx)
            except Exception as exc:
                history.record({"type": "note", "t": time.time(), "msg": f"fault stop failed: {exc!r}"})
        stop_workers(ctx)
        if ctx.sampler.is_alive():
            ctx.sampler.stop()
        sampler_history.close()
        history.record({"type": "run_stop", "t": time.time(),
                        "interrupted": type(interrupted).__name__ if interrupted else None})
        history.close()
    if isinstance(interrupted, (KeyboardInterrupt, SystemExit)):
        raise interrupted
    if interrupted is not None:
        # Not a verdict: record it and let the judge say "errors".
        (run_dir / "control" / "controller-error.txt").write_text(f"{type(interrupted).__name__}: {interrupted}\n")
    return judge_run(run_dir)


def _wait_ready(ctx: RunContext) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    control = ctx.run_dir / "control"
    while time.monotonic() < deadline:
        pending = [w for w in ctx.workers if not (control / f"ready-{w.name}").exists()]
        if not pending:
            return
        dead = [(w, w.popen) for w in pending if w.popen is not None and w.popen.poll() is not None]
        if dead:
            worker, popen = dead[0]
            raise RuntimeError(f"worker {worker.name} exited with code {popen.returncode} before it was ready "
                               f"(see {worker.log_path})")
        time.sleep(0.01)
    raise RuntimeError(f"workers not ready after {READY_TIMEOUT_SECONDS:.0f} s")


def _run_for(ctx: RunContext, duration: float, progress: ProgressFn | None, faults: Any) -> None:
    end = time.monotonic() + duration
    next_report = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if faults is not None:
            faults.tick(ctx)
        if all(w.popen is None or w.popen.poll() is not None for w in ctx.workers):
            if faults is None or not faults.restarts_pending(ctx):
                ctx.history.record({"type": "note", "t": time.time(), "msg": "every worker exited before the end"})
                break
        if progress is not None and now >= next_report:
            next_report = now + 1.0
            latest = ctx.sampler.latest if ctx.sampler else {}
            progress({"elapsed": duration - (end - now), "duration": duration,
                      "wal_bytes": latest.get("wal_bytes", 0), "live_workers": len(ctx.live_pids()),
                      "run_dir": str(ctx.run_dir)})
        time.sleep(min(0.05, max(0.0, end - now)))


def clear_run_dir(run_dir: Path) -> None:
    if run_dir.exists():
        shutil.rmtree(run_dir)


def load_history(run_dir: Path) -> list[dict[str, Any]]:
    return read_history(run_dir / "history")


__all__ = ["execute_run", "RunContext", "WorkerProcess", "summarize_history", "by_type", "load_history"]
