"""The job record kept by a job store, and the checks every value goes through.

A :class:`Job` is an immutable snapshot of one stored job: stores return new
``Job`` objects and never change one they handed out, so a ``Job`` can be
shared between threads freely.  Its constructor checks every field (type, range,
and the invariants that tie fields to the state, listed on the class), so a
``Job`` that exists is well formed; a store that reads a row failing these
checks reports it as :class:`~taskrunner.jobs.errors.CorruptJobError`.

Payloads are opaque bytes.  ``args`` and ``result`` hold whatever the job
manager's serializer produced (JSON, pickle...); stores keep them as they are
(SQLite ``BLOB``, PostgreSQL ``BYTEA``) and never look inside.

Times are seconds since the epoch as floats, taken from the caller's clock: a
store never reads a clock, so a mock clock drives it completely.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from taskrunner.jobs.queues import DEFAULT_QUEUE, check_queue
from taskrunner.jobs.states import FINAL_STATES, JobState, parse_state
from taskrunner.runtime.clock import MAX_DELAY

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "Job",
    "new_job",
    "new_job_id",
]

#: Job priorities are 32-bit signed ints (like the C ready queue's); higher runs first.
MIN_PRIORITY: Final = -(2**31)
MAX_PRIORITY: Final = 2**31 - 1
#: Attempts a job gets when its submitter does not say.
DEFAULT_MAX_ATTEMPTS: Final = 3
#: Longest job id, idempotency key, type name or owner name accepted (characters).
MAX_NAME_LENGTH: Final = 255
#: The runtime keeps time as int64 nanoseconds (about 292 years): epoch times
#: (run times, deadlines, starts, leases) stay within MAX_EPOCH of the epoch
#: (about the year 2261), and durations (delays, timeouts, periods, windows,
#: leases) below MAX_DURATION, about 158 years, so that now plus any of them is
#: still a valid epoch time for the rest of this century and beyond.
MAX_EPOCH: Final = MAX_DELAY
MAX_DURATION: Final = 5e9


# ---------------------------------------------------------------- value checks
# Shared by the Job record and the stores' argument checks, so that every bad
# value is reported the same way: a TypeError or ValueError naming the field.


def check_name(name: str, value: object) -> str:
    """A non-empty str of at most MAX_NAME_LENGTH characters (an id, type, owner or key)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"{name} is longer than {MAX_NAME_LENGTH} characters")
    if not _encodable(value):
        raise ValueError(f"{name} is not valid Unicode text (it has a lone surrogate)")
    return value


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def clean_text(text: str) -> str:
    """``text`` with any lone surrogate escaped, so that every store can encode it as UTF-8.

    Error messages and tracebacks may carry such characters (from
    ``surrogateescape``-decoded file names); they are kept, escaped, rather than
    refused.
    """
    if _encodable(text):
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def check_int(name: str, value: object, *, low: int, high: int | None = None) -> int:
    """An int (not a bool) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def _finite_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{name} must be finite, got {value}")
    return result


def check_time(name: str, value: object) -> float:
    """An epoch time in seconds, finite and within :data:`MAX_EPOCH` of the epoch;
    returned as a float."""
    result = _finite_seconds(name, value)
    if not -MAX_EPOCH < result < MAX_EPOCH:
        raise ValueError(
            f"{name} must be within {MAX_EPOCH:.0f} seconds of the epoch (about the year "
            f"2261), got {value}"
        )
    return result


def check_duration(name: str, value: object, *, allow_zero: bool = False) -> float:
    """A number of seconds, > 0 (or >= 0 with ``allow_zero``) and below
    :data:`MAX_DURATION`; returned as a float."""
    result = _finite_seconds(name, value)
    if result < 0 or (result == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    check_below_max_duration(name, result)
    return result


def check_below_max_duration(name: str, seconds: float) -> None:
    """ValueError unless ``seconds`` < :data:`MAX_DURATION`."""
    if not seconds < MAX_DURATION:
        raise ValueError(
            f"{name} must be less than {MAX_DURATION:.0f} seconds (about 158 years), "
            f"got {seconds:g}"
        )


def _check_optional_text(name: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, got {type(value).__name__}")
    return clean_text(value)


def _check_bytes(name: str, value: object) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes (an encoded payload), got {type(value).__name__}")
    return value


def check_trace_context(value: object) -> dict[str, str] | None:
    """None, or a mapping of str to str (an OpenTelemetry carrier); returned as a new dict."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(
            f"trace_context must be a mapping of str to str, got {type(value).__name__}"
        )
    result: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise TypeError(f"trace_context must map str to str, got {key!r}: {item!r}")
        if not (_encodable(key) and _encodable(item)):
            raise ValueError(f"trace_context has text that is not valid Unicode: {key!r}")
        result[key] = item
    return result


