"""Deterministic time for tests: ``MockClock`` and ``TaskEnvironment``.

Chromium tests delayed work with ``TaskEnvironment(MOCK_TIME)``; this is the
same idea for taskrunner.  The environment builds a real :class:`ThreadPool`
(real worker threads, the real C heap and wheel) whose clock is a
:class:`MockClock`.  Nothing happens on a timer: time moves only when the test
says so, and every delayed task due on the way runs at its own mock time, in
deadline order::

    with TaskEnvironment() as env:
        seq = SequencedTaskRunner(env.pool)
        hits = []
        debounce = DebounceTimer(seq, 0.5, lambda: hits.append(env.now()))
        debounce(); env.fast_forward(0.3); debounce()
        env.fast_forward(1.0)
        assert hits == [0.8]

``run_until_idle()`` runs everything that is ready without moving time;
``fast_forward(seconds)`` moves time forward, stopping at each deadline on the
way; ``fast_forward_until_idle()`` moves it as far as needed for nothing to be
pending.  The environment waits for the worker threads by waiting for their
queues to drain, never by sleeping.  With ``raise_task_errors=True`` (the
default) an exception raised inside a task is re-raised from the call that ran
it, with its original traceback.

Time is integer nanoseconds: a number of seconds given here becomes
nanoseconds once, rounded to the nearest (``fast_forward(1.001)`` moves time
by exactly 1_001_000_000 ns), and the clock's range is that of the runtime,
int64 nanoseconds (about 292 years): a move past it is refused with
ValueError and changes nothing.

Thread-safety: ``MockClock.now_ns`` may be read from any thread; the
environment's driving calls (``run_until_idle``, ``fast_forward...``) are meant
for the one test thread.
"""

from __future__ import annotations

import math
import threading
from types import TracebackType
from typing import Any

from taskrunner.runtime.pool import ThreadPool, children_of
from taskrunner.runtime.task import Task

__all__ = ["MockClock", "TaskEnvironment"]

# The last nanosecond of the clock (the C core keeps time in int64 ns).
_MAX_NS = (1 << 63) - 1


def _duration_ns(what: str, seconds: object) -> int:
    """``seconds`` (a finite number >= 0) as integer ns, rounded to the nearest."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, not {type(seconds).__name__}")
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"{what}: time must be a number of seconds >= 0, got {seconds}")
    ns = seconds * 1_000_000_000
    if not ns <= _MAX_NS:  # also infinity
        raise ValueError(f"{what}: {seconds} s is past the clock's range (about 292 years)")
    return round(ns)


def _target_ns(what: str, now_ns: int, seconds: object) -> int:
    """``now_ns`` moved forward by ``seconds``; ValueError past the clock's range."""
    target = now_ns + _duration_ns(what, seconds)
    if target > _MAX_NS:
        raise ValueError(
            f"{what}({seconds}): mock time would pass the end of the clock's range "
            f"(int64 nanoseconds, about 292 years; now {now_ns} ns)"
        )
    return target


