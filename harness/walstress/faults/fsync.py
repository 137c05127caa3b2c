"""fsync behaviour: no-op syncs, slow syncs, and the sync pragmas.

    [faults.fsync]
    mode = "noop"            # "normal" | "noop" | "slow"
    delay_ms = 20            # slow: each sync waits this long first ...
    delay_max_ms = 80        # ... or, when larger, a seeded uniform draw in [delay_ms, delay_max_ms]
    via = "auto"             # "auto" | "vfs" | "eatmydata"
    checkpoint_fullfsync = true
    fullfsync = false

``database.synchronous`` (OFF/NORMAL/FULL/EXTRA) says how often SQLite asks
for a sync; this section says what an asked-for sync does.

- ``noop`` through the VFS shim (apsw driver): ``xSync`` returns at once and
  is counted (``syncs_skipped`` in run.json ``vfs``). With the stdlib driver
  the workers start with ``LD_PRELOAD`` of ``libeatmydata`` (Debian package
  ``eatmydata``), which turns fsync/fdatasync/sync_file_range into no-ops
  for the whole worker process.
- ``slow`` (shim only): a sleep before every sync; the delay shows in the
  commit latencies with ``synchronous`` FULL.
- ``checkpoint_fullfsync`` / ``fullfsync`` set the pragmas of the same
  name on every worker connection. On Linux SQLite issues a plain fsync for
  both (F_FULLFSYNC exists on macOS only), so they change nothing there but
  are recorded, for scenarios shared with macOS machines.
"""

from __future__ import annotations

import ctypes.util
import functools
import os
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from walstress.faults.base import Fault, FaultSettings, RunControl, setting
from walstress.faults.vfs import ensure_registered, install, needs_apsw
from walstress.runspec import WorkerSpec

_EATMYDATA_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libeatmydata.so",
    "/usr/lib/aarch64-linux-gnu/libeatmydata.so",
    "/usr/lib/libeatmydata.so",
    "/usr/local/lib/libeatmydata.so",
    "/usr/lib64/libeatmydata.so",
)


@functools.lru_cache(maxsize=1)
def find_eatmydata() -> str | None:
    """Path of libeatmydata, or None when it is not installed."""
    env = os.environ.get("WALSTRESS_EATMYDATA")
    if env and os.path.exists(env):
        return env
    for candidate in _EATMYDATA_CANDIDATES:
        for path in (candidate, candidate + ".1"):
            if os.path.exists(path):
                return path
    name = ctypes.util.find_library("eatmydata")
    if name:
        for folder in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib", "/usr/local/lib",
                       "/usr/lib64", "/lib"):
            path = os.path.join(folder, name)
            if os.path.exists(path):
                return path
    return None


