"""Generated parameter values for SQL that a user writes (``role = "sql"`` and ``database.fill``).

A generator is a one-key table:

    {int = [1, 1000]}          an integer in the range (inclusive)
    {real = [0.0, 1.0]}        a float in the range
    {text = [20, 400]}         text of that many characters, from the seeded chat corpus
    {blob = [16, 2048]}        random bytes, that many
    {choice = ["a", "b"]}      one of the values
    {const = 5}                always this value
    {now = true}               the current time (epoch seconds, a float)
    {uuid = true}              a random UUID (text)
    {key = "kv"}               a key this worker wrote earlier into table kv (sql role);
                               {key = "grid", part = 1} for the 2nd column of a composite key

A fill script (``database.fill = "fill.sql"``) uses named parameters
instead: ``:round``, ``:i`` (the row within the round), ``:seed``, ``:int``,
``:real``, ``:short`` (8-24 characters), ``:text`` (20-400), ``:long``
(1-16 KiB), ``:blob`` (16-2048 bytes), ``:now`` and ``:uuid``.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any, Callable

from walstress.database.corpus import Corpus

GENERATORS = ("int", "real", "text", "blob", "choice", "const", "now", "uuid", "key")


class GeneratorError(ValueError):
    """A generator that cannot work; the message says which and why."""


def check_generator(spec: Any, where: str) -> None:
    """GeneratorError naming ``where`` when ``spec`` is not one of the generators above."""
    if not isinstance(spec, dict) or not spec:
        raise GeneratorError(f"{where}: a generator such as {{int = [1, 100]}} or {{text = [10, 200]}}")
    kinds = [k for k in spec if k in GENERATORS]
    extra = [k for k in spec if k not in GENERATORS and k != "part"]
    if len(kinds) != 1 or extra:
        raise GeneratorError(f"{where}: one of {', '.join(GENERATORS)} (got {', '.join(spec)})")
    kind = kinds[0]
    value = spec[kind]
    if kind in ("int", "real", "text", "blob"):
        if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)
                and value[0] <= value[1]):
            raise GeneratorError(f"{where}: {kind} = [low, high] with low <= high")
        if kind in ("text", "blob") and value[0] < 0:
            raise GeneratorError(f"{where}: {kind} lengths cannot be negative")
    elif kind == "choice":
        if not isinstance(value, list) or not value:
            raise GeneratorError(f"{where}: choice = [a non-empty list of values]")
    elif kind == "key":
        if not isinstance(value, str) or not value:
            raise GeneratorError(f'{where}: key = "the table whose keys this worker wrote"')
        part = spec.get("part", 0)
        if not isinstance(part, int) or part < 0:
            raise GeneratorError(f"{where}: part = the column of a composite key, 0 or more")


class ValueSource:
    """Values for one worker thread (or one fill), from one seed."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.corpus = Corpus(seed)
        self._words = self.corpus.search_terms(400)

    def text(self, low: int, high: int) -> str:
        length = self.rng.randint(int(low), int(high))
        out: list[str] = []
        size = 0
        while size < length:
            word = self.rng.choice(self._words)
            out.append(word)
            size += len(word) + 1
        return " ".join(out)[:length]

    def blob(self, low: int, high: int) -> bytes:
        return self.rng.randbytes(self.rng.randint(int(low), int(high)))

    def value(self, spec: dict[str, Any], keys: Callable[[str], list[Any]] | None = None) -> Any:
        (kind,) = [k for k in spec if k in GENERATORS]
        arg = spec[kind]
        if kind == "int":
            return self.rng.randint(int(arg[0]), int(arg[1]))
        if kind == "real":
            return self.rng.uniform(float(arg[0]), float(arg[1]))
        if kind == "text":
            return self.text(arg[0], arg[1])
        if kind == "blob":
            return self.blob(arg[0], arg[1])
        if kind == "choice":
            return self.rng.choice(arg)
        if kind == "const":
            return arg
        if kind == "now":
            return time.time()
        if kind == "uuid":
            return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        raise GeneratorError(f"{kind} values come from the sql role's own keys")

    def named(self, round_index: int, row: int, seed: int) -> "NamedParameters":
        return NamedParameters(self, {"round": round_index, "i": row, "seed": seed})


class NamedParameters(dict):
    """The named parameters of a fill script, each made when SQLite asks for it (a dict, so that
    sqlite3 binds by name; the values are made in ``__missing__``)."""

    _MAKERS: dict[str, Callable[[ValueSource], Any]] = {
        "int": lambda s: s.rng.randint(0, 2**31 - 1),
        "real": lambda s: s.rng.random(),
        "short": lambda s: s.text(8, 24),
        "text": lambda s: s.text(20, 400),
        "long": lambda s: s.text(1024, 16384),
        "blob": lambda s: s.blob(16, 2048),
        "now": lambda s: time.time(),
        "uuid": lambda s: str(uuid.UUID(int=s.rng.getrandbits(128), version=4)),
    }

    def __init__(self, source: ValueSource, fixed: dict[str, Any]):
        super().__init__(fixed)
        self.source = source

    def __missing__(self, name: str) -> Any:
        maker = self._MAKERS.get(name)
        if maker is None:
            raise KeyError(name)
        return maker(self.source)


NAMED_PARAMETERS = ("round", "i", "seed", *NamedParameters._MAKERS)