class MockClock:
    """A clock that only moves when told.  Time is integer nanoseconds."""

    def __init__(self, start: float = 0.0) -> None:
        # Guards _now_ns against two movers; readers take a plain read.
        self._lock = threading.Lock()
        self._now_ns = _target_ns("MockClock start", 0, start)

    def now_ns(self) -> int:
        return self._now_ns

    def now(self) -> float:
        """Mock time in seconds."""
        return self._now_ns / 1e9

    @property
    def is_real(self) -> bool:
        return False

    def set_ns(self, ns: int) -> None:
        """Move to ``ns`` (ValueError if that would go backwards or past the range)."""
        if isinstance(ns, bool) or not isinstance(ns, int):
            raise TypeError(f"ns must be an int, not {type(ns).__name__}")
        if ns > _MAX_NS:
            raise ValueError(f"{ns} ns is past the end of the clock's range")
        with self._lock:
            if ns < self._now_ns:
                raise ValueError("a MockClock never goes backwards")
            self._now_ns = ns

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds`` without running anything (see TaskEnvironment)."""
        with self._lock:
            self._now_ns = _target_ns("advance", self._now_ns, seconds)


class TaskEnvironment:
    """A thread pool on mock time, and the calls that move time and wait for work.

    ``pool`` is the environment's :class:`ThreadPool`; build runners, timers
    and a JobManager on it.  Use as a context manager: on exit the pool is shut
    down and, with ``raise_task_errors``, a task error not yet raised is.
    """

    def __init__(
        self,
        workers: int = 2,
        *,
        raise_task_errors: bool = True,
        start_time: float = 0.0,
        max_tasks: int = 10_000_000,
        **pool_options: Any,
    ) -> None:
        self.clock = MockClock(start_time)
        self._raise = raise_task_errors
        self._max_tasks = max_tasks
        # Guards _errors (appended by worker threads).
        self._errors_lock = threading.Lock()
        self._errors: list[BaseException] = []
        self.pool = ThreadPool(
            workers,
            clock=self.clock,
            error_handler=self._on_error,
            name="taskenv",
            **pool_options,
        )

    # ---- context manager ---------------------------------------------------------------

    def __enter__(self) -> TaskEnvironment:
        self.pool.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.pool.shutdown(cancel_pending=True)
        if exc_type is None:
            self._raise_errors()

    # ---- time ----------------------------------------------------------------------------

    def now(self) -> float:
        """Mock time in seconds."""
        return self.clock.now()

    def run_until_idle(self) -> None:
        """Run every task that is ready at the current mock time, including
        the ones those tasks post, until nothing is ready.  Time does not move."""
        delays = self.pool._delays
        for _ in range(self._max_tasks):
            before = self._activity()
            fired = delays.fire_due(self.clock.now_ns())
            self._wait_all_idle()
            if fired == 0 and self._activity() == before:
                break
        else:  # pragma: no cover - a runaway task loop
            raise RuntimeError("run_until_idle: tasks keep posting tasks; giving up")
        self._raise_errors()

    def fast_forward(self, seconds: float) -> None:
        """Move mock time forward by ``seconds``, running each delayed task
        due on the way at its own deadline, in deadline order."""
        target = _target_ns("fast_forward", self.clock.now_ns(), seconds)
        self.run_until_idle()
        while True:
            deadline = self.pool._delays.next_deadline_ns()
            if deadline is None or deadline > target:
                break
            self.clock.set_ns(max(deadline, self.clock.now_ns()))
            self.run_until_idle()
        self.clock.set_ns(target)
        self.run_until_idle()

    def fast_forward_until_idle(self) -> None:
        """Move mock time forward until no delayed task is pending (a repeating
        task never lets that happen: stop it first)."""
        self.run_until_idle()
        for _ in range(self._max_tasks):
            deadline = self.pool._delays.next_deadline_ns()
            if deadline is None:
                return
            self.clock.set_ns(max(deadline, self.clock.now_ns()))
            self.run_until_idle()
        raise RuntimeError("fast_forward_until_idle: delayed tasks keep coming")

    def pending_delayed(self) -> int:
        """How many delayed tasks wait for their time."""
        return len(self.pool._delays)

    # ---- internals -------------------------------------------------------------------------

    def _activity(self) -> tuple[int, ...]:
        s = self.pool.stats()
        return (
            s["completed"],
            s["failed"],
            s["cancelled"],
            s["dropped"],
            s["queued_total"],
            len(self.pool._live),
        )

    def _wait_all_idle(self) -> None:
        # Children may post to the pool and the pool to children: repeat until a
        # pass finds everyone idle at once.
        while True:
            busy = not self.pool.wait_idle(0) or any(
                not child.wait_idle(0) for child in children_of(self.pool)
            )
            if not busy:
                return
            self.pool.wait_idle()
            for child in children_of(self.pool):
                child.wait_idle()

    def _on_error(self, exc: BaseException, task: Task) -> None:
        with self._errors_lock:
            self._errors.append(exc)

    def _raise_errors(self) -> None:
        if not self._raise:
            return
        with self._errors_lock:
            if not self._errors:
                return
            first = self._errors.pop(0)
        raise first

    @property
    def task_errors(self) -> list[BaseException]:
        """Errors raised by tasks and not re-raised (with ``raise_task_errors=False``)."""
        with self._errors_lock:
            return list(self._errors)
