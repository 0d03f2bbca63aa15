"""JobManager under faults that a single process can stage deterministically:
a lease lost while the handler still runs (same-worker reclaim), claims whose
outcome was lost, stale outcomes, cancels a handler ignores, specialised
workers sharing a store, and use after shutdown.  The multi-process version is
the fault harness (``tests/chaos``, ``make chaos``)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taskrunner import ThreadPool
from taskrunner.jobs import (
    JobContext,
    JobManager,
    JobState,
    MemoryJobStore,
    SQLiteJobStore,
)

WAIT = 15.0

pytestmark = [
    pytest.mark.thread_unsafe(reason="each test owns its managers, stores and pools"),
]


@pytest.fixture
def pool() -> Iterator[ThreadPool]:
    p = ThreadPool(4, name="faultpool").start()
    yield p
    p.shutdown(timeout=WAIT)


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    s = MemoryJobStore() if request.param == "memory" else SQLiteJobStore(tmp_path / "jobs.db")
    yield s
    s.close()


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds (a generous timeout, never a timing assertion)."""
    end = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


class Gates:
    """Handler bookkeeping: which attempts started, and a gate per attempt."""

    def __init__(self, held: tuple[int, ...]) -> None:
        self.lock = threading.Lock()
        self.starts: list[int] = []
        self.contexts: dict[int, JobContext] = {}
        self.started = {n: threading.Event() for n in range(1, 10)}
        self.gates = {n: threading.Event() for n in held}

    def handler(self, ctx: JobContext, args: Any) -> str:
        with self.lock:
            self.starts.append(ctx.attempt)
            self.contexts[ctx.attempt] = ctx
        self.started[ctx.attempt].set()
        gate = self.gates.get(ctx.attempt)
        if gate is not None:
            assert gate.wait(WAIT)
        return f"attempt {ctx.attempt}"


# ---- 1. running attempts are keyed by (job, attempt) --------------------------------------------


def test_same_worker_reclaim_fences_the_old_attempt_and_keeps_the_new_one(
    store: Any, pool: ThreadPool
) -> None:
    """Attempt 1 stalls past its lease; this manager reclaims the job as attempt 2.
    Attempt 1 is told its lease is lost, its late outcome changes nothing, and
    attempt 2 stays tracked and renewed: its result is the one stored."""
    lease = 3.0  # long enough that a loaded machine does not lose attempt 2's lease
    m = JobManager(store, pool, lease_seconds=lease, poll_interval=0.05)
    g = Gates(held=(1, 2))
    m.register("t", g.handler)
    m.start()
    try:
        h = m.submit("t", max_attempts=5)
        assert g.started[1].wait(WAIT)
        # The lease of attempt 1 runs out (as if its process had been paused); the
        # job is due again when the lease would have ended.
        [recovered] = store.recover_expired(m.now() + lease + 0.5)
        assert recovered.state is JobState.PENDING and recovered.attempt == 1
        assert g.started[2].wait(WAIT)  # this manager claimed it again
        assert g.contexts[1].token.wait(WAIT), "attempt 1 was not told its lease is lost"
        assert g.contexts[1].token.reason == "lease lost"
        assert not g.contexts[2].cancelled
        g.gates[1].set()  # attempt 1 ends late; its outcome must not touch attempt 2
        wait_for(lambda: m.stats().get("stale") == 1, "attempt 1's outcome to be dropped")
        assert m.stats()["active"] == 1, "attempt 2 was forgotten when attempt 1 ended"
        # Attempt 2's lease is still renewed by the heartbeat.
        renewed = m.get(h.id).lease_expires_at
        assert renewed is not None
        wait_for(lambda: (m.get(h.id).lease_expires_at or 0) > renewed, "attempt 2's lease renewal")
        job = m.get(h.id)
        assert job.state is JobState.RUNNING and job.attempt == 2
        g.gates[2].set()
        assert h.result(WAIT) == "attempt 2"
        assert m.get(h.id).attempt == 2
        assert g.starts == [1, 2]
    finally:
        for gate in g.gates.values():
            gate.set()
        m.shutdown(timeout=WAIT)


# ---- 5. specialised workers claim only the types they can run ---------------------------------


