"""The asyncio bridge: ``AsyncioTaskRunner``, ``await runner.run(...)``,
``loop.run_in_executor(runner.executor, ...)`` and ``asyncio.wrap_future``."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from collections.abc import Iterator
from concurrent.futures import Future

import pytest

from taskrunner import (
    DebounceTimer,
    RunnerClosedError,
    SequencedTaskRunner,
    ShutdownBehavior,
    TaskState,
    TaskTraits,
    ThreadPool,
    current_task_runner,
)
from taskrunner.runtime.runners.asyncio_runner import AsyncioTaskRunner
from taskrunner.testing import TaskEnvironment

LONG = 30.0


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running on a thread of its own."""
    lp = asyncio.new_event_loop()
    thread = threading.Thread(target=lp.run_forever, name="test-loop", daemon=True)
    thread.start()
    yield lp
    lp.call_soon_threadsafe(lp.stop)
    thread.join(LONG)
    lp.close()


@pytest.fixture
def pool() -> Iterator[ThreadPool]:
    p = ThreadPool(2, name="aio-pool").start()
    yield p
    p.shutdown(timeout=LONG)


def _loop_thread(loop: asyncio.AbstractEventLoop) -> int:
    box: Future[int] = Future()
    loop.call_soon_threadsafe(lambda: box.set_result(threading.get_ident()))
    return box.result(LONG)


# ---- tasks on the loop ---------------------------------------------------------------


def test_tasks_run_on_the_loop_thread_in_order(
    loop: asyncio.AbstractEventLoop, pool: ThreadPool
) -> None:
    runner = AsyncioTaskRunner(loop, pool)
    seen: list[tuple[int, int]] = []
    for i in range(100):
        runner.post_task(lambda i=i: seen.append((i, threading.get_ident())))
    assert runner.wait_idle(LONG)
    assert [i for i, _ in seen] == list(range(100))
    assert {ident for _, ident in seen} == {_loop_thread(loop)}
    runner.shutdown(timeout=LONG)


def test_current_task_runner_inside_is_the_runner(
    loop: asyncio.AbstractEventLoop, pool: ThreadPool
) -> None:
    runner = AsyncioTaskRunner(loop, pool)
    assert runner.submit(current_task_runner).result(LONG) is runner
    runner.shutdown(timeout=LONG)


def test_replies_are_delivered_on_the_loop(
    loop: asyncio.AbstractEventLoop, pool: ThreadPool
) -> None:
    runner = AsyncioTaskRunner(loop, pool)
    replied: Future[tuple[int, int]] = Future()

    def reply(value: int) -> None:
        replied.set_result((value, threading.get_ident()))

    pool.post_task_and_reply_with_result(lambda: 6 * 7, reply, reply_runner=runner)
    assert replied.result(LONG) == (42, _loop_thread(loop))
    runner.shutdown(timeout=LONG)


def test_errors_go_to_the_pools_error_handler(loop: asyncio.AbstractEventLoop) -> None:
    errors: list[BaseException] = []
    with ThreadPool(1, error_handler=lambda exc, task: errors.append(exc)) as pool:
        runner = AsyncioTaskRunner(loop, pool)
        runner.post_task(divmod, 1, 0)
        ok = runner.post_task(int)
        assert ok.wait(LONG) and ok.state is TaskState.SUCCEEDED
        runner.shutdown(timeout=LONG)
    assert len(errors) == 1 and isinstance(errors[0], ZeroDivisionError)


def test_a_flood_of_posts_does_not_starve_the_loop(
    loop: asyncio.AbstractEventLoop, pool: ThreadPool
) -> None:
    runner = AsyncioTaskRunner(loop, pool, budget=0)  # give the loop back after every task
    ran: list[int] = []
    seen_at: Future[int] = Future()
    gate = threading.Event()
    runner.post_task(gate.wait, LONG)  # holds the loop until everything is queued
    for i in range(200):
        runner.post_task(ran.append, i)
    loop.call_soon_threadsafe(lambda: seen_at.set_result(len(ran)))
    gate.set()
    assert seen_at.result(LONG) < 200  # the loop's own callback ran between our tasks
    assert runner.wait_idle(LONG) and len(ran) == 200
    runner.shutdown(timeout=LONG)


