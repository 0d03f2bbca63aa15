"""The job manager's checks: of its own arguments (:func:`check_manager_arguments`),
and of a new job, a :class:`~taskrunner.jobs.handles.JobSpec` turned into the
:class:`~taskrunner.jobs.model.Job` to store.

:class:`JobBuilding` is the part of :class:`~taskrunner.jobs.manager.JobManager`
that validates what ``submit``/``submit_many`` were given (a known job type,
priority, delay or run time, attempts, timeout, queue, uniqueness) and encodes
the arguments, before anything is written.  It holds no state of its own.
"""

from __future__ import annotations

from taskrunner.errors import RunnerClosedError
from taskrunner.jobs import unique
from taskrunner.jobs.errors import UnknownJobTypeError
from taskrunner.jobs.handles import JobSpec, SerializationError
from taskrunner.jobs.manager_core import ManagerCore
from taskrunner.jobs.model import (
    MAX_PRIORITY,
    MIN_PRIORITY,
    Job,
    check_duration,
    check_time,
    new_job,
)
from taskrunner.jobs.retry import RetryPolicy
from taskrunner.jobs.stores.store import JobStore
from taskrunner.runtime.pool import ThreadPool
from taskrunner.runtime.runner import TaskRunner

__all__ = ["JobBuilding", "check_manager_arguments"]


def check_manager_arguments(
    store: object,
    pool: object,
    execution: object,
    serializer: object,
    policies: tuple[tuple[str, object], ...],
    durations: tuple[tuple[str, object], ...],
) -> None:
    """The checks of ``JobManager``'s arguments, done before it starts anything."""
    if not isinstance(store, JobStore):
        raise TypeError(f"store must be a JobStore, not {type(store).__name__}")
    if pool is not None and not isinstance(pool, ThreadPool):
        raise TypeError(f"pool must be a ThreadPool or None, not {type(pool).__name__}")
    if execution is not None and not isinstance(execution, TaskRunner):
        raise TypeError(f"execution must be a TaskRunner or None, not {type(execution).__name__}")
    if serializer is not None and not (
        callable(getattr(serializer, "dumps", None))
        and callable(getattr(serializer, "loads", None))
    ):
        raise TypeError(
            "serializer must have dumps(value) -> bytes and loads(bytes) methods, "
            f"not {type(serializer).__name__}"
        )
    for what, policy in policies:
        if policy is not None and not isinstance(policy, RetryPolicy):
            raise TypeError(f"{what} must be a RetryPolicy or None, not {type(policy).__name__}")
    for what, value in durations:
        check_duration(what, value)


class JobBuilding(ManagerCore):
    """``_build``: a spec checked and made into a job (mixed into ``JobManager``)."""

    def _build(self, spec: JobSpec, now_ns: int) -> tuple[Job, int]:
        """The job to store for ``spec`` at clock time ``now_ns``, and when it is due (ns)."""
        now = self._epoch(now_ns)
        if not isinstance(spec, JobSpec):
            raise TypeError(f"expected a JobSpec, got {type(spec).__name__}")
        with self._lock:
            if not self._accepting:
                raise RunnerClosedError("JobManager: submit after shutdown")
            known = spec.job_type in self._handlers
        if not known:
            raise UnknownJobTypeError(spec.job_type)
        if isinstance(spec.priority, bool) or not isinstance(spec.priority, int):
            raise TypeError("priority must be an int")
        if not MIN_PRIORITY <= spec.priority <= MAX_PRIORITY:
            raise ValueError(f"priority out of range: {spec.priority}")
        if spec.delay is not None and spec.run_at is not None:
            raise ValueError("give delay or run_at, not both")
        due, due_ns = now, now_ns
        if spec.delay is not None:
            check_duration("delay", spec.delay, allow_zero=True)
            due_ns = now_ns + round(spec.delay * 1e9)
            due = self._epoch(due_ns)
        elif spec.run_at is not None:
            due = check_time("run_at", spec.run_at)
            due_ns = self._clock_ns(due)
        max_attempts = self._retry.max_attempts if spec.max_attempts is None else spec.max_attempts
        try:
            payload = self._serializer.dumps(spec.args)
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(
                f"arguments of job type {spec.job_type!r} cannot be encoded: {exc}"
            ) from exc
        job = new_job(
            spec.job_type,
            payload,
            now=now,
            id=spec.job_id,
            run_at=due,
            priority=spec.priority,
            max_attempts=max_attempts,
            timeout=spec.timeout,
            idempotency_key=spec.idempotency_key,
            trace_context=self._trace_carrier(),
            queue=spec.queue,
        )
        return unique.with_uniqueness(job, spec.args, spec.unique_for, spec.unique_by), due_ns

    def _trace_carrier(self) -> dict[str, str] | None:
        """The current trace context to store with a new job (inside its submit span)."""
        if self._otel is None:
            return None
        carrier: dict[str, str] = self._otel.inject_context()
        return carrier or None
