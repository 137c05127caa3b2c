"""Worker-side fault hooks: rebuilt from the worker's spec in its own process."""

from __future__ import annotations

import threading
from typing import Any

from walstress.runspec import WorkerSpec



class WorkerHooks:
    """What the faults of a run do inside one worker process."""

    def __init__(self, sections: dict[str, Any]):
        self.sections = sections
        self.vfs_name: str | None = None
        self._closers: list[Any] = []

    def install(self, spec: WorkerSpec, history: Any, stop: threading.Event) -> None:
        for section in self.sections.values():
            install = getattr(section, "install_in_worker", None)
            if install is not None:
                closer = install(spec, history, stop)
                if closer is not None:
                    self._closers.append(closer)
            hook = getattr(section, "open_connection_hook", None)
            if hook is not None:
                name = hook(spec)
                if name:
                    self.vfs_name = name

    def close(self) -> None:
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception:
                pass


def worker_hooks(spec: WorkerSpec) -> WorkerHooks:
    from walstress.faults.registry import FAULTS

    sections = {}
    for name, values in (spec.faults).items():
        if name not in FAULTS:
            raise RuntimeError(f"unknown fault section {name!r} in the worker spec")
        sections[name] = FAULTS.get(name)(**values)
    return WorkerHooks(sections)
