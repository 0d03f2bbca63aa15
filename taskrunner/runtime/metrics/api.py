"""The metrics contract: task outcomes, the :class:`Metrics` protocol (events
pushed), :class:`MetricsSource` (levels pulled), :class:`NoopMetrics` and the
:class:`TaskTracer` hook.  See :mod:`taskrunner.runtime.metrics` for the design."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from taskrunner.runtime.task import Task


#: Task outcomes (the ``outcome`` label).  Each posted task ends in exactly one.
SUCCEEDED = "succeeded"  #: ran and returned
FAILED = "failed"  #: ran and raised
CANCELLED = "cancelled"  #: its handle's cancel() won before it started
DROPPED = "dropped"  #: never ran: shutdown, a closed runner, or a refused post
REJECTED = "rejected"  #: never ran: a full queue's policy discarded it
OUTCOMES = (SUCCEEDED, FAILED, CANCELLED, DROPPED, REJECTED)

#: Upper bounds (seconds) for task run time, queue wait and timer lateness:
#: 10 µs to 60 s, 1-2.5-5 steps.
DEFAULT_DURATION_BUCKETS: tuple[float, ...] = (
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
#: Upper bounds (seconds) for one job attempt: 1 ms to 1 h.
DEFAULT_JOB_DURATION_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
#: Upper bounds for the number of attempts a job used before a final state.
DEFAULT_JOB_ATTEMPT_BUCKETS: tuple[float, ...] = (1, 2, 3, 4, 5, 7, 10, 15, 20, 30, 50, 100)


# ---- the gauge readings and their sources ----------------------------------------------


@dataclass(frozen=True, slots=True)
class RunnerGauges:
    """One runner's levels, read when a collector looks (never pushed).

    A pool fills ``queued_by_priority`` (its ready queues, by priority value),
    ``delayed`` and ``workers`` (by group: ``"cpu"``, ``"blocking"``); a
    runner built on a pool fills ``queued`` (tasks waiting in the runner
    itself) and, when its queue is bounded, ``capacity``.
    """

    #: ``"pool"`` or ``"runner"``.
    kind: str
    #: Tasks waiting (all priorities).
    queued: int
    #: Tasks running now.
    running: int
    #: Pools: ready tasks by priority value (``TaskPriority``), 0 included.
    queued_by_priority: Mapping[int, int] = field(default_factory=dict)
    #: Pools: delayed tasks not yet due.
    delayed: int = 0
    #: Bounded runners: the queue's capacity.
    capacity: int | None = None
    #: Pools: live worker threads by group.
    workers: Mapping[str, int] = field(default_factory=dict)


@runtime_checkable
class MetricsSource(Protocol):
    """A pool or runner, as a collector sees it (``Metrics.add_source``).

    Both methods may be called from any thread, at any time, also during and
    after shutdown; neither blocks for long.
    """

    def metrics_gauges(self) -> RunnerGauges:
        """Read the levels now."""
        ...

    def flush_metrics(self) -> None:
        """Push every event still buffered to the metrics now (a collector
        calls it before reading; a push-based sink may call it on a timer)."""
        ...


# ---- the protocol --------------------------------------------------------------------


@runtime_checkable
class Metrics(Protocol):
    """What the scheduler, the runners and the JobManager report.

    ``runner`` is the runner's ``name``; ``priority`` the task's
    ``TaskPriority`` value (an int); ``category`` its ``TaskTraits.category``.
    Task durations are integer nanoseconds of ``time.monotonic_ns`` (real time,
    even under a mock clock); a job attempt's are seconds.  Every method may
    be called from any thread at once and should return quickly; see the module
    docstring for the outcomes and for when buffered events arrive.
    """

    def tasks_posted(self, runner: str, priority: int, category: str | None, count: int) -> None:
        """``count`` more tasks were accepted by ``runner`` (pending, with a handle)."""
        ...

    def tasks_ran(
        self,
        runner: str,
        priority: int,
        category: str | None,
        outcome: str,
        queue_wait_ns: Sequence[int],
        run_ns: Sequence[int],
    ) -> None:
        """``len(run_ns)`` tasks ran and ended with ``outcome`` (``succeeded``
        or ``failed``).  ``queue_wait_ns[i]`` is task i's wait from ready
        (posted, or due for a delayed task) to start; ``run_ns[i]`` its run
        time.  The sequences have the same length and are the callee's to keep
        (or reorder)."""
        ...

    def task_not_run(self, runner: str, priority: int, category: str | None, outcome: str) -> None:
        """A task ended without running: ``cancelled``, ``dropped`` or ``rejected``."""
        ...

    def task_rejected(self, runner: str, priority: int, category: str | None, policy: str) -> None:
        """A full queue applied ``policy`` (a ``QueuePolicy`` value) to a task.
        Unless the policy is ``caller_runs`` the task also ends ``rejected``
        (reported separately through :meth:`task_not_run`)."""
        ...

    def timers_fired(self, runner: str, lateness_ns: Sequence[int]) -> None:
        """Delayed tasks of pool ``runner`` fell due; ``lateness_ns[i]`` is how
        long after its deadline the i-th was handed to its queue (>= 0, by the
        pool's clock).  Called once per batch of due timers."""
        ...

    def add_source(self, runner: str, source: MetricsSource) -> None:
        """Register a pool or runner.  The collector may hold it weakly (the
        in-process collector does), so a source needs no unregistering to be
        garbage-collected."""
        ...

    def remove_source(self, source: MetricsSource) -> None:
        """Forget a source (no error if it is unknown)."""
        ...

    def job_state_changed(self, job_type: str, state: str, attempt: int) -> None:
        """A job of ``job_type`` entered ``state`` (a ``JobState`` value);
        ``attempt`` is the number of attempts it has started so far."""
        ...

    def job_attempt_finished(
        self, job_type: str, attempt: int, outcome: str, duration_s: float
    ) -> None:
        """Attempt number ``attempt`` ended with ``outcome`` (for example
        ``succeeded``, ``retrying``, ``failed``, ``cancelled``, ``timeout``,
        ``interrupted``) after ``duration_s`` seconds."""
        ...

    def store_write_retried(self, operation: str) -> None:
        """A job-store write (``operation``: insert, claim, finish, ...)
        failed and will be retried."""
        ...

    def store_write_failed(self, operation: str) -> None:
        """A job-store write failed for good (its retries ran out)."""
        ...


class NoopMetrics:
    """A :class:`Metrics` that records nothing.

    A pool given one treats it as ``metrics=None``: it makes no call at all.
    Subclass it to implement only the hooks you need (a subclass is called).
    """

    __slots__ = ()

    def tasks_posted(self, runner: str, priority: int, category: str | None, count: int) -> None:
        pass

    def tasks_ran(
        self,
        runner: str,
        priority: int,
        category: str | None,
        outcome: str,
        queue_wait_ns: Sequence[int],
        run_ns: Sequence[int],
    ) -> None:
        pass

    def task_not_run(self, runner: str, priority: int, category: str | None, outcome: str) -> None:
        pass

    def task_rejected(self, runner: str, priority: int, category: str | None, policy: str) -> None:
        pass

    def timers_fired(self, runner: str, lateness_ns: Sequence[int]) -> None:
        pass

    def add_source(self, runner: str, source: MetricsSource) -> None:
        pass

    def remove_source(self, source: MetricsSource) -> None:
        pass

    def job_state_changed(self, job_type: str, state: str, attempt: int) -> None:
        pass

    def job_attempt_finished(
        self, job_type: str, attempt: int, outcome: str, duration_s: float
    ) -> None:
        pass

    def store_write_retried(self, operation: str) -> None:
        pass

    def store_write_failed(self, operation: str) -> None:
        pass


# ---- the tracing hook ---------------------------------------------------------------------


@runtime_checkable
class TaskTracer(Protocol):
    """Wraps the execution of each task (``ThreadPool(tracer=...)``), for
    example in a tracing span (:class:`taskrunner.integrations.otel.OtelTracer`).

    ``run_task`` is called on the thread that runs the task, inside the task's
    copy of the poster's ``contextvars`` context (so a tracer that keeps its
    current span in a context variable sees the poster's span as current).  It
    must call ``fn(*args)`` exactly once and let its exception propagate: the
    scheduler records the outcome and reports the error.  Internal tasks (a
    runner's run loop) are not wrapped; the runner's own tasks are.
    """

    def run_task(self, task: Task, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        """Run ``fn(*args)`` for ``task``."""
        ...
