"""JobManager in one process: durable submit, retries, cancellation, timeouts,
duplicates, store faults, corrupt rows, recovery, listing."""

from __future__ import annotations

import contextvars
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskrunner import ThreadPool
from taskrunner.jobs import (
    CancelToken,
    DuplicateJobError,
    JobCancelled,
    JobContext,
    JobFailedError,
    JobManager,
    JobSpec,
    JobState,
    MemoryJobStore,
    RetryPolicy,
    SerializationError,
    SQLiteJobStore,
    StoreError,
    UnknownJobTypeError,
)
from taskrunner.testing import TaskEnvironment

WAIT = 15.0
FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.001, max_delay=0.01, jitter=0)

pytestmark = [
    pytest.mark.thread_unsafe(
        reason="the manager/store/pool fixtures are shared by pytest-run-parallel's threads: "
        "each copy would register the same handler types on one JobManager and count "
        "another copy's jobs"
    )
]


@pytest.fixture
def pool() -> Iterator[ThreadPool]:
    p = ThreadPool(2, name="jobpool").start()
    yield p
    p.shutdown(timeout=WAIT)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    s = MemoryJobStore() if request.param == "memory" else SQLiteJobStore(tmp_path / "jobs.db")
    yield s
    s.close()


@pytest.fixture
def manager(store: Any, pool: ThreadPool) -> Iterator[JobManager]:
    m = JobManager(store, pool, retry_policy=FAST_RETRY, poll_interval=0.05, lease_seconds=5)
    yield m
    m.shutdown(timeout=WAIT)


def test_submit_runs_and_stores_the_result(manager: JobManager) -> None:
    @manager.handler("add")
    def add(ctx: JobContext, args: dict[str, int]) -> int:
        return args["a"] + args["b"]

    manager.start()
    h = manager.submit("add", {"a": 2, "b": 3})
    assert h.result(WAIT) == 5
    job = manager.get(h.id)
    assert job.state is JobState.SUCCEEDED and job.attempt == 1
    assert h.future.result(WAIT) == 5


def test_submit_is_durable_before_it_returns(store: Any, pool: ThreadPool) -> None:
    m = JobManager(store, pool)  # not started: nothing runs, but submit still stores
    m.register("noop", lambda ctx, args: None)
    m._started = False
    h = m.submit("noop", [1, 2])
    job = store.get(h.id)
    assert job.state is JobState.PENDING and job.type == "noop"
    m.shutdown()


def test_unknown_type_and_unencodable_args_store_nothing(manager: JobManager, store: Any) -> None:
    manager.register("t", lambda ctx, args: None)
    manager.start()
    with pytest.raises(UnknownJobTypeError):
        manager.submit("nope", {})
    with pytest.raises(SerializationError):
        manager.submit("t", {"x": object()})
    with pytest.raises(SerializationError):
        manager.submit("t", float("nan"))
    assert store.count_jobs() == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"priority": 2**40},
        {"delay": -1},
        {"max_attempts": 0},
        {"delay": 1, "run_at": 5.0},
        {"priority": "high"},
    ],
)
def test_bad_submit_values(manager: JobManager, store: Any, kwargs: dict[str, Any]) -> None:
    manager.register("t", lambda ctx, args: None)
    with pytest.raises((ValueError, TypeError)):
        manager.submit("t", None, **kwargs)
    assert store.count_jobs() == 0


def test_duplicate_id_and_idempotency_key(manager: JobManager) -> None:
    gate = threading.Event()
    manager.register("wait", lambda ctx, args: gate.wait(WAIT))
    manager.start()
    manager.submit("wait", job_id="job-1")
    with pytest.raises(DuplicateJobError):
        manager.submit("wait", job_id="job-1")
    first = manager.submit("wait", idempotency_key="k")
    with pytest.raises(DuplicateJobError):
        manager.submit("wait", idempotency_key="k")
    gate.set()
    first.result(WAIT)
    manager.submit("wait", idempotency_key="k").result(WAIT)  # reusable once finished


def test_concurrent_submits_of_one_id_exactly_one_wins(manager: JobManager) -> None:
    manager.register("t", lambda ctx, args: None)
    manager.start()
    wins: list[str] = []
    dups: list[int] = []
    barrier = threading.Barrier(8)

    def racer(i: int) -> None:
        barrier.wait()
        try:
            manager.submit("t", i, job_id="the-one")
            wins.append("w")
        except DuplicateJobError:
            dups.append(i)

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(dups) == 7


