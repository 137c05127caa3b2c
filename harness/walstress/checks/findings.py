"""Findings, and the one rule that composes them into a verdict.

Every check (integrity, FTS5, the ledger, the run's own health, and any
fault's judgement) reads what a run left and returns :class:`Finding`
records. :func:`compose` turns them into the run's verdict, written once:

1. a finding may *excuse* the findings of named checks (power loss under
   ``synchronous=NORMAL`` excuses the ledger's losses after the last sync:
   SQLite documents them); excused findings do not vote, but are kept;
2. the verdict is the most severe finding left:
   ``corrupt`` > ``lost-writes`` > ``errors`` > ``clean``;
3. its reason is that of the first finding of that severity, in check order;
   a clean run takes the reason of a clean finding that excused something,
   else the caller's clean reason.

Verdicts:

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
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from walstress.layout import RunLayout

SEVERITY = {"corrupt": 3, "lost-writes": 2, "errors": 1, "clean": 0}


@dataclass(frozen=True)
class Finding:
    check: str                       # the check (or fault) that found it
    verdict: str                     # corrupt | lost-writes | errors | clean
    reason: str
    excuses: tuple[str, ...] = ()    # checks whose findings this one explains as expected

    def __post_init__(self) -> None:
        if self.verdict not in SEVERITY:
            raise ValueError(f"finding of {self.check}: unknown verdict {self.verdict!r}")

    def to_dict(self, *, excused: bool = False) -> dict[str, Any]:
        return {"check": self.check, "verdict": self.verdict, "reason": self.reason,
                "excuses": list(self.excuses), "excused": excused}


@dataclass
class RunEvidence:
    """What a finished run left, as the checks see it (read from the run dir only)."""

    layout: RunLayout
    scenario: dict[str, Any]          # the cell's scenario as written to scenario.json
    records: list[dict[str, Any]]     # the whole history, by time
    summary: dict[str, Any]           # metrics.summarize_history(records)
    workers: list[dict[str, Any]]     # one entry per worker: role, versions, exit codes, writes_ledger
    worker_problems: list[str]
    partial: bool                     # the controller did not finish the run
    results: dict[str, Any] = field(default_factory=dict)   # each check's own output, by check name
    extras: dict[str, Any] = field(default_factory=dict)    # fields checks add to run.json
    template: str | None = None       # the database the run's copy was made from (scenario.json)

    @property
    def db_path(self) -> Any:
        return self.layout.db_path

    @property
    def t_go(self) -> float | None:
        return next((r["t"] for r in self.records if r.get("type") == "go"), None)


class Check(Protocol):
    """A check: a name, and findings from a run's evidence."""

    name: str

    def __call__(self, run: RunEvidence) -> list[Finding]: ...


def excused_checks(findings: Sequence[Finding]) -> set[str]:
    """The checks whose findings another finding excuses."""
    return {name for finding in findings for name in finding.excuses}


def compose(findings: Sequence[Finding], clean_reason: str) -> tuple[str, str]:
    """(verdict, reason) by the rule in the module docstring."""
    excused = excused_checks(findings)
    voting = [f for f in findings if f.check not in excused]
    worst = max((SEVERITY[f.verdict] for f in voting), default=0)
    if worst:
        first = next(f for f in voting if SEVERITY[f.verdict] == worst)
        return first.verdict, first.reason
    excusing = next((f for f in voting if f.excuses), None)
    return "clean", excusing.reason if excusing is not None else clean_reason


def is_lock_error(text: str) -> bool:
    """"database is locked" / "database table is locked" / busy: contention, not damage."""
    return bool(re.search(r"\bis locked\b|\bbusy\b", text, re.I))


def matches(expect: str, verdict: str) -> bool:
    """Does a verdict meet an expectation ("damaged": corrupt or lost-writes; "any": everything)?"""
    if expect == "any":
        return True
    if expect == "damaged":
        return verdict in ("corrupt", "lost-writes")
    return expect == verdict
