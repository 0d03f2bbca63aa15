"""The pool's observability: posts counted and tasks timed without a call on the hot path.

With ``metrics=`` a post bumps a lock-free counter and stamps the task with
the time; a worker times each task into a buffer of its own thread; both are
pushed to the metrics in bulk (see :mod:`taskrunner.runtime.metrics`).  With neither
``metrics`` nor ``tracer`` the worker loop tests one local variable per task
(``plain``) and the post path one attribute.  A runner's run loop is posted
as an *internal* task (``Task.ready_ns == INTERNAL``): it is never counted
or traced, while the runner's own tasks are, under the runner's name.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable
from typing import Any

from taskrunner.native.binding import ffi, lib
from taskrunner.runtime.metrics import SUCCEEDED as M_SUCCEEDED
from taskrunner.runtime.metrics import (
    InProcessMetrics,
    RunnerGauges,
)
from taskrunner.runtime.pool.state import INTERNAL, PoolState
from taskrunner.runtime.task import (
    Task,
)
from taskrunner.runtime.traits import TaskPriority

log = logging.getLogger("taskrunner.pool")

_LEVELS = lib.TR_HEAP_LEVELS


class PostCounter:
    """Counts posts without a lock: the hot path calls ``next`` (the C
    ``__next__`` of an ``itertools.count``, atomic with or without the GIL).

    A flush reads the count by calling ``next`` too: the value it gets is the
    number of calls before it, posts and earlier reads together, so
    ``posts = value - reads``.  ``reads`` and ``reported`` are written only
    under the pool's ``_flush_lock``.
    """

    __slots__ = ("next", "reads", "reported")

    def __init__(self) -> None:
        self.next = itertools.count().__next__
        self.reads = 0
        self.reported = 0

    def take_new(self) -> int:
        """Posts since the last call (caller holds the pool's ``_flush_lock``)."""
        posts = self.next() - self.reads
        self.reads += 1
        new = posts - self.reported
        self.reported = posts
        return new


class TaskTimes:
    """One runtime thread's timings of tasks that succeeded, not yet pushed.

    ``bufs`` maps (runner, priority, category) to a flat list of
    ``queue_wait_ns, run_ns`` pairs.  Only the owning thread adds keys (an
    atomic ``setdefault``) and appends (a pair is two appends, wait then run);
    a drain, under the pool's ``_flush_lock``, copies ``bufs`` (atomic), reads
    a list's length once, rounds it down to even and takes that many items off
    the front (one slice, one ``del``, each atomic).  A list only grows at its
    end, so the front is always whole pairs: no lock is taken per task and no
    pair is lost or torn, with or without the GIL.
    """

    __slots__ = ("bufs",)

    def __init__(self) -> None:
        self.bufs: dict[tuple[str, int, str | None], list[int]] = {}

    def buf(self, runner: str, priority: int, category: str | None) -> list[int]:
        key = (runner, priority, category)
        buf = self.bufs.get(key)
        if buf is None:
            buf = self.bufs.setdefault(key, [])
        return buf


# A thread pushes its timings once a buffer holds this many tasks.
TIMES_LIMIT = 1024


class PoolObservability(PoolState):
    """The pool's metrics: buffered post counts and task timings, pushed in bulk."""

    def _metrics_failed(self) -> None:
        """A metrics hook raised: log it once per pool, then carry on."""
        with self._stats_lock:
            first = not self._metrics_error_logged
            self._metrics_error_logged = True
        if first:
            log.exception(
                "%s: a metrics hook failed (logged once; later failures are ignored)",
                self._name,
                extra={"runner": self._name},
            )

    def _note_not_run(self, task: Task, outcome: str) -> None:
        """Report a task that ended without running (cancelled, dropped, rejected)."""
        metrics = self._metrics
        if metrics is None or task.ready_ns == INTERNAL:
            return
        traits = task.traits
        try:
            metrics.task_not_run(task.runner.name, traits.priority, traits.category, outcome)
        except Exception:
            self._metrics_failed()

    def _report_ran(self, task: Task, outcome: str, start_ns: int, end_ns: int) -> None:
        """Report one task that ran (the slow path: categories, failures, runners)."""
        metrics = self._metrics
        if metrics is None:
            return
        traits = task.traits
        try:
            metrics.tasks_ran(
                task.runner.name,
                traits.priority,
                traits.category,
                outcome,
                (start_ns - task.ready_ns,),
                (end_ns - start_ns,),
            )
        except Exception:
            self._metrics_failed()

    def _post_counter(self, runner: str, priority: int, category: str | None) -> Callable[[], int]:
        """The counting function for posts of (runner, priority, category)."""
        key = (runner, int(priority), category)
        counter = self._post_counters.get(key)
        if counter is None:
            counter = self._post_counters.setdefault(key, PostCounter())
        return counter.next

    def _thread_times(self) -> TaskTimes | None:
        """The calling thread's timing buffer (None without metrics, or on a
        thread that is not one of the runtime's: a caller_runs poster)."""
        try:
            acc: TaskTimes = self._acc_local.acc
        except AttributeError:
            return None
        return acc

    def _adopt_thread(self) -> TaskTimes | None:
        """Give the calling runtime thread (a worker, a runner's thread) a
        timing buffer; None without metrics.  Pair with :meth:`_release_thread`."""
        if self._metrics is None:
            return None
        acc = TaskTimes()
        with self._flush_lock:
            self._accs.append(acc)
        self._acc_local.acc = acc
        return acc

    def _release_thread(self, acc: TaskTimes | None) -> None:
        """The thread of ``acc`` is ending: push its buffer and forget it."""
        if acc is None:
            return
        with self._flush_lock:
            self._drain_locked(acc)
            with contextlib.suppress(ValueError):
                self._accs.remove(acc)
        with contextlib.suppress(AttributeError):
            del self._acc_local.acc

    def _flush_times(self, acc: TaskTimes) -> None:
        """Push one thread's full buffer (called by that thread)."""
        with self._flush_lock:
            self._drain_locked(acc)

    def _drain_locked(self, acc: TaskTimes) -> None:
        """Push everything in ``acc`` (caller holds ``_flush_lock``)."""
        metrics = self._metrics
        if metrics is None:
            return
        for (runner, priority, category), buf in acc.bufs.copy().items():
            n = len(buf)
            n -= n & 1  # whole pairs only: the owner may be between its two appends
            if not n:
                continue
            # The owner only appends, so the first n items are n/2 whole pairs,
            # and deleting them leaves whatever it appends meanwhile.
            chunk = buf[:n]
            del buf[:n]
            try:
                metrics.tasks_ran(runner, priority, category, M_SUCCEEDED, chunk[0::2], chunk[1::2])
            except Exception:
                self._metrics_failed()

    def flush_metrics(self) -> None:
        """Push every buffered metrics event (posts, task timings) to the
        pool's metrics now.  Collectors call it before they read (it is the
        :class:`~taskrunner.runtime.metrics.MetricsSource` hook); any thread may call it."""
        metrics = self._metrics
        if metrics is None:
            return
        with self._flush_lock:
            for (runner, priority, category), counter in self._post_counters.copy().items():
                new = counter.take_new()
                if new:
                    try:
                        metrics.tasks_posted(runner, priority, category, new)
                    except Exception:
                        self._metrics_failed()
            for acc in self._accs:
                self._drain_locked(acc)

    def metrics_gauges(self) -> RunnerGauges:
        """The pool's levels now (the :class:`~taskrunner.runtime.metrics.MetricsSource` hook)."""
        counts = ffi.new("size_t[]", _LEVELS)
        by_prio = {int(p): 0 for p in TaskPriority}
        running = 0
        workers: dict[str, int] = {}
        for label, group in (("cpu", self._cpu), ("blocking", self._blocking)):
            lib.tr_heap_level_counts(group.h, counts)
            for p in TaskPriority:
                by_prio[int(p)] += int(counts[int(p)])
            with group.lock:
                running += sum(1 for w in group.workers if w.current is not None)
                workers[label] = len(group.workers)
        return RunnerGauges(
            kind="pool",
            queued=sum(by_prio.values()),
            running=running,
            queued_by_priority=by_prio,
            delayed=len(self._delays),
            workers=workers,
        )

    def _time_categorised(
        self, acc: TaskTimes, priority: int, category: str, wait_ns: int, run_ns: int
    ) -> None:
        """Buffer the timings of a pool task with a category (worker thread)."""
        buf = acc.buf(self._name, priority, category)
        buf.append(wait_ns)
        buf.append(run_ns)
        if len(buf) >= 2 * TIMES_LIMIT:
            self._flush_times(acc)

    def _metrics_stats(self) -> dict[str, Any]:
        """With an :class:`InProcessMetrics`: ``{"metrics": its summary of this pool}``."""
        metrics = self._metrics
        if isinstance(metrics, InProcessMetrics):
            return {"metrics": metrics.summary(self._name)}
        return {}
