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

Times are kept in integer nanoseconds on the runner's clock: ``interval``
and ``initial_delay`` are converted once, rounded to the nearest nanosecond,
and every due time is computed from them exactly (an interval of 4.1 s is
4_100_000_000 ns on every run, and fixed-rate runs land exactly on their grid).

A run that raises is reported (the runner's error handler sees it) and the
schedule goes on, unless ``stop_on_error=True``.  The schedule stops for good
on ``stop()`` or when the runner shuts down; a stopped schedule releases its
callable and its runner (the handle keeps only its counters).  Posting a
repeating task to a runner that is shut down raises ``RunnerClosedError``, as
every post does.

Thread-safety: ``stop()`` may be called from any thread, including from inside
``fn``.  ``_lock`` guards ``_stopped``, ``_pending``, ``_next_due_ns``, ``_runs``,
``_fn`` and ``_runner`` (the last two become None when the schedule stops).
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

from taskrunner.errors import QueueFullError, RunnerClosedError
from taskrunner.runtime.clock import MAX_DELAY, MONOTONIC, Clock
from taskrunner.runtime.task import TaskState, describe
from taskrunner.runtime.traits import TaskTraits

if TYPE_CHECKING:
    from taskrunner.runtime.runner import TaskRunner
    from taskrunner.runtime.task import Task


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
    """``value`` as finite seconds (> 0 if ``positive``, else >= 0) below
    :data:`~taskrunner.runtime.clock.MAX_DELAY` (the clock's int64 ns
    reach, about 292 years), or a clear error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"{what} must be finite, got {value}")
    if value < 0 or (positive and value == 0):
        raise ValueError(f"{what} must be {'> 0' if positive else '>= 0'}, got {value}")
    if value >= MAX_DELAY:
        raise ValueError(f"{what} must be less than {MAX_DELAY:.0f} seconds, got {value}")
    return float(value)


def nanoseconds(what: str, value: object, *, positive: bool) -> int:
    """``value`` seconds as integer ns, rounded to the nearest (checked as :func:`seconds`)."""
    ns = round(seconds(what, value, positive=positive) * 1_000_000_000)
    if positive and ns < 1:
        raise ValueError(f"{what} must be at least 1 ns, got {value}")
    return ns


class RepeatingTask(RepeatingTaskHandle):
    """The schedule behind a :class:`RepeatingTaskHandle`."""

    def __init__(
        self,
        runner: TaskRunner,
        fn: Callable[[], Any],
        interval_ns: int,
        mode: RepeatingMode,
        stop_on_error: bool,
        traits: TaskTraits,
        name: str | None,
    ) -> None:
        self._runner: TaskRunner | None = runner
        self._fn: Callable[[], Any] | None = fn
        # For logs and repr, once the callable and the runner are released.
        self._label = name or describe(fn)
        self._runner_name = runner.name
        self._interval_ns = interval_ns
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
        interval_ns = nanoseconds("interval", interval, positive=True)
        first_ns = (
            interval_ns
            if initial_delay is None
            else nanoseconds("initial_delay", initial_delay, positive=False)
        )
        mode = RepeatingMode.FIXED_DELAY if mode is None else mode
        if not isinstance(mode, RepeatingMode):
            raise TypeError(f"mode must be a RepeatingMode, not {type(mode).__name__}")
        if runner.is_closed:
            raise RunnerClosedError(f"{runner.name}: post_repeating_task after shutdown")
        self = cls(runner, fn, interval_ns, mode, stop_on_error, traits, name)
        now = self._clock.now_ns()
        due = now + first_ns
        with self._lock:
            self._next_due_ns = due
        self._post(now, due, first=True)
        return self

    def _post(self, now_ns: int, due_ns: int, *, first: bool = False) -> None:
        """Post the next run, due at ``due_ns`` (called without the lock).  The
        first post raises what the runner raises; a later one that finds the
        runner shut down ends the schedule quietly."""
        with self._lock:
            runner = self._runner
        if runner is None:
            return  # stopped meanwhile
        try:
            task = runner._post_delayed_ns(
                self._run, max(0, due_ns - now_ns), traits=self._traits, name=self._name
            )
        except RunnerClosedError:
            with self._lock:
                self._stop_locked()
            if first:
                raise
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
            self._stop_locked()
        log.warning(
            "repeating task %s stopped: %s",
            self._label,
            why,
            extra={"task_name": self._name, "runner": self._runner_name},
        )

    def _stop_locked(self) -> Task | None:
        """End the schedule and let go of the callable and the runner (and so of
        whatever they hold); returns the pending run to cancel.  Lock held."""
        self._stopped = True
        pending, self._pending = self._pending, None
        self._fn = None
        self._runner = None
        return pending

    def _run(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._pending = None
            fn = self._fn
        assert fn is not None  # released only once stopped
        failed = False
        try:
            fn()
        except BaseException:
            failed = True
            raise  # the runner reports it; the finally below reschedules first
        finally:
            del fn
            with self._lock:
                self._runs += 1
                if failed and self._stop_on_error:
                    self._stop_locked()
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
            pending = self._stop_locked()
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
        return f"<RepeatingTask {self._label!r} {self._mode.value} {state}>"
