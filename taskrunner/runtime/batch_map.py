"""``runner.map(fn, *iterables)``: ``Executor.map`` on every runner, posted in batches.

``TaskRunner`` gets :meth:`MapMixin.map` from here (``runner.py`` stays
under its size budget).  The contract, the same on every runner:

* **Results in order, lazily.**  ``map`` collects the iterables (``zip``:
  it stops at the shortest) and posts every call before it returns, as
  ``Executor.map`` does; the iterator it returns yields ``fn(*args)`` for
  each item in order, each as soon as it is ready.
* **Chunks.**  The calls are grouped ``chunksize`` items to a task (the
  meaning ``ProcessPoolExecutor.map`` gives it): one task runs its items one
  after the other, in the order given, and stores each result as it goes.
  ``chunksize=None`` (the default) picks ``len(items) // (4 * parallelism)``
  capped to :data:`MAX_AUTO_CHUNK` (``multiprocessing.Pool.map``'s rule,
  bounded so a chunk stays short), where parallelism is the pool's worker
  count, a parallel runner's ``max_concurrency``, else 1.  ``chunksize=1``
  makes one task per item.  The tasks are posted with one ``post_tasks``
  call, which on the pool pushes their tokens to the C heap with one C call
  per :data:`taskrunner.runtime.pool.batch_post.CHUNK` tasks.
* **Every task guarantee holds per chunk task**: each leaves PENDING once,
  can be cancelled, is counted by metrics and by the shutdown report, and
  runs in its own copy of the caller's ``contextvars`` context (the items of
  one chunk share that copy).
* **Timeout** (seconds, measured from the call to ``map``): if a result is
  not ready by then, ``next()`` raises :class:`TimeoutError`.
* **Exceptions** are re-raised by ``next()`` at the position of the item
  that raised, after the results before it (the error handler does not see
  them, as with ``Executor.map``); a chunk stops at its first exception.
* **Abandoning the iterator** (``close()``, dropping it after the first
  ``next()``, or the timeout or an exception ending it) cancels every task
  that has not started and makes running chunks stop after their current
  item.  A call that never ran (its task was cancelled, or dropped by a
  shutdown) raises :class:`concurrent.futures.CancelledError` at its
  position.
* **Bad input** raises before anything is posted: TypeError for a
  non-callable ``fn``, a non-integer ``chunksize`` or a non-number
  ``timeout``; ValueError for ``chunksize < 1``; RunnerClosedError on a
  closed runner.

Thread-safety: any thread may call ``map``; one iterator is consumed by one
thread at a time (like any generator).  Do not iterate it on a thread the
runner needs to run the calls (inside one of a sequenced or single-thread
runner's own tasks, or on an asyncio runner's loop thread): it would wait
for itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from taskrunner.errors import RunnerClosedError
from taskrunner.runtime.future_call import NotRunHook
from taskrunner.runtime.task import FINISHED_STATES, describe
from taskrunner.runtime.traits import DEFAULT_TRAITS, TaskTraits
from taskrunner.runtime.waits import check_wait_timeout

if TYPE_CHECKING:
    from taskrunner.runtime.runner import TaskRunner
    from taskrunner.runtime.task import Task

T = TypeVar("T")
A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")

#: The largest chunk ``chunksize=None`` picks.
MAX_AUTO_CHUNK = 256


class _NotRun:
    """The result slot of a call that has not run (yet, or ever)."""

    __slots__ = ()


_NOT_RUN = _NotRun()


class _Raised:
    """The result slot of a call that raised."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _MapCall(NotRunHook):
    """The callable of every task of one ``map``: runs the items of one chunk
    and stores each result (or its exception) in ``results`` at its index.

    Hand-off to the iterator, without a lock per item: a slot is written once
    by the task running its chunk (list item stores are atomic on both
    builds), then the task reads ``waiting``; the iterator, before it sleeps
    for slot ``i``, writes ``waiting = i``, then takes ``cond`` and reads the
    slot.  Each side's store precedes its load with a full barrier between
    (the GIL; on the free-threaded build the list's own lock, and ``cond``'s),
    so at least one side sees the other: the task notifies, or the iterator
    finds the slot filled.  A task that will never run wakes the iterator
    through :meth:`not_run`.  ``abandoned`` is set once, by the iterator."""

    __slots__ = ("abandoned", "cond", "fn", "results", "waiting")

    def __init__(self, fn: Callable[..., Any], size: int) -> None:
        self.fn = fn
        self.results: list[Any] = [_NOT_RUN] * size
        self.abandoned = False
        self.waiting = -1  # the slot the iterator sleeps for, -1: none
        self.cond = threading.Condition(threading.Lock())  # guards nothing: the wake-up

    def __call__(self, start: int, chunk: tuple[tuple[Any, ...], ...]) -> None:
        fn = self.fn
        results = self.results
        index = start
        for args in chunk:
            if self.abandoned:
                return
            try:
                results[index] = fn(*args)
            except BaseException as exc:  # delivered at its position, as Executor.map does
                results[index] = _Raised(exc)
                if self.waiting == index:
                    self._wake()
                return
            if self.waiting == index:
                self._wake()
            index += 1

    def _wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def not_run(self) -> None:
        """A chunk's task was cancelled or dropped: the iterator may be waiting for it."""
        self._wake()


def _parallelism(runner: TaskRunner) -> int:
    """How many of ``runner``'s tasks may run at once: the pool's CPU workers,
    a parallel runner's ``max_concurrency``, else 1."""
    cpu = getattr(runner, "_cpu", None)  # a ThreadPool's CPU worker group
    if cpu is not None:
        return max(1, int(cpu.maximum))
    return max(1, int(getattr(runner, "_max", 1)))  # a _SlotRunner's limit


