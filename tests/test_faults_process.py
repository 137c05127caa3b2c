"""Process faults (kill, restart, SIGSTOP/SIGCONT) and checkpoint strategies, on real processes.

One small run (minimal schema, 300 pages, 3 s) carries every fault of this
file; the tests read its results.json and history. Scenario validation of
the new keys goes through the command line (exit code 2, key named).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from walstress import run
from walstress.cli import main as cli_main
from walstress.history import read_history, read_records
from walstress.ledger import read_ledger
from walstress.catalog import scenario_from_dict
from walstress.scenario import expand_matrix

DURATION_S = 4.0


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def faulted(tmp_path_factory, cache_dir):
    """writer-0 killed at 0.8 s and restarted 0.1 s later, a reader paused twice
    (the second pause outlives the run), FTS5 merge + checkpoint every 15 commits."""
    scenario = {
        "name": "process-faults", "seed": 11, "duration": DURATION_S, "expect": "clean",
        "database": {"schema": "minimal", "pages": 300},
        "checkpoint": {"mode": "PASSIVE", "every_writes": 20, "fts_maintenance": "merge", "fts_merge_pages": 50,
                       "fts_every_writes": 15, "after_fts_maintenance": True},
        "workers": [{"role": "writer", "count": 2}, {"role": "reader", "count": 1, "hold_ms": 100}],
        "faults": {
            "kill": {"enabled": True, "target": "writer-0", "at": "0.8", "restart": True, "restart_delay_ms": 100},
            "pause": {"enabled": True, "target": "reader", "at": "0.3, 3.0", "duration_ms": 1500},
        },
    }
    out = tmp_path_factory.mktemp("process-faults")
    result = run(scenario, out, cache_dir=cache_dir)
    run_dir = Path(result.runs[0]["run_dir"])
    return result, run_dir


def test_kill_loses_nothing_and_is_recorded(faulted):
    result, run_dir = faulted
    res = result.runs[0]
    assert res["verdict"] == "clean", res["reason"]
    assert res["writes"]["lost"] == 0 and res["writes"]["acked"] > 50
    kills = [f for f in res["faults"] if f["name"] == "kill" and f["detail"]["action"] == "kill"]
    assert len(kills) == 1
    for kill in kills:
        assert kill["target"] == "writer-0" and kill["detail"]["signal"] == "SIGKILL"
        assert kill["t"] <= kill["t_end"] and kill["detail"]["exit_code"] == -9
    assert {k: v for k, v in res["fault_summary"]["kill"]["outcomes"].items() if k != "restart-aborted"} \
        == {"kill": 1, "restart": 1}
    # the judge does not call the kill a problem; the killed processes are marked
    assert res["worker_problems"] == []
    exits = [r for r in read_records(run_dir / "history" / "controller.jsonl") if r.get("type") == "worker_exit"]
    killed = [r for r in exits if r["fault_killed"]]
    aborted = [f for f in res["faults"] if f["name"] == "kill" and f["detail"]["action"] == "restart-aborted"]
    assert sorted(r["pid"] for r in killed) == sorted(k["detail"]["pid"] for k in kills + aborted)
    # a transaction the kill left open is indeterminate, never lost
    ledger = read_ledger(run_dir / "ledger")
    pending_ids = {op.row_id for t in ledger.transactions if t.state == "pending" for op in t.ops}
    assert not pending_ids & set(res["writes"]["lost_ids"])
    assert pending_ids <= set(res["ledger"]["indeterminate_ids"]) | {
        op.row_id for t in ledger.transactions if t.state == "acked" for op in t.ops}


def test_restart_is_a_new_incarnation_with_its_own_files(faulted):
    result, run_dir = faulted
    res = result.runs[0]
    restarts = [f for f in res["faults"] if f["name"] == "kill" and f["detail"]["action"] == "restart"]
    assert [r["detail"]["incarnation"] for r in restarts] == [1]
    for restart in restarts:
        stem = f"writer-0.i{restart['detail']['incarnation']}"
        assert restart["target"] == "writer-0" and restart["detail"]["spec"] == f"{stem}.json"
        spec = json.loads((run_dir / "specs" / f"{stem}.json").read_text())
        assert spec["name"] == "writer-0" and spec["incarnation"] == restart["detail"]["incarnation"]
        assert (run_dir / "history" / f"{stem}.jsonl").exists()
    # a new process ran the spec: it wrote its own history (and ledger, once set up) ...
    started = [r for r in read_records(run_dir / "history" / "writer-0.i1.jsonl") if r.get("type") == "worker_start"]
    aborted = [f for f in res["faults"] if f["name"] == "kill" and f["detail"]["action"] == "restart-aborted"]
    if aborted:  # ... unless a loaded machine had not even started it when the run ended: then it says so
        assert aborted[0]["detail"]["pid"] == restarts[0]["detail"]["pid"]
    else:
        assert [r["pid"] for r in started] == [restarts[0]["detail"]["pid"]]
    ledger_i1 = run_dir / "ledger" / "writer-0.i1-t0.ledger"
    if ledger_i1.exists():  # a loaded machine may take the whole run to start the worker
        assert all(line.split()[0] in "PAF" for line in ledger_i1.read_text().splitlines())
    # the first incarnation's ledger is still there, not overwritten
    first = (run_dir / "ledger" / "writer-0-t0.ledger").read_text().splitlines()
    assert all(line.split()[0] in "PAF" for line in first)
    starts = {w["name"]: w["starts"] for w in res["workers"]}
    assert starts == {"writer-0": 1 + len(started), "writer-1": 1, "reader-0": 1}


def test_pause_is_recorded_and_every_process_is_reaped(faulted):
    result, run_dir = faulted
    res = result.runs[0]
    pauses = [f for f in res["faults"] if f["name"] == "pause"]
    assert len(pauses) == 2
    first, last = sorted(pauses, key=lambda f: f["t"])
    assert first["target"] == "reader-0" and first["detail"]["signal"] == "SIGSTOP"
    assert 1.4 <= first["t_end"] - first["t"] < 3.5 and first["detail"]["ended_by"] == "schedule"
    assert last["detail"]["ended_by"] == "end of run" and last["detail"]["resumed"]
    controller = list(read_records(run_dir / "history" / "controller.jsonl"))
    spawned = [r["pid"] for r in controller if r.get("type") == "worker_spawn"]
    exited = [r["pid"] for r in controller if r.get("type") == "worker_exit"]
    assert len(spawned) == 4 and sorted(spawned) == sorted(exited)  # 3 workers + 1 new incarnation
    assert not [pid for pid in spawned if alive(pid)]
    reader_exit = next(r for r in controller if r.get("type") == "worker_exit" and r["worker"] == "reader-0")
    assert reader_exit["exit_code"] == 0 and not reader_exit["killed_by_controller"]


def test_fts_maintenance_ops_and_checkpoints_after_them(faulted):
    result, run_dir = faulted
    res = result.runs[0]
    assert res["ops"]["fts-maintenance"]["total"] > 0
    records = read_history(run_dir / "history")
    ops = [r for r in records if r.get("type") == "op" and r["kind"] == "fts-maintenance"]
    assert ops and all(r["table"] == "messages_fts" and r["action"] == "merge" for r in ops)
    after = [r for r in records if r.get("type") == "checkpoint" and r["source"] == "after fts merge"]
    assert after and all(("busy" in r and "log" in r and "checkpointed" in r and r["ms"] >= 0) for r in after)
    assert res["checkpoints"]["by_source"]["after fts merge"] == len(after)


def test_expect_when_sets_per_cell_expectations():
    scenario = scenario_from_dict({
        "expect": "clean",
        "matrix": {"checkpoint.mode": ["TRUNCATE", "PASSIVE"], "faults.lock_breaker.enabled": [True, False]},
        "expect_when": [{"match": {"faults.lock_breaker.enabled": True}, "expect": "damaged", "fraction": 0.8}],
    })
    cells = expand_matrix(scenario)
    got = {(c.params["checkpoint.mode"], c.params["faults.lock_breaker.enabled"]):
           (c.scenario.expect, c.scenario.expect_fraction) for c in cells}
    assert got == {("TRUNCATE", True): ("damaged", 0.8), ("PASSIVE", True): ("damaged", 0.8),
                   ("TRUNCATE", False): ("clean", 1.0), ("PASSIVE", False): ("clean", 1.0)}


BAD_SCENARIOS = [
    ("[faults.kill]\nenabled = true\ntarget = \"writer\"\n", "faults.kill"),
    ("[faults.kill]\nenabled = true\nat = \"soon\"\n", "faults.kill.at"),
    ("[faults.kill]\nenabled = true\nat = \"1\"\ntarget = \"painter\"\n", "faults.kill.target"),
    ("[faults.pause]\nenabled = true\nat = \"1\"\ntarget = \"checkpointer\"\n", "faults.pause.target"),
    ("[faults.pause]\nduration_ms = 0\n", "faults.pause.duration_ms"),
    ("[faults.lock_breaker]\ntarget = \"shm\"\n", "faults.lock_breaker.target"),
    ("[faults.lock_breaker]\nroles = \"writer, painter\"\n", "faults.lock_breaker.roles"),
    ("[faults.fork]\nchild_action = \"dance\"\n", "faults.fork.child_action"),
    ("[faults.wal_unlink]\nenabled = true\n", "faults.wal_unlink"),
    ("[checkpoint]\nfts_maintenance = \"vacuum\"\n", "checkpoint.fts_maintenance"),
    ("[checkpoint]\nafter_fts_maintenance = true\n", "checkpoint.after_fts_maintenance"),
    ("[checkpoint]\nfts_maintenance = \"merge\"\nfts_merge_pages = 0\n", "checkpoint.fts_merge_pages"),
    ("[[expect_when]]\nmatch = {\"faults.kill.enabled\" = \"maybe\"}\nexpect = \"clean\"\n",
     "expect_when[0].match.faults.kill.enabled"),
    ("[[expect_when]]\nmatch = {\"checkpoint.mode\" = \"PASSIVE\"}\nexpect = \"fine\"\n", "expect_when[0].expect"),
]


@pytest.mark.parametrize("body,key", BAD_SCENARIOS)
def test_invalid_fault_keys_exit_2_naming_the_key(tmp_path, capsys, body, key):
    path = tmp_path / "bad.toml"
    path.write_text('duration = "1s"\n[[workers]]\nrole = "writer"\n[[workers]]\nrole = "reader"\n' + body)
    code = cli_main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert key in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_invalid_set_value_through_the_command_line(tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text('duration = "1s"\n[[workers]]\nrole = "writer"\n')
    proc = subprocess.run([sys.executable, "-m", "walstress", "run", str(path), "--set", "faults.kill.restart_delay_ms=-5",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "faults.kill.restart_delay_ms" in proc.stderr and "Traceback" not in proc.stderr


def test_results_json_lists_the_faults(faulted):
    result, run_dir = faulted
    data = json.loads(result.path.read_text())
    names = {f["name"] for f in data["cells"][0]["results"][0]["faults"]}
    assert names == {"kill", "pause"}
    run_json = json.loads((run_dir / "run.json").read_text())
    assert set(run_json["fault_summary"]) == {"kill", "pause"}
