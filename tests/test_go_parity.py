"""The features of the Go original (Swind/go-task-runner) that issue 19 adds:
wait_shutdown, task-and-reply completions, the default pool, flush_async, the
EventBus helpers live in their own files where they are large.

Waits use events with generous timeouts; nothing asserts a duration.
"""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator

import pytest

from taskrunner import (
    NO_REPLY,
    NoCurrentTaskRunnerError,
    ParallelTaskRunner,
    RunnerClosedError,
    SequencedTaskRunner,
    SingleThreadTaskRunner,
    Task,
    TaskRunner,
    TaskState,
    ThreadPool,
    current_task_runner,
    current_task_runner_or_none,
)
from taskrunner.runtime.rejections import RejectReason

WAIT = 10.0
KINDS = ["pool", "sequenced", "parallel", "single_thread", "asyncio"]


def make(kind: str, pool: ThreadPool) -> TaskRunner:
    if kind == "pool":
        return pool
    if kind == "sequenced":
        return SequencedTaskRunner(pool)
    if kind == "parallel":
        return ParallelTaskRunner(pool, 2)
    if kind == "single_thread":
        return SingleThreadTaskRunner(pool)
    raise AssertionError(kind)


@pytest.fixture
def pool() -> Iterator[ThreadPool]:
    p = ThreadPool(2, name="parity")
    yield p
    p.shutdown(timeout=WAIT)


# ---- wait_shutdown ---------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS[:4])
def test_wait_shutdown_times_out_while_open(kind: str, pool: ThreadPool) -> None:
    runner = make(kind, pool)
    assert runner.wait_shutdown(timeout=0.01) is False


@pytest.mark.thread_unsafe(reason="changes the shared pool fixture (kind=pool)")
@pytest.mark.parametrize("kind", KINDS[:4])
def test_wait_shutdown_wakes_every_waiter(kind: str, pool: ThreadPool) -> None:
    runner = make(kind, pool)
    results: list[bool] = []
    lock = threading.Lock()
    started = threading.Barrier(4)

    def waiter() -> None:
        started.wait(WAIT)
        ok = runner.wait_shutdown(timeout=WAIT)
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=waiter) for _ in range(3)]
    for t in threads:
        t.start()
    started.wait(WAIT)
    runner.shutdown(timeout=WAIT)
    for t in threads:
        t.join(WAIT)
    assert results == [True, True, True]
    assert runner.wait_shutdown(timeout=0) is True  # already shut down: at once


@pytest.mark.parametrize("kind", ["sequenced", "parallel", "single_thread"])
def test_pool_shutdown_reaches_wait_shutdown_of_its_runners(kind: str) -> None:
    pool = ThreadPool(2, name="parity-reach")
    runner = make(kind, pool)
    woke = threading.Event()

    def waiter() -> None:
        if runner.wait_shutdown(timeout=WAIT):
            woke.set()

    t = threading.Thread(target=waiter)
    t.start()
    pool.shutdown(timeout=WAIT)
    t.join(WAIT)
    assert woke.is_set()


def test_wait_shutdown_of_the_asyncio_runner() -> None:
    import asyncio

    from taskrunner import AsyncioTaskRunner

    loop = asyncio.new_event_loop()
    try:
        runner = AsyncioTaskRunner(loop)
        assert runner.wait_shutdown(timeout=0.01) is False
        woke = threading.Event()
        t = threading.Thread(target=lambda: runner.wait_shutdown(WAIT) and woke.set())
        t.start()
        runner.shutdown(wait=False)
        t.join(WAIT)
        assert woke.is_set()
    finally:
        loop.close()


# ---- task-and-reply completions ---------------------------------------------------


def test_delayed_task_and_reply_runs_at_its_mock_time() -> None:
    from taskrunner.testing import TaskEnvironment

    with TaskEnvironment() as env:
        worker = SequencedTaskRunner(env.pool, name="worker")
        home = SequencedTaskRunner(env.pool, name="home")
        seen: list[tuple[str, float, str]] = []

        def task() -> None:
            seen.append(("task", env.now(), current_task_runner().name))

        def reply() -> None:
            seen.append(("reply", env.now(), current_task_runner().name))

        worker.post_delayed_task_and_reply(task, reply, 2.0, reply_runner=home)
        env.fast_forward(1.999)
        assert seen == []
        env.fast_forward(0.001)
        assert seen == [("task", 2.0, "worker"), ("reply", 2.0, "home")]


