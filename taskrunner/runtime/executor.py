"""``RunnerExecutor``: any runner seen as a ``concurrent.futures.Executor``.

Threaded Python code hands executors around (``loop.run_in_executor``,
``asyncio.wrap_future``, frameworks, drivers, test tools).  Every
:class:`~taskrunner.runtime.runner.TaskRunner` offers one as ``runner.executor`` (one
shared view per runner) and any number more as ``RunnerExecutor(runner,
traits=...)``, each with its traits fixed (priority, ``may_block``,
category, shutdown behaviour).  The view keeps the runner's scheduling: a
view of a ``SequencedTaskRunner`` runs its calls one at a time in order, a
view of a ``SingleThreadTaskRunner`` on its thread, behind its queue policy.

Why a view and not the runners themselves: runners already have a
``shutdown(wait, timeout, cancel_pending)`` that stops the runner for every
user, while ``Executor.shutdown(wait, cancel_futures)`` is called by whoever
holds the executor (``asyncio`` calls it on its default executor).  A view's
``shutdown`` closes the *view*: it refuses new calls, optionally cancels its
calls that have not started, and waits for the rest.  The runner (and every
other view of it) carries on, and is shut down by its owner.

The contract is the standard library's (``concurrent.futures.Executor``):

* ``submit(fn, *args, **kwargs)`` returns a ``concurrent.futures.Future``;
  cancelling it before the call started cancels the task; the result or the
  exception (any ``BaseException``) is set on it and nowhere else (the pool's
  error handler does not see it: the task counts as completed).  A task
  dropped without running (a runner's shutdown, a queue policy) cancels its
  future, so no ``result()`` waits forever.
* ``map(fn, *iterables, timeout=None, chunksize=1, buffersize=None)``: calls
  are submitted when ``map`` is called (all of them, or the first
  ``buffersize``, more as results are taken); results come back lazily and in
  order; ``timeout`` counts from the call to ``map`` and raises
  ``TimeoutError`` from ``next()``; closing or dropping the iterator cancels
  the calls that have not started.  ``chunksize > 1`` runs that many calls
  per task (fewer, bigger tasks; ``buffersize`` then counts chunks); an
  exception is raised at its own position, after the results before it.
* ``shutdown(wait=True, *, cancel_futures=False)``; submitting afterwards
  raises :class:`~taskrunner.errors.ExecutorShutdownError` (a RuntimeError),
  as it does once the runner is shut down.  Context manager: ``__exit__``
  calls ``shutdown(wait=True)``.
* At interpreter exit (before non-daemon threads are joined) every view is
  closed and the calls it still has run to their end, as
  ``ThreadPoolExecutor``'s do, when its runner's pool was started (an
  ``AsyncioTaskRunner``'s calls need their loop, so they are not waited for).

Thread-safety: every method may be called from any thread.  ``_lock`` guards
``_closed`` and ``_unfinished`` (the view's futures not yet done);
``_idle`` (on the same lock) is signalled when ``_unfinished`` empties.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, overload, runtime_checkable

from taskrunner.errors import ExecutorShutdownError, RunnerClosedError
from taskrunner.runtime.future_call import FutureCall, current_future
from taskrunner.runtime.task import describe
from taskrunner.runtime.traits import DEFAULT_TRAITS, TaskTraits

if TYPE_CHECKING:
    from taskrunner.runtime.runner import TaskRunner
    from taskrunner.runtime.task import Task


@runtime_checkable
class _Runner(Protocol):
    """What a view needs of its runner (checked at construction).  Structural, so
    that this module need not import :mod:`taskrunner.runtime.runner`, which
    imports it for ``runner.executor``."""

    @property
    def name(self) -> str: ...
    @property
    def is_closed(self) -> bool: ...
    def post_task(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any: ...


P = ParamSpec("P")
T = TypeVar("T")
A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")

_SHUTDOWN_MESSAGE = "cannot schedule new futures after shutdown"
_EXIT_MESSAGE = "cannot schedule new futures after interpreter shutdown"

# Every view alive, for the interpreter-exit hook (a WeakSet: a view is not
# kept alive by it).  Guarded by _views_lock; _exiting is set once, under it.
_views: weakref.WeakSet[RunnerExecutor] = weakref.WeakSet()
_views_lock = threading.Lock()
_exiting = False


def _at_exit() -> None:
    """At interpreter exit, as ``ThreadPoolExecutor`` does: refuse new calls,
    then let the calls already submitted finish (the pool's workers are
    daemon threads, which the interpreter would otherwise stop mid-task).
    Runs before the interpreter joins its non-daemon threads."""
    global _exiting
    with _views_lock:
        _exiting = True
        views = list(_views)
    for view in views:
        view._close_at_exit()


_register_atexit = getattr(threading, "_register_atexit", None)
if _register_atexit is not None:
    _register_atexit(_at_exit)
else:  # pragma: no cover - every CPython 3.9+ has it
    import atexit

    atexit.register(_at_exit)


class RunnerExecutor(Executor):
    """A ``concurrent.futures.Executor`` whose calls run as tasks of ``runner``,
    all with ``traits``.  See the module docstring for the contract."""

    def __init__(
        self,
        runner: TaskRunner,
        *,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
    ) -> None:
        if not isinstance(runner, _Runner):
            raise TypeError(f"runner must be a TaskRunner, not {type(runner).__name__}")
        if type(traits) is not TaskTraits:
            raise TypeError(f"traits must be TaskTraits, not {type(traits).__name__}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, not {type(name).__name__}")
        self._runner = runner
        self._traits = traits
        self._name = name
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._closed = False
        self._unfinished: set[Future[Any]] = set()
        with _views_lock:
            if _exiting:
                raise ExecutorShutdownError(_EXIT_MESSAGE)
            _views.add(self)

    # ---- properties -----------------------------------------------------------------

    @property
    def runner(self) -> TaskRunner:
        """The runner this executor posts to."""
        return self._runner

    @property
    def traits(self) -> TaskTraits:
        """The traits every call of this executor runs with."""
        return self._traits

    @property
    def is_shutdown(self) -> bool:
        """True once :meth:`shutdown` was called (or the runner is closed)."""
        return self._closed or self._runner.is_closed

    # ---- submit ---------------------------------------------------------------------

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` as a task; return its Future.

        ExecutorShutdownError (a RuntimeError) after :meth:`shutdown` or once
        the runner is closed; the runner's own refusals (``QueueFullError``
        from a bounded runner with the REJECT policy) pass through."""
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")
        future: Future[T] = Future()
        call = FutureCall(future, fn, args, kwargs or None, reraise=False)
        with self._lock:
            if self._closed:
                raise ExecutorShutdownError(_EXIT_MESSAGE if _exiting else _SHUTDOWN_MESSAGE)
            self._unfinished.add(future)
        try:
            task = self._runner.post_task(
                call, traits=self._traits, name=self._name or describe(fn)
            )
        except RunnerClosedError as exc:
            self._discard(future)
            raise ExecutorShutdownError(
                f"{_SHUTDOWN_MESSAGE} (runner {self._runner.name!r} is shut down)"
            ) from exc
        except BaseException:
            self._discard(future)
            raise
        future.add_done_callback(_Settled(self, task))
        return future

    def _forget(self, future: Future[Any]) -> None:
        with self._lock:
            self._unfinished.discard(future)
            if not self._unfinished:
                self._idle.notify_all()

    def _discard(self, future: Future[Any]) -> None:
        """A submit failed: its future was never handed out; settle and forget it."""
        future.cancel()
        self._forget(future)

    # ---- map --------------------------------------------------------------------------

    # The overloads check each iterable's items against fn's parameters (as
    # typeshed does for builtins.map), which the base class's loose signature
    # (any fn, any iterables) does not: hence the ignore.  At run time both
    # accept the same calls.
    @overload  # type: ignore[override]
    def map(
        self,
        fn: Callable[[A], T],
        iterable: Iterable[A],
        /,
        *,
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
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
        chunksize: int = 1,
        buffersize: int | None = None,
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
        chunksize: int = 1,
        buffersize: int | None = None,
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
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[T]: ...

    @overload
    def map(
        self,
        fn: Callable[[], T],
        /,
        *,
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[T]: ...

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[T]:
        """``map(fn, *iterables)`` with the calls run as tasks; see the module
        docstring.  The calls are submitted before this returns."""
        if buffersize is not None and not isinstance(buffersize, int):
            raise TypeError("buffersize must be an integer or None")
        if buffersize is not None and buffersize < 1:
            raise ValueError("buffersize must be None or > 0")
        if isinstance(chunksize, bool) or not isinstance(chunksize, int):
            raise TypeError(f"chunksize must be an integer, not {type(chunksize).__name__}")
        if chunksize < 1:
            raise ValueError(f"chunksize must be >= 1, got {chunksize}")
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")
            end_time = time.monotonic() + timeout
        else:
            end_time = 0.0
        if not callable(fn):
            raise TypeError(f"fn must be callable, not {type(fn).__name__}")

        args_source: Iterator[tuple[Any, ...]] = zip(*iterables, strict=False)
        if chunksize == 1:
            source: Iterator[Any] = args_source

            def submit_one(executor: RunnerExecutor, args: tuple[Any, ...]) -> Future[Any]:
                return executor.submit(fn, *args)
        else:
            source = _chunks(args_source, chunksize)

            def submit_one(executor: RunnerExecutor, args: tuple[Any, ...]) -> Future[Any]:
                return executor.submit(_run_chunk, fn, args)

        if buffersize:
            fs: collections.deque[Future[Any]] = collections.deque(
                submit_one(self, item) for item in itertools.islice(source, buffersize)
            )
        else:
            fs = collections.deque(submit_one(self, item) for item in source)
        # The iterator holds the view weakly (as the standard library's does):
        # it refills its buffer only while the view is alive.
        return _results(
            weakref.ref(self),
            fs,
            source if buffersize else None,
            submit_one,
            end_time if timeout is not None else None,
            chunked=chunksize > 1,
        )

    # ---- shutdown -----------------------------------------------------------------------

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new calls; with ``cancel_futures`` cancel the calls that have
        not started; with ``wait`` block until every call of this view has
        finished.  Safe to call more than once, from any thread.  The runner
        keeps running.  Called from inside one of this view's own calls it
        closes the view and returns without waiting (it would wait for itself,
        or, on a runner that runs one call at a time, for the calls queued
        behind it); those calls still run."""
        with self._lock:
            self._closed = True
            pending = list(self._unfinished)
        if cancel_futures:
            for future in pending:
                future.cancel()  # only succeeds if not started; _Settled cancels the task
        if not wait:
            return
        me = current_future()
        with self._lock:
            if me is not None and me in self._unfinished:
                # Called from inside one of our own calls: waiting would wait
                # for itself, and on a runner that runs one call at a time
                # for the calls queued behind it.  Closed is all we can do.
                return
        # A runner whose calls need the calling thread (an AsyncioTaskRunner,
        # called on its loop's thread) runs them here rather than deadlock.
        run_here = getattr(self._runner, "_run_here_if_own_thread", None)
        if run_here is not None:
            run_here()
        with self._lock:
            self._idle.wait_for(lambda: not self._unfinished)

    def _close_at_exit(self) -> None:
        """The interpreter is exiting: close, and wait for our calls if the
        runner can still run them (its pool started and a thread of its own,
        not an event loop that may have stopped)."""
        with self._lock:
            self._closed = True
            if not self._unfinished:
                return
        if _runs_by_itself(self._runner):
            self.shutdown(wait=True)

    def __repr__(self) -> str:
        state = "shut down" if self.is_shutdown else "open"
        return (
            f"<RunnerExecutor of {self._runner.name!r} {state} "
            f"priority={self._traits.priority.name} may_block={self._traits.may_block}>"
        )


class _Settled:
    """A future's done callback: cancel its task if the future was cancelled,
    and let the view forget the future."""

    __slots__ = ("executor", "task")

    def __init__(self, executor: RunnerExecutor, task: Task) -> None:
        self.executor: RunnerExecutor | None = executor
        self.task: Task | None = task

    def __call__(self, future: Future[Any]) -> None:
        # Called once; the future keeps its callbacks, so let go of the view
        # and the task (a finished future must not keep the view alive).
        task, executor = self.task, self.executor
        self.task = self.executor = None
        if task is None or executor is None:
            return
        if future.cancelled():
            task.cancel()  # False once it started: then the call skips itself
        executor._forget(future)


def _runs_by_itself(runner: TaskRunner) -> bool:
    """True if ``runner``'s tasks run on threads of a started pool (they will
    finish at exit without anyone's help)."""
    pool = getattr(runner, "_pool", None)
    return (
        pool is not None
        and bool(getattr(pool, "started", False))
        and getattr(runner, "loop", None) is None  # an AsyncioTaskRunner needs its loop
    )


def _chunks(source: Iterator[tuple[Any, ...]], size: int) -> Iterator[tuple[Any, ...]]:
    while chunk := tuple(itertools.islice(source, size)):
        yield chunk


def _run_chunk(
    fn: Callable[..., Any], chunk: tuple[tuple[Any, ...], ...]
) -> tuple[list[Any], BaseException | None]:
    """Run one chunk of map calls; stop at the first exception and return it
    with the results before it (so each result is delivered at its position)."""
    results: list[Any] = []
    for args in chunk:
        try:
            results.append(fn(*args))
        except BaseException as exc:
            return results, exc
    return results, None


def _result_or_cancel(future: Future[Any], timeout: float | None = None) -> Any:
    try:
        try:
            return future.result(timeout)
        finally:
            future.cancel()
    finally:
        del future  # no reference to the result or exception outlives the call


def _results(
    executor_ref: weakref.ref[RunnerExecutor],
    fs: collections.deque[Future[Any]],
    source: Iterator[Any] | None,
    submit_one: Callable[[RunnerExecutor, Any], Future[Any]],
    end_time: float | None,
    *,
    chunked: bool,
) -> Iterator[Any]:
    """The iterator ``map`` returns: in order, refilling the buffer as it goes.

    The futures are kept newest-first (``fs`` reversed) so the next one is
    ``fs.pop()``; no local holds a future or a result across a ``yield``."""
    fs.reverse()
    try:
        while fs:
            if source is not None:
                executor = executor_ref()
                if executor is not None:
                    item = next(source, None)
                    if item is not None:
                        fs.appendleft(submit_one(executor, item))
                    del item
                del executor
            timeout = None if end_time is None else end_time - time.monotonic()
            if not chunked:
                yield _result_or_cancel(fs.pop(), timeout)
                continue
            results, error = _result_or_cancel(fs.pop(), timeout)
            results.reverse()
            while results:
                yield results.pop()
            if error is not None:
                try:
                    raise error
                finally:
                    del error
    finally:
        for future in fs:
            future.cancel()


__all__ = ["RunnerExecutor"]
