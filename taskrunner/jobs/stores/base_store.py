"""The public methods of every job store, written once: check the arguments, apply the rules.

:class:`BaseJobStore` implements each method of the
:class:`~taskrunner.jobs.stores.store.JobStore` contract (and
:class:`~taskrunner.jobs.stores.store.BatchCompletion`) the same way for every store:
it validates and normalises the arguments with the checks of
:mod:`taskrunner.jobs.stores.rules` (so bad input raises ``TypeError``/``ValueError``
naming the argument before the store is touched), settles the cases that need
no storage (an empty batch, an empty filter), and hands the rest to a few
primitives that each store implements for its storage:

* :meth:`~BaseJobStore._change` reads one job, computes its new form with a
  per-job rule, and writes it, in one atomic step;
* :meth:`~BaseJobStore._insert`, :meth:`~BaseJobStore._claim_due`,
  :meth:`~BaseJobStore._renew`, :meth:`~BaseJobStore._complete_many`,
  :meth:`~BaseJobStore._recover` and :meth:`~BaseJobStore._fail_corrupt`
  choose the jobs and write the results atomically;
* :meth:`~BaseJobStore._set_paused` and :meth:`~BaseJobStore._list_queues`
  keep and report the queues (:class:`~taskrunner.jobs.queues.QueueControl`);
* the reads (:meth:`~BaseJobStore._get`, :meth:`~BaseJobStore._find_key`,
  :meth:`~BaseJobStore._list`, :meth:`~BaseJobStore._count`) and
  :meth:`~BaseJobStore._purge`.

Two hooks let a store refuse or adapt values its storage cannot hold
(PostgreSQL's ``text`` cannot hold NUL): :meth:`~BaseJobStore._name` for
names (ids, owners, types, keys) and :meth:`~BaseJobStore._text` for free
text (errors, tracebacks, reasons).

Thread-safety is the subclass's: this class holds no state of its own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence

from taskrunner.jobs.errors import JobError
from taskrunner.jobs.model import Job, check_name, check_time
from taskrunner.jobs.queues import QueueInfo, check_claim_queues, check_queue
from taskrunner.jobs.states import JobState
from taskrunner.jobs.stores.rules import (
    after_cancel,
    after_claim,
    after_complete,
    after_fail,
    after_mark_cancelled,
    after_retry,
    after_snooze,
    check_attempt,
    check_attempts,
    check_completions,
    check_filters,
    check_job_id,
    check_lease,
    check_limit,
    check_new_job,
    check_now,
    check_optional_text,
    check_owner,
    check_result,
    check_text,
    check_types,
    decode_cursor,
    encode_cursor,
    is_due,
)
from taskrunner.jobs.stores.schedule_store import ScheduleMethods
from taskrunner.jobs.stores.store import MAX_PAGE_SIZE, JobPage, LeaseRenewal

__all__ = ["BaseJobStore", "Filters"]

#: Normalised listing filters: states, types, since (``None``: no filter; never empty sets).
Filters = tuple["frozenset[JobState] | None", "frozenset[str] | None", "float | None"]


class BaseJobStore(ScheduleMethods, ABC):
    """The :class:`~taskrunner.jobs.stores.store.JobStore` methods over a store's primitives.

    A subclass implements the abstract primitives (each one atomic, and
    thread-safe as the store promises) and ``next_due``/``close``.  The
    primitives receive arguments already checked; the ones that take a
    collection never receive an empty one.  The schedule methods and their
    primitives are :class:`~taskrunner.jobs.stores.schedule_store.ScheduleMethods`'.
    """

    __slots__ = ()

    # ------------------------------------------------------------ hooks

    def _name(self, name: str, value: str) -> str:
        """A checked name (``name`` says which argument) as the storage can hold it."""
        return value

    def _text(self, value: str) -> str:
        """Free text as it is stored."""
        return value

    def _storable(self, job: Job) -> Job:
        """``job`` (already a valid new job), or ``ValueError`` if the storage cannot hold it."""
        return job

    # ------------------------------------------------------------ primitives

    @abstractmethod
    def _ensure_open(self) -> None:
        """Raise ``ClosedError`` if the store is closed."""

    @abstractmethod
    def _insert(self, batch: Sequence[Job]) -> None:
        """Insert the new jobs of ``batch`` (not empty), all or none."""

    @abstractmethod
    def _get(self, job_id: str) -> Job:
        """The stored job (:class:`~taskrunner.jobs.errors.UnknownJobError` if none)."""

    @abstractmethod
    def _find_key(self, key: str) -> Job | None:
        """The unfinished job holding idempotency ``key``."""

    @abstractmethod
    def _list(self, filters: Filters, limit: int, position: tuple[float, str] | None) -> list[Job]:
        """Up to ``limit`` jobs after ``position`` matching ``filters``, in listing order."""

    @abstractmethod
    def _count(self, filters: Filters) -> int:
        """How many jobs match ``filters``."""

    @abstractmethod
    def _claim_due(
        self,
        owner: str,
        now: float,
        limit: int,
        lease: float,
        types: frozenset[str] | None,
        queues: Mapping[str, int] | None,
    ) -> list[Job]:
        """Claim up to ``limit`` due jobs (of ``types``, not empty, if given), atomically,
        never from a paused queue; with ``queues`` (not empty, every cap >= 1), only
        from those queues, at most ``queues[q]`` from queue ``q``."""

    @abstractmethod
    def _set_paused(self, queue: str, paused: bool, now: float) -> bool:
        """Store ``queue``'s paused flag; True if it changed."""

    @abstractmethod
    def _list_queues(self, now: float) -> list[QueueInfo]:
        """``list_queues``."""

    @abstractmethod
    def _change(self, operation: str, job_id: str, change: Callable[[Job], Job]) -> Job:
        """Read one job, compute its new form with ``change``, and write it, atomically.

        ``change`` may run more than once (a store may retry the transaction).
        When it returns the job it was given, nothing is written."""

    @abstractmethod
    def _renew(
        self,
        owner: str,
        ids: Sequence[str],
        now: float,
        lease: float,
        attempts: Mapping[str, int] | None,
    ) -> LeaseRenewal:
        """``renew_leases`` for ``ids`` (distinct, not empty)."""

    @abstractmethod
    def _complete_many(
        self, owner: str, now: float, batch: Sequence[tuple[str, bytes | None, int | None]]
    ) -> list[Job | JobError]:
        """``complete_many`` for ``batch`` (not empty), in one atomic step."""

    @abstractmethod
    def _recover(self, now: float, reason: str) -> list[Job]:
        """``recover_expired``."""

    @abstractmethod
    def _fail_corrupt(self, job_id: str, now: float, reason: str) -> None:
        """``fail_corrupt``."""

    @abstractmethod
    def _purge(self, finished_before: float) -> int:
        """``purge``."""

    @abstractmethod
    def _delete(self, job_id: str) -> Job:
        """``delete``: atomically, refused with JobRunningError while it runs."""

    @abstractmethod
    def _clear(self) -> int:
        """``clear``: atomically, refused with JobRunningError while any job runs."""

    @abstractmethod
    def next_due(self) -> float | None:
        """The earliest ``run_at`` among ``PENDING`` jobs (maybe past), or ``None``."""

    @abstractmethod
    def close(self) -> None:
        """Release the store's resources.  Idempotent; other calls then raise ``ClosedError``."""

    # ------------------------------------------------------------ argument checks

    def _job_id(self, job_id: object) -> str:
        return self._name("job_id", check_job_id(job_id))

    def _owner(self, owner: object) -> str:
        return self._name("owner", check_owner(owner))

    def _filters(
        self,
        states: Iterable[JobState | str] | None,
        types: Iterable[str] | None,
        since: float | None,
    ) -> Filters | None:
        """Checked filters, or ``None`` when they match nothing (an empty collection)."""
        state_set, type_set, since_f = check_filters(states, types, since)
        for name in type_set or ():
            self._name("types item", name)
        if state_set == frozenset() or type_set == frozenset():
            return None
        return state_set, type_set, since_f

    # ------------------------------------------------------------ the contract

    def insert(self, job: Job) -> None:
        self.insert_many([job])

    def _checked_new(self, jobs: Sequence[Job]) -> list[Job]:
        """``jobs`` checked as new jobs this storage can hold (``insert_many``'s checks)."""
        return [self._storable(check_new_job(job)) for job in jobs]

    def insert_many(self, jobs: Sequence[Job]) -> None:
        batch = self._checked_new(jobs)
        if not batch:
            self._ensure_open()
            return
        self._insert(batch)

    def get(self, job_id: str) -> Job:
        return self._get(self._job_id(job_id))

    def find_by_idempotency_key(self, key: str) -> Job | None:
        return self._find_key(self._name("key", check_name("key", key)))

    def list_jobs(
        self,
        *,
        states: Iterable[JobState | str] | None = None,
        types: Iterable[str] | None = None,
        since: float | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> JobPage:
        filters = self._filters(states, types, since)
        limit = check_limit(limit, high=MAX_PAGE_SIZE)
        position = None if after is None else decode_cursor(after)
        if position is not None:
            self._name("after", position[1])
        if filters is None:
            self._ensure_open()
            return JobPage((), None)
        found = self._list(filters, limit + 1, position)
        if len(found) > limit:
            return JobPage(tuple(found[:limit]), encode_cursor(found[limit - 1]))
        return JobPage(tuple(found), None)

    def count_jobs(
        self,
        *,
        states: Iterable[JobState | str] | None = None,
        types: Iterable[str] | None = None,
        since: float | None = None,
    ) -> int:
        filters = self._filters(states, types, since)
        if filters is None:
            self._ensure_open()
            return 0
        return self._count(filters)

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
        owner = self._owner(owner)
        now = check_now(now)
        limit = check_limit(limit)
        lease = check_lease(lease_seconds)
        wanted = check_types(types)
        for name in wanted or ():
            self._name("types item", name)
        caps = check_claim_queues(queues)
        if caps is not None:
            caps = {queue: cap for queue, cap in caps.items() if cap > 0}
        if (wanted is not None and not wanted) or caps == {}:
            self._ensure_open()
            return []
        return self._claim_due(owner, now, limit, lease, wanted, caps)

    def pause_queue(self, queue: str, now: float) -> bool:
        """See :class:`~taskrunner.jobs.queues.QueueControl`."""
        return self._set_paused(check_queue(queue), True, check_now(now))

    def resume_queue(self, queue: str, now: float) -> bool:
        """See :class:`~taskrunner.jobs.queues.QueueControl`."""
        return self._set_paused(check_queue(queue), False, check_now(now))

    def list_queues(self, now: float) -> list[QueueInfo]:
        """See :class:`~taskrunner.jobs.queues.QueueControl`."""
        return self._list_queues(check_now(now))

    def claim(self, job_id: str, owner: str, now: float, *, lease_seconds: float) -> Job | None:
        job_id = self._job_id(job_id)
        owner = self._owner(owner)
        now = check_now(now)
        lease = check_lease(lease_seconds)
        claimed: list[Job] = []

        def change(job: Job) -> Job:
            claimed.clear()  # the store may run this again (a retried transaction)
            if not is_due(job, now):
                return job
            claimed.append(after_claim(job, owner, now, lease))
            return claimed[0]

        self._change("claim", job_id, change)
        return claimed[0] if claimed else None

    def renew_leases(
        self,
        owner: str,
        job_ids: Iterable[str],
        now: float,
        *,
        lease_seconds: float,
        attempts: Mapping[str, int] | None = None,
    ) -> LeaseRenewal:
        owner = self._owner(owner)
        ids = list(dict.fromkeys(self._job_id(job_id) for job_id in job_ids))
        now = check_now(now)
        lease = check_lease(lease_seconds)
        on = check_attempts(attempts)
        if not ids:
            self._ensure_open()
            return LeaseRenewal(frozenset(), frozenset())
        return self._renew(owner, ids, now, lease, on)

    def complete(
        self,
        job_id: str,
        owner: str,
        now: float,
        result: bytes | None = None,
        *,
        attempt: int | None = None,
    ) -> Job:
        job_id = self._job_id(job_id)
        owner = self._owner(owner)
        now = check_now(now)
        check_result(result)
        attempt = check_attempt(attempt)
        return self._change(
            "complete", job_id, lambda job: after_complete(job, owner, now, result, attempt)
        )

    def complete_many(
        self, owner: str, now: float, items: Sequence[tuple[str, bytes | None, int | None]]
    ) -> list[Job | JobError]:
        """See :class:`~taskrunner.jobs.stores.store.BatchCompletion`: one atomic step for all."""
        owner = self._owner(owner)
        now = check_now(now)
        batch = check_completions(items)
        for job_id, _, _ in batch:
            self._name("job_id", job_id)
        if not batch:
            self._ensure_open()
            return []
        return self._complete_many(owner, now, batch)

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
        job_id = self._job_id(job_id)
        owner = self._owner(owner)
        now = check_now(now)
        error = self._text(check_text("error", error))
        checked = check_optional_text("traceback", traceback)
        trace = None if checked is None else self._text(checked)
        retry_time = None if retry_at is None else check_time("retry_at", retry_at)
        attempt = check_attempt(attempt)
        return self._change(
            "fail",
            job_id,
            lambda job: after_fail(job, owner, now, error, trace, retry_time, attempt),
        )

    def snooze(
        self,
        job_id: str,
        owner: str,
        now: float,
        run_at: float,
        *,
        attempt: int | None = None,
    ) -> Job:
        job_id = self._job_id(job_id)
        owner = self._owner(owner)
        now = check_now(now)
        due = check_time("run_at", run_at)
        attempt = check_attempt(attempt)
        return self._change(
            "snooze", job_id, lambda job: after_snooze(job, owner, now, due, attempt)
        )

    def mark_cancelled(
        self,
        job_id: str,
        owner: str | None,
        now: float,
        reason: str = "cancelled",
        *,
        attempt: int | None = None,
    ) -> Job:
        job_id = self._job_id(job_id)
        holder = None if owner is None else self._owner(owner)
        now = check_now(now)
        reason = self._text(check_text("reason", reason))
        attempt = check_attempt(attempt)
        return self._change(
            "mark_cancelled",
            job_id,
            lambda job: after_mark_cancelled(job, holder, now, reason, attempt),
        )

    def cancel(self, job_id: str, now: float, reason: str = "cancelled") -> Job:
        job_id = self._job_id(job_id)
        now = check_now(now)
        reason = self._text(check_text("reason", reason))
        return self._change("cancel", job_id, lambda job: after_cancel(job, now, reason))

    def retry(self, job_id: str, now: float, run_at: float | None = None) -> Job:
        job_id = self._job_id(job_id)
        now = check_now(now)
        due = now if run_at is None else check_time("run_at", run_at)
        return self._change("retry", job_id, lambda job: after_retry(job, now, due))

    def recover_expired(self, now: float, *, interrupted_reason: str = "interrupted") -> list[Job]:
        now = check_now(now)
        reason = self._text(check_text("interrupted_reason", interrupted_reason))
        return self._recover(now, reason)

    def fail_corrupt(self, job_id: str, now: float, reason: str) -> None:
        job_id = self._job_id(job_id)
        now = check_now(now)
        reason = self._text(check_text("reason", reason))
        self._fail_corrupt(job_id, now, reason)

    def purge(self, finished_before: float) -> int:
        return self._purge(check_time("finished_before", finished_before))

    def delete(self, job_id: str) -> Job:
        return self._delete(self._job_id(job_id))

    def clear(self) -> int:
        return self._clear()
