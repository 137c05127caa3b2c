"""Record the run's I/O for the crash explorer (``walstress crash``).

    [faults.crash_trace]
    enabled = true

Every worker routes its I/O through the VFS shim (vfs.py), which appends
each write (with the bytes it puts down), truncate, completed sync and
delete of a file of the database folder to the process's trace, stamped
with CLOCK_MONOTONIC (system-wide on Linux, so the traces of all processes
merge into one order) and the wall clock (to place the ledger's
acknowledgements in that order). Before any worker starts, the database
folder as it is (the fresh copy of the template) is saved as the trace's
starting point. Nothing is rolled back and no process is killed: the run is
an ordinary run, judged as usual; the explorer replays its trace afterwards.
Needs ``sqlite.driver = "apsw"``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

from walstress.faults.base import FaultSettings, setting
from walstress.faults.vfs import TraceWriter, ensure_registered, install, needs_apsw
from walstress.layout import RunLayout
from walstress.runspec import WorkerSpec

TRACE_DIR = "crash-trace"
INITIAL_DIR = "initial"


@dataclass
class CrashTraceSettings(FaultSettings):
    section: ClassVar[str] = "crash_trace"
    enabled: bool = setting(False, doc="record every write, truncate and sync of the database's files for "
                                       "walstress crash")

    def validate(self, scenario: Any) -> None:
        if self.enabled:
            needs_apsw("crash_trace", scenario, "recording the I/O trace")

    def acts_on_connections(self, scenario: Any) -> bool:
        return bool(self.enabled)

    def prepare_files(self, db_path: Path, layout: RunLayout) -> None:
        if not self.enabled:
            return
        initial = layout.fault_dir(TRACE_DIR) / INITIAL_DIR
        initial.mkdir(parents=True, exist_ok=True)
        for path in sorted(Path(db_path).parent.iterdir()):
            if path.name.startswith(Path(db_path).name) and path.is_file():
                shutil.copyfile(path, initial / path.name)

    def install_in_worker(self, spec: WorkerSpec, history: Any, stop: Any) -> Any:
        if not self.enabled:
            return None
        state, closer = install(spec, history, "crash_trace")
        state.trace = TraceWriter(spec.layout.fault_dir(TRACE_DIR), spec.name, Path(spec.db_path).parent)
        return closer

    def open_connection_hook(self, spec: WorkerSpec) -> Optional[str]:
        return ensure_registered() if self.enabled else None
