"""The JobStore contract, run against every store.

Each test takes the ``store`` fixture, parametrised over :data:`STORE_KINDS`.
To run the suite against a new store (PostgreSQL), add its name to
``STORE_KINDS`` and a branch to :func:`make_store`; nothing else changes.

The last part drives two stores side by side with Hypothesis and checks that
they agree on every answer: the memory store is the executable model.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from pg_fixture import new_schema, require_dsn

from taskrunner.errors import ClosedError
from taskrunner.jobs import (
    FINAL_STATES,
    TRANSITIONS,
    DuplicateJobError,
    IllegalTransitionError,
    Job,
    JobState,
    JobStore,
    LeaseLostError,
    MemoryJobStore,
    RetryPolicy,
    SQLiteJobStore,
    StoreError,
    UnknownJobError,
    can_transition,
    check_transition,
    is_final,
    new_job,
    new_job_id,
    retry_call,
)
from taskrunner.jobs.schedule_model import Schedule
from taskrunner.jobs.stores.store import BatchCompletion
from taskrunner.jobs.unique import with_uniqueness

pytestmark = [
    pytest.mark.thread_unsafe(
        reason="each test drives one store from its own threads; a shared store would mix tests"
    )
]

T0 = 1_000_000.0
LEASE = 30.0

STORE_KINDS = ["memory", "sqlite", "postgres"]


class Faults:
    """A fault injector a test switches on: the next ``fail_next`` writes raise OSError."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards both fields
        self.fail_next = 0
        self.calls: list[str] = []

    def __call__(self, operation: str) -> None:
        with self._lock:
            self.calls.append(operation)
            if self.fail_next > 0:
                self.fail_next -= 1
                raise OSError(f"injected failure in {operation}")


def make_store(kind: str, directory: Path, faults: Faults | None = None) -> JobStore:
    """A new, empty store of ``kind``."""
    if kind == "memory":
        return MemoryJobStore(fault_injector=faults)
    if kind == "sqlite":
        return SQLiteJobStore(directory / "jobs.db", fault_injector=faults)
    if kind == "postgres":  # a new schema on the test server (see tests/pg_fixture.py)
        from taskrunner.jobs import PostgresJobStore

        return PostgresJobStore(require_dsn(), schema=new_schema(), fault_injector=faults)
    raise ValueError(f"unknown store kind {kind!r}")


@pytest.fixture
def faults() -> Faults:
    return Faults()


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path, faults: Faults) -> Iterator[JobStore]:
    made = make_store(request.param, tmp_path, faults)
    yield made
    made.close()


def mk(job_id: str, **fields: Any) -> Job:
    """A new pending job created at T0 (unless ``now`` says otherwise)."""
    now = fields.pop("now", T0)
    return new_job(
        fields.pop("type", "t"), fields.pop("args", b"args"), now=now, id=job_id, **fields
    )


def claim_one(store: JobStore, job_id: str, owner: str = "w1", now: float = T0) -> Job:
    job = store.claim(job_id, owner, now, lease_seconds=LEASE)
    assert job is not None
    return job


def ids(jobs: Any) -> list[str]:
    return [job.id for job in jobs]


# ---------------------------------------------------------------- states and the record


def test_transition_table_is_the_specified_one() -> None:
    p, r, s, f, c = (
        JobState(x) for x in ("pending", "running", "succeeded", "failed", "cancelled")
    )
    allowed = {(a, b) for a in JobState for b in JobState if can_transition(a, b)}
    assert allowed == {(p, r), (p, c), (r, s), (r, f), (r, c), (r, p), (f, p), (c, p)}
    assert set(TRANSITIONS) == set(JobState)
    assert {s, f, c} == FINAL_STATES
    assert [is_final(x) for x in (p, r, s, f, c)] == [False, False, True, True, True]
    with pytest.raises(IllegalTransitionError, match="succeeded -> pending"):
        check_transition(s, p)
    with pytest.raises(ValueError, match="unknown job state 'done'"):
        check_transition("done", p)
    check_transition("failed", "pending")


def test_job_record_checks_every_field() -> None:
    good = mk("a")
    assert good.state is JobState.PENDING and good.attempt == 0
    bad: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"id": ""}, ValueError, "Job.id"),
        ({"id": 5}, TypeError, "Job.id"),
        ({"args": "text"}, TypeError, "Job.args"),
        ({"priority": 2**31}, ValueError, "Job.priority"),
        ({"priority": True}, TypeError, "Job.priority"),
        ({"max_attempts": 0}, ValueError, "Job.max_attempts"),
        ({"attempt": -1}, ValueError, "Job.attempt"),
        ({"attempt": 3, "max_attempts": 3}, ValueError, "attempt left"),
        ({"run_at": float("nan")}, ValueError, "Job.run_at"),
        ({"timeout": 0}, ValueError, "Job.timeout"),
        ({"timeout": -1.0}, ValueError, "Job.timeout"),
        ({"state": "sleeping"}, ValueError, "unknown job state"),
        ({"state": JobState.RUNNING}, ValueError, "owner and lease"),
        ({"owner": "w1"}, ValueError, "owner and lease"),
        ({"state": JobState.FAILED}, ValueError, "finished_at"),
        ({"cancel_requested": True}, ValueError, "cancel_requested"),
        ({"cancel_requested": 1}, TypeError, "cancel_requested"),
        ({"trace_context": {"a": 1}}, TypeError, "trace_context"),
        ({"idempotency_key": ""}, ValueError, "idempotency_key"),
    ]
    for change, error, words in bad:
        with pytest.raises(error, match=words):
            dataclasses.replace(good, **change)
    # A caller's dict is copied: changing it later does not change the job.
    carrier = {"traceparent": "00-abc"}
    job = mk("b", trace_context=carrier)
    carrier["traceparent"] = "changed"
    assert job.trace_context == {"traceparent": "00-abc"}


