"""Faults: what a scenario varies besides the workload.

Each fault module declares its settings dataclasses (one per scenario
section ``[faults.<section>]``) next to what the fault does; ``registry.py``
lists them, one line each. See ``base.py`` for the controller-side and
worker-side hooks a section may implement.
"""
