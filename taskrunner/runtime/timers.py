"""Timers in the spirit of Chromium's ``base/timer``: one-shot, repeating, debounce.

A timer is bound to a runner and posts its callback there as a delayed task,
so the callback runs with the runner's ordering and thread (a timer on a
``SingleThreadTaskRunner`` always fires on that thread) and on the pool's
clock (the mock clock included).  Timers are restartable and stoppable.

Every start takes a new *generation*; a posted firing whose generation is no
longer current does nothing, so a restart or stop that races a firing about
to run is never undone by it.  Thread-safety: every method may be called
from any thread, including from the callback; ``_lock`` guards the
generation, the pending task handle and the running flag.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from taskrunner.runtime.repeating import RepeatingMode, RepeatingTaskHandle, seconds
from taskrunner.runtime.task import TaskState

if TYPE_CHECKING:
    from taskrunner.runtime.runner import TaskRunner
    from taskrunner.runtime.task import Task


def _check_runner(runner: object) -> None:
    from taskrunner.runtime.runner import TaskRunner

    if not isinstance(runner, TaskRunner):
        raise TypeError(f"runner must be a TaskRunner, not {type(runner).__name__}")


class OneShotTimer:
    """Runs a callback once, ``delay`` seconds after ``start``; restart to push it back."""

    def __init__(self, runner: TaskRunner) -> None:
        _check_runner(runner)
        self._runner = runner
        self._lock = threading.Lock()
        self._generation = 0
        self._pending: Task | None = None
        self._fn: Callable[[], Any] | None = None

    def start(self, delay: float, fn: Callable[[], Any]) -> None:
        """(Re)start: ``fn`` runs ``delay`` seconds from now unless stopped or restarted."""
        if not callable(fn):
            raise TypeError(f"callback must be callable, not {type(fn).__name__}")
        delay = seconds("delay", delay, positive=False)
        with self._lock:
            self._generation += 1
            generation = self._generation
            old, self._pending = self._pending, None
            self._fn = fn
        if old is not None:
            old.cancel()
        task = self._runner.post_delayed_task(self._fire, delay, generation)
        with self._lock:
            current = self._generation == generation
            if current and task.state is TaskState.PENDING:
                self._pending = task
        if not current:
            # A stop() or another start() came while we posted: it could not
            # see this task to cancel it, so do it here rather than leave a
            # dead firing in the wheel until its deadline.
            task.cancel()

    def _fire(self, generation: int) -> None:
        with self._lock:
            if generation != self._generation or self._fn is None:
                return  # restarted or stopped meanwhile
            fn, self._fn, self._pending = self._fn, None, None
        fn()

    def stop(self) -> None:
        """Stop: the callback will not run (one already running finishes)."""
        with self._lock:
            self._generation += 1
            self._fn = None
            old, self._pending = self._pending, None
        if old is not None:
            old.cancel()

    def fire_now(self) -> bool:
        """Run a pending callback now on the calling thread; False if none was pending."""
        with self._lock:
            fn = self._fn
            if fn is None:
                return False
            self._generation += 1
            self._fn = None
            old, self._pending = self._pending, None
        if old is not None:
            old.cancel()
        fn()
        return True

    @property
    def is_running(self) -> bool:
        """True while a callback is scheduled."""
        with self._lock:
            return self._fn is not None


class RepeatingTimer:
    """Runs a callback every ``interval`` seconds until stopped; ``reset`` restarts the period."""

    def __init__(self, runner: TaskRunner) -> None:
        _check_runner(runner)
        self._runner = runner
        self._lock = threading.Lock()
        self._handle: RepeatingTaskHandle | None = None
        self._args: tuple[float, Callable[[], Any], RepeatingMode] | None = None

    def start(
        self, interval: float, fn: Callable[[], Any], mode: RepeatingMode = RepeatingMode.FIXED_RATE
    ) -> None:
        """(Re)start: ``fn`` runs every ``interval`` seconds, the first after one interval."""
        interval = seconds("interval", interval, positive=True)
        if not callable(fn):
            raise TypeError(f"callback must be callable, not {type(fn).__name__}")
        handle = self._runner.post_repeating_task(fn, interval, mode=mode)
        with self._lock:
            old, self._handle = self._handle, handle
            self._args = (interval, fn, mode)
        if old is not None:
            old.stop()

    def reset(self) -> None:
        """Restart the period from now (no-op when not running)."""
        with self._lock:
            args = self._args
        if args is not None:
            self.start(*args)

    def stop(self) -> None:
        with self._lock:
            old, self._handle, self._args = self._handle, None, None
        if old is not None:
            old.stop()

    @property
    def is_running(self) -> bool:
        with self._lock:
            return self._handle is not None and not self._handle.is_stopped

    @property
    def runs(self) -> int:
        with self._lock:
            return 0 if self._handle is None else self._handle.runs


class DebounceTimer:
    """Calls ``fn`` once, ``delay`` seconds after the last of a burst of calls.

    Each ``call()`` (or calling the timer) pushes the firing back to ``delay``
    from now; the callback runs once the calls have been quiet for ``delay``.
    """

    def __init__(self, runner: TaskRunner, delay: float, fn: Callable[[], Any]) -> None:
        if not callable(fn):
            raise TypeError(f"callback must be callable, not {type(fn).__name__}")
        self._delay = seconds("delay", delay, positive=False)
        self._fn = fn
        self._timer = OneShotTimer(runner)

    def call(self) -> None:
        """Note an event: (re)arm the timer for ``delay`` from now."""
        self._timer.start(self._delay, self._fn)

    __call__ = call

    def flush(self) -> bool:
        """Fire now if armed; False if nothing was pending."""
        return self._timer.fire_now()

    def cancel(self) -> None:
        self._timer.stop()

    @property
    def is_pending(self) -> bool:
        return self._timer.is_running
