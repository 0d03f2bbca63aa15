"""Repeating tasks: fixed delay or fixed rate, with an initial delay, stoppable.

``runner.post_repeating_task(fn, interval, initial_delay=..., mode=...)``
returns a :class:`RepeatingTaskHandle`.  Each run is an ordinary delayed task
on the runner, so it honours the runner's ordering and the pool's clock (the
mock clock included).

* ``FIXED_DELAY``: the next run is due ``interval`` after the previous run ended.
* ``FIXED_RATE``: the n-th run is due at ``start + n * interval`` and never
  drifts.  When runs fall behind, missed runs are not piled up: at most one
  catch-up run happens at once, then the schedule continues at the next
  point of the grid that lies in the future.

A run that raises is reported (the runner's error handler sees it) and the
schedule goes on, unless ``stop_on_error=True``.  The schedule stops for good
on ``stop()`` or when the runner shuts down.

Thread-safety: ``stop()`` may be called from any thread, including from inside
``fn``.  ``_lock`` guards ``_stopped``, ``_pending``, ``_next_due_ns`` and ``_runs``.
The lock is never held while posting the next run: a post may run the task
at once on the posting thread (a full ``SingleThreadTaskRunner`` with
``CALLER_RUNS``), and that run takes the lock.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from taskrunner.clock import MONOTONIC, Clock
from taskrunner.errors import QueueFullError, RunnerClosedError
from taskrunner.task import TaskState
from taskrunner.traits import TaskTraits

if TYPE_CHECKING:
    from taskrunner.runner import TaskRunner
    from taskrunner.task import Task


log = logging.getLogger("taskrunner.repeating")


class RepeatingMode(enum.Enum):
    """How a repeating task's next run is placed."""

    FIXED_DELAY = "fixed_delay"  #: ``interval`` after the previous run ended
    FIXED_RATE = "fixed_rate"  #: on the grid ``start + n * interval``, no drift


class RepeatingTaskHandle:
    """Controls a repeating task.  ``stop()`` is idempotent and thread-safe."""

    def stop(self) -> None:
        raise NotImplementedError

    @property
    def is_stopped(self) -> bool:
        raise NotImplementedError

    @property
    def runs(self) -> int:
        raise NotImplementedError


def seconds(what: str, value: object, *, positive: bool) -> float:
    """``value`` as finite seconds (> 0 if ``positive``, else >= 0), or a clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"{what} must be finite, got {value}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{what} must be {'> 0' if positive else '>= 0'}, got {value}")
    return float(value)


class RepeatingTask(RepeatingTaskHandle):
    """The schedule behind a :class:`RepeatingTaskHandle`."""

    def __init__(
        self,
        runner: TaskRunner,
        fn: Callable[[], Any],
        interval: float,
        mode: RepeatingMode,
        stop_on_error: bool,
        traits: TaskTraits,
        name: str | None,
    ) -> None:
        self._runner = runner
        self._fn = fn
        self._interval_ns = int(interval * 1e9)
        self._mode = mode
        self._stop_on_error = stop_on_error
        self._traits = traits
        self._name = name
        clock: Clock | None = getattr(runner, "clock", None)
        self._clock: Clock = clock if clock is not None else MONOTONIC
        self._lock = threading.Lock()
        self._stopped = False
        self._pending: Task | None = None
        self._runs = 0
        self._next_due_ns = 0

    @classmethod
    def start(
        cls,
        runner: TaskRunner,
        fn: Callable[[], Any],
        interval: float,
        *,
        initial_delay: float | None,
        mode: RepeatingMode | None,
        stop_on_error: bool,
        traits: TaskTraits,
        name: str | None,
    ) -> RepeatingTask:
        if not callable(fn):
            raise TypeError(f"task must be callable, not {type(fn).__name__}")
        interval = seconds("interval", interval, positive=True)
        first = (
            interval
            if initial_delay is None
            else seconds("initial_delay", initial_delay, positive=False)
        )
        mode = RepeatingMode.FIXED_DELAY if mode is None else mode
        if not isinstance(mode, RepeatingMode):
            raise TypeError(f"mode must be a RepeatingMode, not {type(mode).__name__}")
        self = cls(runner, fn, interval, mode, stop_on_error, traits, name)
        now = self._clock.now_ns()
        due = now + int(first * 1e9)
        with self._lock:
            self._next_due_ns = due
        self._post(now, due)
        return self

    def _post(self, now_ns: int, due_ns: int) -> None:
        """Post the next run, due at ``due_ns`` (called without the lock)."""
        delay = max(0, due_ns - now_ns) / 1e9
        try:
            task = self._runner.post_delayed_task(
                self._run, delay, traits=self._traits, name=self._name
            )
        except RunnerClosedError:
            with self._lock:
                self._stopped = True
                self._pending = None
            return
        except QueueFullError:
            self._refused("its runner's queue was full")
            return
        if task.state is TaskState.DROPPED:
            self._refused("its runner's queue policy dropped the next run")
            return
        with self._lock:
            stale = self._stopped
            # Still pending: it is the one stop() must cancel.  Not pending:
            # it already ran (its run posted the next one) or was dropped.
            if not stale and task.state is TaskState.PENDING:
                self._pending = task
        if stale:
            task.cancel()  # stop() came between the post and here

    def _refused(self, why: str) -> None:
        """A bounded runner refused the next run: the schedule ends, visibly."""
        with self._lock:
            self._stopped = True
            self._pending = None
        log.warning(
            "repeating task %s stopped: %s",
            self._name or self._fn,
            why,
            extra={"task_name": self._name, "runner": self._runner.name},
        )

    def _run(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._pending = None
        failed = False
        try:
            self._fn()
        except BaseException:
            failed = True
            raise  # the runner reports it; the finally below reschedules first
        finally:
            with self._lock:
                self._runs += 1
                if failed and self._stop_on_error:
                    self._stopped = True
                upcoming = None if self._stopped else self._next_run_locked()
            if upcoming is not None:
                self._post(*upcoming)

    def _next_run_locked(self) -> tuple[int, int]:
        """``(now, due)`` of the next run; advances the schedule (lock held)."""
        now = self._clock.now_ns()
        interval = self._interval_ns
        if self._mode is RepeatingMode.FIXED_DELAY:
            self._next_due_ns = now + interval
            return now, self._next_due_ns
        due = self._next_due_ns + interval
        if due > now:
            self._next_due_ns = due
            return now, due
        # Behind schedule: one catch-up run now; the run after it is due at the
        # first grid point in the future (the missed ones are skipped).
        first_future = due + ((now - due) // interval + 1) * interval
        self._next_due_ns = first_future - interval
        return now, now

    def stop(self) -> None:
        """Stop the schedule: no run starts after this returns (one already
        running finishes)."""
        with self._lock:
            self._stopped = True
            pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()

    @property
    def is_stopped(self) -> bool:
        with self._lock:
            return self._stopped

    @property
    def runs(self) -> int:
        """How many runs finished (returned or raised)."""
        with self._lock:
            return self._runs

    def __repr__(self) -> str:
        state = "stopped" if self.is_stopped else "active"
        return f"<RepeatingTask {self._name or self._fn!r} {self._mode.value} {state}>"
