"""The JobManager at run time (issue 19): unregister a job type, replace the
retry policy, and a submit that gives up when its store write cannot land
in time (storing nothing)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskrunner import ThreadPool
from taskrunner.jobs import (
    JobContext,
    JobManager,
    JobState,
    MemoryJobStore,
    RetryPolicy,
    SQLiteJobStore,
    StoreError,
    SubmitTimeoutError,
    UnknownJobTypeError,
)

WAIT = 10.0
FAST = RetryPolicy(max_attempts=3, initial_delay=0.001, max_delay=0.001, jitter=0)
SLOW = RetryPolicy(max_attempts=3, initial_delay=3600, max_delay=3600, jitter=0)

pytestmark = pytest.mark.thread_unsafe(
    reason="the manager/store/pool fixtures are shared by pytest-run-parallel's threads"
)


@pytest.fixture
def pool() -> Iterator[ThreadPool]:
    p = ThreadPool(2, name="jobrt")
    yield p
    p.shutdown(timeout=WAIT)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    s = MemoryJobStore() if request.param == "memory" else SQLiteJobStore(tmp_path / "jobs.db")
    yield s
    s.close()


@pytest.fixture
def manager(store: Any, pool: ThreadPool) -> Iterator[JobManager]:
    m = JobManager(store, pool, retry_policy=FAST, poll_interval=0.05, lease_seconds=5)
    yield m
    m.shutdown(timeout=WAIT)


# ---- unregister -------------------------------------------------------------------------


def test_unregister_refuses_later_submits_and_stops_claims(manager: JobManager) -> None:
    manager.register("old", lambda ctx, args: "old ran")
    manager.register("probe", lambda ctx, args: "probe ran")
    waiting = manager.submit("old")  # stored before the type goes away
    manager.unregister("old")
    assert manager.job_types == ["probe"]
    with pytest.raises(UnknownJobTypeError):
        manager.submit("old")
    manager.start()
    # A later job of a registered type runs: the claims happened, and left "old" alone.
    assert manager.submit("probe").result(WAIT) == "probe ran"
    assert manager.get(waiting.id).state is JobState.PENDING
    # Registering it again brings the stored job back to life.
    manager.register("old", lambda ctx, args: "old ran")
    assert waiting.result(WAIT) == "old ran"


def test_unregister_an_unknown_type_raises(manager: JobManager) -> None:
    with pytest.raises(UnknownJobTypeError):
        manager.unregister("never")
    with pytest.raises(TypeError):
        manager.unregister("")


def test_unregister_lets_a_running_attempt_finish(manager: JobManager) -> None:
    started = threading.Event()
    gate = threading.Event()

    def slow(ctx: JobContext, args: None) -> str:
        started.set()
        gate.wait(WAIT)
        return "finished"

    manager.register("slow", slow)
    manager.start()
    handle = manager.submit("slow")
    assert started.wait(WAIT)
    manager.unregister("slow")
    gate.set()
    assert handle.result(WAIT) == "finished"


# ---- retry_policy -------------------------------------------------------------------------


def test_retry_policy_is_readable_and_checked(manager: JobManager) -> None:
    assert manager.retry_policy is FAST
    manager.retry_policy = SLOW
    assert manager.retry_policy is SLOW
    with pytest.raises(TypeError, match="retry_policy must be a RetryPolicy"):
        manager.retry_policy = None  # type: ignore[assignment]
    assert manager.retry_policy is SLOW


def test_a_new_retry_policy_applies_to_attempts_that_fail_afterwards(
    store: Any, pool: ThreadPool
) -> None:
    m = JobManager(store, pool, retry_policy=SLOW, poll_interval=0.05, lease_seconds=5)
    started = threading.Event()
    gate = threading.Event()
    attempts: list[int] = []

    def flaky(ctx: JobContext, args: None) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            started.set()
            gate.wait(WAIT)
            raise RuntimeError("first attempt fails")
        return "second attempt"

    m.register("flaky", flaky)
    m.start()
    try:
        handle = m.submit("flaky")
        assert started.wait(WAIT)
        m.retry_policy = FAST  # SLOW would retry in an hour
        gate.set()
        assert handle.result(WAIT) == "second attempt"
        assert attempts == [1, 2]
    finally:
        m.shutdown(timeout=WAIT)


# ---- submit(store_timeout=...) ------------------------------------------------------------


def test_submit_gives_up_while_the_write_retries_and_stores_nothing(pool: ThreadPool) -> None:
    broken = threading.Event()
    broken.set()

    def injector(op: str) -> None:
        if broken.is_set() and op == "insert":
            raise OSError("disk unavailable (injected)")

    store = MemoryJobStore(fault_injector=injector)
    m = JobManager(
        store,
        pool,
        store_retry=RetryPolicy(max_attempts=1000, initial_delay=0.02, max_delay=0.02, jitter=0),
    )
    m.register("t", lambda ctx, args: "ran")
    try:
        with pytest.raises(SubmitTimeoutError, match="nothing was stored"):
            m.submit("t", job_id="late", store_timeout=0.2)
        broken.clear()  # the store heals: the retry that follows must write nothing
        assert m.submit("t", job_id="next").id == "next"
        assert [j.id for j in store.list_jobs(limit=10).jobs] == ["next"]
        assert m.stats()["submitted"] == 1
    finally:
        m.shutdown(timeout=WAIT)
        store.close()


def test_submit_with_a_store_timeout_on_a_healthy_store(manager: JobManager) -> None:
    manager.register("t", lambda ctx, args: 7)
    manager.start()
    assert manager.submit("t", store_timeout=WAIT).result(WAIT) == 7


def test_submit_store_timeout_bad_values_store_nothing(manager: JobManager) -> None:
    manager.register("t", lambda ctx, args: None)
    for bad in (0, -1.0, float("nan"), "1", True):
        with pytest.raises(ValueError, match="store_timeout"):
            manager.submit("t", store_timeout=bad)  # type: ignore[arg-type]
    assert manager.list(limit=10).jobs == ()


def test_exhausted_store_retries_still_raise_store_error_before_the_timeout(
    pool: ThreadPool,
) -> None:
    def injector(op: str) -> None:
        if op == "insert":
            raise OSError("disk gone (injected)")

    store = MemoryJobStore(fault_injector=injector)
    m = JobManager(store, pool, store_retry=RetryPolicy(max_attempts=2, initial_delay=0.001))
    m.register("t", lambda ctx, args: None)
    try:
        with pytest.raises(StoreError):
            m.submit("t", store_timeout=WAIT)
    finally:
        m.shutdown(timeout=WAIT)
        store.close()
