"""History + checks -> one verdict per run, with a one-line reason.

    corrupt      the final database fails integrity_check or an FTS5
                 integrity-check, cannot be opened, or SQLite reported
                 corruption to a worker during the run
    lost-writes  an acknowledged change is missing from the final database
    errors       the harness or SQLite failed in a way that says nothing
                 about corruption (a worker crashed, no write committed ...)
    clean        none of the above
"""

from __future__ import annotations

import re
from typing import Any


def decide(*, integrity: dict | None, ledger: dict | None, summary: dict[str, Any],
           worker_problems: list[str], writers_expected: bool, check_error: str | None = None) -> tuple[str, str]:
    corrupt_during = int(summary.get("corrupt_errors_during_run", 0))
    if integrity is not None:
        fts_bad = {name: text for name, text in (integrity.get("fts") or {}).items() if text != "ok"}
        if integrity.get("open_error") and not integrity.get("damaged_objects"):
            if _is_lock_error(integrity["open_error"]):  # another process still holds it: says nothing
                return "errors", f"the final database could not be checked: {integrity['open_error']}"
            return "corrupt", f"the final database cannot be checked: {integrity['open_error']}"
        if not integrity.get("ok", False) or fts_bad:
            objects = integrity.get("damaged_objects") or sorted(fts_bad)
            lines = integrity.get("named_messages") or integrity.get("messages") or [""]
            first = next((line for line in lines if not line.startswith("*** in database")), lines[0]).strip()
            if not first and fts_bad:
                name = next(iter(fts_bad))
                first = f"{name}: {fts_bad[name]}"
            where = f" in {', '.join(objects[:4])}" if objects else ""
            if integrity.get("open_error"):
                first = f"{first[:120]} (then: {integrity['open_error']})" if first and first != "ok" \
                    else integrity["open_error"]
            return "corrupt", f"integrity check failed{where}: {first[:160]}"
    if corrupt_during:
        example = summary.get("error_examples", {}).get("corrupt", "")
        return "corrupt", f"SQLite reported corruption {corrupt_during} time(s) during the run: {example[:120]}"
    if ledger is not None:
        if ledger.get("error"):
            if _is_lock_error(ledger["error"]):
                return "errors", f"acknowledged rows could not be read back: {ledger['error']}"
            return "corrupt", f"acknowledged rows could not be read back: {ledger['error']}"
        lost = int(ledger.get("lost", 0))
        if lost:
            ids = ", ".join(str(i) for i in ledger.get("lost_ids", [])[:8])
            more = "" if lost <= 8 else f" and {lost - 8} more"
            return "lost-writes", f"{lost} of {ledger.get('acked_writes', 0)} acknowledged rows lost (ids {ids}{more})"
    if check_error:
        return "errors", check_error
    if worker_problems:
        return "errors", worker_problems[0]
    if writers_expected and ledger is not None and ledger.get("acked_transactions", 0) == 0:
        return "errors", "no write was acknowledged during the run"
    acked = ledger.get("acked_writes", 0) if ledger else 0
    return "clean", f"integrity ok, {acked} acknowledged rows all present"


def _is_lock_error(text: str) -> bool:
    """"database is locked" / "database table is locked" / busy: contention, not damage."""
    return bool(re.search(r"\bis locked\b|\bbusy\b", text, re.I))


def matches(expect: str, verdict: str) -> bool:
    if expect == "any":
        return True
    if expect == "damaged":
        return verdict in ("corrupt", "lost-writes")
    return expect == verdict
