"""The Executor views (``runner.executor``, ``RunnerExecutor``) hold the
standard library's executor contract.

The tests below check, on every kind of runner, the behaviours that CPython's
``Lib/test/test_concurrent_futures/`` checks for executors in general
(``executor.py``: ExecutorTest; ``test_shutdown.py``, ``test_wait.py``,
``test_as_completed.py``) and for ``ThreadPoolExecutor`` in particular
(``test_thread_pool.py``), each named after the CPython test it follows.  The
ones about ThreadPoolExecutor internals (``_threads``, ``_max_workers``,
thread names, ``initializer``) do not apply; the README lists them and says
why.  Waits are on events and futures with generous timeouts, never sleeps
(the few sleeps are the work itself, as in the CPython tests).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from collections.abc import Iterator
from concurrent import futures
from concurrent.futures import Future
from operator import add
from typing import Any

import pytest

from taskrunner import (
    ParallelTaskRunner,
    QueuePolicy,
    SequencedTaskRunner,
    SingleThreadTaskRunner,
    TaskPriority,
    TaskRunner,
    TaskTraits,
    ThreadPool,
    current_task_runner,
)
from taskrunner.errors import ExecutorShutdownError, RunnerClosedError
from taskrunner.runtime.executor import RunnerExecutor

LONG = 30.0  # generous timeout for anything that should happen promptly
WORKERS = 5  # as CPython's ExecutorMixin.worker_count


def mul(x: int, y: int) -> int:
    return x * y


def capture(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


class MyObject:
    def my_method(self) -> None:
        pass


def make_dummy_object(_: object) -> MyObject:
    return MyObject()


def raiser(exception: type[BaseException], msg: str = "std") -> None:
    raise exception(msg)


class FalseyBoolException(Exception):
    def __bool__(self) -> bool:
        return False


class FalseyLenException(Exception):
    def __len__(self) -> int:
        return 0


# Already-settled futures, as CPython's util.py builds them (through the
# public API: set_running_or_notify_cancel notifies a cancelled future).
def _settled(kind: str) -> Future[Any]:
    f: Future[Any] = Future()
    if kind == "cancelled":
        f.cancel()
    elif kind == "cancelled_notified":
        f.cancel()
        f.set_running_or_notify_cancel()
    elif kind == "exception":
        f.set_running_or_notify_cancel()
        f.set_exception(OSError())
    elif kind == "success":
        f.set_running_or_notify_cancel()
        f.set_result(42)
    return f


# ---- fixtures: an executor view of every kind of runner ---------------------------------

KINDS = ["pool", "parallel", "sequenced", "single_thread", "traits_view"]
# Kinds that run several calls at once (some tests need two calls running together).
CONCURRENT = {"pool", "parallel", "traits_view"}


def _make_runner(kind: str, pool: ThreadPool) -> TaskRunner:
    if kind in ("pool", "traits_view"):
        return pool
    if kind == "parallel":
        return ParallelTaskRunner(pool, WORKERS)
    if kind == "sequenced":
        return SequencedTaskRunner(pool)
    if kind == "single_thread":
        return SingleThreadTaskRunner(pool, capacity=256)
    raise AssertionError(kind)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pool() -> Iterator[ThreadPool]:
    p = ThreadPool(WORKERS, name="ex-pool").start()
    yield p
    report = p.shutdown(timeout=LONG)
    assert report is not None and not report.timed_out


@pytest.fixture
def executor(kind: str, pool: ThreadPool) -> Iterator[RunnerExecutor]:
    runner = _make_runner(kind, pool)
    if kind == "traits_view":
        ex = RunnerExecutor(runner, traits=TaskTraits(priority=TaskPriority.USER_BLOCKING))
    else:
        ex = runner.executor
    yield ex
    ex.shutdown(wait=True)
    if runner is not pool:
        runner.shutdown(timeout=LONG)


# pytest-run-parallel shares a test's fixtures among its threads.
SHUTS_DOWN_FIXTURE = pytest.mark.thread_unsafe(reason="shuts down the shared executor fixture")


def _needs_concurrency(kind: str) -> None:
    if kind not in CONCURRENT:
        pytest.skip("needs two calls running at once")


# ---- ExecutorTest (executor.py) ---------------------------------------------------------


def test_submit(executor: RunnerExecutor) -> None:
    future = executor.submit(pow, 2, 8)
    assert future.result(LONG) == 256
    assert isinstance(future, futures.Future)
    assert isinstance(executor, futures.Executor)


def test_submit_keyword(executor: RunnerExecutor) -> None:
    assert executor.submit(mul, 2, y=8).result(LONG) == 16
    # fn and self are ordinary keywords of the call, not of submit.
    assert executor.submit(capture, 1, self=2, fn=3).result(LONG) == ((1,), {"self": 2, "fn": 3})
    with pytest.raises(TypeError):
        executor.submit(fn=capture, arg=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        executor.submit(arg=1)  # type: ignore[call-arg]


def test_submit_refuses_a_non_callable(executor: RunnerExecutor) -> None:
    with pytest.raises(TypeError, match="callable"):
        executor.submit(42)  # type: ignore[arg-type]


def test_map(executor: RunnerExecutor) -> None:
    expected = list(map(pow, range(10), range(10)))
    assert list(executor.map(pow, range(10), range(10))) == expected
    assert list(executor.map(pow, range(10), range(10), chunksize=3)) == expected


def test_map_exception(executor: RunnerExecutor) -> None:
    i = executor.map(divmod, [1, 1, 1, 1], [2, 3, 0, 5])
    assert next(i) == (0, 1)
    assert next(i) == (0, 1)
    with pytest.raises(ZeroDivisionError):
        next(i)


def test_map_exception_in_a_chunk_comes_at_its_position(executor: RunnerExecutor) -> None:
    i = executor.map(divmod, [1, 1, 1, 1, 1], [2, 3, 0, 5, 7], chunksize=4)
    assert next(i) == (0, 1)
    assert next(i) == (0, 1)
    with pytest.raises(ZeroDivisionError):
        next(i)


def test_map_timeout(executor: RunnerExecutor) -> None:
    release = threading.Event()
    try:
        results = []
        with pytest.raises(futures.TimeoutError):
            for r in executor.map(release.wait, [0, 0, LONG], timeout=0.2):
                results.append(r)
        # On a loaded machine the first calls may not have run in time either.
        assert results in ([False, False], [False], [])
    finally:
        release.set()


def test_map_timeout_counts_from_the_call(executor: RunnerExecutor) -> None:
    release = threading.Event()
    try:
        it = executor.map(release.wait, [LONG], timeout=0.05)
        time.sleep(0.1)  # the time passes before next(): the deadline is already gone
        with pytest.raises(futures.TimeoutError):
            next(it)
    finally:
        release.set()


@pytest.mark.parametrize("buffersize", ["foo", 2.0])
def test_map_buffersize_type_validation(executor: RunnerExecutor, buffersize: Any) -> None:
    with pytest.raises(TypeError, match="buffersize must be an integer or None"):
        executor.map(str, range(4), buffersize=buffersize)


@pytest.mark.parametrize("buffersize", [0, -1])
def test_map_buffersize_value_validation(executor: RunnerExecutor, buffersize: int) -> None:
    with pytest.raises(ValueError, match="buffersize must be None or > 0"):
        executor.map(str, range(4), buffersize=buffersize)


@pytest.mark.parametrize("chunksize", [0, -1])
def test_map_chunksize_value_validation(executor: RunnerExecutor, chunksize: int) -> None:
    with pytest.raises(ValueError, match="chunksize must be >= 1"):
        executor.map(str, range(4), chunksize=chunksize)


@pytest.mark.parametrize("buffersize", [1, 2, 4, 8])
@pytest.mark.parametrize("chunksize", [1, 3])
def test_map_buffersize(executor: RunnerExecutor, buffersize: int, chunksize: int) -> None:
    res = executor.map(str, range(4), buffersize=buffersize, chunksize=chunksize)
    assert list(res) == ["0", "1", "2", "3"]
    res2 = executor.map(add, range(4), range(4), buffersize=buffersize, chunksize=chunksize)
    assert list(res2) == [0, 2, 4, 6]


def test_map_buffersize_on_infinite_iterables(executor: RunnerExecutor) -> None:
    res = executor.map(str, itertools.count(), buffersize=2)
    assert [next(res, None) for _ in range(3)] == ["0", "1", "2"]
    res2 = executor.map(add, itertools.count(), itertools.count(), buffersize=2)
    assert [next(res2, None) for _ in range(3)] == [0, 2, 4]
    res3 = executor.map(str, itertools.count(), buffersize=2, chunksize=3)
    assert [next(res3, None) for _ in range(7)] == [str(i) for i in range(7)]


def test_map_buffersize_on_empty_iterable(executor: RunnerExecutor) -> None:
    assert next(executor.map(str, [], buffersize=2), None) is None
    assert next(executor.map(str, buffersize=2), None) is None


@SHUTS_DOWN_FIXTURE
def test_map_buffersize_when_buffer_is_full(executor: RunnerExecutor) -> None:
    ints = iter(range(10))
    executor.map(str, ints, buffersize=2)
    executor.shutdown(wait=True)
    assert next(ints) == 2, "map should have taken only `buffersize` elements"


def test_map_buffersize_pulls_one_input_per_result(executor: RunnerExecutor) -> None:
    taken: list[int] = []

    def source() -> Iterator[int]:
        for i in range(100):
            taken.append(i)
            yield i

    it = executor.map(str, source(), buffersize=3)
    assert len(taken) == 3
    assert next(it) == "0"
    assert len(taken) == 4  # one refill per result taken
    it.close()


@SHUTS_DOWN_FIXTURE
def test_shutdown_race_issue12456(executor: RunnerExecutor) -> None:
    executor.map(str, [2] * (WORKERS + 1))
    executor.shutdown()


@pytest.mark.thread_unsafe(reason="counts garbage collections")
def test_no_stale_references(executor: RunnerExecutor) -> None:
    obj = MyObject()
    # The callback only appends (no lock): on 3.14t a collection can run inside
    # Event.wait() with the event's lock held, and an Event.set() from the
    # callback would then deadlock on that lock.
    collected: list[bool] = []
    ref = weakref.ref(obj, lambda _: collected.append(True))
    executor.submit(obj.my_method)  # the future is dropped at once
    del obj
    deadline = time.monotonic() + LONG
    while not collected and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    assert ref() is None, "the executor kept a reference to a finished call"


def test_free_reference(executor: RunnerExecutor) -> None:
    # The result iterator keeps no reference to results it yielded.
    for obj in executor.map(make_dummy_object, range(10)):
        wr = weakref.ref(obj)
        del obj
        deadline = time.monotonic() + LONG
        while wr() is not None and time.monotonic() < deadline:
            gc.collect()
            time.sleep(0.01)
        assert wr() is None


def _future_raises_falsey_exceptions() -> bool:
    f: Future[None] = Future()
    f.set_exception(FalseyBoolException("x"))
    try:
        f.result()
    except FalseyBoolException:
        return True
    return False


@pytest.mark.skipif(
    not _future_raises_falsey_exceptions(),
    reason="this Python's own Future.result() ignores falsey exceptions (gh-132063)",
)
def test_swallows_falsey_exceptions(executor: RunnerExecutor) -> None:
    with pytest.raises(FalseyBoolException, match="boolbool"):
        executor.submit(raiser, FalseyBoolException, "boolbool").result(LONG)
    with pytest.raises(FalseyLenException, match="lenlen"):
        executor.submit(raiser, FalseyLenException, "lenlen").result(LONG)


def test_base_exceptions_go_to_the_future(executor: RunnerExecutor) -> None:
    with pytest.raises(KeyboardInterrupt):
        executor.submit(raiser, KeyboardInterrupt).result(LONG)
    assert executor.submit(pow, 2, 2).result(LONG) == 4  # the runner carries on


def test_max_workers_negative() -> None:
    for n in (0, -1):
        with pytest.raises(ValueError, match="workers must be >= 1"):
            ThreadPool(n)


# ---- ThreadPoolExecutorTest (test_thread_pool.py) --------------------------------------


@SHUTS_DOWN_FIXTURE
def test_map_submits_without_iteration(executor: RunnerExecutor) -> None:
    finished: list[int] = []
    lock = threading.Lock()

    def record_finished(n: int) -> None:
        with lock:
            finished.append(n)

    executor.map(record_finished, range(10))
    executor.shutdown(wait=True)
    assert sorted(finished) == list(range(10))


@SHUTS_DOWN_FIXTURE
def test_saturation(executor: RunnerExecutor) -> None:
    sem = threading.Semaphore(0)
    fs = [executor.submit(sem.acquire, True, LONG) for _ in range(15 * WORKERS)]
    for _ in range(15 * WORKERS):
        sem.release()
    executor.shutdown(wait=True)
    assert all(f.done() and f.result() for f in fs)


def test_executor_map_current_future_cancel() -> None:
    stop = threading.Event()
    log: list[str] = []

    def log_n_wait(ident: str) -> None:
        log.append(f"{ident} started")
        try:
            stop.wait(LONG)
        finally:
            log.append(f"{ident} stopped")

    with ThreadPool(1) as one:
        ex = one.executor
        fut = ex.submit(log_n_wait, "first")  # saturates the pool
        try:
            gen = ex.map(log_n_wait, ["second", "third"], timeout=0)
            with contextlib.closing(gen), pytest.raises(futures.TimeoutError):
                next(gen)
        finally:
            stop.set()
        fut.result(LONG)
    # "second" is cancelled by the timeout, "third" because the iterator closed.
    assert log == ["first started", "first stopped"]


# ---- ExecutorShutdownTest (test_shutdown.py) -------------------------------------------


@SHUTS_DOWN_FIXTURE
def test_run_after_shutdown(executor: RunnerExecutor) -> None:
    executor.shutdown()
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        executor.submit(pow, 2, 5)
    with pytest.raises(RuntimeError):
        executor.map(pow, [2], [5])
    assert executor.is_shutdown


def test_run_after_the_runner_shut_down(kind: str, pool: ThreadPool) -> None:
    runner = _make_runner(kind, pool)
    ex = RunnerExecutor(runner)
    runner.shutdown(timeout=LONG)
    with pytest.raises(ExecutorShutdownError, match="cannot schedule new futures") as info:
        ex.submit(pow, 2, 5)
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, RunnerClosedError)


@SHUTS_DOWN_FIXTURE
def test_view_shutdown_leaves_the_runner_running(executor: RunnerExecutor) -> None:
    executor.shutdown()
    assert not executor.runner.is_closed
    other = RunnerExecutor(executor.runner)
    assert other.submit(pow, 2, 3).result(LONG) == 8


@SHUTS_DOWN_FIXTURE
def test_hang_issue12364(executor: RunnerExecutor) -> None:
    fs = [executor.submit(time.sleep, 0.01) for _ in range(50)]
    executor.shutdown()
    for f in fs:
        f.result(LONG)


def test_cancel_futures(kind: str, pool: ThreadPool) -> None:
    runner = _make_runner(kind, pool)
    ex = RunnerExecutor(runner)
    gate = threading.Event()
    fs = [ex.submit(gate.wait, LONG) for _ in range(50)]
    threading.Timer(0.2, gate.set).start()
    ex.shutdown(cancel_futures=True)
    cancelled = [f for f in fs if f.cancelled()]
    others = [f for f in fs if not f.cancelled()]
    # At most WORKERS calls had started; every other one was cancelled.
    assert len(cancelled) >= 50 - WORKERS
    for f in others:
        assert f.done()
        assert f.exception() is None
    # A cancelled call never runs, and its future is notified (wait() sees it done).
    _, not_done = futures.wait(fs, timeout=LONG)
    assert not not_done
    gate.set()
    if runner is not pool:
        runner.shutdown(timeout=LONG)


def test_hang_gh94440() -> None:
    # shutdown(wait=True) does not hang when a call was submitted and
    # cancelled just before it.
    with ThreadPool(1) as one:
        ex = RunnerExecutor(one)
        ex.submit(int).result(LONG)
        ex.submit(int).cancel()
        done = threading.Event()
        threading.Thread(target=lambda: (ex.shutdown(wait=True), done.set())).start()
        assert done.wait(LONG)


@SHUTS_DOWN_FIXTURE
def test_context_manager_shutdown(executor: RunnerExecutor) -> None:
    with executor as e:
        assert e is executor
        assert list(e.map(abs, range(-5, 5))) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]
    assert executor.is_shutdown
    with pytest.raises(RuntimeError):
        executor.submit(abs, 1)


@SHUTS_DOWN_FIXTURE
def test_shutdown_no_wait(executor: RunnerExecutor) -> None:
    res = executor.map(abs, range(-5, 5))
    executor.shutdown(wait=False)
    assert list(res) == [abs(v) for v in range(-5, 5)]


@SHUTS_DOWN_FIXTURE
def test_shutdown_wait_waits_for_running_calls(executor: RunnerExecutor) -> None:
    started = threading.Event()
    finished = threading.Event()

    def slow() -> None:
        started.set()
        time.sleep(0.05)
        finished.set()

    executor.submit(slow)
    assert started.wait(LONG)
    executor.shutdown(wait=True)
    assert finished.is_set()


@SHUTS_DOWN_FIXTURE
def test_shutdown_from_inside_a_call_does_not_wait_for_itself(executor: RunnerExecutor) -> None:
    def stop() -> str:
        executor.shutdown(wait=True)
        return "stopped"

    assert executor.submit(stop).result(LONG) == "stopped"


def test_shutdown_from_inside_a_call_does_not_wait_for_calls_behind_it(pool: ThreadPool) -> None:
    seq = SequencedTaskRunner(pool)
    ex = RunnerExecutor(seq)
    gate = threading.Event()
    first = ex.submit(lambda: (gate.wait(LONG), ex.shutdown(wait=True), "stopped")[-1])
    behind = ex.submit(pow, 2, 5)  # queued behind the call that shuts the view down
    gate.set()
    assert first.result(LONG) == "stopped"
    assert behind.result(LONG) == 32
    seq.shutdown(timeout=LONG)


def _run_script(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )


SLEEP_AND_PRINT = """
    import sys, time
    from taskrunner import ThreadPool
    def sleep_and_print(t, msg):
        time.sleep(t)
        print(msg)
        sys.stdout.flush()
