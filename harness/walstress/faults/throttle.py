"""I/O throttling of the workers: bytes/s and ops/s limits.

    [faults.throttle]
    backend = "auto"          # "auto" | "cgroup-v1" | "cgroup-v2" | "vfs"
    write_bps = "2MiB"        # 0: no limit
    write_iops = 0
    read_bps = 0
    read_iops = 0

Backends:

- ``cgroup-v1``: the blkio controller's ``blkio.throttle.{write,read}_{bps,
  iops}_device`` for the block device of the run dir. Each worker moves
  itself into ``<blkio mount>/walstress/run-<controller pid>-<id>`` before
  it reports ready; the controller moves the workers that are still alive
  back to the root group at the end and removes the group. Groups left by a
  controller that died are removed at the next start (their controller pid
  is gone).
- ``cgroup-v2``: ``io.max`` in a group under the cgroup2 mount, where the
  ``io`` controller is available there (not on hybrid systems whose io
  controller is bound to v1).
- ``vfs``: the VFS shim (apsw driver) makes every read and write wait its
  turn in a queue shared by all workers (see vfs.py).
- ``auto``: the kernel where this process may use it (root, a writable
  hierarchy, a real block device under the run dir), else ``vfs``.

The kernel throttles only I/O that reaches the block layer from the
throttled task: buffered writes are throttled when a sync flushes them
(``synchronous = FULL`` commits fsync every time), not when SQLite writes
them into the page cache. Dirty pages that the kernel's own threads write
back (the flusher, or the ext4 journal forcing out data) escape the limit:
measured on ext4 with checkpoints copying pages into the db file, the
workers' ``write_bytes`` reached 2x the limit while the group's own counter
stayed at 1.02x; with WAL appends and fsyncs only, both were within 10 %.
The VFS backend throttles the calls SQLite makes, synced or not.

At the end the controller records one ``throttle`` fault with the backend
that ran, the limits, and the write rate actually reached: the sum of the
workers' ``write_bytes`` (psutil, bytes the processes sent to storage) over
the throttled window, and for cgroup-v1 the group's own
``blkio.throttle.io_service_bytes``.
"""

from __future__ import annotations

import errno
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from walstress.checks.findings import Finding, RunEvidence
from walstress.faults.base import Fault, FaultSettings, RunControl, setting
from walstress.faults.vfs import SharedThrottle, ensure_registered, install, needs_apsw
from walstress.runspec import WorkerSpec

BACKENDS = ("auto", "cgroup-v1", "cgroup-v2", "vfs")
GROUP_PARENT = "walstress"
THROTTLE_QUEUE = "throttle.queue"  # control file of the vfs backend


# -------------------------------------------------------------- discovery
def _mounts() -> list[tuple[str, str, list[str]]]:
    """(mountpoint, fstype, options) of every mount."""
    out = []
    try:
        with open("/proc/self/mounts") as handle:
            for line in handle:
                parts = line.split()
                if len(parts) >= 4:
                    out.append((parts[1].replace("\\040", " "), parts[2], parts[3].split(",")))
    except OSError:
        pass
    return out


def cgroup_v1_blkio_root() -> Path | None:
    for mountpoint, fstype, options in _mounts():
        if fstype == "cgroup" and "blkio" in options:
            return Path(mountpoint)
    return None


def cgroup_v2_root() -> Path | None:
    for mountpoint, fstype, _ in _mounts():
        if fstype == "cgroup2":
            return Path(mountpoint)
    return None