def test_group_commit_keeps_each_submit_separate(manager: JobManager, store: Any) -> None:
    manager.register("t", lambda ctx, args: args)
    manager.start()
    handles: list[Any] = []
    lock = threading.Lock()

    def submitter(k: int) -> None:
        for i in range(25):
            h = manager.submit("t", k * 100 + i)
            with lock:
                handles.append(h)

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(h.result(WAIT) for h in handles) == sorted(
        k * 100 + i for k in range(4) for i in range(25)
    )
    assert store.count_jobs(states=["succeeded"]) == 100


def test_submit_many_is_all_or_none(manager: JobManager, store: Any) -> None:
    manager.register("t", lambda ctx, args: args * 2)
    manager.start()
    manager.submit("t", 0, job_id="taken")
    with pytest.raises(DuplicateJobError):
        manager.submit_many([JobSpec("t", 1, job_id="a"), JobSpec("t", 2, job_id="taken")])
    assert store.count_jobs() == 1
    handles = manager.submit_many([JobSpec("t", i) for i in range(10)])
    assert [h.result(WAIT) for h in handles] == [i * 2 for i in range(10)]


def test_failures_retry_then_fail_with_the_error_stored(manager: JobManager) -> None:
    calls = [0]

    @manager.handler("flaky")
    def flaky(ctx: JobContext, args: None) -> str:
        calls[0] += 1
        if ctx.attempt < 3:
            raise RuntimeError(f"attempt {ctx.attempt}")
        return "third time"

    @manager.handler("broken")
    def broken(ctx: JobContext, args: None) -> None:
        raise ValueError("always")

    manager.start()
    assert manager.submit("flaky").result(WAIT) == "third time"
    assert calls[0] == 3
    h = manager.submit("broken", max_attempts=2)
    with pytest.raises(JobFailedError) as info:
        h.result(WAIT)
    job = info.value.job
    assert job.state is JobState.FAILED and job.attempt == 2
    assert job.last_error == "ValueError: always"
    assert job.error_traceback is not None and "broken" in job.error_traceback


def test_non_retryable_errors_fail_at_once(store: Any, pool: ThreadPool) -> None:
    policy = RetryPolicy(max_attempts=5, initial_delay=0.001, retry_on=(OSError,))
    m = JobManager(store, pool, retry_policy=policy)
    m.register("bad", lambda ctx, args: 1 / 0)
    m.start()
    h = m.submit("bad")
    with pytest.raises(JobFailedError):
        h.result(WAIT)
    assert m.get(h.id).attempt == 1
    m.shutdown()


def test_cancel_pending_and_running(manager: JobManager) -> None:
    started = threading.Event()

    @manager.handler("loop")
    def loop(ctx: JobContext, args: None) -> None:
        started.set()
        while True:
            ctx.sleep(0.01)

    manager.register("later", lambda ctx, args: None)
    manager.start()
    pending = manager.submit("later", delay=3600)
    assert manager.cancel(pending.id).state is JobState.CANCELLED
    with pytest.raises(JobCancelled):
        pending.result(WAIT)
    running = manager.submit("loop")
    assert started.wait(WAIT)
    manager.cancel(running.id)
    with pytest.raises(JobCancelled):
        running.result(WAIT)
    assert manager.get(running.id).state is JobState.CANCELLED


def test_timeout_signals_the_handler_and_retries(manager: JobManager) -> None:
    attempts: list[int] = []

    @manager.handler("slow")
    def slow(ctx: JobContext, args: None) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt < 2:
            ctx.sleep(WAIT)  # woken by the timeout
        return "fast enough"

    manager.start()
    assert manager.submit("slow", timeout=0.05).result(WAIT) == "fast enough"
    assert attempts == [1, 2]
    job = manager.list(type="slow").jobs[0]
    assert job.last_error is not None and "timeout" in job.last_error


def test_callers_cancel_token_and_deadline(manager: JobManager) -> None:
    started = threading.Event()

    @manager.handler("wait")
    def wait(ctx: JobContext, args: None) -> None:
        started.set()
        while True:
            ctx.sleep(0.01)

    manager.register("later", lambda ctx, args: None)
    manager.start()
    token = CancelToken()
    h = manager.submit("wait", cancel_token=token)
    assert started.wait(WAIT)
    token.cancel()
    with pytest.raises(JobCancelled):
        h.result(WAIT)
    late = manager.submit("later", delay=3600, deadline=manager.now() + 0.05)
    with pytest.raises(JobCancelled):
        late.result(WAIT)


def test_contextvars_flow_into_the_handler(manager: JobManager) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")
    manager.register("ctx", lambda ctx, args: var.get())
    manager.start()
    var.set("req-42")
    assert manager.submit("ctx").result(WAIT) == "req-42"


