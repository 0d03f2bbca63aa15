"""What the dashboard shows, read from a job store through its public API only.

Nothing here imports a web library: :func:`read_overview` and the helpers
below turn :class:`~taskrunner.jobs.JobStore` calls (``count_jobs``,
``list_jobs``, ``get``) into plain frozen dataclasses that the templates
render.  The store keeps no per-attempt history, no worker registry and no
queues, so:

* **counts per state** are exact (one ``count_jobs`` per state);
* **types** are those of the unfinished jobs and of the jobs created within
  :data:`RECENT_WINDOW`, each with exact per-state counts (``count_jobs`` per
  type and state), at most :data:`MAX_TYPES` of them;
* **the chart** (the last hour, per minute) counts jobs created within
  :data:`RECENT_WINDOW` by the minute they succeeded or failed, and as
  *retried* a job that needed more than one attempt (at the minute it finished)
  or that waits for another attempt (at the minute of its last failure);
* **workers** are the owners of running jobs, with the latest lease deadline
  they hold (a worker renews its leases while it is alive: its heartbeat);
  a worker with no running job is not visible in the store;
* **the oldest waiting job** is the due pending job with the earliest
  ``run_at``, overall and per type.

Every scan reads at most :data:`SCAN_LIMIT` jobs; beyond that the overview
says it is partial.  Times are epoch seconds from the caller's ``now``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from taskrunner.jobs import FINAL_STATES, Job, JobState, JobStore

__all__ = [
    "CHART_BUCKETS",
    "MAX_TYPES",
    "RECENT_WINDOW",
    "SCAN_LIMIT",
    "ChartBucket",
    "Overview",
    "TypeRow",
    "WorkerRow",
    "decode_payload",
    "read_overview",
]

#: How far back (seconds of creation time) the overview looks for types and chart data.
RECENT_WINDOW: Final = 86400.0
#: The chart covers the last hour in buckets of one minute.
CHART_BUCKETS: Final = 60
CHART_BUCKET_SECONDS: Final = 60.0
#: The most jobs one overview reads (per scan: running, pending, recent).
SCAN_LIMIT: Final = 20000
#: The most job types the overview lists.
MAX_TYPES: Final = 50

_PAGE = 1000  # the store's MAX_PAGE_SIZE
_STATES: Final = tuple(JobState)


@dataclass(frozen=True, slots=True)
class ChartBucket:
    """One minute of the chart: jobs that succeeded, failed and were retried in it."""

    start: float
    succeeded: int
    failed: int
    retried: int


@dataclass(frozen=True, slots=True)
class TypeRow:
    """One job type: its exact counts per state, and its oldest waiting job."""

    type: str
    counts: dict[str, int]
    oldest_waiting: Job | None


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """An owner of running jobs: how many it runs and its latest lease deadline."""

    owner: str
    running: int
    lease_until: float
    job_ids: tuple[str, ...]

    def expired(self, now: float) -> bool:
        """True when every lease it holds has expired (the worker is likely gone)."""
        return self.lease_until <= now


@dataclass(frozen=True, slots=True)
class Overview:
    """Everything on the overview page, as of ``now``."""

    now: float
    counts: dict[str, int]
    types: tuple[TypeRow, ...]
    chart: tuple[ChartBucket, ...]
    workers: tuple[WorkerRow, ...]
    oldest_waiting: Job | None
    #: True when a scan stopped at SCAN_LIMIT or the type list at MAX_TYPES.
    partial: bool

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _scan(store: JobStore, limit: int, **filters: Any) -> Iterator[Job]:
    """Jobs matching ``filters`` in the store's order, at most ``limit``."""
    cursor: str | None = None
    left = limit
    while left > 0:
        page = store.list_jobs(limit=min(_PAGE, left), after=cursor, **filters)
        yield from page.jobs
        left -= len(page.jobs)
        cursor = page.next_cursor
        if cursor is None:
            return


