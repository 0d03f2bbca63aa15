"""Waiting for the pool and shutting it down.

Shutdown
--------
``shutdown(wait=True, timeout=None, cancel_pending=False)``:

1. posts are refused from now on (``RunnerClosedError``); delayed tasks that
   have not fired are dropped (all of them: a delayed BLOCK_SHUTDOWN task
   behaves as SKIP_ON_SHUTDOWN);
2. graceful (``cancel_pending=False``): wait for every queued task to run
   and every running task to end;
3. then (at once when ``cancel_pending=True``): queued tasks that have not
   started are dropped unless their behaviour is BLOCK_SHUTDOWN, which
   always run (before shutdown returns, unless its timeout runs out first);
4. the workers are joined, except one running a CONTINUE_ON_SHUTDOWN task:
   shutdown does not wait for it (it is a daemon thread and exits after
   its task).

``timeout`` bounds the whole call, steps 2 to 4 together: shutdown returns
at most about ``timeout`` plus :data:`SHUTDOWN_GRACE` after it was called.
What is still running then is reported (``still_running``,
``timed_out=True``) and left to end on its own threads, which are daemon
threads; queued BLOCK_SHUTDOWN tasks still run there.  ``timeout=None``
waits for everything but CONTINUE_ON_SHUTDOWN tasks.

With ``wait=False`` steps 2 to 4 happen on a background thread and
``shutdown`` returns at once.  Called from one of the pool's own threads (a
task running on a worker, including a task of a runner built on the pool),
shutdown cannot wait for the calling task, nor for what is queued behind it
on that worker: it does steps 1 (and 3, with ``cancel_pending``) and leaves
the rest to a background thread, as with ``wait=False``, then returns a
report of that moment (``still_running`` counts the caller).  The shutdown
finishes after the calling task returns; any later ``shutdown()`` call
(such as the one at the end of a ``with`` block) waits for it, up to its own
timeout, and returns the final report.  The returned
:class:`ShutdownReport` says what ran, what was dropped and what was still
running.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from taskrunner.native.binding import OK, lib, timeout_ns
from taskrunner.runtime.pool.checks import (
    shutdown_timeout,
    time_left,
)
from taskrunner.runtime.pool.state import PoolState, runtime_thread
from taskrunner.runtime.pool.workers import Worker
from taskrunner.runtime.runner import TaskRunner
from taskrunner.runtime.task import (
    Task,
)
from taskrunner.runtime.traits import ShutdownBehavior
from taskrunner.runtime.waits import check_wait_timeout

_remove = lib.tr_heap_remove
_BLOCK = ShutdownBehavior.BLOCK_SHUTDOWN
_CONTINUE = ShutdownBehavior.CONTINUE_ON_SHUTDOWN
#: After its ``timeout``, a shutdown waits at most this long more (seconds) for
#: the workers to finish dropping what is queued.
SHUTDOWN_GRACE = 0.05


@dataclass(frozen=True, slots=True)
class ShutdownReport:
    """What ``shutdown`` found and did."""

    #: True if shutdown saw every queued task run (the graceful drain finished
    #: in time).  False with ``cancel_pending``, after a timeout, and when
    #: shutdown did not wait (``wait=False``, or called from inside).
    drained: bool
    #: Not-started tasks that were dropped (queued and delayed) by the time
    #: shutdown returned.
    dropped: int
    #: Tasks still running when shutdown returned: CONTINUE_ON_SHUTDOWN ones
    #: (never waited for), the calling task when shutdown was called from one
    #: of the runner's own tasks, and any that outlived the timeout.
    still_running: int
    #: True if ``timeout`` ran out before shutdown finished (the drain, or the
    #: wait for running tasks and threads).
    timed_out: bool


def children_of(pool: PoolState) -> list[TaskRunner]:
    """The live runners built on ``pool``."""
    with pool._lifecycle:
        refs = list(pool._children.values())
    return [r for r in (ref() for ref in refs) if r is not None]


class PoolShutdown(PoolState):
    """``wait_idle``, ``flush`` and ``shutdown`` (see the module docstring)."""

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued or running in either group (delayed
        tasks not yet due do not count).  False if ``timeout`` ran out."""
        timeout = check_wait_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        for group in (self._cpu, self._blocking):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if lib.tr_heap_wait_idle(group.h, timeout_ns(remaining)) != OK:
                return False
        for gate in self._gates.values():
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not gate.wait_empty(remaining):
                return False
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every task posted before this call has finished
        (delayed tasks not yet due excepted).  False if ``timeout`` ran out."""
        timeout = check_wait_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        for task in self._earlier_tasks():
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not task.wait(remaining):
                return False
        return True

    def _earlier_tasks(self) -> list[Task]:
        """The tasks queued or running now (not delayed ones not yet due).  The
        live tasks first, then each worker's current one: a worker sets
        ``current`` before it claims a task, so no task falls between."""
        waiting = [t for t in list(self._live.copy().values()) if not t.delayed]
        for group in (self._cpu, self._blocking):
            with group.lock:
                workers = list(group.workers)
            for worker in workers:
                task = worker.current
                if task is not None:
                    waiting.append(task)
        return waiting

    def shutdown(
        self, wait: bool = True, *, timeout: float | None = None, cancel_pending: bool = False
    ) -> ShutdownReport | None:
        """Stop taking tasks and wind down (see the module docstring).

        Returns the report, or None with ``wait=False``.  ``timeout`` bounds the
        whole call: it returns within about ``timeout + SHUTDOWN_GRACE`` seconds,
        reporting what is still running then (which ends on its own threads).

        Called from one of the pool's own tasks it cannot wait for that task: it
        closes the pool, leaves the rest to a background thread and returns a
        report of that moment.  Calling it again waits (up to its own
        ``timeout``) for the first call's shutdown to finish and returns that
        report, or a report of the moment if it is still going on.
        """
        timeout = shutdown_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        inside = getattr(runtime_thread, "pool", None) is self
        with self._lifecycle:
            first = not self._closed
            self._closed = True
            if first:
                self._shutdown_deadline = deadline
                with self._stats_lock:
                    self._dropped_at_close = self._dropped
        self._signal_shutdown()
        if not first:
            if not wait:
                return self._report
            if not inside:
                self._shutdown_done.wait(timeout)
            report = self._report
            return report if report is not None else self._report_now(timed_out=not inside)
        for child in children_of(self):
            child._pool_closing()  # type: ignore[attr-defined]
        self._drop_delayed()
        if wait and not inside:
            return self._finish_shutdown(deadline, cancel_pending)
        if inside and cancel_pending:
            self._start_dropping()  # at once: the caller cannot wait for its own worker
        threading.Thread(
            target=self._finish_shutdown,
            args=(deadline, cancel_pending),
            name=f"{self._name}-shutdown",
            daemon=True,
        ).start()
        if not wait:
            return None
        # From inside: the shutdown finishes after the calling task returns.
        return self._report_now(timed_out=False)

    def _report_now(self, *, timed_out: bool) -> ShutdownReport:
        """A report of a shutdown that has not finished: what it dropped so far
        and what is running now."""
        running = 0
        for group in (self._cpu, self._blocking):
            with group.lock:
                running += sum(1 for w in group.workers if w.current is not None)
        with self._stats_lock:
            dropped = self._dropped - self._dropped_at_close
        return ShutdownReport(
            drained=False, dropped=dropped, still_running=running, timed_out=timed_out
        )

    def _drop_delayed(self) -> int:
        """Close the wheel and drop every delayed task that has not fired."""
        self._delays.close()
        dropped = 0
        for task in list(self._live.copy().values()):
            # Only a task still in the wheel is dropped here: one whose insert
            # was refused by the closed wheel is dropped (and reported to its
            # poster) by _post_failed, and one that fired belongs to a queue.
            if (
                task.delayed
                and self._delays.cancel(task.token)
                and self._live.pop(task.token, None) is task
            ):
                self._drop_claimed(task)
                dropped += 1
        return dropped

    def _start_dropping(self) -> None:
        """Shutdown's step 3: from now on only BLOCK_SHUTDOWN tasks start, and
        every other queued task (the pool's and its runners') is dropped now,
        whether or not a worker is free to get to it.  Idempotent."""
        self._dropping = True
        for gate in self._gates.values():
            gate.release_all()
        for group in (self._cpu, self._blocking):
            lib.tr_heap_close(group.h)
        for task in list(self._live.copy().values()):
            if task.delayed or task.traits.shutdown_behavior is _BLOCK:
                continue
            if self._live.pop(task.token, None) is not task:
                continue  # started, cancelled or dropped meanwhile
            if task.runner is self:
                # In a ready queue (a runner's task is in the runner's queue,
                # which skips it now that its claim is gone).
                group = self._blocking if task.traits.may_block else self._cpu
                _remove(group.h, task.token)
                if task.traits.category is not None and self._gates:
                    self._release_gate(task)
            self._drop_claimed(task)

    def _finish_shutdown(self, deadline: float | None, cancel_pending: bool) -> ShutdownReport:
        try:
            report = self._wind_down(deadline, cancel_pending)
            self._report = report
            return report
        finally:
            self._shutdown_done.set()

    def _wind_down(self, deadline: float | None, cancel_pending: bool) -> ShutdownReport:
        """Steps 2 to 4 of shutdown, within ``deadline`` (+ the grace for the joins)."""
        drained = False
        timed_out = False
        if not cancel_pending:
            if self._started:
                drained = self.wait_idle(time_left(deadline))
                timed_out = not drained
            else:
                drained = not self._live  # no workers: nothing queued can run
        self._start_dropping()
        end = None if deadline is None else deadline + SHUTDOWN_GRACE
        running = overdue = 0
        if not self._started:
            overdue += self._drain_without_workers(end)  # runs the BLOCK_SHUTDOWN tasks
        continuing, late = self._join_workers(end)
        running += continuing
        overdue += late
        self._batch_watch.close(timeout=time_left(end))  # it exits at once; never waits for a task
        for child in children_of(self):
            # Each returns (its tasks still running by design, those it gave up
            # waiting for at the deadline); a runner that returns None has neither.
            counts = child._pool_closed()  # type: ignore[attr-defined]
            if counts:
                running += counts[0]
                overdue += counts[1]
        with self._stats_lock:
            dropped = self._dropped - self._dropped_at_close
        report = ShutdownReport(
            drained=drained and not cancel_pending,
            dropped=dropped,
            still_running=running + overdue,
            timed_out=timed_out or overdue > 0,
        )
        if self._metrics is not None:
            self.flush_metrics()
            try:
                self._metrics.remove_source(self)
            except Exception:
                self._metrics_failed()
        return report

    def _drain_without_workers(self, end: float | None) -> int:
        """Run the worker loop once over each closed queue, on a thread of its
        own (the caller's current runner must not be touched); 1 if it was
        still running at ``end``, else 0."""
        worker = Worker()

        def drain() -> None:
            for group in (self._cpu, self._blocking):
                self._worker_main(group, worker)

        thread = threading.Thread(target=drain, name=f"{self._name}-drain", daemon=True)
        thread.start()
        thread.join(time_left(end))
        return int(thread.is_alive())

    def _join_workers(self, end: float | None) -> tuple[int, int]:
        """Join every worker until ``end`` (None: for as long as it takes).

        Returns (workers running a CONTINUE_ON_SHUTDOWN task, which are never
        waited for; workers still running at ``end``)."""
        continuing = overdue = 0
        me = threading.current_thread()
        for group in (self._cpu, self._blocking):
            with group.lock:
                workers = list(group.workers)
            for worker in workers:
                thread = worker.thread
                if thread is None or thread is me:
                    continue
                while thread.is_alive():
                    current = worker.current
                    if current is not None and current.traits.shutdown_behavior is _CONTINUE:
                        continuing += 1
                        break
                    left = time_left(end)
                    if left is not None and left <= 0:
                        overdue += 1
                        break
                    thread.join(0.05 if left is None else min(0.05, left))
        return continuing, overdue
