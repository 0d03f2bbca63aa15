"""Store maintenance (issue 19): delete one job, clear a store, on every store
of the JobStore contract (the same fixtures as test_job_store_contract)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_job_store_contract import STORE_KINDS, T0, Faults, claim_one, make_store, mk

from taskrunner.jobs import (
    DuplicateJobError,
    JobRunningError,
    JobState,
    JobStore,
    StoreError,
    UnknownJobError,
)

pytestmark = [
    pytest.mark.thread_unsafe(
        reason="each test drives one store from its own threads; a shared store would mix tests"
    )
]


@pytest.fixture
def faults() -> Faults:
    return Faults()


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path, faults: Faults) -> Iterator[JobStore]:
    made = make_store(request.param, tmp_path, faults)
    yield made
    made.close()


def test_delete_removes_one_job_in_any_state_but_running(store: JobStore) -> None:
    store.insert_many([mk("a"), mk("b"), mk("c"), mk("d")])
    claim_one(store, "b")
    store.complete("b", "w1", T0 + 1, b"ok")  # succeeded
    store.cancel("c", T0)
    deleted = store.delete("a")
    assert deleted.id == "a" and deleted.state is JobState.PENDING
    assert store.delete("b").state is JobState.SUCCEEDED
    assert store.delete("c").state is JobState.CANCELLED
    with pytest.raises(UnknownJobError):
        store.get("a")
    assert [j.id for j in store.list_jobs(limit=10).jobs] == ["d"]
    assert store.count_jobs() == 1
    with pytest.raises(UnknownJobError):
        store.delete("a")  # already gone


def test_delete_is_refused_while_the_job_runs(store: JobStore) -> None:
    store.insert(mk("r"))
    claim_one(store, "r")
    with pytest.raises(JobRunningError, match="job r is running") as info:
        store.delete("r")
    assert info.value.job_id == "r"
    assert store.get("r").state is JobState.RUNNING  # nothing deleted


def test_delete_frees_the_idempotency_key(store: JobStore) -> None:
    store.insert(mk("k1", idempotency_key="key"))
    with pytest.raises(DuplicateJobError):
        store.insert(mk("k2", idempotency_key="key"))
    store.delete("k1")
    store.insert(mk("k2", idempotency_key="key"))
    assert store.find_by_idempotency_key("key") is not None


def test_delete_of_a_bad_id_is_refused(store: JobStore) -> None:
    with pytest.raises((TypeError, ValueError)):
        store.delete("")


def test_clear_deletes_everything_and_counts(store: JobStore) -> None:
    assert store.clear() == 0
    store.insert_many([mk(f"j{i}", idempotency_key=f"k{i}") for i in range(5)])
    claim_one(store, "j0")
    store.complete("j0", "w1", T0 + 1, None)
    assert store.clear() == 5
    assert store.count_jobs() == 0 and store.next_due() is None
    store.insert(mk("again", idempotency_key="k1"))  # keys were freed
    assert store.count_jobs() == 1


def test_clear_is_refused_while_any_job_runs(store: JobStore) -> None:
    store.insert_many([mk("p"), mk("r")])
    claim_one(store, "r")
    with pytest.raises(JobRunningError, match="clear refused: job r is running"):
        store.clear()
    assert store.count_jobs() == 2  # nothing deleted
    store.fail("r", "w1", T0 + 1, "boom", None, retry_at=None)
    assert store.clear() == 2


def test_a_failed_delete_or_clear_changes_nothing(store: JobStore, faults: Faults) -> None:
    store.insert_many([mk("a"), mk("b")])
    faults.fail_next = 1
    with pytest.raises(StoreError):
        store.delete("a")
    faults.fail_next = 1
    with pytest.raises(StoreError):
        store.clear()
    assert store.count_jobs() == 2
    assert store.get("a").state is JobState.PENDING
