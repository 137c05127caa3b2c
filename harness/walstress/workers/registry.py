"""Role name -> the class that plays it (each role in its own module where it is large)."""

from __future__ import annotations

from walstress.workers.roles import Actor, Checkpointer, Opener, Reader, Writer
from walstress.workers.walrace import WalResetRace

ROLE_CLASSES: dict[str, type[Actor]] = {
    "writer": Writer,
    "reader": Reader,
    "checkpointer": Checkpointer,
    "opener": Opener,
    "wal-reset-race": WalResetRace,
}