def test_new_job_ids_are_unique_and_sort_in_creation_order() -> None:
    made = [new_job_id() for _ in range(2000)]
    assert len(set(made)) == len(made)
    assert made == sorted(made)


# ---------------------------------------------------------------- insert and get


def test_insert_then_get_returns_every_field(store: JobStore) -> None:
    assert isinstance(store, JobStore)
    job = mk(
        "j1",
        type="email",
        args=b"\x00\xffpayload",
        priority=-7,
        max_attempts=5,
        run_at=T0 + 60,
        timeout=2.5,
        idempotency_key="k1",
        trace_context={"traceparent": "00-1-2-01", "tracestate": ""},
    )
    store.insert(job)
    assert store.get("j1") == job
    assert store.get("j1").trace_context == {"traceparent": "00-1-2-01", "tracestate": ""}


def test_get_unknown_id_raises_unknown_job_error(store: JobStore) -> None:
    with pytest.raises(UnknownJobError, match="unknown job 'nope'") as caught:
        store.get("nope")
    assert isinstance(caught.value, KeyError)
    assert caught.value.job_id == "nope"


def test_insert_refuses_a_job_that_is_not_new(store: JobStore) -> None:
    running = dataclasses.replace(
        mk("r"), state=JobState.RUNNING, owner="w", lease_expires_at=T0 + 1, attempt=1
    )
    with pytest.raises(ValueError, match="new pending job"):
        store.insert(running)
    with pytest.raises(TypeError, match="expected a Job"):
        store.insert({"id": "x"})  # type: ignore[arg-type]
    assert store.count_jobs() == 0


def test_duplicate_id_is_refused_and_the_first_job_kept(store: JobStore) -> None:
    store.insert(mk("j1", args=b"first"))
    with pytest.raises(DuplicateJobError, match="'j1' already exists") as caught:
        store.insert(mk("j1", args=b"second"))
    assert isinstance(caught.value, ValueError)
    assert caught.value.existing_id == "j1" and caught.value.idempotency_key is None
    assert store.get("j1").args == b"first"
    assert store.count_jobs() == 1


def test_idempotency_key_is_unique_among_unfinished_jobs(store: JobStore) -> None:
    store.insert(mk("a", idempotency_key="order-1"))
    with pytest.raises(DuplicateJobError) as caught:
        store.insert(mk("b", idempotency_key="order-1"))
    assert caught.value.existing_id == "a" and caught.value.idempotency_key == "order-1"
    assert store.find_by_idempotency_key("order-1") == store.get("a")

    claim_one(store, "a")  # running still holds the key
    with pytest.raises(DuplicateJobError):
        store.insert(mk("b", idempotency_key="order-1"))

    store.complete("a", "w1", T0 + 1, b"done")  # finished: the key is free again
    assert store.find_by_idempotency_key("order-1") is None
    store.insert(mk("b", idempotency_key="order-1"))
    assert store.find_by_idempotency_key("order-1") == store.get("b")
    assert store.count_jobs() == 2


def test_insert_many_is_all_or_nothing(store: JobStore) -> None:
    store.insert(mk("old", idempotency_key="k-old"))
    failing_batches = [
        [mk("n1"), mk("n2"), mk("old")],  # id taken by a stored job
        [mk("n1"), mk("n2"), mk("n1")],  # id repeated within the batch
        [mk("n1"), mk("n2", idempotency_key="k-old")],  # key held by a stored job
        [mk("n1", idempotency_key="k"), mk("n2", idempotency_key="k")],  # key repeated
    ]
    for batch in failing_batches:
        with pytest.raises(DuplicateJobError):
            store.insert_many(batch)
        assert ids(store.list_jobs().jobs) == ["old"]
    store.insert_many([mk("n1"), mk("n2"), mk("n3", idempotency_key="k")])
    assert store.count_jobs() == 4
    store.insert_many([])
    assert store.count_jobs() == 4


def test_text_that_is_not_valid_unicode(store: JobStore) -> None:
    with pytest.raises(ValueError, match="lone surrogate"):
        store.insert(mk("bad-\udcff"))
    store.insert(mk("a"))
    with pytest.raises(ValueError, match="lone surrogate"):
        store.claim_due("w-\udcff", T0, limit=1, lease_seconds=LEASE)
    claim_one(store, "a")
    # An error message may carry one (a surrogate-escaped file name): kept, escaped.
    failed = store.fail("a", "w1", T0 + 1, "cannot open /tmp/\udcff", "tb \udcff")
    assert failed.last_error == "cannot open /tmp/\\udcff"
    assert failed.error_traceback == "tb \\udcff"
    assert store.get("a") == failed


# ---------------------------------------------------------------- list and count


def test_list_pages_in_stable_created_then_id_order(store: JobStore) -> None:
    # Created-at values with ties, inserted out of order.
    jobs = [mk(f"j{i:02d}", now=T0 + (i * 7) % 5) for i in range(23)]
    store.insert_many(jobs[::2])
    store.insert_many(jobs[1::2])
    expected = sorted(jobs, key=lambda j: (j.created_at, j.id))

    seen: list[Job] = []
    cursor = None
    pages = 0
    while True:
        page = store.list_jobs(limit=5, after=cursor)
        seen.extend(page.jobs)
        pages += 1
        if page.next_cursor is None:
            break
        assert len(page.jobs) == 5
        cursor = page.next_cursor
        if pages == 2:
            # Jobs added behind the cursor never show up; ahead of it, they do.
            store.insert(mk("early", now=T0 - 1))
            store.insert(mk("late", now=T0 + 100))
    assert pages == 5
    assert ids(seen) == [*ids(expected), "late"]
    assert store.count_jobs() == 25


