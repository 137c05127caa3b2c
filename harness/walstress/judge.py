"""Judge a run dir: what the run left -> findings -> one verdict -> run.json.

Reads only the run dir (history, ledger, specs, database), so a run can be
judged again later, also when its controller died half way (the result is
then marked partial). Every registered check (``checks/registry.py``) and
every fault's judge hook (``faults/registry.py``) adds its findings; the
verdict is composed from them by the one rule of ``checks/findings.py``.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

from walstress.checks.causes import RULES as CAUSES
from walstress.checks.causes import attribute
from walstress.checks.findings import Finding, RunEvidence, compose, excused_checks
from walstress.checks.registry import CHECKS
from walstress.faults.registry import CAUSE_HOOKS, JUDGE_HOOKS
from walstress.faults.summary import summarize_faults
from walstress.history import by_type, first_corruption_error_at, read_history
from walstress.layout import RunLayout
from walstress.metrics import summarize_history
from walstress.runspec import worker_summaries


def _worker_report(records: list[dict[str, Any]], layout: RunLayout) -> tuple[list[dict], list[str]]:
    """Per worker: role, pid, SQLite version really loaded, exit code; and the problems seen."""
    workers: dict[str, dict[str, Any]] = {
        entry["name"]: {**entry, "sqlite_version": None, "exit_code": None, "starts": 0}
        for entry in worker_summaries(layout)}
    problems: list[str] = []
    for rec in records:
        name = rec.get("worker")
        if name not in workers:
            continue
        entry = workers[name]
        kind = rec.get("type")
        if kind == "worker_start":
            entry["sqlite_version"] = rec.get("sqlite_version")
            entry["module_version"] = rec.get("module_version")
            entry["pid"] = rec.get("pid")
            entry["starts"] += 1
        elif kind == "worker_exit":
            entry["exit_code"] = rec.get("exit_code")
            expected_death = rec.get("fault_killed") or (rec.get("stopped_by_controller") and rec.get("exit_code") == 0)
            if rec.get("killed_by_controller") and not rec.get("fault_killed"):
                problems.append(f"worker {name} did not stop when asked and was killed")
            elif not expected_death and rec.get("exit_code") not in (0, None):
                problems.append(f"worker {name} exited with code {_exit_text(rec.get('exit_code'))}")
        elif kind == "worker_error":
            problems.append(f"worker {name}: {rec.get('msg', '')[:200]}")
    for entry in workers.values():
        expected = entry["expected_sqlite_version"]
        if expected != "system" and entry["sqlite_version"] not in (None, expected):
            problems.append(f"worker {entry['name']} loaded SQLite {entry['sqlite_version']}, not {expected}")
    return list(workers.values()), problems


def _exit_text(code: Any) -> str:
    """-7 -> "-7 (SIGBUS)": a worker killed by a signal says which."""
    if isinstance(code, int) and code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return str(code)


def known_causes() -> tuple[str, ...]:
    """Every cause id a run can be attributed to: the faults' own, the built-in ones, "unknown"."""
    return (*CAUSE_HOOKS.names(), *CAUSES.names(), "unknown")


def collect_findings(run: RunEvidence) -> list[Finding]:
    """Every check, then every fault's judge hook, in registration order."""
    findings: list[Finding] = []
    for _name, check in CHECKS.items():
        findings.extend(check(run))
    for hook in JUDGE_HOOKS:
        findings.extend(hook(run))
    return findings


def judge_run(run_dir: str | Path) -> dict[str, Any]:
    layout = RunLayout(run_dir)
    if layout.pruned_note.is_file() and layout.run_json.is_file():
        # the database was not kept: its checks cannot run again, so the run keeps the verdict it was given
        kept = json.loads(layout.run_json.read_text())
        kept.setdefault("partial", False)
        kept["db_pruned"] = json.loads(layout.pruned_note.read_text())["bytes"]
        return kept
    meta = json.loads(layout.scenario_json.read_text())
    scenario = meta["scenario"]
    records = read_history(layout.history_dir)
    run_start = next((r for r in records if r.get("type") == "run_start"), None)
    run_stop = next((r for r in records if r.get("type") == "run_stop"), None)
    partial = run_stop is None or bool(run_stop.get("interrupted"))
    summary = summarize_history(records)
    workers, problems = _worker_report(records, layout)
    evidence = RunEvidence(layout=layout, scenario=scenario, records=records, summary=summary, workers=workers,
                           worker_problems=problems, partial=partial, template=meta.get("template"))
    findings = collect_findings(evidence)
    ledger = evidence.results.get("ledger")
    integrity = evidence.results.get("integrity")
    acked = ledger.get("acked_writes", 0) if ledger else 0
    verdict, reason = compose(findings, f"integrity ok, {acked} acknowledged rows all present")
    if partial and verdict == "clean":
        reason += " (partial run: the controller did not finish)"
    t_go = next((r["t"] for r in records if r.get("type") == "go"), None)
    t_stop = run_stop["t"] if run_stop else (records[-1]["t"] if records else None)
    versions = sorted({w["sqlite_version"] for w in workers if w["sqlite_version"]})
    failed_at = first_corruption_error_at(records)
    first_corruption_error_s = round(failed_at - t_go, 3) if (failed_at is not None and t_go) else None
    faults = by_type(records, "fault")
    result = {
        "run_dir": str(layout.run_dir),
        "seed": meta.get("seed"),
        "verdict": verdict,
        "reason": reason,
        "findings": [f.to_dict(excused=f.check in excused_checks(findings)) for f in findings],
        "partial": partial,
        "duration_s": round(t_stop - t_go, 3) if (t_go and t_stop) else 0.0,
        "planned_duration_s": meta.get("duration"),
        "first_corruption_error_s": first_corruption_error_s,
        "started_at": run_start["t"] if run_start else None,
        "sqlite": {"driver": scenario["sqlite"]["driver"], "requested_version": scenario["sqlite"]["version"],
                   "worker_versions": versions, "check_version": integrity["sqlite_version"] if integrity else None},
        "workers": workers,
        "worker_problems": problems,
        "writes": {
            "acked": ledger["acked_writes"] if ledger else 0,
            "present": ledger["present_writes"] if ledger else 0,
            "lost": ledger["lost"] if ledger else 0,
            "lost_ids": ledger["lost_ids"] if ledger else [],
            "indeterminate": ledger["indeterminate"] if ledger else 0,
            "acked_transactions": ledger["acked_transactions"] if ledger else 0,
        },
        "ledger": ledger,
        "integrity": integrity,
        "wal_peak_bytes": summary["wal_peak_bytes"],
        "db_peak_bytes": summary["db_peak_bytes"],
        "checkpoints": summary["checkpoints"],
        "latency_ms": summary["latency_ms"],
        "ops": summary["ops"],
        "errors": summary["errors"],
        "errors_by_worker": summary["errors_by_worker"],
        "error_examples": summary["error_examples"],
        "faults": faults,
        "fault_summary": summarize_faults(faults),
        "samples": summary["samples"],
        "judged_at": time.time(),
    }
    result.update(evidence.extras)
    result.update(attribute(evidence, verdict, [rule for _, rule in CAUSE_HOOKS.items()]))
    layout.run_json.write_text(json.dumps(result, indent=1, default=str))
    return result