class NoticingStore(SQLiteJobStore):
    """A SQLite store that tells when it has answered a claim_due."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.claimed = threading.Event()

    def claim_due(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().claim_due(*args, **kwargs)
        finally:
            self.claimed.set()


def test_specialised_workers_claim_only_the_job_types_they_handle(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    pool_a = ThreadPool(2, name="only-a").start()
    pool_b = ThreadPool(2, name="only-b").start()
    store_a = SQLiteJobStore(path)
    store_b = NoticingStore(path)
    a = JobManager(store_a, pool_a, poll_interval=0.05, lease_seconds=5)
    b = JobManager(store_b, pool_b, poll_interval=0.05, lease_seconds=5)
    a.register("only_a", lambda ctx, args: "ran on A")
    b.register("only_b", lambda ctx, args: "ran on B")
    try:
        handles = [a.submit("only_a", n) for n in range(5)]  # A is not started yet
        b.start()
        for _ in range(3):  # B has looked for due jobs since they were stored
            store_b.claimed.clear()
            assert store_b.claimed.wait(WAIT)
        assert store_b.count_jobs(states=["pending"], types=["only_a"]) == 5
        assert b.stats()["failed"] == 0
        b_job = b.submit("only_b")
        assert b_job.result(WAIT) == "ran on B"
        a.start()
        assert [h.result(WAIT) for h in handles] == ["ran on A"] * 5
    finally:
        a.shutdown(timeout=WAIT)
        b.shutdown(timeout=WAIT)
        pool_a.shutdown(timeout=WAIT)
        pool_b.shutdown(timeout=WAIT)
        store_a.close()
        store_b.close()


# ---- 6. use after shutdown ---------------------------------------------------------------------


def test_register_after_shutdown_raises_runner_closed(store: Any, pool: ThreadPool) -> None:
    from taskrunner.errors import RunnerClosedError

    m = JobManager(store, pool, poll_interval=0.05)
    m.register("before", lambda ctx, args: None)
    m.start()
    m.shutdown(timeout=WAIT)
    with pytest.raises(RunnerClosedError, match="register"):
        m.register("after", lambda ctx, args: None)
    with pytest.raises(RunnerClosedError, match="register"):
        m.handler("after-decorated")(lambda ctx, args: None)
    assert m.job_types == ["before"]


# ---- 3. a stale outcome is logged and counted --------------------------------------------------


def test_an_outcome_refused_for_a_lost_lease_is_logged_and_counted(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """While attempt 1 runs, its lease is lost and another owner claims the job:
    the store refuses attempt 1's outcome, and the manager says so."""
    from taskrunner.runtime.metrics import InProcessMetrics

    metrics = InProcessMetrics()
    pool = ThreadPool(2, name="stale", metrics=metrics).start()
    m = JobManager(store, pool, lease_seconds=5, poll_interval=0.05)

    def handler(ctx: JobContext, args: Any) -> str:
        later = m.now() + 10
        store.recover_expired(later)
        assert store.claim(ctx.job_id, "other-owner", later, lease_seconds=60) is not None
        return "late"

    m.register("t", handler)
    caplog.set_level(logging.WARNING, logger="taskrunner.jobs")
    try:
        m.start()
        h = m.submit("t", max_attempts=3)
        wait_for(lambda: m.stats().get("stale") == 1, "the stale outcome to be counted")
        job = m.get(h.id)
        assert job.state is JobState.RUNNING and job.owner == "other-owner" and job.attempt == 2
        [record] = [r for r in caplog.records if "stale outcome" in r.getMessage()]
        text = record.getMessage()
        assert h.id in text and "attempt 1" in text and m.owner in text, text
        assert getattr(record, "attempt", None) == 1
        assert metrics.snapshot().job_attempts.get(("t", "stale")) == 1
    finally:
        m.shutdown(timeout=WAIT)
        pool.shutdown(timeout=WAIT)


# ---- 4. cancelling a running job: the rule ----------------------------------------------------


def test_a_handler_that_ignores_a_cancel_succeeds_with_the_request_on_record(
    store: Any, pool: ThreadPool
) -> None:
    from taskrunner.jobs import JobCancelled

    m = JobManager(store, pool, lease_seconds=5, poll_interval=0.05)
    started = {"ignore": threading.Event(), "fail": threading.Event()}

    def ignore(ctx: JobContext, args: Any) -> str:
        started["ignore"].set()
        assert ctx.token.wait(WAIT)  # sees the request, and carries on regardless
        return "done anyway"

    def fail(ctx: JobContext, args: Any) -> str:
        started["fail"].set()
        assert ctx.token.wait(WAIT)
        raise RuntimeError("stopped by an error of its own")

    m.register("ignore", ignore)
    m.register("fail", fail)
    m.start()
    try:
        h = m.submit("ignore")
        assert started["ignore"].wait(WAIT)
        asked = m.cancel(h.id)
        assert asked.state is JobState.RUNNING and asked.cancel_requested
        assert h.result(WAIT) == "done anyway"
        job = m.get(h.id)
        assert job.state is JobState.SUCCEEDED and job.cancel_requested
        assert job.result == b'"done anyway"'

        f = m.submit("fail", max_attempts=3)
        assert started["fail"].wait(WAIT)
        m.cancel(f.id)
        with pytest.raises(JobCancelled):
            f.result(WAIT)
        job = m.get(f.id)
        assert job.state is JobState.CANCELLED and job.cancel_requested and job.attempt == 1
    finally:
        m.shutdown(timeout=WAIT)


# ---- 2. a claim whose commit outcome was lost ---------------------------------------------------


