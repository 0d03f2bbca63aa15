"""``PoolBackedRunner``: what every runner built on a :class:`ThreadPool` shares.

The pool owns such a runner's tasks (their claim table and, for delayed
tasks, its timing wheel); the runner decides where a task goes once it is
ready.  Subclasses set ``_pool``, ``_name`` and ``_traits`` (their default
traits), call ``_attach()`` once those are set, and implement ``post_task``,
``_accept_fired`` and ``metrics_gauges``.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable
from typing import Any, TypeVarTuple

from taskrunner.errors import RunnerClosedError
from taskrunner.runtime.clock import Clock
from taskrunner.runtime.metrics import RunnerGauges
from taskrunner.runtime.pool import ThreadPool
from taskrunner.runtime.pool.checks import delay_in_ns
from taskrunner.runtime.runner import TaskRunner
from taskrunner.runtime.task import Task
from taskrunner.runtime.traits import DEFAULT_TRAITS, TaskTraits

Ts = TypeVarTuple("Ts")  # the positional arguments of a posted callable


class PoolBackedRunner(TaskRunner):
    """A runner whose tasks a pool owns.  Thread-safe as its subclasses are."""

    _pool: ThreadPool
    _name: str
    _traits: TaskTraits
    _lock: threading.Lock  # guards _closed and each subclass's queue
    _closed: bool

    def post_task(
        self,
        fn: Callable[[*Ts], Any],
        /,
        *args: *Ts,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
    ) -> Task:
        """Queue ``fn(*args)`` behind this runner's earlier tasks (on its own thread
        or loop, for the runners that have one).  RunnerClosedError after shutdown."""
        if self._closed:
            raise RunnerClosedError(f"{self._name}: post_task after shutdown")
        return self._post_queued(fn, args, traits, name)

    def _pool_closing(self) -> None:
        """The pool started shutting down: refuse new tasks (queued ones drain)."""
        with self._lock:
            self._closed = True
        self._signal_shutdown()

    def _renamed(self) -> None:
        """Re-register as a metrics gauge source under the new name."""
        metrics = self._pool.metrics
        if metrics is not None and not self.is_closed:
            try:
                metrics.remove_source(self)
                metrics.add_source(self._name, self)
            except Exception:
                self._pool._metrics_failed()

    @property
    def clock(self) -> Clock:
        return self._pool.clock

    @property
    def pool(self) -> ThreadPool:
        """The pool this runner's tasks run on (and that owns them)."""
        return self._pool

    @abc.abstractmethod
    def metrics_gauges(self) -> RunnerGauges:
        """This runner's levels now, for the pool's metrics (a MetricsSource)."""

    # ---- registration with the pool (and its metrics, as a MetricsSource) ----

    def _attach(self) -> None:
        """Register with the pool (its shutdown reaches this runner) and, if the
        pool has metrics, as a gauge source.  Call once ``_pool`` and ``_name``
        are set."""
        self._pool._add_child(self)
        metrics = self._pool.metrics
        if metrics is not None:
            metrics.add_source(self._name, self)

    def _forget_source(self) -> None:
        """Stop being a gauge source (at shutdown)."""
        metrics = self._pool.metrics
        if metrics is not None:
            try:
                metrics.remove_source(self)
            except Exception:
                self._pool._metrics_failed()

    def flush_metrics(self) -> None:
        """Push buffered metrics events (this runner's are buffered by its pool)."""
        self._pool.flush_metrics()

    def _traits_for(self, traits: TaskTraits) -> TaskTraits:
        """The traits a task gets: the ones given at post, else the runner's."""
        return self._traits if traits is DEFAULT_TRAITS else traits

    def _post_queued(
        self, fn: Callable[..., Any], args: tuple[Any, ...], traits: TaskTraits, name: str | None
    ) -> Task:
        """Register ``fn(*args)`` with the pool and hand it to this runner's own
        queue (``_accept``, which the runner provides).  If ``_accept`` raises,
        the post is refused and the task forgotten, unless the pool's shutdown
        claimed it meanwhile (and counted it as dropped): then the handle,
        DROPPED, is returned, so what the caller holds agrees with the report."""
        task = self._pool._register(fn, args, self._traits_for(traits), name, self)
        try:
            self._accept(task)  # type: ignore[attr-defined]
        except BaseException:
            if self._pool._unregister(task):
                raise
        return task

    def post_delayed_task(
        self,
        fn: Callable[[*Ts], Any],
        delay: float,
        /,
        *args: *Ts,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
    ) -> Task:
        """Queue ``fn(*args)`` here once ``delay`` seconds have passed, never
        earlier (the delay is rounded to the nearest nanosecond; 0 means at
        once, as :meth:`post_task`).

        The task waits in the pool's timing wheel (on the pool's clock) and
        reaches this runner when due, through ``_accept_fired``."""
        return self._post_delayed_ns(fn, delay_in_ns(delay), *args, traits=traits, name=name)

    def _post_delayed_ns(
        self,
        fn: Callable[..., Any],
        delay_ns: int,
        /,
        *args: Any,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
    ) -> Task:
        """:meth:`post_delayed_task` with the delay already in integer ns."""
        if delay_ns <= 0:
            return self.post_task(fn, *args, traits=traits, name=name)
        if self.is_closed:
            raise RunnerClosedError(f"{self._name}: post_delayed_task after shutdown")
        pool = self._pool
        deadline = pool._deadline_ns(delay_ns)
        task = pool._register(fn, args, self._traits_for(traits), name, self)
        pool._schedule_delayed(task, deadline)
        return task
