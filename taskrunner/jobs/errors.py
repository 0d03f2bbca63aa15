"""The exceptions of the job system.

Every one derives from :class:`JobError`, itself a
:class:`taskrunner.errors.TaskRunnerError`.  Where a built-in exception says
the same thing the class derives from it too (``KeyError`` for an unknown id,
``ValueError`` for a duplicate, ``TimeoutError`` for a timeout), so callers can
catch either.

Which errors a store raises, and when, is part of the store contract
(:mod:`taskrunner.jobs.stores.store`): a store raises :class:`StoreError` only when
the storage itself failed (the operation may be retried), and the other errors
when the request cannot succeed as asked (retrying it unchanged is pointless).
"""

from __future__ import annotations

from taskrunner.errors import TaskRunnerError

__all__ = [
    "CorruptJobError",
    "DuplicateJobError",
    "IllegalTransitionError",
    "JobCancelled",
    "JobError",
    "JobTimeout",
    "LeaseLostError",
    "StoreError",
    "UnknownJobError",
    "UnknownJobTypeError",
]


class JobError(TaskRunnerError):
    """Base class of every error raised by the job system."""


class DuplicateJobError(JobError, ValueError):
    """A job could not be stored because its id, idempotency key or unique key is taken.

    ``job_id`` is the id of the job being stored.  ``existing_id`` is the id of
    the stored job that holds the id or key (equal to ``job_id`` for a duplicate
    id), or ``None`` when it is not known.  ``idempotency_key`` is set when the
    key, not the id, collided: an idempotency key is held by at most one
    unfinished (pending or running) job at a time.  ``unique_key`` is set when
    the job's uniqueness collided (see :mod:`taskrunner.jobs.unique`): a job in
    any state holds its unique key until its window (``unique_until``) ends.
    """

    def __init__(
        self,
        job_id: str,
        *,
        existing_id: str | None = None,
        idempotency_key: str | None = None,
        unique_key: str | None = None,
    ) -> None:
        self.job_id = job_id
        self.existing_id = existing_id
        self.idempotency_key = idempotency_key
        self.unique_key = unique_key
        if unique_key is not None:
            message = (
                f"job {job_id!r} is a duplicate of job {existing_id!r} "
                f"(unique key {unique_key!r}, within its uniqueness window)"
            )
        elif idempotency_key is None:
            message = f"job {job_id!r} already exists"
        else:
            message = (
                f"job {job_id!r}: idempotency key {idempotency_key!r} is held by "
                f"unfinished job {existing_id!r}"
            )
        super().__init__(message)


class UnknownJobError(JobError, KeyError):
    """No job with this id is stored."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"unknown job {job_id!r}")

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0])


class UnknownJobTypeError(JobError, KeyError):
    """No handler is registered for this job type."""

    def __init__(self, job_type: str) -> None:
        self.job_type = job_type
        super().__init__(f"unknown job type {job_type!r}")

    def __str__(self) -> str:
        return str(self.args[0])


class IllegalTransitionError(JobError):
    """A state change that the transition table of :mod:`taskrunner.jobs.states` forbids.

    ``job_id`` is ``None`` when the check was made without a job (a bare
    ``check_transition`` call).
    """

    def __init__(
        self, job_id: str | None, from_state: str, to_state: str, detail: str | None = None
    ) -> None:
        self.job_id = job_id
        self.from_state = from_state
        self.to_state = to_state
        where = f"job {job_id!r}: " if job_id is not None else ""
        why = f" ({detail})" if detail else ""
        super().__init__(f"{where}illegal transition {from_state} -> {to_state}{why}")


class JobCancelled(JobError):
    """Raised inside a running job when its cancellation was requested.

    A job handler that sees it should stop and let it propagate; the job is then
    recorded as cancelled, never retried (see :meth:`RetryPolicy.should_retry`).
    """


class JobTimeout(JobError, TimeoutError):
    """A job ran past its timeout."""


class StoreError(JobError):
    """A read or write of the job store failed; nothing was changed by it.

    ``cause`` is the underlying exception (also chained as ``__cause__``), or
    ``None``.  The operation may succeed if retried (for example after
    ``SQLITE_BUSY`` or an I/O error); see :func:`taskrunner.jobs.retry.retry_call`.
    """

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        self.cause = cause
        super().__init__(message)


class SubmitTimeoutError(JobError, TimeoutError):
    """``submit(..., store_timeout=...)`` gave up: the job was not stored in
    time (the store write was still waiting or retrying), and nothing was stored."""


class JobRunningError(JobError):
    """A store maintenance call (``delete``, ``clear``) was refused because a
    job is RUNNING: cancel it, or wait for it to end, first.  ``job_id`` names
    the running job.  Nothing was deleted."""

    def __init__(self, job_id: str, operation: str) -> None:
        self.job_id = job_id
        self.operation = operation
        super().__init__(f"{operation} refused: job {job_id} is running")


class CorruptJobError(JobError):
    """A stored job row cannot be decoded (a bad state name, bad JSON, a wrong type...).

    ``job_id`` names the row and ``problem`` says what is wrong with it.  The
    caller can mark the job failed with ``store.fail_corrupt(job_id, now,
    problem)`` and carry on; retrying the read is pointless.
    """

    def __init__(self, job_id: str, problem: str) -> None:
        self.job_id = job_id
        self.problem = problem
        super().__init__(f"job {job_id!r} is corrupt: {problem}")


class LeaseLostError(JobError):
    """An owner tried to finish or renew a job it no longer holds.

    The job was recovered after its lease expired (and may now run elsewhere), or
    was finished or cancelled by someone else.  ``state`` and ``holder`` describe
    the job as stored now (``holder`` is ``None`` unless it is running).
    """

    def __init__(
        self,
        job_id: str,
        owner: str | None,
        *,
        state: str,
        holder: str | None,
        detail: str | None = None,
    ) -> None:
        self.job_id = job_id
        self.owner = owner
        self.state = state
        self.holder = holder
        held = f"held by {holder!r}" if holder is not None else "held by no one"
        extra = f"; {detail}" if detail else ""
        super().__init__(
            f"job {job_id!r}: owner {owner!r} no longer holds it (it is {state}, {held}{extra})"
        )
