"""A lone submitter commits on its own thread; concurrent ones still commit together.

(ManagerCore._insert: the inline fast path and the group commit behind it.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from taskrunner import ThreadPool
from taskrunner.jobs import JobManager, MemoryJobStore, StoreError
from taskrunner.jobs.model import Job

WAIT = 30.0

pytestmark = [pytest.mark.thread_unsafe(reason="each test owns its manager, store and pool")]


class RecordingStore(MemoryJobStore):
    """Records the thread and size of each insert; the first may be held at a gate."""

    def __init__(self, *, hold_first: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[tuple[str, int]] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        if not hold_first:
            self.gate.set()
        self._first = True

    def insert_many(self, jobs: Sequence[Job]) -> None:
        self.calls.append((threading.current_thread().name, len(jobs)))
        if self._first:
            self._first = False
            self.entered.set()
            assert self.gate.wait(WAIT)
        super().insert_many(jobs)

    def insert(self, job: Job) -> None:
        self.insert_many([job])


@pytest.fixture
def pool() -> Iterator[ThreadPool]:
    p = ThreadPool(2, name="inline").start()
    yield p
    p.shutdown(timeout=WAIT)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_a_lone_submit_commits_on_the_callers_thread(pool: ThreadPool) -> None:
    store = RecordingStore()
    manager = JobManager(store, pool)
    manager.register("noop", lambda ctx, args: None)
    handle = manager.submit("noop")
    assert store.calls == [(threading.current_thread().name, 1)]
    assert store.get(handle.id).type == "noop"
    manager.shutdown()


def test_submits_arriving_during_an_inline_commit_are_committed_together(
    pool: ThreadPool,
) -> None:
    store = RecordingStore(hold_first=True)
    manager = JobManager(store, pool)
    manager.register("noop", lambda ctx, args: None)
    first = threading.Thread(target=manager.submit, args=("noop",), name="first")
    first.start()
    assert store.entered.wait(WAIT)  # committing inline, held at the gate
    io_busy = threading.Event()  # hold the IO layer too, so that the others all queue
    manager._io_runner.post_task(lambda: io_busy.wait(WAIT))
    others = [
        threading.Thread(target=manager.submit, args=("noop",), name=f"other-{i}") for i in range(3)
    ]
    for t in others:
        t.start()
    wait_for(lambda: len(manager._pending_inserts) == 3, "the others to queue")
    store.gate.set()
    io_busy.set()
    for t in [first, *others]:
        t.join(WAIT)
        assert not t.is_alive()
    assert store.calls[0] == ("first", 1)
    assert [n for _, n in store.calls[1:]] == [3]  # one group commit for the three
    assert store.count_jobs() == 4
    manager.shutdown()


def test_a_failed_inline_commit_is_retried_by_the_io_layer(pool: ThreadPool) -> None:
    failures = [StoreError("disk full")]

    def inject(operation: str) -> None:
        if operation == "insert" and failures:
            raise failures.pop()

    store = RecordingStore(fault_injector=inject)
    manager = JobManager(store, pool)
    manager.register("noop", lambda ctx, args: None)
    handle = manager.submit("noop")
    assert store.get(handle.id).type == "noop"
    assert manager.stats()["store_retries"] >= 1
    assert store.calls[0][0] == threading.current_thread().name
    assert store.calls[-1][0] != threading.current_thread().name  # the IO layer's retry
    manager.shutdown()