def block_device_of(path: str | Path) -> str | None:
    """"MAJOR:MINOR" of the whole disk holding path, or None (tmpfs, overlay, ...)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    dev = os.stat(path).st_dev
    major, minor = os.major(dev), os.minor(dev)
    sys_dir = Path(f"/sys/dev/block/{major}:{minor}")
    if not sys_dir.exists():
        return None  # not a block device (tmpfs, overlayfs, a network filesystem)
    if (sys_dir / "partition").exists():
        try:
            return (sys_dir.resolve().parent / "dev").read_text().strip()
        except OSError:
            return None
    return f"{major}:{minor}"


def probe_backend(backend: str) -> str | None:
    """None when the backend can work on this machine, else why not (for kernel backends)."""
    if backend == "cgroup-v1":
        root = cgroup_v1_blkio_root()
        if root is None:
            return "no cgroup v1 blkio hierarchy is mounted"
        if not (root / "blkio.throttle.write_bps_device").exists():
            return f"{root} has no blkio.throttle files (kernel without CONFIG_BLK_DEV_THROTTLING)"
        if not os.access(root, os.W_OK):
            return f"{root} is not writable by this user (throttling with cgroups needs root)"
        return None
    if backend == "cgroup-v2":
        root = cgroup_v2_root()
        if root is None:
            return "no cgroup2 filesystem is mounted"
        try:
            controllers = (root / "cgroup.controllers").read_text().split()
        except OSError as exc:
            return f"cannot read {root}/cgroup.controllers: {exc}"
        if "io" not in controllers:
            return f"the io controller is not available in {root} (bound to cgroup v1 or disabled)"
        if not os.access(root, os.W_OK):
            return f"{root} is not writable by this user (throttling with cgroups needs root)"
        return None
    return None


def kernel_backend_available() -> str | None:
    """The kernel backend auto would use, or None."""
    for backend in ("cgroup-v2", "cgroup-v1"):
        if probe_backend(backend) is None:
            return backend
    return None


def resolve_backend(requested: str, driver: str, run_dir: str | Path) -> tuple[str, str | None]:
    """(backend, device): the same answer in the controller and in every worker of a run."""
    if requested == "vfs":
        return "vfs", None
    device = block_device_of(run_dir)
    if requested in ("cgroup-v1", "cgroup-v2"):
        why = probe_backend(requested)
        if why:
            raise RuntimeError(f"faults.throttle.backend = {requested!r}: {why}")
        if device is None:
            raise RuntimeError(f"faults.throttle.backend = {requested!r}: the run dir {run_dir} is not on a block device")
        return requested, device
    kernel = kernel_backend_available()
    if kernel is not None and device is not None:
        return kernel, device
    if driver != "apsw":
        raise RuntimeError('faults.throttle.backend = "auto": the kernel backends are not usable here '
                           f"({probe_backend('cgroup-v1') or 'the run dir is not on a block device'}) and the vfs backend "
                           'needs sqlite.driver = "apsw"')
    return "vfs", None


def group_path(backend: str, controller_pid: int, db_path: str) -> Path:
    root = cgroup_v1_blkio_root() if backend == "cgroup-v1" else cgroup_v2_root()
    assert root is not None
    tag = zlib.crc32(str(db_path).encode()) & 0xFFFFFFFF
    return root / GROUP_PARENT / f"run-{controller_pid}-{tag:08x}"


def _write(path: Path, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def create_group(backend: str, group: Path, device: str, settings: "ThrottleSettings") -> None:
    """Create the run's group with its limits (idempotent: every worker may call it)."""
    if backend == "cgroup-v2":
        root = group.parent.parent
        _enable_io(root)
        group.parent.mkdir(exist_ok=True)
        _enable_io(group.parent)
        group.mkdir(exist_ok=True)
        parts = [device]
        for key, value in (("wbps", settings.write_bps), ("wiops", settings.write_iops),
                           ("rbps", settings.read_bps), ("riops", settings.read_iops)):
            parts.append(f"{key}={value if value else 'max'}")
        _write(group / "io.max", " ".join(parts) + "\n")
        return
    group.mkdir(parents=True, exist_ok=True)
    for name, value in (("write_bps", settings.write_bps), ("write_iops", settings.write_iops),
                        ("read_bps", settings.read_bps), ("read_iops", settings.read_iops)):
        if value:
            _write(group / f"blkio.throttle.{name}_device", f"{device} {int(value)}\n")


def _enable_io(folder: Path) -> None:
    control = folder / "cgroup.subtree_control"
    try:
        if "io" not in control.read_text().split():
            _write(control, "+io\n")
    except OSError:
        pass


def join_group(group: Path, pid: int) -> None:
    _write(group / "cgroup.procs", f"{pid}\n")


def remove_group(group: Path) -> list[int]:
    """Move what is left in the group to the hierarchy's root, then remove it; the pids moved."""
    root = group.parent.parent
    moved = []
    try:
        pids = [int(x) for x in (group / "cgroup.procs").read_text().split()]
    except OSError:
        pids = []
    for pid in pids:
        try:
            _write(root / "cgroup.procs", f"{pid}\n")
            moved.append(pid)
        except OSError:
            pass
    for _ in range(50):
        try:
            group.rmdir()
            break
        except FileNotFoundError:
            break
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                break
            time.sleep(0.02)
    return moved


