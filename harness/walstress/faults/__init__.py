"""Faults: what a scenario varies besides the workload (see base.py).

Importing this package registers every fault section with the scenario
model; each fault module registers itself when imported below.
"""

from walstress.faults.base import Fault, FaultPlan, FaultSettings, build_plan, register, setting
from walstress.faults import lock_hazards  # noqa: F401,E402  (lock_breaker, fork, two_libraries, wal_unlink)
from walstress.faults import process  # noqa: F401,E402  (kill, pause)
from walstress.faults import vfs  # noqa: F401,E402  (io_delay; the VFS shim)
from walstress.faults import throttle  # noqa: F401,E402  (throttle)
from walstress.faults import fsync  # noqa: F401,E402  (fsync)
from walstress.faults import power_loss  # noqa: F401,E402  (power_loss)

__all__ = ["Fault", "FaultPlan", "FaultSettings", "build_plan", "register", "setting"]
