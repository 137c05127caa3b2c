"""One run: copy the template, start the workers, drive the faults, stop them.

The controller never judges. It leaves a run dir (``layout.py``) whose
history, ledger and database are the only hand-off to the checks; the layer
above (``runner.py``) calls :func:`execute_run`, then the judge. Every
worker process it starts is reaped on success, failure and Ctrl-C.

Faults act on the run through :class:`RunContext`, the controller's
implementation of ``faults.base.RunControl``.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from walstress.database import corpus
from walstress.database.template import copy_template
from walstress.faults.base import FaultPlan, WorkerHandle
from walstress.history import HistoryWriter
from walstress.layout import RunLayout
from walstress.ledger import trim_ledger_files
from walstress.lockwatch import LockWatch
from walstress.lockwatch import available as lock_watch_unavailable
from walstress.processes import WorkerPool, WorkerProcess, worker_environment
from walstress.runspec import ConnectionOptions, TemplateFacts, WorkerSpec
from walstress.sampler import Sampler
from walstress.storage import Storage
from walstress.scenario import Scenario, scenario_to_jsonable, settings_to_dict, user_code_path
from walstress.workers.registry import ROLES

STOP_GRACE_SECONDS = 10.0
READY_TIMEOUT_SECONDS = 120.0

ProgressFn = Callable[[dict[str, Any]], None]


def prepare_database(template: Path, db_path: Path, scenario: Scenario) -> TemplateFacts:
    """Fresh copy of the template, journal mode set, facts the workers need."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    copy_template(template, db_path)
    conn = sqlite3.connect(str(db_path), isolation_level=None)
    try:
        mode = conn.execute(f"PRAGMA journal_mode={scenario.database.journal_mode}").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        low = high = 0
        sessions: list[str] = []
        if "messages" in tables:  # walstress's own schemas (or a user's database shaped like them)
            low, high = conn.execute("SELECT coalesce(min(id),0), coalesce(max(id),0) FROM messages").fetchone()
            if scenario.database.schema == "hermes" and "sessions" in tables:
                sessions = [r[0] for r in conn.execute("SELECT id FROM sessions ORDER BY started_at DESC LIMIT 200")]
            else:
                sessions = [r[0] for r in conn.execute("SELECT DISTINCT session_id FROM messages LIMIT 200")]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    finally:
        conn.close()
    return TemplateFacts(journal_mode=mode, id_range=(int(low), int(high)), session_ids=tuple(sessions),
                         pages=int(pages))


def build_specs(scenario: Scenario, layout: RunLayout, facts: TemplateFacts, *, seed: int,
                sqlite_paths: Sequence[str], pragmas: Sequence[str], storage: Storage | None = None,
                db_path_for: Callable[[str, str, str, str], str] | None = None) -> list[WorkerSpec]:
    """One spec per worker process of the scenario; ``db_path_for(name, role, group, path)`` may give a
    worker another path to the database (a fault's link to it)."""
    named = scenario.worker_names()
    sharing = [settings for _, settings in named if type(settings).shares_template_rows]
    partition_total = sum(settings.threads for settings in sharing) or 1
    connection = ConnectionOptions.of(scenario, list(pragmas))
    faults = {name: settings_to_dict(section) for name, section in scenario.faults.items()}
    python_path = tuple(user_code_path(scenario))
    specs = []
    base = 0
    for name, settings in named:
        role = ROLES.get(settings.role)
        db_file = str(storage.worker_path(name, settings.group)) if storage is not None else str(layout.db_path)
        if db_path_for is not None:
            db_file = db_path_for(name, settings.role, settings.group, db_file)
        specs.append(WorkerSpec(
            name=name, role=settings.role, group=settings.group, actor=role.actor_path, settings_class=role.settings_path,
            role_file=role.module_file, settings=settings_to_dict(settings),
            writes_ledger=settings.expects_writes(), run_dir=str(layout.run_dir), seed=seed,
            duration=scenario.duration, parent_pid=os.getpid(), schema=scenario.database.schema,
            database_seed=scenario.database.seed, connection=connection, checkpoint=scenario.checkpoint,
            facts=facts, partition=(base, partition_total), sqlite_paths=tuple(sqlite_paths),
            python_path=python_path, faults=faults,
            db_file=db_file,
        ))
        if type(settings).shares_template_rows:
            base += settings.threads
    return specs