def test_delayed_task_and_reply_with_result() -> None:
    from taskrunner.testing import TaskEnvironment

    with TaskEnvironment() as env:
        worker = SequencedTaskRunner(env.pool)
        home = SequencedTaskRunner(env.pool, name="home")
        got: list[tuple[int, str]] = []
        future = worker.post_delayed_task_and_reply_with_result(
            lambda: 6 * 7,
            lambda r: got.append((r, current_task_runner().name)),
            0.5,
            reply_runner=home,
        )
        env.run_until_idle()
        assert not future.done() and got == []
        env.fast_forward(0.5)
        assert future.result(timeout=0) == 42
        assert got == [(42, "home")]


def test_delayed_reply_runner_defaults_to_the_posting_task_s_runner() -> None:
    from taskrunner.testing import TaskEnvironment

    with TaskEnvironment() as env:
        worker = SequencedTaskRunner(env.pool)
        home = SequencedTaskRunner(env.pool, name="home")
        where: list[str] = []

        def post_from_home() -> None:
            worker.post_delayed_task_and_reply(
                lambda: None, lambda: where.append(current_task_runner().name), 1.0
            )

        home.post_task(post_from_home)
        env.fast_forward_until_idle()
        assert where == ["home"]


def test_cancelling_a_delayed_task_and_reply_future_cancels_both() -> None:
    from taskrunner.testing import TaskEnvironment

    with TaskEnvironment() as env:
        ran: list[str] = []
        future = env.pool.post_delayed_task_and_reply_with_result(
            lambda: ran.append("task"),
            lambda _: ran.append("reply"),
            1.0,
            reply_runner=env.pool,
        )
        assert future.cancel()
        env.fast_forward_until_idle()
        assert ran == []


def test_no_reply_runner_outside_a_task_raises_unless_no_reply(pool: ThreadPool) -> None:
    with pytest.raises(NoCurrentTaskRunnerError):
        pool.post_task_and_reply(lambda: None, lambda: None)
    ran = threading.Event()
    replied: list[int] = []
    pool.post_task_and_reply(ran.set, lambda: replied.append(1), reply_runner=NO_REPLY)
    assert ran.wait(WAIT)
    future = pool.post_task_and_reply_with_result(
        lambda: 7, replied.append, reply_runner=current_task_runner_or_none() or NO_REPLY
    )
    assert future.result(WAIT) == 7
    assert pool.flush(WAIT)
    assert replied == []


