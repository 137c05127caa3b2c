"""The JSON Schema of scenario files (for editors) agrees with the loader that judges them.

The schema is made from the settings' own metadata; these tests hold it to
the loader key by key: what the loader takes, the schema takes; a misspelt
key, a value out of range or of the wrong type is refused by both.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from walstress import scenario as model
from walstress.catalog import default_catalog, scenario_from_dict
from walstress.errors import ScenarioError
from walstress.scenario_schema import SHIPPED, scenario_schema, schema_text
from walstress.settings import field_named, setting_meta, tomllib

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_SCENARIOS = sorted([*ROOT.glob("scenarios/**/*.toml"), *ROOT.glob("examples/*/*.toml")])


@pytest.fixture(scope="module")
def validator():
    schema = scenario_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


# what a [[workers]] entry of these roles needs besides its role, for the loader to take it
_WORKER_BASE = {"python": {"entry": "walstress.bench.overhead:user_function"},
                "sql": {"statements": [{"sql": "SELECT 1"}]}}


def worker(role: str, **keys) -> dict:
    """A [[workers]] entry of ``role`` the loader takes, with ``keys`` set on it."""
    return {"role": role, **_WORKER_BASE.get(role, {}), **keys}


def nest(key: str, value) -> dict:
    """A scenario that sets one dotted key: workers.<role>.<key> as a [[workers]] entry of that role."""
    parts = key.split(".")
    if parts[0] == "workers":
        return {"workers": [worker(parts[1], **({} if parts[2] == "role" else {parts[2]: value}))]}
    doc: dict = {}
    table = doc
    for part in parts[:-1]:
        table = table.setdefault(part, {})
    table[parts[-1]] = value
    return doc


def loader_takes(doc: dict) -> bool:
    try:
        scenario_from_dict(doc)
    except ScenarioError:
        return False
    return True


def field_of(key: str) -> dataclasses.Field:
    catalog = default_catalog()
    parts = key.split(".")
    if parts[0] == "faults":
        cls = catalog.fault_sections.get(parts[1])
    elif parts[0] == "workers":
        cls = catalog.roles.get(parts[1])
    elif len(parts) == 2:
        cls = model._SECTIONS[parts[0]]
    else:
        cls = model.Scenario
    f = field_named(cls, parts[-1])
    assert f is not None, key
    return f


def keys() -> list[str]:
    return model.known_keys(default_catalog())


def test_the_shipped_schema_is_the_one_the_settings_make():
    assert SHIPPED.read_text() == schema_text(), \
        "the scenario format changed: python -m walstress.scenario_schema --write"


@pytest.mark.parametrize("path", SHIPPED_SCENARIOS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_scenario_is_valid_and_names_the_schema(path, validator):
    text = path.read_text()
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(tomllib.loads(text))]
    assert not errors, errors
    first = text.splitlines()[0]
    assert first.startswith("#:schema "), "the first line tells an editor's TOML server where the schema is"
    named = path.parent / first.split(None, 1)[1]   # the source tree's file: the package's when installed from it
    assert named.resolve() == (ROOT / "harness/walstress/schema/scenario.schema.json").resolve()
    assert named.read_text() == SHIPPED.read_text()


def test_every_key_the_loader_takes_the_schema_takes(validator):
    checked = 0
    for key in keys():
        f = field_of(key)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        doc = nest(key, default)
        if loader_takes(doc):
            assert validator.is_valid(doc), (key, [e.message for e in validator.iter_errors(doc)])
            checked += 1
        else:   # only the keys a role cannot go without, whose default (empty) is refused
            assert key in ("workers.python.entry", "workers.sql.statements"), key
    assert checked == len(keys()) - 2
    # every worker role's entry is checked from a base the loader takes (the python and sql roles too)
    assert all(loader_takes({"workers": [worker(key.split(".")[1])]}) for key in keys() if key.startswith("workers."))


def test_a_misspelt_key_is_refused_by_both(validator):
    for key in keys():
        if key.startswith("workers."):
            _, role, name = key.split(".")
            base = {"workers": [worker(role)]}
            assert loader_takes(base) and validator.is_valid(base), key   # only the misspelling is wrong
            doc = {"workers": [worker(role, **{name + "x": 1})]}
        else:
            doc = nest(key + "x", 1)
        assert not loader_takes(doc), key
        assert not validator.is_valid(doc), key


def bad_values(f: dataclasses.Field) -> list:
    """Values the metadata rules out: below min, above max, not a choice, the wrong type."""
    meta = setting_meta(f)
    out: list = [[1, 2]] if meta.get("kind") != "list" else ["not a list"]
    if isinstance(meta.get("min"), (int, float)) and not isinstance(meta.get("min"), bool):
        out.append(meta["min"] - 1)
    if isinstance(meta.get("max"), (int, float)) and not isinstance(meta.get("max"), bool):
        out.append(meta["max"] + 1)
    if meta.get("choices") and all(isinstance(c, str) for c in meta["choices"]):
        out.append("no-such-choice")
    return out


def test_values_the_metadata_rules_out_are_refused_by_both(validator):
    refused = 0
    for key in keys():
        for value in bad_values(field_of(key)):
            doc = nest(key, value)
            assert not loader_takes(doc), (key, value)
            assert not validator.is_valid(doc), (key, value)
            refused += 1
    assert refused > 2 * len(keys())


def test_spellings_the_loader_accepts_are_valid(validator):
    doc = {"duration": "1.5s", "checkpoint": {"mode": "truncate", "interval_ms": "2s"},
           "database": {"mmap_size": "64MiB", "schema": "minimal"}, "sqlite": "3.51.3",
           "matrix": {"checkpoint.mode": ["PASSIVE", "TRUNCATE"], "sqlite": ["stdlib", "3.51.3"]},
           "expect_when": [{"match": {"checkpoint.mode": "TRUNCATE"}, "expect": "corrupt", "fraction": 0.5}],
           "workers": [{"role": "writer", "count": 2}, {"role": "reader", "count": 1, "pause_ms": "10ms"}]}
    assert loader_takes(doc)
    assert validator.is_valid(doc), [e.message for e in validator.iter_errors(doc)]
    # a key of another role in a worker entry: both refuse
    wrong = {"workers": [{"role": "reader", "every_writes": 3}]}
    assert field_named(default_catalog().roles.get("reader"), "every_writes") is None
    assert not loader_takes(wrong) and not validator.is_valid(wrong)


def test_the_module_prints_the_schema():
    out = subprocess.run([sys.executable, "-m", "walstress.scenario_schema"], capture_output=True, text=True,
                         timeout=120, check=True)
    assert json.loads(out.stdout)["title"] == "walstress scenario"