def test_cancel_before_it_runs(loop: asyncio.AbstractEventLoop, pool: ThreadPool) -> None:
    runner = AsyncioTaskRunner(loop, pool)
    gate = threading.Event()
    runner.post_task(gate.wait, LONG)
    ran: list[int] = []
    task = runner.post_task(ran.append, 1)
    assert task.cancel()
    gate.set()
    assert runner.wait_idle(LONG) and ran == []
    runner.shutdown(timeout=LONG)


# ---- delayed tasks and timers on the pool's wheel (mock time) ----------------------------


def test_delayed_tasks_follow_mock_time(loop: asyncio.AbstractEventLoop) -> None:
    with TaskEnvironment() as env:
        runner = AsyncioTaskRunner(loop, env.pool)
        fired: list[tuple[float, int]] = []
        for delay in (3.0, 1.0, 2.0):
            runner.post_delayed_task(
                lambda: fired.append((env.now(), threading.get_ident())), delay
            )
        env.fast_forward(1.5)
        assert [t for t, _ in fired] == [1.0]
        env.fast_forward(10)
        assert [t for t, _ in fired] == [1.0, 2.0, 3.0]
        assert {ident for _, ident in fired} == {_loop_thread(loop)}
        runner.shutdown(timeout=LONG)


def test_debounce_on_the_loop_under_mock_time(loop: asyncio.AbstractEventLoop) -> None:
    with TaskEnvironment() as env:
        runner = AsyncioTaskRunner(loop, env.pool)
        hits: list[float] = []
        debounce = DebounceTimer(runner, 0.5, lambda: hits.append(env.now()))
        debounce()
        env.fast_forward(0.3)
        debounce()
        env.fast_forward(1.0)
        assert hits == [0.8]
        runner.shutdown(timeout=LONG)


def test_mock_time_from_a_coroutine_on_the_loop() -> None:
    # An async test whose loop is the test thread: fast_forward runs the due
    # tasks right there (wait_idle on the loop's thread drains inline).
    async def main() -> list[float]:
        with TaskEnvironment() as env:
            runner = AsyncioTaskRunner(asyncio.get_running_loop(), env.pool)
            seen: list[float] = []
            runner.post_delayed_task(lambda: seen.append(env.now()), 2.0)
            runner.post_task(lambda: seen.append(-1.0))
            env.fast_forward(5)
            runner.shutdown()
            return seen

    assert asyncio.run(main()) == [-1.0, 2.0]


def test_repeating_task_on_the_loop(loop: asyncio.AbstractEventLoop) -> None:
    with TaskEnvironment() as env:
        runner = AsyncioTaskRunner(loop, env.pool)
        ticks: list[float] = []
        handle = runner.post_repeating_task(lambda: ticks.append(env.now()), 1.0)
        env.fast_forward(3.5)
        handle.stop()
        assert ticks == [1.0, 2.0, 3.0]
        runner.shutdown(timeout=LONG)


def test_owned_pool_runs_delayed_tasks() -> None:
    async def main() -> float:
        runner = AsyncioTaskRunner(asyncio.get_running_loop())
        done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        runner.post_delayed_task(lambda: done.set_result(1.0), 0.01)
        value = await asyncio.wait_for(done, LONG)
        runner.shutdown()
        assert runner.pool.is_closed  # its own pool went with it
        return value

    assert asyncio.run(main()) == 1.0


# ---- await runner.run(...) and the executor bridges -----------------------------------------


def test_await_run_returns_the_result(pool: ThreadPool) -> None:
    seq = SequencedTaskRunner(pool)

    async def main() -> tuple[int, tuple[int, int]]:
        return await pool.run(pow, 2, 10), await seq.run(divmod, 7, 2)

    assert asyncio.run(main()) == (1024, (3, 1))
    seq.shutdown(timeout=LONG)


def test_await_run_raises_the_tasks_exception(pool: ThreadPool) -> None:
    async def main() -> None:
        await pool.run(divmod, 1, 0)

    with pytest.raises(ZeroDivisionError):
        asyncio.run(main())


def test_cancelling_the_awaiting_coroutine_cancels_a_task_not_started() -> None:
    with ThreadPool(1) as one:
        gate = threading.Event()
        one.post_task(gate.wait, LONG)  # the only worker is busy
        ran: list[int] = []

        async def main() -> None:
            waiter = asyncio.ensure_future(one.run(ran.append, 1))
            await asyncio.sleep(0)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter

        asyncio.run(main())
        gate.set()
        assert one.flush(LONG)
        assert ran == []
        assert one.stats()["cancelled"] == 1


