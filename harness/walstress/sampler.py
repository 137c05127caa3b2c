"""Periodic readings of file sizes and worker resource use.

Sizes come from ``os.stat`` only: the harness never opens a live database,
-wal or -shm file. CPU and I/O come from psutil.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

import psutil

from walstress.history import HistoryWriter


def file_size(path: str | Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


class Sampler(threading.Thread):
    """Records a ``sample`` (sizes) every period and a ``proc`` reading every few samples."""

    def __init__(self, db_path: Path, history: HistoryWriter, pids: Callable[[], dict[str, int]],
                 *, hz: float = 50.0, proc_every: int = 1):
        super().__init__(name="walstress-sampler", daemon=True)
        self.db_path = str(db_path)
        self.history = history
        self.pids = pids
        self.period = 1.0 / hz
        self.proc_every = max(1, proc_every)
        self._stop_event = threading.Event()
        self._procs: dict[int, psutil.Process] = {}
        self.latest: dict[str, Any] = {"db_bytes": 0, "wal_bytes": 0, "shm_bytes": 0}
        self.wal_peak_bytes = 0
        self.samples = 0

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def sample_once(self) -> None:
        now = time.time()
        rec: dict[str, Any] = {
            "type": "sample", "t": now,
            "db_bytes": file_size(self.db_path),
            "wal_bytes": file_size(self.db_path + "-wal"),
            "shm_bytes": file_size(self.db_path + "-shm"),
        }
        self.latest = rec
        self.wal_peak_bytes = max(self.wal_peak_bytes, rec["wal_bytes"])
        self.history.record(rec)
        self.samples += 1
        if self.samples % self.proc_every == 0:
            self.history.record({"type": "proc", "t": now, "procs": self._read_procs()})

    def _read_procs(self) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for name, pid in self.pids().items():
            proc = self._procs.get(pid)
            try:
                if proc is None:
                    proc = self._procs[pid] = psutil.Process(pid)
                with proc.oneshot():
                    cpu = proc.cpu_times()
                    try:
                        io = proc.io_counters()
                        read_bytes, write_bytes = io.read_bytes, io.write_bytes
                    except (psutil.AccessDenied, AttributeError):
                        read_bytes = write_bytes = -1
                out[name] = [round(cpu.user + cpu.system, 4), read_bytes, write_bytes]
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                self._procs.pop(pid, None)
        return out

    def run(self) -> None:
        next_at = time.monotonic()
        while not self._stop_event.is_set():
            try:
                self.sample_once()
            except Exception as exc:  # a reading must never kill the run
                self.history.record({"type": "note", "t": time.time(), "msg": f"sampler: {exc!r}"})
            next_at += self.period
            delay = next_at - time.monotonic()
            if delay < 0:
                next_at = time.monotonic()
                delay = 0
            self._stop_event.wait(delay)
        self.sample_once()