def test_task_and_reply_bad_arguments(pool: ThreadPool) -> None:
    with pytest.raises(TypeError, match="reply must be callable"):
        pool.post_task_and_reply(lambda: None, 3, reply_runner=pool)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="reply_runner must be"):
        pool.post_task_and_reply(lambda: None, lambda: None, reply_runner="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        pool.post_delayed_task_and_reply(lambda: None, lambda: None, -1.0, reply_runner=pool)


# ---- flush_async -------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS[:4])
def test_flush_async_calls_back_after_the_earlier_tasks(kind: str, pool: ThreadPool) -> None:
    runner = make(kind, pool)
    gate = threading.Event()
    finished: list[int] = []
    lock = threading.Lock()

    def slow(n: int) -> None:
        gate.wait(WAIT)
        with lock:
            finished.append(n)

    for n in range(3):
        runner.post_task(slow, n)
    seen_at_callback: list[list[int]] = []
    called = threading.Event()

    def callback() -> None:
        with lock:
            seen_at_callback.append(sorted(finished))
        called.set()

    assert runner.flush_async(callback) is True
    assert not called.is_set()
    gate.set()
    assert called.wait(WAIT)
    assert seen_at_callback == [[0, 1, 2]]
    if kind != "pool":
        runner.shutdown(timeout=WAIT)


@pytest.mark.parametrize("kind", KINDS[:4])
def test_flush_async_never_calls_back_on_a_closed_runner(kind: str) -> None:
    pool = ThreadPool(2, name="parity-closed")
    runner = make(kind, pool)
    gate = threading.Event()
    started = threading.Event()
    called: list[int] = []
    runner.post_task(lambda: (started.set(), gate.wait(WAIT)))
    assert started.wait(WAIT)
    assert runner.flush_async(lambda: called.append(1)) is True
    shutting = threading.Thread(target=runner.shutdown, kwargs={"timeout": WAIT})
    shutting.start()
    assert runner.wait_shutdown(WAIT)
    gate.set()
    shutting.join(WAIT)
    pool.shutdown(timeout=WAIT)
    assert runner.flush_async(lambda: called.append(2)) is False
    assert called == []


def test_flush_async_callback_that_raises_goes_to_the_error_handler() -> None:
    errors: list[BaseException] = []
    pool = ThreadPool(2, name="parity-err", error_handler=lambda e, t: errors.append(e))
    try:
        seq = SequencedTaskRunner(pool)
        second = threading.Event()

        def bad() -> None:
            raise ValueError("barrier callback")

        assert seq.flush_async(bad)
        seq.post_task(lambda: None)
        assert seq.flush_async(second.set)
        assert second.wait(WAIT)
        assert len(errors) == 1 and isinstance(errors[0], ValueError)
    finally:
        pool.shutdown(timeout=WAIT)


@pytest.mark.parametrize("kind", KINDS[:4])
def test_flush_async_keeps_nothing_after(kind: str, pool: ThreadPool) -> None:
    runner = make(kind, pool)
    called = threading.Event()
    released = threading.Event()
    task_released = threading.Event()

    class Callback:
        def __call__(self) -> None:
            called.set()

    class Work:
        def __call__(self) -> None:
            pass

    work = Work()
    weakref.finalize(work, task_released.set)
    runner.post_task(work)
    del work
    callback = Callback()
    weakref.finalize(callback, released.set)
    assert runner.flush_async(callback)
    del callback
    assert called.wait(WAIT)
    assert runner.flush(WAIT) and pool.wait_idle(WAIT)
    gc.collect()
    assert released.is_set() and task_released.is_set()
    if kind != "pool":
        runner.shutdown(timeout=WAIT)


def test_flush_async_bad_callback(pool: ThreadPool) -> None:
    with pytest.raises(TypeError, match="callback must be callable"):
        pool.flush_async(3)  # type: ignore[arg-type]


# ---- a standalone single-thread runner -----------------------------------------------


@pytest.mark.thread_unsafe(reason="counts the process's threads")
def test_standalone_single_thread_runner_has_its_own_thread_and_timer() -> None:
    before = set(threading.enumerate())
    runner = SingleThreadTaskRunner(name="alone")
    try:
        idents: list[int] = []
        done = threading.Event()
        runner.post_task(lambda: idents.append(threading.get_ident()))
        runner.post_delayed_task(lambda: (idents.append(threading.get_ident()), done.set()), 0.01)
        assert done.wait(WAIT)
        assert idents == [runner.thread.ident] * 2
        assert runner.submit(lambda: 3).result(WAIT) == 3
        new = {t.name for t in set(threading.enumerate()) - before}
        assert new == {"alone", "alone-pool-timer"}  # nothing else: no pool workers
        assert runner.pool.name == "alone-pool"
    finally:
        report = runner.shutdown(timeout=WAIT)
    assert report.drained
    assert runner.pool.is_closed
    assert not runner.thread.is_alive()


def test_standalone_runner_shutdown_drops_its_delayed_tasks_and_is_collected() -> None:
    runner = SingleThreadTaskRunner()
    ran: list[int] = []
    handle = runner.post_delayed_task(lambda: ran.append(1), 3600.0)
    pool = runner.pool
    runner.shutdown(timeout=WAIT)
    assert handle.wait(WAIT) and handle.state.value == "dropped"
    gone = threading.Event()
    weakref.finalize(runner, gone.set)
    pool_gone = threading.Event()
    weakref.finalize(pool, pool_gone.set)
    del runner, pool, handle
    gc.collect()
    assert gone.is_set() and pool_gone.is_set() and ran == []


def test_standalone_runner_shuts_down_from_its_own_task() -> None:
    runner = SingleThreadTaskRunner()
    done = threading.Event()
    runner.post_task(lambda: (runner.shutdown(), done.set()))
    assert done.wait(WAIT)
    assert runner.wait_shutdown(WAIT)
    runner.thread.join(WAIT)
    assert not runner.thread.is_alive()
    assert runner.pool.wait_shutdown(WAIT)


# ---- ThreadPool(on_rejected=...) ----------------------------------------------------


class Rejections:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.seen: list[tuple[str, RejectReason, TaskState]] = []

    def __call__(self, task: Task, reason: RejectReason) -> None:
        with self.lock:
            self.seen.append((task.name, reason, task.state))
            self.changed.notify_all()

    def wait_for(self, count: int) -> bool:
        with self.lock:
            return self.changed.wait_for(lambda: len(self.seen) >= count, WAIT)


def test_pool_on_rejected_hears_posts_after_shutdown() -> None:
    rejected = Rejections()
    pool = ThreadPool(1, name="rej", on_rejected=rejected)
    pool.shutdown(timeout=WAIT)
    with pytest.raises(RunnerClosedError):
        pool.post_task(print, name="late")
    with pytest.raises(RunnerClosedError):
        pool.post_delayed_task(print, 1.0, name="late-delayed")
    with pytest.raises(RunnerClosedError):
        pool.submit(print, name="late-submit")
    assert rejected.seen == [
        ("late", RejectReason.CLOSED, TaskState.DROPPED),
        ("late-delayed", RejectReason.CLOSED, TaskState.DROPPED),
        ("late-submit", RejectReason.CLOSED, TaskState.DROPPED),
    ]


def test_pool_on_rejected_hears_what_shutdown_drops() -> None:
    rejected = Rejections()
    pool = ThreadPool(1, name="rej-drop", on_rejected=rejected)
    seq = SequencedTaskRunner(pool, name="seq")
    gate = threading.Event()
    started = threading.Event()
    pool.post_task(lambda: (started.set(), gate.wait(WAIT)), name="busy")
    assert started.wait(WAIT)
    pool.post_task(print, name="queued")
    pool.post_delayed_task(print, 3600.0, name="delayed")
    seq.post_task(print, name="seq-queued")
    shutting = threading.Thread(
        target=pool.shutdown, kwargs={"timeout": WAIT, "cancel_pending": True}
    )
    shutting.start()
    # A forceful shutdown drops them while "busy" still holds the only worker.
    assert rejected.wait_for(3)
    gate.set()
    shutting.join(WAIT)
    names = sorted(n for n, reason, state in rejected.seen if reason is RejectReason.SHUTDOWN)
    assert names == ["delayed", "queued", "seq-queued"]
    assert all(state is TaskState.DROPPED for _, _, state in rejected.seen)
    assert pool.stats()["dropped"] == 3


def test_pool_on_rejected_that_raises_is_logged_and_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def bad(task: Task, reason: RejectReason) -> None:
        raise ValueError("callback")

    pool = ThreadPool(1, name="rej-bad", on_rejected=bad)
    pool.shutdown(timeout=WAIT)
    with caplog.at_level("ERROR", logger="taskrunner.pool"), pytest.raises(RunnerClosedError):
        pool.post_task(print)
    assert "on_rejected failed" in caplog.text


def test_pool_on_rejected_must_be_callable() -> None:
    with pytest.raises(TypeError, match="on_rejected must be callable"):
        ThreadPool(1, on_rejected=3, start=False)  # type: ignore[arg-type]


# ---- runner name and metadata ---------------------------------------------------------


@pytest.mark.thread_unsafe(reason="changes the shared pool fixture (kind=pool)")
@pytest.mark.parametrize("kind", KINDS[:4])
def test_name_is_settable_and_shown(kind: str, pool: ThreadPool) -> None:
    runner = make(kind, pool)
    runner.name = "renamed"
    assert runner.name == "renamed"
    assert runner.stats()["name"] == "renamed"
    task = runner.post_task(lambda: None)
    assert task.runner.name == "renamed"
    with pytest.raises(TypeError, match="name must be a str"):
        runner.name = 3  # type: ignore[assignment]
    with pytest.raises(ValueError, match="must not be empty"):
        runner.name = ""
    assert runner.name == "renamed"
    runner.flush(WAIT)


@pytest.mark.thread_unsafe(reason="changes the shared pool fixture (kind=pool)")
@pytest.mark.parametrize("kind", KINDS[:4])
def test_metadata_is_a_copy_and_in_stats(kind: str, pool: ThreadPool) -> None:
    runner = make(kind, pool)
    assert runner.metadata == {} and runner.stats()["metadata"] == {}
    runner.metadata = {"team": "payments"}
    runner.set_metadata("shard", 3)
    copy = runner.metadata
    copy["team"] = "changed"
    assert runner.metadata == {"team": "payments", "shard": 3}
    assert runner.stats()["metadata"] == {"team": "payments", "shard": 3}
    with pytest.raises(TypeError, match="must be a mapping"):
        runner.metadata = [("a", 1)]  # type: ignore[assignment]
    with pytest.raises(TypeError, match="keys must be str"):
        runner.metadata = {1: "x"}  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="keys must be str"):
        runner.set_metadata(1, "x")  # type: ignore[arg-type]
    assert runner.metadata == {"team": "payments", "shard": 3}  # nothing half-written


