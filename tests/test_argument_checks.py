"""Bad arguments fail at the call with an exception that names them.

Every public wait checks its ``timeout`` the same way (taskrunner.runtime.waits),
and the sizes and names a post or a constructor takes are checked before
anything is allocated or queued."""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from taskrunner import (
    ParallelTaskRunner,
    SequencedTaskRunner,
    SingleThreadTaskRunner,
    TaskTraits,
    ThreadPool,
)
from taskrunner.jobs import JobContext, JobManager, MemoryJobStore
from taskrunner.native.ring import RingBuffer
from taskrunner.native.wheel import TimingWheel
from taskrunner.runtime.waits import check_wait_timeout


def noop(*args: Any) -> None:
    pass


@pytest.fixture
def pool() -> Iterator[ThreadPool]:
    p = ThreadPool(2, name="checks")
    yield p
    p.shutdown(timeout=10)


def _waits(pool: ThreadPool) -> dict[str, Callable[[Any], object]]:
    seq = SequencedTaskRunner(pool)
    par = ParallelTaskRunner(pool, 2)
    single = SingleThreadTaskRunner(pool)
    task = pool.post_task(noop)
    return {
        "pool.wait_idle": pool.wait_idle,
        "pool.flush": pool.flush,
        "pool.wait_shutdown": pool.wait_shutdown,
        "sequenced.wait_idle": seq.wait_idle,
        "sequenced.flush": seq.flush,
        "parallel.flush": par.flush,
        "single_thread.wait_idle": single.wait_idle,
        "single_thread.flush": single.flush,
        "task.wait": task.wait,
        "map": lambda t: list(pool.map(noop, range(3), timeout=t)),
    }


WAIT_NAMES = [
    "pool.wait_idle",
    "pool.flush",
    "pool.wait_shutdown",
    "sequenced.wait_idle",
    "sequenced.flush",
    "parallel.flush",
    "single_thread.wait_idle",
    "single_thread.flush",
    "task.wait",
    "map",
]


@pytest.mark.parametrize("name", WAIT_NAMES)
@pytest.mark.parametrize(
    ("bad", "error", "words"),
    [
        ("1", TypeError, "timeout must be a number of seconds or None, not str"),
        (True, TypeError, "timeout must be a number of seconds or None, not bool"),
        ([1], TypeError, "not list"),
        (math.nan, ValueError, "timeout must not be NaN"),
    ],
)
def test_every_public_wait_refuses_a_bad_timeout(
    pool: ThreadPool, name: str, bad: object, error: type[Exception], words: str
) -> None:
    wait = _waits(pool)[name]
    with pytest.raises(error, match=words):
        wait(bad)


@pytest.mark.parametrize("name", WAIT_NAMES)
def test_a_negative_or_infinite_timeout_is_a_look_or_no_limit(pool: ThreadPool, name: str) -> None:
    wait = _waits(pool)[name]
    pool.wait_idle(10)
    t0 = time.monotonic()
    if name == "map":  # as Executor.map: a result not ready at once times out
        with contextlib.suppress(TimeoutError):
            wait(-1.0)
    else:
        wait(-1.0)  # looks, never blocks
    if name == "pool.wait_shutdown":  # nothing shuts it down: only a look here
        assert wait(-math.inf) is False
    else:
        wait(math.inf)  # no limit: everything here finishes at once
    assert time.monotonic() - t0 < 5


def test_job_waits_refuse_a_bad_timeout(pool: ThreadPool) -> None:
    manager = JobManager(MemoryJobStore(), pool, poll_interval=0.05)

    @manager.handler("echo")
    def echo(ctx: JobContext, args: Any) -> Any:
        return args

    manager.start()
    try:
        handle = manager.submit("echo", 1)
        assert handle.result(10) == 1
        for bad, error in (("1", TypeError), (math.nan, ValueError), (True, TypeError)):
            with pytest.raises(error, match="timeout"):
                handle.result(bad)
            with pytest.raises(error, match="timeout"):
                manager.result(handle.id, bad)
        with pytest.raises(TypeError, match="timeout"):
            manager.shutdown(timeout="soon")  # type: ignore[arg-type]
    finally:
        manager.shutdown(timeout=10)


