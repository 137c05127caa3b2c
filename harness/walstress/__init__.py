"""walstress: reproduce SQLite WAL corruption on demand.

The public API is small:

    from walstress import load_scenario, run
    scenario = load_scenario("scenarios/smoke.toml", ["duration=5s"])
    result = run(scenario, out_dir="reports/x")
    result.ok, result.cells[0]["corrupt"]
"""

from __future__ import annotations

__version__ = "0.1.0"

from walstress.api import Result, Scenario, judge, load_scenario, run  # noqa: E402

__all__ = ["Result", "Scenario", "judge", "load_scenario", "run", "__version__"]