# ---------------------------------------------------------------- the record


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """One stored job, as of the store operation that returned it.

    Invariants (checked on construction):

    * ``0 <= attempt <= max_attempts``, and a ``PENDING`` job has an attempt left
      (``attempt < max_attempts``), so claiming it is always legal;
    * a ``RUNNING`` job has an ``owner`` and a ``lease_expires_at``; no other
      job has either;
    * a final job (succeeded, failed, cancelled) has ``finished_at``; no other has;
    * a ``PENDING`` job never has ``cancel_requested`` (a running job keeps it
      into its final state, where it records that a cancel was asked for).
    """

    #: Unique id, chosen by the submitter (see :func:`new_job_id`).
    id: str
    #: Job type: selects the handler.
    type: str
    #: The encoded arguments, opaque to the store.
    args: bytes = b""
    state: JobState = JobState.PENDING
    #: Higher runs first; in ``[MIN_PRIORITY, MAX_PRIORITY]``.
    priority: int = 0
    #: Number of attempts started (claims); 0 until first claimed.
    attempt: int = 0
    #: Attempts allowed in all (>= 1); a job is never claimed once ``attempt`` reaches it.
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    created_at: float
    #: Time of the last write to this job.
    updated_at: float
    #: When the job is due (a ``PENDING`` job is claimable once ``run_at <= now``).
    run_at: float
    #: Seconds one attempt may run, or None for no limit.
    timeout: float | None = None
    #: At most one unfinished job holds a given key; None for no key.
    idempotency_key: str | None = None
    #: Who holds the lease of a ``RUNNING`` job.
    owner: str | None = None
    lease_expires_at: float | None = None
    #: The encoded result of a ``SUCCEEDED`` job, opaque to the store.
    result: bytes | None = None
    #: Why the last attempt failed (or why the job was cancelled or interrupted).
    last_error: str | None = None
    error_traceback: str | None = None
    finished_at: float | None = None
    #: OpenTelemetry propagation carrier (str to str), or None.
    trace_context: Mapping[str, str] | None = field(default=None, hash=False)
    #: A cancellation was asked for while the job was running: its owner should
    #: stop it.  Kept on the final record (a job that completed anyway says so).
    cancel_requested: bool = False
    #: The queue the job belongs to (see :mod:`taskrunner.jobs.queues`).
    queue: str = DEFAULT_QUEUE
    #: Uniqueness (see :mod:`taskrunner.jobs.unique`): while ``unique_until`` is
    #: after a new job's ``created_at``, no other job may be stored with the same
    #: ``unique_key``.  Both are set or neither; a store clears them on this job
    #: when a later job takes the key after the window.
    unique_key: str | None = None
    unique_until: float | None = None

    def __post_init__(self) -> None:
        put = object.__setattr__  # the one way to normalise fields of a frozen dataclass
        check_name("Job.id", self.id)
        check_name("Job.type", self.type)
        _check_bytes("Job.args", self.args)
        state = parse_state(self.state)
        put(self, "state", state)
        check_int("Job.priority", self.priority, low=MIN_PRIORITY, high=MAX_PRIORITY)
        check_int("Job.max_attempts", self.max_attempts, low=1)
        check_int("Job.attempt", self.attempt, low=0, high=self.max_attempts)
        for name in ("created_at", "updated_at", "run_at"):
            put(self, name, check_time(f"Job.{name}", getattr(self, name)))
        for name in ("lease_expires_at", "finished_at"):
            value = getattr(self, name)
            if value is not None:
                put(self, name, check_time(f"Job.{name}", value))
        if self.timeout is not None:
            put(self, "timeout", check_duration("Job.timeout", self.timeout))
        if self.idempotency_key is not None:
            check_name("Job.idempotency_key", self.idempotency_key)
        if self.owner is not None:
            check_name("Job.owner", self.owner)
        if self.result is not None:
            _check_bytes("Job.result", self.result)
        put(self, "last_error", _check_optional_text("Job.last_error", self.last_error))
        put(
            self,
            "error_traceback",
            _check_optional_text("Job.error_traceback", self.error_traceback),
        )
        put(self, "trace_context", check_trace_context(self.trace_context))
        if not isinstance(self.cancel_requested, bool):
            raise TypeError(
                f"Job.cancel_requested must be a bool, got {type(self.cancel_requested).__name__}"
            )
        check_queue(self.queue, "Job.queue")
        if self.unique_key is not None:
            check_name("Job.unique_key", self.unique_key)
        if self.unique_until is not None:
            put(self, "unique_until", check_time("Job.unique_until", self.unique_until))
        if (self.unique_key is None) != (self.unique_until is None):
            raise ValueError(f"job {self.id!r}: unique_key and unique_until are set together")
        self._check_state_invariants(state)

    def _check_state_invariants(self, state: JobState) -> None:
        where = f"job {self.id!r} ({state})"
        if state is JobState.PENDING and self.attempt >= self.max_attempts:
            raise ValueError(
                f"{where}: a pending job needs an attempt left "
                f"(attempt {self.attempt} of {self.max_attempts})"
            )
        running = state is JobState.RUNNING
        if running != (self.owner is not None) or running != (self.lease_expires_at is not None):
            raise ValueError(f"{where}: owner and lease_expires_at are set exactly when running")
        if (state in FINAL_STATES) != (self.finished_at is not None):
            raise ValueError(f"{where}: finished_at is set exactly when the job is final")
        if self.cancel_requested and state is JobState.PENDING:
            raise ValueError(f"{where}: cancel_requested is never set on a pending job")

    @property
    def is_final(self) -> bool:
        """True once the job succeeded, failed or was cancelled."""
        return self.state in FINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (state as its name, trace_context as a dict)."""
        data = {name: getattr(self, name) for name in JOB_FIELDS}
        data["state"] = self.state.value
        if self.trace_context is not None:
            data["trace_context"] = dict(self.trace_context)
        return data


#: The field names of :class:`Job`, in declaration order (a store's column list).
JOB_FIELDS: Final[tuple[str, ...]] = tuple(Job.__dataclass_fields__)


# ---------------------------------------------------------------- making new jobs

_id_lock = threading.Lock()  # guards _last_id_ns
_last_id_ns = 0


def new_job_id() -> str:
    """A new unique job id: 32 hex digits that sort in creation order within a process.

    The first 16 digits are a nanosecond wall-clock stamp, forced to increase
    from one call to the next in this process; the last 16 are random.  Ids made
    by one process therefore sort in the order they were made, which keeps jobs
    created at the same (mock) clock instant in submission order, since stores
    break ties on ``created_at`` by id.  Thread-safe.
    """
    global _last_id_ns
    with _id_lock:
        stamp = max(time.time_ns(), _last_id_ns + 1)
        _last_id_ns = stamp
    return f"{stamp:016x}{os.urandom(8).hex()}"


def new_job(
    type: str,
    args: bytes = b"",
    *,
    now: float,
    id: str | None = None,
    run_at: float | None = None,
    priority: int = 0,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    timeout: float | None = None,
    idempotency_key: str | None = None,
    trace_context: Mapping[str, str] | None = None,
    queue: str = DEFAULT_QUEUE,
    unique_key: str | None = None,
    unique_until: float | None = None,
) -> Job:
    """A new ``PENDING`` job ready for :meth:`JobStore.insert`.

    ``now`` is the submitter's clock; the job is due at ``run_at`` (default
    ``now``).  ``id`` defaults to :func:`new_job_id`; ``queue`` names its queue.  Bad values raise
    ``TypeError``/``ValueError`` naming the field.
    """
    now = check_time("now", now)
    return Job(
        id=new_job_id() if id is None else id,
        type=type,
        args=args,
        priority=priority,
        max_attempts=max_attempts,
        created_at=now,
        updated_at=now,
        run_at=now if run_at is None else run_at,
        timeout=timeout,
        idempotency_key=idempotency_key,
        trace_context=trace_context,
        queue=queue,
        unique_key=unique_key,
        unique_until=unique_until,
    )
