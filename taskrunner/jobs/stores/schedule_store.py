"""The schedule part of the store contract, and its methods written once.

:class:`ScheduleStore` is what the three job stores promise about periodic
schedules (:mod:`taskrunner.jobs.schedule_model`), on top of the
:class:`~taskrunner.jobs.stores.store.JobStore` contract and with the same
guarantees (explicit time, one transaction per call, errors naming the
argument, ``ClosedError`` after ``close``).  :class:`ScheduleMethods` is the
half :class:`~taskrunner.jobs.stores.base_store.BaseJobStore` gets: the public
methods, which check their arguments, over a few primitives each store
implements (:mod:`taskrunner.jobs.stores.sql_schedules` for SQLite and PostgreSQL,
the memory store itself).

Exactly once: :meth:`ScheduleStore.fire_schedule` locks the schedule's row
(PostgreSQL ``FOR UPDATE``; SQLite's write lock; the memory store's lock),
re-reads it, and in the same transaction inserts its occurrences' jobs and
moves ``next_run_at`` on.  Two firers of one schedule are serialised, and
the second finds nothing due; the jobs' ids, one per (schedule, occurrence),
are the unique constraint behind that (an occurrence whose id is already
taken is not enqueued again).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from taskrunner.jobs.model import Job
from taskrunner.jobs.schedule_model import (
    Schedule,
    UnknownScheduleError,
    check_schedule_name,
    fired,
)
from taskrunner.jobs.stores.rules import check_now

__all__ = ["ScheduleMethods", "ScheduleStore"]

#: What firing does to one schedule: the jobs to insert and the schedule to write.
Plan = Callable[[Schedule], tuple[list[Job], Schedule]]


@runtime_checkable
class ScheduleStore(Protocol):
    """Durable periodic schedules, seen by every process on the store."""

    def put_schedule(self, schedule: Schedule) -> Schedule:
        """Store ``schedule`` under its name, atomically; returns what was stored.

        An existing schedule of that name is replaced, but keeps its
        ``next_run_at`` and ``created_at`` when its timing is unchanged
        (:func:`~taskrunner.jobs.schedule_model.after_put`)."""
        ...

    def get_schedule(self, name: str) -> Schedule:
        """The schedule of this name (:class:`UnknownScheduleError` if none)."""
        ...

    def list_schedules(self) -> list[Schedule]:
        """Every schedule, by name."""
        ...

    def delete_schedule(self, name: str) -> bool:
        """Delete the schedule of this name; False if there was none.  Its jobs stay."""
        ...

    def due_schedules(self, now: float) -> list[str]:
        """The names of the schedules due at ``now``, earliest ``next_run_at`` first."""
        ...

    def fire_schedule(self, name: str, now: float) -> list[Job]:
        """Enqueue the due occurrences of one schedule, atomically; returns the jobs inserted.

        Nothing if it is not due (or no longer exists).  See the module
        docstring for why each occurrence is enqueued exactly once."""
        ...

    def next_schedule_at(self) -> float | None:
        """The earliest ``next_run_at`` of any schedule (maybe past), or ``None``."""
        ...


class ScheduleMethods:
    """:class:`ScheduleStore`'s methods over primitives (mixed into ``BaseJobStore``)."""

    __slots__ = ()

    # ------------------------------------------------------------ primitives

    @abstractmethod
    def _put_schedule(self, schedule: Schedule) -> Schedule:
        """Read the old schedule, store ``after_put(old, schedule)``, atomically."""

    @abstractmethod
    def _get_schedule(self, name: str) -> Schedule | None: ...

    @abstractmethod
    def _list_schedules(self) -> list[Schedule]: ...

    @abstractmethod
    def _delete_schedule(self, name: str) -> bool: ...

    @abstractmethod
    def _due_schedules(self, now: float) -> list[str]: ...

    @abstractmethod
    def _fire(self, name: str, now: float, plan: Plan) -> list[Job]:
        """Lock the schedule, apply ``plan`` if it is due, insert the jobs whose ids
        are free and write the schedule back, atomically; the jobs inserted."""

    @abstractmethod
    def _next_schedule_at(self) -> float | None: ...

    # ------------------------------------------------------------ the contract

    def put_schedule(self, schedule: Schedule) -> Schedule:
        if not isinstance(schedule, Schedule):
            raise TypeError(f"expected a Schedule, got {type(schedule).__name__}")
        return self._put_schedule(schedule)

    def get_schedule(self, name: str) -> Schedule:
        found = self._get_schedule(check_schedule_name(name))
        if found is None:
            raise UnknownScheduleError(name)
        return found

    def list_schedules(self) -> list[Schedule]:
        return self._list_schedules()

    def delete_schedule(self, name: str) -> bool:
        return self._delete_schedule(check_schedule_name(name))

    def due_schedules(self, now: float) -> list[str]:
        return self._due_schedules(check_now(now))

    def fire_schedule(self, name: str, now: float) -> list[Job]:
        name = check_schedule_name(name)
        now = check_now(now)
        return self._fire(name, now, lambda schedule: fired(schedule, now))

    def next_schedule_at(self) -> float | None:
        return self._next_schedule_at()
