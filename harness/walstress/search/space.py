"""The space a search explores, as Hypothesis strategies built from the scenario fields' own metadata.

    [search]
    runs = 2                                   # runs per example
    faults = ["lock_breaker", "fork", "two_libraries", "kill"]   # each maybe on
    [search.vary]
    "checkpoint.mode" = "any"                  # every choice the field has
    "workers.writer.count" = {min = 1, max = 4}
    "database.pages" = {min = 300, max = 8000}
    duration = ["1s", "3s"]                    # listed values

``"any"`` takes the field's choices (or true/false); ``{min, max}`` is an
integer (or number) range, clipped to the field's own bounds; a list is
sampled from. A matrix in the scenario adds its axes as lists. An example
is one value per axis; :func:`apply_example` makes it a scenario.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

from walstress.scenario import (
    Scenario,
    apply_setting,
    field_for_key,
    field_type,
    key_value,
    setting_meta,
    validate,
)

# Examples are short and small unless the space says otherwise.
DEFAULT_DURATION_S = 3.0


def axes(scenario: Scenario) -> dict[str, Any]:
    """Every axis: ``search.vary``, a matrix's axes, and ``faults.<name>.enabled`` for ``search.faults``."""
    out: dict[str, Any] = {}
    for key, values in scenario.matrix.items():
        out[key] = list(values)
    out.update(scenario.search.vary)
    for name in scenario.search.faults:
        out[f"faults.{name}.enabled"] = "any"
    return out


def strategy_for(scenario: Scenario, key: str, spec: Any) -> st.SearchStrategy:
    f = field_for_key(scenario, key)
    meta = setting_meta(f) if f is not None else {}
    if isinstance(spec, list):
        probe = copy.deepcopy(scenario)
        values = []
        for value in spec:  # checked values ("30s" -> 30.0), as the scenario holds them
            apply_setting(probe, key, value, source=scenario.source)
            values.append(key_value(probe, key))
        return st.sampled_from(values)
    if spec == "any":
        if f is not None and field_type(f) is bool:
            return st.booleans()
        return st.sampled_from(list(meta["choices"]))
    low, high = spec["min"], spec["max"]
    probe = copy.deepcopy(scenario)
    bounds = []
    for value in (low, high):
        apply_setting(probe, key, value, source=scenario.source)
        bounds.append(key_value(probe, key))
    if meta.get("min") is not None:
        bounds[0] = max(bounds[0], meta["min"])
    if meta.get("max") is not None:
        bounds[1] = min(bounds[1], meta["max"])
    if isinstance(bounds[0], float) or isinstance(bounds[1], float):
        return st.floats(min_value=float(bounds[0]), max_value=float(bounds[1]), allow_nan=False)
    return st.integers(min_value=int(bounds[0]), max_value=int(bounds[1]))


def strategies(scenario: Scenario) -> dict[str, st.SearchStrategy]:
    return {key: strategy_for(scenario, key, spec) for key, spec in axes(scenario).items()}


def base_of(scenario: Scenario) -> Scenario:
    """The scenario an example starts from: no matrix, no expectation rules, examples short by default."""
    base = copy.deepcopy(scenario)
    base.matrix = {}
    base.expect_when = []
    if "duration" not in scenario.search.vary and "duration" not in scenario.matrix:
        base.duration = min(base.duration, DEFAULT_DURATION_S)
    return base


def apply_example(base: Scenario, example: dict[str, Any]) -> Scenario:
    """The base scenario with the example's values; ScenarioError when the combination cannot run."""
    scenario = copy.deepcopy(base)
    for key, value in example.items():
        apply_setting(scenario, key, value, source=scenario.source)
    validate(scenario)
    return scenario
