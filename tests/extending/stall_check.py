"""An example check, defined outside walstress: a run in which no operation finished for too long.

The README's "Adding a check" shows this module; tests/test_extending.py
registers it with one line (``register_check(StallCheck(limit_s=1.0))``).
"""

from __future__ import annotations

from walstress.checks.findings import Finding, RunEvidence


class StallCheck:
    name = "stall"

    def __init__(self, limit_s: float):
        self.limit_s = limit_s

    def __call__(self, run: RunEvidence) -> list[Finding]:
        times = sorted(r["t"] for r in run.records if r.get("type") == "op")
        gaps = [later - earlier for earlier, later in zip(times, times[1:])]
        longest = max(gaps, default=0.0)
        if longest <= self.limit_s:
            return []
        return [Finding(self.name, "errors", f"no operation finished for {longest:.1f} s "
                                             f"(limit {self.limit_s:.1f} s)")]
