"""I/O faults on real SQLite and real processes: VFS shim delays, fsync, throttling, power loss."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import small_scenario
from walstress import run
from walstress.faults import fsync as fsync_fault
from walstress.faults import throttle
from walstress.faults.power_loss import merge_undo_logs, roll_back
from walstress.faults.vfs import UndoWriter
from walstress.history import read_records

ROOT = Path(__file__).resolve().parent.parent
apsw = pytest.importorskip("apsw")


def io_scenario(*, faults: dict, synchronous: str = "FULL", driver: str = "apsw", duration: str = "2s",
                workers: list | None = None, checkpoint: dict | None = None) -> dict:
    data = small_scenario(duration=duration, expect="any")
    data["sqlite"] = {"driver": driver}
    data["database"] = {"schema": "minimal", "pages": 300, "synchronous": synchronous}
    data["checkpoint"] = checkpoint or {"mode": "PASSIVE", "interval_ms": 200}
    data["workers"] = workers or [{"role": "writer", "count": 2}, {"role": "checkpointer", "count": 1}]
    data["faults"] = faults
    return data


def fault_records(run_result: dict, name: str) -> tuple[list, list]:
    """The fault records of one run: as in results.json, and as in the history file."""
    in_results = [f for f in run_result["faults"] if f["name"] == name]
    history = Path(run_result["run_dir"]) / "history" / "controller.jsonl"
    in_history = [r for r in read_records(history) if r.get("type") == "fault" and r.get("name") == name]
    return in_results, in_history


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "walstress", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


# ------------------------------------------------------------------ VFS shim
def test_vfs_write_delay_shows_in_write_latencies(tmp_path, cache_dir):
    result = run(io_scenario(faults={"io_delay": {"write_ms": 15}}, workers=[{"role": "writer", "count": 1}]),
                 tmp_path / "out", cache_dir=cache_dir)
    r = result.runs[0]
    assert r["verdict"] == "clean", r["reason"]
    # every commit writes at least one WAL frame, each write waits 15 ms first
    assert r["latency_ms"]["write"]["p50_ms"] >= 15.0
    vfs = r["vfs"]
    assert vfs["writes"] > 0 and vfs["write_delay_ms"] >= 15.0 * vfs["writes"] * 0.99
    in_results, in_history = fault_records(r, "io_delay")
    assert in_results and in_history and in_results[0]["detail"]["write_ms"] == 15.0
    assert in_results[0]["t_end"] > in_results[0]["t"]


def test_vfs_throttle_delays_writes_and_holds_the_rate(tmp_path, cache_dir):
    limit = 512 * 1024
    result = run(io_scenario(faults={"throttle": {"backend": "vfs", "write_bps": limit}}),
                 tmp_path / "out", cache_dir=cache_dir)
    r = result.runs[0]
    assert r["verdict"] == "clean", r["reason"]
    assert r["throttle"]["backend"] == "vfs"
    vfs = r["vfs"]
    # the queue made writes wait, and the wait shows in the commit latencies
    assert vfs["throttle_write_delay_ms"] > 500
    assert r["latency_ms"]["write"]["p50_ms"] >= 10.0
    # what SQLite wrote through the shim stayed near the limit (plus one queued write per worker)
    seconds = r["throttle"]["seconds"]
    assert vfs["write_bytes"] <= limit * seconds * 1.2 + 3 * 256 * 1024
    assert r["throttle"]["shim_write_bps"] == pytest.approx(vfs["write_bytes"] / seconds, rel=0.01)
    in_results, in_history = fault_records(r, "throttle")
    assert in_results and in_history and in_results[0]["detail"]["write_bps_limit"] == limit


# --------------------------------------------------------------------- fsync
def test_noop_fsync_through_the_shim_skips_every_sync(tmp_path, cache_dir):
    result = run(io_scenario(faults={"fsync": {"mode": "noop", "checkpoint_fullfsync": True}}),
                 tmp_path / "out", cache_dir=cache_dir)
    r = result.runs[0]
    assert r["verdict"] == "clean", r["reason"]
    vfs = r["vfs"]
    # synchronous=FULL asks for a WAL sync at every commit; none reached the disk
    assert vfs["wal_syncs"] >= r["writes"]["acked_transactions"] > 0
    assert vfs["syncs_skipped"] == vfs["syncs"] and vfs.get("syncs_done", 0) == 0
    in_results, in_history = fault_records(r, "fsync")
    assert in_history and in_results[0]["detail"]["mode"] == "noop" and in_results[0]["detail"]["via"] == "vfs"
    assert in_results[0]["detail"]["checkpoint_fullfsync"] is True


def test_slow_fsync_delays_each_sync(tmp_path, cache_dir):
    result = run(io_scenario(faults={"fsync": {"mode": "slow", "delay_ms": 20, "delay_max_ms": 40}},
                             workers=[{"role": "writer", "count": 1}]), tmp_path / "out", cache_dir=cache_dir)
    r = result.runs[0]
    assert r["verdict"] == "clean", r["reason"]
    vfs = r["vfs"]
    assert vfs["syncs_done"] == vfs["syncs"] > 0
    assert 20.0 * vfs["syncs"] <= vfs["sync_delay_ms"] <= 40.0 * vfs["syncs"] + 1
    assert r["latency_ms"]["write"]["p50_ms"] >= 20.0


@pytest.mark.skipif(fsync_fault.find_eatmydata() is None, reason="libeatmydata is not installed")
def test_noop_fsync_with_the_stdlib_driver_preloads_eatmydata():
    from walstress.catalog import scenario_from_dict

    scenario = scenario_from_dict(io_scenario(driver="stdlib", faults={"fsync": {"mode": "noop"}}))
    env = scenario.faults["fsync"].worker_env("writer-0", "writer")
    assert "eatmydata" in env["LD_PRELOAD"]
    probe = "print(any('eatmydata' in line for line in open('/proc/self/maps')))"
    out = subprocess.run([sys.executable, "-c", probe], env={**os.environ, **env}, capture_output=True, text=True)
    assert out.stdout.strip() == "True"


# ---------------------------------------------------------------- power loss
def test_power_cut_with_synchronous_full_loses_no_acknowledged_write(tmp_path, cache_dir):
    faults = {"power_loss": {"enabled": True, "at": 1.2, "rollback": "all"}}
    result = run(io_scenario(faults=faults, duration="2.5s",
                             workers=[{"role": "writer", "count": 2}, {"role": "checkpointer", "count": 1},
                                      {"role": "reader", "count": 1}]),
                 tmp_path / "out", cache_dir=cache_dir)
    r = result.runs[0]
    assert r["verdict"] == "clean", r["reason"]
    assert r["writes"]["acked"] > 0 and r["writes"]["lost"] == 0
    assert r["worker_problems"] == []
    assert all(w["exit_code"] == -9 for w in r["workers"])
    in_results, in_history = fault_records(r, "power_loss")
    assert len(in_results) == 1 and in_history
    detail = in_results[0]["detail"]
    assert detail["reason"] == "scheduled" and abs(detail["offset_s"] - 1.2) < 0.3
    assert sorted(detail["killed"]) == sorted(w["name"] for w in r["workers"])
    assert detail["shm_removed"] and not (Path(r["run_dir"]) / "db" / "state.db-shm").exists()
    # FULL syncs the WAL at every commit: it was synced, and no sync began after the
    # kill (one may begin between the cut's start and the SIGKILL reaching the worker)
    assert detail["files"]["state.db-wal"]["syncs"] >= r["writes"]["acked_transactions"] > 0
    killed_at = in_results[0]["t"] + detail["kill_ms"] / 1000.0
    assert r["power_loss"]["lost"] == 0 and r["power_loss"]["last_sync_t"] <= killed_at


def test_power_cut_with_synchronous_off_rolls_back_to_the_synced_state(tmp_path, cache_dir):
    faults = {"power_loss": {"enabled": True, "at": 1.0, "rollback": "all"}}
    result = run(io_scenario(faults=faults, synchronous="OFF"), tmp_path / "out", cache_dir=cache_dir)
    r = result.runs[0]
    files = [f for f in r["faults"] if f["name"] == "power_loss"][0]["detail"]["files"]
    # OFF never syncs: every change since the start was rolled back
    assert files["state.db-wal"]["syncs"] == 0 and files["state.db"]["syncs"] == 0
    assert files["state.db-wal"]["unsynced_changes"] > 0
    for entry in files.values():
        assert entry["restored_changes"] == entry["unsynced_changes"]
        assert entry["size_after"] == entry["durable_size"]
    assert files["state.db-wal"]["size_after"] == 0
    # ... so the database is the prepared copy again: intact, and every acknowledged row lost
    assert r["integrity"]["ok"], r["integrity"]["messages"][:3]
    assert r["verdict"] == "lost-writes", r["reason"]
    assert r["writes"]["acked"] > 0 and r["writes"]["lost"] > 0
    pl = r["power_loss"]
    assert pl["last_sync_t"] is None
    assert pl["lost_after_last_sync"] == pl["lost"] == r["writes"]["lost"] and pl["lost_although_synced"] == 0
    assert result.data["cells"][0]["lost"] == 1


def test_undo_log_rollback_modes_on_a_plain_file(tmp_path):
    """The undo machinery alone: pre-images, syncs across two writers, truncation, torn sectors."""

    class Base:  # what the shim hands the undo log: the file's own size and read
        def __init__(self, path: Path):
            self.path = path

        def size(self) -> int:
            return self.path.stat().st_size

        def read(self, amount: int, offset: int) -> bytes:
            with open(self.path, "rb") as f:
                f.seek(offset)
                return f.read(amount)

    def write(path: Path, offset: int, data: bytes) -> None:
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(data)

    for mode in ("all", "random", "torn"):
        folder = tmp_path / mode
        data_dir = folder / "db"
        data_dir.mkdir(parents=True)
        target = data_dir / "f.bin"
        target.write_bytes(b"A" * 4096)
        one = UndoWriter(folder / "power", "one", data_dir)
        two = UndoWriter(folder / "power", "two", data_dir)
        base = Base(target)
        f1, f2 = one.file_id(str(target)), two.file_id(str(target))
        one.before_write(f1, base, 0, 1024)
        write(target, 0, b"B" * 1024)
        began = two.sync_begin(f2, base)  # a sync by the other process covers the first write
        two.sync_end(f2, began)
        one.before_write(f1, base, 0, 1024)  # the same range again: saved anew after that sync
        write(target, 0, b"C" * 1024)
        one.before_write(f1, base, 4096, 2048)  # past the end
        write(target, 4096, b"D" * 2048)
        two.before_truncate(f2, base, 5000)
        os.truncate(target, 5000)
        plans = merge_undo_logs(folder / "power")
        plan = plans[str(target.resolve())]
        assert plan.syncs == 1 and plan.durable_size == 4096 and len(plan.unsynced) == 3
        import random as _random

        summary = roll_back(plans, mode, _random.Random(1), keep_probability=0.5, sector_bytes=512)
        content = target.read_bytes()
        if mode == "all":
            assert content == b"B" * 1024 + b"A" * 3072
            assert summary["f.bin"]["restored_changes"] == 3
        else:
            # every 512-byte unit holds one of the versions it had, never anything else
            for start in range(0, 1024, 512):
                assert content[start:start + 512] in (b"B" * 512, b"C" * 512)
            assert content[1024:4096] == b"A" * 3072
            assert set(content[4096:]) <= {0, ord("D")}


# ----------------------------------------------------------------- throttle
def test_backend_detection_answers_for_this_machine(tmp_path):
    for backend in ("cgroup-v1", "cgroup-v2"):
        why = throttle.probe_backend(backend)
        assert why is None or isinstance(why, str) and why
    assert throttle.resolve_backend("vfs", "apsw", tmp_path) == ("vfs", None)
    device = throttle.block_device_of(tmp_path)
    if device is not None:  # the device the kernel reports for the folder, independently of the code
        st = os.stat(tmp_path)
        assert device == f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    kernel = throttle.kernel_backend_available()
    backend, _ = throttle.resolve_backend("auto", "apsw", tmp_path)
    assert backend == (kernel if kernel and device else "vfs")


def test_unavailable_or_impossible_faults_exit_2_naming_the_key(tmp_path):
    scenario = tmp_path / "s.toml"
    scenario.write_text('name = "s"\nduration = "1s"\n[database]\nschema = "minimal"\npages = 300\n')
    cases = [
        (["faults.throttle.backend=vfs", "faults.throttle.write_bps=1MiB"], "faults.throttle"),
        (["faults.power_loss.enabled=true"], "faults.power_loss"),
        (["faults.fsync.mode=slow", "faults.fsync.delay_ms=5"], "faults.fsync"),
        (["faults.io_delay.write_ms=5"], "faults.io_delay"),
    ]
    unavailable = [b for b in ("cgroup-v1", "cgroup-v2") if throttle.probe_backend(b)]
    for backend in unavailable:
        cases.append(([f"faults.throttle.backend={backend}", "faults.throttle.write_bps=1MiB"],
                      "faults.throttle.backend"))
    for sets, key in cases:
        args = ["run", str(scenario), "--out", str(tmp_path / "never")]
        for item in sets:
            args += ["--set", item]
        out = cli(*args)
        assert out.returncode == 2, (sets, out.stdout, out.stderr)
        message = out.stderr + out.stdout
        assert key in message and "Traceback" not in message, message
    assert not (tmp_path / "never").exists() or not any((tmp_path / "never").rglob("run.json"))


def _kernel_v1_usable(path: Path) -> bool:
    return throttle.probe_backend("cgroup-v1") is None and throttle.block_device_of(path) is not None


def test_stale_cgroups_of_a_dead_controller_are_removed(tmp_path):
    if not _kernel_v1_usable(tmp_path):
        pytest.skip("cgroup v1 blkio throttling is not usable here")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    group = throttle.cgroup_v1_blkio_root() / throttle.GROUP_PARENT / f"run-{dead.pid}-deadbeef"
    group.mkdir(parents=True)
    try:
        removed = throttle.remove_stale_groups("cgroup-v1")
        assert group.name in removed and not group.exists()
    finally:
        if group.exists():
            group.rmdir()


def test_kernel_throttle_holds_the_write_rate(tmp_path, cache_dir):
    if not _kernel_v1_usable(tmp_path):
        pytest.skip("cgroup v1 blkio throttling is not usable here")
    limit = 1 << 20
    # fsync-heavy (FULL, every commit syncs), no checkpoints: all writes are flushed by the workers
    data = io_scenario(driver="stdlib", duration="4s", checkpoint={"mode": "NONE"},
                       workers=[{"role": "writer", "count": 2}],
                       faults={"throttle": {"backend": "cgroup-v1", "write_bps": limit}})
    data["database"]["wal_autocheckpoint"] = 0
    result = run(data, tmp_path / "out", cache_dir=cache_dir)
    r = result.runs[0]
    assert r["verdict"] == "clean", r["reason"]
    t = r["throttle"]
    assert t["backend"] == "cgroup-v1" and t["group_removed"]
    assert 0.8 <= t["kernel_to_limit"] <= 1.2, t
    assert 0.8 <= t["measured_to_limit"] <= 1.2, t
    assert not Path(t["group"]).exists()
    in_results, in_history = fault_records(r, "throttle")
    assert in_results and in_history
    json.dumps(result.data)
