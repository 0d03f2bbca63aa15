"""No ready task stays hidden behind a long task in a worker's batch.

Tasks posted before ``start()`` (``ThreadPool(start=False)``), or while the
workers are slow to wake, are popped in batches; a task that blocks must not
keep the rest of its batch from an idle worker (see taskrunner/runtime/pool/batch_watch.py).
"""

from __future__ import annotations

import collections
import gc
import threading
import time
import weakref

import pytest

from taskrunner import ThreadPool

WAIT = 20.0


@pytest.mark.parametrize("workers", [2, 4, 8])
def test_tasks_that_meet_at_a_barrier_all_run_at_once(workers: int) -> None:
    pool = ThreadPool(workers, name="meet", start=False)
    barrier = threading.Barrier(workers)
    met: list[bool] = []
    lock = threading.Lock()

    def meet() -> None:
        try:
            barrier.wait(WAIT)
            ok = True
        except threading.BrokenBarrierError:
            ok = False
        with lock:
            met.append(ok)

    for _ in range(workers):
        pool.post_task(meet)  # queued before start: the first worker pops them all
    pool.start()
    try:
        assert pool.wait_idle(2 * WAIT)
        assert met == [True] * workers
        assert pool._batch_watch.rescued > 0  # the idle workers got them from the watch
    finally:
        pool.shutdown(timeout=WAIT)


def test_a_task_waiting_for_a_later_one_in_its_batch_is_not_deadlocked() -> None:
    pool = ThreadPool(2, name="dep", start=False)
    second_ran = threading.Event()
    first_saw: list[bool] = []
    pool.post_task(lambda: first_saw.append(second_ran.wait(WAIT)))
    for _ in range(5):
        pool.post_task(lambda: None)
    pool.post_task(second_ran.set)
    pool.start()
    try:
        assert pool.wait_idle(2 * WAIT)
        assert first_saw == [True]
    finally:
        pool.shutdown(timeout=WAIT)


def test_rescued_tasks_run_exactly_once_and_wait_idle_stays_exact() -> None:
    pool = ThreadPool(2, name="once", batch_size=64, start=False)
    runs: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()

    def work(i: int) -> None:
        if i % 50 == 0:
            time.sleep(0.01)  # long enough for the watch to re-queue the batch
        with lock:
            runs[i] += 1

    n = 2000
    for i in range(n):
        pool.post_task(work, i)
    pool.start()
    try:
        assert pool.wait_idle(60)
        assert len(runs) == n
        assert set(runs.values()) == {1}
        assert pool.stats()["completed"] == n
        # The duplicates were popped and completed too: the pool is idle now.
        assert pool.wait_idle(0)
    finally:
        report = pool.shutdown(timeout=WAIT)
    assert report is not None and report.drained


def test_the_watch_thread_ends_at_shutdown_and_the_pool_is_collected() -> None:
    pool = ThreadPool(2, name="gone", start=False)
    release = threading.Event()
    pool.post_task(release.wait, WAIT)
    pool.post_task(lambda: None)
    pool.start()
    deadline = time.monotonic() + WAIT
    while pool._batch_watch._thread is None and time.monotonic() < deadline:
        time.sleep(0.001)
    thread = pool._batch_watch._thread
    assert thread is not None
    release.set()
    pool.shutdown(timeout=WAIT)
    thread.join(WAIT)
    assert not thread.is_alive()
    collected = threading.Event()
    weakref.finalize(pool, collected.set)
    del pool
    gc.collect()
    assert collected.is_set()


