"""Argument checks and time conversions of the pool (seconds in, integer ns inside).

Pure functions; thread-safe."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping

# The longest delay accepted (about 292 years), defined with the clock.
from taskrunner.runtime.clock import MAX_DELAY as MAX_DELAY

# Time is integer nanoseconds inside (an int64 in the C core).
INT64_MAX = (1 << 63) - 1


def check_int(what: str, value: object, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{what} must be <= {maximum}, got {value}")


def check_category_limits(limits: object) -> dict[str, int]:
    """A pool's ``category_limits``: a dict (or other mapping) from a non-empty
    category name to the most tasks of it that may run at once (>= 1)."""
    if limits is None:
        return {}
    if not isinstance(limits, Mapping):
        raise TypeError(f"category_limits must be a dict or None, not {type(limits).__name__}")
    checked: dict[str, int] = {}
    for category, limit in limits.items():
        if not isinstance(category, str) or not category:
            raise TypeError(f"category_limits keys must be non-empty str, not {category!r}")
        check_int(f"category_limits[{category!r}]", limit, 1)
        checked[category] = limit
    return checked


def check_seconds(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    if math.isnan(value) or value < 0:
        raise ValueError(f"{what} must be >= 0, got {value}")


def shutdown_timeout(timeout: object) -> float | None:
    """A shutdown's ``timeout``: seconds >= 0, or None (also for infinity, or
    anything from ``threading.TIMEOUT_MAX`` up, which the platform's waits
    refuse) to wait for as long as it takes."""
    if timeout is None:
        return None
    check_seconds("timeout", timeout)
    return None if timeout >= threading.TIMEOUT_MAX else float(timeout)  # type: ignore[operator, arg-type]


def time_left(end: float | None) -> float | None:
    """Seconds from now until ``end`` (a ``time.monotonic()``), at least 0; None for None."""
    return None if end is None else max(0.0, end - time.monotonic())


def beyond_the_clock(delay_ns: int) -> ValueError:
    return ValueError(
        f"a delay of {delay_ns / 1e9} s from now is past the end of the clock's range "
        "(int64 nanoseconds, about 292 years)"
    )


def seconds_ns(what: str, value: object) -> int:
    """A finite duration >= 0 in seconds as integer ns, rounded to the nearest."""
    check_seconds(what, value)
    ns = value * 1_000_000_000  # type: ignore[operator]
    if not ns < INT64_MAX:  # also infinity
        raise ValueError(f"{what} is too long: {value} s")
    return round(ns)


def delay_in_ns(delay: object) -> int:
    """A delay in seconds as ns, rounded to the nearest; 0 for "at once".
    TypeError/ValueError if bad.

    This is the one place (with the inlined copy in ``post_delayed_task``)
    where a delay becomes nanoseconds: rounding, not truncation, so that a
    decimal delay such as 1.001 s is 1_001_000_000 ns, not one less."""
    if isinstance(delay, bool) or not isinstance(delay, (int, float)):
        raise TypeError(f"delay must be a number of seconds, not {type(delay).__name__}")
    if delay != delay:
        raise ValueError("delay must not be NaN")
    if delay < 0:
        raise ValueError(f"delay must be >= 0, got {delay}")
    if math.isinf(delay):
        raise ValueError("delay must be finite")
    if delay >= MAX_DELAY:
        raise ValueError(f"delay must be less than {MAX_DELAY:.0f} seconds, got {delay}")
    return round(delay * 1_000_000_000)
