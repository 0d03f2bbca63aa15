"""``ThreadPool``: the scheduler and its worker threads.

Design
------
Each posted task gets a 64-bit token from a process-wide counter and goes in
``_live``, a dict from token to task, until someone claims it (see
:mod:`taskrunner.task`).  The token, never the task, goes into C:

* the **ready queue** of a worker group is the C heap (priority, then FIFO);
* **delays** are the C timing wheel, driven by one timer thread
  (:mod:`taskrunner._delays`), which moves due tokens into the ready queues.

There are two worker groups, each with its own heap: the CPU group (a fixed
number of threads) and the blocking group for ``may_block`` tasks, which
starts empty, grows one thread at a time when a blocking task is posted and
no blocking worker is idle (up to ``max_blocking_workers``), and shrinks
when a worker has been idle for ``blocking_idle_timeout``.

A worker blocks inside ``tr_heap_pop_wait`` (in C, GIL released) and takes a
batch of tokens of one priority at a time (at most a fair share of what is
queued), so posting and getting work each cost one C call per task or less.
Before each task of a batch after the first the worker reads the heap's
preemption counter for its priority level (a memory read, no call): if a
more urgent task was pushed since the batch was taken, the worker gives the
rest of its batch back to the front of the queue and takes the urgent one.
So a higher-priority task never waits behind a lower one once a worker is
between tasks.  Within a priority, tasks leave the queue in FIFO order; with
several workers, tasks taken in one batch start in order on that worker.

BEST_EFFORT tasks are capped in C (``tr_heap_set_low_limit``): at most
``best_effort_limit`` run at once per group.

Under a GIL (``lazy_wake``, on by default there) the CPU group's heap wakes
workers lazily: while one worker is busy, a post wakes an idle one only once
a batch is queued, and a worker coming back from a batch naps in C (GIL
released) for up to 200 us for a batch to build up.  Idle workers re-check
every 200 us, so queued work never waits longer than that for one; an idle
pool still wakes a worker at once.  This trades at most 200 us of latency
under a stream of posts for far fewer GIL hand-offs (batches of ~25 tasks
instead of ~5).  Without a GIL workers are woken at once, to run in parallel.

Observability
-------------
With ``metrics=`` a post bumps a lock-free counter and stamps the task with
the time; a worker times each task into a buffer of its own thread; both are
pushed to the metrics in bulk (see :mod:`taskrunner.metrics`).  With neither
``metrics`` nor ``tracer`` the worker loop tests one local variable per task
(``plain``) and the post path one attribute.  A runner's run loop is posted
as an *internal* task (``Task.ready_ns == _INTERNAL``): it is never counted
or traced, while the runner's own tasks are, under the runner's name.

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

Lifecycle
---------
A pool starts its workers when it is built, as ``ThreadPoolExecutor`` takes
work as soon as it exists.  ``ThreadPool(..., start=False)`` defers that to
:meth:`ThreadPool.start` (Chromium's deferred start): tasks posted before
then wait in the queues, and nothing runs until ``start()`` is called.
``workers`` and ``max_blocking_workers`` are at most :data:`MAX_WORKERS`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from contextvars import copy_context
from dataclasses import dataclass
from typing import Any, TypeVarTuple

from taskrunner import rejections as _rejections
from taskrunner._batch_post import post_tasks
from taskrunner._batch_watch import BatchWatch
from taskrunner._delays import DelayedTasks
from taskrunner._native import CLOSED, EXISTS, OK, TIMEOUT, check, ffi, lib, timeout_ns
from taskrunner.clock import MONOTONIC, Clock
from taskrunner.errors import RunnerClosedError
from taskrunner.metrics import CANCELLED as M_CANCELLED
from taskrunner.metrics import DROPPED as M_DROPPED
from taskrunner.metrics import FAILED as M_FAILED
from taskrunner.metrics import SUCCEEDED as M_SUCCEEDED
from taskrunner.metrics import (
    InProcessMetrics,
    Metrics,
    NoopMetrics,
    RunnerGauges,
    TaskTracer,
)
from taskrunner.rejections import PoolRejectionCallback
from taskrunner.runner import TaskRunner, _set_current
from taskrunner.task import (
    CANCELLED,
    DROPPED,
    FAILED,
    RUNNING,
    SUCCEEDED,
    Task,
    check_post,
)
from taskrunner.traits import DEFAULT_TRAITS, ShutdownBehavior, TaskPriority, TaskTraits

Ts = TypeVarTuple("Ts")  # the positional arguments of a posted callable

log = logging.getLogger("taskrunner.pool")

_push = lib.tr_heap_push
_pop_wait = lib.tr_heap_pop_wait
_unpop = lib.tr_heap_unpop
_remove = lib.tr_heap_remove
_wheel_cancel = lib.tr_wheel_cancel
_wheel_insert = lib.tr_wheel_insert
# Longest delay accepted on the fast path (about 292 years in ns fits int64).
_MAX_DELAY = 9.2e9
_unpack = ffi.unpack
_BLOCK = ShutdownBehavior.BLOCK_SHUTDOWN
_CONTINUE = ShutdownBehavior.CONTINUE_ON_SHUTDOWN
_LEVELS = lib.TR_HEAP_LEVELS
_now_ns = time.monotonic_ns
_USER_VISIBLE = int(TaskPriority.USER_VISIBLE)
# With lazy wake-ups (see tr_heap.h), a task queued while a worker is busy
# waits at most about this long for an idle worker to notice it.
_LAZY_WAKE_NS = 200_000
# Task.ready_ns of an internal task (a runner's run loop): not counted, not traced.
_INTERNAL = -1
# A worker holds the rest of a batch back for at most this long; then it
# returns it to the queue so idle workers can take it (long tasks gain nothing
# from batching, and a batch must not hide ready work from a free worker).
_HOLD_NS = 1_000_000
_FOREVER = 1 << 63
#: The most threads a worker group may have (``workers``, ``max_blocking_workers``):
#: far more than a CPU count, few enough that a typo cannot start a million threads.
MAX_WORKERS = 1024
#: After its ``timeout``, a shutdown waits at most this long more (seconds) for
#: the workers to finish dropping what is queued.
SHUTDOWN_GRACE = 0.05
# Time is integer nanoseconds inside (an int64 in the C core).
_INT64_MAX = (1 << 63) - 1
_BATCH_MAX = 4096

# Per thread: the pool whose runtime thread (a worker, or the drain of a pool
# that never started) this is, so that shutdown() knows it is called from inside.
_runtime = threading.local()

# Tokens are unique across every pool of the process, which keeps a token
# from being mistaken for another pool's.  next() on itertools.count is atomic
# with or without the GIL.
_next_token = itertools.count(1).__next__

ErrorHandler = Callable[[BaseException, Task], None]


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


class _PostCounter:
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


class _TaskTimes:
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
_TIMES_LIMIT = 1024


class _Worker:
    """One worker thread.  ``current`` is written only by its own thread.

    ``batch`` (the tokens of the batch it holds, if more than one) and
    ``batch_priority`` are written by the worker; the batch watch reads them
    and may set ``batch`` to None under ``batch_lock`` when it re-queues the
    batch (see taskrunner._batch_watch).  ``seen_*`` belong to the watch.
    """

    __slots__ = (
        "batch",
        "batch_lock",
        "batch_priority",
        "current",
        "seen_batch",
        "seen_current",
        "thread",
    )

    def __init__(self) -> None:
        self.current: Task | None = None
        self.thread: threading.Thread | None = None
        self.batch: list[int] | None = None
        self.batch_priority = 0
        self.batch_lock = threading.Lock()  # guards the hand-back of batch
        self.seen_current: int | None = None  # a token: the watch holds no task
        self.seen_batch: list[int] | None = None


class _Group:
    """A worker group: a C heap (its ready queue) and the threads popping it.

    ``lock`` guards ``workers`` and ``spawned``; the heap guards itself.
    """

    def __init__(
        self,
        pool: ThreadPool,
        kind: str,
        minimum: int,
        maximum: int,
        idle_timeout: float | None,
        best_effort_limit: int,
    ) -> None:
        self.pool = pool
        self.kind = kind
        self.minimum = minimum
        self.maximum = maximum
        self.idle_timeout_ns = timeout_ns(idle_timeout, "idle timeout")
        out = ffi.new("tr_heap **")
        check(lib.tr_heap_new(out), "ready queue")
        self.h = ffi.gc(out[0], lib.tr_heap_free)
        self.epochs = lib.tr_heap_epochs(self.h)
        if best_effort_limit:
            check(
                lib.tr_heap_set_low_limit(self.h, TaskPriority.BEST_EFFORT, best_effort_limit),
                "best-effort limit",
            )
        self.best_effort_capped = best_effort_limit > 0
        self.lock = threading.Lock()
        self.workers: list[_Worker] = []
        self.spawned = 0

    def spawn(self) -> None:
        """Start one worker thread (caller holds ``lock``)."""
        worker = _Worker()
        self.spawned += 1
        thread = threading.Thread(
            target=self.pool._worker_main,
            args=(self, worker),
            name=f"{self.pool.name}-{self.kind}-{self.spawned}",
            daemon=True,
        )
        worker.thread = thread
        self.workers.append(worker)
        thread.start()

    def maybe_grow(self) -> None:
        """Add a worker if none is idle and the group is below its maximum."""
        if len(self.workers) >= self.maximum or lib.tr_heap_len(self.h) <= lib.tr_heap_waiters(
            self.h
        ):
            return  # at the cap, or enough idle workers for what is queued
        with self.lock:
            if len(self.workers) < self.maximum and not self.pool._closed:
                self.spawn()

    def retire(self, worker: _Worker) -> bool:
        """Called by an idle worker: True if it may exit (group above minimum)."""
        with self.lock:
            if len(self.workers) > self.minimum:
                self.workers.remove(worker)
                return True
        return False

    def queued(self) -> int:
        return int(lib.tr_heap_len(self.h))


class ThreadPool(TaskRunner):
    """A pool of worker threads running posted tasks by priority.

    ``workers`` CPU workers (default: the CPU count, at least 2) plus a
    growable group of up to ``max_blocking_workers`` for ``may_block`` tasks
    (each at most :data:`MAX_WORKERS`).  The workers start when the pool is
    built; with ``start=False`` they start at :meth:`start`, and tasks posted
    before then wait for it (nothing runs until it is called).  Exceptions raised by tasks
    never kill a worker: they go to ``error_handler(exc, task)`` (default: log
    at ERROR on ``taskrunner.pool`` with the task's name and traceback).
    The poster's ``contextvars`` context is captured at post time and the task
    runs in it.  Every method may be called from any thread.

    Observability (both fixed for the pool's life, both off by default):
    ``metrics`` (a :class:`~taskrunner.metrics.Metrics`, e.g.
    :class:`~taskrunner.metrics.InProcessMetrics`) receives the events of the
    pool and of every runner built on it; the pool is its
    :class:`~taskrunner.metrics.MetricsSource` (gauges, and
    :meth:`flush_metrics` for the events it buffers).  ``tracer`` (a
    :class:`~taskrunner.metrics.TaskTracer`, e.g.
    :class:`taskrunner.otel.OtelTracer`) wraps the run of every task.  With
    neither, the pool makes no call to either.  Metrics hooks must return
    quickly and must not call back into the pool; one that raises is logged
    once and ignored.  ``on_rejected(task, reason)`` hears of every task the
    pool refuses or drops (see :mod:`taskrunner.rejections`).
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        name: str = "pool",
        max_blocking_workers: int = 64,
        blocking_idle_timeout: float = 10.0,
        best_effort_limit: int = 2,
        category_limits: dict[str, int] | None = None,
        clock: Clock | None = None,
        error_handler: ErrorHandler | None = None,
        tick: float = 0.001,
        leeway: float = 0.0,
        batch_size: int = 32,
        lazy_wake: bool | None = None,
        metrics: Metrics | None = None,
        tracer: TaskTracer | None = None,
        on_rejected: PoolRejectionCallback | None = None,
        start: bool = True,
    ) -> None:
        if workers is None:
            workers = min(MAX_WORKERS, max(2, os.cpu_count() or 2))
        _check_int("workers", workers, 1, MAX_WORKERS)
        _check_int("max_blocking_workers", max_blocking_workers, 1, MAX_WORKERS)
        _check_int("best_effort_limit", best_effort_limit, 0)
        _check_int("batch_size", batch_size, 1, _BATCH_MAX)
        _check_seconds("blocking_idle_timeout", blocking_idle_timeout)
        tick_ns = _seconds_ns("tick", tick)
        leeway_ns = _seconds_ns("leeway", leeway)
        if tick_ns < 1:
            raise ValueError(f"tick must be at least 1 ns, got {tick}")
        if error_handler is not None and not callable(error_handler):
            raise TypeError("error_handler must be callable")
        if metrics is not None and not isinstance(metrics, Metrics):
            raise TypeError(f"metrics must implement Metrics, not {type(metrics).__name__}")
        if tracer is not None and not isinstance(tracer, TaskTracer):
            raise TypeError(f"tracer must implement TaskTracer, not {type(tracer).__name__}")
        _rejections.check_callback(on_rejected)
        self._on_rejected = on_rejected  # see taskrunner.rejections
        self._name = name
        self._pool = self  # every runner's _pool owns its tasks (see task.py)
        self._clock: Clock = clock if clock is not None else MONOTONIC
        self._error_handler = error_handler
        self._batch_size = batch_size
        # Observability (fixed for the pool's life).  None means off: no call at
        # all; _plain is the one flag the run paths test.
        self._metrics: Metrics | None = None if type(metrics) is NoopMetrics else metrics
        self._tracer = tracer
        self._plain = self._metrics is None and tracer is None
        self._metrics_error_logged = False  # under _stats_lock: the first failure is logged
        # Buffered metrics (see taskrunner.metrics: the hot path makes no call).
        # Post counters by (runner, priority, category): lock-free, created
        # with an atomic setdefault, read only by _flush_locked.
        self._post_counters: dict[tuple[str, int, str | None], _PostCounter] = {}
        self._posted_default = self._post_counter(name, _USER_VISIBLE, None)
        # Guards _accs and serialises the pushes of buffered events (two
        # drains of one buffer must not interleave).  Never held by the hot
        # path; held while the metrics hooks run (they take only their own lock).
        self._flush_lock = threading.Lock()
        self._accs: list[_TaskTimes] = []  # one per thread that runs our tasks
        self._acc_local = threading.local()  # .acc: the calling thread's _TaskTimes
        # The pending tasks by token; see taskrunner.task for the claim rule.
        self._live: dict[int, Task] = {}
        self._cpu = _Group(self, "worker", workers, workers, None, best_effort_limit)
        self._cpu_h = self._cpu.h
        if lazy_wake is None:
            # Under a GIL a woken worker cannot run alongside the poster anyway:
            # waking it per task costs a GIL hand-off per task.  Without a GIL,
            # wake workers at once so they really run in parallel.
            is_gil_enabled = getattr(sys, "_is_gil_enabled", None)
            lazy_wake = True if is_gil_enabled is None else bool(is_gil_enabled())
        if lazy_wake:
            check(lib.tr_heap_set_lazy_wake(self._cpu_h, batch_size, _LAZY_WAKE_NS), "lazy wake")
        self._blocking = _Group(
            self, "blocking", 0, max_blocking_workers, blocking_idle_timeout, best_effort_limit
        )
        cpu_h = self._cpu_h
        self._batch_watch = BatchWatch(
            name,
            cpu_h,
            lambda: list(self._cpu.workers),
            self._live.__contains__,
            _HOLD_NS,
            lambda: int(lib.tr_heap_waiters(cpu_h)),
        )
        self._delays = DelayedTasks(
            self._clock,
            self._fire_delayed,
            tick_ns=tick_ns,
            leeway_ns=leeway_ns,
            name=name,
        )
        # Runners built on this pool (guarded by _lifecycle); shut down with it.
        # Runners built on this pool, by id, as weak references (a runner the
        # user dropped is not kept alive).  Guarded by _lifecycle; dead
        # references are pruned under the lock, never from a GC callback.
        self._children: dict[int, weakref.ref[TaskRunner]] = {}
        self._children_prune_at = 64
        self._wheel = self._delays._w
        self._now = self._clock.now_ns
        self._gates: dict[str, _CategoryGate] = {}
        for category, limit in (category_limits or {}).items():
            _check_int(f"category_limits[{category!r}]", limit, 1)
            self._gates[category] = _CategoryGate(self, category, limit)
        # Guards the lifecycle fields below (_started, _closed, _report).
        self._lifecycle = threading.Lock()
        self._started = False
        self._closed = False  # also read without the lock on the post path
        self._dropping = False  # set once; workers then skip non-BLOCK tasks
        self._report: ShutdownReport | None = None
        self._shutdown_done = threading.Event()
        # Set once by the first shutdown() call, before it starts winding down:
        # when its timeout ends (time.monotonic(), None: no timeout; runners
        # built on the pool read it in _pool_closed), and the drop count then.
        self._shutdown_deadline: float | None = None
        self._dropped_at_close = 0
        # Guards the counters below (each written by exactly one kind of thread)
        # and _metrics_error_logged.
        self._stats_lock = threading.Lock()
        self._completed = 0
        self._failed = 0
        self._cancelled = 0
        self._dropped = 0
        if self._metrics is not None:
            self._metrics.add_source(name, self)
        if start:
            self.start()

    # ---- TaskRunner properties -----------------------------------------------

    def _renamed(self) -> None:
        """Posts, timings and the gauge source are keyed by the new name."""
        self._posted_default = self._post_counter(self._name, _USER_VISIBLE, None)
        metrics = self._metrics
        if metrics is not None and not self._closed:
            try:
                metrics.remove_source(self)
                metrics.add_source(self._name, self)
            except Exception:
                self._metrics_failed()

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def clock(self) -> Clock:
        return self._clock

    @property
    def started(self) -> bool:
        """True once :meth:`start` ran."""
        return self._started

    @property
    def metrics(self) -> Metrics | None:
        """The pool's metrics sink, or None when metrics are off.  Runners built
        on the pool and the JobManager report through it."""
        return self._metrics

    @property
    def tracer(self) -> TaskTracer | None:
        """The hook wrapping each task's execution, or None."""
        return self._tracer

    # ---- lifecycle -------------------------------------------------------------

    def start(self) -> ThreadPool:
        """Start the workers and the timer thread.  Idempotent; returns self.

        A pool starts itself when built; this is for one built with
        ``start=False`` (deferred start), whose tasks wait until it is called."""
        with self._lifecycle:
            if self._closed:
                raise RunnerClosedError(f"{self._name}: cannot start a pool that was shut down")
            if self._started:
                return self
            self._started = True
            with self._cpu.lock:
                for _ in range(self._cpu.minimum):
                    self._cpu.spawn()
        self._delays.start()
        if len(self._blocking.workers) == 0 and lib.tr_heap_len(self._blocking.h):
            self._blocking.maybe_grow()
        return self

    def __enter__(self) -> ThreadPool:
        return self.start()

    # ---- posting ------------------------------------------------------------------

    def post_task(
        self,
        fn: Callable[[*Ts], Any],
        /,
        *args: *Ts,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
    ) -> Task:
        """Queue ``fn(*args)``; returns its handle.  RunnerClosedError after shutdown."""
        if self._closed:
            raise self._refused(fn, args, traits, name, "post_task")
        if not callable(fn):
            raise TypeError(f"task must be callable, not {type(fn).__name__}")
        if traits is not DEFAULT_TRAITS and type(traits) is not TaskTraits:
            raise TypeError(f"traits must be TaskTraits, not {type(traits).__name__}")
        token = _next_token()
        task = Task(token, fn, args, copy_context(), traits, name, self)
        self._live[token] = task
        if self._metrics is not None:
            task.ready_ns = _now_ns()
            if traits is DEFAULT_TRAITS:
                self._posted_default()
            else:
                self._post_counter(self._name, traits.priority, traits.category)()
        if traits is DEFAULT_TRAITS:  # the fast path: CPU group, USER_VISIBLE
            status = _push(self._cpu_h, token, _USER_VISIBLE)
            if status != OK:
                self._post_failed(task, status)
        elif traits.category is None and not traits.may_block:  # CPU group, any priority
            status = _push(self._cpu_h, token, traits.priority)
            if status != OK:
                self._post_failed(task, status)
        else:
            self._enqueue(task)
        return task

    def post_tasks(
        self,
        fn: Callable[[*Ts], Any],
        arg_tuples: Iterable[tuple[*Ts]],
        /,
        *,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
    ) -> list[Task]:
        """``post_task(fn, *args)`` for each tuple, queued in chunks of 1,024 with
        one C call each; returns the handles in order (see taskrunner._batch_post)."""
        return post_tasks(self, fn, arg_tuples, traits, name, _next_token, _now_ns)

    # ---- the hooks runners build on ------------------------------------------------

    def _register(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        traits: TaskTraits,
        name: str | None,
        runner: TaskRunner,
    ) -> Task:
        """A new pending task of ``runner``, claimable through this pool (see task.py)."""
        check_post(fn, traits)
        token = _next_token()
        task = Task(token, fn, args, copy_context(), traits, name, runner)
        self._live[token] = task
        if self._metrics is not None:
            task.ready_ns = _now_ns()
            self._post_counter(runner.name, traits.priority, traits.category)()
        return task

    def _post_internal(self, fn: Callable[[], Any], traits: TaskTraits, runner: TaskRunner) -> None:
        """Queue one of ``runner``'s internal tasks (its run loop) on this pool.

        It is marked internal (``ready_ns == _INTERNAL``) so that it is neither
        counted nor traced: the runner's own tasks report themselves through
        :meth:`_run_claimed`.  RunnerClosedError once the pool is closed.
        """
        if self._closed:
            raise RunnerClosedError(f"{self._name}: post_task after shutdown")
        token = _next_token()
        task = Task(token, fn, (), copy_context(), traits, runner.name, runner)
        task.ready_ns = _INTERNAL
        self._live[token] = task
        self._push_ready(task)

    def _claim(self, task: Task) -> bool:
        """Take a pending task for running (False: cancelled or dropped already)."""
        return self._live.pop(task.token, None) is task

    def _unregister(self, task: Task) -> bool:
        """Forget a task that never reached a queue (its post failed).  False if
        shutdown's dropping step claimed it first (and counted it as dropped):
        the poster should then return the DROPPED handle rather than raise."""
        if self._live.pop(task.token, None) is task:
            self._note_not_run(task, M_DROPPED)
            return True
        return False

    # ---- observability -------------------------------------------------------------

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

    def _drop_claimed(self, task: Task, *, count: bool = True) -> None:
        """A task this thread claimed will never run: DROPPED, counted once
        (``count=False`` for a post refused with an exception: its poster was
        told, so it is not a drop)."""
        self._note_not_run(task, M_DROPPED)
        task._finish(DROPPED)
        if count:
            with self._stats_lock:
                self._dropped += 1
        if self._on_rejected is not None and task.ready_ns != _INTERNAL:
            reason = _rejections.SHUTDOWN if count else _rejections.CLOSED
            _rejections.report(self._on_rejected, task, reason)

    def _refused(
        self, fn: Any, args: tuple[Any, ...], traits: TaskTraits, name: str | None, call: str
    ) -> RunnerClosedError:
        """The error for a post after shutdown, reported to ``on_rejected`` first."""
        if self._on_rejected is not None:
            _rejections.report_refused(self._on_rejected, fn, args, traits, name, self)
        return RunnerClosedError(f"{self._name}: {call} after shutdown")

    def _note_not_run(self, task: Task, outcome: str) -> None:
        """Report a task that ended without running (cancelled, dropped, rejected)."""
        metrics = self._metrics
        if metrics is None or task.ready_ns == _INTERNAL:
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
            counter = self._post_counters.setdefault(key, _PostCounter())
        return counter.next

    def _thread_times(self) -> _TaskTimes | None:
        """The calling thread's timing buffer (None without metrics, or on a
        thread that is not one of the runtime's: a caller_runs poster)."""
        try:
            acc: _TaskTimes = self._acc_local.acc
        except AttributeError:
            return None
        return acc

    def _adopt_thread(self) -> _TaskTimes | None:
        """Give the calling runtime thread (a worker, a runner's thread) a
        timing buffer; None without metrics.  Pair with :meth:`_release_thread`."""
        if self._metrics is None:
            return None
        acc = _TaskTimes()
        with self._flush_lock:
            self._accs.append(acc)
        self._acc_local.acc = acc
        return acc

    def _release_thread(self, acc: _TaskTimes | None) -> None:
        """The thread of ``acc`` is ending: push its buffer and forget it."""
        if acc is None:
            return
        with self._flush_lock:
            self._drain_locked(acc)
            with contextlib.suppress(ValueError):
                self._accs.remove(acc)
        with contextlib.suppress(AttributeError):
            del self._acc_local.acc

    def _flush_times(self, acc: _TaskTimes) -> None:
        """Push one thread's full buffer (called by that thread)."""
        with self._flush_lock:
            self._drain_locked(acc)

    def _drain_locked(self, acc: _TaskTimes) -> None:
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
        :class:`~taskrunner.metrics.MetricsSource` hook); any thread may call it."""
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
        """The pool's levels now (the :class:`~taskrunner.metrics.MetricsSource` hook)."""
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

    def _run_claimed(self, task: Task) -> None:
        """Run a task the caller claimed, on the calling thread: state, errors, counters.

        During shutdown's dropping phase a task that is not BLOCK_SHUTDOWN is
        dropped instead of run."""
        if self._dropping and task.traits.shutdown_behavior is not _BLOCK:
            self._drop_claimed(task)
            return
        if not self._plain:
            self._run_claimed_observed(task)
            return
        task.state = RUNNING
        try:
            task.ctx.run(task.fn, *task.args)  # type: ignore[arg-type]
        except BaseException as exc:
            task._name = task.name  # keep the callable's name for the report
            task._finish(FAILED)
            with self._stats_lock:
                self._failed += 1
            self._report_error(exc, task)
        else:
            task._finish(SUCCEEDED)
            with self._stats_lock:
                self._completed += 1

    def _run_claimed_observed(self, task: Task) -> None:
        """:meth:`_run_claimed` with metrics or a tracer: timed, reported, wrapped."""
        tracer = self._tracer
        task.state = RUNNING
        start = _now_ns()
        try:
            if tracer is None:
                task.ctx.run(task.fn, *task.args)  # type: ignore[arg-type]
            else:
                task.ctx.run(tracer.run_task, task, task.fn, task.args)  # type: ignore[arg-type]
        except BaseException as exc:
            end = _now_ns()
            task._name = task.name  # keep the callable's name for the report
            self._report_ran(task, M_FAILED, start, end)  # counted before it is seen done
            task._finish(FAILED)
            with self._stats_lock:
                self._failed += 1
            self._report_error(exc, task)
        else:
            end = _now_ns()
            acc = self._thread_times()
            if acc is None:  # not one of the runtime's threads: report at once
                self._report_ran(task, M_SUCCEEDED, start, end)
            else:
                traits = task.traits
                buf = acc.buf(task.runner.name, int(traits.priority), traits.category)
                buf.append(start - task.ready_ns)
                buf.append(end - start)
                if len(buf) >= 2 * _TIMES_LIMIT:
                    self._flush_times(acc)
            task._finish(SUCCEEDED)
            with self._stats_lock:
                self._completed += 1

    def _add_child(self, runner: TaskRunner) -> None:
        """Register a runner built on this pool; pool shutdown shuts it down first."""
        with self._lifecycle:
            if self._closed:
                raise RunnerClosedError(f"{self._name}: cannot create a runner on a closed pool")
            if len(self._children) >= self._children_prune_at:
                self._children = {k: r for k, r in self._children.items() if r() is not None}
                self._children_prune_at = max(64, 2 * len(self._children))
            self._children[id(runner)] = weakref.ref(runner)

    def _enqueue(self, task: Task) -> None:
        """Push a claimed-for-running task's token to its group's ready queue."""
        if task.runner is not self:
            task.runner._accept_fired(task)  # type: ignore[attr-defined]
            return
        self._push_ready(task)

    def _push_ready(self, task: Task) -> None:
        """Push a task of this pool's own queues (through its category gate)."""
        traits = task.traits
        if traits.category is not None and self._gates:
            gate = self._gates.get(traits.category)
            if gate is not None and gate.admit(task):
                return  # held by the gate until a slot frees
        if traits.may_block:
            group = self._blocking
            status = _push(group.h, task.token, traits.priority)
            if status == OK and self._started:
                group.maybe_grow()
        else:
            status = _push(self._cpu.h, task.token, traits.priority)
        if status != OK:
            self._post_failed(task, status)

    def _post_failed(self, task: Task, status: int) -> None:
        """A post's push was refused.  If the poster still holds the claim the
        post is refused (RunnerClosedError, nothing counted); if shutdown's
        dropping step claimed the task between its registration and the push,
        shutdown counted it as dropped, so the post returns normally and its
        handle says DROPPED: what the caller holds agrees with the report."""
        if self._live.pop(task.token, None) is task:
            self._drop_claimed(task, count=False)
        elif status == CLOSED:
            return
        if status == CLOSED:
            raise RunnerClosedError(f"{self._name}: post_task after shutdown")
        check(status, f"{self._name}: post_task")

    def post_delayed_task(
        self,
        fn: Callable[[*Ts], Any],
        delay: float,
        /,
        *args: *Ts,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
    ) -> Task:
        """Queue ``fn(*args)`` to run ``delay`` seconds from now (per the pool's
        clock), never earlier: the delay is rounded to the nearest nanosecond,
        and 0 means at once (as :meth:`post_task`)."""
        # The common case first (a plain positive finite float or int): one
        # chained comparison also rejects NaN, negatives and infinity, which
        # _delay_ns then reports with the right error.
        if (type(delay) is float or type(delay) is int) and 0 < delay < _MAX_DELAY:
            delay_ns = round(delay * 1_000_000_000)
        else:
            delay_ns = _delay_ns(delay)
        if delay_ns == 0 or self._metrics is not None:
            return self._post_delayed_ns(fn, delay_ns, *args, traits=traits, name=name)
        # The hot path, inlined: _register + _schedule_delayed without metrics.
        if self._closed:
            raise self._refused(fn, args, traits, name, "post_delayed_task")
        if not callable(fn):
            raise TypeError(f"task must be callable, not {type(fn).__name__}")
        if traits is not DEFAULT_TRAITS and type(traits) is not TaskTraits:
            raise TypeError(f"traits must be TaskTraits, not {type(traits).__name__}")
        deadline = self._now() + delay_ns
        if deadline > _INT64_MAX:
            raise _beyond_the_clock(delay_ns)
        token = _next_token()
        task = Task(token, fn, args, copy_context(), traits, name, self)
        task.delayed = True
        self._live[token] = task
        status = _wheel_insert(self._wheel, token, deadline)
        if status != OK:
            self._post_failed(task, status)
        return task

    def _post_delayed_ns(
        self,
        fn: Callable[..., Any],
        delay_ns: int,
        /,
        *args: Any,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
    ) -> Task:
        """:meth:`post_delayed_task` with the delay already in integer ns (see
        :meth:`TaskRunner._post_delayed_ns`)."""
        if delay_ns <= 0:
            return self.post_task(fn, *args, traits=traits, name=name)
        if self._closed:
            raise self._refused(fn, args, traits, name, "post_delayed_task")
        deadline = self._deadline_ns(delay_ns)
        task = self._register(fn, args, traits, name, self)
        self._schedule_delayed(task, deadline)
        return task

    def _deadline_ns(self, delay_ns: int) -> int:
        """The clock time ``delay_ns`` from now; ValueError past the int64 clock."""
        if delay_ns >= _MAX_DELAY * 1_000_000_000:
            raise ValueError(
                f"delay must be less than {_MAX_DELAY:.0f} seconds, got {delay_ns / 1e9} s"
            )
        deadline = self._clock.now_ns() + delay_ns
        if deadline > _INT64_MAX:
            raise _beyond_the_clock(delay_ns)
        return deadline

    def _schedule_delayed(self, task: Task, deadline_ns: int) -> None:
        """Put a registered task in the wheel (at ``deadline_ns``, from
        :meth:`_deadline_ns`); it reaches its runner when due."""
        task.delayed = True
        status = self._delays.add(task.token, deadline_ns)
        if status != OK:
            self._post_failed(task, status)

    def _fire_delayed(self, tokens: list[int], deadlines: list[int], now_ns: int) -> None:
        """Timer thread: due tokens move to their ready queues, in deadline order."""
        live_get = self._live.get
        metrics = self._metrics
        ready = 0
        if metrics is not None:
            # Before the tasks are queued, so the lateness is recorded by the
            # time any of them can have run.
            try:
                metrics.timers_fired(self._name, [max(0, now_ns - d) for d in deadlines])
            except Exception:
                self._metrics_failed()
            ready = _now_ns()
        for token in tokens:
            task = live_get(token)
            if task is None:
                continue  # cancelled while firing
            task.delayed = False
            task.ready_ns = ready
            with contextlib.suppress(RunnerClosedError):
                self._enqueue(task)  # shutting down: _post_failed dropped it

    # ---- cancellation -------------------------------------------------------------

    def _cancel_task(self, task: Task) -> bool:
        if self._live.pop(task.token, None) is not task:
            return False  # already started, finished, or cancelled
        # Free its place in C (best effort: a token found later is skipped,
        # since the claim above is what decides).
        if not (task.delayed and _wheel_cancel(self._wheel, task.token) == OK):
            group = self._blocking if task.traits.may_block else self._cpu
            _remove(group.h, task.token)
        if task.traits.category is not None and self._gates:
            self._release_gate(task)
        if self._metrics is not None:
            self._note_not_run(task, M_CANCELLED)
        task._finish(CANCELLED)
        with self._stats_lock:
            self._cancelled += 1
        return True

    # ---- the worker loop ------------------------------------------------------------

    def _worker_main(self, group: _Group, worker: _Worker) -> None:
        _set_current(self)
        _runtime.pool = self  # shutdown() from this thread is "from inside"
        h = group.h
        size = self._batch_size if group is self._cpu else 1  # blocking tasks: never batch
        buf = ffi.new("uint64_t[]", size)
        count = ffi.new("size_t *")
        prio = ffi.new("int32_t *")
        epochs = group.epochs
        watch = self._batch_watch
        live_get = self._live.get
        live_pop = self._live.pop
        capped = group.best_effort_capped
        idle_timeout = group.idle_timeout_ns
        done = done_low = 0
        completed = failed = dropped = 0
        # Observability.  With neither metrics nor a tracer (``plain``) the loop
        # tests one local per task and nothing else.  Otherwise each task is
        # timed; a success's timings go to this thread's buffer ``acc`` (no
        # call; pushed in bulk), anything else is reported at once.
        plain = self._plain
        tracer = self._tracer
        acc = self._adopt_thread()
        times: list[int] = []  # acc's buffer for this batch's (runner, priority)
        put = times.append
        task: Task | None = None
        try:
            while True:
                # Hold no finished task while waiting: its ``runner`` (a run loop's
                # runner) and context would stay alive as long as this worker idles.
                task = None
                status = _pop_wait(h, buf, size, count, prio, done, done_low, idle_timeout)
                done = done_low = 0
                if status != OK:
                    if status == TIMEOUT:
                        if group.retire(worker):
                            break
                        continue
                    if status == CLOSED:
                        break
                    check(status, "worker pop")
                tokens = _unpack(buf, count[0])
                priority = prio[0]
                held = len(tokens) > 1
                if held:  # visible to the batch watch while a task of it runs
                    worker.batch_priority = priority
                    worker.batch = tokens
                    if not watch.armed:
                        watch.arm()
                level = (
                    priority if 0 <= priority < _LEVELS else (0 if priority < 0 else _LEVELS - 1)
                )
                epoch = epochs[level]
                hold_until = _now_ns() + _HOLD_NS
                if acc is not None:
                    times = acc.buf(self._name, priority, None)
                    put = times.append
                for token in tokens:
                    if done and (epochs[level] != epoch or _now_ns() > hold_until):
                        # Something more urgent arrived, or this batch has held its
                        # tasks back long enough: give the rest back to the queue.
                        status = EXISTS
                        rest = tokens[done:]
                        with worker.batch_lock:
                            if worker.batch is tokens:
                                worker.batch = None
                                status = _unpop(h, rest, len(rest), priority)
                        if status == OK:
                            break  # unpop took the rest out of flight
                        if status != EXISTS:
                            check(status, "unpop")
                        # The batch watch re-queued this batch (or one of its tokens
                        # is queued again already): make sure the rest is queued and
                        # leave it there, counted as done here (it was popped;
                        # whoever claims each task first runs it).
                        if _requeued(h, tokens, done, priority, live_get):
                            done = len(tokens)
                            break
                        epoch, hold_until = epochs[level], _FOREVER  # closed: run it here
                    done += 1
                    task = live_get(token)
                    if task is None:
                        continue  # cancelled
                    worker.current = task  # before the claim: see flush()
                    if live_pop(token, None) is None:
                        worker.current = None
                        continue  # cancelled between get and pop
                    if self._dropping and task.traits.shutdown_behavior is not _BLOCK:
                        self._note_not_run(task, M_DROPPED)
                        task._finish(DROPPED)
                        dropped += 1
                        if self._on_rejected is not None and task.ready_ns != _INTERNAL:
                            _rejections.report(self._on_rejected, task, _rejections.SHUTDOWN)
                    elif plain:
                        task.state = RUNNING
                        try:
                            task.ctx.run(task.fn, *task.args)  # type: ignore[arg-type]
                        except BaseException as exc:
                            task._name = task.name  # keep the callable's name for the report
                            task._finish(FAILED)
                            failed += 1
                            self._report_error(exc, task)
                        else:
                            # task._finish(SUCCEEDED), inlined: this is the hot path.
                            task.state = SUCCEEDED
                            task.fn = None
                            task.args = ()
                            if task._done_event is not None:
                                task._done_event.set()
                            completed += 1
                    else:
                        ready = task.ready_ns  # _INTERNAL: a run loop, not ours to report
                        task.state = RUNNING
                        start = _now_ns()
                        try:
                            if tracer is None or ready == _INTERNAL:
                                task.ctx.run(task.fn, *task.args)  # type: ignore[arg-type]
                            else:
                                task.ctx.run(tracer.run_task, task, task.fn, task.args)  # type: ignore[arg-type]
                        except BaseException as exc:
                            end = _now_ns()
                            task._name = task.name  # keep the callable's name for the report
                            if ready != _INTERNAL:
                                self._report_ran(task, M_FAILED, start, end)
                            task._finish(FAILED)
                            failed += 1
                            self._report_error(exc, task)
                        else:
                            end = _now_ns()
                            # Recorded before the task is seen done (state, event).
                            if acc is not None and ready != _INTERNAL:
                                category = task.traits.category
                                if category is None:
                                    put(start - ready)
                                    put(end - start)
                                else:
                                    self._time_categorised(
                                        acc, priority, category, start - ready, end - start
                                    )
                            task.state = SUCCEEDED
                            task.fn = None
                            task.args = ()
                            if task._done_event is not None:
                                task._done_event.set()
                            completed += 1
                    worker.current = None
                    if task.traits.category is not None and self._gates:
                        self._release_gate(task)
                if held:
                    worker.batch = None
                if capped and priority <= TaskPriority.BEST_EFFORT:
                    done_low = done
                if completed or failed or dropped:
                    with self._stats_lock:
                        self._completed += completed
                        self._failed += failed
                        self._dropped += dropped
                    completed = failed = dropped = 0
                if acc is not None and len(times) >= 2 * _TIMES_LIMIT:
                    self._flush_times(acc)
            if done:
                lib.tr_heap_complete(h, done, done_low)
        finally:
            # Push this thread's timings before it ends (a CONTINUE_ON_SHUTDOWN
            # task may finish after the pool's own final flush).
            self._release_thread(acc)
            _set_current(None)

    def _time_categorised(
        self, acc: _TaskTimes, priority: int, category: str, wait_ns: int, run_ns: int
    ) -> None:
        """Buffer the timings of a pool task with a category (worker thread)."""
        buf = acc.buf(self._name, priority, category)
        buf.append(wait_ns)
        buf.append(run_ns)
        if len(buf) >= 2 * _TIMES_LIMIT:
            self._flush_times(acc)

    def _release_gate(self, task: Task) -> None:
        """A claimed task of a capped category ended (ran, dropped or cancelled)."""
        gate = self._gates.get(task.traits.category)  # type: ignore[arg-type]
        if gate is not None and not gate.forget(task):
            gate.release(task.token)

    def _report_error_from_callback(self, task: Task) -> None:
        log.exception(
            "a callback failed for task %s",
            task.name,
            extra={"task_name": task.name, "runner": task.runner.name},
        )

    def _report_error(self, exc: BaseException, task: Task) -> None:
        """Hand a task's exception to the error handler (default: the log)."""
        handler = self._error_handler
        try:
            if handler is not None:
                handler(exc, task)
            else:
                log.error(
                    "task %s raised %s",
                    task.name,
                    type(exc).__name__,
                    exc_info=(type(exc), exc, exc.__traceback__),
                    extra={
                        "task_name": task.name,
                        "runner": task.runner.name,
                        "runner_metadata": task.runner.metadata,
                    },
                )
        except BaseException:
            log.exception(
                "error handler failed for task %s",
                task.name,
                extra={"task_name": task.name, "runner": task.runner.name},
            )

    # ---- waiting ---------------------------------------------------------------------

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued or running in either group (delayed
        tasks not yet due do not count).  False if ``timeout`` ran out."""
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

    # ---- shutdown ----------------------------------------------------------------------

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
        timeout = _shutdown_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        inside = getattr(_runtime, "pool", None) is self
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
                drained = self.wait_idle(_left(deadline))
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
        self._batch_watch.close(timeout=_left(end))  # it exits at once; never waits for a task
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
        worker = _Worker()

        def drain() -> None:
            for group in (self._cpu, self._blocking):
                self._worker_main(group, worker)

        thread = threading.Thread(target=drain, name=f"{self._name}-drain", daemon=True)
        thread.start()
        thread.join(_left(end))
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
                    left = _left(end)
                    if left is not None and left <= 0:
                        overdue += 1
                        break
                    thread.join(0.05 if left is None else min(0.05, left))
        return continuing, overdue

    # ---- introspection ------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters: queued per priority, running, delayed, completed, failed, ..."""
        counts = ffi.new("size_t[]", _LEVELS)
        queued = {p.name: 0 for p in TaskPriority}
        running = 0
        for group in (self._cpu, self._blocking):
            lib.tr_heap_level_counts(group.h, counts)
            for p in TaskPriority:
                queued[p.name] += int(counts[int(p)])
            with group.lock:
                running += sum(1 for w in group.workers if w.current is not None)
        with self._stats_lock:
            completed, failed = self._completed, self._failed
            cancelled, dropped = self._cancelled, self._dropped
        return {
            "name": self._name,
            "queued": queued,
            "queued_total": sum(queued.values()),
            "running": running,
            "delayed_pending": len(self._delays),
            "completed": completed,
            "failed": failed,
            "cancelled": cancelled,
            "dropped": dropped,
            "rejected": 0,
            "workers": len(self._cpu.workers),
            "blocking_workers": len(self._blocking.workers),
            "closed": self._closed,
            "metadata": self.metadata,
            **self._metrics_stats(),
        }

    def _metrics_stats(self) -> dict[str, Any]:
        """With an :class:`InProcessMetrics`: ``{"metrics": its summary of this pool}``."""
        metrics = self._metrics
        if isinstance(metrics, InProcessMetrics):
            return {"metrics": metrics.summary(self._name)}
        return {}

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self._started else "not started")
        return f"<ThreadPool {self._name!r} {state} workers={self._cpu.minimum}>"


