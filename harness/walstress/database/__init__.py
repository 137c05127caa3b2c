"""Database schemas, the synthetic corpus and cached template databases."""

from .corpus import Corpus
from .schema import SCHEMAS, Schema, get_schema
from .template import (
    MAX_PAGES,
    MIN_PAGES,
    build_database,
    copy_template,
    default_cache_dir,
    get_template,
    template_key,
    validate_template_args,
)

__all__ = [
    "Corpus",
    "MAX_PAGES",
    "MIN_PAGES",
    "SCHEMAS",
    "Schema",
    "build_database",
    "copy_template",
    "default_cache_dir",
    "get_schema",
    "get_template",
    "template_key",
    "validate_template_args",
]
