"""Periodic schedules: the stored record, its checks, and the rules the stores apply.

A :class:`Schedule` is the durable form of ``manager.schedule(...)``: one row
per name in the store's ``schedules`` table, seen by every worker process.
Its ``next_run_at`` is the first occurrence not yet enqueued.  Firing a due
schedule (:func:`plan_fire`, applied by the store in one transaction with the
row locked) enqueues jobs for its occurrences up to now, as its ``misfire``
policy says, and moves ``next_run_at`` past now.  Each occurrence's job has
the id ``schedule:<name>:<occurrence in UTC>`` (:func:`occurrence_id`), so
the jobs table's primary key is a unique constraint on (schedule, occurrence):
an occurrence is enqueued at most once, however many workers fire.

Misfire policies, for occurrences that passed while no worker fired them
(every worker stopped, say), all counted up to the time of firing:

* ``"once"`` (default): one job, for the latest occurrence passed;
* ``"all"``: one job for each (at most :data:`MAX_CATCH_UP` per firing; the
  next firing, at once, goes on where it stopped);
* ``"skip"``: none, unless the latest one passed is within ``misfire_grace``
  seconds of now (on time, give or take the poll), which gets one job.

An occurrence fired on time is the same under the three: one job.
Immutable records and pure functions: safe from any thread.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from taskrunner.jobs.errors import JobError
from taskrunner.jobs.model import (
    DEFAULT_MAX_ATTEMPTS,
    MAX_PRIORITY,
    MIN_PRIORITY,
    Job,
    check_duration,
    check_int,
    check_name,
    check_time,
    new_job,
)
from taskrunner.jobs.schedule_times import (
    latest_at_or_before,
    occurrence_stamp,
    occurrences_after,
)

__all__ = [
    "MAX_CATCH_UP",
    "MAX_SCHEDULE_NAME",
    "MISFIRE_POLICIES",
    "SCHEDULE_FIELDS",
    "Schedule",
    "ScheduleError",
    "UnknownScheduleError",
    "after_put",
    "occurrence_id",
    "plan_fire",
]

#: What happens to occurrences missed while no worker fired them (see the module docstring).
MISFIRE_POLICIES: Final = ("once", "all", "skip")
#: Most jobs one firing of an ``"all"`` schedule enqueues.
MAX_CATCH_UP: Final = 1000
#: Longest schedule name (its occurrences' job ids must fit in 255 characters).
MAX_SCHEDULE_NAME: Final = 200
#: Shortest interval of an ``every`` schedule, in seconds.
MIN_EVERY: Final = 1.0


class ScheduleError(JobError):
    """A schedule could not be stored or fired as asked."""


class UnknownScheduleError(ScheduleError, KeyError):
    """No schedule of this name is stored."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"unknown schedule {name!r}")

    def __str__(self) -> str:
        return str(self.args[0])


def check_schedule_name(name: object) -> str:
    value = check_name("name", name)
    if len(value) > MAX_SCHEDULE_NAME:
        raise ValueError(f"name is longer than {MAX_SCHEDULE_NAME} characters")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """One stored periodic schedule (checked on construction; see the module docstring).

    Exactly one of ``cron`` (a cron expression, evaluated in ``timezone``) and
    ``every`` (seconds, >= 1) is set.  ``start``: no occurrence before it (and
    for ``every`` the occurrences are ``start + k * every``; without a start,
    ``created_at + k * every``, k >= 1).  ``next_run_at`` is ``None`` once no
    occurrence is left (a cron expression that never matches again).
    """

    name: str
    #: The job type of the occurrences' jobs, and their encoded arguments, priority,
    #: attempts and timeout.
    type: str
    args: bytes = b""
    cron: str | None = None
    every: float | None = None
    timezone: str = "UTC"
    misfire: str = "once"
    misfire_grace: float = 60.0
    priority: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout: float | None = None
    start: float | None = None
    next_run_at: float | None
    created_at: float
    updated_at: float

    def __post_init__(self) -> None:
        put = object.__setattr__
        check_schedule_name(self.name)
        check_name("type", self.type)
        if not isinstance(self.args, bytes):
            raise TypeError(f"args must be bytes (encoded), got {type(self.args).__name__}")
        if (self.cron is None) == (self.every is None):
            raise ValueError(f"schedule {self.name!r}: give exactly one of cron and every")
        if self.cron is not None and not isinstance(self.cron, str):
            raise TypeError(f"cron must be a str, got {type(self.cron).__name__}")
        if self.every is not None:
            every = check_duration("every", self.every)
            if every < MIN_EVERY:
                raise ValueError(f"every must be at least {MIN_EVERY:g} s, got {every:g}")
            put(self, "every", every)
        check_name("timezone", self.timezone)
        if self.misfire not in MISFIRE_POLICIES:
            raise ValueError(
                f"misfire must be one of {', '.join(MISFIRE_POLICIES)}, got {self.misfire!r}"
            )
        put(
            self,
            "misfire_grace",
            check_duration("misfire_grace", self.misfire_grace, allow_zero=True),
        )
        check_int("priority", self.priority, low=MIN_PRIORITY, high=MAX_PRIORITY)
        check_int("max_attempts", self.max_attempts, low=1)
        if self.timeout is not None:
            put(self, "timeout", check_duration("timeout", self.timeout))
        for name in ("start", "next_run_at"):
            value = getattr(self, name)
            if value is not None:
                put(self, name, check_time(name, value))
        for name in ("created_at", "updated_at"):
            put(self, name, check_time(name, getattr(self, name)))

    @property
    def timing(self) -> tuple[str | None, float | None, str, float | None]:
        """What decides the occurrences: changing it restarts the schedule from now."""
        return (self.cron, self.every, self.timezone, self.start)