def remove_stale_groups(backend: str) -> list[str]:
    """Remove groups whose controller is gone (a controller that crashed or was killed)."""
    root = cgroup_v1_blkio_root() if backend == "cgroup-v1" else cgroup_v2_root()
    removed: list[str] = []
    if root is None or not (root / GROUP_PARENT).is_dir():
        return removed
    for group in (root / GROUP_PARENT).iterdir():
        if not group.is_dir() or not group.name.startswith("run-"):
            continue
        try:
            pid = int(group.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _alive(pid):
            remove_group(group)
            if not group.exists():
                removed.append(group.name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _io_service_write_bytes(group: Path, device: str) -> int | None:
    try:
        if (group / "blkio.throttle.io_service_bytes").exists():
            for line in (group / "blkio.throttle.io_service_bytes").read_text().splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[0] == device and parts[1] == "Write":
                    return int(parts[2])
            return 0
        if (group / "io.stat").exists():
            for line in (group / "io.stat").read_text().splitlines():
                parts = line.split()
                if parts and parts[0] == device:
                    fields = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
                    return int(fields.get("wbytes", 0))
            return 0
    except (OSError, ValueError):
        return None
    return None


# ------------------------------------------------------------------ section
@dataclass
class ThrottleSettings(FaultSettings):
    section: ClassVar[str] = "throttle"
    backend: str = setting("auto", choices=BACKENDS, doc="auto: the kernel (cgroups) where possible, else the VFS shim")
    write_bps: int = setting(0, min=0, kind="bytes", doc="write bytes per second for all workers together (0: no limit)")
    write_iops: int = setting(0, min=0, max=10_000_000, doc="write operations per second (0: no limit)")
    read_bps: int = setting(0, min=0, kind="bytes", doc="read bytes per second (0: no limit)")
    read_iops: int = setting(0, min=0, max=10_000_000, doc="read operations per second (0: no limit)")

    @property
    def active(self) -> bool:
        return bool(self.write_bps or self.write_iops or self.read_bps or self.read_iops)

    def validate(self, scenario: Any) -> None:
        if not self.active:
            return
        if self.backend == "vfs":
            needs_apsw("throttle", scenario, 'backend = "vfs"')
        elif self.backend in ("cgroup-v1", "cgroup-v2"):
            why = probe_backend(self.backend)
            if why:
                raise ValueError(f'faults.throttle.backend: "{self.backend}" is not available here: {why}')
        elif kernel_backend_available() is None and scenario.sqlite.driver != "apsw":
            raise ValueError('faults.throttle.backend: "auto" found no usable kernel backend '
                             f"({probe_backend('cgroup-v1')}; {probe_backend('cgroup-v2')}) and the vfs "
                             'backend needs sqlite.driver = "apsw"')

    def build(self, scenario: Any, seed: int) -> Fault | None:
        return ThrottleFault(self, scenario.sqlite.driver) if self.active else None

    def acts_on_connections(self, scenario: Any) -> bool:
        if not self.active:
            return False
        return self.backend == "vfs" or (self.backend == "auto" and kernel_backend_available() is None)

    # --------------------------------------------------------- worker side
    def _resolve(self, spec: WorkerSpec) -> tuple[str, str | None]:
        return resolve_backend(self.backend, spec.connection.driver, spec.layout.run_dir)

    def install_in_worker(self, spec: WorkerSpec, history: Any, stop: Any) -> Any:
        if not self.active:
            return None
        backend, device = self._resolve(spec)
        if backend == "vfs":
            state, closer = install(spec, history, "throttle")
            state.throttle = SharedThrottle(spec.layout.control_file(THROTTLE_QUEUE),
                                            write_bps=self.write_bps, write_iops=self.write_iops,
                                            read_bps=self.read_bps, read_iops=self.read_iops)
            return closer
        group = group_path(backend, spec.parent_pid, str(spec.layout.db_path))
        create_group(backend, group, device or "", self)
        join_group(group, os.getpid())
        history.record({"type": "note", "worker": spec.name, "t": time.time(),
                        "msg": f"throttle: joined {group} ({backend}, device {device})"})
        return None

    def open_connection_hook(self, spec: WorkerSpec) -> str | None:
        if not self.active:
            return None
        backend, _ = self._resolve(spec)
        return ensure_registered() if backend == "vfs" else None


class ThrottleFault(Fault):
    name = "throttle"

    def __init__(self, settings: ThrottleSettings, driver: str):
        self.settings = settings
        self.driver = driver
        self.backend: str | None = None
        self.device: str | None = None
        self.group: Path | None = None
        self.t_start = 0.0
        self.first: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self.kernel_bytes_start: int | None = None
        self.stale_removed: list[str] = []
        self._next_poll = 0.0
        self.stopped = False

    def start(self, run: RunControl) -> None:
        self.backend, self.device = resolve_backend(self.settings.backend, self.driver, run.layout.run_dir)
        if self.backend != "vfs":
            self.stale_removed = remove_stale_groups(self.backend)
            self.group = group_path(self.backend, os.getpid(), str(run.layout.db_path))
            self.kernel_bytes_start = _io_service_write_bytes(self.group, self.device or "")
        self.t_start = time.time()
        self._poll(run, first=True)

    def _poll(self, run: RunControl, first: bool = False) -> None:
        import psutil

        for name, pid in run.live_pids().items():
            try:
                written = psutil.Process(pid).io_counters().write_bytes
            except (psutil.Error, AttributeError):
                continue
            if first or pid not in self.first:
                self.first.setdefault(pid, written)
            self.last[pid] = written

    def tick(self, run: RunControl) -> None:
        now = time.monotonic()
        if now >= self._next_poll and not self.stopped:
            self._next_poll = now + 0.25
            self._poll(run)

    def stop(self, run: RunControl) -> None:
        if self.stopped or self.backend is None:
            return
        self.stopped = True
        self._poll(run)
        t_end = time.time()
        seconds = max(1e-6, t_end - self.t_start)
        written = sum(self.last[pid] - self.first[pid] for pid in self.last)
        s = self.settings
        detail: dict[str, Any] = {
            "backend": self.backend, "requested_backend": s.backend, "device": self.device,
            "write_bps_limit": s.write_bps, "write_iops_limit": s.write_iops,
            "read_bps_limit": s.read_bps, "read_iops_limit": s.read_iops,
            "seconds": round(seconds, 3), "workers_write_bytes": written,
            "measured_write_bps": round(written / seconds, 1),
        }
        if s.write_bps:
            detail["measured_to_limit"] = round(written / seconds / s.write_bps, 4)
        if self.group is not None:
            end_bytes = _io_service_write_bytes(self.group, self.device or "")
            if end_bytes is not None:
                detail["kernel_write_bytes"] = end_bytes - (self.kernel_bytes_start or 0)
                detail["kernel_write_bps"] = round(detail["kernel_write_bytes"] / seconds, 1)
                if s.write_bps:
                    detail["kernel_to_limit"] = round(detail["kernel_write_bps"] / s.write_bps, 4)
            detail["group"] = str(self.group)
            detail["released_pids"] = remove_group(self.group)
            detail["group_removed"] = not self.group.exists()
            if self.stale_removed:
                detail["stale_groups_removed"] = self.stale_removed
        self.record(run, t=self.t_start, t_end=t_end, target="all workers", **detail)


def judge_throttle(run: RunEvidence) -> list[Finding]:
    """Judge hook: the rate the throttle reached (run.json ``throttle``); no finding of its own."""
    records = [r for r in run.records if r.get("type") == "fault" and r.get("name") == "throttle"]
    if not records:
        return []
    info = dict(records[-1].get("detail") or {})
    vfs = run.extras.get("vfs")
    seconds = info.get("seconds")
    if info.get("backend") == "vfs" and vfs and seconds:
        # what SQLite wrote through the shim: the quantity the vfs backend limits
        info["shim_write_bps"] = round(vfs.get("write_bytes", 0) / seconds, 1)
        limit = info.get("write_bps_limit")
        if limit:
            info["shim_to_limit"] = round(info["shim_write_bps"] / limit, 4)
    run.extras["throttle"] = info
    return []