def test_the_watch_remembers_tokens_not_tasks() -> None:
    """Between two looks the watch must hold no task: a finished task (and the
    runner its run loop belongs to) would stay alive until the next look."""
    from taskrunner.runtime.pool.batch_watch import BatchWatch
    from taskrunner.runtime.pool.workers import Worker

    class Running:
        token = 41

    worker = Worker()
    task = Running()
    worker.current = task  # type: ignore[assignment]
    worker.batch = [41, 42]
    watch = BatchWatch("unit", None, lambda: [worker], lambda token: False, 1_000_000)
    assert watch._look()  # a first look: remembers what it saw
    assert worker.seen_current == 41 and worker.seen_batch is worker.batch
    gone = threading.Event()
    weakref.finalize(task, gone.set)
    worker.current = None
    del task
    gc.collect()
    assert gone.is_set(), "the watch keeps the task it saw running"


def test_an_urgent_task_still_preempts_a_batch_the_watch_requeued() -> None:
    """Preemption holds after a steal: the worker leaves the re-queued rest in
    the queue, so the urgent task runs before it, and each task runs once."""
    from taskrunner import TaskPriority, TaskTraits

    user_visible = TaskTraits(priority=TaskPriority.USER_VISIBLE)
    pool = ThreadPool(1, name="preempt-watched", best_effort_limit=0, batch_size=64, start=False)
    order: list[str] = []
    first_ran, release_first = threading.Event(), threading.Event()

    def first() -> None:
        order.append("uv0")
        first_ran.set()
        release_first.wait(WAIT)

    pool.post_task(first, traits=user_visible)
    for i in range(1, 10):
        pool.post_task(order.append, f"uv{i}", traits=user_visible)
    pool.start()
    try:
        assert first_ran.wait(WAIT)  # the one worker holds uv1..uv9 in its batch
        # With no idle worker the watch steals nothing; steal as it would with one.
        (worker,) = pool._cpu.workers
        assert worker.batch is not None
        pool._batch_watch._steal(worker, worker.batch)
        assert pool._batch_watch.rescued == 9  # the watch queued them again
        pool.post_task(order.append, "ub", traits=TaskTraits(priority=TaskPriority.USER_BLOCKING))
        release_first.set()
        assert pool.wait_idle(WAIT)
        assert order == ["uv0", "ub"] + [f"uv{i}" for i in range(1, 10)]
        assert pool.stats()["completed"] == 11
    finally:
        release_first.set()
        pool.shutdown(timeout=WAIT)


def test_close_during_a_look_that_disarms_ends_the_watch() -> None:
    """close() racing the watch's own disarm: the watch must not clear the wake-up
    that close() just gave it (it slept for ever and shutdown hung in the join)."""
    from taskrunner.runtime.pool.batch_watch import BatchWatch

    in_look, proceed = threading.Event(), threading.Event()

    class Racing(BatchWatch):
        def _look(self) -> bool:
            in_look.set()
            proceed.wait(WAIT)
            return False  # no batch held: the watch disarms

    watch = Racing("race", None, lambda: [], lambda token: False, 1_000_000)
    watch.arm()
    assert in_look.wait(WAIT)
    closer = threading.Thread(target=watch.close, kwargs={"timeout": None}, daemon=True)
    closer.start()
    deadline = time.monotonic() + WAIT
    while not watch._closed and time.monotonic() < deadline:
        time.sleep(0.001)
    proceed.set()
    closer.join(WAIT)
    assert not closer.is_alive(), "close() waits for a watch thread that sleeps for ever"


def test_a_one_worker_pool_keeps_fifo_order_when_a_task_is_slow() -> None:
    """With no idle worker the watch steals nothing, so order is kept (a steal
    would queue the rest again behind later posts)."""
    pool = ThreadPool(1, name="fifo-slow", start=False)
    seen: list[int] = []

    def task(i: int) -> None:
        if i % 40 == 0:
            time.sleep(0.005)  # longer than the watch's hold
        seen.append(i)

    pool.post_tasks(task, [(i,) for i in range(200)])
    pool.start()
    pool.post_tasks(task, [(i,) for i in range(200, 400)])
    try:
        assert pool.wait_idle(WAIT)
        assert seen == list(range(400))
        assert pool._batch_watch.rescued == 0
    finally:
        pool.shutdown(timeout=WAIT)
