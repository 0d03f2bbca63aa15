"""A job store in memory: for tests, the mock clock and single-process use.

It keeps the whole :class:`~taskrunner.jobs.stores.store.JobStore` contract except
durability: duplicate ids and idempotency keys are refused, claims are
exclusive, leases are checked, and every operation is atomic, because each runs
entirely under one lock.  Jobs are immutable, so the ones it hands out are
never changed behind the caller's back.

Costs: ``get`` and ``insert`` are O(1) (plus O(n) to keep the listing order on
insert); claiming, recovery, ``next_due`` and ``list_queues`` scan all jobs, O(n).  It is meant
for thousands of jobs, not millions.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import threading
from collections.abc import Callable, Mapping, Sequence

from taskrunner.errors import ClosedError
from taskrunner.jobs.errors import (
    DuplicateJobError,
    JobError,
    JobRunningError,
    StoreError,
    UnknownJobError,
)
from taskrunner.jobs.model import Job
from taskrunner.jobs.queues import QueueInfo, queue_info, take_by_queue
from taskrunner.jobs.schedule_model import Schedule, after_put
from taskrunner.jobs.states import JobState
from taskrunner.jobs.stores.base_store import BaseJobStore, Filters
from taskrunner.jobs.stores.rules import (
    after_claim,
    after_complete_many,
    after_fail_corrupt,
    after_recover,
    after_renew,
    claim_order_key,
    is_due,
    matches,
    on_attempt,
)
from taskrunner.jobs.stores.schedule_store import Plan
from taskrunner.jobs.stores.store import (
    FaultInjector,
    LeaseRenewal,
)

__all__ = ["MemoryJobStore"]


class MemoryJobStore(BaseJobStore):
    """A :class:`~taskrunner.jobs.stores.store.JobStore` held in this process's memory.

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
        # queue name -> paused, for every queue ever paused or resumed.
        self._queues: dict[str, bool] = {}
        # unique key -> id of the job holding it (in any state, until released).
        self._uniques: dict[str, str] = {}
        # Periodic schedules by name.
        self._schedules: dict[str, Schedule] = {}
        self._closed = False

    # ------------------------------------------------------------ helpers (under _lock)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the job store is closed")

    def _lookup(self, job_id: str) -> Job:
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

    def _check_unique(self, job: Job, batch: dict[str, Job], released: dict[str, Job]) -> None:
        """Raise if ``job``'s unique key is held within its window; else note the
        expired holder to release (as the SQL stores' _release_unique_keys does)."""
        key = job.unique_key
        assert key is not None
        mate = batch.get(key)
        if mate is not None:  # two jobs of one batch: the SQL stores release keys first
            raise DuplicateJobError(job.id, existing_id=mate.id, unique_key=key)
        holder_id = self._uniques.get(key)
        if holder_id is None:
            return
        holder = self._jobs[holder_id]
        if holder.unique_until is not None and holder.unique_until > job.created_at:
            raise DuplicateJobError(job.id, existing_id=holder.id, unique_key=key)
        released[holder.id] = dataclasses.replace(holder, unique_key=None, unique_until=None)

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
            if (
                old is not None
                and old.unique_key is not None
                and old.unique_key != job.unique_key
                and self._uniques.get(old.unique_key) == job.id
            ):
                del self._uniques[old.unique_key]
            self._jobs[job.id] = job
            if job.idempotency_key is not None and not job.is_final:
                self._keys[job.idempotency_key] = job.id
            if job.unique_key is not None:
                self._uniques[job.unique_key] = job.id

    def _forget_unique(self, job: Job) -> None:
        if job.unique_key is not None and self._uniques.get(job.unique_key) == job.id:
            del self._uniques[job.unique_key]

    # ------------------------------------------------------------ the primitives

    def _ensure_open(self) -> None:
        with self._lock:
            self._check_open()

    def _insert(self, batch: Sequence[Job]) -> None:
        with self._lock:
            self._check_open()
            ids: set[str] = set()
            keys = dict(self._keys)
            uniques: dict[str, Job] = {}  # unique key -> its holder, as this batch leaves it
            released: dict[str, Job] = {}  # holders whose window ended, keys cleared
            for job in batch:
                if job.id in self._jobs or job.id in ids:
                    raise DuplicateJobError(job.id, existing_id=job.id)
                ids.add(job.id)
                self._check_key(job, keys)
                if job.idempotency_key is not None:
                    keys[job.idempotency_key] = job.id
                if job.unique_key is not None:
                    self._check_unique(job, uniques, released)
                    uniques[job.unique_key] = job
            self._write("insert", [*released.values(), *batch])

    def _get(self, job_id: str) -> Job:
        with self._lock:
            self._check_open()
            return self._lookup(job_id)

    def _find_key(self, key: str) -> Job | None:
        with self._lock:
            self._check_open()
            job_id = self._keys.get(key)
            return None if job_id is None else self._jobs[job_id]

    def _list(self, filters: Filters, limit: int, position: tuple[float, str] | None) -> list[Job]:
        with self._lock:
            self._check_open()
            start = 0 if position is None else bisect.bisect_right(self._order, position)
            found: list[Job] = []
            for _, job_id in self._order[start:]:
                job = self._jobs[job_id]
                if matches(job, *filters):
                    found.append(job)
                    if len(found) == limit:
                        break
            return found

    def _count(self, filters: Filters) -> int:
        with self._lock:
            self._check_open()
            return sum(1 for job in self._jobs.values() if matches(job, *filters))

    def _claim_due(
        self,
        owner: str,
        now: float,
        limit: int,
        lease: float,
        types: frozenset[str] | None,
        queues: Mapping[str, int] | None,
    ) -> list[Job]:
        with self._lock:
            self._check_open()
            due = sorted(
                (
                    j
                    for j in self._jobs.values()
                    if is_due(j, now)
                    and (types is None or j.type in types)
                    and not self._queues.get(j.queue, False)
                ),
                key=claim_order_key,
            )
            taken = due[:limit] if queues is None else take_by_queue(due, queues, limit)
            claimed = [after_claim(job, owner, now, lease) for job in taken]
            self._write("claim_due", claimed)
            return claimed

    def _set_paused(self, queue: str, paused: bool, now: float) -> bool:
        with self._lock:
            self._check_open()
            before = self._queues.get(queue, False)
            self._inject("resume_queue" if not paused else "pause_queue")
            self._queues[queue] = paused
            return before != paused

    def _list_queues(self, now: float) -> list[QueueInfo]:
        with self._lock:
            self._check_open()
            pending: dict[str, int] = {}
            running: dict[str, int] = {}
            oldest: dict[str, float] = {}
            for job in self._jobs.values():
                if job.state is JobState.RUNNING:
                    running[job.queue] = running.get(job.queue, 0) + 1
                elif job.state is JobState.PENDING:
                    pending[job.queue] = pending.get(job.queue, 0) + 1
                    if job.run_at <= now and job.run_at < oldest.get(job.queue, math.inf):
                        oldest[job.queue] = job.run_at
            names = sorted({*pending, *running, *self._queues})
            return [
                queue_info(
                    name,
                    pending.get(name, 0),
                    running.get(name, 0),
                    oldest.get(name),
                    self._queues.get(name, False),
                    now,
                )
                for name in names
            ]

    def _change(self, operation: str, job_id: str, change: Callable[[Job], Job]) -> Job:
        with self._lock:
            self._check_open()
            old = self._lookup(job_id)
            new = change(old)
            if new is not old:
                self._check_key(new, self._keys)
                self._write(operation, [new])
            return new

    def _renew(
        self,
        owner: str,
        ids: Sequence[str],
        now: float,
        lease: float,
        attempts: Mapping[str, int] | None,
    ) -> LeaseRenewal:
        with self._lock:
            self._check_open()
            held = on_attempt(
                (
                    job
                    for job in (self._jobs.get(job_id) for job_id in ids)
                    if job is not None and job.state is JobState.RUNNING and job.owner == owner
                ),
                attempts,
            )
            self._write("renew_leases", [after_renew(job, now, lease) for job in held])
            return LeaseRenewal(
                frozenset(job.id for job in held),
                frozenset(job.id for job in held if job.cancel_requested),
            )

    def _complete_many(
        self, owner: str, now: float, batch: Sequence[tuple[str, bytes | None, int | None]]
    ) -> list[Job | JobError]:
        with self._lock:
            self._check_open()
            out, changes = after_complete_many(batch, owner, now, self._lookup)
            self._write("complete", [new for _, new in changes])
            return out

    def _recover(self, now: float, reason: str) -> list[Job]:
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
            recovered = [after_recover(job, now, reason) for job in expired]
            self._write("recover_expired", recovered)
            return recovered

    def _fail_corrupt(self, job_id: str, now: float, reason: str) -> None:
        with self._lock:
            self._check_open()
            self._write("fail_corrupt", [after_fail_corrupt(self._lookup(job_id), now, reason)])

    def next_due(self) -> float | None:
        with self._lock:
            self._check_open()
            return min(
                (job.run_at for job in self._jobs.values() if job.state is JobState.PENDING),
                default=None,
            )

    def _purge(self, finished_before: float) -> int:
        limit = finished_before
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
                self._forget_unique(self._jobs.pop(job_id))  # final: no idempotency key
            self._order = [entry for entry in self._order if entry[1] not in doomed]
            return len(doomed)

    def _delete(self, job_id: str) -> Job:
        with self._lock:
            self._check_open()
            job = self._lookup(job_id)
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
            self._forget_unique(job)
            return job

    def _clear(self) -> int:
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
            self._uniques.clear()
            return count

    # ------------------------------------------------------------ schedules

    def _put_schedule(self, schedule: Schedule) -> Schedule:
        with self._lock:
            self._check_open()
            stored = after_put(self._schedules.get(schedule.name), schedule)
            self._inject("put_schedule")
            self._schedules[schedule.name] = stored
            return stored

    def _get_schedule(self, name: str) -> Schedule | None:
        with self._lock:
            self._check_open()
            return self._schedules.get(name)

    def _list_schedules(self) -> list[Schedule]:
        with self._lock:
            self._check_open()
            return [self._schedules[name] for name in sorted(self._schedules)]

    def _delete_schedule(self, name: str) -> bool:
        with self._lock:
            self._check_open()
            if name not in self._schedules:
                return False
            self._inject("delete_schedule")
            del self._schedules[name]
            return True

    def _due_schedules(self, now: float) -> list[str]:
        with self._lock:
            self._check_open()
            due = [s for s in self._schedules.values() if s.next_run_at is not None]
            return [
                s.name
                for s in sorted(due, key=lambda s: (s.next_run_at, s.name))
                if s.next_run_at is not None and s.next_run_at <= now
            ]

    def _fire(self, name: str, now: float, plan: Plan) -> list[Job]:
        with self._lock:
            self._check_open()
            schedule = self._schedules.get(name)
            if schedule is None:
                return []
            jobs, new = plan(schedule)
            if new is schedule:
                return []
            jobs = [job for job in jobs if job.id not in self._jobs]
            self._inject("fire_schedule")
            self._write("fire_schedule", jobs)
            self._schedules[name] = new
            return jobs

    def _next_schedule_at(self) -> float | None:
        with self._lock:
            self._check_open()
            return min(
                (s.next_run_at for s in self._schedules.values() if s.next_run_at is not None),
                default=None,
            )

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._jobs.clear()
            self._order.clear()
            self._keys.clear()
            self._queues.clear()
            self._uniques.clear()
            self._schedules.clear()

    def __enter__(self) -> MemoryJobStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
