"""Benchmarks: ``walstress bench`` (the suite, ``suite.py``) and the instrumentation's cost (``overhead.py``,
also ``python -m walstress.bench``)."""

from walstress.bench.overhead import main, measure_ledger_api, measure_lock_watch, measure_overhead

__all__ = ["main", "measure_ledger_api", "measure_lock_watch", "measure_overhead"]