def test_list_and_count_filter_by_state_type_and_time(store: JobStore) -> None:
    store.insert_many(
        [
            mk("a", type="email", now=T0),
            mk("b", type="sms", now=T0 + 1),
            mk("c", type="email", now=T0 + 2),
            mk("d", type="email", now=T0 + 3),
        ]
    )
    claim_one(store, "a", now=T0 + 10)
    store.cancel("b", T0 + 10)

    def listed(**filters: Any) -> list[str]:
        return ids(store.list_jobs(**filters).jobs)

    assert listed(states=[JobState.PENDING]) == ["c", "d"]
    assert listed(states=["running", "cancelled"]) == ["a", "b"]
    assert listed(types=["email"]) == ["a", "c", "d"]
    assert listed(types=["email"], states=["pending"], since=T0 + 3) == ["d"]
    assert listed(since=T0 + 1) == ["b", "c", "d"]
    assert listed(states=[]) == [] and listed(types=[]) == []
    assert store.count_jobs(types=["email"], states=["pending"]) == 2
    assert store.count_jobs(states=[]) == 0
    page = store.list_jobs(types=["email"], limit=2)
    assert ids(page.jobs) == ["a", "c"]
    assert ids(store.list_jobs(types=["email"], limit=2, after=page.next_cursor).jobs) == ["d"]


def test_list_rejects_bad_arguments(store: JobStore) -> None:
    with pytest.raises(ValueError, match="limit"):
        store.list_jobs(limit=0)
    with pytest.raises(ValueError, match="limit"):
        store.list_jobs(limit=100_000)
    with pytest.raises(ValueError, match="invalid cursor"):
        store.list_jobs(after="garbage")
    with pytest.raises(ValueError, match="unknown job state 'done'"):
        store.list_jobs(states=["done"])
    with pytest.raises(TypeError, match="collection"):
        store.list_jobs(states="pending")


# ---------------------------------------------------------------- claims


def test_claim_due_takes_priority_then_due_time_then_creation_order(store: JobStore) -> None:
    store.insert_many(
        [
            mk("low-early", priority=0, run_at=T0),
            mk("high-late", priority=5, run_at=T0 + 5),
            mk("high-early", priority=5, run_at=T0 + 1),
            mk("mid-b", priority=1, run_at=T0 + 2, now=T0 - 1),
            mk("mid-a", priority=1, run_at=T0 + 2, now=T0 - 1),
            mk("mid-first", priority=1, run_at=T0 + 2, now=T0 - 2),
            mk("future", priority=9, run_at=T0 + 100),
        ]
    )
    first = store.claim_due("w1", T0 + 10, limit=4, lease_seconds=LEASE)
    assert ids(first) == ["high-early", "high-late", "mid-first", "mid-a"]
    for job in first:
        assert job.state is JobState.RUNNING and job.owner == "w1"
        assert job.lease_expires_at == T0 + 10 + LEASE and job.attempt == 1
        assert store.get(job.id) == job
    rest = store.claim_due("w2", T0 + 10, limit=10, lease_seconds=LEASE)
    assert ids(rest) == ["mid-b", "low-early"]
    assert store.claim_due("w2", T0 + 10, limit=10, lease_seconds=LEASE) == []
    assert ids(store.claim_due("w2", T0 + 100, limit=10, lease_seconds=LEASE)) == ["future"]


def test_claim_due_takes_only_the_job_types_asked_for(store: JobStore) -> None:
    store.insert_many(
        [mk("a1", type="only_a"), mk("b1", type="only_b", priority=5), mk("a2", type="only_a")]
    )
    store.insert(mk("c1", type="other"))
    assert store.claim_due("w", T0 + 10, limit=10, lease_seconds=LEASE, types=[]) == []
    took = store.claim_due("w", T0 + 10, limit=10, lease_seconds=LEASE, types=["only_a", "x"])
    assert ids(took) == ["a1", "a2"]
    assert ids(store.claim_due("w", T0 + 10, limit=10, lease_seconds=LEASE, types={"only_b"})) == [
        "b1"
    ]
    assert store.get("c1").state is JobState.PENDING
    with pytest.raises(TypeError, match="types"):
        store.claim_due("w", T0 + 10, limit=1, lease_seconds=LEASE, types="other")
    assert ids(store.claim_due("w", T0 + 10, limit=10, lease_seconds=LEASE)) == ["c1"]


def test_claim_due_from_eight_threads_claims_each_job_exactly_once(store: JobStore) -> None:
    store.insert_many([mk(f"j{i:03d}", priority=i % 3) for i in range(240)])
    start = threading.Barrier(8)
    claimed: list[list[str]] = [[] for _ in range(8)]
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            start.wait()
            while batch := store.claim_due(f"w{n}", T0, limit=3, lease_seconds=LEASE):
                claimed[n].extend(job.id for job in batch)
                assert all(job.owner == f"w{n}" for job in batch)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    counts = Counter(job_id for got in claimed for job_id in got)
    assert set(counts) == {f"j{i:03d}" for i in range(240)}
    assert set(counts.values()) == {1}
    assert store.count_jobs(states=["running"]) == 240


def test_claim_one_job(store: JobStore) -> None:
    store.insert_many([mk("now"), mk("later", run_at=T0 + 50)])
    assert store.claim("later", "w1", T0, lease_seconds=LEASE) is None
    job = claim_one(store, "now")
    assert job.state is JobState.RUNNING and job.attempt == 1
    assert store.claim("now", "w2", T0, lease_seconds=LEASE) is None  # already running
    assert store.get("now").owner == "w1"
    with pytest.raises(UnknownJobError):
        store.claim("nope", "w1", T0, lease_seconds=LEASE)


