"""The file system as an axis (real FUSE mounts), locking protocols per worker, and I/O errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from walstress import run
from walstress.cli import main
from walstress.storage import unavailable

ROOT = Path(__file__).resolve().parent.parent
NO_FUSE = unavailable("fuse")
needs_fuse = pytest.mark.skipif(NO_FUSE is not None, reason=f"FUSE: {NO_FUSE}")

BASE = {"name": "fs", "seed": 5, "duration": "3s",
        "database": {"schema": "minimal", "pages": 400},
        "checkpoint": {"mode": "TRUNCATE", "every_writes": 50},
        "workers": [{"role": "writer", "count": 2}, {"role": "opener", "count": 1, "pause_ms": 5}]}


def scenario(**database) -> dict:
    return {**BASE, "database": {**BASE["database"], **database}}


def mounts_under(folder: Path) -> list[str]:
    with open("/proc/self/mounts") as handle:
        return [line.split()[1] for line in handle if line.split()[1].startswith(str(folder))]


@needs_fuse
def test_fuse_passthrough_is_clean_and_unmounted(tmp_path, cache_dir):
    result = run(scenario(filesystem="fuse"), tmp_path / "out")
    res = result.runs[0]
    assert res["verdict"] == "clean", res["reason"]
    assert res["writes"]["acked"] > 50
    run_dir = Path(res["run_dir"])
    assert (run_dir / "db" / "state.db").exists()  # the files stay in the run dir, behind the mount
    assert not mounts_under(tmp_path)
    log = (run_dir / "history" / "controller.jsonl").read_text()
    assert '"action":"mount"' in log and '"action":"unmount"' in log and '"still_mounted":false' in log


@needs_fuse
def test_fuse_without_locks_damages_the_database(tmp_path, cache_dir):
    result = run(scenario(filesystem="fuse-nolocks"), tmp_path / "out", overrides=["duration=4s", "repeat=2"])
    assert "corrupt" in result.verdicts or "lost-writes" in result.verdicts, [r["reason"] for r in result.runs]
    assert not mounts_under(tmp_path)


def test_tmpfs_puts_the_database_in_memory_and_brings_it_home(tmp_path, cache_dir):
    result = run(scenario(filesystem="tmpfs"), tmp_path / "out")
    res = result.runs[0]
    assert res["verdict"] == "clean", res["reason"]
    assert (Path(res["run_dir"]) / "db" / "state.db").exists()
    assert not [p for p in Path("/dev/shm").glob("walstress-*") if str(os.getpid()) in p.name]


@needs_fuse
def test_a_killed_controller_leaves_no_mount(tmp_path):
    path = tmp_path / "fs.toml"
    path.write_text('duration = "60s"\n[database]\nschema = "minimal"\npages = 300\nfilesystem = "fuse"\n'
                    '[[workers]]\nrole = "writer"\ncount = 1\n')
    out = tmp_path / "out"
    controller = subprocess.Popen([sys.executable, "-m", "walstress", "run", str(path), "--out", str(out), "--quiet"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not mounts_under(out) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert mounts_under(out), "the mount never came up"
    time.sleep(1.0)
    controller.send_signal(signal.SIGKILL)
    controller.wait()
    deadline = time.monotonic() + 15
    while mounts_under(out) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not mounts_under(out)


def test_a_machine_without_fuse_exits_2_before_anything_starts(tmp_path):
    path = tmp_path / "fs.toml"
    path.write_text('[database]\nfilesystem = "fuse-nolocks"\n')
    env = {**os.environ, "WALSTRESS_FUSE_DEVICE": str(tmp_path / "no-such-device")}
    proc = subprocess.run([sys.executable, "-m", "walstress", "run", str(path), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "database.filesystem" in proc.stderr and "no-such-device" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_locking_protocols_that_do_not_see_each_other_damage_a_rollback_journal(tmp_path, cache_dir):
    data = {**BASE, "duration": "4s", "database": {"schema": "minimal", "pages": 400, "journal_mode": "DELETE"},
            "checkpoint": {"mode": "NONE"},
            "workers": [{"role": "writer", "count": 2}, {"role": "opener", "count": 2, "pause_ms": 5,
                                                         "vfs": "unix-dotfile"}]}
    result = run(data, tmp_path / "out", overrides=["repeat=2"])
    assert "corrupt" in result.verdicts or "lost-writes" in result.verdicts, [r["reason"] for r in result.runs]


def test_io_errors_reach_the_workers_and_damage_nothing(tmp_path, cache_dir):
    pytest.importorskip("apsw")
    data = {**BASE, "sqlite": {"driver": "apsw"}, "database": {"schema": "minimal", "pages": 400,
                                                               "synchronous": "FULL"},
            "faults": {"io_error": {"enabled": True, "calls": "write, sync", "probability": 0.01}}}
    res = run(data, tmp_path / "out").runs[0]
    assert res["verdict"] == "clean", res["reason"]
    assert res["io_errors"]["injected"] > 0 and res["errors"]["ioerr"] > 0
    assert res["vfs"]["io_errors_write"] + res["vfs"].get("io_errors_sync", 0) == res["io_errors"]["injected"]


def test_an_io_error_fault_that_injected_nothing_says_so(tmp_path, cache_dir):
    pytest.importorskip("apsw")
    data = {**BASE, "duration": "1.5s", "sqlite": {"driver": "apsw"},
            "faults": {"io_error": {"enabled": True, "calls": "truncate", "files": "journal", "nth": 1000}}}
    res = run(data, tmp_path / "out").runs[0]
    assert res["verdict"] == "errors" and "no I/O error was injected" in res["reason"]


@pytest.mark.parametrize("sets, words", [
    (["workers.opener.vfs=unix-flock"], "workers.opener.vfs"),
    (["database.shm_guests=opener"], "fuse-split-shm"),
])
def test_bad_storage_settings_are_named(tmp_path, capsys, sets, words):
    args = ["run", str(ROOT / "scenarios" / "smoke.toml"), "--out", str(tmp_path / "out")]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 2
    assert words in capsys.readouterr().err


@needs_fuse
def test_a_power_cut_on_storage_that_lies_about_fsync_loses_synced_commits(tmp_path, cache_dir):
    # synchronous FULL: every acknowledged commit was synced, so whatever is missing after the cut was lost by
    # the storage (it dropped writes it had said were on disk), and the database itself stays sound
    result = run(ROOT / "scenarios" / "lying-fsync.toml", tmp_path / "out",
                 overrides=["duration=2.5s", "faults.power_loss.at=1.5s", "repeat=1",
                            "database.filesystem=fuse-lying-fsync"])
    (res,) = result.runs
    assert res["verdict"] == "lost-writes", res["reason"]
    assert "although acknowledged and synced: sync not honoured" in res["reason"]
    assert res["cause"]["id"] == "sync_not_honoured", res["cause"]
    # nothing was unlinked before the cut: names FUSE dropped from the kernel's cache are no deleted files
    assert res["lock_watch"]["counts"]["deleted_open"] == 0, res["lock_watch"]["deleted_open"]
    assert not mounts_under(tmp_path)
