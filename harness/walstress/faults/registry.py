"""Every fault section walstress knows, one registration line each.

A new fault is one module (its settings dataclass with a ``section`` name,
and what it does through the hooks of ``base.py``) plus one line below.

A fault that has something to say about a finished run declares a judge
hook: a function ``(run: RunEvidence) -> list[Finding]`` that the judge
calls after the checks, in the order below. It may add fields to run.json
(``run.extras``) and findings, which may excuse another check's findings
(power loss under synchronous=NORMAL excuses the ledger's unsynced losses);
it never rewrites a verdict. A fault that knows what its damage looks like
adds a cause rule (``CAUSE_HOOKS``, see ``checks/causes.py``).
"""

from __future__ import annotations

from walstress.faults import fsync, lock_hazards, mishandling, power_loss, process, throttle, trace, vfs
import dataclasses
from typing import Callable

from walstress.checks.causes import CauseRule
from walstress.checks.findings import Finding, RunEvidence
from walstress.faults.base import FaultSettings
from walstress.settings import Registry

FAULTS: Registry[type[FaultSettings]] = Registry("fault section")
JudgeHook = Callable[[RunEvidence], list[Finding]]
JUDGE_HOOKS: list[JudgeHook] = [vfs.judge_shim, vfs.judge_io_errors, throttle.judge_throttle,
                                 power_loss.judge_power_loss, mishandling.judge_backup_copies]
# Cause rules of faults (``checks/causes.py``), by the cause id they name: tried before the
# built-in ones, in registration order.
CAUSE_HOOKS: Registry[CauseRule] = Registry("cause")
for _cause, _rule in mishandling.CAUSES.items():
    CAUSE_HOOKS.register(_cause, _rule)


def register_fault(cls: type[FaultSettings]) -> type[FaultSettings]:
    """Add a fault section (a FaultSettings dataclass with a ``section`` name) to the registry."""
    if not cls.section:
        raise ValueError(f"{cls.__name__} has no section name")
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"fault section {cls.section} ({cls.__name__}) must be a dataclass")
    return FAULTS.register(cls.section, cls)


register_fault(process.KillSettings)
register_fault(process.PauseSettings)
register_fault(lock_hazards.LockBreakerSettings)
register_fault(lock_hazards.ForkSettings)
register_fault(lock_hazards.TwoLibrariesSettings)
register_fault(lock_hazards.WalUnlinkSettings)
register_fault(vfs.IoDelaySettings)
register_fault(vfs.IoErrorSettings)
register_fault(throttle.ThrottleSettings)
register_fault(fsync.FsyncSettings)
register_fault(power_loss.PowerLossSettings)
register_fault(mishandling.BackupCopySettings)
register_fault(mishandling.JournalTamperSettings)
register_fault(mishandling.DbAliasSettings)
register_fault(mishandling.DbReplaceSettings)
register_fault(mishandling.StrayWriteSettings)
register_fault(trace.CrashTraceSettings)
