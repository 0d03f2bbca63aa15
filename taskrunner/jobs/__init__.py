"""Durable jobs: the job record, its states, retry policies and the job stores.

The pieces, bottom up:

* :mod:`~taskrunner.jobs.states`: :class:`JobState` and the one table of legal
  transitions;
* :mod:`~taskrunner.jobs.model`: the immutable :class:`Job` record and
  :func:`new_job`;
* :mod:`~taskrunner.jobs.retry`: :class:`RetryPolicy` (exponential backoff with
  jitter) and :func:`retry_call`;
* :mod:`~taskrunner.jobs.stores.store`: the :class:`JobStore` contract, implemented
  by :class:`MemoryJobStore` (tests), :class:`SQLiteJobStore` (the embedded
  default) and :class:`PostgresJobStore` (many worker processes on many
  machines; needs ``pip install 'taskrunner[postgres]'``, and is imported only
  when first used);
* :mod:`~taskrunner.jobs.stores.rules` and :mod:`~taskrunner.jobs.stores.base_store`: what
  the three stores share (the argument checks and per-job rules, and the
  public methods written once over each store's primitives);
* :mod:`~taskrunner.jobs.stores.sqlite_wake`: the SQLite store's wake-ups across
  processes (Unix datagram sockets beside the file, an adaptive poll behind);
* :mod:`~taskrunner.jobs.stores.tx_enqueue` (and :mod:`~taskrunner.jobs.stores.postgres_enqueue`):
  transactional enqueue, ``submit(..., connection=conn)`` in the caller's own
  transaction.

The job manager that runs jobs on the thread pool is built on these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskrunner.jobs.context import CancelToken, JobContext
from taskrunner.jobs.errors import (
    CorruptJobError,
    DuplicateJobError,
    IllegalTransitionError,
    JobCancelled,
    JobError,
    JobRunningError,
    JobTimeout,
    LeaseLostError,
    StoreError,
    SubmitTimeoutError,
    UnknownJobError,
    UnknownJobTypeError,
)
from taskrunner.jobs.manager import (
    JobFailedError,
    JobHandle,
    JobManager,
    JobSpec,
    JSONSerializer,
    SerializationError,
    Serializer,
)
from taskrunner.jobs.model import (
    DEFAULT_MAX_ATTEMPTS,
    MAX_PRIORITY,
    MIN_PRIORITY,
    Job,
    new_job,
    new_job_id,
)
from taskrunner.jobs.outcomes import Cancel, Snooze
from taskrunner.jobs.retry import RetryPolicy, retry_call
from taskrunner.jobs.schedule_model import Schedule, ScheduleError, UnknownScheduleError
from taskrunner.jobs.states import (
    FINAL_STATES,
    TRANSITIONS,
    UNFINISHED_STATES,
    JobState,
    can_transition,
    check_transition,
    is_final,
)
from taskrunner.jobs.stores.memory_store import MemoryJobStore
from taskrunner.jobs.stores.schedule_store import ScheduleStore
from taskrunner.jobs.stores.sqlite_store import SQLiteJobStore
from taskrunner.jobs.stores.store import FaultInjector, JobPage, JobStore, LeaseRenewal

if TYPE_CHECKING:
    # Imported at run time by __getattr__ below, on first use.
    from taskrunner.jobs.stores.postgres_store import PostgresJobStore as PostgresJobStore

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "FINAL_STATES",
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "TRANSITIONS",
    "UNFINISHED_STATES",
    "Cancel",
    "CancelToken",
    "CorruptJobError",
    "DuplicateJobError",
    "FaultInjector",
    "IllegalTransitionError",
    "JSONSerializer",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobError",
    "JobFailedError",
    "JobHandle",
    "JobManager",
    "JobPage",
    "JobRunningError",
    "JobSpec",
    "JobState",
    "JobStore",
    "JobTimeout",
    "LeaseLostError",
    "LeaseRenewal",
    "MemoryJobStore",
    "RetryPolicy",
    "SQLiteJobStore",
    "Schedule",
    "ScheduleError",
    "ScheduleStore",
    "SerializationError",
    "Serializer",
    "Snooze",
    "StoreError",
    "SubmitTimeoutError",
    "UnknownJobError",
    "UnknownJobTypeError",
    "UnknownScheduleError",
    "can_transition",
    "check_transition",
    "is_final",
    "new_job",
    "new_job_id",
    "retry_call",
]


def __getattr__(name: str) -> Any:
    # PostgresJobStore is imported on first use, so that psycopg (the optional
    # ``postgres`` extra) is needed only by those who use it.
    if name == "PostgresJobStore":
        from taskrunner.jobs.stores.postgres_store import PostgresJobStore

        return PostgresJobStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