@dataclass
class FsyncSettings(FaultSettings):
    section: ClassVar[str] = "fsync"
    mode: str = setting("normal", choices=("normal", "noop", "slow"),
                        doc="what a sync does: the real thing, nothing, or the real thing after a delay")
    delay_ms: int = setting(0, min=0, max=60_000, kind="ms", doc="slow: delay before each sync")
    delay_max_ms: int = setting(0, min=0, max=60_000, kind="ms",
                                doc="slow: when > delay_ms, each delay is seeded uniform in [delay_ms, delay_max_ms]")
    via: str = setting("auto", choices=("auto", "vfs", "eatmydata"),
                       doc="noop: the VFS shim (apsw) or LD_PRELOAD of libeatmydata; auto: vfs with apsw, else eatmydata")
    checkpoint_fullfsync: bool = setting(False, doc="PRAGMA checkpoint_fullfsync=ON on every worker connection")
    fullfsync: bool = setting(False, doc="PRAGMA fullfsync=ON on every worker connection")

    # ------------------------------------------------------------- helpers
    @property
    def active(self) -> bool:
        return self.mode != "normal" or self.checkpoint_fullfsync or self.fullfsync

    def resolved_via(self, driver: str | None) -> str:
        if self.mode == "slow":
            return "vfs"
        if self.via != "auto":
            return self.via
        return "vfs" if driver == "apsw" else "eatmydata"

    def _remember(self, scenario: Any) -> None:
        # worker_env() is called without the scenario: keep the driver on the section
        object.__setattr__(self, "_driver", scenario.sqlite.driver)

    def validate(self, scenario: Any) -> None:
        self._remember(scenario)
        if self.mode == "slow" and self.delay_ms <= 0 and self.delay_max_ms <= 0:
            raise ValueError('faults.fsync.delay_ms: mode = "slow" needs delay_ms > 0 (or delay_max_ms > 0)')
        if self.delay_max_ms and self.delay_max_ms < self.delay_ms:
            raise ValueError(f"faults.fsync.delay_max_ms: {self.delay_max_ms} is below delay_ms ({self.delay_ms})")
        if self.mode == "slow":
            if self.via == "eatmydata":
                raise ValueError('faults.fsync.via: "eatmydata" cannot slow syncs down; slow syncs need the VFS shim')
            needs_apsw("fsync", scenario, 'mode = "slow"')
        if self.mode == "noop":
            via = self.resolved_via(scenario.sqlite.driver)
            if via == "vfs":
                needs_apsw("fsync", scenario, 'mode = "noop" with via = "vfs"')
            elif find_eatmydata() is None:
                raise ValueError('faults.fsync.mode: "noop" with the stdlib driver needs libeatmydata '
                                 '(Debian package eatmydata), which is not installed; install it or set '
                                 'sqlite.driver = "apsw" to skip syncs in the VFS shim')

    def build(self, scenario: Any, seed: int) -> Fault | None:
        self._remember(scenario)
        return FsyncFault(self, scenario.sqlite.driver) if self.active else None

    # --------------------------------------------------------- worker side
    def worker_env(self, worker_name: str, role: str) -> dict[str, str]:
        if self.mode != "noop" or self.resolved_via(getattr(self, "_driver", None)) != "eatmydata":
            return {}
        library = find_eatmydata()
        if library is None:
            return {}
        existing = os.environ.get("LD_PRELOAD", "")
        return {"LD_PRELOAD": f"{library} {existing}".strip()}

    def connection_pragmas(self) -> list[str]:
        pragmas = []
        if self.checkpoint_fullfsync:
            pragmas.append("PRAGMA checkpoint_fullfsync=ON")
        if self.fullfsync:
            pragmas.append("PRAGMA fullfsync=ON")
        return pragmas

    def install_in_worker(self, spec: WorkerSpec, history: Any, stop: Any) -> Any:
        if not self._uses_shim(spec):
            return None
        state, closer = install(spec, history, f"fsync-{self.mode}")
        state.sync_mode = self.mode
        state.sync_delay_s = self.delay_ms / 1000.0
        state.sync_delay_max_s = max(self.delay_max_ms, self.delay_ms) / 1000.0
        return closer

    def acts_on_connections(self, scenario: Any) -> bool:
        return self.mode in ("noop", "slow") and self.resolved_via(scenario.sqlite.driver) == "vfs"

    def _uses_shim(self, spec: WorkerSpec) -> bool:
        return self.mode in ("noop", "slow") and self.resolved_via(spec.connection.driver) == "vfs"

    def open_connection_hook(self, spec: WorkerSpec) -> str | None:
        return ensure_registered() if self._uses_shim(spec) else None


class FsyncFault(Fault):
    """Records the fsync behaviour of the run as one fault window."""

    name = "fsync"

    def __init__(self, settings: FsyncSettings, driver: str):
        self.settings = settings
        self.driver = driver

    def stop(self, run: RunControl) -> None:
        s = self.settings
        detail: dict[str, Any] = {"mode": s.mode, "via": s.resolved_via(self.driver) if s.mode != "normal" else None,
                                  "checkpoint_fullfsync": s.checkpoint_fullfsync, "fullfsync": s.fullfsync,
                                  "synchronous": run.scenario.database.synchronous}
        if s.mode == "slow":
            detail.update(delay_ms=s.delay_ms, delay_max_ms=max(s.delay_max_ms, s.delay_ms))
        if detail["via"] == "eatmydata":
            detail["library"] = find_eatmydata()
        self.record(run, t=run.t_go or time.time(), t_end=time.time(), target="all workers", **detail)