def test_wait_timeout_rule() -> None:
    assert check_wait_timeout(None) is None
    assert check_wait_timeout(math.inf) is None
    assert check_wait_timeout(-math.inf) == 0.0
    assert check_wait_timeout(-3) == 0.0
    assert check_wait_timeout(2) == 2.0 and isinstance(check_wait_timeout(2), float)
    with pytest.raises(ValueError, match="deadline must not be NaN"):
        check_wait_timeout(math.nan, "deadline")


@pytest.mark.parametrize("name", [5, b"x", object()])
def test_a_task_name_must_be_a_str(pool: ThreadPool, name: object) -> None:
    seq = SequencedTaskRunner(pool)
    posts: list[Callable[[], object]] = [
        lambda: pool.post_task(noop, name=name),  # type: ignore[arg-type]
        lambda: pool.post_tasks(noop, [(), ()], name=name),  # type: ignore[arg-type]
        lambda: pool.post_delayed_task(noop, 0.5, name=name),  # type: ignore[arg-type]
        lambda: seq.post_task(noop, name=name),  # type: ignore[arg-type]
        lambda: list(pool.map(noop, range(2), name=name)),  # type: ignore[arg-type]
    ]
    for post in posts:
        with pytest.raises(TypeError, match="name must be a str or None"):
            post()
    assert pool.wait_idle(10)
    stats = pool.stats()  # nothing was queued, scheduled or run on the way
    assert (stats["queued_total"], stats["delayed_pending"], stats["completed"]) == (0, 0, 0)


def test_an_empty_category_is_refused() -> None:
    with pytest.raises(ValueError, match="category must not be empty"):
        TaskTraits(category="")


@pytest.mark.parametrize("capacity", [2**70, 2**64, 2**40])
def test_a_capacity_too_large_names_the_limit(pool: ThreadPool, capacity: int) -> None:
    with pytest.raises(ValueError, match="capacity must be <= "):
        SingleThreadTaskRunner(pool, capacity=capacity)
    with pytest.raises(ValueError, match="capacity must be <= "):
        RingBuffer(capacity)


