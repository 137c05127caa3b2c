"""A found scenario as a plain scenario file: what differs from the defaults, and how it was found."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

from walstress.scenario import Scenario
from walstress.settings import setting_meta
from walstress.tomlwriter import table, value

_TOP = ("name", "description", "seed", "duration", "repeat", "expect", "expect_fraction", "expect_cause",
        "expect_cause_fraction")
_ALWAYS = ("name", "duration", "repeat", "expect")


def _relative(item: Any, kind: str | None, base: Path) -> Any:
    """A path (or the file of a "file.py:function") relative to the folder the scenario is written to."""
    if not isinstance(item, str) or not item or kind not in ("path", "entry", "code"):
        return item
    module, sep, name = item.rpartition(":")
    if sep and kind != "path" and not module.endswith(".py"):
        return item  # a module name
    path = module if sep and kind != "path" else item
    if not os.path.isabs(path):
        return item
    return os.path.relpath(path, base) + (sep + name if sep and kind != "path" else "")


def _diff(current: Any, default: Any, base: Path, keep: tuple[str, ...] = ()) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(current):
        mine = getattr(current, f.name)
        if f.name in keep or mine != getattr(default, f.name):
            out[f.name] = _relative(mine, setting_meta(f).get("kind"), base)
    return out


def _on(section: Any) -> bool:
    enabled = getattr(section, "enabled", None)
    return bool(enabled) if enabled is not None else section != type(section)()


def scenario_toml(scenario: Scenario, folder: Path, header: list[str]) -> str:
    """The scenario as TOML (what differs from the defaults; paths relative to ``folder``)."""
    default = Scenario()
    lines = [f"# {line}" if line else "#" for line in header] + [""]
    lines += [f"{name} = {value(getattr(scenario, name))}" for name in _TOP
              if name in _ALWAYS or getattr(scenario, name) != getattr(default, name)]
    lines.append("")
    for name in ("sqlite", "database", "checkpoint"):
        values = _diff(getattr(scenario, name), getattr(default, name), folder)
        if values:
            lines += table(name, values)
    for worker in scenario.workers:
        if worker.count > 0:
            lines += table("workers", _diff(worker, type(worker)(role=worker.role), folder, keep=("role",)),
                           array=True)
    for name, section in scenario.faults.items():
        if _on(section):
            keep = ("enabled",) if hasattr(section, "enabled") else ()
            lines += table(f"faults.{name}", _diff(section, type(section)(), folder, keep=keep))
    return "\n".join(lines).rstrip() + "\n"


def write_found(scenario: Scenario, found_dir: Path, header: list[str]) -> Path:
    """``found/<name>-<hash>.toml``: the hash of the scenario's own lines, so the same finding is one file."""
    found_dir.mkdir(parents=True, exist_ok=True)
    body = scenario_toml(scenario, found_dir, [])
    digest = hashlib.sha256(body.encode()).hexdigest()[:8]
    path = found_dir / f"{scenario.name}-{digest}.toml"
    path.write_text(scenario_toml(scenario, found_dir, header))
    return path
