"""A JSON Schema of the scenario format, for editors (``python -m walstress.scenario_schema``).

Made from the same field metadata that checks a scenario (``setting(...)``:
type, ``choices``, ``min``/``max``, ``kind``, ``doc``) and from the catalog of
fault sections and worker roles, so a key added to the model is in the schema
the next time it is made. A TOML language server (taplo, Even Better TOML,
tombi) reads it from a first line such as::

    #:schema ../harness/walstress/schema/scenario.schema.json

and then completes keys, shows each key's doc and default, and marks typos and
values out of range while typing. The schema is an editor's aid: the loader
stays the judge (it also checks combinations a schema cannot express, such as
a driver that cannot load a version). Choices are accepted in any case, as
the loader accepts them.

``python -m walstress.scenario_schema --write`` rewrites the shipped file
``walstress/schema/scenario.schema.json``; a test keeps the two in step.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from walstress import scenario as model
from walstress.catalog import default_catalog
from walstress.scenario import Catalog
from walstress.settings import (DURATION_NUMBER, DURATION_UNITS, SIZE_NUMBER, SIZE_UNITS, field_named, field_type,
                                setting_meta, value_pattern)

__all__ = ["SHIPPED", "scenario_schema", "main"]

SHIPPED = Path(__file__).with_name("schema") / "scenario.schema.json"

_JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean", list: "array", dict: "object"}


def _any_case(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else ("\\" + c if c in ".+*?()[]{}|^$\\" else c)
                   for c in word)


# The loader's value syntaxes (settings.py), in the regular-expression dialect JSON Schema uses: no flags,
# so the units are spelt in every case by their letters' classes.
_DURATION = value_pattern(DURATION_NUMBER, DURATION_UNITS, _any_case)
_SIZE = value_pattern(SIZE_NUMBER, SIZE_UNITS, _any_case)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _bounds(meta: Any) -> dict[str, Any]:
    out = {}
    if meta.get("min") is not None:
        out["minimum"] = meta["min"]
    if meta.get("max") is not None:
        out["maximum"] = meta["max"]
    return out


def field_schema(f: dataclasses.Field) -> dict[str, Any]:
    """One setting: what the loader accepts for it (``coerce_value``), its doc and its default."""
    meta = setting_meta(f)
    kind, tp, choices = meta.get("kind"), field_type(f), meta.get("choices")
    out: dict[str, Any] = {}
    if kind == "duration":
        out["anyOf"] = [{"type": "number", **_bounds(meta)},
                        {"type": "string", "pattern": _DURATION, "description": 'such as "30s", "500ms", "2m"'}]
    elif kind == "ms":
        out["anyOf"] = [{"type": "integer", **_bounds(meta)},
                        {"type": "string", "pattern": _DURATION, "description": 'milliseconds, or "2s"'}]
    elif kind == "bytes":
        out["anyOf"] = [{"type": "integer", **_bounds(meta)},
                        {"type": "string", "pattern": _SIZE, "description": 'such as 4096, "64MiB", "1GiB"'}]
    elif kind in ("path", "entry", "code"):
        out["type"] = "string"
        if kind == "entry":
            out["pattern"] = "^$|:"
    elif kind == "table":
        out["type"] = "object"
    elif kind == "list":
        out["type"] = "array"
    elif choices is not None and tp is str:
        words = [str(c) for c in choices]
        out["anyOf"] = [{"enum": words},   # what an editor offers
                        {"type": "string", "pattern": "^(" + "|".join(_any_case(w) for w in words) + ")$"}]
    elif choices is not None:
        out["enum"] = list(choices)
    else:
        out["type"] = _JSON_TYPES.get(tp, "string")
        out.update(_bounds(meta))
    doc = meta.get("doc") or ""
    if doc:
        out["description"] = doc
    default = _default(f)
    if default is not None:
        out["default"] = default
    return out


def table_schema(cls: type, *, skip: tuple[str, ...] = (), title: str = "") -> dict[str, Any]:
    """A settings dataclass as a table: its fields, nothing else."""
    out: dict[str, Any] = {"type": "object", "additionalProperties": False,
                           "properties": {f.name: field_schema(f) for f in dataclasses.fields(cls)
                                          if f.name not in skip and f.metadata}}
    doc = (cls.__doc__ or "").strip()
    if title or doc and not doc.startswith(cls.__name__ + "("):
        out["description"] = title or " ".join(doc.split())
    return out


def _workers(catalog: Catalog) -> dict[str, Any]:
    roles = catalog.roles.names()
    rules = []
    for role, cls in catalog.roles.items():
        then = table_schema(cls, skip=("role",))
        then["properties"]["role"] = {"const": role}
        rules.append({"if": {"properties": {"role": {"const": role}}, "required": ["role"]}, "then": then})
    return {"type": "array", "description": "[[workers]]: one entry per group of worker processes",
            "items": {"type": "object", "required": ["role"],
                      "properties": {"role": {"enum": list(roles), "description": "the worker role"}},
                      "allOf": rules}}


def _matrix(keys: list[str]) -> dict[str, Any]:
    axis = {"type": "array", "minItems": 1, "description": "the values this key takes, one cell each"}
    return {"type": "object", "description": 'key = [values]: every combination is a cell ("checkpoint.mode" = '
                                             '["PASSIVE", "TRUNCATE"])',
            "propertyNames": {"enum": keys}, "additionalProperties": axis}


def scenario_schema(catalog: Catalog | None = None) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a scenario file, for this catalog of faults and roles."""
    catalog = catalog or default_catalog()
    top = {name: field_schema(field_named(model.Scenario, name))  # type: ignore[arg-type]
           for name in model._SCALAR_TOP}
    top["sqlite"] = {"anyOf": [
        table_schema(model.SqliteSettings, title="which SQLite: the Python binding and the version"),
        {"type": "string", "description": '"stdlib", "apsw" or an SQLite version such as "3.51.3" (through apsw): '
                                          "driver and version at once"}]}
    for name, cls in model._SECTIONS.items():
        if name != "sqlite":
            top[name] = table_schema(cls)
    search = top["search"]["properties"]
    search["vary"]["propertyNames"] = {"enum": [k for k in model.known_keys(catalog) if not k.startswith("search.")]}
    top["faults"] = {"type": "object", "additionalProperties": False, "description": "one table per fault",
                     "properties": {name: table_schema(cls) for name, cls in catalog.fault_sections.items()}}
    top["workers"] = _workers(catalog)
    matrix_keys = [k for k in ["sqlite", *model.known_keys(catalog)]
                   if k not in ("name", "description", "repeat") and not k.startswith("search.")]
    top["matrix"] = _matrix(matrix_keys)
    scenario_field = {f.name: f for f in dataclasses.fields(model.Scenario)}
    top["expect_when"] = {
        "type": "array", "description": "[[expect_when]]: another expectation for the cells that match",
        "items": {"type": "object", "additionalProperties": False, "required": ["match", "expect"],
                  "properties": {
                      "match": {"type": "object", "minProperties": 1, "propertyNames": {"enum": matrix_keys},
                                "description": "keys and the values a cell must have"},
                      "expect": field_schema(scenario_field["expect"]),
                      "fraction": field_schema(scenario_field["expect_fraction"]),
                      "cause": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$",
                                "description": 'the cause the damaged runs must have, such as "lock_lost"'},
                      "cause_fraction": field_schema(scenario_field["expect_cause_fraction"])}}}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "walstress/scenario.schema.json",
            "title": "walstress scenario",
            "description": "A walstress scenario file (TOML): the workload, the faults, the matrix and what to "
                           "expect. Made by python -m walstress.scenario_schema from the settings' metadata.",
            "type": "object", "additionalProperties": False, "properties": top}


def schema_text(catalog: Catalog | None = None) -> str:
    return json.dumps(scenario_schema(catalog), indent=1, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m walstress.scenario_schema", allow_abbrev=False,
                                     description="Print the JSON Schema of scenario files (for editors).")
    parser.add_argument("--write", action="store_true", help=f"rewrite the shipped {SHIPPED.name} instead")
    args = parser.parse_args(argv)
    text = schema_text()
    if args.write:
        SHIPPED.write_text(text)
        print(f"walstress: wrote {SHIPPED}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
