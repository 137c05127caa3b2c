"""Shared fixtures: a template cache per test session (per xdist worker)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Hypothesis profiles: "ci" (the default: derandomized, so a run is the same on every machine; no
# deadline, the tests run real SQLite) and "nightly" (more examples, the example database kept so
# that a failure found overnight is replayed first). HYPOTHESIS_PROFILE=nightly selects it.
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=25, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("nightly", deadline=None, max_examples=400,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("walstress-cache")
    os.environ.setdefault("WALSTRESS_CACHE_DIR", str(path))
    return path


@pytest.fixture(scope="session")
def shared_cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin's template cache of this session, handed to inner pytest sessions so they build nothing."""
    from walstress.pytest_plugin import template_cache_dir

    return template_cache_dir(request.config, tmp_path_factory)


def small_scenario(**overrides) -> dict:
    """A tiny but real scenario: minimal schema, 2 writers, a reader, a checkpointer, an opener."""
    data = {
        "name": "tiny",
        "seed": 7,
        "duration": "3s",
        "expect": "clean",
        "database": {"schema": "minimal", "pages": 300},
        "checkpoint": {"mode": "TRUNCATE", "every_writes": 20, "interval_ms": 300},
        "workers": [
            {"role": "writer", "count": 2},
            {"role": "reader", "count": 1},
            {"role": "checkpointer", "count": 1},
            {"role": "opener", "count": 1, "pause_ms": 20},
        ],
    }
    for key, value in overrides.items():
        data[key] = value
    return data