#: The field names of :class:`Schedule`, in order (the table's columns).
SCHEDULE_FIELDS: Final[tuple[str, ...]] = tuple(Schedule.__dataclass_fields__)


def occurrence_id(name: str, when: float) -> str:
    """The job id of schedule ``name``'s occurrence at ``when``: one per (schedule, occurrence)."""
    return f"schedule:{name}:{occurrence_stamp(when)}"


def after_put(old: Schedule | None, new: Schedule) -> Schedule:
    """What ``put_schedule(new)`` stores over ``old``.

    Every worker process declares its schedules when it starts, so declaring
    one again must not move it: with the same timing (cron, every, time zone,
    start) the stored ``next_run_at`` and ``created_at`` are kept, so
    occurrences missed meanwhile still fire under the misfire policy.  The
    rest (job type, arguments, policy...) is replaced.  New timing starts the
    schedule over from ``new``."""
    if old is None or old.timing != new.timing:
        return new
    return replace(new, next_run_at=old.next_run_at, created_at=old.created_at)


def plan_fire(schedule: Schedule, now: float) -> tuple[list[float], float | None]:
    """The occurrences to enqueue when ``schedule`` fires at ``now``, and its next ``next_run_at``.

    Nothing if it is not due (``next_run_at`` after ``now``, or ``None``)."""
    due = schedule.next_run_at
    if due is None or due > now:
        return [], due
    if schedule.misfire == "all":
        times = [due]
        for when in occurrences_after(schedule, due):
            if when > now or len(times) == MAX_CATCH_UP:
                return times, when
            times.append(when)
        return times, None
    latest = latest_at_or_before(schedule, now)
    latest = due if latest is None else max(latest, due)
    following = next(occurrences_after(schedule, now), None)
    if schedule.misfire == "skip" and now - latest > schedule.misfire_grace:
        return [], following
    return [latest], following


def occurrence_job(schedule: Schedule, when: float, now: float) -> Job:
    """The job of ``schedule``'s occurrence at ``when``, enqueued at ``now`` (due at ``when``)."""
    return new_job(
        schedule.type,
        schedule.args,
        now=now,
        id=occurrence_id(schedule.name, when),
        run_at=when,
        priority=schedule.priority,
        max_attempts=schedule.max_attempts,
        timeout=schedule.timeout,
    )


def fired(schedule: Schedule, now: float) -> tuple[list[Job], Schedule]:
    """``plan_fire`` as the jobs to insert and the schedule to write back."""
    times, following = plan_fire(schedule, now)
    if not times and following == schedule.next_run_at:
        return [], schedule
    jobs = [occurrence_job(schedule, when, now) for when in times]
    return jobs, replace(schedule, next_run_at=following, updated_at=now)


def is_due(schedule: Schedule, now: float) -> bool:
    return schedule.next_run_at is not None and schedule.next_run_at <= now
