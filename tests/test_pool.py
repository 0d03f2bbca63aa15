"""ThreadPool: priorities, FIFO, caps, blocking group, delays, errors, context, shutdown."""

from __future__ import annotations

import contextvars
import logging
import math
import threading
import time
from collections.abc import Iterator

import pytest

from taskrunner import (
    RunnerClosedError,
    ShutdownBehavior,
    TaskPriority,
    TaskState,
    TaskTraits,
    ThreadPool,
    current_task_runner,
)
from taskrunner.errors import NoCurrentTaskRunnerError

BE = TaskTraits(priority=TaskPriority.BEST_EFFORT)
UV = TaskTraits(priority=TaskPriority.USER_VISIBLE)
UB = TaskTraits(priority=TaskPriority.USER_BLOCKING)
WAIT = 10.0  # generous bound for events that should come at once


def pool_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"{name}-")]


def unique(prefix: str) -> str:
    """A pool name of this thread's own (pytest-run-parallel runs a test on 4 threads)."""
    return f"{prefix}{threading.get_ident()}"


@pytest.fixture
def pool(request: pytest.FixtureRequest) -> Iterator[ThreadPool]:
    name = f"tp{id(request)}"
    p = ThreadPool(2, name=name).start()
    yield p
    p.shutdown(timeout=WAIT)
    assert pool_threads(name) == [], "a pool thread outlived shutdown"


def block_workers(pool: ThreadPool, n: int) -> tuple[threading.Event, threading.Barrier]:
    """Occupy n workers until the returned event is set."""
    gate = threading.Event()
    arrived = threading.Barrier(n + 1)

    def hold() -> None:
        arrived.wait()
        gate.wait(WAIT)

    for _ in range(n):
        pool.post_task(hold, traits=UB)
    arrived.wait(WAIT)
    return gate, arrived


def test_runs_tasks_with_args(pool: ThreadPool) -> None:
    out: list[int] = []
    lock = threading.Lock()

    def add(a: int, b: int) -> None:
        with lock:
            out.append(a + b)

    handles = [pool.post_task(add, i, 1) for i in range(100)]
    assert pool.wait_idle(WAIT)
    assert sorted(out) == [i + 1 for i in range(100)]
    assert all(h.state is TaskState.SUCCEEDED for h in handles)


def test_priority_order_then_fifo() -> None:
    with ThreadPool(1, name="prio", best_effort_limit=0) as pool:
        gate, _ = block_workers(pool, 1)
        order: list[tuple[str, int]] = []
        for i in range(20):
            pool.post_task(order.append, ("be", i), traits=BE)
            pool.post_task(order.append, ("uv", i), traits=UV)
            pool.post_task(order.append, ("ub", i), traits=UB)
        gate.set()
        assert pool.wait_idle(WAIT)
    expected = [("ub", i) for i in range(20)] + [("uv", i) for i in range(20)]
    expected += [("be", i) for i in range(20)]
    assert order == expected


def test_urgent_task_preempts_a_held_batch() -> None:
    """A worker holding a batch of low tasks gives it back when an urgent one arrives."""
    with ThreadPool(1, name="preempt", best_effort_limit=0, batch_size=64) as pool:
        gate, _ = block_workers(pool, 1)
        order: list[str] = []
        first_ran = threading.Event()
        release_first = threading.Event()

        def first() -> None:
            order.append("uv0")
            first_ran.set()
            release_first.wait(WAIT)

        pool.post_task(first, traits=UV)
        for i in range(1, 10):
            pool.post_task(order.append, f"uv{i}", traits=UV)
        gate.set()
        assert first_ran.wait(WAIT)  # the worker now holds uv1..uv9 in its batch
        pool.post_task(order.append, "ub", traits=UB)
        release_first.set()
        assert pool.wait_idle(WAIT)
    assert order == ["uv0", "ub"] + [f"uv{i}" for i in range(1, 10)]


def test_best_effort_cap() -> None:
    with ThreadPool(4, name="becap", best_effort_limit=1) as pool:
        lock = threading.Lock()
        running = [0, 0]  # now, max seen
        release = threading.Event()
        started = threading.Semaphore(0)

        def be_task() -> None:
            with lock:
                running[0] += 1
                running[1] = max(running[1], running[0])
            started.release()
            release.wait(WAIT)
            with lock:
                running[0] -= 1

        for _ in range(4):
            pool.post_task(be_task, traits=BE)
        assert started.acquire(timeout=WAIT)
        # User work still runs on the other workers while best effort is capped.
        assert pool.submit(lambda: 42, traits=UV).result(WAIT) == 42
        assert running[0] == 1
        release.set()
        assert pool.wait_idle(WAIT)
        assert running[1] == 1


