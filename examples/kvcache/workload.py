"""The cache used by an application's processes, as walstress workers (``role = "python"``,
``connections = "own"``: the cache opens its own connections).

Each thread sets keys of its own key space (``<worker>/<thread>/<n>``,
overwriting some earlier ones) and reads others back. The cache's calls
commit on connections walstress never sees, so the worker acknowledges
each write once the call has returned: ``ctx.acknowledged("cache",
{"namespace": ..., "key": ...}, {"value": ...})``; the ledger check then
finds the row by its composite primary key and compares the value.
"""

from __future__ import annotations

import sqlite3

from kvcache import Cache




def client(ctx):
    namespace = ctx.args.get("namespace", "app")
    cache = Cache(ctx.db_path, namespace, checkpoint_every=int(ctx.args.get("checkpoint_every", 100)))
    prefix = f"{ctx.worker}/{ctx.thread}"
    written: list[str] = []
    n = 0
    while not ctx.stop.is_set():
        if written and ctx.rng.random() < 0.3:
            key = ctx.rng.choice(written)  # overwrite an entry of our own
        else:
            key = f"{prefix}/{n}"
            n += 1
        value = ctx.rng.randbytes(ctx.rng.randint(16, 600))
        try:
            with ctx.op("set"):  # records the error class (busy, corrupt ...) of a failed call
                cache.set(key, value)
        except sqlite3.DatabaseError:
            continue  # an application logs it and carries on
        ctx.acknowledged("cache", {"namespace": namespace, "key": key}, {"value": value})
        if key not in written:
            written.append(key)
        if ctx.rng.random() < 0.5:
            try:
                with ctx.op("get"):
                    cache.get(ctx.rng.choice(written))
            except sqlite3.DatabaseError:
                pass