def test_run_on_an_asyncio_runner_from_its_own_loop() -> None:
    async def main() -> int:
        loop = asyncio.get_running_loop()
        with ThreadPool(1) as pool:
            runner = AsyncioTaskRunner(loop, pool)
            ident = await runner.run(threading.get_ident)
            runner.shutdown()
            return ident

    assert asyncio.run(main()) == threading.get_ident()


def test_run_in_executor_and_wrap_future(pool: ThreadPool) -> None:
    async def main() -> tuple[int, int, str]:
        loop = asyncio.get_running_loop()
        a = await loop.run_in_executor(pool.executor, pow, 3, 3)
        b = await asyncio.wrap_future(pool.executor.submit(pow, 2, 5))
        c = await loop.run_in_executor(
            SequencedTaskRunner(pool).executor, lambda: threading.current_thread().name
        )
        return a, b, c

    a, b, c = asyncio.run(main())
    assert (a, b) == (27, 32)
    assert c.startswith("aio-pool-worker")


def test_executor_view_shutdown_on_the_loop_thread_runs_its_calls() -> None:
    async def main() -> list[int]:
        with ThreadPool(1) as pool:
            runner = AsyncioTaskRunner(asyncio.get_running_loop(), pool)
            ex = runner.executor
            fs = [ex.submit(pow, 2, i) for i in range(4)]
            ex.shutdown(wait=True)  # on the loop's thread: must not wait for the loop
            runner.shutdown()
            return [f.result(0) for f in fs]

    assert asyncio.run(main()) == [1, 2, 4, 8]


def test_run_in_executor_cancellation_cancels_the_task() -> None:
    with ThreadPool(1) as one:
        gate = threading.Event()
        one.post_task(gate.wait, LONG)
        ran: list[int] = []

        async def main() -> None:
            loop = asyncio.get_running_loop()
            fut = loop.run_in_executor(one.executor, ran.append, 1)
            await asyncio.sleep(0)
            fut.cancel()
            with pytest.raises(asyncio.CancelledError):
                await fut

        asyncio.run(main())
        gate.set()
        assert one.flush(LONG) and ran == []


# ---- shutdown ------------------------------------------------------------------------------


def test_graceful_shutdown_runs_what_is_queued(
    loop: asyncio.AbstractEventLoop, pool: ThreadPool
) -> None:
    runner = AsyncioTaskRunner(loop, pool)
    ran: list[int] = []
    for i in range(10):
        runner.post_task(ran.append, i)
    report = runner.shutdown(timeout=LONG)
    assert report.drained and ran == list(range(10))
    with pytest.raises(RunnerClosedError):
        runner.post_task(int)


def test_forceful_shutdown_drops_queued_tasks_and_cancels_their_futures(
    loop: asyncio.AbstractEventLoop, pool: ThreadPool
) -> None:
    runner = AsyncioTaskRunner(loop, pool)
    gate, started = threading.Event(), threading.Event()
    runner.post_task(lambda: (started.set(), gate.wait(LONG)))
    assert started.wait(LONG)
    futures = [runner.executor.submit(int) for _ in range(5)]
    kept = runner.post_task(
        int, traits=TaskTraits(shutdown_behavior=ShutdownBehavior.BLOCK_SHUTDOWN)
    )
    report = runner.shutdown(wait=False, cancel_pending=True)
    assert report.dropped == 5
    assert all(f.cancelled() for f in futures)
    gate.set()
    assert kept.wait(LONG) and kept.state is TaskState.SUCCEEDED


def test_shutdown_from_inside_its_own_task_does_not_hang(
    loop: asyncio.AbstractEventLoop, pool: ThreadPool
) -> None:
    runner = AsyncioTaskRunner(loop, pool)
    after: list[int] = []
    gate = threading.Event()
    runner.post_task(gate.wait, LONG)
    stopped = runner.submit(lambda: runner.shutdown())
    runner.post_task(after.append, 1)
    gate.set()
    report = stopped.result(LONG)
    assert report.still_running == 1
    assert runner.is_closed
    assert runner.wait_idle(LONG) and after == [1]  # queued before the shutdown: still runs


