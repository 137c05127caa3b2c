"""The pieces a standalone reproducer is made of (see walstress/repro/__init__.py).

Each file is plain Python (the standard library, and apsw where a mechanism
needs it). A reproducer is ``common.py`` followed by one mechanism's file;
lines marked ``# repro: drop`` are left out, and the ``# repro: param``
lines are replaced by the scenario's values.
"""
