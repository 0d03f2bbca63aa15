"""A job store in memory: for tests, the mock clock and single-process use.

It keeps the whole :class:`~taskrunner.jobs.store.JobStore` contract except
durability: duplicate ids and idempotency keys are refused, claims are
exclusive, leases are checked, and every operation is atomic, because each runs
entirely under one lock.  Jobs are immutable, so the ones it hands out are
never changed behind the caller's back.

Costs: ``get`` and ``insert`` are O(1) (plus O(n) to keep the listing order on
insert); claiming, recovery and ``next_due`` scan all jobs, O(n).  It is meant
for thousands of jobs, not millions.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Mapping, Sequence

from taskrunner.errors import ClosedError
from taskrunner.jobs.errors import (
    DuplicateJobError,
    JobError,
    JobRunningError,
    StoreError,
    UnknownJobError,
)
from taskrunner.jobs.model import Job, check_name, check_time
from taskrunner.jobs.states import JobState
from taskrunner.jobs.store import (
    MAX_PAGE_SIZE,
    FaultInjector,
    JobPage,
    LeaseRenewal,
    after_cancel,
    after_claim,
    after_complete,
    after_complete_many,
    after_fail,
    after_fail_corrupt,
    after_mark_cancelled,
    after_recover,
    after_renew,
    after_retry,
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
    claim_order_key,
    decode_cursor,
    encode_cursor,
    is_due,
    matches,
    on_attempt,
)

__all__ = ["MemoryJobStore"]


class MemoryJobStore:
    """A :class:`~taskrunner.jobs.store.JobStore` held in this process's memory.

    Thread-safe: one lock serialises every operation.  ``fault_injector`` (for
    tests) is called with the operation's name before each write, under the
    lock; if it raises, nothing is changed and :class:`StoreError` is raised.
    """

    def __init__(self, *, fault_injector: FaultInjector | None = None) -> None:
        self._fault_injector = fault_injector
        # _lock guards every attribute below; it is held for the whole of each
        # operation, which is what makes each one atomic.
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        # (created_at, id) of every job, sorted: the listing order.
        self._order: list[tuple[float, str]] = []
        # idempotency key -> id of the unfinished job holding it.
        self._keys: dict[str, str] = {}
        self._closed = False

    # ------------------------------------------------------------ helpers (under _lock)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the job store is closed")

    def _get(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise UnknownJobError(job_id) from None

    def _check_key(self, job: Job, taken: dict[str, str]) -> None:
        """Raise if ``job`` would hold a key that another unfinished job holds."""
        key = job.idempotency_key
        if key is None or job.is_final:
            return
        holder = taken.get(key)
        if holder is not None and holder != job.id:
            raise DuplicateJobError(job.id, existing_id=holder, idempotency_key=key)

    def _inject(self, operation: str) -> None:
        if self._fault_injector is None:
            return
        try:
            self._fault_injector(operation)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"{operation}: write failed: {exc}", exc) from exc

    def _write(self, operation: str, jobs: Sequence[Job]) -> None:
        """Store ``jobs`` (new or changed), all checks already passed."""
        if not jobs:
            return
        self._inject(operation)
        for job in jobs:
            old = self._jobs.get(job.id)
            if old is None:
                bisect.insort(self._order, (job.created_at, job.id))
            elif old.idempotency_key is not None and self._keys.get(old.idempotency_key) == job.id:
                del self._keys[old.idempotency_key]
            self._jobs[job.id] = job
            if job.idempotency_key is not None and not job.is_final:
                self._keys[job.idempotency_key] = job.id

    # ------------------------------------------------------------ the contract

    def insert(self, job: Job) -> None:
        self.insert_many([job])

    def insert_many(self, jobs: Sequence[Job]) -> None:
        batch = [check_new_job(job) for job in jobs]
        with self._lock:
            self._check_open()
            ids: set[str] = set()
            keys = dict(self._keys)
            for job in batch:
                if job.id in self._jobs or job.id in ids:
                    raise DuplicateJobError(job.id, existing_id=job.id)
                ids.add(job.id)
                self._check_key(job, keys)
                if job.idempotency_key is not None:
                    keys[job.idempotency_key] = job.id
            self._write("insert", batch)

    def get(self, job_id: str) -> Job:
        check_job_id(job_id)
        with self._lock:
            self._check_open()
            return self._get(job_id)

    def find_by_idempotency_key(self, key: str) -> Job | None:
        check_name("key", key)
        with self._lock:
            self._check_open()
            job_id = self._keys.get(key)
            return None if job_id is None else self._jobs[job_id]

    def list_jobs(
        self,
        *,
        states: Iterable[JobState | str] | None = None,
        types: Iterable[str] | None = None,
        since: float | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> JobPage:
        state_set, type_set, since_f = check_filters(states, types, since)
        limit = check_limit(limit, high=MAX_PAGE_SIZE)
        position = None if after is None else decode_cursor(after)
        with self._lock:
            self._check_open()
            start = 0 if position is None else bisect.bisect_right(self._order, position)
            found: list[Job] = []
            for _, job_id in self._order[start:]:
                job = self._jobs[job_id]
                if matches(job, state_set, type_set, since_f):
                    found.append(job)
                    if len(found) > limit:
                        break
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
        state_set, type_set, since_f = check_filters(states, types, since)
        with self._lock:
            self._check_open()
            return sum(
                1 for job in self._jobs.values() if matches(job, state_set, type_set, since_f)
            )

    def claim_due(
        self,
        owner: str,
        now: float,
        *,
        limit: int,
        lease_seconds: float,
        types: Iterable[str] | None = None,
    ) -> list[Job]:
        check_owner(owner)
        now = check_now(now)
        limit = check_limit(limit)
        lease = check_lease(lease_seconds)
        wanted = check_types(types)
        with self._lock:
            self._check_open()
            due = sorted(
                (
                    j
                    for j in self._jobs.values()
                    if is_due(j, now) and (wanted is None or j.type in wanted)
                ),
                key=claim_order_key,
            )
            claimed = [after_claim(job, owner, now, lease) for job in due[:limit]]
            self._write("claim_due", claimed)
            return claimed

    def claim(self, job_id: str, owner: str, now: float, *, lease_seconds: float) -> Job | None:
        check_job_id(job_id)
        check_owner(owner)
        now = check_now(now)
        lease = check_lease(lease_seconds)
        with self._lock:
            self._check_open()
            job = self._get(job_id)
            if not is_due(job, now):
                return None
            claimed = after_claim(job, owner, now, lease)
            self._write("claim", [claimed])
            return claimed

    def renew_leases(
        self,
        owner: str,
        job_ids: Iterable[str],
        now: float,
        *,
        lease_seconds: float,
        attempts: Mapping[str, int] | None = None,
    ) -> LeaseRenewal:
        check_owner(owner)
        ids = [check_job_id(job_id) for job_id in job_ids]
        now = check_now(now)
        lease = check_lease(lease_seconds)
        on = check_attempts(attempts)
        with self._lock:
            self._check_open()
            held = on_attempt(
                (
                    job
                    for job in (self._jobs.get(job_id) for job_id in dict.fromkeys(ids))
                    if job is not None and job.state is JobState.RUNNING and job.owner == owner
                ),
                on,
            )
            self._write("renew_leases", [after_renew(job, now, lease) for job in held])
            return LeaseRenewal(
                frozenset(job.id for job in held),
                frozenset(job.id for job in held if job.cancel_requested),
            )

    def complete(
        self,
        job_id: str,
        owner: str,
        now: float,
        result: bytes | None = None,
        *,
        attempt: int | None = None,
    ) -> Job:
        check_job_id(job_id)
        check_owner(owner)
        now = check_now(now)
        check_result(result)
        attempt = check_attempt(attempt)
        with self._lock:
            self._check_open()
            job = after_complete(self._get(job_id), owner, now, result, attempt)
            self._write("complete", [job])
            return job

    def complete_many(
        self, owner: str, now: float, items: Sequence[tuple[str, bytes | None, int | None]]
    ) -> list[Job | JobError]:
        """See :class:`~taskrunner.jobs.store.BatchCompletion`: all in one step."""
        check_owner(owner)
        now = check_now(now)
        batch = check_completions(items)
        with self._lock:
            self._check_open()
            out, changes = after_complete_many(batch, owner, now, self._get)
            self._write("complete", [new for _, new in changes])
            return out

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
        check_job_id(job_id)
        check_owner(owner)
        now = check_now(now)
        check_text("error", error)
        check_optional_text("traceback", traceback)
        retry_at = None if retry_at is None else check_time("retry_at", retry_at)
        attempt = check_attempt(attempt)
        with self._lock:
            self._check_open()
            job = after_fail(self._get(job_id), owner, now, error, traceback, retry_at, attempt)
            self._write("fail", [job])
            return job

    def mark_cancelled(
        self,
        job_id: str,
        owner: str | None,
        now: float,
        reason: str = "cancelled",
        *,
        attempt: int | None = None,
    ) -> Job:
        check_job_id(job_id)
        if owner is not None:
            check_owner(owner)
        now = check_now(now)
        check_text("reason", reason)
        attempt = check_attempt(attempt)
        with self._lock:
            self._check_open()
            job = after_mark_cancelled(self._get(job_id), owner, now, reason, attempt)
            self._write("mark_cancelled", [job])
            return job

    def cancel(self, job_id: str, now: float, reason: str = "cancelled") -> Job:
        check_job_id(job_id)
        now = check_now(now)
        check_text("reason", reason)
        with self._lock:
            self._check_open()
            old = self._get(job_id)
            job = after_cancel(old, now, reason)
            if job is not old:
                self._write("cancel", [job])
            return job

    def retry(self, job_id: str, now: float, run_at: float | None = None) -> Job:
        check_job_id(job_id)
        now = check_now(now)
        run_at = now if run_at is None else check_time("run_at", run_at)
        with self._lock:
            self._check_open()
            job = after_retry(self._get(job_id), now, run_at)
            self._check_key(job, self._keys)
            self._write("retry", [job])
            return job

    def recover_expired(self, now: float, *, interrupted_reason: str = "interrupted") -> list[Job]:
        now = check_now(now)
        check_text("interrupted_reason", interrupted_reason)
        with self._lock:
            self._check_open()
            expired = sorted(
                (
                    job
                    for job in self._jobs.values()
                    if job.state is JobState.RUNNING
                    and job.lease_expires_at is not None
                    and job.lease_expires_at <= now
                ),
                key=lambda job: (job.lease_expires_at, job.id),
            )
            recovered = [after_recover(job, now, interrupted_reason) for job in expired]
            self._write("recover_expired", recovered)
            return recovered

    def fail_corrupt(self, job_id: str, now: float, reason: str) -> None:
        check_job_id(job_id)
        now = check_now(now)
        check_text("reason", reason)
        with self._lock:
            self._check_open()
            self._write("fail_corrupt", [after_fail_corrupt(self._get(job_id), now, reason)])

    def next_due(self) -> float | None:
        with self._lock:
            self._check_open()
            return min(
                (job.run_at for job in self._jobs.values() if job.state is JobState.PENDING),
                default=None,
            )

    def purge(self, finished_before: float) -> int:
        limit = check_time("finished_before", finished_before)
        with self._lock:
            self._check_open()
            doomed = {
                job.id
                for job in self._jobs.values()
                if job.finished_at is not None and job.finished_at < limit
            }
            if not doomed:
                return 0
            self._inject("purge")
            for job_id in doomed:
                del self._jobs[job_id]  # final jobs hold no idempotency key
            self._order = [entry for entry in self._order if entry[1] not in doomed]
            return len(doomed)

    def delete(self, job_id: str) -> Job:
        check_job_id(job_id)
        with self._lock:
            self._check_open()
            job = self._get(job_id)
            if job.state is JobState.RUNNING:
                raise JobRunningError(job_id, "delete")
            self._inject("delete")
            del self._jobs[job_id]
            entry = (job.created_at, job.id)
            at = bisect.bisect_left(self._order, entry)
            if at < len(self._order) and self._order[at] == entry:
                del self._order[at]
            key = job.idempotency_key
            if key is not None and self._keys.get(key) == job_id:
                del self._keys[key]
            return job

    def clear(self) -> int:
        with self._lock:
            self._check_open()
            for job in self._jobs.values():
                if job.state is JobState.RUNNING:
                    raise JobRunningError(job.id, "clear")
            count = len(self._jobs)
            if count:
                self._inject("clear")
            self._jobs.clear()
            self._order.clear()
            self._keys.clear()
            return count

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._jobs.clear()
            self._order.clear()
            self._keys.clear()

    def __enter__(self) -> MemoryJobStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
