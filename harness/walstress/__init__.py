"""walstress: reproduce SQLite WAL corruption on demand.

The public API is small:

    from walstress import load_scenario, run
    scenario = load_scenario("scenarios/smoke.toml", ["duration=5s"])
    result = run(scenario, out_dir="reports/x")
    result.ok, result.cells[0]["corrupt"]

``judge(run_dir)`` judges one run dir again. The names are loaded on first
use, so that a worker process importing ``walstress.workers`` does not load
the runner, the judge and the report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from walstress.version import __version__

__all__ = ["Result", "Scenario", "judge", "load_scenario", "run", "__version__"]

if TYPE_CHECKING:
    from walstress.api import Result, Scenario, judge, load_scenario, run  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in ("Result", "Scenario", "judge", "load_scenario", "run"):
        from walstress import api

        return getattr(api, name)
    raise AttributeError(f"module 'walstress' has no attribute {name!r}")
