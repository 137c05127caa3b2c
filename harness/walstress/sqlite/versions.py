"""Which SQLite: one apsw wheel per SQLite version, installed once into a cache.

An apsw release ``X.Y.Z.N`` bundles SQLite ``X.Y.Z`` (``N`` counts apsw's own
re-releases for that SQLite). ``ensure_apsw("3.51.2")`` installs the newest
``3.51.2.N`` with ``pip install --target`` into
``<cache>/sqlite/apsw-3.51.2/`` and returns that folder; a worker started
with the folder first on ``sys.path`` loads that SQLite (the worker checks
the version it really loaded, the judge turns a mismatch into an error).

Two processes asking for the same version at once are safe: the first takes
an exclusive ``flock`` on ``apsw-3.51.2.lock``, installs into a temporary
folder beside the final one and renames it into place; the second waits for
the lock and then finds the finished folder. A folder is used only when it
holds a ``walstress-apsw.json`` marker written after a successful import
check, so a half-finished install is never picked up.

``available_versions()`` asks pip (``pip index versions apsw``) and keeps
the answer for a day in ``<cache>/sqlite/apsw-versions.json``.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from walstress.errors import EnvironmentProblem

__all__ = [
    "VERSION_LIST_MAX_AGE_SECONDS",
    "available_versions",
    "apsw_releases",
    "ensure_apsw",
    "installed_version_dir",
    "parse_version",
    "versions_between",
    "versions_cache_dir",
]

VERSION_LIST_MAX_AGE_SECONDS = 86400.0
PIP_TIMEOUT_SECONDS = 300.0
_MARKER = "walstress-apsw.json"
_APSW_RELEASE_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)\.(\d+)$")
_SQLITE_VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


def parse_version(text: str) -> tuple[int, int, int]:
    """``"3.51.2"`` -> ``(3, 51, 2)``; ``ValueError`` for anything else."""
    match = _SQLITE_VERSION_RE.match(str(text).strip())
    if not match:
        raise ValueError(f"{text!r} is not an SQLite version such as 3.51.2")
    return tuple(int(part) for part in match.groups())  # type: ignore[return-value]


def versions_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """``<walstress cache>/sqlite``: one folder per installed SQLite version."""
    if cache_dir is None:
        from walstress.database.template import default_cache_dir

        cache_dir = default_cache_dir()
    return Path(cache_dir) / "sqlite"


def _pip(*args: str, timeout: float = PIP_TIMEOUT_SECONDS) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    env.setdefault("PIP_NO_INPUT", "1")
    try:
        return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True,
                              timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise EnvironmentProblem(f"pip {' '.join(args[:2])} did not finish within {timeout:.0f} s") from None
    except OSError as exc:
        raise EnvironmentProblem(f"cannot run pip: {exc}") from None


def apsw_releases(pip_output: str) -> dict[str, str]:
    """SQLite version -> newest apsw release for it, from ``pip index versions apsw``.

    Only four-part releases (``3.51.2.0``, ``3.46.0.1``) are kept: those are
    the ones built as wheels for a given SQLite.
    """
    line = next((ln for ln in pip_output.splitlines() if ln.strip().lower().startswith("available versions:")), "")
    best: dict[str, tuple[int, str]] = {}
    for item in line.split(":", 1)[-1].split(","):
        item = item.strip()
        match = _APSW_RELEASE_RE.match(item)
        if not match:
            continue
        sqlite_version = ".".join(match.groups()[:3])
        post = int(match.group(4))
        if sqlite_version not in best or post > best[sqlite_version][0]:
            best[sqlite_version] = (post, item)
    return {version: release for version, (_, release) in best.items()}


def _releases(cache_dir: str | Path | None, *, refresh: bool = False) -> dict[str, str]:
    folder = versions_cache_dir(cache_dir)
    cached = folder / "apsw-versions.json"
    if not refresh:
        try:
            data = json.loads(cached.read_text())
            if time.time() - float(data["fetched_at"]) < VERSION_LIST_MAX_AGE_SECONDS and data["releases"]:
                return dict(data["releases"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    proc = _pip("index", "versions", "apsw", timeout=120)
    releases = apsw_releases(proc.stdout)
    if not releases:
        detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EnvironmentProblem(f"cannot list the apsw releases with pip (pip index versions apsw): {detail}")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"fetched_at": time.time(), "releases": releases}, indent=1, sort_keys=True))
    os.replace(tmp, cached)
    return releases


def available_versions(cache_dir: str | Path | None = None, *, refresh: bool = False) -> list[str]:
    """SQLite versions with an apsw release, oldest first (cached for a day)."""
    return sorted(_releases(cache_dir, refresh=refresh), key=parse_version)


def versions_between(low: str, high: str, versions: list[str]) -> list[str]:
    """The versions v with low <= v <= high, oldest first."""
    lo, hi = parse_version(low), parse_version(high)
    if lo > hi:
        lo, hi = hi, lo
    return sorted((v for v in versions if lo <= parse_version(v) <= hi), key=parse_version)


def installed_version_dir(version: str, cache_dir: str | Path | None = None) -> Path | None:
    """The finished install folder of a version, or None."""
    target = versions_cache_dir(cache_dir) / f"apsw-{version}"
    try:
        marker = json.loads((target / _MARKER).read_text())
    except (OSError, ValueError):
        return None
    return target if marker.get("sqlite_version") == version else None


def _list_for_message(versions: list[str]) -> str:
    return ", ".join(versions)


def ensure_apsw(version: str, cache_dir: str | Path | None = None) -> Path:
    """The folder holding apsw built with SQLite ``version``; installed on first use.

    Raises :class:`EnvironmentProblem` (exit code 2) for a version without an
    apsw release, listing the ones that exist, or when the install fails.
    """
    try:
        parse_version(version)
    except ValueError as exc:
        raise EnvironmentProblem(str(exc)) from None
    done = installed_version_dir(version, cache_dir)
    if done is not None:
        return done
    releases = _releases(cache_dir)
    if version not in releases:
        raise EnvironmentProblem(
            f"SQLite {version} has no apsw release to install; available SQLite versions: "
            f"{_list_for_message(sorted(releases, key=parse_version))}")
    folder = versions_cache_dir(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    lock_path = folder / f"apsw-{version}.lock"
    with open(lock_path, "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            done = installed_version_dir(version, cache_dir)
            if done is not None:  # another process finished it while we waited
                return done
            return _install(version, releases[version], folder)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _install(version: str, release: str, folder: Path) -> Path:
    target = folder / f"apsw-{version}"
    staging = Path(tempfile.mkdtemp(prefix=f".apsw-{version}-", dir=folder))
    os.chmod(staging, 0o755)
    try:
        started = time.time()
        proc = _pip("install", "--quiet", "--no-deps", "--only-binary", ":all:", "--target", str(staging),
                    f"apsw=={release}")
        if proc.returncode != 0:
            detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise EnvironmentProblem(f"pip could not install apsw=={release} (SQLite {version}): {detail}")
        loaded = _loaded_version(staging)
        if loaded != version:
            raise EnvironmentProblem(f"apsw=={release} installed but loads SQLite {loaded}, not {version}")
        (staging / _MARKER).write_text(json.dumps({
            "sqlite_version": version, "apsw_release": release, "installed_at": time.time(),
            "install_seconds": round(time.time() - started, 3), "python": sys.version.split()[0],
        }, indent=1))
        if target.exists():  # a broken leftover without a marker
            shutil.rmtree(target)
        os.replace(staging, target)
        return target
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _loaded_version(path: Path) -> str:
    """The SQLite version a fresh interpreter loads with ``path`` first on sys.path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(path)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    proc = subprocess.run([sys.executable, "-c", "import apsw; print(apsw.sqlite_lib_version())"],
                          capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EnvironmentProblem(f"apsw installed in {path} does not import: {detail}")
    return proc.stdout.strip()
