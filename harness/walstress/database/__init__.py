"""Database schemas, the synthetic corpus and cached template databases.

The names are loaded on first use: a worker that imports ``database.corpus``
must not load ``template`` (and with it the stdlib ``sqlite3``, a second
SQLite library next to apsw's).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_WHERE = {
    "Corpus": "corpus",
    "SCHEMAS": "schema", "Schema": "schema", "get_schema": "schema",
    "MAX_PAGES": "template", "MIN_PAGES": "template", "build_database": "template", "copy_template": "template",
    "default_cache_dir": "cachedir", "get_template": "template", "template_key": "template",
    "validate_template_args": "template",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
