"""A handler's ``Snooze(seconds)`` and ``Cancel(reason)``, end to end, on mock time.

Each test drives a JobManager on the TaskEnvironment's mock clock, over each
store (the store rules themselves are in the contract suite).  The first test
is the README's example.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_fixture import new_schema, require_dsn

from taskrunner.jobs import (
    Cancel,
    JobCancelled,
    JobContext,
    JobManager,
    JobState,
    JobStore,
    MemoryJobStore,
    Snooze,
    SQLiteJobStore,
)
from taskrunner.testing import TaskEnvironment

pytestmark = [pytest.mark.thread_unsafe(reason="each test owns a mock clock, a pool and a store")]

# Outcomes are written by the manager's IO layer, on real threads (PostgreSQL is a
# real server): wait for them in real time, however far mock time has moved.
WAIT = 30.0


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    made: JobStore
    if request.param == "memory":
        made = MemoryJobStore()
    elif request.param == "sqlite":
        made = SQLiteJobStore(tmp_path / "jobs.db")
    else:
        from taskrunner.jobs import PostgresJobStore

        made = PostgresJobStore(require_dsn(), schema=new_schema())
    yield made
    made.close()


def manager(env: TaskEnvironment, store: JobStore) -> JobManager:
    return JobManager(store, env.pool, poll_interval=3600, lease_seconds=3600)


def test_readme_snooze_and_cancel(store: JobStore) -> None:
    with TaskEnvironment() as env:
        m = manager(env, store)
        ready_at = 60.0

        @m.handler("wait_for_report")
        def wait_for_report(ctx: JobContext, args: dict[str, Any]) -> Any:
            if args["kind"] == "obsolete":
                raise Cancel("report no longer wanted")  # CANCELLED, never retried
            if env.now() < ready_at:
                return Snooze(30)  # again in 30 s; the attempt is not counted
            return "report ready"

        m.start()
        job = m.submit("wait_for_report", {"kind": "daily"}, max_attempts=1)
        gone = m.submit("wait_for_report", {"kind": "obsolete"})
        env.fast_forward(59)
        assert not job.future.done()
        assert m.get(job.id).state is JobState.PENDING and m.get(job.id).attempt == 0
        env.fast_forward(2)
        assert job.future.result(WAIT) == "report ready"
        assert m.get(job.id).attempt == 1  # three runs, one counted attempt
        with pytest.raises(JobCancelled, match="report no longer wanted"):
            gone.future.result(WAIT)
        stored = m.get(gone.id)
        assert stored.state is JobState.CANCELLED
        assert stored.last_error == "report no longer wanted"
        stats = m.stats()
        assert stats["snoozed"] == 2 and stats["cancelled"] == 1 and stats["retried"] == 0
        m.shutdown()


def test_snooze_runs_again_at_its_time_and_keeps_the_last_error(store: JobStore) -> None:
    with TaskEnvironment() as env:
        m = manager(env, store)
        runs: list[tuple[float, int]] = []

        @m.handler("poll")
        def poll(ctx: JobContext, args: None) -> Any:
            runs.append((env.now(), ctx.attempt))
            if len(runs) == 1:
                raise RuntimeError("first try fails")
            if len(runs) < 4:
                return Snooze(10)
            return len(runs)

        m.start()
        job = m.submit("poll", max_attempts=2)
        env.fast_forward(100)
        assert job.future.result(WAIT) == 4
        assert [attempt for _, attempt in runs] == [1, 2, 2, 2]
        assert [t - runs[1][0] for t, _ in runs[1:]] == [0.0, 10.0, 20.0]
        done = m.get(job.id)
        assert done.state is JobState.SUCCEEDED and done.attempt == 2
        assert done.last_error == "RuntimeError: first try fails"
        m.shutdown()


def test_snooze_after_a_cancel_request_cancels(store: JobStore) -> None:
    with TaskEnvironment() as env:
        m = manager(env, store)

        @m.handler("slow")
        def slow(ctx: JobContext, args: None) -> Any:
            m.cancel(ctx.job_id)  # requested while it runs
            return Snooze(5)

        m.start()
        job = m.submit("slow")
        env.fast_forward(1)
        with pytest.raises(JobCancelled):
            job.future.result(WAIT)
        assert m.get(job.id).state is JobState.CANCELLED
        m.shutdown()


def test_snooze_and_cancel_check_their_arguments() -> None:
    with pytest.raises(ValueError, match="Snooze seconds"):
        Snooze(-1)
    with pytest.raises(ValueError, match="Snooze seconds"):
        Snooze(float("inf"))
    with pytest.raises(TypeError, match="Snooze seconds"):
        Snooze("10")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Cancel reason"):
        Cancel(42)  # type: ignore[arg-type]
    assert Snooze(2).seconds == 2.0 and isinstance(Snooze(2).seconds, float)
    assert Cancel("why").reason == "why" and isinstance(Cancel(), JobCancelled)
