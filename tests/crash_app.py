"""A job app for the multi-process tests: every run is recorded in a separate file.

The runs file (``TASKRUNNER_RUNS_DB``) has one row per handler run: job id,
attempt, pid, and whether the handler got to its end.  Tests compare it with
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
            ctx.sleep(float(args.get("seconds", 0.02)))
            conn.execute("UPDATE runs SET finished = 1 WHERE rowid = ?", (row[0],))
        finally:
            conn.close()
        return int(args["n"]) * 2
