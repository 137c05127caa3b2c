"""The job queue's processes as walstress workers (``role = "python"``).

    producer   an API process: a short-lived connection per request enqueues a
               job, as a web request would (its close may checkpoint)
    consumer   a worker process: claims jobs and completes them on one
               persistent connection, with the application's periodic
               checkpoint (every ``checkpoint_every`` jobs, TRUNCATE)
    janitor    prunes finished jobs now and then on a short-lived connection

Each write runs inside ``ctx.transaction``, which ledgers the rows it wrote
(``txn.wrote("jobs", id)`` reads the row back inside the transaction) and
records every error in the history, so walstress checks that every
acknowledged enqueue, claim, completion and prune is in the final database.
Like an application, the processes carry on after an SQLite error.
"""

from __future__ import annotations

import sqlite3

import jobqueue


def producer(ctx):
    queue = ctx.args.get("queue", "default")
    while not ctx.stop.is_set():
        conn = ctx.connect()  # one connection per request
        try:
            with ctx.transaction(conn) as txn:
                job_id = jobqueue.enqueue(conn, queue, ctx.rng.choice(["resize", "mail", "index"]) + ":" +
                                          "x" * ctx.rng.randint(10, 400))
                txn.wrote("jobs", job_id)
        except sqlite3.DatabaseError:
            pass  # busy, or worse: in the history already; an application logs it and carries on
        finally:
            conn.close()
        ctx.stop.wait(ctx.args.get("pause_s", 0.002))


def consumer(ctx):
    queue = ctx.args.get("queue", "default")
    every = int(ctx.args.get("checkpoint_every", 50))
    conn = ctx.connect()
    me = f"{ctx.worker}/{ctx.thread}"
    done = 0
    while not ctx.stop.is_set():
        try:
            with ctx.transaction(conn, "claim") as txn:
                job = jobqueue.claim(conn, queue, me)
                if job is not None:
                    txn.wrote("jobs", job[0])
            if job is None:
                ctx.stop.wait(0.005)
                continue
            with ctx.transaction(conn, "complete") as txn:
                jobqueue.complete(conn, job[0], f"ok:{len(job[1])}")
                txn.wrote("jobs", job[0])
            done += 1
            if every and done % every == 0:
                with ctx.op("checkpoint"):
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.DatabaseError:
            ctx.stop.wait(0.005)  # in the history already; the job stays running and is not retried here
    conn.close()


def janitor(ctx):
    while not ctx.stop.wait(ctx.args.get("every_s", 1.0)):
        conn = ctx.connect()
        try:
            with ctx.transaction(conn, "prune") as txn:
                ids = [r[0] for r in conn.execute(
                    "SELECT id FROM jobs WHERE state IN ('done', 'failed') ORDER BY id LIMIT 50")]
                for job_id in ids:
                    conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
                    txn.deleted("jobs", job_id)
        except sqlite3.DatabaseError:
            pass
        finally:
            conn.close()
