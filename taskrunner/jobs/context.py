"""What a job handler receives: :class:`JobContext`, and the :class:`CancelToken` in it.

A handler is called as ``handler(ctx, args)``.  It should call ``ctx.check()``
(or test ``ctx.cancelled``) at points where stopping is safe, and use
``ctx.sleep()`` instead of ``time.sleep()`` so a cancellation or timeout
wakes it.  Cancellation is cooperative: Python cannot stop a thread, so a
handler that never checks runs to its end.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from taskrunner.jobs.errors import JobCancelled, JobTimeout
from taskrunner.jobs.queues import DEFAULT_QUEUE
from taskrunner.runtime.waits import check_wait_timeout

__all__ = ["CancelToken", "JobContext"]

#: Why a token was cancelled: the values of ``CancelToken.reason``.
CANCELLED = "cancelled"
TIMEOUT = "timeout"
DEADLINE = "deadline exceeded"
SHUTDOWN = "shutdown"
LEASE_LOST = "lease lost"


class CancelToken:
    """A one-way flag with a reason, callbacks and a wait.

    ``cancel()`` may be called from any thread, any number of times; the first
    call wins and fixes ``reason``.  Callbacks registered with ``on_cancel``
    run once, on the thread that cancelled (or at once if already cancelled),
    after the token's lock is released.  ``_lock`` guards ``_reason`` and
    ``_callbacks``; ``_event`` is set exactly when ``_reason`` is.
    """

    __slots__ = ("_callbacks", "_event", "_lock", "_reason")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._reason: str | None = None
        self._callbacks: list[Callable[[str], object]] = []

    def cancel(self, reason: str = CANCELLED) -> bool:
        """Cancel with ``reason``; True if this call did it (False if already cancelled)."""
        with self._lock:
            if self._reason is not None:
                return False
            self._reason = reason
            callbacks, self._callbacks = self._callbacks, []
        self._event.set()
        for callback in callbacks:
            callback(reason)
        return True

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    @property
    def reason(self) -> str | None:
        """Why it was cancelled, or None."""
        with self._lock:
            return self._reason

    def on_cancel(self, callback: Callable[[str], object]) -> None:
        """Call ``callback(reason)`` when cancelled (now, if it already is)."""
        with self._lock:
            reason = self._reason
            if reason is None:
                self._callbacks.append(callback)
                return
        callback(reason)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until cancelled or ``timeout`` passed; True if cancelled."""
        return self._event.wait(check_wait_timeout(timeout))

    def raise_if_cancelled(self) -> None:
        """Raise :class:`JobTimeout` (timeout, deadline) or :class:`JobCancelled`."""
        reason = self.reason
        if reason is None:
            return
        if reason in (TIMEOUT, DEADLINE):
            raise JobTimeout(f"job stopped: {reason}")
        raise JobCancelled(f"job stopped: {reason}")


@dataclass(frozen=True, slots=True)
class JobContext:
    """One attempt of one job, as its handler sees it.  Immutable; the token is shared."""

    job_id: str
    job_type: str
    #: 1 for the first attempt.
    attempt: int
    max_attempts: int
    #: Epoch seconds after which the attempt is timed out, or None.
    deadline: float | None
    token: CancelToken = field(repr=False)
    #: A logger whose records carry ``job_id``, ``job_type`` and ``attempt``.
    logger: logging.LoggerAdapter[logging.Logger] = field(repr=False)
    #: The queue the job belongs to.
    queue: str = DEFAULT_QUEUE

    @property
    def cancelled(self) -> bool:
        """True once cancellation, a timeout or shutdown asked the job to stop."""
        return self.token.cancelled

    def check(self) -> None:
        """Raise :class:`JobCancelled` (or :class:`JobTimeout`) if asked to stop."""
        self.token.raise_if_cancelled()

    def sleep(self, seconds: float) -> None:
        """Sleep up to ``seconds`` in real time, waking early to raise if asked to stop."""
        self.token.wait(seconds)
        self.check()
