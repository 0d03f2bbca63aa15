"""A job app for the multi-process tests: every run is recorded in a separate file.

The runs file (``TASKRUNNER_RUNS_DB``) has one row per handler run: job id,
attempt, pid, and whether the handler got to its end.  A job with
``wait_for_peer`` holds its run until another process has recorded one.  Tests compare it with
the job store to prove that no job was lost and no finished job ran again.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from taskrunner.jobs import JobContext, JobManager


def _connect() -> sqlite3.Connection:
    conn = sqlite3.connect(os.environ["TASKRUNNER_RUNS_DB"], timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS runs (job_id TEXT, attempt INTEGER, pid INTEGER,"
        " finished INTEGER DEFAULT 0)"
    )
    return conn


def _wait_for_peer(conn: sqlite3.Connection, ctx: JobContext) -> None:
    """Hold this run until a run by another process is recorded (or 60 s pass):
    a test that needs two workers to take part makes it so, whatever the load."""
    for _ in range(6000):
        (pids,) = conn.execute("SELECT count(DISTINCT pid) FROM runs").fetchone()
        if pids >= 2:
            return
        ctx.sleep(0.01)


def register(manager: JobManager) -> None:
    conn = _connect()
    conn.close()

    @manager.handler("work")
    def work(ctx: JobContext, args: Any) -> int:
        conn = _connect()
        try:
            row = conn.execute(
                "INSERT INTO runs (job_id, attempt, pid) VALUES (?, ?, ?) RETURNING rowid",
                (ctx.job_id, ctx.attempt, os.getpid()),
            ).fetchone()
            if args.get("wait_for_peer"):
                _wait_for_peer(conn, ctx)
            ctx.sleep(float(args.get("seconds", 0.02)))
            conn.execute("UPDATE runs SET finished = 1 WHERE rowid = ?", (row[0],))
        finally:
            conn.close()
        return int(args["n"]) * 2
