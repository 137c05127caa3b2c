"""TOML out: values and tables as walstress writes them (starter scenarios, found scenarios)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def key(name: str) -> str:
    """A key, bare when TOML allows it, else quoted ("checkpoint.mode" keeps its dot)."""
    return name if _BARE_KEY.match(name) else value(name)


def value(item: Any) -> str:
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int):
        return str(item)
    if isinstance(item, float):
        if math.isnan(item) or math.isinf(item):
            raise ValueError("TOML has no NaN or infinity for a walstress setting")
        return repr(item)
    if isinstance(item, str):
        return json.dumps(item, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(item, (list, tuple)):
        return "[" + ", ".join(value(v) for v in item) + "]"
    if isinstance(item, dict):
        return "{" + ", ".join(f"{key(k)} = {value(v)}" for k, v in item.items()) + "}"
    raise TypeError(f"no TOML for {type(item).__name__}")


def table(name: str, values: dict[str, Any], *, array: bool = False) -> list[str]:
    """``[name]`` (or ``[[name]]``) and its ``key = value`` lines."""
    head = f"[[{name}]]" if array else f"[{name}]"
    return [head, *(f"{key(k)} = {value(v)}" for k, v in values.items()), ""]
