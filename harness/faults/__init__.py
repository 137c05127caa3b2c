"""Faults: what a scenario varies besides the workload (see base.py).

Importing this package registers every fault section with the scenario
model; each fault module registers itself when imported below.
"""

from harness.faults.base import Fault, FaultPlan, FaultSettings, build_plan, register, setting

__all__ = ["Fault", "FaultPlan", "FaultSettings", "build_plan", "register", "setting"]
