"""What the embedded dashboard shows of a live pool, read from what the pool already keeps.

:func:`read_pool` takes a snapshot of a :class:`~taskrunner.ThreadPool`
through its public ``stats()`` (queues by priority, running tasks, delayed
tasks, outcome counters, workers, and the ``InProcessMetrics`` digest when the
pool has one), of the runners built on it (each runner's ``stats()``), and of
a :class:`~taskrunner.jobs.JobManager`'s counters.  It calls no web library
and changes nothing; every call it makes is thread-safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from taskrunner.runtime.pool import ThreadPool, children_of
from taskrunner.runtime.traits import TaskPriority

if TYPE_CHECKING:
    from taskrunner.jobs import JobManager

__all__ = ["ManagerRow", "PoolView", "RunnerRow", "read_pool"]


@dataclass(frozen=True, slots=True)
class RunnerRow:
    """One runner built on the pool: its kind and the counters its ``stats()`` gives."""

    name: str
    kind: str
    queued: int | None
    running: int | None
    posted: int | None
    completed: int | None
    closed: bool


@dataclass(frozen=True, slots=True)
class ManagerRow:
    """The job manager running in this process: who it is, what it runs, its counters."""

    owner: str
    job_types: tuple[str, ...]
    counters: dict[str, int]


@dataclass(frozen=True, slots=True)
class PoolView:
    """A pool's snapshot (see :func:`read_pool`)."""

    name: str
    #: (priority name, queued tasks), highest priority first.
    queued: tuple[tuple[str, int], ...]
    running: int
    delayed: int
    outcomes: dict[str, int]
    workers: int
    blocking_workers: int
    closed: bool
    runners: tuple[RunnerRow, ...]
    #: The pool's InProcessMetrics digest (posted, outcomes, run/wait times), or None.
    metrics: dict[str, Any] | None
    manager: ManagerRow | None


def _int(stats: dict[str, Any], key: str) -> int | None:
    value = stats.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_pool(pool: ThreadPool, manager: JobManager | None = None) -> PoolView:
    """Snapshot ``pool``, the runners built on it and ``manager`` (if given)."""
    if not isinstance(pool, ThreadPool):
        raise TypeError(f"pool must be a ThreadPool, got {type(pool).__name__}")
    if pool.metrics is not None:
        pool.flush_metrics()  # push the events the pool buffers, so the digest is current
    stats = pool.stats()
    runners = []
    for runner in children_of(pool):
        r = runner.stats()
        runners.append(
            RunnerRow(
                name=str(r.get("name", runner.name)),
                kind=type(runner).__name__,
                queued=_int(r, "queued"),
                running=_int(r, "running"),
                posted=_int(r, "posted"),
                completed=_int(r, "completed"),
                closed=bool(r.get("closed", False)),
            )
        )
    runners.sort(key=lambda row: (row.kind, row.name))
    row = None
    if manager is not None:
        counters = {k: v for k, v in manager.stats().items() if isinstance(v, int)}
        row = ManagerRow(manager.owner, tuple(manager.job_types), counters)
    return PoolView(
        name=str(stats["name"]),
        queued=tuple(sorted(stats["queued"].items(), key=lambda item: -int(TaskPriority[item[0]]))),
        running=int(stats["running"]),
        delayed=int(stats["delayed_pending"]),
        outcomes={k: int(stats[k]) for k in ("completed", "failed", "cancelled", "dropped")},
        workers=int(stats["workers"]),
        blocking_workers=int(stats["blocking_workers"]),
        closed=bool(stats["closed"]),
        runners=tuple(runners),
        metrics=stats.get("metrics"),
        manager=row,
    )
