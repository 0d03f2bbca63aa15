"""``ThreadPool``: the scheduler and its worker threads.

The pool is split by job: this module holds its construction and its post
paths; :mod:`.workers` the worker groups and their loop (the design of the
queues is told there), :mod:`.observe` its metrics, :mod:`.shutdown` its
shutdown, :mod:`.gate` its category limits, :mod:`.checks` the checks of
its arguments.

Lifecycle
---------
A pool starts its workers when it is built, as ``ThreadPoolExecutor`` takes
work as soon as it exists.  ``ThreadPool(..., start=False)`` defers that to
:meth:`ThreadPool.start` (Chromium's deferred start): tasks posted before
then wait in the queues, and nothing runs until ``start()`` is called.
``workers`` and ``max_blocking_workers`` are at most :data:`MAX_WORKERS`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from contextvars import copy_context
from typing import Any, TypeVarTuple

from taskrunner.errors import RunnerClosedError
from taskrunner.native.binding import CLOSED, OK, check, ffi, lib
from taskrunner.runtime import rejections as _rejections
from taskrunner.runtime.clock import MONOTONIC, Clock
from taskrunner.runtime.delays import DelayedTasks
from taskrunner.runtime.metrics import CANCELLED as M_CANCELLED
from taskrunner.runtime.metrics import DROPPED as M_DROPPED
from taskrunner.runtime.metrics import (
    Metrics,
    NoopMetrics,
    TaskTracer,
)
from taskrunner.runtime.pool.batch_post import post_tasks
from taskrunner.runtime.pool.batch_watch import BatchWatch
from taskrunner.runtime.pool.checks import (
    check_category_limits,
    check_int,
    check_seconds,
    seconds_ns,
)
from taskrunner.runtime.pool.delayed import DelayedPosting
from taskrunner.runtime.pool.gate import CategoryGate
from taskrunner.runtime.pool.observe import PoolObservability
from taskrunner.runtime.pool.shutdown import (
    SHUTDOWN_GRACE,
    PoolShutdown,
    ShutdownReport,
)
from taskrunner.runtime.pool.state import INTERNAL, ErrorHandler, next_token
from taskrunner.runtime.pool.workers import HOLD_NS, WorkerGroup, WorkerLoop
from taskrunner.runtime.rejections import PoolRejectionCallback
from taskrunner.runtime.runner import TaskRunner, check_runner_name
from taskrunner.runtime.task import (
    CANCELLED,
    DROPPED,
    Task,
    check_post,
)
from taskrunner.runtime.traits import DEFAULT_TRAITS, TaskPriority, TaskTraits

Ts = TypeVarTuple("Ts")  # the positional arguments of a posted callable

log = logging.getLogger("taskrunner.pool")

_push = lib.tr_heap_push
_remove = lib.tr_heap_remove
_wheel_cancel = lib.tr_wheel_cancel
_wheel_insert = lib.tr_wheel_insert
_LEVELS = lib.TR_HEAP_LEVELS
_now_ns = time.monotonic_ns
_USER_VISIBLE = int(TaskPriority.USER_VISIBLE)
# With lazy wake-ups (see tr_heap.h), a task queued while a worker is busy
# waits at most about this long for an idle worker to notice it.
_LAZY_WAKE_NS = 200_000
#: The most threads a worker group may have (``workers``, ``max_blocking_workers``):
#: far more than a CPU count, few enough that a typo cannot start a million threads.
MAX_WORKERS = 1024
_BATCH_MAX = 4096


class ThreadPool(PoolShutdown, WorkerLoop, DelayedPosting, PoolObservability, TaskRunner):
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
    ``metrics`` (a :class:`~taskrunner.runtime.metrics.Metrics`, e.g.
    :class:`~taskrunner.runtime.metrics.InProcessMetrics`) receives the events of the
    pool and of every runner built on it; the pool is its
    :class:`~taskrunner.runtime.metrics.MetricsSource` (gauges, and
    :meth:`flush_metrics` for the events it buffers).  ``tracer`` (a
    :class:`~taskrunner.runtime.metrics.TaskTracer`, e.g.
    :class:`taskrunner.integrations.otel.OtelTracer`) wraps the run of every task.  With
    neither, the pool makes no call to either.  Metrics hooks must return
    quickly and must not call back into the pool; one that raises is logged
    once and ignored.  ``on_rejected(task, reason)`` hears of every task the
    pool refuses or drops (see :mod:`taskrunner.runtime.rejections`).
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
        name = check_runner_name(name, "pool")
        if workers is None:
            workers = min(MAX_WORKERS, max(2, os.cpu_count() or 2))
        check_int("workers", workers, 1, MAX_WORKERS)
        check_int("max_blocking_workers", max_blocking_workers, 1, MAX_WORKERS)
        check_int("best_effort_limit", best_effort_limit, 0)
        check_int("batch_size", batch_size, 1, _BATCH_MAX)
        limits = check_category_limits(category_limits)
        check_seconds("blocking_idle_timeout", blocking_idle_timeout)
        tick_ns = seconds_ns("tick", tick)
        leeway_ns = seconds_ns("leeway", leeway)
        if tick_ns < 1:
            raise ValueError(f"tick must be at least 1 ns, got {tick}")
        if error_handler is not None and not callable(error_handler):
            raise TypeError("error_handler must be callable")
        if metrics is not None and not isinstance(metrics, Metrics):
            raise TypeError(f"metrics must implement Metrics, not {type(metrics).__name__}")
        if tracer is not None and not isinstance(tracer, TaskTracer):
            raise TypeError(f"tracer must implement TaskTracer, not {type(tracer).__name__}")
        _rejections.check_callback(on_rejected)
        self._on_rejected = on_rejected  # see taskrunner.runtime.rejections
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
        # Buffered metrics (see taskrunner.runtime.metrics: the hot path makes no call).
        # Post counters by (runner, priority, category): lock-free, created
        # with an atomic setdefault, read only by _flush_locked.
        self._post_counters = {}
        self._posted_default = self._post_counter(name, _USER_VISIBLE, None)
        # Guards _accs and serialises the pushes of buffered events (two
        # drains of one buffer must not interleave).  Never held by the hot
        # path; held while the metrics hooks run (they take only their own lock).
        self._flush_lock = threading.Lock()
        self._accs = []  # one per thread that runs our tasks
        self._acc_local = threading.local()  # .acc: the calling thread's TaskTimes
        # The pending tasks by token; see taskrunner.runtime.task for the claim rule.
        self._live: dict[int, Task] = {}
        self._cpu = WorkerGroup(self, "worker", workers, workers, None, best_effort_limit)
        self._cpu_h = self._cpu.h
        if lazy_wake is None:
            # Under a GIL a woken worker cannot run alongside the poster anyway:
            # waking it per task costs a GIL hand-off per task.  Without a GIL,
            # wake workers at once so they really run in parallel.
            is_gil_enabled = getattr(sys, "_is_gil_enabled", None)
            lazy_wake = True if is_gil_enabled is None else bool(is_gil_enabled())
        if lazy_wake:
            check(lib.tr_heap_set_lazy_wake(self._cpu_h, batch_size, _LAZY_WAKE_NS), "lazy wake")
        self._blocking = WorkerGroup(
            self, "blocking", 0, max_blocking_workers, blocking_idle_timeout, best_effort_limit
        )
        cpu_h = self._cpu_h
        self._batch_watch = BatchWatch(
            name,
            cpu_h,
            lambda: list(self._cpu.workers),
            self._live.__contains__,
            HOLD_NS,
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
        self._gates: dict[str, CategoryGate] = {}
        for category, limit in limits.items():
            self._gates[category] = CategoryGate(self, category, limit)
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
        token = next_token()
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
        one C call each; returns the handles in order (see taskrunner.runtime.pool.batch_post)."""
        return post_tasks(self, fn, arg_tuples, traits, name, next_token, _now_ns)

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
        token = next_token()
        task = Task(token, fn, args, copy_context(), traits, name, runner)
        self._live[token] = task
        if self._metrics is not None:
            task.ready_ns = _now_ns()
            self._post_counter(runner.name, traits.priority, traits.category)()
        return task

    def _post_internal(self, fn: Callable[[], Any], traits: TaskTraits, runner: TaskRunner) -> None:
        """Queue one of ``runner``'s internal tasks (its run loop) on this pool.

        It is marked internal (``ready_ns == INTERNAL``) so that it is neither
        counted nor traced: the runner's own tasks report themselves through
        :meth:`_run_claimed`.  RunnerClosedError once the pool is closed.
        """
        if self._closed:
            raise RunnerClosedError(f"{self._name}: post_task after shutdown")
        token = next_token()
        task = Task(token, fn, (), copy_context(), traits, runner.name, runner)
        task.ready_ns = INTERNAL
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

    def _drop_claimed(self, task: Task, *, count: bool = True) -> None:
        """A task this thread claimed will never run: DROPPED, counted once
        (``count=False`` for a post refused with an exception: its poster was
        told, so it is not a drop)."""
        self._note_not_run(task, M_DROPPED)
        task._finish(DROPPED)
        if count:
            with self._stats_lock:
                self._dropped += 1
        if self._on_rejected is not None and task.ready_ns != INTERNAL:
            reason = _rejections.SHUTDOWN if count else _rejections.CLOSED
            _rejections.report(self._on_rejected, task, reason)

    def _refused(
        self, fn: Any, args: tuple[Any, ...], traits: TaskTraits, name: str | None, call: str
    ) -> RunnerClosedError:
        """The error for a post after shutdown, reported to ``on_rejected`` first."""
        if self._on_rejected is not None:
            _rejections.report_refused(self._on_rejected, fn, args, traits, name, self)
        return RunnerClosedError(f"{self._name}: {call} after shutdown")

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

    # ---- waiting ---------------------------------------------------------------------

    # ---- shutdown ----------------------------------------------------------------------

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

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self._started else "not started")
        return f"<ThreadPool {self._name!r} {state} workers={self._cpu.minimum}>"


__all__ = ["MAX_WORKERS", "SHUTDOWN_GRACE", "ShutdownReport", "ThreadPool"]