def _requeued(
    h: Any, tokens: list[int], done: int, priority: int, live_get: Callable[[int], Any]
) -> bool:
    """After the batch watch re-queued a worker's batch: make sure each pending
    token of ``tokens[done:]`` is queued (pushed now, or there already).  False
    if the queue is closed, and the worker must then run the rest itself."""
    for token in tokens[done:]:
        if live_get(token) is not None:
            status = _push(h, token, priority)
            if status == CLOSED:
                return False
            if status != EXISTS:
                check(status, "re-queue")
    return True


def children_of(pool: ThreadPool) -> list[TaskRunner]:
    """The live runners built on ``pool``."""
    with pool._lifecycle:
        refs = list(pool._children.values())
    return [r for r in (ref() for ref in refs) if r is not None]


class _CategoryGate:
    """Caps how many tasks of one category run at once.

    ``lock`` guards ``holders`` (the tokens holding a slot) and ``waiting``;
    tasks over the cap wait in ``waiting`` (FIFO) and are pushed to the ready
    queue as slots free.  A slot is released only by the token holding it, so a
    cancel racing the timer's hand-over can never free a slot twice.
    """

    def __init__(self, pool: ThreadPool, category: str, limit: int) -> None:
        from collections import deque

        self.pool = pool
        self.category = category
        self.limit = limit
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        self.holders: set[int] = set()
        self.waiting: deque[Task] = deque()
        self.released = False

    @property
    def running(self) -> int:
        return len(self.holders)

    def admit(self, task: Task) -> bool:
        """True if the gate keeps the task for later; False: push it now."""
        with self.lock:
            if self.released or len(self.holders) < self.limit:
                self.holders.add(task.token)
                return False
            self.waiting.append(task)
            return True

    def release(self, token: int) -> None:
        """The task holding a slot ended: pass the slot to the next waiting one."""
        with self.lock:
            if token not in self.holders:
                return
            self.holders.discard(token)
            nxt = self.waiting.popleft() if self.waiting else None
            if nxt is not None:
                self.holders.add(nxt.token)
            elif not self.holders:
                self.idle.notify_all()
        if nxt is not None:
            group = self.pool._blocking if nxt.traits.may_block else self.pool._cpu
            status = _push(group.h, nxt.token, nxt.traits.priority)
            if status == OK and nxt.traits.may_block:
                group.maybe_grow()
            elif status != OK and self.pool._live.pop(nxt.token, None) is nxt:
                self.release(nxt.token)  # it never ran: its slot passes on
                self.pool._drop_claimed(nxt)

    def forget(self, task: Task) -> bool:
        """Take a cancelled task out of ``waiting``; False if it held a slot instead."""
        with self.lock:
            try:
                self.waiting.remove(task)
            except ValueError:
                return False
            return True

    def release_all(self) -> None:
        """At shutdown: let everything waiting reach the queue, which decides."""
        with self.lock:
            self.released = True
            waiting = list(self.waiting)
            self.waiting.clear()
            self.holders.update(t.token for t in waiting)
        for task in waiting:
            group = self.pool._blocking if task.traits.may_block else self.pool._cpu
            if (
                _push(group.h, task.token, task.traits.priority) != OK
                and self.pool._live.pop(task.token, None) is task
            ):
                self.release(task.token)
                self.pool._drop_claimed(task)

    def wait_empty(self, timeout: float | None) -> bool:
        with self.lock:
            return self.idle.wait_for(lambda: not self.waiting and not self.holders, timeout)