def _older(a: Job | None, b: Job) -> Job:
    return b if a is None or (b.run_at, b.created_at, b.id) < (a.run_at, a.created_at, a.id) else a


def read_overview(store: JobStore, now: float) -> Overview:
    """Read the overview from ``store`` (see the module docstring for what each part means)."""
    partial = False
    counts = {s.value: store.count_jobs(states=[s]) for s in _STATES}

    workers: dict[str, list[Job]] = {}
    running = list(_scan(store, SCAN_LIMIT, states=[JobState.RUNNING]))
    partial |= len(running) >= SCAN_LIMIT
    for job in running:
        assert job.owner is not None  # a running job has an owner (Job's invariant)
        workers.setdefault(job.owner, []).append(job)

    oldest: Job | None = None
    oldest_by_type: dict[str, Job] = {}
    seen_types: dict[str, None] = dict.fromkeys(j.type for j in running)
    pending = 0
    for job in _scan(store, SCAN_LIMIT, states=[JobState.PENDING]):
        pending += 1
        seen_types.setdefault(job.type)
        if job.run_at <= now:
            oldest = _older(oldest, job)
            oldest_by_type[job.type] = _older(oldest_by_type.get(job.type), job)
    partial |= pending >= SCAN_LIMIT

    chart_start = now - CHART_BUCKETS * CHART_BUCKET_SECONDS
    succeeded = [0] * CHART_BUCKETS
    failed = [0] * CHART_BUCKETS
    retried = [0] * CHART_BUCKETS

    def bucket(at: float | None) -> int | None:
        if at is None or at < chart_start or at > now:
            return None
        return min(int((at - chart_start) // CHART_BUCKET_SECONDS), CHART_BUCKETS - 1)

    recent = 0
    for job in _scan(store, SCAN_LIMIT, since=now - RECENT_WINDOW):
        recent += 1
        seen_types.setdefault(job.type)
        if job.state in FINAL_STATES:
            at = bucket(job.finished_at)
            if at is None:
                continue
            if job.state is JobState.SUCCEEDED:
                succeeded[at] += 1
            elif job.state is JobState.FAILED:
                failed[at] += 1
            if job.attempt > 1:
                retried[at] += 1
        elif job.state is JobState.PENDING and job.attempt > 0 and job.last_error is not None:
            at = bucket(job.updated_at)  # the failure that sent it back to pending
            if at is not None:
                retried[at] += 1
    partial |= recent >= SCAN_LIMIT

    names = sorted(seen_types)
    if len(names) > MAX_TYPES:
        names, partial = names[:MAX_TYPES], True
    types = tuple(
        TypeRow(
            type=name,
            counts={s.value: store.count_jobs(states=[s], types=[name]) for s in _STATES},
            oldest_waiting=oldest_by_type.get(name),
        )
        for name in names
    )
    chart = tuple(
        ChartBucket(chart_start + i * CHART_BUCKET_SECONDS, succeeded[i], failed[i], retried[i])
        for i in range(CHART_BUCKETS)
    )
    worker_rows = tuple(
        WorkerRow(
            owner=owner,
            running=len(jobs),
            lease_until=max(j.lease_expires_at or 0.0 for j in jobs),
            job_ids=tuple(j.id for j in jobs[:5]),
        )
        for owner, jobs in sorted(workers.items())
    )
    return Overview(
        now=now,
        counts=counts,
        types=types,
        chart=chart,
        workers=worker_rows,
        oldest_waiting=oldest,
        partial=partial,
    )


def decode_payload(data: bytes | None) -> str | None:
    """A stored payload as display text: indented JSON if it is JSON, else its hex digits.

    The text is raw (attacker-controlled): templates escape it.
    """
    if data is None:
        return None
    try:
        value = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError):
        return f"(not JSON; {len(data)} bytes) {data.hex()}"
    return json.dumps(value, indent=2, ensure_ascii=False)
