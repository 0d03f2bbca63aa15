"""post_tasks: many tasks of one callable, queued in chunks with one C call each."""

from __future__ import annotations

import collections
import contextvars
import threading

import pytest

from taskrunner import (
    RunnerClosedError,
    SequencedTaskRunner,
    SingleThreadTaskRunner,
    TaskPriority,
    TaskState,
    TaskTraits,
    ThreadPool,
)
from taskrunner.runtime.metrics import InProcessMetrics
from taskrunner.runtime.pool.batch_post import CHUNK

WAIT = 30.0


def test_every_task_runs_once_in_order_on_one_worker() -> None:
    seen: list[int] = []
    with ThreadPool(1) as pool:
        handles = pool.post_tasks(seen.append, [(i,) for i in range(3 * CHUNK + 7)])
        assert pool.wait_idle(WAIT)
    assert seen == list(range(3 * CHUNK + 7))
    assert all(h.state is TaskState.SUCCEEDED for h in handles)
    assert len({h.token for h in handles}) == len(handles)


def test_a_bad_item_is_named_and_nothing_is_posted() -> None:
    ran: list[object] = []
    with ThreadPool(2) as pool:
        with pytest.raises(TypeError, match="item 2 must be a tuple"):
            pool.post_tasks(ran.append, [(1,), (2,), 3, (4,)])  # type: ignore[list-item]
        with pytest.raises(TypeError, match="not a string"):
            pool.post_tasks(ran.append, "abc")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="callable"):
            pool.post_tasks(42, [()])  # type: ignore[arg-type]
        assert pool.wait_idle(WAIT)
        assert pool.stats()["completed"] == 0
    assert ran == []


def test_after_shutdown_it_raises() -> None:
    pool = ThreadPool(1)
    pool.shutdown()
    with pytest.raises(RunnerClosedError):
        pool.post_tasks(print, [()])


def test_each_task_gets_its_own_copy_of_the_callers_context() -> None:
    var: contextvars.ContextVar[int] = contextvars.ContextVar("var", default=0)
    var.set(7)
    seen: list[int] = []
    lock = threading.Lock()

    def task(i: int) -> None:
        with lock:
            seen.append(var.get())
        var.set(i)  # must not leak into the other tasks

    with ThreadPool(2) as pool:
        pool.post_tasks(task, [(i,) for i in range(500)])
        assert pool.wait_idle(WAIT)
    assert seen == [7] * 500


def test_handles_cancel_and_priorities_order_the_queue() -> None:
    order: list[str] = []
    pool = ThreadPool(1, start=False)
    low = pool.post_tasks(order.append, [("low",)] * 3, traits=TaskTraits(TaskPriority.BEST_EFFORT))
    high = pool.post_tasks(
        order.append, [("high",)] * 3, traits=TaskTraits(TaskPriority.USER_BLOCKING)
    )
    assert low[1].cancel()
    pool.start()
    assert pool.wait_idle(WAIT)
    pool.shutdown()
    assert order == ["high"] * 3 + ["low"] * 2
    assert [h.state for h in low] == [TaskState.SUCCEEDED, TaskState.CANCELLED, TaskState.SUCCEEDED]
    assert all(h.state is TaskState.SUCCEEDED for h in high)


def test_blocking_and_categorised_tasks_go_one_by_one_through_their_groups() -> None:
    seen: list[int] = []
    lock = threading.Lock()

    def task(i: int) -> None:
        with lock:
            seen.append(i)

    with ThreadPool(2, category_limits={"io": 1}) as pool:
        pool.post_tasks(task, [(i,) for i in range(50)], traits=TaskTraits(may_block=True))
        pool.post_tasks(task, [(i,) for i in range(50, 100)], traits=TaskTraits(category="io"))
        assert pool.wait_idle(WAIT)
    assert sorted(seen) == list(range(100))


def test_metrics_count_every_posted_task() -> None:
    metrics = InProcessMetrics()
    with ThreadPool(2, name="batchm", metrics=metrics) as pool:
        pool.post_tasks(int, [()] * 2500)
        assert pool.wait_idle(WAIT)
        pool.flush_metrics()
    snap = metrics.snapshot()
    posted = sum(n for (runner, _p, _c), n in snap.posted.items() if runner == "batchm")
    assert posted == 2500


@pytest.mark.parametrize("kind", ["sequenced", "single_thread"])
def test_other_runners_post_in_order(kind: str) -> None:
    seen: list[int] = []
    with ThreadPool(2) as pool:
        runner = SequencedTaskRunner(pool) if kind == "sequenced" else SingleThreadTaskRunner(pool)
        handles = runner.post_tasks(seen.append, [(i,) for i in range(300)])
        assert runner.wait_idle(WAIT)
        runner.shutdown()
    assert seen == list(range(300))
    assert all(h.state is TaskState.SUCCEEDED for h in handles)


def test_batches_racing_a_shutdown_end_final_and_the_report_agrees() -> None:
    pool = ThreadPool(2)
    handles: list[object] = []
    refused = [0]
    lock = threading.Lock()
    started = threading.Barrier(5)

    def poster() -> None:
        started.wait(WAIT)
        for _ in range(200):
            try:
                got = pool.post_tasks(int, [()] * 64)
            except RunnerClosedError:
                with lock:
                    refused[0] += 1
                return
            with lock:
                handles.extend(got)

    threads = [threading.Thread(target=poster) for _ in range(4)]
    for t in threads:
        t.start()
    started.wait(WAIT)
    report = pool.shutdown(timeout=WAIT, cancel_pending=True)
    for t in threads:
        t.join(WAIT)
    states = collections.Counter(h.state for h in handles)  # type: ignore[attr-defined]
    assert set(states) <= {TaskState.SUCCEEDED, TaskState.DROPPED}
    assert report is not None
    assert report.dropped == states[TaskState.DROPPED]
    assert pool.stats()["completed"] == states[TaskState.SUCCEEDED]