def test_wait_idle_inside_its_own_task_raises(
    loop: asyncio.AbstractEventLoop, pool: ThreadPool
) -> None:
    runner = AsyncioTaskRunner(loop, pool)
    with pytest.raises(RuntimeError, match="wait for itself"):
        runner.submit(runner.wait_idle).result(LONG)
    runner.shutdown(timeout=LONG)


def test_a_closed_loop_refuses_posts(pool: ThreadPool) -> None:
    lp = asyncio.new_event_loop()
    runner = AsyncioTaskRunner(lp, pool)
    lp.close()
    with pytest.raises(RunnerClosedError, match="event loop is closed"):
        runner.post_task(int)
    with pytest.raises(RunnerClosedError):
        AsyncioTaskRunner(lp, pool)
    assert runner.is_closed


@pytest.mark.thread_unsafe(reason="shuts down the shared pool fixture")
def test_pool_shutdown_drops_what_the_loop_did_not_run(pool: ThreadPool) -> None:
    lp = asyncio.new_event_loop()  # never run
    runner = AsyncioTaskRunner(lp, pool)
    fut = runner.executor.submit(int)
    pool.shutdown(timeout=LONG)
    assert fut.cancelled()
    lp.close()


def test_bad_arguments(pool: ThreadPool) -> None:
    with pytest.raises(TypeError, match="loop must be an asyncio event loop"):
        AsyncioTaskRunner(object(), pool)  # type: ignore[arg-type]
    lp = asyncio.new_event_loop()
    try:
        with pytest.raises(TypeError, match="pool must be a ThreadPool"):
            AsyncioTaskRunner(lp, "pool")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="budget"):
            AsyncioTaskRunner(lp, pool, budget=-1)
    finally:
        lp.close()


@pytest.mark.thread_unsafe(reason="counts garbage collections")
def test_runner_is_collected_after_shutdown(loop: asyncio.AbstractEventLoop) -> None:
    pool = ThreadPool(1).start()
    runner = AsyncioTaskRunner(loop, pool)
    runner.submit(int).result(LONG)
    runner.executor.submit(int).result(LONG)
    # The finalizer only appends (no lock): on 3.14t a collection can run inside
    # Event.wait() with the event's lock held, where an Event.set() would deadlock.
    collected: list[bool] = []
    weakref.finalize(runner, collected.append, True)
    runner.shutdown(timeout=LONG)
    pool.shutdown(timeout=LONG)
    del runner, pool
    deadline = time.monotonic() + LONG
    while not collected and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    assert collected


def test_post_task_and_reply_replies_on_the_loop(
    loop: asyncio.AbstractEventLoop, pool: ThreadPool
) -> None:
    runner = AsyncioTaskRunner(loop, pool)
    where: Future[int] = Future()
    pool.post_task_and_reply(
        lambda: None, lambda: where.set_result(threading.get_ident()), reply_runner=runner
    )
    assert where.result(LONG) == _loop_thread(loop)
    runner.shutdown(timeout=LONG)


def test_shutdown_with_a_stopped_loop_returns_within_its_timeout(pool: ThreadPool) -> None:
    lp = asyncio.new_event_loop()  # never runs: nothing queued can run
    runner = AsyncioTaskRunner(lp, pool)
    task = runner.post_task(int)
    report = runner.shutdown(timeout=0.05)
    assert report.timed_out and report.dropped == 1
    assert task.state is TaskState.DROPPED
    lp.close()


@pytest.mark.thread_unsafe(reason="counts garbage collections")
def test_runner_with_its_own_pool_is_collected_after_shutdown() -> None:
    async def main() -> tuple[weakref.ref[AsyncioTaskRunner], weakref.ref[ThreadPool]]:
        runner = AsyncioTaskRunner(asyncio.get_running_loop())
        assert await runner.run(pow, 2, 3) == 8
        refs = weakref.ref(runner), weakref.ref(runner.pool)
        runner.shutdown(timeout=LONG)
        return refs

    runner_ref, pool_ref = asyncio.run(main())
    for _ in range(int(LONG) * 5):
        gc.collect()
        if runner_ref() is None and pool_ref() is None:
            break
        threading.Event().wait(0.2)
    assert runner_ref() is None and pool_ref() is None
