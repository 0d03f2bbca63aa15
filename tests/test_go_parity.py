"""The features of the Go original (Swind/go-task-runner) that issue 19 adds:
wait_shutdown, task-and-reply completions, the default pool, flush_async, the
EventBus helpers live in their own files where they are large.

Waits use events with generous timeouts; nothing asserts a duration.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from taskrunner import (
    ParallelTaskRunner,
    SequencedTaskRunner,
    SingleThreadTaskRunner,
    TaskRunner,
    ThreadPool,
)

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
