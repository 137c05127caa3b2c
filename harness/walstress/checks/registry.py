"""Every check a run is judged by, in the order their findings are read.

A new check is one module (a class with a ``name`` and ``__call__(run:
RunEvidence) -> list[Finding]``, see ``findings.py``) plus one line below;
a check defined outside walstress is added with :func:`register_check`
before the run is judged. Faults add their own findings through the judge
hooks of ``faults/registry.py``.
"""

from __future__ import annotations

from walstress.checks.findings import Check
from walstress.checks.integrity import IntegrityCheck
from walstress.checks.ledger import LedgerCheck
from walstress.checks.run_health import (
    ControllerErrorCheck,
    CorruptionDuringRunCheck,
    WorkerProblemsCheck,
    WritesAcknowledgedCheck,
)
from walstress.settings import Registry

CHECKS: Registry[Check] = Registry("check")


def register_check(check: Check) -> Check:
    return CHECKS.register(check.name, check)


register_check(ControllerErrorCheck())
register_check(IntegrityCheck())
register_check(CorruptionDuringRunCheck())
register_check(LedgerCheck())
register_check(WorkerProblemsCheck())
register_check(WritesAcknowledgedCheck())
