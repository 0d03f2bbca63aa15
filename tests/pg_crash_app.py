"""A job app for the PostgreSQL multi-process tests: every handler run is recorded.

The ``runs`` table (:data:`RUNS_TABLE`, created by the test before the workers
start, in the database named by ``TASKRUNNER_RUNS_DSN``) gets one row per
handler run: job id, attempt, pid, when it started and whether it got
to its end, stamped by the database server's clock so that every process's
rows compare.  Tests compare it with the job store to prove that no job was
lost and that only interrupted attempts ran again.
"""

from __future__ import annotations

import os
from typing import Any

from psycopg_pool import ConnectionPool

from taskrunner.jobs import JobContext, JobManager

RUNS_TABLE = """
CREATE TABLE IF NOT EXISTS runs (
    id       bigserial PRIMARY KEY,
    job_id   text NOT NULL,
    attempt  integer NOT NULL,
    pid      integer NOT NULL,
    started  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished boolean NOT NULL DEFAULT false
)
"""


def register(manager: JobManager) -> None:
    # One small pool per worker process; handlers borrow a connection per statement.
    pool = ConnectionPool(
        os.environ["TASKRUNNER_RUNS_DSN"],
        kwargs={"autocommit": True},
        min_size=1,
        max_size=4,
        open=True,
    )

    @manager.handler("work")
    def work(ctx: JobContext, args: Any) -> int:
        with pool.connection() as conn:
            row = conn.execute(
                "INSERT INTO runs (job_id, attempt, pid) VALUES (%s, %s, %s) RETURNING id",
                (ctx.job_id, ctx.attempt, os.getpid()),
            ).fetchone()
        assert row is not None
        seconds = float(args.get("seconds", 0.0))
        if seconds:
            ctx.sleep(seconds)
        with pool.connection() as conn:
            conn.execute("UPDATE runs SET finished = true WHERE id = %s", (row[0],))
        return int(args["n"]) * 2
