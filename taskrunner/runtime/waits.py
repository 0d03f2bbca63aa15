"""The timeout of a wait: one rule for every public method that blocks.

``wait_idle``, ``flush``, ``wait_shutdown``, ``Task.wait``, ``map``'s results,
``JobManager.result`` and the rest take ``timeout`` in seconds and check it
here, before they wait, so a bad value fails the same way everywhere instead
of deep inside (a ``str`` used to surface as ``unsupported operand type(s)
for +``, a NaN as a wait that returned at once).  Pure functions; thread-safe.
"""

from __future__ import annotations

import math
import threading


def check_wait_timeout(timeout: object, what: str = "timeout") -> float | None:
    """``timeout`` checked for a wait: None (also for +infinity, or anything from
    ``threading.TIMEOUT_MAX`` up, which the platform's waits refuse) waits for
    as long as it takes; otherwise a float number of seconds, where 0 or less
    means "do not wait, just look" (as ``threading.Event.wait``).

    TypeError unless an int, a float or None (a bool is refused: ``True`` is
    never a duration); ValueError for NaN, which orders with nothing."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{what} must be a number of seconds or None, not {type(timeout).__name__}")
    if math.isnan(timeout):
        raise ValueError(f"{what} must not be NaN")
    if timeout >= threading.TIMEOUT_MAX:  # +inf, or beyond what the platform's waits take
        return None
    if math.isinf(timeout):
        return 0.0
    return max(0.0, float(timeout))