class RunContext:
    """The run in flight, as faults and the progress display see it (``faults.base.RunControl``)."""

    def __init__(self, scenario: Scenario, layout: RunLayout, seed: int, history: HistoryWriter,
                 pool: WorkerPool, storage: Storage):
        self.scenario = scenario
        self.layout = layout
        self.storage = storage
        self.db_path = storage.worker_path()
        self.seed = seed
        self.duration = scenario.duration
        self.history = history
        self.pool = pool
        self.t_go = 0.0
        self.sampler: Sampler | None = None

    def workers(self, *, alive_only: bool = True) -> list[WorkerHandle]:
        return list(self.pool.live() if alive_only else self.pool.workers)

    def live_pids(self) -> dict[str, int]:
        return self.pool.live_pids()

    def kill(self, workers: Sequence[WorkerHandle]) -> dict[str, int | None]:
        return self.pool.kill(self._own(workers))

    def pause(self, worker: WorkerHandle) -> bool:
        return self.pool.signal(self._own([worker])[0], signal.SIGSTOP)

    def resume(self, worker: WorkerHandle) -> bool:
        return self.pool.signal(self._own([worker])[0], signal.SIGCONT)

    def restart(self, worker: WorkerHandle) -> WorkerHandle:
        old = self._own([worker])[0]
        if old.alive():
            raise RuntimeError(f"worker {old.name} is still running; a restart needs its process ended")
        incarnation = 1 + max(w.incarnation for w in self.pool.workers if w.name == old.name)
        return self.pool.spawn(old.spec.reincarnated(incarnation))

    def record(self, rec: dict[str, Any]) -> None:
        self.history.record(rec)

    def storage_cut(self) -> dict[str, Any]:
        return self.storage.cut()

    def _own(self, workers: Sequence[WorkerHandle]) -> list[WorkerProcess]:
        """The pool's own process objects for the handles a fault passes back."""
        ids = {id(w) for w in workers}
        found = [w for w in self.pool.workers if id(w) in ids]
        if len(found) != len(ids):
            raise ValueError("a worker handle that is not one of this run's workers")
        return found


