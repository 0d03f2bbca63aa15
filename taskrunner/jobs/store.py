"""The job store contract, and the per-job rules every store applies.

:class:`JobStore` is the one interface between the job manager and storage.
:class:`~taskrunner.jobs.memory_store.MemoryJobStore` (tests, one process) and
:class:`~taskrunner.jobs.sqlite_store.SQLiteJobStore` (the embedded default,
several processes on one machine) implement it, and a PostgreSQL store (many
machines) will; ``tests/test_job_store_contract.py`` runs one suite over all.

The guarantees every store gives:

* **Explicit time.**  Each method that depends on time takes ``now`` (epoch
  seconds from the caller's clock).  A store never reads a clock, so a mock
  clock drives it completely.
* **Atomic operations.**  Each method is one transaction: it happens entirely
  or not at all, and concurrent callers (threads, or processes sharing the
  store) see it entirely or not at all.  When a method raises, nothing was
  changed by it.
* **Exclusive claims.**  A job is claimed by at most one owner at a time, even
  with many claimers racing (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL:
  ``FOR UPDATE SKIP LOCKED``).
* **Durable acknowledgement.**  When a write returns, it is stored as durably
  as the store is configured to store it (SQLite: ``synchronous=FULL``).
* **Leases.**  A claim records an owner and a lease deadline.  The owner
  extends it with :meth:`~JobStore.renew_leases` and finishes the job with
  :meth:`~JobStore.complete`, :meth:`~JobStore.fail` or
  :meth:`~JobStore.mark_cancelled`.  Once the deadline passes,
  :meth:`~JobStore.recover_expired` may take the job back; from then on the old
  owner's calls raise :class:`LeaseLostError`.  An expired lease that has not
  been recovered is still held: its owner may still finish the job.  "Holds"
  means the job is ``RUNNING`` with this owner (and, when the caller passes
  ``attempt``, on that attempt, which fences off a stale run of a job that the
  same owner name claimed again); finishing a job one does not hold raises
  :class:`LeaseLostError` whatever its state.
* **Orders.**  Claims take due jobs by priority (highest first), then
  ``run_at``, then ``created_at``, then id.  Listing pages by ``(created_at,
  id)``, a total order that new jobs do not disturb.  Ids compare by code
  point (SQLite's ``BINARY`` collation; PostgreSQL needs ``COLLATE "C"``), and
  :func:`~taskrunner.jobs.model.new_job_id` makes ids that sort in creation
  order, so ties on the clock keep submission order.
* **Errors.**  Bad arguments raise ``TypeError``/``ValueError`` naming the
  argument, before anything is touched.  :class:`UnknownJobError` (a
  ``KeyError``) for an unknown id; :class:`DuplicateJobError` for a taken id or
  idempotency key (enforced by the storage's own unique constraints);
  :class:`IllegalTransitionError` for a change the state table forbids;
  :class:`CorruptJobError` for a stored row that cannot be decoded (repair it
  with :meth:`~JobStore.fail_corrupt`); :class:`StoreError` when the storage
  failed (worth a retry); :class:`taskrunner.errors.ClosedError` after
  :meth:`~JobStore.close`.
* **Cancelling a running job** is a request: :meth:`~JobStore.cancel` sets
  ``cancel_requested`` and the owner decides how the attempt ends.  A
  completed attempt makes the job ``SUCCEEDED`` (the work was done); a failed
  one, or one the owner stops, makes it ``CANCELLED`` (never retried), as does
  recovering it after its owner died.  The request stays on the record either
  way: ``cancel_requested`` is kept through the final state, and cleared only
  when a manual :meth:`~JobStore.retry` starts the job over.
* **Thread-safety.**  Every method may be called from any thread.

The functions after the protocol compute what one operation does to one job.
Both stores use them, so the rules live in one place; a store's own work is to
choose the jobs (in SQL, or in memory) and to write the results atomically.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

from taskrunner.jobs.errors import (
    CorruptJobError,
    IllegalTransitionError,
    JobError,
    LeaseLostError,
    UnknownJobError,
)
from taskrunner.jobs.model import (
    Job,
    check_duration,
    check_int,
    check_name,
    check_time,
)
from taskrunner.jobs.states import (
    FINAL_STATES,
    JobState,
    check_transition,
    parse_state,
)

__all__ = [
    "MAX_PAGE_SIZE",
    "BatchCompletion",
    "FaultInjector",
    "JobPage",
    "JobStore",
    "LeaseRenewal",
]

#: The largest ``limit`` that :meth:`JobStore.list_jobs` accepts.
MAX_PAGE_SIZE: Final = 1000

#: A test hook a store calls with the operation's name (``"insert"``,
#: ``"complete"``...) before each write it makes; an exception it raises makes
#: the write fail, the operation roll back and :class:`StoreError` be raised.
FaultInjector = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of :meth:`JobStore.list_jobs`: jobs in ``(created_at, id)`` order.

    ``next_cursor`` is passed as ``after=`` to get the next page; it is ``None``
    when this page is the last.
    """

    jobs: tuple[Job, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class LeaseRenewal:
    """What :meth:`JobStore.renew_leases` found.

    ``held`` are the ids whose leases were extended (the owner still holds
    them); the others were lost.  ``cancel_requested`` is the subset of ``held``
    whose cancellation was asked for: their owner should stop them and call
    :meth:`JobStore.mark_cancelled`.
    """

    held: frozenset[str]
    cancel_requested: frozenset[str]


@runtime_checkable
class JobStore(Protocol):
    """Durable storage of jobs: the contract described in the module docstring."""

    def insert(self, job: Job) -> None:
        """Store a new job, atomically.

        ``job`` must be new: ``PENDING``, with no owner, lease, result or
        finish time (``ValueError`` otherwise; see :func:`new_job`).  Raises
        :class:`DuplicateJobError` if its id is taken, or if its idempotency key
        is held by an unfinished (pending or running) job; a key held only by
        finished jobs may be reused.
        """
        ...

    def insert_many(self, jobs: Sequence[Job]) -> None:
        """Store several new jobs in one transaction: all of them, or none.

        Same rules as :meth:`insert`, duplicates within ``jobs`` included.
        """
        ...

    def get(self, job_id: str) -> Job:
        """The job with this id (:class:`UnknownJobError` if none)."""
        ...

    def find_by_idempotency_key(self, key: str) -> Job | None:
        """The unfinished job holding ``key``, or ``None``."""
        ...

    def list_jobs(
        self,
        *,
        states: Iterable[JobState | str] | None = None,
        types: Iterable[str] | None = None,
        since: float | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> JobPage:
        """A page of at most ``limit`` (1..MAX_PAGE_SIZE) jobs in ``(created_at, id)`` order.

        Filters: ``states`` and ``types`` (a job matches if it is in one of
        them; an empty collection matches nothing), ``since`` (created at or
        after).  ``after`` is a ``next_cursor`` from the previous page (with the
        same filters); ``ValueError`` if it is malformed.  Each page is one
        consistent snapshot; jobs created while paging appear on later pages
        only if they sort after the cursor.
        """
        ...

    def count_jobs(
        self,
        *,
        states: Iterable[JobState | str] | None = None,
        types: Iterable[str] | None = None,
        since: float | None = None,
    ) -> int:
        """How many jobs match the filters (as for :meth:`list_jobs`)."""
        ...

    def claim_due(
        self,
        owner: str,
        now: float,
        *,
        limit: int,
        lease_seconds: float,
        types: Iterable[str] | None = None,
    ) -> list[Job]:
        """Claim up to ``limit`` due jobs for ``owner``, atomically; returns them in claim order.

        Due jobs are ``PENDING`` with ``run_at <= now``, taken by priority
        (highest first), then ``run_at``, ``created_at`` and id.  Each becomes
        ``RUNNING`` with ``owner``, ``lease_expires_at = now + lease_seconds``
        and ``attempt + 1``.  No job is ever returned to two claimers.  With
        ``types``, only jobs of those types are claimed (an empty collection
        claims nothing): a worker takes only what it has handlers for, and a
        job whose type no worker handles stays pending.  The stores answer it
        from an index on ``(type, claim order)`` of pending jobs.
        """
        ...

    def claim(self, job_id: str, owner: str, now: float, *, lease_seconds: float) -> Job | None:
        """Claim one job as :meth:`claim_due` would; ``None`` if it is not due and pending.

        :class:`UnknownJobError` if there is no such job.
        """
        ...

    def renew_leases(
        self,
        owner: str,
        job_ids: Iterable[str],
        now: float,
        *,
        lease_seconds: float,
        attempts: Mapping[str, int] | None = None,
    ) -> LeaseRenewal:
        """Extend to ``now + lease_seconds`` the leases ``owner`` still holds among ``job_ids``.

        Unknown ids and jobs no longer held are simply not in ``held``.  With
        ``attempts`` (job id -> attempt), a job is held only on that attempt:
        the fencing token that tells an owner's stale attempt of a job from its
        current one (a job reclaimed by the same owner after its lease ran out).
        """
        ...

    def complete(
        self,
        job_id: str,
        owner: str,
        now: float,
        result: bytes | None = None,
        *,
        attempt: int | None = None,
    ) -> Job:
        """``RUNNING -> SUCCEEDED`` with ``result``, by the owner holding the job.

        A requested cancellation does not stop this (the work was done); the
        request stays on the record (``cancel_requested``).
        :class:`LeaseLostError` unless the job is running and held by
        ``owner`` (and, when ``attempt`` is given, is on that attempt: a
        fencing token against a stale run by the same owner).
        """
        ...

    def fail(
        self,
        job_id: str,
        owner: str,
        now: float,
        error: str,
        traceback: str | None = None,
        *,
        retry_at: float | None = None,
        attempt: int | None = None,
    ) -> Job:
        """Record a failed attempt, by the owner holding the job.

        If its cancellation was requested, the job becomes ``CANCELLED``.
        Otherwise, with ``retry_at`` and an attempt left, it goes back to
        ``PENDING`` due at ``retry_at``; else it becomes ``FAILED``.  ``error``
        and ``traceback`` are stored in every case.  Ownership is checked as for :meth:`complete`.
        """
        ...

    def mark_cancelled(
        self,
        job_id: str,
        owner: str | None,
        now: float,
        reason: str = "cancelled",
        *,
        attempt: int | None = None,
    ) -> Job:
        """``RUNNING -> CANCELLED``: the running owner stopped the job on request.

        Ownership is checked as for :meth:`complete`.  With ``owner=None`` the
        job is cancelled whoever holds it, or at once if it is pending (an
        operator's forced cancel, say after its owner died); a final job then
        raises :class:`IllegalTransitionError`.
        """
        ...

    def cancel(self, job_id: str, now: float, reason: str = "cancelled") -> Job:
        """Ask for a job's cancellation; returns the job as stored afterwards.

        ``PENDING`` becomes ``CANCELLED`` at once.  A ``RUNNING`` job gets
        ``cancel_requested`` (its owner sees it through
        :meth:`renew_leases` or :meth:`get` and asks the handler to stop; the
        attempt's end decides the state, see the module docstring).  A final
        job is returned unchanged: cancelling is idempotent, and the caller
        reads the outcome from the state.
        """
        ...

    def retry(self, job_id: str, now: float, run_at: float | None = None) -> Job:
        """Manual retry: ``FAILED``/``CANCELLED -> PENDING`` with attempts reset to 0.

        Due at ``run_at`` (default ``now``).  :class:`IllegalTransitionError`
        from other states; :class:`DuplicateJobError` if its idempotency key is
        now held by another unfinished job.  ``last_error`` is kept.
        """
        ...

    def recover_expired(self, now: float, *, interrupted_reason: str = "interrupted") -> list[Job]:
        """Take back every ``RUNNING`` job whose lease expired (``lease_expires_at <= now``).

        Each becomes ``PENDING`` (due ``now``) if it has an attempt left,
        ``CANCELLED`` if its cancellation was requested, else ``FAILED``; its
        ``last_error`` is ``interrupted_reason``.  Returns the recovered jobs
        in lease-expiry order.
        """
        ...

    def fail_corrupt(self, job_id: str, now: float, reason: str) -> None:
        """Mark a job that cannot be decoded ``FAILED`` with ``last_error`` naming ``reason``.

        For the job named by a :class:`CorruptJobError`: the row is repaired
        into a decodable failed job (fields that cannot be decoded are reset)
        so that reading, listing and claiming carry on.  Applies to a job in
        any state: this repair stands outside the transition table.
        :class:`UnknownJobError` if there is no such job.
        """
        ...

    def next_due(self) -> float | None:
        """The earliest ``run_at`` among ``PENDING`` jobs (maybe past), or ``None``."""
        ...

    def purge(self, finished_before: float) -> int:
        """Delete final jobs with ``finished_at < finished_before``; returns how many."""
        ...

    def delete(self, job_id: str) -> Job:
        """Delete one job in any state but RUNNING, atomically; returns the record
        deleted (its idempotency key is free again).  :class:`UnknownJobError`
        if there is none; :class:`JobRunningError`, deleting nothing, while it
        runs (cancel it first)."""
        ...

    def clear(self) -> int:
        """Delete every job, atomically (for tests and tools); returns how many.
        :class:`JobRunningError`, deleting nothing, while any job is RUNNING."""
        ...

    def close(self) -> None:
        """Release the store's resources.  Idempotent; other calls then raise ``ClosedError``."""
        ...


#: One item of ``complete_many``: ``(job_id, result, attempt)``.
Completion = tuple[str, "bytes | None", "int | None"]


def check_completions(items: object) -> list[tuple[str, bytes | None, int | None]]:
    """Validate the items of ``complete_many`` (see :class:`BatchCompletion`)."""
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise TypeError("items must be a sequence of (job_id, result, attempt) tuples")
    out = []
    for item in items:
        if not isinstance(item, tuple) or len(item) != 3:
            raise TypeError(f"each item must be a (job_id, result, attempt) tuple, got {item!r}")
        job_id, result, attempt = item
        out.append((check_job_id(job_id), check_result(result), check_attempt(attempt)))
    return out


@runtime_checkable
class BatchCompletion(Protocol):
    """Optional store extension: finish many attempts in one transaction.

    ``complete_many(owner, now, items)`` applies :meth:`JobStore.complete` to
    each ``(job_id, result, attempt)`` in one transaction (one fsync for all)
    and returns, in item order, the stored job or the per-item error that
    ``complete`` would have raised (:class:`LeaseLostError`,
    :class:`UnknownJobError`, :class:`CorruptJobError`): an item that cannot be
    completed does not stop the others.  A :class:`StoreError` means nothing
    was written.  The job manager uses it when a store has it.
    """

    def complete_many(
        self, owner: str, now: float, items: Sequence[tuple[str, bytes | None, int | None]]
    ) -> list[Job | JobError]: ...


# ---------------------------------------------------------------- argument checks


def check_owner(owner: object) -> str:
    return check_name("owner", owner)


def check_job_id(job_id: object) -> str:
    return check_name("job_id", job_id)


def check_now(now: object) -> float:
    return check_time("now", now)


def check_lease(lease_seconds: object) -> float:
    return check_duration("lease_seconds", lease_seconds)


def check_limit(limit: object, *, high: int | None = None) -> int:
    return check_int("limit", limit, low=1, high=high)


def check_attempt(attempt: object) -> int | None:
    return None if attempt is None else check_int("attempt", attempt, low=1)


def check_text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    return value


def check_optional_text(name: str, value: object) -> str | None:
    return None if value is None else check_text(name, value)


def check_result(result: object) -> bytes | None:
    if result is not None and not isinstance(result, bytes):
        raise TypeError(
            f"result must be bytes (an encoded payload) or None, got {type(result).__name__}"
        )
    return result


def check_new_job(job: object) -> Job:
    """``job`` is a :class:`Job` fit for insertion (new, pending, unowned)."""
    if not isinstance(job, Job):
        raise TypeError(f"expected a Job, got {type(job).__name__}")
    if (
        job.state is not JobState.PENDING
        or job.owner is not None
        or job.result is not None
        or job.finished_at is not None
    ):
        raise ValueError(
            f"job {job.id!r}: insert takes a new pending job with no owner, result or "
            f"finish time (got state {job.state})"
        )
    return job


def check_filters(
    states: Iterable[JobState | str] | None,
    types: Iterable[str] | None,
    since: float | None,
) -> tuple[frozenset[JobState] | None, frozenset[str] | None, float | None]:
    """Normalise :meth:`JobStore.list_jobs` filters (``None`` means no filter)."""
    if isinstance(states, str):
        raise TypeError("states must be a collection of states, not one str")
    if isinstance(types, str):
        raise TypeError("types must be a collection of type names, not one str")
    state_set = None if states is None else frozenset(parse_state(s) for s in states)
    type_set = None if types is None else frozenset(check_name("types item", t) for t in types)
    since_f = None if since is None else check_time("since", since)
    return state_set, type_set, since_f


def check_types(types: object) -> frozenset[str] | None:
    """Normalise ``claim_due``'s ``types`` (``None``: every type)."""
    _, type_set, _ = check_filters(None, types, None)  # type: ignore[arg-type]
    return type_set


def encode_cursor(job: Job) -> str:
    """The cursor that resumes a listing after ``job`` (opaque to callers)."""
    return f"{job.created_at!r}:{job.id}"


def decode_cursor(cursor: object) -> tuple[float, str]:
    """``(created_at, id)`` from :func:`encode_cursor`; ``ValueError`` if malformed."""
    if not isinstance(cursor, str):
        raise TypeError(f"after must be a cursor string, got {type(cursor).__name__}")
    stamp, sep, job_id = cursor.partition(":")
    try:
        created_at = check_time("cursor", float(stamp))
    except (TypeError, ValueError):
        created_at = None
    if not sep or not job_id or created_at is None:
        raise ValueError(f"invalid cursor {cursor!r}")
    return created_at, job_id


def claim_order_key(job: Job) -> tuple[int, float, float, str]:
    """Sort key of the claim order: priority (high first), run_at, created_at, id."""
    return (-job.priority, job.run_at, job.created_at, job.id)


def list_order_key(job: Job) -> tuple[float, str]:
    """Sort key of the listing order."""
    return (job.created_at, job.id)


def matches(
    job: Job,
    states: frozenset[JobState] | None,
    types: frozenset[str] | None,
    since: float | None,
) -> bool:
    """True if ``job`` passes normalised listing filters."""
    return (
        (states is None or job.state in states)
        and (types is None or job.type in types)
        and (since is None or job.created_at >= since)
    )


# ---------------------------------------------------------------- per-job rules
# Each takes the job as stored and returns it as it must be stored afterwards
# (or raises, changing nothing).  They never read a clock.


def is_due(job: Job, now: float) -> bool:
    return job.state is JobState.PENDING and job.run_at <= now


def check_attempts(attempts: object) -> dict[str, int] | None:
    """Validate ``renew_leases``'s ``attempts``: a mapping of job id to attempt (or None)."""
    if attempts is None:
        return None
    if not isinstance(attempts, Mapping):
        raise TypeError(f"attempts must be a mapping of job id to attempt, not {attempts!r}")
    checked: dict[str, int] = {}
    for job_id, attempt in attempts.items():
        number = check_attempt(attempt)
        if number is None:
            raise TypeError(f"attempts[{job_id!r}] must be an int, not None")
        checked[check_job_id(job_id)] = number
    return checked


def on_attempt(jobs: Iterable[Job], attempts: Mapping[str, int] | None) -> list[Job]:
    """The jobs among ``jobs`` that are on the attempt ``attempts`` names (all if None)."""
    if attempts is None:
        return list(jobs)
    return [job for job in jobs if attempts.get(job.id, job.attempt) == job.attempt]


def check_holder(job: Job, owner: str, attempt: int | None) -> None:
    """Raise :class:`LeaseLostError` unless ``owner`` holds the running ``job`` (on ``attempt``)."""
    if job.state is not JobState.RUNNING or job.owner != owner:
        raise LeaseLostError(job.id, owner, state=str(job.state), holder=job.owner)
    if attempt is not None and job.attempt != attempt:
        raise LeaseLostError(
            job.id,
            owner,
            state=str(job.state),
            holder=job.owner,
            detail=f"it is on attempt {job.attempt}, not {attempt}",
        )


def _to(job: Job, state: JobState, now: float, **changes: object) -> Job:
    check_transition(job.state, state, job_id=job.id)
    final = state in FINAL_STATES
    running = state is JobState.RUNNING
    defaults: dict[str, object] = {
        "state": state,
        "updated_at": now,
        "finished_at": now if final else None,
        "owner": job.owner if running else None,
        "lease_expires_at": job.lease_expires_at if running else None,
        # A cancel request stays on the record through the final state (see the
        # module docstring); a job going back to PENDING starts without one.
        "cancel_requested": job.cancel_requested if running or final else False,
    }
    defaults.update(changes)
    return dataclasses.replace(job, **defaults)  # type: ignore[arg-type]


def after_claim(job: Job, owner: str, now: float, lease_seconds: float) -> Job:
    return _to(
        job,
        JobState.RUNNING,
        now,
        owner=owner,
        lease_expires_at=now + lease_seconds,
        attempt=job.attempt + 1,
    )


def after_renew(job: Job, now: float, lease_seconds: float) -> Job:
    return dataclasses.replace(job, lease_expires_at=now + lease_seconds, updated_at=now)


def after_complete(
    job: Job, owner: str, now: float, result: bytes | None, attempt: int | None
) -> Job:
    check_holder(job, owner, attempt)
    return _to(job, JobState.SUCCEEDED, now, result=result)


def after_complete_many(
    batch: Sequence[tuple[str, bytes | None, int | None]],
    owner: str,
    now: float,
    load: Callable[[str], Job],
    *,
    lock_order: bool = False,
) -> tuple[list[Job | JobError], list[tuple[Job, Job]]]:
    """The rule of ``complete_many``: :func:`after_complete` for each item.

    ``load(job_id)`` reads a job (raising :class:`UnknownJobError` or
    :class:`CorruptJobError`).  Returns, in item order, each new job or the
    per-item error, and the ``(old, new)`` changes to write.  With
    ``lock_order`` the jobs are loaded in id order (a store that locks rows as
    it reads them then always locks in one order).  An id repeated in the
    batch sees its own earlier completion, so only the first one succeeds.
    """
    results: list[Job | JobError | None] = [None] * len(batch)
    done: dict[str, Job] = {}
    changes: list[tuple[Job, Job]] = []
    order = list(range(len(batch)))
    if lock_order:
        order.sort(key=lambda i: batch[i][0])
    for i in order:
        job_id, result, attempt = batch[i]
        try:
            old = done[job_id] if job_id in done else load(job_id)
            new = after_complete(old, owner, now, result, attempt)
        except (LeaseLostError, UnknownJobError, CorruptJobError) as exc:
            results[i] = exc
            continue
        done[job_id] = new
        changes.append((old, new))
        results[i] = new
    return [r for r in results if r is not None], changes


def after_fail(
    job: Job,
    owner: str,
    now: float,
    error: str,
    traceback: str | None,
    retry_at: float | None,
    attempt: int | None,
) -> Job:
    check_holder(job, owner, attempt)
    if job.cancel_requested:  # the attempt stopped (by an error) after the request
        return _to(job, JobState.CANCELLED, now, last_error=error, error_traceback=traceback)
    if retry_at is not None and job.attempt < job.max_attempts:
        return _to(
            job,
            JobState.PENDING,
            now,
            run_at=retry_at,
            last_error=error,
            error_traceback=traceback,
        )
    return _to(job, JobState.FAILED, now, last_error=error, error_traceback=traceback)


def after_mark_cancelled(
    job: Job, owner: str | None, now: float, reason: str, attempt: int | None
) -> Job:
    if owner is not None:
        check_holder(job, owner, attempt)
    return _to(job, JobState.CANCELLED, now, last_error=reason, error_traceback=None)


def after_cancel(job: Job, now: float, reason: str) -> Job:
    if job.state is JobState.PENDING:
        return _to(job, JobState.CANCELLED, now, last_error=reason, error_traceback=None)
    if job.state is JobState.RUNNING:
        if job.cancel_requested:
            return job
        return dataclasses.replace(job, cancel_requested=True, updated_at=now)
    return job


def after_retry(job: Job, now: float, run_at: float) -> Job:
    if job.state not in (JobState.FAILED, JobState.CANCELLED):
        raise IllegalTransitionError(
            job.id,
            str(job.state),
            str(JobState.PENDING),
            "a manual retry takes a failed or cancelled job",
        )
    return _to(job, JobState.PENDING, now, run_at=run_at, attempt=0, result=None)


def after_recover(job: Job, now: float, reason: str) -> Job:
    if job.cancel_requested:
        return _to(job, JobState.CANCELLED, now, last_error=reason, error_traceback=None)
    if job.attempt < job.max_attempts:
        return _to(job, JobState.PENDING, now, run_at=now, last_error=reason, error_traceback=None)
    return _to(job, JobState.FAILED, now, last_error=reason, error_traceback=None)


def corrupt_reason(reason: str) -> str:
    return f"corrupt job: {reason}"


def after_fail_corrupt(job: Job, now: float, reason: str) -> Job:
    """The repaired row as a failed job (outside the transition table, see states)."""
    return dataclasses.replace(
        job,
        state=JobState.FAILED,
        updated_at=now,
        finished_at=now,
        owner=None,
        lease_expires_at=None,
        cancel_requested=False,
        last_error=corrupt_reason(reason),
        error_traceback=None,
    )
