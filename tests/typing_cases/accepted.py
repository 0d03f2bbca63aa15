"""Calls mypy must accept, with the types it must infer (checked by
tests/test_typing.py; never imported or run)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import Future
from typing import assert_type

from taskrunner import (
    NO_REPLY,
    AsyncioTaskRunner,
    EventBus,
    RunnerExecutor,
    SequencedTaskRunner,
    SingleThreadTaskRunner,
    TaskTraits,
    ThreadPool,
)


def takes_int(x: int) -> None: ...


def square(x: int) -> int:
    return x * x


def mul(x: int, y: int) -> int:
    return x * y


def label(x: int, *, prefix: str = "") -> str:
    return prefix + str(x)


def show(text: str) -> None: ...


def posts(pool: ThreadPool, seq: SequencedTaskRunner, ui: SingleThreadTaskRunner) -> None:
    pool.post_task(takes_int, 1)
    pool.post_task(print, "hello", 1, None)
    pool.post_task(show, "x", traits=TaskTraits(may_block=True), name="show")
    pool.post_delayed_task(takes_int, 0.5, 2)
    seq.post_task(takes_int, 3)
    seq.post_delayed_task(mul, 1.0, 1, 2)
    ui.post_task(label, 4)
    assert_type(pool.submit(square, 3), Future[int])
    assert_type(seq.submit(label, 3), Future[str])
    assert_type(
        seq.post_task_and_reply_with_result(lambda: square(2), takes_int, reply_runner=ui),
        Future[int],
    )
    assert_type(
        seq.post_delayed_task_and_reply_with_result(
            lambda: square(2), takes_int, 0.5, reply_runner=NO_REPLY
        ),
        Future[int],
    )
    seq.post_delayed_task_and_reply(lambda: None, lambda: None, 1.0, reply_runner=ui)


def buses(pool: ThreadPool) -> None:
    bus: EventBus[int] = EventBus(pool)
    bus.subscribe(takes_int)
    assert_type(bus.publish(3), int)


def maps(pool: ThreadPool) -> None:
    assert_type(pool.map(square, range(10)), Iterator[int])
    assert_type(pool.map(mul, range(3), [4, 5, 6], timeout=1.0, chunksize=2), Iterator[int])
    assert_type(pool.map(label, range(3), chunksize=None), Iterator[str])


def executors(pool: ThreadPool) -> None:
    ex = pool.executor
    assert_type(ex, RunnerExecutor)
    assert_type(ex.submit(mul, 2, y=8), Future[int])
    assert_type(ex.submit(label, 1, prefix="n="), Future[str])
    assert_type(ex.map(square, range(10)), Iterator[int])
    assert_type(ex.map(mul, range(3), [4, 5, 6], timeout=1.0, buffersize=2), Iterator[int])
    assert_type(ex.map(label, range(3), chunksize=2), Iterator[str])
    with RunnerExecutor(pool, traits=TaskTraits(may_block=True)) as io:
        assert_type(io.submit(square, 1).result(), int)


async def from_asyncio(pool: ThreadPool) -> None:
    loop = asyncio.get_running_loop()
    assert_type(await loop.run_in_executor(pool.executor, square, 2), int)
    assert_type(await asyncio.wrap_future(pool.submit(label, 2)), str)
    assert_type(await pool.run(square, 2), int)
    runner = AsyncioTaskRunner(loop, pool)
    assert_type(await runner.run(label, 1), str)
    runner.post_task(takes_int, 1)
    assert_type(runner.executor.submit(mul, 1, 2), Future[int])