def execute_run(scenario: Scenario, run_dir: Path, template: Path, *, seed: int,
                sqlite_paths: Sequence[str] = (), progress: ProgressFn | None = None,
                faults: FaultPlan | None = None) -> RunLayout:
    """Run one cell once. Always reaps every worker it started; judging is the caller's."""
    layout = RunLayout(run_dir)
    layout.refuse_if_used()
    layout.run_dir.mkdir(parents=True, exist_ok=True)
    layout.scenario_json.write_text(json.dumps(
        {"scenario": scenario_to_jsonable(scenario), "seed": seed, "duration": scenario.duration,
         "template": str(Path(template).absolute())},
        indent=1, default=str))
    layout.make_dirs()
    corpus.prepare()   # every worker loads the corpus's pools from the cache instead of building them
    history = HistoryWriter(layout.controller_history, flush_records=1, flush_seconds=0)
    history.record({"type": "run_start", "t": time.time(), "pid": os.getpid(), "seed": seed,
                    "duration": scenario.duration})

    def env_for(spec: WorkerSpec) -> dict[str, str]:
        extra = faults.worker_env(spec.name, spec.role) if faults is not None else {}
        return worker_environment(spec.sqlite_paths, extra)

    pool = WorkerPool(layout, history, env_for)
    storage = Storage(scenario.database.filesystem, layout, history, guests=_guests(scenario))
    run = RunContext(scenario, layout, seed, history, pool, storage)
    sampler_history = HistoryWriter(layout.sampler_history)
    run.sampler = Sampler(storage.backing_path, sampler_history, pool.live_pids)
    watch_history, watch = _lock_watch(scenario, layout, pool, history)
    interrupted: BaseException | None = None
    try:
        storage.prepare()
        facts = prepare_database(template, storage.backing_path, scenario)
        storage.start()
        if faults is not None:
            faults.prepare_files(storage.worker_path(), layout)
        history.record({"type": "note", "t": time.time(), "msg": "database prepared",
                        "journal_mode": facts.journal_mode, "template_id_range": list(facts.id_range),
                        "pages": facts.pages})
        specs = build_specs(scenario, layout, facts, seed=seed, sqlite_paths=sqlite_paths,
                            pragmas=faults.connection_pragmas() if faults is not None else [], storage=storage,
                            db_path_for=faults.worker_db_path if faults is not None else None)
        for spec in specs:
            pool.spawn(spec)
        pool.wait_ready(READY_TIMEOUT_SECONDS)
        run.sampler.start()
        if watch is not None:
            watch.start()
        run.t_go = time.time()  # before the go file: nothing a worker does comes before it
        layout.go.touch()
        history.record({"type": "go", "t": run.t_go})
        if faults is not None:
            faults.start(run)
        _run_for(run, progress, faults)
    except BaseException as exc:  # Ctrl-C, a failed start: stop everything, keep what was recorded
        interrupted = exc
    finally:
        if faults is not None:
            try:
                faults.stop(run)
            except Exception as exc:
                history.record({"type": "note", "t": time.time(), "msg": f"fault stop failed: {exc!r}"})
        pool.stop_all(STOP_GRACE_SECONDS)
        trim_ledger_files(layout.ledger_dir)  # a killed worker's ledger ends in its map's unused zeros
        if run.sampler.is_alive():
            run.sampler.stop()
        if watch is not None and watch.is_alive():
            watch.stop()
        if watch_history is not None:
            watch_history.close()
        try:
            storage.stop()
        except Exception as exc:  # an unmount problem is recorded; the database is judged all the same
            history.record({"type": "note", "t": time.time(), "msg": f"storage stop failed: {exc!r}"})
        sampler_history.close()
        history.record({"type": "run_stop", "t": time.time(),
                        "interrupted": type(interrupted).__name__ if interrupted else None})
        history.close()
    if isinstance(interrupted, (KeyboardInterrupt, SystemExit)):
        raise interrupted
    if interrupted is not None:
        # Not a verdict: record it and let the judge say "errors".
        layout.controller_error.write_text(f"{type(interrupted).__name__}: {interrupted}\n")
    return layout


def _lock_watch(scenario: Scenario, layout: RunLayout, pool: WorkerPool,
                history: HistoryWriter) -> tuple[HistoryWriter | None, LockWatch | None]:
    """The lock watch of the run (``[lock_watch]``), or None when it is off or cannot run here (noted)."""
    settings = scenario.lock_watch
    if settings.hz <= 0:
        return None, None
    why_not = lock_watch_unavailable()
    if why_not:
        history.record({"type": "note", "t": time.time(), "msg": f"no lock watch: {why_not}"})
        return None, None
    writer = HistoryWriter(layout.lockwatch_history, flush_records=64, flush_seconds=0.5)
    return writer, LockWatch(pool.live_pids, writer.record, hz=settings.hz,
                             libraries_every=settings.libraries_every)


def _guests(scenario: Scenario) -> set[str]:
    """fuse-split-shm: the workers on the guest side (database.shm_guests, else every other worker)."""
    if scenario.database.filesystem != "fuse-split-shm":
        return set()
    named = scenario.worker_names()
    wanted = {name.strip() for name in scenario.database.shm_guests.split(",") if name.strip()}
    if wanted:
        return {name for name, settings in named if settings.role in wanted or settings.group in wanted}
    return {name for index, (name, _) in enumerate(named) if index % 2 == 1}


def _run_for(run: RunContext, progress: ProgressFn | None, faults: FaultPlan | None) -> None:
    duration = run.duration
    end = time.monotonic() + duration
    next_report = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if faults is not None:
            faults.tick(run)
        if run.pool.all_exited():
            if faults is None or not faults.restarts_pending():
                run.record({"type": "note", "t": time.time(), "msg": "every worker exited before the end"})
                break
        if progress is not None and now >= next_report:
            next_report = now + 1.0
            latest = run.sampler.latest if run.sampler else {}
            progress({"elapsed": duration - (end - now), "duration": duration,
                      "wal_bytes": latest.get("wal_bytes", 0), "live_workers": len(run.live_pids()),
                      "run_dir": str(run.layout.run_dir)})
        time.sleep(min(0.05, max(0.0, end - now)))
