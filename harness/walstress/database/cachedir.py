"""Where walstress keeps what it builds once: templates, SQLite wheels, the corpus's pools.

A module of its own, without SQLite: a worker process (apsw) finds the
corpus's cached pools here and must not load the stdlib ``sqlite3`` with
``template``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_cache_dir"]


def default_cache_dir() -> Path:
    """``$WALSTRESS_CACHE_DIR``, else ``$XDG_CACHE_HOME/walstress``, else
    ``~/.cache/walstress``. Templates live in its ``templates/`` folder."""
    explicit = os.environ.get("WALSTRESS_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "walstress"
