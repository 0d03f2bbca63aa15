"""The job manager's run-time configuration: handlers and the retry policy.

:class:`Registry` is the part of :class:`~taskrunner.jobs.JobManager` that
may change while the manager runs:

* ``register(job_type, fn)`` / ``@manager.handler(job_type)`` add a handler;
  ``unregister(job_type)`` removes one.  Claims ask the store only for the
  types that have a handler, so after ``unregister`` this manager claims no
  more jobs of that type (they stay PENDING in the store for a manager that
  has one) and ``submit`` of that type raises :class:`UnknownJobTypeError`.
  Attempts already running finish, with the handler they started with.
* ``retry_policy`` is readable and replaceable: a new policy applies to every
  attempt that fails after the assignment (whether it retries, and after
  what delay) and to the ``max_attempts`` of jobs submitted after it; jobs
  already stored keep their ``max_attempts``.  A policy given to
  ``register(..., retry=...)`` still overrides it for that type.

Thread-safety: every method may be called from any thread, handlers
included; ``_lock`` (the manager's) guards the handler table, and the policy
is one attribute replaced whole (an attempt reads it once, when it fails).
"""

from __future__ import annotations

from collections.abc import Callable

from taskrunner.errors import RunnerClosedError
from taskrunner.jobs.errors import UnknownJobTypeError
from taskrunner.jobs.handles import Handler, HandlerEntry
from taskrunner.jobs.manager_core import ManagerCore
from taskrunner.jobs.retry import RetryPolicy

__all__ = ["Registry"]


class Registry(ManagerCore):
    """Handlers by job type, and the manager's retry policy."""

    def register(
        self,
        job_type: str,
        fn: Handler,
        *,
        may_block: bool = True,
        retry: RetryPolicy | None = None,
    ) -> None:
        """Register ``fn(ctx, args)`` for ``job_type``.  ``may_block`` (the
        default, since jobs usually do I/O) runs it on the pool's blocking
        group; ``retry`` overrides the manager's policy for this type.

        Thread-safe; a handler registered after :meth:`start` is used from the
        next claim on.  Raises ``ValueError`` if ``job_type`` already has a
        handler, and ``RunnerClosedError`` after :meth:`shutdown`."""
        if not isinstance(job_type, str) or not job_type:
            raise TypeError("job_type must be a non-empty str")
        if not callable(fn):
            raise TypeError(f"handler must be callable, not {type(fn).__name__}")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError("retry must be a RetryPolicy")
        with self._lock:
            if not self._accepting:
                raise RunnerClosedError(f"JobManager: cannot register {job_type!r} after shutdown")
            if job_type in self._handlers:
                raise ValueError(f"a handler for job type {job_type!r} is already registered")
            self._handlers[job_type] = HandlerEntry(fn, may_block, retry)

    def handler(
        self, job_type: str, *, may_block: bool = True, retry: RetryPolicy | None = None
    ) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`register`: ``@manager.handler("send_email")``."""

        def decorate(fn: Handler) -> Handler:
            self.register(job_type, fn, may_block=may_block, retry=retry)
            return fn

        return decorate

    def unregister(self, job_type: str) -> None:
        """Remove the handler of ``job_type`` (see the module docstring):
        no more claims of that type here, and later submits of it raise
        :class:`UnknownJobTypeError`.  Raises UnknownJobTypeError if it has no
        handler.  It may be registered again later."""
        if not isinstance(job_type, str) or not job_type:
            raise TypeError("job_type must be a non-empty str")
        with self._lock:
            if self._handlers.pop(job_type, None) is None:
                raise UnknownJobTypeError(job_type)

    @property
    def job_types(self) -> list[str]:
        """The job types with a handler, sorted."""
        with self._lock:
            return sorted(self._handlers)

    @property
    def retry_policy(self) -> RetryPolicy:
        """The policy for failed attempts of types without their own (see the
        module docstring for when a replacement applies)."""
        return self._retry

    @retry_policy.setter
    def retry_policy(self, policy: RetryPolicy) -> None:
        if not isinstance(policy, RetryPolicy):
            raise TypeError(f"retry_policy must be a RetryPolicy, not {type(policy).__name__}")
        self._retry = policy
