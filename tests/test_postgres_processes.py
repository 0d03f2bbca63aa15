"""Four worker processes on one PostgreSQL database, one of them SIGKILLed midway.

10,000 jobs are submitted; four ``python -m taskrunner.cli.worker --dsn ...``
processes run them (handlers record each run in a ``runs`` table, see
``pg_crash_app.py``); once a third of the jobs have run, one worker is killed
with SIGKILL.  Then:

* every job ends SUCCEEDED, and reaches a final state exactly once (a trigger
  logs every transition into a final state);
* each attempt ran at most once, and the attempt that succeeded ran once;
* a job ran more than once only after its lease expired (``interrupted``):
  the killed process's jobs, taken back a lease after the kill, and, on a
  loaded machine, any whose live worker stalled past the 2 s lease (fenced:
  the later attempt's outcome is the one stored);
* all four workers took part.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_fixture import new_database, pg_dsn

from taskrunner.jobs import new_job

pytest.importorskip("psycopg_pool", reason="needs the postgres extra (psycopg 3)")
from pg_crash_app import RUNS_TABLE

__all__ = ["pg_dsn"]  # the fixture, imported for pytest

pytestmark = [
    pytest.mark.thread_unsafe(reason="starts and kills processes"),
    pytest.mark.slow,  # about 15 s on 2 cores
]

ROOT = Path(__file__).resolve().parent.parent
JOBS = 10_000
WORKERS = 4
LEASE = 2.0
DEADLINE = 150.0  # seconds for the whole run; it takes far less


@pytest.fixture
def database(pg_dsn: str) -> str:
    """A fresh database for this test (its own ``runs`` table and job schema)."""
    return new_database(pg_dsn)


def _worker(dsn: str) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        TASKRUNNER_RUNS_DSN=dsn,
        PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT)]),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "taskrunner.cli.worker", "--dsn", dsn, "--app",
         "pg_crash_app:register", "--workers", "4", "--lease", str(LEASE), "--poll", "0.2"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def _stop(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.stderr.read().decode(errors="replace") if proc.stderr else ""


def _dead(procs: list[subprocess.Popen[bytes]]) -> list[str]:
    """The exit codes and error output of the processes that have ended."""
    return [f"exit {p.returncode}: {_stop(p)}" for p in procs if p.poll() is not None]


@pytest.fixture
def workers(database: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        _stop(proc)


def _scalar(conn: Any, sql: str, *params: Any) -> Any:
    return conn.execute(sql, params).fetchone()[0]


def test_four_workers_ten_thousand_jobs_one_sigkilled(
    database: str, workers: list[subprocess.Popen[bytes]]
) -> None:
    import psycopg

    from taskrunner.jobs import PostgresJobStore

    store = PostgresJobStore(database)
    conn = psycopg.connect(database, autocommit=True)
    try:
        conn.execute(RUNS_TABLE)
        # Every transition into a final state, logged by the database itself.
        conn.execute(
            """
            CREATE TABLE finals (job_id text NOT NULL, state text NOT NULL);
            CREATE FUNCTION log_final() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO finals VALUES (NEW.id, NEW.state);
                RETURN NULL;
            END $$;
            CREATE TRIGGER log_final AFTER UPDATE ON taskrunner.jobs FOR EACH ROW
                WHEN (NEW.state IN ('succeeded', 'failed', 'cancelled')
                      AND OLD.state IS DISTINCT FROM NEW.state)
                EXECUTE FUNCTION log_final();
            """
        )
        now = time.time()
        store.insert_many(
            [
                new_job("work", json.dumps({"n": i, "seconds": 0.002}).encode(), now=now)
                for i in range(JOBS)
            ]
        )
        end = time.monotonic() + DEADLINE
        workers.extend(_worker(database) for _ in range(WORKERS))

        # Midway: once a third of the jobs ran, kill one worker that is running some.
        victim = workers[0]
        while True:
            assert time.monotonic() < end, "the workers made no progress"
            assert not _dead(workers), _dead(workers)
            done = _scalar(conn, "SELECT count(*) FROM runs WHERE finished")
            running = _scalar(
                conn,
                "SELECT count(*) FROM taskrunner.jobs WHERE state = 'running' AND owner LIKE %s",
                f"%:{victim.pid}:%",
            )
            if done >= JOBS // 3 and running > 0:
                break
            time.sleep(0.05)  # polling the other processes' progress
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed_at = float(_scalar(conn, "SELECT extract(epoch FROM clock_timestamp())"))

        while store.count_jobs(states=["pending", "running"]) > 0:
            assert time.monotonic() < end, "jobs did not all finish in time"
            assert not _dead(workers[1:]), _dead(workers[1:])
            time.sleep(0.1)  # polling the other processes' progress

        # Every job succeeded, and became final exactly once.
        assert store.count_jobs(states=["succeeded"]) == JOBS
        finals = conn.execute(
            "SELECT count(*), count(DISTINCT job_id), min(state), max(state) FROM finals"
        ).fetchone()
        assert finals == (JOBS, JOBS, "succeeded", "succeeded")

        jobs = {
            row[0]: row[1:]
            for row in conn.execute("SELECT id, attempt, last_error FROM taskrunner.jobs")
        }
        runs: dict[str, list[tuple[int, int, float, bool]]] = {}
        for job_id, attempt, pid, started, finished in conn.execute(
            "SELECT job_id, attempt, pid, extract(epoch FROM started), finished FROM runs"
        ):
            runs.setdefault(job_id, []).append((attempt, pid, float(started), finished))
    finally:
        conn.close()
        store.close()

    victim_pid = victim.pid
    recovered = stalled = 0
    for job_id, (attempt, last_error) in jobs.items():
        mine = runs.get(job_id, [])
        attempts = [run[0] for run in mine]
        assert len(attempts) == len(set(attempts)), f"an attempt of {job_id} ran twice"
        winners = [run for run in mine if run[0] == attempt]
        assert len(winners) == 1 and winners[0][3], f"{job_id}: the last attempt ran once"
        assert max(attempts) == attempt
        if attempt > 1:
            # A job ran again only after its lease expired ("interrupted"): its owner
            # was killed, or, on a loaded machine, a live worker stalled past its 2 s
            # lease and was fenced (the later attempt's outcome is the one stored).
            assert last_error == "interrupted", job_id
            if any(run[1] == victim_pid for run in mine if run[0] < attempt):
                recovered += 1
                assert winners[0][1] != victim_pid
                assert winners[0][2] >= killed_at + LEASE / 2, (job_id, winners, killed_at)
            else:
                stalled += 1
    print(f"re-run after the kill: {recovered}; after a live worker's stall: {stalled}")
    assert recovered >= 1, "the kill interrupted no job"
    pids = {run[1] for rows in runs.values() for run in rows}
    assert victim_pid in pids and len(pids) == WORKERS, pids
    assert not _dead(workers[1:]), _dead(workers[1:])
