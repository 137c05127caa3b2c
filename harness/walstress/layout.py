"""Where everything of one run lives: the only place a run dir's paths are spelled.

    scenario.json       the resolved scenario of this cell, its seed and duration
    db/state.db         the database under test (and its -wal/-shm)
    history/*.jsonl     controller, sampler, lock watch and one file per worker incarnation
    ledger/*.ledger     acknowledged commits, one file per writing thread
    specs/*.json        what each worker was told (runspec.WorkerSpec)
    logs/*.log          each worker's stdout/stderr
    control/            ready files, the go file, fault hand-shakes, controller-error.txt
    checks/             full integrity output, lost ids
    run.json            the run's result (written again by ``walstress report``)

A worker incarnation is named by its *stem*: the worker's name
(``writer-0``), or ``writer-0.i2`` for the second restart of that worker.
A fault that needs files of its own gets a folder (``fault_dir``) or a
control file (``control_file``) by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DB_NAME = "state.db"
_FOLDERS = ("db", "history", "ledger", "specs", "logs", "control", "checks")


@dataclass(frozen=True)
class RunLayout:
    run_dir: Path

    def __init__(self, run_dir: str | Path):
        object.__setattr__(self, "run_dir", Path(run_dir))

    # ---------------------------------------------------------------- files
    @property
    def scenario_json(self) -> Path:
        return self.run_dir / "scenario.json"

    @property
    def run_json(self) -> Path:
        return self.run_dir / "run.json"

    @property
    def db_path(self) -> Path:
        return self.run_dir / "db" / DB_NAME

    @property
    def pruned_note(self) -> Path:
        """Written in place of the database files when they were not kept (``walstress run --keep``)."""
        return self.run_dir / "db" / "pruned.json"

    @property
    def go(self) -> Path:
        return self.control_dir / "go"

    @property
    def controller_error(self) -> Path:
        return self.control_dir / "controller-error.txt"

    @property
    def controller_history(self) -> Path:
        return self.history_dir / "controller.jsonl"

    @property
    def sampler_history(self) -> Path:
        return self.history_dir / "sampler.jsonl"

    @property
    def lockwatch_history(self) -> Path:
        return self.history_dir / "lockwatch.jsonl"

    # -------------------------------------------------------------- folders
    @property
    def history_dir(self) -> Path:
        return self.run_dir / "history"

    @property
    def ledger_dir(self) -> Path:
        return self.run_dir / "ledger"

    @property
    def specs_dir(self) -> Path:
        return self.run_dir / "specs"

    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def control_dir(self) -> Path:
        return self.run_dir / "control"

    @property
    def checks_dir(self) -> Path:
        return self.run_dir / "checks"

    # ---------------------------------------------------- per incarnation
    def history(self, stem: str) -> Path:
        return self.history_dir / f"{stem}.jsonl"

    def spec(self, stem: str) -> Path:
        return self.specs_dir / f"{stem}.json"

    def log(self, stem: str) -> Path:
        return self.logs_dir / f"{stem}.log"

    def ready(self, stem: str) -> Path:
        return self.control_dir / f"ready-{stem}"

    def ledger(self, stem: str, thread_index: int) -> Path:
        return self.ledger_dir / f"{stem}-t{thread_index}.ledger"

    # ---------------------------------------------------------------- faults
    def control_file(self, name: str) -> Path:
        return self.control_dir / name

    def fault_dir(self, name: str) -> Path:
        return self.run_dir / name

    def check_file(self, name: str) -> Path:
        return self.checks_dir / name

    def make_dirs(self) -> None:
        for name in _FOLDERS:
            (self.run_dir / name).mkdir(parents=True, exist_ok=True)

    def is_run_dir(self) -> bool:
        return self.scenario_json.is_file()

    def refuse_if_used(self) -> None:
        """FileExistsError if a run is here already: its history, ledger and checks would mix with a new one's."""
        if self.is_run_dir():
            raise FileExistsError(f"{self.run_dir} already holds a run; give another output folder or remove it")
