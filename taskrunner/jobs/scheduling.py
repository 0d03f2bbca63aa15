"""The job manager's periodic schedules: ``schedule``, ``unschedule``, and firing them.

:class:`Scheduling` is the part of :class:`~taskrunner.jobs.manager.JobManager`
that declares schedules in the store (:mod:`taskrunner.jobs.schedule_model`)
and fires the due ones.  Every running manager fires every schedule of its
store, whatever its handlers; the store makes each occurrence's job exactly
once however many managers fire (:mod:`taskrunner.jobs.stores.schedule_store`), and
the job is then claimed like any other, by a manager with its handler.

When: on :meth:`~taskrunner.jobs.manager.JobManager.start`, on every poll
(schedules declared by other processes), and at the next ``next_run_at``
this manager knows of, by a delayed task on the pool's clock, so a schedule
fires at its own time, and under ``taskrunner.testing.TaskEnvironment`` at
its own mock time.  Firing runs on the IO layer (the only code that talks to
the store); a schedule that cannot be fired (its cron library missing, its
row corrupt) is logged and the others are fired.

Threads: ``_lock`` (the manager's) guards ``_schedule_timer_ns``; the public
methods may be called from any thread.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timedelta
from typing import Any

from taskrunner.errors import RunnerClosedError
from taskrunner.jobs.errors import StoreError, UnknownJobTypeError
from taskrunner.jobs.handles import SerializationError
from taskrunner.jobs.manager_core import ManagerCore
from taskrunner.jobs.schedule_model import Schedule, check_schedule_name
from taskrunner.jobs.schedule_times import check_cron, check_timezone, first_at_or_after
from taskrunner.jobs.stores.schedule_store import ScheduleStore
from taskrunner.jobs.unique import check_unique_for

__all__ = ["Scheduling"]

log = logging.getLogger("taskrunner.jobs")


def _seconds(name: str, value: object) -> float:
    """A timedelta or a number of seconds, > 0 (the checks of ``unique_for``, renamed)."""
    try:
        seconds = check_unique_for(value)
    except (TypeError, ValueError) as exc:
        raise type(exc)(str(exc).replace("unique_for", name)) from None
    if seconds is None:
        raise TypeError(f"{name} must be a timedelta or a number of seconds, got None")
    return seconds


def _epoch(name: str, value: object) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{name} must be an aware datetime (with a tzinfo)")
        return value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"{name} must be an aware datetime or epoch seconds, got {value!r}")


class Scheduling(ManagerCore):
    """Periodic schedules (mixed into ``JobManager``)."""

    #: Clock time (ns) of the schedule timer armed, if any (guarded by ``_lock``).
    _schedule_timer_ns: int | None = None

    def _schedule_store(self) -> ScheduleStore:
        if not isinstance(self._store, ScheduleStore):
            raise TypeError(f"{type(self._store).__name__} keeps no schedules")
        return self._store

    def schedule(
        self,
        name: str,
        *,
        cron: str | None = None,
        every: timedelta | float | None = None,
        job_type: str | None = None,
        args: Any = None,
        timezone: str = "UTC",
        misfire: str = "once",
        misfire_grace: timedelta | float = 60.0,
        priority: int = 0,
        max_attempts: int | None = None,
        timeout: float | None = None,
        start: datetime | float | None = None,
    ) -> Schedule:
        """Declare the periodic schedule ``name`` in the store; returns it as stored.

        Give ``cron`` (a cron expression, in ``timezone``, an IANA name) or
        ``every`` (a timedelta or seconds, at least 1 s).  Each occurrence
        enqueues one job of ``job_type`` (default: ``name``) with ``args``
        (encoded now by the manager's serializer), ``priority``,
        ``max_attempts`` and ``timeout``, due at the occurrence, exactly once
        however many managers run.  ``misfire`` says what happens to
        occurrences missed while no manager ran: ``"once"`` (one job for the
        latest), ``"all"`` (one for each) or ``"skip"`` (none, unless the
        latest is within ``misfire_grace``).  ``start``: no occurrence before
        it (an aware datetime or epoch seconds; for ``every``, occurrences
        are ``start + k * every``; without it, ``every`` counts from now).

        Declaring it again with the same timing (cron, every, timezone,
        start) keeps its next run, so every worker may declare its schedules
        at start-up; new timing starts it over from now.  ``TypeError``/
        ``ValueError`` name a bad argument, :class:`UnknownJobTypeError` a job
        type with no handler registered here (as ``submit``: a process that only
        declares schedules registers the types too); a cron expression needs the
        ``schedules`` extra (``ImportError`` naming it otherwise)."""
        store = self._schedule_store()
        name = check_schedule_name(name)
        if (cron is None) == (every is None):
            raise ValueError("give exactly one of cron and every")
        if cron is not None:
            check_cron(cron)
        timezone = check_timezone(timezone)
        try:
            payload = self._serializer.dumps(args)
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(
                f"arguments of schedule {name!r} cannot be encoded: {exc}"
            ) from exc
        now = self.now()
        schedule = Schedule(
            name=name,
            type=name if job_type is None else job_type,
            args=payload,
            cron=cron,
            every=None if every is None else _seconds("every", every),
            timezone=timezone,
            misfire=misfire,
            misfire_grace=_seconds("misfire_grace", misfire_grace) if misfire_grace else 0.0,
            priority=priority,
            max_attempts=self._retry.max_attempts if max_attempts is None else max_attempts,
            timeout=timeout,
            start=None if start is None else _epoch("start", start),
            next_run_at=None,
            created_at=now,
            updated_at=now,
        )
        with self._lock:
            known = schedule.type in self._handlers
        if not known:  # as submit: a typo would enqueue jobs no worker runs, forever
            raise UnknownJobTypeError(schedule.type)
        first = first_at_or_after(
            schedule, now if start is None else max(now, schedule.start or now)
        )
        stored = self._io(
            lambda: store.put_schedule(_with_next(schedule, first)), "put_schedule"
        ).result()
        self._arm_schedules(stored.next_run_at)
        return stored

    def unschedule(self, name: str) -> bool:
        """Delete the schedule ``name`` from the store; False if there was none.

        No occurrence is enqueued after this returns; jobs already enqueued stay."""
        store = self._schedule_store()
        name = check_schedule_name(name)
        return self._io(lambda: store.delete_schedule(name), "delete_schedule").result()

    def schedules(self) -> list[Schedule]:
        """Every schedule in the store (declared by any process), by name."""
        store = self._schedule_store()
        return self._read(store.list_schedules, "list_schedules")

    # ---- firing (IO layer) -------------------------------------------------------------------

    def _start_schedules(self) -> None:
        """From ``start``: fire what is due, and again at every poll."""
        if not isinstance(self._store, ScheduleStore):
            return
        handle = self._io_runner.post_repeating_task(
            self._fire_schedules, self._poll, name="jobs-schedules"
        )
        with self._lock:
            self._repeating.append(handle)
        self._io(self._fire_schedules, "fire_schedules")

    def _fire_schedules(self, at: float | None = None) -> None:
        """IO layer: enqueue the due occurrences of every schedule, then arm the timer.

        ``at``: the time the timer was armed for; the schedule due then is due
        now even if the clock, converted to epoch seconds, reads a hair less."""
        store = self._store
        if not isinstance(store, ScheduleStore):
            return
        now = self.now() if at is None else max(self.now(), at)
        enqueued = 0
        failed = False
        for name in store.due_schedules(now):
            try:
                jobs = store.fire_schedule(name, now)
            except StoreError:
                raise  # the IO layer retries the firing
            except Exception:
                log.exception("schedule %s could not be fired", name, extra={"schedule": name})
                failed = True
                continue
            enqueued += len(jobs)
            for job in jobs:
                self._job_metric(job)
        if enqueued:
            self._kick()
        following = store.next_schedule_at()
        if following is not None and following <= now and failed:
            # A schedule that cannot be fired stays due: try again at the next poll,
            # not at once (the others' timer waits as long, at worst).
            following = now + self._poll
        # Still due without a failure: an "all" schedule catching up (MAX_CATCH_UP
        # per firing) goes on at once.
        self._arm_schedules(following)

    def _kick(self, at_ns: int | None = None) -> None:
        """Claim due jobs now (:class:`~taskrunner.jobs.attempts.Attempts`' comes first)."""
        raise NotImplementedError

    def _arm_schedules(self, at: float | None) -> None:
        """Fire the schedules at epoch ``at`` (unless a timer no later is armed)."""
        if at is None:
            return
        at_ns = self._clock_ns(at)
        now_ns = self._clock.now_ns()
        with self._lock:
            armed = self._schedule_timer_ns
            if not self._accepting or (armed is not None and now_ns <= armed <= at_ns):
                return
            self._schedule_timer_ns = at_ns
        with contextlib.suppress(RunnerClosedError):
            self._control._post_delayed_ns(self._schedule_timer, max(0, at_ns - now_ns), at_ns, at)

    def _schedule_timer(self, at_ns: int, at: float) -> None:
        """Control layer: the next schedule is due."""
        with self._lock:
            if self._schedule_timer_ns == at_ns:
                self._schedule_timer_ns = None
            if not (self._accepting and self._started):
                return
        with contextlib.suppress(RunnerClosedError):
            self._io(lambda: self._fire_schedules(at), "fire_schedules")


def _with_next(schedule: Schedule, first: float | None) -> Schedule:
    from dataclasses import replace

    return replace(schedule, next_run_at=first)