def lost_ack_store(kind: str, path: Path) -> Any:
    """A store whose next ``lose_acks`` claims commit, then raise StoreError, as
    a connection lost during COMMIT does (the claim landed; the caller cannot know)."""
    from taskrunner.jobs import StoreError

    base: type[Any] = MemoryJobStore if kind == "memory" else SQLiteJobStore

    class LostAck(base):  # type: ignore[misc, valid-type]
        lose_acks = 0
        lost_lease: float | None = None  # the lease a lost claim records (None: as asked)
        lost = threading.Event()

        def claim_due(self, *args: Any, **kwargs: Any) -> Any:
            if self.lose_acks > 0 and self.lost_lease is not None:
                kwargs["lease_seconds"] = self.lost_lease
            claimed = super().claim_due(*args, **kwargs)
            if claimed and self.lose_acks > 0:
                self.lose_acks -= 1
                self.lost.set()
                raise StoreError("claim_due: connection lost during COMMIT (injected)")
            return claimed

        lose_finish_acks = 0

        def _finish(self, done: Any) -> Any:
            if self.lose_finish_acks > 0:
                self.lose_finish_acks -= 1
                raise StoreError("complete: connection lost during COMMIT (injected)")
            return done

        def complete(self, *args: Any, **kwargs: Any) -> Any:
            return self._finish(super().complete(*args, **kwargs))

        def complete_many(self, *args: Any, **kwargs: Any) -> Any:
            return self._finish(super().complete_many(*args, **kwargs))

    return LostAck() if kind == "memory" else LostAck(path)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_claim_whose_commit_ack_was_lost_runs_at_once(
    kind: str, tmp_path: Path, pool: ThreadPool
) -> None:
    """The claim committed but the manager saw an error: it finds the jobs it holds
    and runs them now, not after their lease as if their owner had died (which
    would spend the only attempt of a max_attempts=1 job without running it)."""
    from taskrunner.jobs import RetryPolicy

    store = lost_ack_store(kind, tmp_path / "jobs.db")
    m = JobManager(
        store,
        pool,
        lease_seconds=3600,
        poll_interval=0.05,
        store_retry=RetryPolicy(max_attempts=5, initial_delay=0.01, jitter=0),
    )
    ran: list[int] = []
    m.register("t", lambda ctx, args: ran.append(ctx.attempt) or "ran")
    try:
        handles = [m.submit("t", n, max_attempts=1) for n in range(3)]
        store.lose_acks = 1
        m.start()
        assert store.lost.wait(WAIT)
        assert [h.result(WAIT) for h in handles] == ["ran"] * 3
        assert sorted(ran) == [1, 1, 1]
        assert [m.get(h.id).attempt for h in handles] == [1, 1, 1]
    finally:
        m.shutdown(timeout=WAIT)
        store.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_completion_whose_commit_ack_was_lost_is_not_called_stale(
    kind: str, tmp_path: Path, pool: ThreadPool
) -> None:
    """The retry of a completion that had landed meets its own effect: the job is
    SUCCEEDED on this attempt, so the manager settles the job, not a stale outcome."""
    from taskrunner.jobs import RetryPolicy

    store = lost_ack_store(kind, tmp_path / "jobs.db")
    store.lose_finish_acks = 1
    m = JobManager(
        store,
        pool,
        lease_seconds=3600,
        poll_interval=0.05,
        store_retry=RetryPolicy(max_attempts=5, initial_delay=0.01, jitter=0),
    )
    m.register("t", lambda ctx, args: "ran")
    try:
        m.start()
        h = m.submit("t", max_attempts=1)
        assert h.future.result(WAIT) == "ran"
        assert m.get(h.id).state is JobState.SUCCEEDED
        assert m.stats()["stale"] == 0 and m.stats()["store_retries"] >= 1
    finally:
        m.shutdown(timeout=WAIT)
        store.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_jobs_claimed_unseen_are_adopted_before_this_managers_own_recovery(
    kind: str, tmp_path: Path, pool: ThreadPool
) -> None:
    """The store came back after the lease ran out: the owner's next poll takes up
    what it holds before recovering expired leases, so a max_attempts=1 job still
    runs (rather than being recovered from its live owner and failed)."""
    from taskrunner.jobs import RetryPolicy

    store = lost_ack_store(kind, tmp_path / "jobs.db")
    store.lost_lease = 0.001  # the claim that landed unseen has run out by the next poll
    m = JobManager(
        store,
        pool,
        lease_seconds=5,
        poll_interval=0.05,
        store_retry=RetryPolicy(max_attempts=5, initial_delay=5.0, jitter=0),
    )
    m.register("t", lambda ctx, args: "ran")
    try:
        h = m.submit("t", max_attempts=1)
        store.lose_acks = 1
        m.start()
        assert h.result(WAIT) == "ran"
        assert m.get(h.id).attempt == 1 and m.stats()["adopted"] == 1
    finally:
        m.shutdown(timeout=WAIT)
        store.close()