def _check_int(what: str, value: object, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{what} must be <= {maximum}, got {value}")


def _check_seconds(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    if math.isnan(value) or value < 0:
        raise ValueError(f"{what} must be >= 0, got {value}")


def _shutdown_timeout(timeout: object) -> float | None:
    """A shutdown's ``timeout``: seconds >= 0, or None (also for infinity) to wait
    for as long as it takes."""
    if timeout is None:
        return None
    _check_seconds("timeout", timeout)
    return None if math.isinf(timeout) else float(timeout)  # type: ignore[arg-type]


def _left(end: float | None) -> float | None:
    """Seconds from now until ``end`` (a ``time.monotonic()``), at least 0; None for None."""
    return None if end is None else max(0.0, end - time.monotonic())


def _beyond_the_clock(delay_ns: int) -> ValueError:
    return ValueError(
        f"a delay of {delay_ns / 1e9} s from now is past the end of the clock's range "
        "(int64 nanoseconds, about 292 years)"
    )


def _seconds_ns(what: str, value: object) -> int:
    """A finite duration >= 0 in seconds as integer ns, rounded to the nearest."""
    _check_seconds(what, value)
    ns = value * 1_000_000_000  # type: ignore[operator]
    if not ns < _INT64_MAX:  # also infinity
        raise ValueError(f"{what} is too long: {value} s")
    return round(ns)


def _delay_ns(delay: object) -> int:
    """A delay in seconds as ns, rounded to the nearest; 0 for "at once".
    TypeError/ValueError if bad.

    This is the one place (with the inlined copy in ``post_delayed_task``)
    where a delay becomes nanoseconds: rounding, not truncation, so that a
    decimal delay such as 1.001 s is 1_001_000_000 ns, not one less."""
    if isinstance(delay, bool) or not isinstance(delay, (int, float)):
        raise TypeError(f"delay must be a number of seconds, not {type(delay).__name__}")
    if delay != delay:
        raise ValueError("delay must not be NaN")
    if delay < 0:
        raise ValueError(f"delay must be >= 0, got {delay}")
    if math.isinf(delay):
        raise ValueError("delay must be finite")
    if delay >= _MAX_DELAY:
        raise ValueError(f"delay must be less than {_MAX_DELAY:.0f} seconds, got {delay}")
    return round(delay * 1_000_000_000)


__all__ = ["MAX_WORKERS", "SHUTDOWN_GRACE", "ShutdownReport", "ThreadPool"]
