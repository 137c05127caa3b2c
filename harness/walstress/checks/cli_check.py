"""``walstress check DB [--json]``: the command's body, wired in by the CLI."""

from __future__ import annotations

import json

from walstress.checks.diagnose import DAMAGED, HEALTHY, check_database, format_check

__all__ = ["main_check"]

_EXIT_CODES = {HEALTHY: 0, DAMAGED: 1}


def main_check(argv_path: str, as_json: bool) -> int:
    """Diagnose ``argv_path`` read-only; exit 0 healthy, 1 damaged, 2 error."""
    result = check_database(argv_path)
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print(format_check(result))
    return _EXIT_CODES.get(result["verdict"], 2)