def test_may_block_group_grows_and_cpu_work_is_not_starved() -> None:
    with ThreadPool(2, name="mb", max_blocking_workers=8) as pool:
        release = threading.Event()
        started = threading.Semaphore(0)

        def blocking() -> None:
            started.release()
            release.wait(WAIT)

        for _ in range(8):
            pool.post_task(blocking, traits=TaskTraits(may_block=True))
        for _ in range(8):
            assert started.acquire(timeout=WAIT)  # all 8 run at once: the group grew
        assert pool.stats()["blocking_workers"] == 8
        # CPU work is not stuck behind the blocked I/O.
        assert pool.submit(lambda: "cpu").result(WAIT) == "cpu"
        release.set()
        assert pool.wait_idle(WAIT)


def test_blocking_group_shrinks_when_idle() -> None:
    with ThreadPool(1, name="shrink", blocking_idle_timeout=0.05) as pool:
        pool.submit(lambda: None, traits=TaskTraits(may_block=True)).result(WAIT)
        deadline = time.monotonic() + WAIT
        while pool.stats()["blocking_workers"] and time.monotonic() < deadline:
            time.sleep(0.01)  # polling an observable, not synchronising
        assert pool.stats()["blocking_workers"] == 0


def test_category_limit() -> None:
    with ThreadPool(4, name="cat", category_limits={"db": 2}) as pool:
        lock = threading.Lock()
        running = [0, 0]

        def db() -> None:
            with lock:
                running[0] += 1
                running[1] = max(running[1], running[0])
            time.sleep(0.002)
            with lock:
                running[0] -= 1

        traits = TaskTraits(category="db")
        for _ in range(40):
            pool.post_task(db, traits=traits)
        assert pool.wait_idle(WAIT)
        assert running[1] == 2


def test_exception_goes_to_handler_and_worker_survives() -> None:
    errors: list[tuple[BaseException, str]] = []
    seen = threading.Event()

    def handler(exc: BaseException, task: object) -> None:
        errors.append((exc, task.name))  # type: ignore[attr-defined]
        seen.set()

    with ThreadPool(1, name="err", error_handler=handler) as pool:

        def boom() -> None:
            raise ValueError("boom")

        h = pool.post_task(boom, name="exploder")
        assert seen.wait(WAIT)
        assert pool.submit(lambda: 7).result(WAIT) == 7  # the worker lives on
        assert h.state is TaskState.FAILED
    assert isinstance(errors[0][0], ValueError) and errors[0][1] == "exploder"
    assert pool.stats()["failed"] == 1


@pytest.mark.thread_unsafe(reason="caplog and the logger's level are process-wide")
def test_exception_is_logged_by_default(caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.ERROR, logger="taskrunner.pool"),
        ThreadPool(1, name="log") as pool,
    ):
        pool.post_task(lambda: 1 / 0, name="divider")
        pool.wait_idle(WAIT)
    records = [r for r in caplog.records if r.name == "taskrunner.pool"]
    assert records and records[0].task_name == "divider"  # type: ignore[attr-defined]
    assert records[0].exc_info and records[0].exc_info[0] is ZeroDivisionError


def test_contextvars_flow_from_poster(pool: ThreadPool) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    var.set("from-poster")
    assert pool.submit(var.get).result(WAIT) == "from-poster"
    var.set("changed")
    assert pool.submit(var.get).result(WAIT) == "changed"


def test_current_task_runner(pool: ThreadPool) -> None:
    assert pool.submit(current_task_runner).result(WAIT) is pool
    with pytest.raises(NoCurrentTaskRunnerError):
        current_task_runner()


@pytest.mark.thread_unsafe(reason="occupies every worker of the shared pool fixture")
def test_cancel_before_start(pool: ThreadPool) -> None:
    gate, _ = block_workers(pool, 2)
    ran: list[int] = []
    h = pool.post_task(ran.append, 1)
    assert h.cancel() is True
    assert h.cancel() is False
    assert h.state is TaskState.CANCELLED
    gate.set()
    assert pool.wait_idle(WAIT)
    assert ran == []


