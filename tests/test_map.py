"""runner.map: Executor.map on every runner, its calls posted in batches."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskrunner import (
    AsyncioTaskRunner,
    ParallelTaskRunner,
    RunnerClosedError,
    SequencedTaskRunner,
    SingleThreadTaskRunner,
    TaskRunner,
    ThreadPool,
)
from taskrunner.runtime.batch_map import MAX_AUTO_CHUNK

WAIT = 30.0


@pytest.fixture(params=["pool", "sequenced", "parallel", "single", "asyncio"])
def runner(request: pytest.FixtureRequest) -> Iterator[TaskRunner]:
    """Each kind of runner, shut down (and its loop stopped) afterwards."""
    pool = ThreadPool(2, name="map-pool")
    made: TaskRunner
    loop_thread: threading.Thread | None = None
    loop: asyncio.AbstractEventLoop | None = None
    if request.param == "pool":
        made = pool
    elif request.param == "sequenced":
        made = SequencedTaskRunner(pool)
    elif request.param == "parallel":
        made = ParallelTaskRunner(pool, max_concurrency=2)
    elif request.param == "single":
        made = SingleThreadTaskRunner(pool, capacity=16)
    else:
        loop = asyncio.new_event_loop()
        loop_thread = threading.Thread(target=loop.run_forever, daemon=True)
        loop_thread.start()
        made = AsyncioTaskRunner(loop, pool)
    try:
        yield made
    finally:
        made.shutdown(wait=True, timeout=WAIT)
        pool.shutdown(wait=True, timeout=WAIT)
        if loop is not None and loop_thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            loop_thread.join(WAIT)
            loop.close()


@pytest.mark.parametrize("chunksize", [None, 1, 3, 1000])
def test_results_come_in_order_on_every_runner(runner: TaskRunner, chunksize: int | None) -> None:
    out = runner.map(lambda x: x * x, range(500), chunksize=chunksize, timeout=WAIT)
    assert list(out) == [x * x for x in range(500)]


def test_several_iterables_stop_at_the_shortest(runner: TaskRunner) -> None:
    assert list(runner.map(lambda a, b: a + b, [1, 2, 3], [10, 20])) == [11, 22]
    assert list(runner.map(lambda: 1)) == []  # no iterables: no calls, as builtins.map


@settings(max_examples=30, deadline=None)
@given(items=st.lists(st.integers(), max_size=300), chunksize=st.none() | st.integers(1, 50))
def test_map_agrees_with_builtin_map(items: list[int], chunksize: int | None) -> None:
    with ThreadPool(2) as pool:
        assert list(pool.map(str, items, chunksize=chunksize, timeout=WAIT)) == list(
            map(str, items)
        )


def test_the_automatic_chunk_follows_the_item_count_and_workers() -> None:
    with ThreadPool(2) as pool:
        # 80 items on 2 workers: 80 // 8 = 10 items to a task.
        assert list(pool.map(abs, range(80), timeout=WAIT)) == list(range(80))
        assert pool.wait_idle(WAIT)
        assert pool.stats()["completed"] == 8
        before = pool.stats()["completed"]
        assert len(list(pool.map(abs, range(100_000), timeout=WAIT))) == 100_000
        assert pool.wait_idle(WAIT)
        tasks = pool.stats()["completed"] - before
        assert tasks == -(-100_000 // MAX_AUTO_CHUNK)


def test_results_are_yielded_before_later_calls_finish() -> None:
    gate = threading.Event()

    def fn(i: int) -> int:
        if i == 3:
            assert gate.wait(WAIT)
        return i

    with ThreadPool(2) as pool:
        it = pool.map(fn, range(6), chunksize=1, timeout=WAIT)
        assert [next(it), next(it), next(it)] == [0, 1, 2]  # call 3 is still blocked
        gate.set()
        assert list(it) == [3, 4, 5]


def test_an_exception_is_raised_at_its_position_not_to_the_error_handler() -> None:
    handled: list[BaseException] = []

    def fn(i: int) -> int:
        if i == 5:
            raise ValueError("five")
        return i

    with ThreadPool(2, error_handler=lambda exc, task: handled.append(exc)) as pool:
        for chunksize in (1, 4, None):
            it = pool.map(fn, range(10), chunksize=chunksize, timeout=WAIT)
            got = [next(it) for _ in range(5)]
            assert got == [0, 1, 2, 3, 4]
            with pytest.raises(ValueError, match="five"):
                next(it)
            with pytest.raises(StopIteration):
                next(it)
    assert handled == []


def test_the_timeout_counts_from_the_call_and_cancels_the_rest() -> None:
    gate = threading.Event()
    ran: list[int] = []

    def fn(i: int) -> int:
        ran.append(i)
        if i == 0:
            assert gate.wait(WAIT)
        return i

    with SequencedTaskRunner(ThreadPool(2)) as runner:
        it = runner.map(fn, range(50), chunksize=1, timeout=0.05)
        with pytest.raises(TimeoutError):
            next(it)
        gate.set()
        assert runner.flush(WAIT)
        assert ran == [0]  # the other 49 were cancelled when the iterator ended
        runner.pool.shutdown()


def test_closing_the_iterator_cancels_what_has_not_started() -> None:
    started = threading.Event()
    gate = threading.Event()
    ran: list[int] = []

    def fn(i: int) -> int:
        ran.append(i)
        if i == 1:
            started.set()
            assert gate.wait(WAIT)
        return i

    pool = ThreadPool(2)
    with SequencedTaskRunner(pool) as runner:
        it = runner.map(fn, range(100), chunksize=1, timeout=WAIT)
        assert next(it) == 0
        assert started.wait(WAIT)
        it.close()
        gate.set()
        assert runner.flush(WAIT)
        assert ran == [0, 1]
        assert runner.stats()["completed"] == 2
    pool.shutdown()


def test_closing_stops_a_running_chunk_after_its_current_item() -> None:
    started = threading.Event()
    gate = threading.Event()
    ran: list[int] = []

    def fn(i: int) -> int:
        ran.append(i)
        if i == 1:
            started.set()
            assert gate.wait(WAIT)
        return i

    with ThreadPool(1) as pool:
        it = pool.map(fn, range(100), chunksize=100, timeout=WAIT)
        assert started.wait(WAIT)
        it.close()  # never started: nothing to close, as a generator (stdlib too)
        del it
        gc.collect()
        gate.set()
        assert pool.wait_idle(WAIT)
        assert len(ran) == 100  # an iterator never advanced does not cancel
        ran.clear()
        started.clear()
        gate.clear()
        it = pool.map(fn, range(100), chunksize=100, timeout=WAIT)
        assert next(it) == 0  # the chunk stored item 0 before it started item 1
        assert started.wait(WAIT)
        it.close()  # the running chunk stops after item 1
        gate.set()
        assert pool.wait_idle(WAIT)
        assert ran == [0, 1]


def test_shutdown_mid_map_raises_cancelled_at_the_dropped_calls() -> None:
    pool = ThreadPool(1)

    def fn(i: int) -> int:
        if i == 0:  # from inside a task, cancel_pending drops the rest at once
            pool.shutdown(wait=False, cancel_pending=True)
        return i

    it = pool.map(fn, range(20), chunksize=1, timeout=WAIT)
    assert next(it) == 0
    with pytest.raises(CancelledError, match="call 1 did not run"):
        next(it)
    report = pool.shutdown(timeout=WAIT)
    assert report is not None and report.dropped == 19
    with pytest.raises(RunnerClosedError, match="map after shutdown"):
        pool.map(fn, range(3))


def test_bad_input_raises_before_anything_is_posted() -> None:
    with ThreadPool(1) as pool:
        with pytest.raises(TypeError, match="fn must be callable"):
            pool.map(42, [1])  # type: ignore[call-overload]
        with pytest.raises(ValueError, match="chunksize must be >= 1"):
            pool.map(abs, [1], chunksize=0)
        with pytest.raises(TypeError, match="chunksize must be an integer"):
            pool.map(abs, [1], chunksize=2.5)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match="chunksize must be an integer"):
            pool.map(abs, [1], chunksize=True)
        with pytest.raises(TypeError, match="timeout must be a number"):
            pool.map(abs, [1], timeout="1")  # type: ignore[call-overload]
        with pytest.raises(TypeError):
            pool.map(abs, 5)  # type: ignore[call-overload]
        assert pool.wait_idle(WAIT)
        assert pool.stats()["completed"] == 0


def test_each_chunk_runs_in_a_copy_of_the_callers_context() -> None:
    var: contextvars.ContextVar[int] = contextvars.ContextVar("var", default=0)
    var.set(7)

    def fn(i: int) -> int:
        return var.get()

    with ThreadPool(2) as pool:
        assert list(pool.map(fn, range(100), chunksize=1, timeout=WAIT)) == [7] * 100
    assert var.get() == 7


def test_nothing_is_kept_alive_once_the_iterator_is_done() -> None:
    class Fn:
        def __call__(self, x: int) -> int:
            return x

    fn = Fn()
    gone = threading.Event()
    weakref.finalize(fn, gone.set)
    with ThreadPool(2) as pool:
        it = pool.map(fn, range(1000), timeout=WAIT)
        del fn
        assert sum(it) == sum(range(1000))
        del it
        assert pool.wait_idle(WAIT)
    pool_ref = weakref.ref(pool)
    del pool
    gc.collect()
    assert gone.is_set()
    assert pool_ref() is None


def test_the_executor_view_keeps_the_standard_library_semantics(runner: TaskRunner) -> None:
    # runner.executor.map is concurrent.futures' map (chunksize=1, buffersize).
    fn: Callable[[int], int] = lambda x: x + 1  # noqa: E731
    assert list(runner.executor.map(fn, range(20), buffersize=4)) == list(range(1, 21))


def test_the_iterator_never_misses_a_wake_up() -> None:
    # The consumer sleeps for slot i while a worker fills it without a lock
    # (see _MapCall): a lost wake-up would show as a TimeoutError here.
    def fn(i: int) -> int:
        return sum(range(i % 50))

    expected = [fn(i) for i in range(400)]
    with ThreadPool(4) as pool:
        for chunksize in (1, 3, 1, 7) * 5:
            assert list(pool.map(fn, range(400), chunksize=chunksize, timeout=WAIT)) == expected
