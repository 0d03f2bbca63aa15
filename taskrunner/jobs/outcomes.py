"""What a job handler may return or raise to steer its job: :class:`Snooze` and :class:`Cancel`.

* ``return Snooze(seconds)``: run the job again ``seconds`` from now.  The
  attempt is not counted (it does not use up ``max_attempts``) and is not a
  failure (``last_error`` is kept as it was); the job's future stays pending.
  If the job's cancellation was requested meanwhile, it is cancelled instead.
* ``raise Cancel(reason)``: stop the job for good.  It becomes ``CANCELLED``
  with ``last_error = reason``, is never retried, and its future raises
  :class:`~taskrunner.jobs.errors.JobCancelled`.

Both work the same on every store (the store rules are
:func:`~taskrunner.jobs.stores.rules.after_snooze` and
:func:`~taskrunner.jobs.stores.rules.after_mark_cancelled`).  Immutable values, safe
to share between threads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from taskrunner.jobs.errors import JobCancelled

__all__ = ["Cancel", "Snooze"]


@dataclass(frozen=True, slots=True)
class Snooze:
    """Returned by a handler: run the job again after ``seconds`` (>= 0), uncounted."""

    seconds: float

    def __post_init__(self) -> None:
        seconds = self.seconds
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise TypeError(f"Snooze seconds must be a number, got {type(seconds).__name__}")
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"Snooze seconds must be a finite number >= 0, got {seconds}")
        object.__setattr__(self, "seconds", float(seconds))


class Cancel(JobCancelled):
    """Raised by a handler: cancel its job for good, with ``reason`` as its ``last_error``."""

    def __init__(self, reason: str = "cancelled") -> None:
        if not isinstance(reason, str):
            raise TypeError(f"Cancel reason must be a str, got {type(reason).__name__}")
        super().__init__(reason)
        self.reason = reason
