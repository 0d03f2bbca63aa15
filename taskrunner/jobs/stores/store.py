"""The job store contract: what every store promises, and nothing else.

:class:`JobStore` is the one interface between the job manager and storage.
:class:`~taskrunner.jobs.stores.memory_store.MemoryJobStore` (tests, one process),
:class:`~taskrunner.jobs.stores.sqlite_store.SQLiteJobStore` (the embedded default,
several processes on one machine) and
:class:`~taskrunner.jobs.stores.postgres_store.PostgresJobStore` (many machines)
implement it; ``tests/test_job_store_contract.py`` runs one suite over all.
The argument checks and per-job rules they share are in
:mod:`taskrunner.jobs.stores.rules`; the public methods, which validate arguments and
apply those rules, are written once in :mod:`taskrunner.jobs.stores.base_store`.

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
  :meth:`~JobStore.mark_cancelled`, or puts it back uncounted with
  :meth:`~JobStore.snooze`.  Once the deadline passes,
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
  ``KeyError``) for an unknown id; :class:`DuplicateJobError` for a taken id,
  idempotency key or unique key (enforced by the storage's own unique constraints);
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
* **Queues.**  Every job belongs to a named queue (``Job.queue``).  The
  stores also implement :class:`~taskrunner.jobs.queues.QueueControl`: a queue
  paused with ``pause_queue`` is skipped by every claim of every claimer until
  ``resume_queue``, and ``list_queues`` reports each queue's depth.
* **Thread-safety.**  Every method may be called from any thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

from taskrunner.jobs.errors import JobError
from taskrunner.jobs.model import Job
from taskrunner.jobs.states import JobState

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
        finished jobs may be reused.  A job with a ``unique_key`` is refused
        while another job holds that key with ``unique_until`` after this
        job's ``created_at`` (in any state); a holder whose window has ended
        gives the key up (its ``unique_key`` and ``unique_until`` are cleared).
        See :mod:`taskrunner.jobs.unique`.
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
        queues: Mapping[str, int] | None = None,
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

        Jobs of a paused queue (see :class:`~taskrunner.jobs.queues.QueueControl`)
        are never claimed.  With ``queues`` (queue name -> the most jobs to
        take from it, >= 0), only jobs of those queues are claimed, at most
        that many from each (and ``limit`` in all): a manager's per-queue
        concurrency.  The stores answer it from an index on ``(queue, type,
        claim order)`` of pending jobs.
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

    def snooze(
        self,
        job_id: str,
        owner: str,
        now: float,
        run_at: float,
        *,
        attempt: int | None = None,
    ) -> Job:
        """``RUNNING -> PENDING`` due at ``run_at``, by the owner holding the job, uncounted.

        The handler asked to run again later (``Snooze``): the attempt does not
        count against ``max_attempts`` (``attempt`` goes back by one) and
        ``last_error`` is kept.  If its cancellation was requested, the job
        becomes ``CANCELLED`` instead.  Ownership is checked as for
        :meth:`complete`.
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
