"""Checks of the run itself, from its history: did it run as planned, and did SQLite say "corrupt"?

    controller   the controller failed (its error is in control/controller-error.txt)
    corruption   SQLite reported corruption to a worker during the run
    workers      a worker crashed, exited with an error, did not stop when asked,
                 or loaded another SQLite version than asked
    writes       the scenario has roles that write through the ledger, the run
                 finished, and not one write was acknowledged
"""

from __future__ import annotations

from walstress.checks.findings import Finding, RunEvidence


class ControllerErrorCheck:
    name = "controller"

    def __call__(self, run: RunEvidence) -> list[Finding]:
        path = run.layout.controller_error
        if not path.exists():
            return []
        return [Finding(self.name, "errors", "the controller failed: " + path.read_text().strip()[:300])]


class CorruptionDuringRunCheck:
    name = "corruption"

    def __call__(self, run: RunEvidence) -> list[Finding]:
        count = int(run.summary.get("corrupt_errors_during_run", 0))
        if not count:
            return []
        example = run.summary.get("error_examples", {}).get("corrupt", "")
        return [Finding(self.name, "corrupt", f"SQLite reported corruption {count} time(s) during the run: "
                                              f"{example[:120]}")]


class WorkerProblemsCheck:
    name = "workers"

    def __call__(self, run: RunEvidence) -> list[Finding]:
        return [Finding(self.name, "errors", problem) for problem in run.worker_problems[:1]]


class WritesAcknowledgedCheck:
    name = "writes"

    def __call__(self, run: RunEvidence) -> list[Finding]:
        writers = any(w.get("writes_ledger") for w in run.workers)
        ledger = run.results.get("ledger")
        if not writers or run.partial or ledger is None or ledger.get("acked_transactions", 0):
            return []
        return [Finding(self.name, "errors", "no write was acknowledged during the run")]
