"""``AsyncioTaskRunner``: a runner whose tasks run on an asyncio event loop.

A task posted here runs on the loop's thread, between the loop's other
callbacks, one at a time and in posting order (like a
``SingleThreadTaskRunner`` whose thread is the loop's).  So an asyncio
service can be the reply runner of work done on the pool::

    loop_runner = AsyncioTaskRunner(asyncio.get_running_loop(), pool)
    pool.post_task_and_reply_with_result(crunch, show, reply_runner=loop_runner)

and ``current_task_runner()`` inside such a task is ``loop_runner``.  Timers,
debounce and repeating tasks bound to it fire on the loop.

How it works.  Tasks are registered with the pool (so handles, cancellation,
metrics and the error handler work as for every runner) and queued here; the
first post into an empty queue schedules one drain with
``loop.call_soon_threadsafe``.  The drain runs queued tasks until the queue is
empty or it has held the loop for ``budget`` seconds, then gives the loop back
(``call_soon``) so I/O and coroutines keep running under a flood of posts.

Delayed tasks wait in the *pool's* timing wheel, on the pool's clock, not in
the loop's timers: ``taskrunner.testing``'s mock time drives them like any
other runner's.  ``wait_idle()`` called on the loop's thread (from a
coroutine, say, or from ``TaskEnvironment.fast_forward`` in an async test)
cannot wait for the loop: it runs the queued tasks there and then.

Shutdown: ``shutdown()`` refuses new tasks; graceful, it lets the queued ones
run (waiting up to ``timeout`` for the loop to run them; from the loop's
thread, it runs them); forceful or past the timeout, it drops queued tasks
that are not BLOCK_SHUTDOWN.  The loop itself is not stopped or closed.  A
loop that is closed refuses further posts (``RunnerClosedError``).  Called
from inside one of its own tasks, ``shutdown`` closes the runner and returns
at once (it cannot wait for itself); the queued tasks still run after it.

Thread-safety: every method may be called from any thread.  ``_lock`` guards
``_queue``, ``_scheduled``, ``_running``, ``_closed`` and the counters;
``_idle`` (on the same lock) is signalled when no task is queued or running.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections import deque
from collections.abc import Callable
from types import FunctionType
from typing import Any, TypeVarTuple

from taskrunner.errors import RunnerClosedError
from taskrunner.runtime.current import set_current
from taskrunner.runtime.metrics import DROPPED as M_DROPPED
from taskrunner.runtime.metrics import RunnerGauges
from taskrunner.runtime.pool import ShutdownReport, ThreadPool
from taskrunner.runtime.runner import check_runner_name
from taskrunner.runtime.runners.pool_backed import PoolBackedRunner
from taskrunner.runtime.task import DROPPED, Task, describe
from taskrunner.runtime.traits import DEFAULT_TRAITS, ShutdownBehavior, TaskTraits
from taskrunner.runtime.waits import check_wait_timeout

Ts = TypeVarTuple("Ts")  # the positional arguments of a posted callable

_BLOCK = ShutdownBehavior.BLOCK_SHUTDOWN


def _refuse_coroutine_function(fn: object) -> None:
    """Tasks are plain callables: a coroutine function posted here would only
    create a coroutine that nobody awaits, and its body would never run.

    It runs on every post, so a plain function is recognised by its code
    flags alone (under 0.1 us with the call); anything else (a method, a
    partial) goes to ``inspect.iscoroutinefunction`` (about 0.4 us)."""
    if type(fn) is FunctionType and not fn.__code__.co_flags & inspect.CO_COROUTINE:
        return
    if inspect.iscoroutinefunction(fn):
        raise TypeError(
            f"{describe(fn)} is a coroutine function: a task here is called, not awaited, "
            "so its body would never run; schedule the coroutine on the loop with "
            "asyncio.run_coroutine_threadsafe(coro, loop) or loop.create_task(coro)"
        )


class AsyncioTaskRunner(PoolBackedRunner):
    """Tasks in posting order on ``loop``'s thread; see the module docstring.

    ``pool`` owns the tasks (their handles and the timing wheel that holds
    delayed ones); without one, the runner starts a small pool of its own
    (one worker, which runs nothing but gives the wheel its timer thread)
    and shuts it down with the runner.  Pass your pool to share its wheel,
    its clock (mock time) and its metrics.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pool: ThreadPool | None = None,
        *,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
        budget: float = 0.002,
    ) -> None:
        if not isinstance(loop, asyncio.AbstractEventLoop):
            raise TypeError(f"loop must be an asyncio event loop, not {type(loop).__name__}")
        if loop.is_closed():
            raise RunnerClosedError("AsyncioTaskRunner: the event loop is closed")
        if pool is not None and not isinstance(pool, ThreadPool):
            raise TypeError(f"pool must be a ThreadPool or None, not {type(pool).__name__}")
        if type(traits) is not TaskTraits:
            raise TypeError(f"traits must be TaskTraits, not {type(traits).__name__}")
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget >= 0:
            raise ValueError(f"budget must be a number of seconds >= 0, got {budget!r}")
        self._name = check_runner_name(name, f"AsyncioTaskRunner-{id(self):x}")
        self._owns_pool = pool is None
        self._pool = pool if pool is not None else ThreadPool(1, name=f"{self._name}-timers")
        self._loop = loop
        self._traits = traits
        self._budget = budget
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queue: deque[Task] = deque()
        self._scheduled = False  # a drain is scheduled on the loop (or running)
        self._running: Task | None = None
        self._closed = False
        self._posted = 0
        self._completed = 0
        self._attach()
        if self._owns_pool:
            self._pool.start()

    # ---- posting -------------------------------------------------------------------------

    def _post_queued(
        self, fn: Callable[..., Any], args: tuple[Any, ...], traits: TaskTraits, name: str | None
    ) -> Task:
        _refuse_coroutine_function(fn)
        return super()._post_queued(fn, args, traits, name)

    def _post_delayed_ns(
        self,
        fn: Callable[..., Any],
        delay_ns: int,
        /,
        *args: Any,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
    ) -> Task:
        _refuse_coroutine_function(fn)
        return super()._post_delayed_ns(fn, delay_ns, *args, traits=traits, name=name)

    # ---- properties ---------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop whose thread runs this runner's tasks."""
        return self._loop

    @property
    def is_closed(self) -> bool:
        return self._closed or self._pool.is_closed

    def _on_loop_thread(self) -> bool:
        """True when called on the thread that is running our loop right now."""
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    # ---- posting ----------------------------------------------------------------------------

    def _accept_fired(self, task: Task) -> None:
        """The pool's timer thread hands over a delayed task that is now due."""
        try:
            self._accept(task)
        except RunnerClosedError:
            self._drop(task)

    def _accept(self, task: Task) -> None:
        with self._lock:
            if self._closed:
                raise RunnerClosedError(f"{self._name}: post_task after shutdown")
            self._queue.append(task)
            self._posted += 1
            schedule = not self._scheduled
            self._scheduled = True
        if not schedule:
            return
        try:
            if self._on_loop_thread():
                self._loop.call_soon(self._drain)
            else:
                self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nothing queued here can ever run
            with self._lock:
                self._closed = True
                self._scheduled = False
                queued = list(self._queue)
                self._queue.clear()
                self._idle.notify_all()
            self._signal_shutdown()
            for other in queued:
                if other is not task:
                    self._drop(other)
            raise RunnerClosedError(f"{self._name}: the event loop is closed") from None

    def _drop(self, task: Task) -> bool:
        if self._pool._claim(task):
            self._pool._note_not_run(task, M_DROPPED)
            task._finish(DROPPED)
            return True
        return False

    # ---- running on the loop ------------------------------------------------------------------

    def _drain(self) -> None:
        """On the loop: run queued tasks for up to ``budget`` seconds."""
        deadline = time.monotonic() + self._budget
        if self._run_queued(deadline):
            self._loop.call_soon(self._drain)  # more queued: give the loop a turn first

    def _run_queued(self, deadline: float | None) -> bool:
        """Run queued tasks until the queue is empty (False) or ``deadline``
        passed with tasks left (True: the caller reschedules the drain)."""
        pool = self._pool
        previous = set_current(self)
        try:
            while True:
                with self._lock:
                    if not self._queue:
                        self._scheduled = False
                        self._idle.notify_all()
                        return False
                    task = self._queue.popleft()
                    if not pool._claim(task):
                        continue  # cancelled
                    self._running = task
                try:
                    pool._run_claimed(task)
                finally:
                    with self._lock:
                        self._running = None
                        self._completed += 1
                if deadline is not None and time.monotonic() >= deadline:
                    with self._lock:
                        if self._queue:
                            return True
        finally:
            set_current(previous)

    # ---- waiting and shutdown -------------------------------------------------------------------

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no task of this runner is queued or running.

        On the loop's own thread (outside this runner's tasks) the queued
        tasks run right here, since the loop cannot run them while we wait;
        inside one of its tasks that would mean waiting for itself:
        RuntimeError."""
        timeout = check_wait_timeout(timeout)
        if self._on_loop_thread():
            with self._lock:
                inside = self._running is not None
            if inside:
                raise RuntimeError(
                    f"{self._name}: wait_idle() from inside one of its own tasks would wait "
                    "for itself"
                )
            self._run_queued(None)
            return True
        with self._lock:
            return self._idle.wait_for(lambda: not self._queue and self._running is None, timeout)

    def _run_here_if_own_thread(self) -> None:
        """Called by a waiter that would block the loop (an Executor view's
        ``shutdown(wait=True)``): on the loop's thread, outside our tasks, run
        what is queued now; anywhere else, nothing."""
        if self._on_loop_thread():
            with self._lock:
                inside = self._running is not None
            if not inside:
                self._run_queued(None)

    def shutdown(
        self, wait: bool = True, *, timeout: float | None = None, cancel_pending: bool = False
    ) -> ShutdownReport:
        """Refuse new tasks; graceful: let the queued ones run (up to
        ``timeout`` with ``wait``); forceful or past the timeout: drop queued
        tasks that are not BLOCK_SHUTDOWN.  See the module docstring."""
        with self._lock:
            self._closed = True
            inside = self._running is not None and self._on_loop_thread()
        self._signal_shutdown()
        drained = True
        if not cancel_pending and wait and not inside:
            drained = self.wait_idle(timeout)
        dropped = 0
        if cancel_pending or not drained:
            dropped = self._drop_queued()
        self._forget_source()
        if self._owns_pool:
            self._pool.shutdown(wait=wait, timeout=timeout)
        return ShutdownReport(
            drained=drained and not cancel_pending and not inside,
            dropped=dropped,
            still_running=1 if inside else 0,
            timed_out=not drained,
        )

    def _drop_queued(self) -> int:
        """Take the queued tasks that are not BLOCK_SHUTDOWN out of the queue
        and drop them (those stay for the loop)."""
        with self._lock:
            dropping = [t for t in self._queue if t.traits.shutdown_behavior is not _BLOCK]
            if dropping:
                self._queue = deque(t for t in self._queue if t.traits.shutdown_behavior is _BLOCK)
            if not self._queue and self._running is None:
                self._idle.notify_all()
        return sum(1 for task in dropping if self._drop(task))

    def _pool_closed(self) -> None:
        """The pool finished shutting down: drop what is queued here now,
        except BLOCK_SHUTDOWN tasks, which the loop still runs."""
        self._drop_queued()
        self._forget_source()

    # ---- metrics and stats ---------------------------------------------------------------------

    def metrics_gauges(self) -> RunnerGauges:
        with self._lock:
            return RunnerGauges(
                kind="runner",
                queued=len(self._queue),
                running=0 if self._running is None else 1,
            )

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "name": self._name,
                "queued": len(self._queue),
                "running": 0 if self._running is None else 1,
                "posted": self._posted,
                "completed": self._completed,
                "closed": self._closed,
                "metadata": self.metadata,
            }

    def __repr__(self) -> str:
        state = "closed" if self.is_closed else "open"
        return f"<AsyncioTaskRunner {self._name!r} {state} queued={len(self._queue)}>"


__all__ = ["AsyncioTaskRunner"]