def test_claim_arguments_are_checked_before_anything_changes(store: JobStore) -> None:
    store.insert(mk("a"))
    bad_calls: list[tuple[dict[str, Any], type[Exception]]] = [
        ({"owner": ""}, ValueError),
        ({"owner": None}, TypeError),
        ({"now": float("nan")}, ValueError),
        ({"limit": 0}, ValueError),
        ({"lease_seconds": 0}, ValueError),
        ({"lease_seconds": -5.0}, ValueError),
    ]
    for change, error in bad_calls:
        call: dict[str, Any] = {"owner": "w", "now": T0, "limit": 1, "lease_seconds": LEASE}
        call.update(change)
        with pytest.raises(error):
            store.claim_due(call.pop("owner"), call.pop("now"), **call)
    assert store.get("a").state is JobState.PENDING


# ---------------------------------------------------------------- leases


def test_renew_leases_extends_only_what_the_owner_holds(store: JobStore) -> None:
    store.insert_many([mk("a"), mk("b"), mk("c"), mk("d")])
    claim_one(store, "a", "w1")
    claim_one(store, "b", "w1")
    claim_one(store, "c", "w2")
    store.cancel("b", T0 + 1)
    renewal = store.renew_leases("w1", ["a", "b", "c", "d", "nope"], T0 + 20, lease_seconds=LEASE)
    assert renewal.held == {"a", "b"}
    assert renewal.cancel_requested == {"b"}
    assert store.get("a").lease_expires_at == T0 + 20 + LEASE
    assert store.get("c").lease_expires_at == T0 + LEASE
    empty = store.renew_leases("w1", [], T0, lease_seconds=LEASE)
    assert empty.held == frozenset()


def test_renew_leases_on_an_attempt_fences_a_stale_attempt(store: JobStore) -> None:
    """The same owner reclaimed the job as attempt 2: renewing attempt 1 holds nothing."""
    store.insert_many([mk("a", max_attempts=3), mk("b")])
    claim_one(store, "a", "w1")
    claim_one(store, "b", "w1")
    store.recover_expired(T0 + LEASE)
    again = store.claim("a", "w1", T0 + LEASE, lease_seconds=LEASE)
    assert again is not None and again.attempt == 2
    stale = store.renew_leases("w1", ["a"], T0 + 40, lease_seconds=LEASE, attempts={"a": 1})
    assert stale.held == frozenset()
    assert store.get("a").lease_expires_at == T0 + 2 * LEASE  # not renewed
    now = T0 + 41
    current = store.renew_leases("w1", ["a"], now, lease_seconds=LEASE, attempts={"a": 2})
    assert current.held == {"a"}
    assert store.get("a").lease_expires_at == now + LEASE
    with pytest.raises(TypeError, match="attempts"):
        store.renew_leases("w1", ["a"], now, lease_seconds=LEASE, attempts=[("a", 2)])  # type: ignore[arg-type]


def test_expired_leases_are_recovered(store: JobStore) -> None:
    store.insert_many([mk("retry-me", max_attempts=2), mk("last", max_attempts=1), mk("stop")])
    for job_id in ("retry-me", "last", "stop"):
        claim_one(store, job_id, "dead")
    store.cancel("stop", T0 + 1)

    assert store.recover_expired(T0 + LEASE - 0.001) == []
    recovered = store.recover_expired(T0 + LEASE)
    assert sorted(ids(recovered)) == ["last", "retry-me", "stop"]

    again = store.get("retry-me")  # an attempt left: pending, due now
    assert again.state is JobState.PENDING and again.run_at == T0 + LEASE
    assert again.attempt == 1 and again.owner is None and again.lease_expires_at is None
    assert again.last_error == "interrupted"
    last = store.get("last")  # none left: failed
    assert last.state is JobState.FAILED and last.last_error == "interrupted"
    assert last.finished_at == T0 + LEASE
    assert store.get("stop").state is JobState.CANCELLED  # its cancellation was asked for

    # The dead owner's late calls are refused; its leases are gone.
    with pytest.raises(LeaseLostError, match="no longer holds"):
        store.complete("retry-me", "dead", T0 + 40, b"late")
    assert store.renew_leases("dead", ["retry-me"], T0 + 40, lease_seconds=LEASE).held == set()
    assert store.recover_expired(T0 + 1000) == []

    # Re-claimed by the same owner name: the attempt number fences off the stale run.
    assert claim_one(store, "retry-me", "dead", now=T0 + 50).attempt == 2
    with pytest.raises(LeaseLostError, match="attempt 2, not 1"):
        store.complete("retry-me", "dead", T0 + 51, b"stale", attempt=1)
    assert store.complete("retry-me", "dead", T0 + 51, b"ok", attempt=2).result == b"ok"


def test_a_custom_interruption_reason_is_recorded(store: JobStore) -> None:
    store.insert(mk("a"))
    claim_one(store, "a")
    store.recover_expired(T0 + LEASE, interrupted_reason="worker lost")
    assert store.get("a").last_error == "worker lost"


def test_an_expired_lease_not_yet_recovered_is_still_held(store: JobStore) -> None:
    store.insert(mk("a"))
    claim_one(store, "a")
    assert store.renew_leases("w1", ["a"], T0 + 100, lease_seconds=LEASE).held == {"a"}
    assert store.complete("a", "w1", T0 + 200).state is JobState.SUCCEEDED


# ---------------------------------------------------------------- finishing