def test_timing_wheel_sizes_name_their_limits() -> None:
    with pytest.raises(ValueError, match="tick is too long"):
        TimingWheel(tick=1e300)
    with pytest.raises(ValueError, match="batch must be <= "):
        TimingWheel(batch=2**70)


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"deadline": "tomorrow"}, TypeError, "deadline must be a number of seconds"),
        ({"deadline": True}, TypeError, "deadline must be a number of seconds"),
        ({"deadline": math.nan}, ValueError, "deadline must be finite"),
        ({"deadline": math.inf}, ValueError, "deadline must be finite"),
        ({"deadline": 1e300}, ValueError, "deadline must be within"),
        ({"run_at": "now"}, TypeError, "run_at must be a number of seconds"),
        ({"run_at": math.nan}, ValueError, "run_at must be finite"),
        ({"run_at": -math.inf}, ValueError, "run_at must be finite"),
        ({"run_at": 1e300}, ValueError, "run_at must be within"),
        ({"cancel_token": 5}, TypeError, "cancel_token must be a CancelToken or None"),
        ({"delay": 1e300}, ValueError, "delay must be less than 5000000000 seconds"),
        ({"timeout": 1e300}, ValueError, "timeout must be less than 5000000000 seconds"),
        ({"unique_for": 1e300}, ValueError, "unique_for must be less than 5000000000 seconds"),
    ],
)
def test_a_bad_submit_argument_stores_nothing(
    pool: ThreadPool, kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    store = MemoryJobStore()
    manager = JobManager(store, pool, poll_interval=0.05)
    ran: list[Any] = []

    @manager.handler("record")
    def record(ctx: JobContext, args: Any) -> None:
        ran.append(args)

    manager.start()
    try:
        with pytest.raises(error, match=words):
            manager.submit("record", "bad", **kwargs)
        # Nothing was stored, so nothing ever runs: a good job submitted after
        # it runs alone.
        assert manager.submit("record", "good").result(10) is None
        time.sleep(0.2)  # a stray stored job would be claimed by the 50 ms poll
        assert ran == ["good"]
        assert len(store.list_jobs().jobs) == 1
    finally:
        manager.shutdown(timeout=10)


@pytest.mark.parametrize("name", [5, b"pool", ""])
def test_pool_and_runner_names_are_non_empty_str(pool: ThreadPool, name: object) -> None:
    error = ValueError if name == "" else TypeError
    makers: list[Callable[[], object]] = [
        lambda: ThreadPool(1, name=name),  # type: ignore[arg-type]
        lambda: SequencedTaskRunner(pool, name=name),  # type: ignore[arg-type]
        lambda: ParallelTaskRunner(pool, 2, name=name),  # type: ignore[arg-type]
        lambda: SingleThreadTaskRunner(pool, name=name),  # type: ignore[arg-type]
    ]
    for make in makers:
        with pytest.raises(error, match="name must"):
            make()


@pytest.mark.thread_unsafe(reason="counts the process's threads")
@pytest.mark.parametrize(
    ("limits", "error", "words"),
    [
        ([("io", 1)], TypeError, "category_limits must be a dict"),
        ({5: 1}, TypeError, "category_limits keys must be non-empty str"),
        ({"": 1}, TypeError, "category_limits keys must be non-empty str"),
        ({"io": 0}, ValueError, r"category_limits\['io'\] must be >= 1"),
        ({"io": 1.5}, TypeError, r"category_limits\['io'\] must be an int"),
    ],
)
def test_category_limits_are_checked_before_any_thread_starts(
    limits: object, error: type[Exception], words: str
) -> None:
    before = threading.active_count()
    with pytest.raises(error, match=words):
        ThreadPool(1, category_limits=limits)  # type: ignore[arg-type]
    assert threading.active_count() == before


@pytest.mark.parametrize("budget", [math.nan, -1, "1"])
def test_a_sequenced_budget_must_be_seconds(pool: ThreadPool, budget: object) -> None:
    with pytest.raises(ValueError, match="budget must be a number of seconds"):
        SequencedTaskRunner(pool, budget=budget)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"every": 1e300}, "every must be less than 5000000000 seconds"),
        ({"every": 5, "misfire_grace": 1e300}, "misfire_grace must be less than"),
        ({"every": 5, "timeout": 1e300}, "timeout must be less than"),
        ({"every": 5, "start": 1e300}, "start must be within"),  # used to loop forever
        ({"every": 5, "start": -1e300}, "start must be within"),
    ],
)
def test_a_schedule_too_far_or_too_long_is_refused(
    pool: ThreadPool, kwargs: dict[str, Any], words: str
) -> None:
    manager = JobManager(MemoryJobStore(), pool)

    @manager.handler("tick")
    def tick(ctx: JobContext, args: Any) -> None:
        pass

    with pytest.raises(ValueError, match=words):
        manager.schedule("s", job_type="tick", **kwargs)
    assert manager.schedules() == []
    manager.shutdown(timeout=10)


@pytest.mark.parametrize("field", ["initial_delay", "max_delay"])
def test_a_retry_delay_too_long_is_refused(field: str) -> None:
    from taskrunner.jobs import RetryPolicy

    with pytest.raises(ValueError, match=f"RetryPolicy.{field} must be less than"):
        RetryPolicy(**{field: 1e300})


def test_a_period_or_delay_too_long_for_the_clock_is_refused_at_once(pool: ThreadPool) -> None:
    from taskrunner import DebounceTimer, RepeatingTimer

    with pytest.raises(ValueError, match="interval must be less than 9200000000 seconds"):
        pool.post_repeating_task(noop, 1e300)
    with pytest.raises(ValueError, match="interval must be less than 9200000000 seconds"):
        RepeatingTimer(pool).start(1e300, noop)
    with pytest.raises(ValueError, match="delay must be less than 9200000000 seconds"):
        DebounceTimer(pool, 1e300, noop)