def test_concurrent_set_metadata_loses_nothing(pool: ThreadPool) -> None:
    seq = SequencedTaskRunner(pool)
    barrier = threading.Barrier(4)

    def writer(i: int) -> None:
        barrier.wait(WAIT)
        for j in range(200):
            seq.set_metadata(f"{i}-{j}", j)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert len(seq.metadata) == 800


def test_error_log_carries_the_runner_name_and_metadata(pool: ThreadPool) -> None:
    import logging

    seq = SequencedTaskRunner(pool, name="before")
    seq.name = "after"
    seq.metadata = {"team": "ops"}
    records: list[logging.LogRecord] = []
    logged = threading.Event()

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "boom" in str(record.exc_info[1] if record.exc_info else ""):
                records.append(record)
                logged.set()

    logger = logging.getLogger("taskrunner.pool")
    handler = Catch(logging.ERROR)
    logger.addHandler(handler)
    try:

        def boom() -> None:
            raise ValueError("boom")

        seq.post_task(boom)
        assert logged.wait(WAIT)  # the log follows the task's end: wait for it
    finally:
        logger.removeHandler(handler)
    assert records[0].runner == "after"  # type: ignore[attr-defined]
    assert records[0].runner_metadata == {"team": "ops"}  # type: ignore[attr-defined]


