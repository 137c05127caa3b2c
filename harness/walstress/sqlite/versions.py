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

``available_versions()`` reads the package indexes pip is configured with
(``pip config list``, ``PIP_INDEX_URL``/``PIP_EXTRA_INDEX_URL``/``PIP_FIND_LINKS``;
pip's default index when none is set): each index's project page for apsw
through the simple repository API (the JSON form when the index offers it,
else the HTML form), and each find-links folder or page. It keeps the
releases with a wheel for this Python and machine, not yanked, and caches
the answer for a day in ``<cache>/sqlite/apsw-versions.json``. When no index
answers, the list shipped with walstress (``apsw-releases.json``, refreshed
by ``nox -s apsw_releases``) is used, and said to be.
"""

from __future__ import annotations

import base64
import fcntl
import functools
import importlib.util
import json
import os
import platform
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from packaging.tags import Tag, parse_tag, sys_tags

from walstress.errors import EnvironmentProblem

__all__ = [
    "VERSION_LIST_MAX_AGE_SECONDS",
    "available_versions",
    "files_at",
    "list_releases",
    "pip_locations",
    "releases_from_files",
    "ensure_apsw",
    "installed_version_dir",
    "parse_version",
    "versions_between",
    "versions_cache_dir",
]

VERSION_LIST_MAX_AGE_SECONDS = 86400.0
PIP_TIMEOUT_SECONDS = 300.0
_MARKER = "walstress-apsw.json"
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


def _have_pip() -> bool:
    return importlib.util.find_spec("pip") is not None


def _pip(*args: str, timeout: float = PIP_TIMEOUT_SECONDS) -> subprocess.CompletedProcess:
    if not _have_pip():
        raise EnvironmentProblem("installing apsw for another SQLite version needs pip, which this Python does not "
                                 "have (an environment made by uv has none): python -m ensurepip, or uv pip install pip")
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


_WHEEL_RE = re.compile(r"^apsw-(\d+\.\d+\.\d+\.\d+)-([^-]+)-([^-]+)-([^-]+)\.whl$", re.IGNORECASE)
_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
INDEX_TIMEOUT_SECONDS = 30.0
SHIPPED_LIST = Path(__file__).with_name("apsw-releases.json")


@dataclass(frozen=True)
class IndexFile:
    """One file a package index or find-links location offers."""
    name: str
    yanked: bool = False


def wheel_fits_here(python_tag: str, abi_tag: str, platform_tag: str) -> bool:
    """Whether a wheel with these tags installs on this interpreter and machine: the tags pip itself checks
    (``packaging``'s list for here, a manylinux wheel's glibc version and a macOS wheel's release included;
    a tag may be a compressed set, ``manylinux_2_17_x86_64.manylinux2014_x86_64``)."""
    return not _tags_here().isdisjoint(parse_tag(f"{python_tag}-{abi_tag}-{platform_tag}"))


@functools.lru_cache(maxsize=1)
def _tags_here() -> frozenset[Tag]:
    return frozenset(sys_tags())


def releases_from_files(files: list[IndexFile], *, fits: Any = wheel_fits_here) -> dict[str, str]:
    """SQLite version -> newest apsw release for it with a wheel for this Python and machine, not yanked.

    Only four-part releases (``3.51.2.0``, ``3.46.0.1``) count: those are built for one SQLite version;
    the last part counts apsw's own re-releases for it.
    """
    best: dict[str, tuple[int, str]] = {}
    for item in files:
        match = _WHEEL_RE.match(item.name)
        if not match or item.yanked or not fits(*match.groups()[1:]):
            continue
        release = match.group(1)
        sqlite_version, post = release.rsplit(".", 1)
        if sqlite_version not in best or int(post) > best[sqlite_version][0]:
            best[sqlite_version] = (int(post), release)
    return {version: release for version, (_, release) in best.items()}


class _Anchors(HTMLParser):
    """The files an HTML index page links to (the simple repository API's HTML form, or a find-links page)."""

    def __init__(self) -> None:
        super().__init__()
        self.files: list[IndexFile] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "a":
            return
        found = dict(attrs)
        href = found.get("href") or ""
        name = urllib.parse.unquote(urllib.parse.urlsplit(href).path.rsplit("/", 1)[-1])
        if name:
            self.files.append(IndexFile(name, "data-yanked" in found))


def files_in_page(body: bytes, content_type: str) -> list[IndexFile]:
    """The files of one project page: the JSON form (``application/vnd.pypi.simple.v1+json``) or HTML."""
    if "json" in content_type:
        data = json.loads(body)
        return [IndexFile(str(f["filename"]), bool(f.get("yanked"))) for f in data.get("files", [])]
    parser = _Anchors()
    parser.feed(body.decode("utf-8", "replace"))
    return parser.files


def _fetch(url: str, *, cafile: str | None) -> tuple[bytes, str]:
    parts = urllib.parse.urlsplit(url)
    headers = {"Accept": _ACCEPT, "User-Agent": "walstress"}
    if parts.username is not None:  # credentials in the URL, as pip takes them: a basic authorization
        token = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
        netloc = parts.netloc.rsplit("@", 1)[1]
        url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    context = ssl.create_default_context(cafile=cafile) if parts.scheme == "https" else None
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=INDEX_TIMEOUT_SECONDS, context=context) as response:
        return response.read(), response.headers.get("Content-Type", "text/html")


def files_at(location: str, *, project: str | None, cafile: str | None = None) -> list[IndexFile]:
    """The files at an index (``project`` given: its page for that project) or a find-links location
    (a folder, or a page that links to files). Raises OSError/ValueError when it cannot be read."""
    parts = urllib.parse.urlsplit(location)
    if parts.scheme in ("", "file"):
        folder = Path(urllib.request.url2pathname(parts.path) if parts.scheme else location)
        if project is not None:
            folder = folder / project
            if not folder.exists():
                return []  # the index has no such project
        if folder.is_dir():
            page = folder / "index.html"
            listed = files_in_page(page.read_bytes(), "text/html") if page.is_file() else []
            return listed + [IndexFile(p.name) for p in folder.iterdir() if p.is_file()]
        return files_in_page(folder.read_bytes(), "application/json" if folder.suffix == ".json" else "text/html")
    url = location.rstrip("/") + f"/{project}/" if project is not None else location
    try:
        body, content_type = _fetch(url, cafile=cafile)
    except urllib.error.HTTPError as exc:
        if exc.code == 404 and project is not None:
            return []  # the index has no such project
        raise
    return files_in_page(body, content_type)


@dataclass
class PipLocations:
    """Where pip looks for packages, by its configuration."""
    indexes: list[str]
    find_links: list[str]
    cafile: str | None = None


def _config_values(text: str) -> dict[str, dict[str, str]]:
    """``pip config list`` output (``section.name='value'``) -> name -> section -> value."""
    values: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        section, _, name = key.strip().rpartition(".")
        values.setdefault(name, {})[section] = value
    return values


def pip_locations(config_list: str, default_index: str | None) -> PipLocations:
    """The indexes and find-links of pip's configuration (environment first, then the ``install`` section,
    then ``global``), from the text of ``pip config list``; ``default_index`` when no index-url is set."""
    values = _config_values(config_list)

    def pick(name: str) -> str | None:
        found = values.get(name, {})
        return next((found[s] for s in (":env:", "install", "global") if s in found), None)

    no_index = (pick("no-index") or "").lower() in ("1", "true", "yes", "on")
    main = pick("index-url") or default_index
    indexes = [] if no_index else [u for u in [main, *(pick("extra-index-url") or "").split()] if u]
    return PipLocations(indexes, (pick("find-links") or "").split(), pick("cert"))


def pip_config_text() -> str:
    """``pip config list``; without pip, the ``PIP_*`` variables in that form (the indexes a later pip would use)."""
    if _have_pip():
        return _pip("config", "list", timeout=60).stdout
    names = ("index-url", "extra-index-url", "find-links", "no-index", "cert")
    return "".join(f":env:.{name}='{os.environ[key]}'\n" for name in names
                   if (key := "PIP_" + name.upper().replace("-", "_")) in os.environ)


def _default_index() -> str | None:
    """pip's own default index (pip knows it; walstress does not spell it)."""
    proc = subprocess.run([sys.executable, "-c", "from pip._internal.models.index import PyPI; "
                           "print(PyPI.simple_url)"], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def list_releases(locations: PipLocations) -> tuple[dict[str, str], list[str], list[str]]:
    """(SQLite version -> apsw release, the locations that answered, one line per location that did not)."""
    files: list[IndexFile] = []
    answered, failed = [], []
    for location, project in [(u, "apsw") for u in locations.indexes] + [(u, None) for u in locations.find_links]:
        try:
            files += files_at(location, project=project, cafile=locations.cafile)
            answered.append(location)
        except (OSError, ValueError, urllib.error.URLError) as exc:
            failed.append(f"{location}: {getattr(exc, 'reason', None) or exc}")
    return releases_from_files(files), answered, failed


def pip_releases() -> tuple[dict[str, str], list[str], list[str]]:
    """``list_releases`` of the locations pip is configured with, now."""
    return list_releases(pip_locations(pip_config_text(), _default_index()))


def shipped_releases() -> dict[str, str]:
    """The release list shipped with walstress (refreshed by ``nox -s apsw_releases``)."""
    return dict(json.loads(SHIPPED_LIST.read_text())["releases"])


def _made_here() -> dict[str, str]:
    """The interpreter and machine a release list is made for (the wheels it counts are theirs)."""
    return {"python": f"cp{sys.version_info.major}{sys.version_info.minor}", "machine": platform.machine()}


def write_shipped(releases: dict[str, str], path: Path = SHIPPED_LIST) -> None:
    ordered = {v: releases[v] for v in sorted(releases, key=parse_version)}
    path.write_text(json.dumps({"refreshed": time.strftime("%Y-%m-%d"), **_made_here(), "releases": ordered},
                               indent=1) + "\n")


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
    releases, answered, failed = pip_releases()
    if not releases:
        try:
            shipped = json.loads(SHIPPED_LIST.read_text())
            releases = dict(shipped["releases"])
        except (OSError, ValueError, KeyError) as exc:
            raise EnvironmentProblem(f"no package index listed apsw ({'; '.join(failed) or 'none configured'}) "
                                     f"and the shipped list cannot be read: {exc}") from None
        made_for = {key: shipped.get(key) for key in _made_here()}
        elsewhere = "" if made_for == _made_here() else \
            f" (made for {made_for['python']} on {made_for['machine']}: a version in it may have no wheel here)"
        print(f"walstress: no package index listed apsw ({'; '.join(failed) or 'none configured'}); using the "
              f"list shipped with walstress{elsewhere}", file=sys.stderr)
        return releases  # not cached: the next call asks the indexes again
    folder.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"fetched_at": time.time(), "releases": releases,
                              "source": {"indexes": answered, "failed": failed}}, indent=1,
                              sort_keys=True))
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


