"""Calls mypy must reject: every line whose trailing comment is "E: <text>"
must get an error whose message contains <text>, and no other line may get
one (checked by tests/test_typing.py; never imported or run)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future

from taskrunner import EventBus, SequencedTaskRunner, SingleThreadTaskRunner, ThreadPool


def takes_int(x: int) -> None: ...


def square(x: int) -> int:
    return x * x


def mul(x: int, y: int) -> int:
    return x * y


def show(text: str) -> None: ...


def posts(pool: ThreadPool, seq: SequencedTaskRunner, ui: SingleThreadTaskRunner) -> None:
    pool.post_task(takes_int, "1")  # E: expected "Callable[[str], Any]"
    pool.post_task(takes_int)  # E: expected "Callable[[], Any]"
    pool.post_task(takes_int, 1, 2)  # E: expected "Callable[[int, int], Any]"
    pool.post_delayed_task(takes_int, 0.5, "2")  # E: expected "Callable[[str], Any]"
    seq.post_task(show, 3)  # E: expected "Callable[[int], Any]"
    ui.post_task(show, 4)  # E: expected "Callable[[int], Any]"
    wrong: Future[str] = pool.submit(square, 3)  # E: expected "Callable[[int], str]"
    seq.submit(square, "3")  # E: expected "Callable[[str], int]"
    seq.post_task_and_reply_with_result(lambda: square(2), show)  # E: Cannot infer value
    seq.post_delayed_task_and_reply_with_result(lambda: square(2), show, 1.0)  # E: Cannot infer
    del wrong


def buses(pool: ThreadPool) -> None:
    bus: EventBus[int] = EventBus(pool)
    bus.subscribe(show)  # E: Argument 1 to "subscribe" of "EventBus"
    bus.publish("x")  # E: Argument 1 to "publish" of "EventBus"


def maps(pool: ThreadPool) -> None:
    names: Iterator[str] = pool.map(square, range(3))  # E: expected "Callable[[int], str]"
    pool.map(square, ["a", "b"])  # E: expected "Callable[[str], int]"
    pool.map(square, range(3), chunksize="2")  # E: No overload variant of "map"
    del names


def executors(pool: ThreadPool) -> None:
    ex = pool.executor
    ex.submit(mul, 2, z=8)  # E: Unexpected keyword argument "z"
    ex.submit(mul, "2", 8)  # E: Argument 2 to "submit" of "RunnerExecutor"
    ex.submit(square)  # E: Missing positional argument "x"
    names: Iterator[str] = ex.map(square, range(3))  # E: expected "Callable[[int], str]"
    ex.map(square, ["a", "b"])  # E: expected "Callable[[str], int]"
    del names


async def from_asyncio(pool: ThreadPool) -> None:
    await pool.run(square, "2")  # E: expected "Callable[[str], int]"
    text: str = await pool.run(square, 2)  # E: expected "Callable[[int], str]"
    del text