def test_renamed_runner_reports_metrics_under_its_new_name() -> None:
    from taskrunner.runtime.metrics import InProcessMetrics

    metrics = InProcessMetrics()
    pool = ThreadPool(2, name="mpool", metrics=metrics)
    try:
        seq = SequencedTaskRunner(pool, name="old")
        seq.name = "new"
        seq.submit(lambda: None).result(WAIT)
        pool.name = "mpool2"
        pool.submit(lambda: None).result(WAIT)
        assert pool.flush(WAIT)
        pool.flush_metrics()
        sources = {name for name, _ in metrics._live_sources()}
        assert "new" in sources and "old" not in sources
        assert "mpool2" in sources and "mpool" not in sources
    finally:
        pool.shutdown(timeout=WAIT)


def test_flush_async_on_the_asyncio_runner() -> None:
    import asyncio

    from taskrunner import AsyncioTaskRunner

    async def main() -> list[str]:
        runner = AsyncioTaskRunner(asyncio.get_running_loop())
        order: list[str] = []
        done = asyncio.Event()
        runner.post_task(order.append, "task")
        assert runner.flush_async(lambda: (order.append("barrier"), done.set()))
        await asyncio.wait_for(done.wait(), WAIT)
        runner.shutdown(wait=False)
        assert runner.flush_async(lambda: order.append("late")) is False
        return order

    assert asyncio.run(main()) == ["task", "barrier"]


def test_pool_on_rejected_hears_post_tasks_after_shutdown() -> None:
    rejected = Rejections()
    pool = ThreadPool(1, name="rej-batch", on_rejected=rejected)
    pool.shutdown(timeout=WAIT)
    with pytest.raises(RunnerClosedError):
        pool.post_tasks(print, [(1,), (2,)], name="batch")
    assert rejected.seen == [("batch", RejectReason.CLOSED, TaskState.DROPPED)] * 2
