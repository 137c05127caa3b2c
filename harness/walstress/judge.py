"""Judge a run dir: history + final database -> run.json with a verdict.

Reads only what the run left on disk, so a run can be judged again later,
also when its controller died half way (the result is then marked partial).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from walstress.checks.integrity import run_integrity
from walstress.checks.ledger import check_ledger
from walstress.faults.summary import summarize_faults
from walstress.history import by_type, read_history
from walstress.metrics import summarize_history
from walstress.verdict import decide

DB_RELATIVE = Path("db") / "state.db"
INTEGRITY_LINES_IN_RESULT = 50


def _worker_report(records: list[dict[str, Any]], spec_dir: Path) -> tuple[list[dict], list[str]]:
    """Per worker: role, pid, SQLite version really loaded, exit code; and the problems seen."""
    workers: dict[str, dict[str, Any]] = {}
    for spec_path in sorted(spec_dir.glob("*.json")):
        spec = json.loads(spec_path.read_text())
        workers[spec["name"]] = {"name": spec["name"], "role": spec["role"], "threads": spec["worker"]["threads"],
                                 "expected_sqlite_version": spec.get("expected_sqlite_version", "system"),
                                 "sqlite_version": None, "driver": spec.get("driver"), "exit_code": None,
                                 "starts": 0}
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
                problems.append(f"worker {name} exited with code {rec.get('exit_code')}")
        elif kind == "worker_error":
            problems.append(f"worker {name}: {rec.get('msg', '')[:200]}")
    for entry in workers.values():
        expected = entry["expected_sqlite_version"]
        if expected != "system" and entry["sqlite_version"] not in (None, expected):
            problems.append(f"worker {entry['name']} loaded SQLite {entry['sqlite_version']}, not {expected}")
    return list(workers.values()), problems


def judge_run(run_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    meta = json.loads((run_dir / "scenario.json").read_text())
    scenario = meta["scenario"]
    records = read_history(run_dir / "history")
    controller = [r for r in records if r.get("type") in ("run_start", "run_stop")]
    run_start = next((r for r in controller if r["type"] == "run_start"), None)
    run_stop = next((r for r in controller if r["type"] == "run_stop"), None)
    partial = run_stop is None or bool(run_stop.get("interrupted"))
    summary = summarize_history(records)
    workers, problems = _worker_report(records, run_dir / "specs")
    controller_error = run_dir / "control" / "controller-error.txt"
    check_error = None
    if controller_error.exists():
        check_error = "the controller failed: " + controller_error.read_text().strip()[:300]

    db_path = run_dir / DB_RELATIVE
    integrity_dict = None
    ledger_dict = None
    if db_path.exists():
        integrity = run_integrity(db_path)
        integrity_dict = integrity.to_dict()
        checks_dir = run_dir / "checks"
        checks_dir.mkdir(exist_ok=True)
        (checks_dir / "integrity.txt").write_text("\n".join(integrity.named_messages or integrity.messages) + "\n")
        (checks_dir / "fts.json").write_text(json.dumps(integrity.fts, indent=1))
        ledger = check_ledger(db_path, run_dir / "ledger")
        ledger_dict = ledger.to_dict()
        (checks_dir / "lost_ids.txt").write_text("".join(f"{i}\n" for i in ledger.lost_ids))
    else:
        check_error = check_error or "the run left no database to check"

    writers_expected = any(w["role"] in ("writer", "wal-reset-race") for w in workers)
    verdict, reason = decide(integrity=integrity_dict, ledger=ledger_dict, summary=summary,
                             worker_problems=problems, writers_expected=writers_expected and not partial,
                             check_error=check_error)
    # I/O faults: VFS counters, throttle rate, power-cut loss classification (may turn
    # losses after the last sync under synchronous=NORMAL into "clean", when allowed)
    from walstress.faults.power_loss import judge_io_faults

    verdict, reason, io_extras = judge_io_faults(run_dir, records, ledger_dict, scenario, verdict, reason)
    if partial and verdict == "clean":
        reason += " (partial run: the controller did not finish)"
    if integrity_dict is not None:
        for key in ("messages", "named_messages"):
            lines = integrity_dict[key]
            integrity_dict[key] = lines[:INTEGRITY_LINES_IN_RESULT]
            integrity_dict[f"{key}_total"] = len(lines)
    t_go = next((r["t"] for r in records if r.get("type") == "go"), None)
    t_stop = run_stop["t"] if run_stop else (records[-1]["t"] if records else None)
    versions = sorted({w["sqlite_version"] for w in workers if w["sqlite_version"]})
    corrupt_times = [r["t"] for r in records if r.get("type") in ("op", "checkpoint") and r.get("err") == "corrupt"]
    first_corruption_error_s = round(min(corrupt_times) - t_go, 3) if (corrupt_times and t_go) else None
    faults = by_type(records, "fault")
    result = {
        "run_dir": str(run_dir),
        "seed": meta.get("seed"),
        "verdict": verdict,
        "reason": reason,
        "partial": partial,
        "duration_s": round(t_stop - t_go, 3) if (t_go and t_stop) else 0.0,
        "planned_duration_s": meta.get("duration"),
        "first_corruption_error_s": first_corruption_error_s,
        "started_at": run_start["t"] if run_start else None,
        "sqlite": {"driver": scenario["sqlite"]["driver"], "requested_version": scenario["sqlite"]["version"],
                   "worker_versions": versions, "check_version": integrity_dict["sqlite_version"] if integrity_dict else None},
        "workers": workers,
        "worker_problems": problems,
        "writes": {
            "acked": ledger_dict["acked_writes"] if ledger_dict else 0,
            "present": ledger_dict["present_writes"] if ledger_dict else 0,
            "lost": ledger_dict["lost"] if ledger_dict else 0,
            "lost_ids": ledger_dict["lost_ids"] if ledger_dict else [],
            "indeterminate": ledger_dict["indeterminate"] if ledger_dict else 0,
            "acked_transactions": ledger_dict["acked_transactions"] if ledger_dict else 0,
        },
        "ledger": ledger_dict,
        "integrity": integrity_dict,
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
    result.update(io_extras)
    (run_dir / "run.json").write_text(json.dumps(result, indent=1, default=str))
    return result