def test_cancel_after_start_fails(pool: ThreadPool) -> None:
    started, release = threading.Event(), threading.Event()

    def task() -> None:
        started.set()
        release.wait(WAIT)

    h = pool.post_task(task)
    assert started.wait(WAIT)
    assert h.state is TaskState.RUNNING
    assert h.cancel() is False
    release.set()
    assert h.wait(WAIT)
    assert h.state is TaskState.SUCCEEDED


def test_cancel_races_start_each_task_once() -> None:
    """Many threads cancel while workers start: every task runs once or is cancelled."""
    n = 4000
    counts = [0] * n
    lock = threading.Lock()

    def work(i: int) -> None:
        with lock:
            counts[i] += 1

    with ThreadPool(2, name="race") as pool:
        handles = [pool.post_task(work, i) for i in range(n)]
        cancelled = [False] * n

        def canceller(offset: int) -> None:
            for i in range(offset, n, 4):
                cancelled[i] = handles[i].cancel()

        threads = [threading.Thread(target=canceller, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert pool.wait_idle(WAIT)
    for i in range(n):
        assert counts[i] + cancelled[i] == 1, i
        assert handles[i].state is (TaskState.CANCELLED if cancelled[i] else TaskState.SUCCEEDED)


def test_delayed_tasks_fire_in_deadline_order(pool: ThreadPool) -> None:
    order: list[int] = []
    done = threading.Event()
    delays = [0.08, 0.02, 0.05, 0.01, 0.03]

    def fire(i: int) -> None:
        order.append(i)
        if len(order) == len(delays):
            done.set()

    t0 = time.monotonic()
    for i, d in enumerate(delays):
        pool.post_delayed_task(fire, d, i)
    assert done.wait(WAIT)
    assert order == sorted(range(len(delays)), key=lambda i: delays[i])
    assert time.monotonic() - t0 >= 0.08  # never early


@pytest.mark.thread_unsafe(reason="counts the shared pool fixture's delayed tasks")
def test_delayed_cancel(pool: ThreadPool) -> None:
    ran: list[int] = []
    h = pool.post_delayed_task(ran.append, 0.05, 1)
    marker = pool.post_delayed_task(ran.append, 0.1, 2)
    assert h.cancel()
    assert pool.stats()["delayed_pending"] == 1
    assert marker.wait(WAIT)
    assert ran == [2]


@pytest.mark.parametrize("delay", [-1, -0.001, math.nan, math.inf])
def test_bad_delay(pool: ThreadPool, delay: float) -> None:
    with pytest.raises(ValueError):
        pool.post_delayed_task(print, delay)


def test_zero_delay_runs_at_once(pool: ThreadPool) -> None:
    h = pool.post_delayed_task(lambda: None, 0)
    assert h.wait(WAIT) and h.state is TaskState.SUCCEEDED


def test_bad_input() -> None:
    with pytest.raises(TypeError):
        ThreadPool("2")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ThreadPool(0)
    with pytest.raises(ValueError):
        ThreadPool(2, best_effort_limit=-1)
    p = ThreadPool(1, name="bad")
    with pytest.raises(TypeError):
        p.post_task(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        p.post_task(print, traits="fast")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        p.post_delayed_task(print, "1")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        TaskTraits(priority=7)  # type: ignore[arg-type]
    p.shutdown()


def test_post_after_shutdown_raises() -> None:
    pool = ThreadPool(1, name="closed").start()
    pool.shutdown()
    with pytest.raises(RunnerClosedError):
        pool.post_task(print)
    with pytest.raises(RunnerClosedError):
        pool.post_delayed_task(print, 1.0)
    assert pool.is_closed


def test_graceful_shutdown_drains_everything() -> None:
    ran: list[int] = []
    name = unique("drain")
    pool = ThreadPool(2, name=name).start()
    gate, _ = block_workers(pool, 2)
    for i in range(100):
        pool.post_task(ran.append, i)
    threading.Timer(0.02, gate.set).start()
    report = pool.shutdown(wait=True)
    assert report is not None and report.drained and report.dropped == 0
    assert sorted(ran) == list(range(100))
    assert pool_threads(name) == []


def test_graceful_shutdown_timeout_drops_skip_tasks_but_runs_block_shutdown() -> None:
    name = unique("gto")
    pool = ThreadPool(1, name=name).start()
    gate, _ = block_workers(pool, 1)
    ran: list[str] = []
    skip = [pool.post_task(ran.append, f"skip{i}") for i in range(5)]
    block = pool.post_task(
        ran.append, "block", traits=TaskTraits(shutdown_behavior=ShutdownBehavior.BLOCK_SHUTDOWN)
    )
    threading.Timer(0.1, gate.set).start()
    t0 = time.monotonic()
    report = pool.shutdown(timeout=0.01)
    # The timeout bounds the whole shutdown: it returns while the worker is still
    # blocked (reported as running), and the BLOCK_SHUTDOWN task runs after it.
    assert time.monotonic() - t0 < 0.09
    assert report is not None and report.timed_out and not report.drained
    assert report.still_running == 1
    assert report.dropped == 5
    assert all(h.state is TaskState.DROPPED for h in skip)
    assert block.wait(WAIT) and block.state is TaskState.SUCCEEDED
    assert ran == ["block"]
    for t in pool_threads(name):
        t.join(WAIT)
    assert pool_threads(name) == []


def test_forceful_shutdown_drops_queued_and_delayed() -> None:
    pool = ThreadPool(1, name="force").start()
    gate, _ = block_workers(pool, 1)
    queued = [pool.post_task(print, i) for i in range(10)]
    delayed = pool.post_delayed_task(print, 60.0)
    threading.Timer(0.05, gate.set).start()
    report = pool.shutdown(cancel_pending=True)
    assert report is not None and report.dropped == 11
    assert all(h.state is TaskState.DROPPED for h in queued)
    assert delayed.state is TaskState.DROPPED


def test_continue_on_shutdown_running_task_is_not_waited_for() -> None:
    name = unique("cont")
    pool = ThreadPool(1, name=name).start()
    started, release = threading.Event(), threading.Event()

    def long_task() -> None:
        started.set()
        release.wait(WAIT)

    traits = TaskTraits(shutdown_behavior=ShutdownBehavior.CONTINUE_ON_SHUTDOWN)
    h = pool.post_task(long_task, traits=traits)
    assert started.wait(WAIT)
    report = pool.shutdown(cancel_pending=True)
    assert report is not None and report.still_running == 1
    assert h.state is TaskState.RUNNING
    release.set()
    assert h.wait(WAIT)
    for t in pool_threads(name):
        t.join(WAIT)
    assert pool_threads(name) == []


def test_skip_on_shutdown_running_task_is_waited_for() -> None:
    pool = ThreadPool(1, name="skipw").start()
    started = threading.Event()
    finished = threading.Event()

    def task() -> None:
        started.set()
        time.sleep(0.05)
        finished.set()

    pool.post_task(task)
    assert started.wait(WAIT)
    pool.shutdown(cancel_pending=True)
    assert finished.is_set()


def test_posts_before_start_run_after_start() -> None:
    pool = ThreadPool(1, name="late", start=False)  # deferred start (the default starts at once)
    h = pool.post_task(lambda: None)
    assert h.state is TaskState.PENDING
    pool.start()
    assert h.wait(WAIT)
    pool.shutdown()


def test_flush_waits_for_earlier_tasks(pool: ThreadPool) -> None:
    done: list[int] = []
    for i in range(50):
        pool.post_task(lambda i=i: (time.sleep(0.001), done.append(i)))
    assert pool.flush(WAIT)
    assert len(done) == 50


@pytest.mark.thread_unsafe(reason="occupies every worker of the shared pool fixture")
def test_stats(pool: ThreadPool) -> None:
    gate, _ = block_workers(pool, 2)
    pool.post_task(print, traits=BE)
    pool.post_task(print, traits=UB)
    pool.post_delayed_task(print, 60.0)
    s = pool.stats()
    assert s["queued"] == {"BEST_EFFORT": 1, "USER_VISIBLE": 0, "USER_BLOCKING": 1}
    assert s["running"] == 2
    assert s["delayed_pending"] == 1
    assert s["workers"] == 2
    gate.set()
    assert pool.wait_idle(WAIT)
    assert pool.stats()["completed"] >= 4


def test_wait_idle_timeout(pool: ThreadPool) -> None:
    gate, _ = block_workers(pool, 1)
    assert pool.wait_idle(0.01) is False
    gate.set()
    assert pool.wait_idle(WAIT) is True
