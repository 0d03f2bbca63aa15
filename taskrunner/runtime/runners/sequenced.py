"""Runners that run their tasks on the pool's workers: sequenced and parallel.

Both are one small state machine, :class:`_SlotRunner`, which runs at most
``max_concurrency`` of its tasks at once.  Its state is the queue of tasks
and ``active``, the number of *slots*: run loops posted to (or running on)
the pool.  All of it is guarded by ``_lock``.

    post:      append the task; if active < max_concurrency: active += 1
               and post one run loop to the pool.
    run loop:  repeat { under the lock: if the queue is empty, active -= 1 and
               stop; else take the head } and run it; after ``budget`` seconds
               with tasks still queued, post itself again and return, so one
               busy runner cannot monopolise a worker.

There is exactly one place where a slot ends (the empty check, under the lock,
in the same critical section that decrements ``active``), so a post can never
find ``active`` counting a loop that has already decided to stop: the
double-checked "is it still running?" of the Go original is gone.

With ``max_concurrency == 1`` this is :class:`SequencedTaskRunner`: tasks run
one at a time in posting order, and because each task is taken under the
same lock the previous one released, every task sees the memory effects of
the tasks before it (whichever pool thread runs it).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Any, TypeVarTuple

from taskrunner.errors import RunnerClosedError
from taskrunner.runtime.current import current_task_runner_or_none, set_current
from taskrunner.runtime.metrics import DROPPED as M_DROPPED
from taskrunner.runtime.metrics import RunnerGauges
from taskrunner.runtime.pool import SHUTDOWN_GRACE, ShutdownReport, ThreadPool
from taskrunner.runtime.pool.checks import check_int, shutdown_timeout, time_left
from taskrunner.runtime.runner import check_runner_name
from taskrunner.runtime.runners.pool_backed import PoolBackedRunner
from taskrunner.runtime.task import DROPPED, Task
from taskrunner.runtime.traits import DEFAULT_TRAITS, ShutdownBehavior, TaskTraits
from taskrunner.runtime.waits import check_wait_timeout

Ts = TypeVarTuple("Ts")  # the positional arguments of a posted callable

_BLOCK = ShutdownBehavior.BLOCK_SHUTDOWN


class _SlotRunner(PoolBackedRunner):
    """At most ``max_concurrency`` tasks at once on ``pool``, FIFO start order."""

    def __init__(
        self,
        pool: ThreadPool,
        max_concurrency: int,
        *,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
        budget: float = 0.002,
    ) -> None:
        if not isinstance(pool, ThreadPool):
            raise TypeError(f"pool must be a ThreadPool, not {type(pool).__name__}")
        check_int("max_concurrency", max_concurrency, 1)
        if type(traits) is not TaskTraits:
            raise TypeError(f"traits must be TaskTraits, not {type(traits).__name__}")
        if (
            isinstance(budget, bool)
            or not isinstance(budget, (int, float))
            or math.isnan(budget)
            or budget < 0
        ):
            raise ValueError(f"budget must be a number of seconds >= 0, got {budget!r}")
        self._pool = pool
        self._max = max_concurrency
        self._traits = traits
        # The run loops always run, so they can run or drop each task as its
        # own shutdown behaviour says.
        self._loop_traits = TaskTraits(
            priority=traits.priority,
            may_block=traits.may_block,
            category=traits.category,
            shutdown_behavior=_BLOCK,
        )
        self._name = check_runner_name(name, f"{type(self).__name__}-{id(self):x}")
        self._budget = budget
        # Guards _queue, _active, _running, _closed and the counters; _idle
        # is signalled when the runner becomes idle.
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queue: deque[Task] = deque()
        self._active = 0
        self._running: set[Task] = set()
        self._closed = False
        self._posted = 0
        self._completed = 0
        self._max_seen = 0
        self._attach()

    # ---- properties ---------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        return self._closed or self._pool.is_closed

    # ---- posting --------------------------------------------------------------------

    def _accept_fired(self, task: Task) -> None:
        """The pool's timer thread hands over a delayed task that is now due."""
        try:
            self._accept(task)
        except RunnerClosedError:
            if self._pool._claim(task):
                self._pool._note_not_run(task, M_DROPPED)
                task._finish(DROPPED)

    def _accept(self, task: Task) -> None:
        with self._lock:
            if self._closed:
                raise RunnerClosedError(f"{self._name}: post_task after shutdown")
            self._queue.append(task)
            self._posted += 1
            start_slot = self._active < self._max
            if start_slot:
                self._active += 1
        if start_slot:
            self._post_loop()

    def _post_loop(self) -> None:
        try:
            self._pool._post_internal(self._run_loop, self._loop_traits, self)
        except RunnerClosedError:
            # The pool closed its queues: give the slot back.  What is queued
            # stays queued; the pool's shutdown drains it (_pool_closed) on its
            # own thread, never on this caller's (which may be the timer thread).
            with self._lock:
                self._active -= 1
                if self._active == 0 and not self._queue:
                    self._idle.notify_all()

    # ---- the run loop ------------------------------------------------------------------

    def _run_loop(self) -> None:
        previous = set_current(self)
        pool = self._pool
        deadline = time.monotonic() + self._budget
        try:
            while True:
                with self._lock:
                    if not self._queue:
                        self._active -= 1
                        if self._active == 0:
                            self._idle.notify_all()
                        return
                    task = self._queue.popleft()
                    if pool._claim(task):
                        self._running.add(task)
                        self._max_seen = max(self._max_seen, len(self._running))
                    else:
                        continue  # cancelled
                pool._run_claimed(task)
                with self._lock:
                    self._running.discard(task)
                    self._completed += 1
                    more = bool(self._queue)
                if more and time.monotonic() >= deadline and not pool.is_closed:
                    # Yield the worker; the slot stays active (no state change).
                    self._post_loop()
                    return
        finally:
            set_current(previous)

    # ---- waiting and shutdown -------------------------------------------------------------

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until none of this runner's tasks is queued or running."""
        timeout = check_wait_timeout(timeout)
        with self._lock:
            return self._idle.wait_for(lambda: self._active == 0 and not self._queue, timeout)

    def _earlier_tasks(self) -> list[Task]:
        """Queued and running tasks (none needed in order, one at a time)."""
        if self._max == 1:
            return []
        with self._lock:
            return list(self._queue) + list(self._running)

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every task posted here before the call has finished."""
        timeout = check_wait_timeout(timeout)
        with self._lock:
            earlier = list(self._queue) + list(self._running)
        deadline = None if timeout is None else time.monotonic() + timeout
        for task in earlier:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not task.wait(remaining):
                return False
        return True

    def shutdown(
        self, wait: bool = True, *, timeout: float | None = None, cancel_pending: bool = False
    ) -> ShutdownReport:
        """Refuse new tasks.  Graceful: let queued tasks run (with ``wait``,
        waiting for them).  Forceful (``cancel_pending``), or once the timeout
        ran out: drop queued tasks that are not BLOCK_SHUTDOWN.  With ``wait``,
        then wait for the tasks still running.  ``timeout`` bounds the whole
        call (plus ``SHUTDOWN_GRACE``): what still runs then is reported and
        ends on its own.

        Called from one of this runner's own tasks, it cannot wait for that
        task nor for the ones queued behind it: it returns at once, and the
        queued tasks run after the caller (or, with ``cancel_pending``, are
        dropped now).  The pool itself keeps running."""
        timeout = shutdown_timeout(timeout)
        end = None if timeout is None else time.monotonic() + timeout + SHUTDOWN_GRACE
        waits = wait and current_task_runner_or_none() is not self
        with self._lock:
            self._closed = True
        self._signal_shutdown()
        drained = timed_out = False
        if not cancel_pending and waits:
            drained = self.wait_idle(timeout)
            timed_out = not drained
        dropped = 0
        if cancel_pending or timed_out:
            dropped = self._drop_queued()
        if waits and not self.wait_idle(time_left(end)):
            timed_out = True
        with self._lock:
            running = len(self._running)
        self._forget_source()
        return ShutdownReport(
            drained=drained and not cancel_pending,
            dropped=dropped,
            still_running=running,
            timed_out=timed_out,
        )

    def _drop_queued(self) -> int:
        """Take the queued tasks that are not BLOCK_SHUTDOWN out of the queue
        (so that nothing counts them as queued any more) and drop them."""
        with self._lock:
            queued = list(self._queue)
            self._queue.clear()
            self._queue.extend(t for t in queued if t.traits.shutdown_behavior is _BLOCK)
            if self._active == 0 and not self._queue:
                self._idle.notify_all()
        dropped = 0
        for task in queued:
            if task.traits.shutdown_behavior is not _BLOCK and self._pool._claim(task):
                self._pool._note_not_run(task, M_DROPPED)
                task._finish(DROPPED)
                dropped += 1
        return dropped

    def _pool_closed(self) -> tuple[int, int]:
        """The pool's workers are done: run or drop (by shutdown behaviour) any
        task still queued here that no run loop will take (its loop could not
        be posted to the closing pool), within the pool's shutdown deadline.
        A run loop still active (on a worker the pool stopped waiting for)
        takes the rest of the queue itself, in order.

        Returns (0, 1 if that drain was still running at the deadline, else 0)."""
        with self._lock:
            orphaned = self._active == 0 and bool(self._queue)
            if orphaned:
                self._active += 1  # the drain below counts as a run loop
        overdue = 0
        if orphaned:
            deadline = self._pool._shutdown_deadline
            if deadline is None:
                self._drain_orphans()
            else:
                thread = threading.Thread(
                    target=self._drain_orphans, name=f"{self._name}-drain", daemon=True
                )
                thread.start()
                thread.join(time_left(deadline + SHUTDOWN_GRACE))
                overdue = int(thread.is_alive())
        self._forget_source()
        return 0, overdue

    def _drain_orphans(self) -> None:
        """Run the queued tasks with no run loop left (the pool drops all but
        BLOCK_SHUTDOWN ones), as a run loop would; ends the slot it was given."""
        previous = set_current(self)
        try:
            while True:
                with self._lock:
                    if not self._queue:
                        self._active -= 1
                        if self._active == 0:
                            self._idle.notify_all()
                        break
                    task = self._queue.popleft()
                if self._pool._claim(task):
                    self._pool._run_claimed(task)  # drops it unless BLOCK_SHUTDOWN
        finally:
            set_current(previous)

    # ---- metrics (the MetricsSource hooks) -----------------------------------------------

    def metrics_gauges(self) -> RunnerGauges:
        """This runner's levels now (queued in the runner, running)."""
        with self._lock:
            return RunnerGauges(kind="runner", queued=len(self._queue), running=len(self._running))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "name": self._name,
                "queued": len(self._queue),
                "running": len(self._running),
                "posted": self._posted,
                "completed": self._completed,
                "max_concurrency": self._max,
                "max_concurrency_seen": self._max_seen,
                "closed": self._closed,
                "metadata": self.metadata,
            }


class SequencedTaskRunner(_SlotRunner):
    """Runs its tasks one at a time, in posting order, on any pool thread.

    Guarantees: (1) two tasks of one sequence never run at once; (2) tasks run
    in the order their posts returned (per poster, the order it posted); (3) a
    task sees every memory change made by the tasks before it.  A sequence
    holds a worker for at most ``budget`` seconds before yielding it back.
    """

    def __init__(
        self,
        pool: ThreadPool,
        *,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
        budget: float = 0.002,
    ) -> None:
        super().__init__(pool, 1, traits=traits, name=name, budget=budget)


class ParallelTaskRunner(_SlotRunner):
    """Runs its tasks on the pool with at most ``max_concurrency`` at once.

    Tasks start in posting order; they may finish in any order.
    """

    def __init__(
        self,
        pool: ThreadPool,
        max_concurrency: int,
        *,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
        budget: float = 0.002,
    ) -> None:
        super().__init__(pool, max_concurrency, traits=traits, name=name, budget=budget)
