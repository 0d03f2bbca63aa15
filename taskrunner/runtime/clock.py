"""The injected clock.

Everything in taskrunner that needs "now" for a delay asks a :class:`Clock`
(monotonic nanoseconds), never ``time`` directly, which is what lets
``taskrunner.testing.MockClock`` run delayed work deterministically.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

#: The longest delay or period in seconds: the runtime keeps time as int64
#: nanoseconds, about 292 years from its start.
MAX_DELAY = 9.2e9


@runtime_checkable
class Clock(Protocol):
    """A monotonic clock.  ``now_ns`` may be called from any thread."""

    def now_ns(self) -> int:
        """Monotonic time in integer nanoseconds."""
        ...

    @property
    def is_real(self) -> bool:
        """True if the clock follows real time (a timer thread may sleep on it)."""
        ...


class MonotonicClock:
    """``time.monotonic_ns``: the default clock.  Stateless, so thread-safe."""

    __slots__ = ()

    now_ns = staticmethod(time.monotonic_ns)

    @property
    def is_real(self) -> bool:
        return True


MONOTONIC = MonotonicClock()
