"""Delayed tasks of the pool: posted into the C timing wheel, moved to a ready
queue by the timer thread (:mod:`taskrunner.runtime.delays`) when due.

A delay is rounded to the nearest nanosecond and never fires early; 0 means at
once.  Every method may be called from any thread.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from contextvars import copy_context
from typing import Any, TypeVarTuple

from taskrunner.errors import RunnerClosedError
from taskrunner.native.binding import OK, lib
from taskrunner.runtime.pool.checks import (
    INT64_MAX,
    MAX_DELAY,
    beyond_the_clock,
    delay_in_ns,
)
from taskrunner.runtime.pool.state import PoolState, next_token
from taskrunner.runtime.task import (
    Task,
)
from taskrunner.runtime.traits import DEFAULT_TRAITS, TaskTraits

Ts = TypeVarTuple("Ts")  # the positional arguments of a posted callable


_wheel_insert = lib.tr_wheel_insert
_now_ns = time.monotonic_ns


class DelayedPosting(PoolState):
    """``post_delayed_task`` and the timer thread's hand-over of due tasks."""

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
        # delay_in_ns then reports with the right error.
        if (type(delay) is float or type(delay) is int) and 0 < delay < MAX_DELAY:
            delay_ns = round(delay * 1_000_000_000)
        else:
            delay_ns = delay_in_ns(delay)
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
        if deadline > INT64_MAX:
            raise beyond_the_clock(delay_ns)
        token = next_token()
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
        if delay_ns >= MAX_DELAY * 1_000_000_000:
            raise ValueError(
                f"delay must be less than {MAX_DELAY:.0f} seconds, got {delay_ns / 1e9} s"
            )
        deadline = self._clock.now_ns() + delay_ns
        if deadline > INT64_MAX:
            raise beyond_the_clock(delay_ns)
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