@pytest.mark.thread_unsafe(reason="counts the process's threads")
@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"pool": 5}, TypeError, "pool must be a ThreadPool or None"),
        ({"execution": 5}, TypeError, "execution must be a TaskRunner or None"),
        ({"serializer": 5}, TypeError, "serializer must have dumps"),
        ({"retry_policy": 5}, TypeError, "retry_policy must be a RetryPolicy or None"),
        ({"store_retry": {}}, TypeError, "store_retry must be a RetryPolicy or None"),
        ({"lease_seconds": 1e300}, ValueError, "lease_seconds must be less than"),
        ({"poll_interval": 1e300}, ValueError, "poll_interval must be less than"),
    ],
)
def test_job_manager_arguments_are_checked_before_it_starts_anything(
    kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    before = threading.active_count()
    with pytest.raises(error, match=words):
        JobManager(MemoryJobStore(), **kwargs)
    assert threading.active_count() == before


@pytest.mark.parametrize(
    ("path", "error", "words"),
    [
        (5, TypeError, "path must be a str or os.PathLike, not int"),
        (b"/tmp/jobs.db", TypeError, "path must be a str or os.PathLike, not bytes"),
        ("", ValueError, "path must not be empty"),
    ],
)
def test_a_sqlite_store_path_is_checked(path: object, error: type[Exception], words: str) -> None:
    from taskrunner.jobs import SQLiteJobStore

    with pytest.raises(error, match=words):
        SQLiteJobStore(path)  # type: ignore[arg-type]


def test_a_timeout_too_large_for_the_platform_means_no_limit() -> None:
    assert check_wait_timeout(1e300) is None
    assert check_wait_timeout(threading.TIMEOUT_MAX) is None
    pool = ThreadPool(1, name="huge-timeout")
    gate = threading.Event()
    task = pool.post_task(gate.wait, 10)
    threading.Timer(0.1, gate.set).start()
    assert task.wait(1e300)  # used to raise OverflowError
    threading.Timer(0.1, pool.shutdown).start()
    assert pool.wait_shutdown(1e300)  # used to raise OverflowError


@pytest.mark.thread_unsafe(reason="shuts down what it builds, with a timer thread")
def test_a_shutdown_timeout_too_large_for_the_platform_means_no_limit() -> None:
    pool = ThreadPool(1, name="huge-shutdown")
    single = SingleThreadTaskRunner(pool)
    gate = threading.Event()
    single.post_task(gate.wait, 10)
    manager = JobManager(MemoryJobStore(), pool)

    @manager.handler("nap")
    def nap(ctx: JobContext, args: Any) -> None:
        gate.wait(10)

    manager.start()
    manager.submit("nap", None)
    threading.Timer(0.2, gate.set).start()
    assert single.shutdown(timeout=1e300).drained  # each used to raise OverflowError
    assert manager.shutdown(timeout=1e300) == 0
    assert pool.shutdown(timeout=1e300).drained


def test_the_asyncio_runner_refuses_a_coroutine_function_with_a_hint() -> None:
    import asyncio
    import functools

    from taskrunner import AsyncioTaskRunner

    async def fetch(x: int) -> int:
        return x

    async def main() -> None:
        runner = AsyncioTaskRunner(asyncio.get_running_loop())
        try:
            for post in (
                lambda: runner.post_task(fetch, 1),
                lambda: runner.post_task(functools.partial(fetch, 1)),
                lambda: runner.post_delayed_task(fetch, 0.01, 1),
            ):
                with pytest.raises(TypeError, match="run_coroutine_threadsafe"):
                    post()
            assert runner.wait_idle(5)
        finally:
            runner.shutdown()

    asyncio.run(main())
