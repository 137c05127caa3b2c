"""Where a run's database lives: the file system as an axis (``database.filesystem``).

    native             the run dir's own file system (the default)
    tmpfs              a folder in /dev/shm (memory; fsync costs nothing)
    fuse               a FUSE passthrough of the run dir's db/ folder: the control, must stay clean
    fuse-nolocks       FUSE where every POSIX lock is granted and none conflicts (NFS without a
                       lock manager, a misconfigured VM share)
    fuse-lying-fsync   FUSE where fsync returns at once and data reaches the disk later, or never
                       when the power goes (faults.power_loss): a device or share that lies
    fuse-split-shm     two FUSE views of the folder, a "host" and a "guest" (every other worker,
                       or the groups in database.shm_guests), each with its own -shm, as a
                       folder shared between a host and a VM

Workers open the database through the mount (``worker_path``); the files
themselves stay in the run dir's db/ folder (``backing``), where the sampler
reads their sizes and the judge finds them after the run. Every mount is
served by a helper process (``fusefs.py``) that the controller stops at the
end of the run, and that unmounts by itself when the controller dies.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

FILESYSTEMS = ("native", "tmpfs", "fuse", "fuse-nolocks", "fuse-lying-fsync", "fuse-split-shm")
_FUSE_MODE = {"fuse": "fuse", "fuse-nolocks": "nolocks", "fuse-lying-fsync": "lying-fsync",
              "fuse-split-shm": "split-shm"}
MOUNT_TIMEOUT_S = 15.0
TMPFS_ROOT = Path("/dev/shm")
FUSE_DEVICE = os.environ.get("WALSTRESS_FUSE_DEVICE", "/dev/fuse")  # another path: a machine without FUSE


def is_fuse(filesystem: str) -> bool:
    return filesystem.startswith("fuse")


def unavailable(filesystem: str) -> str | None:
    """Why this machine cannot give the file system (None when it can)."""
    if filesystem == "tmpfs":
        if not TMPFS_ROOT.is_dir() or not os.access(TMPFS_ROOT, os.W_OK):
            return f"{TMPFS_ROOT} is not a writable folder"
        return None
    if not is_fuse(filesystem):
        return None
    if not os.path.exists(FUSE_DEVICE):
        return f"{FUSE_DEVICE} does not exist (FUSE is not available in this kernel or container)"
    if not os.access(FUSE_DEVICE, os.R_OK | os.W_OK):
        return f"{FUSE_DEVICE} is not readable and writable for this user"
    if not (shutil.which("fusermount3") or shutil.which("fusermount")):
        return "fusermount is missing (Debian: apt-get install fuse3)"
    try:
        import mfusepy  # noqa: F401
    except ImportError:
        return "the FUSE binding is not installed: pip install 'walstress[fuse]' (mfusepy)"
    except OSError as exc:
        return f"libfuse cannot be loaded ({exc}); Debian: apt-get install fuse3"
    return None


def _mounted(path: Path) -> bool:
    return os.path.ismount(path)


class Storage:
    """One run's database folder(s), mounted for the run and taken down after it."""

    def __init__(self, filesystem: str, layout: Any, history: Any, *, guests: set[str] | None = None):
        self.filesystem = filesystem
        self.layout = layout
        self.history = history
        self.guests = guests or set()
        self.helpers: list[tuple[str, subprocess.Popen, Path, Path]] = []  # view, process, mount, ready file
        self.tmpfs_dir: Path | None = None
        db_dir = layout.db_path.parent
        if filesystem == "tmpfs":
            self.tmpfs_dir = TMPFS_ROOT / f"walstress-{os.getpid()}-{abs(hash(str(layout.run_dir))) % 10**8}"
            self.backing = self.tmpfs_dir
        else:
            self.backing = db_dir

    # ---------------------------------------------------------------- paths
    @property
    def backing_path(self) -> Path:
        """The database file itself (its size is read here; the template is copied here)."""
        return self.backing / self.layout.db_path.name

    def mount_point(self, view: str = "host") -> Path:
        return self.layout.run_dir / ("fs" if view == "host" else "fs-guest")

    def worker_path(self, worker: str = "", group: str = "") -> Path:
        """Where a worker opens the database."""
        if not is_fuse(self.filesystem):
            return self.backing_path
        view = "guest" if self.filesystem == "fuse-split-shm" and (worker in self.guests or group in self.guests) \
            else "host"
        return self.mount_point(view) / self.layout.db_path.name

    # ------------------------------------------------------------ lifecycle
    def prepare(self) -> None:
        self.backing.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        if not is_fuse(self.filesystem):
            return
        views = ["host", "guest"] if self.filesystem == "fuse-split-shm" else ["host"]
        for view in views:
            mount = self.mount_point(view)
            mount.mkdir(parents=True, exist_ok=True)
            ready = self.layout.control_file(f"fuse-{view}.ready")
            log = open(self.layout.log(f"fuse-{view}"), "ab")
            try:
                helper = subprocess.Popen(
                    [sys.executable, "-m", "walstress.storage.fusefs", "--backing", str(self.backing), "--mount",
                     str(mount), "--mode", _FUSE_MODE[self.filesystem], "--view", view, "--ready", str(ready),
                     "--parent", str(os.getpid())],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, close_fds=True)
            finally:
                log.close()
            self.helpers.append((view, helper, mount, ready))
            self.history.record({"type": "storage", "t": time.time(), "action": "mount", "view": view,
                                 "filesystem": self.filesystem, "pid": helper.pid, "mount": str(mount)})
        deadline = time.monotonic() + MOUNT_TIMEOUT_S
        for view, helper, mount, ready in self.helpers:
            while not (ready.exists() and _mounted(mount)):
                if helper.poll() is not None:
                    raise RuntimeError(f"the {self.filesystem} helper exited with code {helper.returncode} before "
                                       f"mounting {mount} (see {self.layout.log(f'fuse-{view}')})")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{mount} was not mounted after {MOUNT_TIMEOUT_S:.0f} s")
                time.sleep(0.02)

    def cut(self) -> dict[str, Any]:
        """A power cut: what the storage had not written through is gone (fuse-lying-fsync)."""
        out: dict[str, Any] = {}
        if self.filesystem != "fuse-lying-fsync":
            return out
        for view, helper, _mount, ready in self.helpers:
            done = Path(f"{ready}.cut")
            done.unlink(missing_ok=True)
            Path(f"{ready}.cut-request").touch()
            deadline = time.monotonic() + 5.0
            while not done.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            out[view] = {"dropped_writes": int(done.read_text() or 0) if done.exists() else None}
        return out

    def stop(self) -> None:
        """Unmount (the helpers write out what they hold, unless a cut dropped it) and bring files home."""
        for view, helper, mount, _ready in self.helpers:
            if helper.poll() is None:
                helper.send_signal(signal.SIGTERM)
            try:
                helper.wait(timeout=20)
            except subprocess.TimeoutExpired:
                helper.kill()
                helper.wait()
            if _mounted(mount):  # the helper could not unmount (busy): detach it lazily
                subprocess.run([shutil.which("fusermount3") or "fusermount", "-u", "-z", str(mount)],
                               capture_output=True, timeout=20)
            self.history.record({"type": "storage", "t": time.time(), "action": "unmount", "view": view,
                                 "exit_code": helper.returncode, "still_mounted": _mounted(mount)})
        if self.tmpfs_dir is not None and self.tmpfs_dir.exists():
            home = self.layout.db_path.parent
            home.mkdir(parents=True, exist_ok=True)
            for path in self.tmpfs_dir.iterdir():
                if not path.name.endswith("-shm"):
                    shutil.copyfile(path, home / path.name)
            shutil.rmtree(self.tmpfs_dir, ignore_errors=True)
