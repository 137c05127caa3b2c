"""The public API behind ``walstress/__init__.py``: load a scenario, run it, judge a run dir."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from walstress import catalog
from walstress.judge import judge_run
from walstress.runner import run_scenario
from walstress.scenario import Scenario, apply_overrides


@dataclass
class Result:
    """The content of results.json, with the path it was written to."""

    data: dict[str, Any]
    path: Path

    @property
    def ok(self) -> bool:
        return bool(self.data.get("ok"))

    @property
    def cells(self) -> list[dict[str, Any]]:
        return self.data["cells"]

    @property
    def runs(self) -> list[dict[str, Any]]:
        return [run for cell in self.cells for run in cell["results"]]

    @property
    def verdicts(self) -> list[str]:
        return [run["verdict"] for run in self.runs]


def load_scenario(source: str | Path | dict, overrides: list[str] | None = None) -> Scenario:
    """A scenario from a TOML file or a dict, with ``KEY=VALUE`` overrides applied."""
    if isinstance(source, dict):
        scenario = catalog.scenario_from_dict(source, default_name=str(source.get("name", "scenario")))
        apply_overrides(scenario, overrides or [])
        return scenario
    return catalog.load_scenario(source, overrides)


def run(scenario: Scenario | str | Path | dict, out_dir: str | Path | None = None, *,
        overrides: list[str] | None = None, repeat: int | None = None, duration: float | str | None = None,
        cache_dir: str | Path | None = None, console: Any = None,
        shard: tuple[int, int] | None = None, keep: str = "all") -> Result:
    """Run every cell of a scenario; returns the parsed results.json.

    ``duration`` is the same as the override ``duration=...`` (seconds, or a text such as "500ms").
    ``keep``: which runs keep their database files ("all", the default here: a caller may inspect them;
    "failed": damaged or not as expected, what ``walstress run`` does; "none").
    """
    overrides = list(overrides or [])
    if duration is not None:
        overrides.append(f"duration={duration}")
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario, overrides)
    elif overrides:
        scenario = copy.deepcopy(scenario)  # the caller's scenario stays as it was
        apply_overrides(scenario, overrides)
    if out_dir is None:
        out_dir = Path("reports") / f"{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    data = run_scenario(scenario, out_dir, repeat=repeat, cache_dir=cache_dir, console=console, shard=shard,
                        keep=keep)
    return Result(data=data, path=Path(out_dir) / "results.json")


def judge(run_dir: str | Path) -> dict[str, Any]:
    """Judge one run dir again (cell-NNN/run-NNN); returns its run.json."""
    return judge_run(run_dir)
