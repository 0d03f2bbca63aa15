"""The job manager's value types: specs, handles, serializers, and one running attempt.

Nothing here holds a lock or talks to the store; :mod:`taskrunner.jobs.manager`
uses these types, and :mod:`taskrunner.jobs.attempts` runs the attempts.
"""

from __future__ import annotations

import contextvars
import json
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from taskrunner.jobs.context import CancelToken, JobContext
from taskrunner.jobs.errors import JobError
from taskrunner.jobs.model import Job
from taskrunner.jobs.queues import DEFAULT_QUEUE
from taskrunner.jobs.retry import RetryPolicy
from taskrunner.runtime.traits import TaskPriority, TaskTraits

if TYPE_CHECKING:
    from taskrunner.jobs.manager import JobManager

__all__ = [
    "Handler",
    "HandlerEntry",
    "JSONSerializer",
    "JobFailedError",
    "JobHandle",
    "JobSpec",
    "RunningAttempt",
    "SerializationError",
    "Serializer",
    "StoreErrorHandler",
]

Handler = Callable[[JobContext, Any], Any]
StoreErrorHandler = Callable[[BaseException, str], None]


class Serializer(Protocol):
    """Encodes job arguments and results to bytes and back."""

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class JSONSerializer:
    """The default serializer: compact JSON, no NaN, UTF-8."""

    def dumps(self, value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data.decode()) if data else None


class SerializationError(JobError, ValueError):
    """Arguments or a result could not be encoded (or decoded) by the serializer."""


class JobFailedError(JobError):
    """``result()`` of a job that ended FAILED; ``job`` is the stored record."""

    def __init__(self, job: Job) -> None:
        self.job = job
        super().__init__(f"job {job.id!r} ({job.type}) failed: {job.last_error}")


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job for :meth:`JobManager.submit_many` (the arguments of ``submit``)."""

    job_type: str
    args: Any = None
    job_id: str | None = None
    priority: int = 0
    delay: float | None = None
    run_at: float | None = None
    max_attempts: int | None = None
    timeout: float | None = None
    idempotency_key: str | None = None
    queue: str = DEFAULT_QUEUE
    #: Uniqueness (see :mod:`taskrunner.jobs.unique`): the window (a timedelta or
    #: seconds; None: not unique) and the fields the unique key covers.
    unique_for: timedelta | float | None = None
    unique_by: tuple[str, ...] = ("type", "args")


@dataclass(frozen=True, slots=True)
class HandlerEntry:
    fn: Handler
    may_block: bool
    retry: RetryPolicy | None


class RunningAttempt:
    """One running attempt in this process.  Fields are written by the IO
    layer before the attempt is published in ``_active`` and not after."""

    __slots__ = ("context", "entry", "job", "started", "token")

    def __init__(self, job: Job, entry: HandlerEntry, token: CancelToken) -> None:
        self.job = job
        self.entry = entry
        self.token = token
        self.context: contextvars.Context | None = None
        self.started = time.monotonic()


class JobHandle:
    """What ``submit`` returns: the job's id, its future and a few shortcuts."""

    __slots__ = ("future", "id", "manager")

    def __init__(self, manager: JobManager, job_id: str, future: Future[Any]) -> None:
        self.manager = manager
        self.id = job_id
        #: Resolved with the decoded result when this process finishes the job
        #: (JobFailedError / JobCancelled when it fails or is cancelled).
        self.future = future

    def result(self, timeout: float | None = None) -> Any:
        return self.manager.result(self.id, timeout)

    def cancel(self) -> Job:
        return self.manager.cancel(self.id)

    def get(self) -> Job:
        return self.manager.get(self.id)

    def __repr__(self) -> str:
        return f"<JobHandle {self.id}>"


def priority_traits(priority: int, may_block: bool) -> TaskTraits:
    if priority > 0:
        level = TaskPriority.USER_BLOCKING
    elif priority < 0:
        level = TaskPriority.BEST_EFFORT
    else:
        level = TaskPriority.USER_VISIBLE
    return TaskTraits(priority=level, may_block=may_block)


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
