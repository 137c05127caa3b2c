"""The machine a run ran on, for results.json and the report."""

from __future__ import annotations

import os
import platform
import sqlite3
import sys
from pathlib import Path
from typing import Any


def environment_info(run_dir: Path | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "system_sqlite": sqlite3.sqlite_version,
    }
    try:  # the CPU's model name, for the report's environment section (Linux)
        with open("/proc/cpuinfo") as handle:
            info["cpu_model"] = next((line.split(":", 1)[1].strip() for line in handle
                                      if line.lower().startswith("model name")), platform.processor())
    except OSError:
        info["cpu_model"] = platform.processor()
    try:
        import psutil

        info["memory_bytes"] = psutil.virtual_memory().total
        if run_dir is not None:
            best = None
            target = str(Path(run_dir).resolve())
            for part in psutil.disk_partitions(all=True):
                if target.startswith(part.mountpoint) and (best is None or len(part.mountpoint) > len(best.mountpoint)):
                    best = part
            if best is not None:
                info["filesystem"] = {"type": best.fstype, "mountpoint": best.mountpoint, "device": best.device}
    except Exception:
        pass
    return info