def main(argv: list[str] | None = None) -> int:
    """``python -m walstress.sqlite.versions``: the SQLite versions apsw has wheels for, read from pip's
    indexes now (``--write-shipped``: and saved as the list shipped with walstress)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m walstress.sqlite.versions", allow_abbrev=False,
                                     description=main.__doc__)
    parser.add_argument("--write-shipped", action="store_true", help=f"write the list to {SHIPPED_LIST.name}")
    parser.add_argument("--json", action="store_true", help="print SQLite version -> apsw release as JSON")
    args = parser.parse_args(argv)
    releases, answered, failed = pip_releases()
    for line in failed:
        print(f"walstress: not read: {line}", file=sys.stderr)
    print(f"walstress: read {', '.join(answered) or 'nothing'}", file=sys.stderr)
    if not releases:
        print("walstress: no package index listed an apsw wheel for this Python and machine", file=sys.stderr)
        return 1
    if args.write_shipped:
        write_shipped(releases)
        print(f"walstress: {len(releases)} SQLite versions from {len(answered)} location(s) written to "
              f"{SHIPPED_LIST}", file=sys.stderr)
    ordered = sorted(releases, key=parse_version)
    print(json.dumps({v: releases[v] for v in ordered}, indent=1) if args.json else " ".join(ordered))
    return 0


if __name__ == "__main__":
    sys.exit(main())
