"""``walstress check DB [--json]``: the command's body, wired in by the CLI."""

from __future__ import annotations

import json
import sys
from typing import Callable

from walstress.checks.diagnose import DAMAGED, HEALTHY, check_database, format_check

__all__ = ["main_check"]

_EXIT_CODES = {HEALTHY: 0, DAMAGED: 1}


def main_check(argv_path: str, as_json: bool, *, quiet: bool = False,
               paint: Callable[[str, str], str] | None = None) -> int:
    """Diagnose ``argv_path`` read-only; exit 0 healthy, 1 damaged, 2 error.

    An error (no such file, not readable, ...) is one line on stderr; with
    ``as_json`` its diagnosis (verdict "error") is on stdout too. ``quiet``
    prints the verdict line alone; ``paint(text, verdict)`` colours the verdict.
    """
    result = check_database(argv_path)
    code = _EXIT_CODES.get(result["verdict"], 2)
    if as_json:
        print(json.dumps(result, indent=2))
    if code == 2:
        print(f"walstress check: {result['reason']}", file=sys.stderr)
        return code
    if not as_json:
        head, _, rest = format_check(result).partition("\n")
        verdict, sep, tail = head.partition(":")
        print((paint(verdict, result["verdict"]) if paint else verdict) + sep + tail)
        if rest and not quiet:
            print(rest)
    return code
