"""Settings: the bottom layer every scenario key is built on.

A setting is a dataclass field declared with :func:`setting`, which keeps
its metadata (``choices``, ``min``, ``max``, ``kind``, ``doc``). The same
metadata checks a value from a TOML file or from ``--set``
(:func:`coerce_value`), documents the key, and gives search strategies
their ranges. Units are parsed here: durations (``"30s"``, ``"500ms"``,
``"2m"``) and sizes (``"64MiB"``). :class:`Registry` maps names to what
implements them (fault sections, worker roles, checks), with "did you mean"
for a misspelt name.

Nothing here knows a particular key, fault or role.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import sys
from dataclasses import field
from pathlib import Path
from typing import Any, Generic, Iterable, Iterator, Mapping, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "Registry", "SettingError", "coerce_value", "did_you_mean", "field_named", "parse_duration_seconds",
    "parse_set_value", "parse_size_bytes", "setting", "setting_meta", "tomllib", "value_pattern",
]

KINDS = ("duration", "ms", "bytes", "table", "list", "path", "entry", "code")


class SettingError(ValueError):
    """A value or a combination of values is not allowed; ``key`` names the setting at fault."""

    def __init__(self, key: str | None, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)


def setting(default: Any, *, choices: Iterable[Any] | None = None, min: Any = None, max: Any = None,
            kind: str | None = None, doc: str = "") -> Any:
    """A dataclass field with a default and the metadata that checks and documents it."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown setting kind {kind!r}; one of {', '.join(KINDS)}")
    meta = {"choices": tuple(choices) if choices is not None else None, "min": min, "max": max, "kind": kind,
            "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def setting_meta(f: dataclasses.Field) -> Mapping[str, Any]:
    return f.metadata or {}


def field_named(cls: type, name: str) -> dataclasses.Field | None:
    """The dataclass field ``name`` of ``cls``, or None."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f
    return None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest candidate, or ``""``."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


# --------------------------------------------------------------- value parsing
_SIZE_FACTORS = {
    None: 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024,
    "m": 1 << 20, "mb": 1000**2, "mib": 1 << 20, "g": 1 << 30, "gb": 1000**3, "gib": 1 << 30,
}
_DURATION_FACTORS = {None: 1.0, "s": 1.0, "sec": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0}
DURATION_NUMBER, SIZE_NUMBER = r"[0-9]*\.?[0-9]+", r"-?[0-9]+"
DURATION_UNITS = tuple(u for u in _DURATION_FACTORS if u)
SIZE_UNITS = tuple(u for u in _SIZE_FACTORS if u)


def value_pattern(number: str, units: Iterable[str], spell: Any = re.escape) -> str:
    """The text a duration or size may be: a number, then one of its units (each written by ``spell``)."""
    return rf"^\s*({number})\s*({'|'.join(spell(u) for u in units)})?\s*$"


_DURATION_RE = re.compile(value_pattern(DURATION_NUMBER, DURATION_UNITS), re.I)
_SIZE_RE = re.compile(value_pattern(SIZE_NUMBER, SIZE_UNITS), re.I)


def parse_duration_seconds(value: Any) -> float:
    """"30s", "500ms", "2m", 30, 1.5 -> seconds (float)."""
    if isinstance(value, bool):
        raise ValueError("a duration, not a boolean")
    if isinstance(value, (int, float)):
        return float(value)
    match = _DURATION_RE.match(str(value))
    if not match:
        raise ValueError('a duration such as 30, "30s", "500ms" or "2m"')
    number, unit = match.groups()
    return float(number) * _DURATION_FACTORS[unit.lower() if unit else None]


def parse_size_bytes(value: Any) -> int:
    """"64MiB", "1g", 4096 -> bytes (int)."""
    if isinstance(value, bool):
        raise ValueError("a size, not a boolean")
    if isinstance(value, int):
        return value
    match = _SIZE_RE.match(str(value))
    if not match:
        raise ValueError('a size such as 4096, "64MiB" or "1GiB"')
    number, unit = match.groups()
    return int(number) * _SIZE_FACTORS[unit.lower() if unit else None]


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
_TYPES_BY_NAME = {"int": int, "float": float, "str": str, "bool": bool}


def field_type(f: dataclasses.Field) -> Any:
    """The field's type as a class (annotations are strings under ``from __future__ import annotations``)."""
    return f.type if not isinstance(f.type, str) else _TYPES_BY_NAME.get(f.type, str)


def coerce_value(f: dataclasses.Field, value: Any, *, from_text: bool = False) -> Any:
    """Check and convert one value for field f; raise ValueError saying what is allowed."""
    meta = setting_meta(f)
    kind = meta.get("kind")
    tp = field_type(f)
    if from_text and isinstance(value, str):
        value = _parse_text_value(value, tp, kind)
    result = _convert(value, tp, kind)
    choices = meta.get("choices")
    if choices is not None:
        if isinstance(result, str):
            canonical = {str(c).lower(): c for c in choices}
            if result.lower() not in canonical:
                raise ValueError("one of " + ", ".join(str(c) for c in choices))
            result = canonical[result.lower()]
        elif result not in choices:
            raise ValueError("one of " + ", ".join(str(c) for c in choices))
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and result < lo:
        raise ValueError(f"at least {lo}")
    if hi is not None and result > hi:
        raise ValueError(f"at most {hi}")
    return result


def _convert(value: Any, tp: Any, kind: str | None) -> Any:
    if kind == "table":
        if not isinstance(value, dict):
            raise ValueError("a table such as {queue = \"jobs\", batch = 5}")
        return copy.deepcopy(value)
    if kind == "list":
        if not isinstance(value, list):
            raise ValueError("an array such as [1, 2]")
        return copy.deepcopy(value)
    if kind in ("path", "entry", "code"):
        if not isinstance(value, str):
            raise ValueError("a path" if kind == "path" else '"package.module:function" or "file.py:function"')
        if kind == "entry" and value and ":" not in value:
            raise ValueError('"package.module:function" or "file.py:function"')
        return value
    if kind == "duration":
        return parse_duration_seconds(value)
    if kind == "ms":
        if isinstance(value, str):
            if value.strip().lstrip("-").isdigit():
                return int(value)
            return int(round(parse_duration_seconds(value) * 1000))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError('milliseconds such as 500 or "2s"')
        return int(value)
    if kind == "bytes":
        return parse_size_bytes(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(_TYPE_NAMES[bool])
        return value
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(_TYPE_NAMES[int])
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(_TYPE_NAMES[float])
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(_TYPE_NAMES[str])
        return value
    return value


def _parse_text_value(text: str, tp: Any, kind: str | None) -> Any:
    """Interpret a --set value: TOML literal where it parses, else the plain string."""
    stripped = text.strip()
    if kind in ("table", "list"):
        try:
            return tomllib.loads(f"v = {stripped}")["v"]
        except tomllib.TOMLDecodeError:
            return stripped
    if tp is str or kind in KINDS:
        if stripped.startswith('"') and stripped.endswith('"') and len(stripped) >= 2:
            return stripped[1:-1]
        if kind is None:
            return stripped
    try:
        return tomllib.loads(f"v = {stripped}")["v"]
    except tomllib.TOMLDecodeError:
        if tp is bool and stripped.lower() in ("yes", "on", "1", "no", "off", "0"):
            return stripped.lower() in ("yes", "on", "1")
        return stripped


def resolve_path(value: str, base_dir: Path, kind: str) -> str:
    """A relative path (or the file of a "file.py:function" entry) made absolute against base_dir."""
    if not value:
        return value
    if kind == "code":  # a file, or a "file.py:function" / "module:function"
        kind = "entry" if ":" in Path(value).name else "path"
    if kind == "entry":
        module, sep, name = value.rpartition(":")
        if module.endswith(".py") and not Path(module).is_absolute():
            return str((base_dir / module).resolve()) + sep + name
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base_dir / path).resolve())


def parse_set_value(text: str) -> Any:
    """Parse the right-hand side of --set when it is a list (a matrix axis)."""
    stripped = text.strip()
    try:
        return tomllib.loads(f"v = {stripped}")["v"]
    except tomllib.TOMLDecodeError:
        inner = stripped[1:-1]
        return [part.strip().strip('"') for part in inner.split(",") if part.strip()]


# -------------------------------------------------------------------- registry
T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> what implements them, in registration order.

    ``what`` names the kind of thing in messages ("fault section", "role").
    Registering a second, different entry under a taken name is an error.
    """

    def __init__(self, what: str):
        self.what = what
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        existing = self._entries.get(name)
        if existing is not None and existing is not entry:
            raise ValueError(f"{self.what} {name!r} is registered already ({existing!r})")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> T | None:
        """Remove an entry (a test's own role or check, say); what was registered under name, if any."""
        return self._entries.pop(name, None)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        return f"unknown {self.what} '{name}'{did_you_mean(name, self._entries)} ({self.what}s: {', '.join(self)})"

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __deepcopy__(self, memo: dict) -> "Registry[T]":  # a registry is shared, never copied with its users
        return self
