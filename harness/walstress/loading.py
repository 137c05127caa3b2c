"""Find a Python object named ``"package.module:name"`` or ``"path/to/file.py:name"``.

Worker processes use it to load the code that plays a role: walstress's own
roles by module name, roles and functions defined elsewhere by module name
when it imports, else by the file that defines them.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any


class LoadError(Exception):
    """The object cannot be loaded; the message says why, in one line."""


def ensure_on_path(folders: list[str]) -> None:
    """Put folders of user code at the end of sys.path (once each), so that its modules import."""
    for folder in folders:
        if folder not in sys.path:
            sys.path.append(folder)


def split_path(text: str) -> tuple[str, str]:
    """``"a.b:c.d"`` -> (``"a.b"``, ``"c.d"``); LoadError when there is no ``:name``."""
    module, sep, name = text.rpartition(":")
    if not sep or not module or not name:
        raise LoadError(f"{text!r} is not of the form 'package.module:name' or 'file.py:name'")
    return module, name


_LOCK = threading.RLock()  # threads of one worker load the same user module: once, and whole


def _module_from_file(path: Path, module_name: str | None = None) -> ModuleType:
    with _LOCK:
        return _load_file(path, module_name)


def _load_file(path: Path, module_name: str | None) -> ModuleType:
    if not path.is_file():
        raise LoadError(f"{path}: no such file")
    name = module_name or f"walstress_user_{path.stem}_{abs(hash(str(path.resolve()))) % 10**8}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LoadError(f"{path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise LoadError(f"{path}: importing it failed: {type(exc).__name__}: {exc}") from exc
    return module


def load_module(module: str, *, base_dir: str | Path | None = None, fallback_file: str | None = None) -> ModuleType:
    if module.endswith(".py"):
        path = Path(module)
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        return _module_from_file(path)
    try:
        with _LOCK:
            return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if fallback_file and exc.name is not None and module.startswith(exc.name):
            return _module_from_file(Path(fallback_file), module)
        raise LoadError(f"cannot import {module!r}: {exc}") from exc
    except Exception as exc:
        raise LoadError(f"importing {module!r} failed: {type(exc).__name__}: {exc}") from exc


def load_object(text: str, *, base_dir: str | Path | None = None, fallback_file: str | None = None) -> Any:
    """The object ``text`` names; LoadError saying what went wrong."""
    module_name, attr = split_path(text)
    if module_name == "__main__" and fallback_file:  # defined in a script: in a worker, __main__ is the worker
        module = _module_from_file(Path(fallback_file))
    else:
        module = load_module(module_name, base_dir=base_dir, fallback_file=fallback_file)
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise LoadError(f"{module_name} has no {attr!r}") from None
    return target
