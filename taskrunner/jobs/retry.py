"""Retry policies: exponential backoff with jitter, for jobs and for store writes.

A :class:`RetryPolicy` answers two questions: should this failure be retried
(:meth:`~RetryPolicy.should_retry`), and how long to wait before attempt
``n + 1`` once attempt ``n`` failed (:meth:`~RetryPolicy.delay_for`)::

    base(n)  = min(max_delay, initial_delay * ratio ** (n - 1))
    delay(n) = base(n) * (1 - jitter * u),   u uniform in [0, 1)

so the delays grow geometrically up to ``max_delay``, never exceed it, and
jitter only shortens them (as Chromium's ``net::BackoffEntry`` does): with
``jitter=0.1`` a delay falls in ``[0.9 * base, base]``, which spreads out
retries that failed together without breaking the cap.

:func:`retry_call` runs a callable under a policy, sleeping between attempts
with an injected ``sleep`` (so a test or a mock clock drives it).  It blocks
its thread while it waits: a caller that must not stall other work (the job
manager's IO layer) schedules its retries as delayed tasks with ``delay_for``
instead.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from taskrunner.jobs.errors import JobCancelled
from taskrunner.jobs.model import check_below_max_duration

__all__ = ["RandomSource", "RetryPolicy", "retry_call"]

T = TypeVar("T")


class RandomSource(Protocol):
    """Anything with ``random() -> float`` in ``[0, 1)``: the ``random`` module, a ``Random``."""

    def random(self) -> float: ...


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"RetryPolicy.{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"RetryPolicy.{name} must be finite, got {value}")
    return float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often, and after what delays, to retry a failed job or store write.

    Immutable and thread-safe.  Every field is checked on construction;
    a bad one raises ``TypeError`` or ``ValueError`` naming it.
    """

    #: Attempts in all, the first included (>= 1; 1 means never retry).
    max_attempts: int = 3
    #: Delay after the first failed attempt, in seconds (>= 0).
    initial_delay: float = 1.0
    #: Growth factor of the delay from one attempt to the next (>= 1).
    ratio: float = 2.0
    #: Cap on any delay, in seconds (>= initial_delay).
    max_delay: float = 300.0
    #: Fraction of a delay that is randomly removed, in [0, 1].
    jitter: float = 0.1
    #: Exception types worth a retry; others fail at once.
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        put = object.__setattr__
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError(
                f"RetryPolicy.max_attempts must be an int, got {type(self.max_attempts).__name__}"
            )
        if self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts}")
        initial = _number("initial_delay", self.initial_delay)
        if initial < 0:
            raise ValueError(f"RetryPolicy.initial_delay must be >= 0, got {initial}")
        check_below_max_duration("RetryPolicy.initial_delay", initial)
        ratio = _number("ratio", self.ratio)
        if ratio < 1:
            raise ValueError(f"RetryPolicy.ratio must be >= 1, got {ratio}")
        max_delay = _number("max_delay", self.max_delay)
        check_below_max_duration("RetryPolicy.max_delay", max_delay)
        if max_delay < initial:
            raise ValueError(
                f"RetryPolicy.max_delay must be >= initial_delay ({initial}), got {max_delay}"
            )
        jitter = _number("jitter", self.jitter)
        if not 0 <= jitter <= 1:
            raise ValueError(f"RetryPolicy.jitter must be in [0, 1], got {jitter}")
        if not isinstance(self.retry_on, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in self.retry_on
        ):
            raise TypeError(
                f"RetryPolicy.retry_on must be a tuple of exception types, got {self.retry_on!r}"
            )
        put(self, "initial_delay", initial)
        put(self, "ratio", ratio)
        put(self, "max_delay", max_delay)
        put(self, "jitter", jitter)

    def base_delay(self, attempt: int) -> float:
        """The delay after failed attempt ``attempt`` (1-based), before jitter."""
        if isinstance(attempt, bool) or not isinstance(attempt, int):
            raise TypeError(f"attempt must be an int, got {type(attempt).__name__}")
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1, got {attempt}")
        try:
            grown = self.initial_delay * self.ratio ** (attempt - 1)
        except OverflowError:
            return self.max_delay
        return min(self.max_delay, grown)

    def delay_for(self, attempt: int, rng: RandomSource = random) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based) before the next.

        In ``[base * (1 - jitter), base]`` where ``base = base_delay(attempt)``;
        never more than ``max_delay``.  ``rng`` supplies the randomness (pass a
        seeded ``random.Random`` for reproducible delays).
        """
        base = self.base_delay(attempt)
        u = rng.random()
        if not 0 <= u < 1:
            raise ValueError(f"rng.random() must return a float in [0, 1), got {u!r}")
        return base * (1 - self.jitter * u)

    def should_retry(self, exc: BaseException) -> bool:
        """True if ``exc`` is one of ``retry_on``.  A :class:`JobCancelled` never is."""
        return isinstance(exc, self.retry_on) and not isinstance(exc, JobCancelled)

    def allows_another(self, attempt: int) -> bool:
        """True if, after ``attempt`` attempts, the policy allows one more."""
        return attempt < self.max_attempts


def retry_call(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], object] = time.sleep,
    on_retry: Callable[[int, BaseException, float], object] | None = None,
    rng: RandomSource = random,
) -> T:
    """Call ``fn()`` until it returns, retrying failures as ``policy`` says.

    After failed attempt ``n`` (1-based), if ``policy.should_retry(exc)`` and
    ``n < policy.max_attempts``, calls ``on_retry(n, exc, delay)`` (to log or
    count it), then ``sleep(delay)`` with ``delay = policy.delay_for(n, rng)``,
    then tries again.  Otherwise the exception propagates unchanged: the last
    one, once attempts run out, or at once for a failure not worth a retry.
    Returns what ``fn`` returned.  An exception raised by ``on_retry`` or
    ``sleep`` propagates too (and ends the retries).
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except BaseException as exc:
            if not policy.allows_another(attempt) or not policy.should_retry(exc):
                raise
            delay = policy.delay_for(attempt, rng)
            if on_retry is not None:
                on_retry(attempt, exc, delay)
        sleep(delay)