def test_complete_stores_the_result(store: JobStore) -> None:
    store.insert(mk("a"))
    claim_one(store, "a")
    with pytest.raises(LeaseLostError):
        store.complete("a", "w2", T0 + 1, b"not mine")
    done = store.complete("a", "w1", T0 + 2, b'{"ok": true}')
    assert done.state is JobState.SUCCEEDED and done.result == b'{"ok": true}'
    assert done.finished_at == T0 + 2 and done.updated_at == T0 + 2
    assert done.owner is None and done.lease_expires_at is None
    assert store.get("a") == done
    with pytest.raises(LeaseLostError, match="succeeded"):
        store.complete("a", "w1", T0 + 3)
    with pytest.raises(UnknownJobError):
        store.complete("nope", "w1", T0)


def test_complete_many_finishes_held_jobs_and_reports_the_rest(store: JobStore) -> None:
    assert isinstance(store, BatchCompletion)  # every store here batches completions
    for job_id in ("a", "b", "c", "done"):
        store.insert(mk(job_id))
    claim_one(store, "a")
    claim_one(store, "b")
    claim_one(store, "c", owner="w2")
    claim_one(store, "done")
    store.complete("done", "w1", T0 + 1)
    results = store.complete_many(
        "w1",
        T0 + 2,
        [
            ("b", b"2", 1),
            ("c", None, 1),
            ("nope", None, None),
            ("a", b"1", None),
            ("done", None, None),
        ],
    )
    first, held_by_other, unknown, second, finished = results
    assert isinstance(first, Job) and first.state is JobState.SUCCEEDED and first.result == b"2"
    assert isinstance(second, Job) and second.result == b"1" and second.finished_at == T0 + 2
    assert isinstance(held_by_other, LeaseLostError)
    assert isinstance(unknown, UnknownJobError)
    assert isinstance(finished, LeaseLostError)
    assert store.get("c").state is JobState.RUNNING  # the others' errors changed nothing
    assert store.get("a") == second and store.get("b") == first
    assert store.complete_many("w1", T0, []) == []
    with pytest.raises(TypeError):
        store.complete_many("w1", T0, ["a"])  # type: ignore[list-item]


def test_fail_retries_while_attempts_remain_then_fails(store: JobStore) -> None:
    store.insert(mk("a", max_attempts=2))
    claim_one(store, "a")
    retried = store.fail("a", "w1", T0 + 1, "boom", "Traceback...", retry_at=T0 + 11)
    assert retried.state is JobState.PENDING and retried.run_at == T0 + 11
    assert retried.last_error == "boom" and retried.error_traceback == "Traceback..."
    assert retried.owner is None and retried.attempt == 1
    assert store.claim("a", "w1", T0 + 10, lease_seconds=LEASE) is None  # not due yet
    assert claim_one(store, "a", now=T0 + 11).attempt == 2
    failed = store.fail("a", "w1", T0 + 12, "boom again", retry_at=T0 + 30)  # none left
    assert failed.state is JobState.FAILED and failed.finished_at == T0 + 12
    assert failed.last_error == "boom again" and failed.error_traceback is None


def test_fail_without_retry_at_is_final(store: JobStore) -> None:
    store.insert(mk("a", max_attempts=5))
    claim_one(store, "a")
    with pytest.raises(LeaseLostError):
        store.fail("a", "w2", T0 + 1, "not mine")
    assert store.fail("a", "w1", T0 + 1, "fatal").state is JobState.FAILED


def test_snooze_puts_the_job_back_without_counting_the_attempt(store: JobStore) -> None:
    store.insert(mk("a", max_attempts=1))
    first = claim_one(store, "a")
    with pytest.raises(LeaseLostError):
        store.snooze("a", "w2", T0 + 1, T0 + 60)  # not the holder
    with pytest.raises(LeaseLostError):
        store.snooze("a", "w1", T0 + 1, T0 + 60, attempt=first.attempt + 1)  # stale attempt
    snoozed = store.snooze("a", "w1", T0 + 1, T0 + 60, attempt=first.attempt)
    assert snoozed.state is JobState.PENDING and snoozed.run_at == T0 + 60
    assert snoozed.attempt == 0 and snoozed.owner is None and snoozed.lease_expires_at is None
    assert snoozed.last_error is None and snoozed.updated_at == T0 + 1
    assert store.get("a") == snoozed
    assert store.claim("a", "w1", T0 + 59, lease_seconds=LEASE) is None  # not due yet
    again = claim_one(store, "a", now=T0 + 60)
    assert again.attempt == 1  # its one attempt is still there
    assert store.fail("a", "w1", T0 + 61, "boom", retry_at=T0 + 70).state is JobState.FAILED
    with pytest.raises(LeaseLostError):
        store.snooze("a", "w1", T0 + 62, T0 + 90)  # finished: nobody holds it


def test_snooze_of_a_job_whose_cancel_was_requested_cancels_it(store: JobStore) -> None:
    store.insert(mk("a"))
    claim_one(store, "a")
    store.cancel("a", T0 + 1)
    done = store.snooze("a", "w1", T0 + 2, T0 + 60)
    assert done.state is JobState.CANCELLED and done.finished_at == T0 + 2
    assert done.cancel_requested


