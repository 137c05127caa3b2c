"""The catalog: every fault section and worker role a scenario may name.

The scenario model knows its own keys only; this module composes it with
the registries of ``faults/registry.py`` and ``workers/registry.py`` so that
a scenario file is checked against every fault and role walstress has
(including those registered at run time with ``register_fault`` or
``register_role``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from walstress import scenario as model
from walstress.faults.registry import FAULTS
from walstress.scenario import Catalog, Scenario, WorkerSettings
from walstress.settings import Registry
from walstress.workers.registry import ROLES


def default_catalog() -> Catalog:
    """The registered fault sections and roles, as they are now."""
    roles: Registry[type[WorkerSettings]] = Registry("role")
    for name, role in ROLES.items():
        roles.register(name, role.settings)
    return Catalog(fault_sections=FAULTS, roles=roles)


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> Scenario:
    """A scenario file with ``KEY=VALUE`` overrides applied, checked against the default catalog."""
    return model.load_scenario(path, overrides, catalog=default_catalog())


def scenario_from_dict(data: dict[str, Any], *, source: str = "<dict>", default_name: str = "scenario") -> Scenario:
    return model.scenario_from_dict(data, catalog=default_catalog(), source=source, default_name=default_name)


def known_keys() -> list[str]:
    return model.known_keys(default_catalog())
