"""When a periodic schedule's occurrences fall: cron expressions and fixed intervals.

Cron expressions are evaluated by `cronsim <https://pypi.org/project/cronsim/>`_
(the optional extra ``schedules``), in the schedule's IANA time zone from
:mod:`zoneinfo`, with Debian cron's handling of daylight saving time for an
expression at fixed hours and minutes: an occurrence that falls in the hour
skipped when clocks go forward runs right after the change (02:30 on the
spring-forward day in Europe/Paris runs at 03:00), and one that falls in the
hour repeated when clocks go back runs once (the first 02:30).  Intervals
(``every``) are elapsed time, not wall-clock time: DST does not move them.

Times are epoch seconds.  A schedule's occurrences never precede its
``start`` (for an interval they are ``start + k * every``, or, without a
start, ``created_at + k * every`` for ``k >= 1``).  Pure functions; cronsim
keeps no shared state (a ``CronSim`` is a fresh iterator per call), so they
are safe from any thread, free-threaded builds included.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

if TYPE_CHECKING:
    from taskrunner.jobs.schedule_model import Schedule

__all__ = [
    "check_cron",
    "check_timezone",
    "describe",
    "first_at_or_after",
    "latest_at_or_before",
    "next_after",
    "occurrence_stamp",
    "occurrences_after",
]

#: How far back :func:`latest_at_or_before` looks for a cron occurrence, widening.
_LOOKBACK: Final = (3600.0, 86400.0, 32 * 86400.0, 400 * 86400.0, 50 * 366 * 86400.0)


def _cronsim() -> Any:
    try:
        import cronsim
    except ImportError:
        raise ImportError(
            "cron schedules need the cronsim library: pip install 'taskrunner[schedules]'"
        ) from None
    return cronsim


def check_timezone(name: object) -> str:
    """An IANA time zone name that :mod:`zoneinfo` knows (``ValueError`` naming it)."""
    if not isinstance(name, str):
        raise TypeError(f"timezone must be a str such as 'Europe/Paris', got {type(name).__name__}")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"timezone {name!r} is not a time zone zoneinfo knows") from None
    return name


def check_cron(expression: object) -> str:
    """A cron expression cronsim accepts (``ValueError`` saying why not)."""
    if not isinstance(expression, str):
        raise TypeError(f"cron must be a str such as '0 3 * * *', got {type(expression).__name__}")
    cronsim = _cronsim()
    try:
        cronsim.CronSim(expression, datetime(2000, 1, 1, tzinfo=UTC))
    except cronsim.CronSimError as exc:
        raise ValueError(f"cron expression {expression!r} is not valid: {exc}") from None
    return expression


def _cron_after(schedule: Schedule, t: float) -> Iterator[float]:
    assert schedule.cron is not None
    cronsim = _cronsim()
    zone = ZoneInfo(schedule.timezone)
    try:
        for when in cronsim.CronSim(schedule.cron, datetime.fromtimestamp(t, zone)):
            yield when.timestamp()
    except cronsim.CronSimError:  # pragma: no cover - checked when the schedule was made
        return


def _anchor(schedule: Schedule) -> float:
    assert schedule.every is not None
    if schedule.start is not None:
        return schedule.start
    return schedule.created_at + schedule.every


def occurrences_after(schedule: Schedule, t: float) -> Iterator[float]:
    """The schedule's occurrences strictly after ``t``, in order (maybe none, ever)."""
    if schedule.every is None:
        start = schedule.start
        for when in _cron_after(schedule, t if start is None else max(t, start - 1e-3)):
            if when > t:
                yield when
        return
    anchor, every = _anchor(schedule), schedule.every
    k = 0 if t < anchor else math.floor((t - anchor) / every) + 1
    while True:
        when = anchor + k * every
        if when > t:
            yield when
        k += 1


def next_after(schedule: Schedule, t: float) -> float | None:
    """The first occurrence strictly after ``t``, or ``None`` if there is none (within 50 years)."""
    return next(occurrences_after(schedule, t), None)


def first_at_or_after(schedule: Schedule, t: float) -> float | None:
    """The first occurrence at or after ``t`` (cron times are whole seconds)."""
    return next_after(schedule, t - 1e-3)


def latest_at_or_before(schedule: Schedule, t: float) -> float | None:
    """The last occurrence at or before ``t``, or ``None`` if there is none.

    Cron: the first occurrence after ``t - w`` for a widening look-back ``w``,
    then forward to the last one not after ``t`` (cronsim's reverse iteration
    is not used: its DST adjustments differ from the forward ones)."""
    if schedule.every is not None:
        anchor = _anchor(schedule)
        if t < anchor:
            return None
        when = anchor + math.floor((t - anchor) / schedule.every) * schedule.every
        return when if when <= t else when - schedule.every
    for window in _LOOKBACK:
        latest = None
        for when in occurrences_after(schedule, t - window):
            if when > t:
                break
            latest = when
        if latest is not None:
            return latest
    return None


def describe(when: float | None, timezone: str) -> str:
    """``when`` as local time in ``timezone`` with its UTC offset (``-`` for None)."""
    if when is None:
        return "-"
    local = datetime.fromtimestamp(when, ZoneInfo(timezone))
    return local.isoformat(sep=" ", timespec="seconds")


def occurrence_stamp(when: float) -> str:
    """``when`` as an ISO UTC text with microseconds: the occurrence's part of a job id."""
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=when)).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ"
    )