"""


@pytest.mark.thread_unsafe(reason="starts an interpreter")
def test_interpreter_shutdown() -> None:
    # Calls submitted and never waited for still run before the interpreter exits.
    out = _run_script(
        SLEEP_AND_PRINT
        + """
    pool = ThreadPool(2).start()
    pool.executor.submit(sleep_and_print, 0.2, "apple")
    """
    )
    assert out.returncode == 0 and not out.stderr, out.stderr
    assert out.stdout.strip() == "apple"


@pytest.mark.thread_unsafe(reason="starts an interpreter")
def test_submit_after_interpreter_shutdown() -> None:
    out = _run_script(
        """
    import atexit
    from taskrunner import ThreadPool
    @atexit.register
    def run_last():
        try:
            ex.submit(id, None)
        except RuntimeError as e:
            print("runtime-error:", e)
    pool = ThreadPool(2).start()
    ex = pool.executor
    ex.submit(id, 42).result()
    """
    )
    assert "runtime-error: cannot schedule new futures after interpreter shutdown" in out.stdout


@pytest.mark.thread_unsafe(reason="starts an interpreter")
def test_hang_gh83386() -> None:
    # shutdown(wait=False) with a running call does not hang at exit, and the call finishes.
    out = _run_script(
        SLEEP_AND_PRINT
        + """
    pool = ThreadPool(3).start()
    ex = pool.executor
    ex.submit(sleep_and_print, 0.2, "apple")
    ex.shutdown(wait=False)
    """
    )
    assert out.returncode == 0 and not out.stderr, out.stderr
    assert out.stdout.strip() == "apple"


@pytest.mark.thread_unsafe(reason="starts an interpreter")
def test_cancel_futures_wait_false() -> None:
    out = _run_script(
        SLEEP_AND_PRINT
        + """
    pool = ThreadPool(2).start()
    ex = pool.executor
    ex.submit(sleep_and_print, 0.1, "apple")
    ex.shutdown(wait=False, cancel_futures=True)
    """
    )
    assert out.returncode == 0 and not out.stderr, out.stderr
    assert out.stdout.strip() in ("apple", "")


# ---- WaitTests (test_wait.py) --------------------------------------------------------


def test_20369(executor: RunnerExecutor) -> None:
    future = executor.submit(mul, 1, 2)
    done, not_done = futures.wait([future, future], return_when=futures.ALL_COMPLETED)
    assert done == {future} and not_done == set()


def test_first_completed(kind: str, executor: RunnerExecutor) -> None:
    _needs_concurrency(kind)
    event = threading.Event()
    cancelled = _settled("cancelled")
    future1 = executor.submit(mul, 21, 2)
    future2 = executor.submit(event.wait, LONG)
    try:
        done, not_done = futures.wait(
            [cancelled, future1, future2], return_when=futures.FIRST_COMPLETED, timeout=LONG
        )
        assert done == {future1}
        assert not_done == {cancelled, future2}
    finally:
        event.set()
    future2.result(LONG)


def test_first_exception(kind: str, executor: RunnerExecutor) -> None:
    _needs_concurrency(kind)
    event1, event2 = threading.Event(), threading.Event()

    def wait_and_raise(e: threading.Event) -> None:
        e.wait(LONG)
        raise Exception("this is an exception")

    try:
        future1 = executor.submit(mul, 2, 21)
        future2 = executor.submit(wait_and_raise, event1)
        future3 = executor.submit(event2.wait, LONG)
        future1.add_done_callback(lambda _: event1.set())
        finished, pending = futures.wait(
            [future1, future2, future3], return_when=futures.FIRST_EXCEPTION, timeout=LONG
        )
        assert finished == {future1, future2}
        assert pending == {future3}
    finally:
        event1.set()
        event2.set()
    future3.result(LONG)


def test_all_completed_with_settled_futures(executor: RunnerExecutor) -> None:
    future1 = executor.submit(divmod, 2, 0)
    future2 = executor.submit(mul, 2, 21)
    settled = [_settled("success"), _settled("cancelled_notified"), _settled("exception")]
    finished, pending = futures.wait(
        [*settled, future1, future2], return_when=futures.ALL_COMPLETED, timeout=LONG
    )
    assert finished == {*settled, future1, future2}
    assert pending == set()


def test_wait_timeout(executor: RunnerExecutor) -> None:
    event = threading.Event()
    future = executor.submit(event.wait, LONG)
    settled = [_settled("success"), _settled("cancelled_notified"), _settled("exception")]
    try:
        finished, pending = futures.wait(
            [*settled, future], timeout=0.05, return_when=futures.ALL_COMPLETED
        )
        assert finished == set(settled)
        assert pending == {future}
    finally:
        event.set()
    future.result(LONG)


@pytest.mark.thread_unsafe(reason="its calls block the shared runner until all are submitted")
def test_pending_calls_race(executor: RunnerExecutor) -> None:
    event = threading.Event()
    fs = {executor.submit(event.wait, LONG) for _ in range(100)}
    event.set()
    _, not_done = futures.wait(fs, return_when=futures.ALL_COMPLETED, timeout=LONG)
    assert not not_done


# ---- AsCompletedTests (test_as_completed.py) --------------------------------------------


def test_as_completed_no_timeout(executor: RunnerExecutor) -> None:
    future1 = executor.submit(mul, 2, 21)
    future2 = executor.submit(mul, 7, 6)
    settled = [_settled("cancelled_notified"), _settled("exception"), _settled("success")]
    completed = set(futures.as_completed([*settled, future1, future2], timeout=LONG))
    assert completed == {*settled, future1, future2}


def test_as_completed_future_times_out(executor: RunnerExecutor) -> None:
    release = threading.Event()
    try:
        settled = {_settled("cancelled_notified"), _settled("exception"), _settled("success")}
        for timeout in (0, 0.05):
            future = executor.submit(release.wait, LONG)
            completed = set()
            with pytest.raises(futures.TimeoutError):
                for f in futures.as_completed(settled | {future}, timeout):
                    completed.add(f)
            assert completed == settled
    finally:
        release.set()


def test_as_completed_duplicate_futures(executor: RunnerExecutor) -> None:
    future1 = executor.submit(time.sleep, 0.01)
    assert len(list(futures.as_completed(itertools.repeat(future1, 3), timeout=LONG))) == 1


# ---- Future behaviour through an executor (test_future.py's callbacks) ------------------


def test_done_callbacks(executor: RunnerExecutor) -> None:
    seen: list[Any] = []
    arrived = threading.Event()

    def callback(f: Future[Any]) -> None:
        seen.append(f.result() if not f.cancelled() and f.exception() is None else f.exception())
        arrived.set()

    executor.submit(mul, 6, 7).add_done_callback(callback)
    assert arrived.wait(LONG)
    arrived.clear()
    f = executor.submit(divmod, 1, 0)
    f.add_done_callback(callback)
    assert arrived.wait(LONG)
    assert seen[0] == 42 and isinstance(seen[1], ZeroDivisionError)
    # Added after completion: called at once.
    done_now: list[bool] = []
    f.add_done_callback(lambda _: done_now.append(True))
    assert done_now == [True]


def test_cancel_before_start_cancels_the_task(kind: str, pool: ThreadPool) -> None:
    runner = _make_runner(kind, pool)
    ex = RunnerExecutor(runner)
    gate = threading.Event()
    ran: list[int] = []
    blockers = [ex.submit(gate.wait, LONG) for _ in range(WORKERS)]
    victim = ex.submit(ran.append, 1)
    assert victim.cancel()
    assert victim.cancelled()
    gate.set()
    for b in blockers:
        b.result(LONG)
    ex.shutdown(wait=True)
    runner.flush(LONG)
    assert ran == []
    done, _ = futures.wait([victim], timeout=LONG)
    assert done == {victim}
    if runner is not pool:
        runner.shutdown(timeout=LONG)


def test_cancel_running_fails(executor: RunnerExecutor) -> None:
    started, release = threading.Event(), threading.Event()

    def work() -> int:
        started.set()
        release.wait(LONG)
        return 7

    f = executor.submit(work)
    assert started.wait(LONG)
    assert f.running() and not f.cancel()
    release.set()
    assert f.result(LONG) == 7


# ---- taskrunner's own promises ----------------------------------------------------------


def test_calls_run_with_the_views_traits(pool: ThreadPool) -> None:
    ex = RunnerExecutor(pool, traits=TaskTraits(may_block=True, category="io"))
    name = ex.submit(lambda: threading.current_thread().name).result(LONG)
    assert "blocking" in name  # ran on the pool's blocking group
    assert ex.traits.category == "io"


def test_priorities_order_calls_of_different_views() -> None:
    with ThreadPool(1) as one:
        gate = threading.Event()
        order: list[str] = []
        one.post_task(gate.wait, LONG)
        low = RunnerExecutor(one, traits=TaskTraits(priority=TaskPriority.BEST_EFFORT))
        high = RunnerExecutor(one, traits=TaskTraits(priority=TaskPriority.USER_BLOCKING))
        fs = [low.submit(order.append, "low"), high.submit(order.append, "high")]
        gate.set()
        futures.wait(fs, timeout=LONG)
        assert order == ["high", "low"]


def test_calls_on_a_runner_see_it_as_current(kind: str, pool: ThreadPool) -> None:
    runner = _make_runner(kind, pool)
    assert runner.executor.submit(current_task_runner).result(LONG) is runner
    assert runner.executor is runner.executor  # one shared view per runner
    if runner is not pool:
        runner.shutdown(timeout=LONG)


def test_sequenced_view_keeps_order(pool: ThreadPool) -> None:
    seq = SequencedTaskRunner(pool)
    seen: list[int] = []
    fs = [seq.executor.submit(seen.append, i) for i in range(200)]
    futures.wait(fs, timeout=LONG)
    assert seen == list(range(200))


def test_dropped_task_cancels_its_future() -> None:
    # A runner's forceful shutdown drops queued calls: their futures are
    # cancelled (and notified), never left pending.
    pool = ThreadPool(1).start()
    gate, started = threading.Event(), threading.Event()
    ex = pool.executor

    def block() -> bool:
        started.set()
        return gate.wait(LONG)

    first = ex.submit(block)
    assert started.wait(LONG)
    queued = [ex.submit(int) for _ in range(5)]
    threading.Timer(0.1, gate.set).start()
    pool.shutdown(cancel_pending=True, timeout=LONG)
    assert first.result(LONG) is True
    _, not_done = futures.wait(queued, timeout=LONG)
    assert not not_done
    assert all(f.cancelled() for f in queued)


def test_queue_policy_drop_cancels_the_future(pool: ThreadPool) -> None:
    gate = threading.Event()
    runner = SingleThreadTaskRunner(pool, capacity=2, policy=QueuePolicy.DROP_NEWEST)
    ex = runner.executor
    fs = [ex.submit(gate.wait, LONG) for _ in range(6)]
    gate.set()
    _, not_done = futures.wait(fs, timeout=LONG)
    assert not not_done
    assert any(f.cancelled() for f in fs)
    runner.shutdown(timeout=LONG)


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="runner must be a TaskRunner"):
        RunnerExecutor(object())  # type: ignore[arg-type]
    with ThreadPool(1) as one:
        with pytest.raises(TypeError, match="traits must be TaskTraits"):
            RunnerExecutor(one, traits="high")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="chunksize must be an integer"):
            one.executor.map(str, [1], chunksize=1.5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="timeout must be a number"):
            one.executor.map(str, [1], timeout="soon")  # type: ignore[arg-type]


@pytest.mark.thread_unsafe(reason="counts garbage collections")
def test_view_and_pool_are_collected_after_shutdown() -> None:
    pool = ThreadPool(2).start()
    ex = RunnerExecutor(pool)
    assert ex.submit(pow, 2, 2).result(LONG) == 4
    pool.executor.submit(pow, 3, 3).result(LONG)
    collected: list[str] = []  # appended by the finalizers: no lock (see above)
    weakref.finalize(pool, collected.append, "pool")
    weakref.finalize(ex, collected.append, "view")
    ex.shutdown()
    pool.shutdown(timeout=LONG)
    del pool, ex
    deadline = time.monotonic() + LONG
    while len(collected) < 2 and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    assert sorted(collected) == ["pool", "view"]


def test_map_iterator_holds_the_view_weakly(pool: ThreadPool) -> None:
    ex = RunnerExecutor(pool)
    it = ex.map(str, itertools.count(), buffersize=2)
    assert next(it) == "0"
    assert pool.flush(LONG)  # the calls in the buffer are done
    ref = weakref.ref(ex)
    del ex
    gc.collect()
    assert ref() is None
    # What was submitted (the buffer refills before each result) still comes
    # back; nothing more is submitted.
    assert list(it) == ["1", "2"]


@pytest.mark.parametrize("cancel_futures", [True, False], ids=["cancel", "drain"])
def test_shutdown_racing_submitters_and_cancellers_leaves_nothing_pending(
    kind: str, pool: ThreadPool, cancel_futures: bool
) -> None:
    """8 threads submit and cancel while another shuts the view down: once
    shutdown(wait=True) returned, every future a submitter got is done, each
    call ran at most once, and a cancelled future's call never ran."""
    runner = _make_runner(kind, pool)
    ex = RunnerExecutor(runner)
    ran: dict[int, int] = {}
    ran_lock = threading.Lock()

    def work(i: int) -> int:
        with ran_lock:
            ran[i] = ran.get(i, 0) + 1
        return i

    got: list[list[tuple[int, Future[int]]]] = [[] for _ in range(8)]
    refused = [0] * 8
    halfway = threading.Barrier(9)

    def submitter(k: int) -> None:
        for n in range(300):
            i = k * 1000 + n
            if n == 150:
                halfway.wait(LONG)
            try:
                f = ex.submit(work, i)
            except RuntimeError:
                refused[k] += 1
                continue
            got[k].append((i, f))
            if n % 3 == 0:
                f.cancel()

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    halfway.wait(LONG)
    ex.shutdown(wait=True, cancel_futures=cancel_futures)
    # Submits after the shutdown are refused, so every future handed out so
    # far was submitted before it, and shutdown(wait=True) waited for it.
    pending = [i for per in got for i, f in list(per) if not f.done()]
    for t in threads:
        t.join(LONG)
    assert pending == [], f"futures left pending when shutdown returned: {pending[:10]}"
    for per in got:
        for i, f in per:
            assert f.done(), f"call {i}: future left pending after shutdown"
            if f.cancelled():
                assert i not in ran, f"call {i}: cancelled, yet it ran"
            else:
                assert f.result(0) == i and ran[i] == 1
    assert sum(refused) > 0 or sum(len(per) for per in got) == 8 * 300
    if runner is not pool:
        runner.shutdown(timeout=LONG)