def _check_chunksize(chunksize: object) -> None:
    if chunksize is None:
        return
    if isinstance(chunksize, bool) or not isinstance(chunksize, int):
        raise TypeError(f"chunksize must be an integer or None, not {type(chunksize).__name__}")
    if chunksize < 1:
        raise ValueError(f"chunksize must be >= 1, got {chunksize}")


def map_calls(
    runner: TaskRunner,
    fn: Callable[..., Any],
    iterables: tuple[Iterable[Any], ...],
    timeout: float | None,
    chunksize: int | None,
    traits: TaskTraits,
    name: str | None,
) -> Iterator[Any]:
    """See the module docstring; ``runner.map`` is the public entry."""
    timeout = check_wait_timeout(timeout)
    end_time = None if timeout is None else time.monotonic() + timeout
    if not callable(fn):
        raise TypeError(f"map: fn must be callable, not {type(fn).__name__}")
    _check_chunksize(chunksize)
    if type(traits) is not TaskTraits:
        raise TypeError(f"traits must be TaskTraits, not {type(traits).__name__}")
    if runner.is_closed:
        raise RunnerClosedError(f"{runner.name}: map after shutdown")
    items = list(zip(*iterables, strict=False))
    size = len(items)
    if chunksize is None:
        chunksize = max(1, min(MAX_AUTO_CHUNK, size // (4 * _parallelism(runner))))
    call = _MapCall(fn, size)
    chunks = [
        (start, tuple(items[start : start + chunksize])) for start in range(0, size, chunksize)
    ]
    del items
    try:
        handles = runner.post_tasks(
            call, chunks, traits=traits, name=name or f"map({describe(fn)})"
        )
    except BaseException:
        call.abandoned = True  # chunks queued before the failure skip their items
        raise
    return _results(handles, chunksize, call, end_time)


def _results(
    handles: list[Task], chunksize: int, call: _MapCall, end_time: float | None
) -> Iterator[Any]:
    """The iterator ``map`` returns.  No local keeps a result across a yield."""
    results = call.results
    size = len(results)
    position = 0
    try:
        for task in handles:
            stop = min(position + chunksize, size)
            while position < stop:
                result = results[position]
                if result is _NOT_RUN:
                    result = _wait_for(call, task, position, end_time)
                results[position] = None  # the iterator holds no result once yielded
                position += 1
                if type(result) is _Raised:
                    error = result.error
                    del result
                    try:
                        raise error
                    finally:
                        del error
                yield result
                del result
    finally:
        call.abandoned = True
        for task in handles:
            if task.state not in FINISHED_STATES:
                task.cancel()


def _wait_for(call: _MapCall, task: Task, position: int, end_time: float | None) -> Any:
    """Sleep until slot ``position`` (of ``task``'s chunk) is filled; raise
    TimeoutError at ``end_time``, CancelledError if the call will never run."""
    results = call.results
    call.waiting = position  # before taking cond: see _MapCall
    try:
        with call.cond:
            while True:
                result = results[position]
                if result is not _NOT_RUN:
                    return result
                state = task.state
                if state in FINISHED_STATES:
                    # Cancelled, dropped, or a chunk stopped early: never ran.
                    raise CancelledError(f"map: call {position} did not run ({state.value})")
                remaining = None if end_time is None else end_time - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"map: result {position} was not ready in time")
                call.cond.wait(remaining)
    finally:
        call.waiting = -1


class MapMixin:
    """Gives ``TaskRunner`` its ``map`` (see the module docstring)."""

    __slots__ = ()

    @overload
    def map(
        self,
        fn: Callable[[A], T],
        iterable: Iterable[A],
        /,
        *,
        timeout: float | None = None,
        chunksize: int | None = None,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
    ) -> Iterator[T]: ...

    @overload
    def map(
        self,
        fn: Callable[[A, B], T],
        iterable1: Iterable[A],
        iterable2: Iterable[B],
        /,
        *,
        timeout: float | None = None,
        chunksize: int | None = None,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
    ) -> Iterator[T]: ...

    @overload
    def map(
        self,
        fn: Callable[[A, B, C], T],
        iterable1: Iterable[A],
        iterable2: Iterable[B],
        iterable3: Iterable[C],
        /,
        *,
        timeout: float | None = None,
        chunksize: int | None = None,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
    ) -> Iterator[T]: ...

    @overload
    def map(
        self,
        fn: Callable[..., T],
        iterable1: Iterable[Any],
        iterable2: Iterable[Any],
        iterable3: Iterable[Any],
        iterable4: Iterable[Any],
        /,
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
    ) -> Iterator[T]: ...

    @overload
    def map(
        self,
        fn: Callable[[], T],
        /,
        *,
        timeout: float | None = None,
        chunksize: int | None = None,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
    ) -> Iterator[T]: ...

    def map(
        self,
        fn: Callable[..., T],
        /,
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
    ) -> Iterator[T]:
        """``fn(*args)`` for each item of ``zip(*iterables)``, run as tasks here;
        an iterator of the results in order, like ``Executor.map``.

        Every call is posted before this returns, ``chunksize`` items per task
        (None: chosen from the item count and the runner's parallelism);
        ``timeout`` counts from this call; an exception is raised by ``next()``
        at its item's position; closing or dropping the iterator cancels the
        calls that have not started.  See :mod:`taskrunner.runtime.batch_map`."""
        runner = cast("TaskRunner", self)
        return map_calls(runner, fn, iterables, timeout, chunksize, traits, name)