def test_snooze_rejects_bad_arguments(store: JobStore) -> None:
    store.insert(mk("a"))
    claim_one(store, "a")
    with pytest.raises(TypeError, match="run_at"):
        store.snooze("a", "w1", T0, "soon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="run_at"):
        store.snooze("a", "w1", T0, float("nan"))
    with pytest.raises(ValueError, match="attempt"):
        store.snooze("a", "w1", T0, T0 + 1, attempt=0)
    with pytest.raises(UnknownJobError):
        store.snooze("nope", "w1", T0, T0 + 1)
    assert store.get("a").state is JobState.RUNNING


def test_cancel_pending_running_and_finished_jobs(store: JobStore) -> None:
    store.insert_many([mk("p"), mk("r"), mk("r2"), mk("s")])
    claim_one(store, "r")
    claim_one(store, "r2")
    claim_one(store, "s")
    done = store.complete("s", "w1", T0 + 1)

    cancelled = store.cancel("p", T0 + 2, "not needed")
    assert cancelled.state is JobState.CANCELLED and cancelled.last_error == "not needed"
    assert cancelled.finished_at == T0 + 2
    assert store.cancel("p", T0 + 3) == cancelled  # idempotent
    assert store.cancel("s", T0 + 3) == done  # finished: unchanged

    asked = store.cancel("r", T0 + 2)
    assert asked.state is JobState.RUNNING and asked.cancel_requested
    assert store.get("r").cancel_requested
    stopped = store.mark_cancelled("r", "w1", T0 + 3, "stopped on request")
    assert stopped.state is JobState.CANCELLED and stopped.cancel_requested  # kept on record
    assert stopped.last_error == "stopped on request" and stopped.owner is None

    # A failure after a cancellation request is never retried: the job is cancelled,
    # with the attempt's error kept.
    store.cancel("r2", T0 + 2)
    failed = store.fail("r2", "w1", T0 + 3, "boom", retry_at=T0 + 4)
    assert failed.state is JobState.CANCELLED and failed.last_error == "boom"
    assert failed.cancel_requested


def test_a_request_to_cancel_stays_on_the_record_of_a_job_that_completed(
    store: JobStore,
) -> None:
    """The handler ignored the request and returned: the job succeeded, and says it
    was asked to stop.  A manual retry starts over without the request."""
    store.insert(mk("r", max_attempts=1))
    claim_one(store, "r")
    store.cancel("r", T0 + 1)
    done = store.complete("r", "w1", T0 + 2, b"result")
    assert done.state is JobState.SUCCEEDED and done.cancel_requested and done.result == b"result"
    assert store.get("r") == done
    store.insert(mk("f", max_attempts=1))
    claim_one(store, "f")
    store.cancel("f", T0 + 1)
    [recovered] = store.recover_expired(T0 + LEASE)
    assert recovered.state is JobState.CANCELLED and recovered.cancel_requested
    again = store.retry("f", T0 + LEASE)
    assert again.state is JobState.PENDING and not again.cancel_requested
    with pytest.raises(UnknownJobError):
        store.cancel("nope", T0)


def test_mark_cancelled_checks_the_owner_unless_forced(store: JobStore) -> None:
    store.insert_many([mk("a"), mk("b"), mk("c")])
    claim_one(store, "a")
    with pytest.raises(LeaseLostError):
        store.mark_cancelled("a", "w2", T0 + 1)
    forced = store.mark_cancelled("a", None, T0 + 1, "operator")
    assert forced.state is JobState.CANCELLED and forced.last_error == "operator"
    assert store.mark_cancelled("b", None, T0 + 1).state is JobState.CANCELLED  # pending
    with pytest.raises(IllegalTransitionError, match="cancelled -> cancelled"):
        store.mark_cancelled("b", None, T0 + 2)
    with pytest.raises(LeaseLostError):  # a pending job is held by no one
        store.mark_cancelled("c", "w1", T0 + 1)


def test_manual_retry_of_failed_and_cancelled_jobs(store: JobStore) -> None:
    store.insert_many([mk("f", max_attempts=1), mk("c")])
    claim_one(store, "f")
    store.fail("f", "w1", T0 + 1, "boom")
    store.cancel("c", T0 + 1)

    again = store.retry("f", T0 + 5)
    assert again.state is JobState.PENDING and again.attempt == 0 and again.run_at == T0 + 5
    assert again.finished_at is None and again.last_error == "boom"
    assert store.retry("c", T0 + 5, run_at=T0 + 60).run_at == T0 + 60
    assert ids(store.claim_due("w1", T0 + 5, limit=5, lease_seconds=LEASE)) == ["f"]


def test_illegal_transitions_raise_and_change_nothing(store: JobStore) -> None:
    store.insert_many([mk("p"), mk("r"), mk("s")])
    claim_one(store, "r")
    claim_one(store, "s")
    store.complete("s", "w1", T0 + 1)
    before = {job_id: store.get(job_id) for job_id in ("p", "r", "s")}
    for job_id, words in (("p", "pending -> pending"), ("r", "running -> pending")):
        with pytest.raises(IllegalTransitionError, match=words):
            store.retry(job_id, T0 + 2)
    with pytest.raises(IllegalTransitionError, match="succeeded -> pending"):
        store.retry("s", T0 + 2)
    with pytest.raises(IllegalTransitionError, match="succeeded -> cancelled"):
        store.mark_cancelled("s", None, T0 + 2)
    assert {job_id: store.get(job_id) for job_id in before} == before


def test_manual_retry_respects_the_idempotency_key(store: JobStore) -> None:
    store.insert(mk("old", idempotency_key="k"))
    store.cancel("old", T0 + 1)
    store.insert(mk("new", idempotency_key="k"))
    with pytest.raises(DuplicateJobError) as caught:
        store.retry("old", T0 + 2)
    assert caught.value.existing_id == "new"
    assert store.get("old").state is JobState.CANCELLED
    store.cancel("new", T0 + 3)
    assert store.retry("old", T0 + 4).state is JobState.PENDING


def test_fail_corrupt_marks_any_job_failed(store: JobStore) -> None:
    store.insert_many([mk("p", idempotency_key="k"), mk("r")])
    claim_one(store, "r")
    store.fail_corrupt("p", T0 + 1, "bad payload")
    store.fail_corrupt("r", T0 + 1, "bad payload")
    for job_id in ("p", "r"):
        job = store.get(job_id)
        assert job.state is JobState.FAILED and job.finished_at == T0 + 1
        assert job.last_error == "corrupt job: bad payload" and job.owner is None
    store.insert(mk("p2", idempotency_key="k"))  # a failed job frees its key
    with pytest.raises(UnknownJobError):
        store.fail_corrupt("nope", T0, "x")


# ---------------------------------------------------------------- due times, purge, close


def test_next_due_is_the_earliest_pending_run_at(store: JobStore) -> None:
    assert store.next_due() is None
    store.insert_many([mk("a", run_at=T0 + 30), mk("b", run_at=T0 + 10), mk("c", run_at=T0 + 20)])
    assert store.next_due() == T0 + 10
    claim_one(store, "b", now=T0 + 10)
    assert store.next_due() == T0 + 20
    store.cancel("c", T0)
    assert store.next_due() == T0 + 30


def test_purge_deletes_only_old_finished_jobs(store: JobStore) -> None:
    store.insert_many([mk("old"), mk("new"), mk("pending"), mk("running")])
    claim_one(store, "old")
    claim_one(store, "running")
    store.complete("old", "w1", T0 + 10)
    store.cancel("new", T0 + 20)
    assert store.purge(T0 + 10) == 0  # strictly before
    assert store.purge(T0 + 15) == 1
    assert sorted(ids(store.list_jobs().jobs)) == ["new", "pending", "running"]
    with pytest.raises(UnknownJobError):
        store.get("old")
    assert store.purge(T0 + 1000) == 1
    assert store.count_jobs() == 2


def test_a_closed_store_refuses_every_call(store: JobStore) -> None:
    store.insert(mk("a"))
    store.close()
    store.close()  # idempotent
    with pytest.raises(ClosedError):
        store.get("a")
    with pytest.raises(ClosedError):
        store.insert(mk("b"))
    with pytest.raises(ClosedError):
        store.claim_due("w", T0, limit=1, lease_seconds=LEASE)
    with pytest.raises(ClosedError):
        store.list_jobs()


# ---------------------------------------------------------------- failing writes


def test_a_failed_write_changes_nothing_and_can_be_retried(store: JobStore, faults: Faults) -> None:
    faults.fail_next = 1
    with pytest.raises(StoreError, match="injected failure") as caught:
        store.insert_many([mk("a"), mk("b")])
    assert isinstance(caught.value.cause, OSError)
    assert store.count_jobs() == 0

    store.insert(mk("a"))
    claim_one(store, "a")
    faults.fail_next = 2
    with pytest.raises(StoreError):
        store.complete("a", "w1", T0 + 1, b"r")
    assert store.get("a").state is JobState.RUNNING

    sleeps: list[float] = []
    retries: list[int] = []
    policy = RetryPolicy(max_attempts=3, initial_delay=0.5, ratio=2.0, jitter=0.0)
    done = retry_call(
        lambda: store.complete("a", "w1", T0 + 1, b"r"),
        policy,
        sleep=sleeps.append,
        on_retry=lambda n, exc, delay: retries.append(n),
    )
    assert done.state is JobState.SUCCEEDED and store.get("a") == done
    assert sleeps == [0.5] and retries == [1]


# ---------------------------------------------------------------- stores agree


JOB_SPECS = st.tuples(
    st.integers(-2, 2),  # priority
    st.sampled_from([0.0, 1.0, 5.0]),  # delay
    st.sampled_from([None, None, None, None, "k1", "k2"]),  # idempotency key
    st.integers(1, 3),  # max attempts
)
# Every step first moves the clock by one of these.
STEPS = st.sampled_from([0.0, 0.0, 0.5, 1.0, 3.0])


class StoresAgree(RuleBasedStateMachine):
    """Random operations on a memory store and an SQLite store: every answer must match."""

    LEASE = 2.0  # short, so that leases expire often

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(_HYPOTHESIS_DIR[0])
        self.stores: list[JobStore] = []
        self.now = T0
        self.count = 0

    @initialize(specs=st.lists(JOB_SPECS, min_size=3, max_size=8))
    def open_stores(self, specs: list[tuple[int, float, str | None, int]]) -> None:
        path = self.directory / f"agree-{new_job_id()}.db"
        self.stores = [MemoryJobStore(), SQLiteJobStore(path, synchronous="OFF")]
        for spec in specs:
            self.insert(0.0, [spec])

    def teardown(self) -> None:
        for made in self.stores:
            made.close()

    def both(self, call: Any) -> Any:
        """Run ``call`` on each store; results (or exception types and messages) must match."""
        outcomes = []
        for made in self.stores:
            try:
                outcomes.append(("ok", call(made)))
            except Exception as exc:
                outcomes.append(("error", (type(exc), str(exc))))
        assert outcomes[0] == outcomes[1], outcomes
        return outcomes[0]

    def pick(self, n: int, states: list[str] | None = None) -> str:
        """A job id: the n-th (mod) job in ``states`` (memory store's view), or a made-up one."""
        found = self.stores[0].list_jobs(states=states, limit=1000).jobs
        return found[n % len(found)].id if found else "missing"

    def holder(self, job_id: str, wrong: bool) -> str:
        """The owner holding ``job_id``, or (``wrong``) another owner."""
        try:
            owner = self.stores[0].get(job_id).owner
        except UnknownJobError:
            owner = None
        if owner is None or wrong:
            return "w2" if owner == "w1" else "w1"
        return owner

    @rule(dt=STEPS, specs=st.lists(JOB_SPECS, min_size=1, max_size=4))
    def insert(self, dt: float, specs: list[tuple[int, float, str | None, int]]) -> None:
        self.now += dt
        jobs = [
            mk(
                f"j{self.count + i}",
                now=self.now,
                priority=priority,
                run_at=self.now + delay,
                idempotency_key=key,
                max_attempts=attempts,
            )
            for i, (priority, delay, key, attempts) in enumerate(specs)
        ]
        if len(jobs) == 1:
            outcome = self.both(lambda s: s.insert(jobs[0]))
        else:
            outcome = self.both(lambda s: s.insert_many(jobs))
        if outcome[0] == "ok":
            self.count += len(jobs)

    @rule(dt=STEPS, owner=st.sampled_from(["w1", "w2"]), limit=st.integers(1, 3))
    def claim_due(self, dt: float, owner: str, limit: int) -> None:
        self.now += dt
        self.both(lambda s: s.claim_due(owner, self.now, limit=limit, lease_seconds=self.LEASE))

    @rule(dt=STEPS, n=st.integers(0, 50), owner=st.sampled_from(["w1", "w2"]))
    def claim(self, dt: float, n: int, owner: str) -> None:
        self.now += dt
        job_id = self.pick(n, ["pending"])
        self.both(lambda s: s.claim(job_id, owner, self.now, lease_seconds=self.LEASE))

    @rule(dt=STEPS, n=st.integers(0, 50), wrong=st.booleans())
    def complete(self, dt: float, n: int, wrong: bool) -> None:
        self.now += dt
        job_id = self.pick(n, ["running"])
        owner = self.holder(job_id, wrong)
        self.both(lambda s: s.complete(job_id, owner, self.now, b"r"))

    @rule(dt=STEPS, n=st.integers(0, 50), wrong=st.booleans(), retry=st.booleans())
    def fail(self, dt: float, n: int, wrong: bool, retry: bool) -> None:
        self.now += dt
        job_id = self.pick(n, ["running"])
        owner = self.holder(job_id, wrong)
        retry_at = self.now + 1 if retry else None
        self.both(lambda s: s.fail(job_id, owner, self.now, "e", retry_at=retry_at))

    @rule(dt=STEPS, n=st.integers(0, 50))
    def cancel(self, dt: float, n: int) -> None:
        self.now += dt
        job_id = self.pick(n)
        self.both(lambda s: s.cancel(job_id, self.now))

    @rule(dt=STEPS, n=st.integers(0, 50), forced=st.booleans())
    def mark_cancelled(self, dt: float, n: int, forced: bool) -> None:
        self.now += dt
        job_id = self.pick(n, None if forced else ["running"])
        owner = None if forced else self.holder(job_id, False)
        self.both(lambda s: s.mark_cancelled(job_id, owner, self.now))

    @rule(dt=STEPS, n=st.integers(0, 50), any_state=st.booleans())
    def retry(self, dt: float, n: int, any_state: bool) -> None:
        self.now += dt
        job_id = self.pick(n, None if any_state else ["failed", "cancelled"])
        self.both(lambda s: s.retry(job_id, self.now))

    @rule(dt=STEPS, owner=st.sampled_from(["w1", "w2"]))
    def renew(self, dt: float, owner: str) -> None:
        self.now += dt
        every = [f"j{i}" for i in range(self.count)]
        self.both(lambda s: s.renew_leases(owner, every, self.now, lease_seconds=self.LEASE))

    @rule(dt=STEPS)
    def recover(self, dt: float) -> None:
        self.now += dt
        self.both(lambda s: s.recover_expired(self.now))

    @rule(dt=STEPS)
    def purge(self, dt: float) -> None:
        self.now += dt
        self.both(lambda s: s.purge(self.now - 5))

    @rule(dt=STEPS, key=st.integers(1, 2), window=st.sampled_from([3.0, 30.0]))
    def insert_unique(self, dt: float, key: int, window: float) -> None:
        self.now += dt
        job = with_uniqueness(mk(f"j{self.count}", now=self.now), {"k": key}, window)
        if self.both(lambda s: s.insert(job))[0] == "ok":
            self.count += 1

    @rule(
        dt=STEPS,
        misfire=st.sampled_from(["once", "all", "skip"]),
        every=st.sampled_from([1.0, 2.5]),
    )
    def put_schedule(self, dt: float, misfire: str, every: float) -> None:
        self.now += dt
        schedule = Schedule(
            name="s",
            type="t",
            every=every,
            misfire=misfire,
            misfire_grace=1.0,
            next_run_at=self.now + every,
            created_at=self.now,
            updated_at=self.now,
        )
        self.both(lambda s: s.put_schedule(schedule))

    @rule(dt=STEPS)
    def fire_schedule(self, dt: float) -> None:
        self.now += dt
        self.both(lambda s: s.fire_schedule("s", self.now))

    @invariant()
    def same_jobs(self) -> None:
        if self.stores:
            self.both(lambda s: s.list_schedules())
            self.both(lambda s: s.list_jobs(limit=1000))
            self.both(lambda s: s.count_jobs(states=["pending", "running"]))
            self.both(lambda s: s.next_due())
            for key in ("k1", "k2"):
                self.both(lambda s, key=key: s.find_by_idempotency_key(key))


_HYPOTHESIS_DIR: list[str] = []  # where the machine puts its SQLite files


def test_memory_and_sqlite_stores_agree(tmp_path: Path) -> None:
    _HYPOTHESIS_DIR[:] = [str(tmp_path)]
    StoresAgree.TestCase.settings = settings(
        max_examples=60,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    StoresAgree.TestCase().runTest()