def test_a_job_that_finishes_before_submit_returns_is_still_tracked(
    manager: JobManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker may claim and finish a job between its insert and the rest of
    ``submit``: its submitter's context and its future must already be there."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")
    manager.register("ctx", lambda ctx, args: var.get())
    manager.start()
    track = manager._track

    def slow_track(job: Any, *args: Any) -> Any:
        deadline = time.monotonic() + WAIT
        while not manager.get(job.id).is_final:  # the job runs before submit goes on
            assert time.monotonic() < deadline, "the job never ran"
            time.sleep(0.005)
        return track(job, *args)

    monkeypatch.setattr(manager, "_track", slow_track)
    var.set("req-7")
    handle = manager.submit("ctx")
    assert handle.future.result(WAIT) == "req-7"  # settled by the run, with the context
    assert handle.id not in manager._futures  # nothing kept for a finished job
    assert handle.id not in manager._submit_contexts


def test_manual_retry_of_a_failed_job(manager: JobManager) -> None:
    fail = [True]

    @manager.handler("once")
    def once(ctx: JobContext, args: None) -> str:
        if fail[0]:
            raise RuntimeError("not yet")
        return "done"

    manager.start()
    h = manager.submit("once", max_attempts=1)
    with pytest.raises(JobFailedError):
        h.result(WAIT)
    fail[0] = False
    assert manager.retry(h.id).result(WAIT) == "done"


def test_list_pages_in_a_stable_order(manager: JobManager) -> None:
    manager.register("t", lambda ctx, args: None)
    ids = [manager.submit("t", i).id for i in range(25)]
    seen: list[str] = []
    cursor = None
    while True:
        page = manager.list(limit=10, cursor=cursor)
        seen.extend(j.id for j in page.jobs)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ids
    assert len(manager.list(status="pending", limit=100).jobs) == 25


def test_store_write_faults_are_retried_without_losing_the_job(
    tmp_path: Path, pool: ThreadPool
) -> None:
    failures = {"complete": 2, "insert": 1}
    lock = threading.Lock()

    def injector(op: str) -> None:
        with lock:
            if failures.get(op, 0) > 0:
                failures[op] -= 1
                raise sqlite3.OperationalError("database is locked (injected)")

    store = SQLiteJobStore(tmp_path / "f.db", fault_injector=injector)
    m = JobManager(store, pool, store_retry=RetryPolicy(max_attempts=5, initial_delay=0.001))
    m.register("t", lambda ctx, args: "ok")
    m.start()
    assert m.submit("t").result(WAIT) == "ok"
    assert failures == {"complete": 0, "insert": 0}
    assert m.stats()["store_retries"] == 3
    m.shutdown()
    store.close()


def test_exhausted_store_retries_call_the_error_handler(tmp_path: Path, pool: ThreadPool) -> None:
    broken = threading.Event()

    def injector(op: str) -> None:
        if broken.is_set() and op == "complete":
            raise sqlite3.OperationalError("disk I/O error (injected)")

    errors: list[tuple[BaseException, str]] = []
    store = SQLiteJobStore(tmp_path / "g.db", fault_injector=injector)
    m = JobManager(
        store,
        pool,
        lease_seconds=0.2,
        poll_interval=0.05,
        store_retry=RetryPolicy(max_attempts=2, initial_delay=0.001),
        error_handler=lambda exc, op: errors.append((exc, op)),
    )
    done = threading.Event()
    runs: list[int] = []

    @m.handler("t")
    def t(ctx: JobContext, args: None) -> str:
        runs.append(ctx.attempt)
        if ctx.attempt == 1:
            broken.set()  # the write of this attempt's outcome will fail for good
        else:
            broken.clear()
            done.set()
        return "ok"

    m.start()
    h = m.submit("t")
    assert done.wait(WAIT)
    # The job is not left RUNNING forever: its lease expired and it was retried.
    assert h.result(WAIT) == "ok"
    assert runs == [1, 2]
    assert errors and isinstance(errors[0][0], StoreError) and errors[0][1] == "complete"
    m.shutdown()
    store.close()


def test_a_corrupt_row_fails_that_job_and_the_manager_keeps_running(
    tmp_path: Path, pool: ThreadPool
) -> None:
    path = tmp_path / "c.db"
    store = SQLiteJobStore(path)
    m = JobManager(store, pool, poll_interval=0.05)
    m.register("t", lambda ctx, args: "fine")
    bad = m.submit("t", job_id="bad")
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE jobs SET trace_context = '{exploded' WHERE id = 'bad'")
    m.start()
    assert m.submit("t").result(WAIT) == "fine"
    job = m.get(bad.id)
    assert job.state is JobState.FAILED and "trace_context" in (job.last_error or "")
    m.shutdown()
    store.close()


def test_recovery_of_a_dead_owners_job(tmp_path: Path, pool: ThreadPool) -> None:
    path = tmp_path / "r.db"
    store = SQLiteJobStore(path)
    m = JobManager(store, pool, lease_seconds=0.1, poll_interval=0.05)
    m.register("t", lambda ctx, args: "recovered")
    h = m.submit("t")
    # Someone else claimed it and died without finishing.
    assert store.claim(h.id, "dead-owner", m.now(), lease_seconds=0.1) is not None
    last = m.submit("t", max_attempts=1)
    assert store.claim(last.id, "dead-owner", m.now(), lease_seconds=0.1) is not None
    m.start()
    assert h.result(WAIT) == "recovered"
    with pytest.raises(JobFailedError) as info:
        last.result(WAIT)
    assert info.value.job.last_error == "interrupted"
    assert m.stats()["recovered"] >= 2
    m.shutdown()
    store.close()


def test_graceful_shutdown_leaves_unfinished_jobs_for_the_next_start(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteJobStore(path)
    pool = ThreadPool(2, name="shut").start()
    m = JobManager(store, pool, lease_seconds=0.2)
    started = threading.Event()

    @m.handler("loop")
    def loop(ctx: JobContext, args: None) -> None:
        started.set()
        while True:
            ctx.sleep(0.01)

    m.start()
    h = m.submit("loop")
    assert started.wait(WAIT)
    assert m.shutdown(graceful=True, timeout=0.05) == 0
    pool.shutdown()
    assert store.get(h.id).state is JobState.RUNNING  # left for recovery, not cancelled
    pool2 = ThreadPool(2, name="shut2").start()
    m2 = JobManager(store, pool2, lease_seconds=0.2, poll_interval=0.05)
    m2.register("loop", lambda ctx, args: "second life")
    m2.start()
    assert m2.result(h.id, WAIT) == "second life"
    m2.shutdown()
    pool2.shutdown()
    store.close()


def test_retries_with_backoff_on_mock_time() -> None:
    policy = RetryPolicy(max_attempts=4, initial_delay=1.0, ratio=2.0, jitter=0)
    with TaskEnvironment() as env:
        m = JobManager(
            MemoryJobStore(), env.pool, retry_policy=policy, poll_interval=3600, lease_seconds=3600
        )
        times: list[float] = []

        @m.handler("flaky")
        def flaky(ctx: JobContext, args: None) -> str:
            times.append(round(env.now(), 6))
            if ctx.attempt < 4:
                raise RuntimeError("again")
            return "ok"

        m.start()
        h = m.submit("flaky")
        env.fast_forward(10)
        assert h.future.result(0) == "ok"
        assert times == [0.0, 1.0, 3.0, 7.0]
        m.shutdown()


def test_delayed_job_runs_at_its_time_on_mock_time() -> None:
    with TaskEnvironment() as env:
        m = JobManager(MemoryJobStore(), env.pool, poll_interval=3600, lease_seconds=3600)
        ran: list[float] = []
        m.register("t", lambda ctx, args: ran.append(env.now()))
        m.start()
        m.submit("t", delay=30)
        env.fast_forward(29)
        assert ran == []
        env.fast_forward(2)
        assert ran == [30.0]
        m.shutdown()


def test_job_transitions_attempts_and_store_retries_reach_the_metrics(tmp_path: Path) -> None:
    from taskrunner.runtime.metrics import InProcessMetrics

    metrics = InProcessMetrics()
    failures = {"complete": 1}

    def injector(op: str) -> None:
        if failures.get(op, 0) > 0:
            failures[op] -= 1
            raise sqlite3.OperationalError("database is locked (injected)")

    store = SQLiteJobStore(tmp_path / "m.db", fault_injector=injector)
    pool = ThreadPool(2, name="metricjobs", metrics=metrics).start()
    m = JobManager(
        store,
        pool,
        retry_policy=FAST_RETRY,
        store_retry=RetryPolicy(max_attempts=3, initial_delay=0.001),
    )

    @m.handler("flaky")
    def flaky(ctx: JobContext, args: None) -> str:
        if ctx.attempt == 1:
            raise RuntimeError("first time")
        return "ok"

    m.start()
    assert m.submit("flaky").result(WAIT) == "ok"
    m.shutdown()
    pool.shutdown()
    store.close()
    snap = metrics.snapshot()
    assert snap.jobs[("flaky", "pending")] == 2  # submitted, then back for a retry
    assert snap.jobs[("flaky", "running")] == 2
    assert snap.jobs[("flaky", "succeeded")] == 1
    assert snap.job_attempts == {("flaky", "retrying"): 1, ("flaky", "succeeded"): 1}
    assert snap.store_write_retries == {"complete": 1}
