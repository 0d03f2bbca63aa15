"""``FutureCall``: the task that runs a call into a ``concurrent.futures.Future``.

Every API that hands back a Future (``TaskRunner.submit``, the Executor views
of :mod:`taskrunner.runtime.executor`, ``post_task_and_reply_with_result``) posts one
of these as the task.  It settles its future exactly once, in one of two
ways, and the two are mutually exclusive because a task either runs or does
not (see :mod:`taskrunner.runtime.task`):

* the task runs: ``__call__`` moves the future to RUNNING (or, if the future
  was cancelled meanwhile, to CANCELLED_AND_NOTIFIED and does nothing), calls
  the function and sets its result or exception;
* the task will never run (cancelled, dropped by a shutdown or a queue
  policy): ``Task._finish`` calls :meth:`FutureCall.not_run`, which cancels
  the future *and notifies its waiters* (``concurrent.futures.wait`` and
  ``as_completed`` only count a cancelled future once it is notified), so no
  ``result()`` ever waits for a task that is gone.

``current_future()`` is the future whose call is running on this thread, so
an executor's ``shutdown(wait=True)`` called from inside one of its own tasks
does not wait for itself.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class _Running(threading.local):
    """Per thread: the future of the FutureCall running on it, if any."""

    future: Future[Any] | None = None


_running = _Running()


def current_future() -> Future[Any] | None:
    """The future of the FutureCall running on the calling thread, or None."""
    return _running.future


class NotRunHook:
    """A task callable that wants to know when its task will never run.

    ``Task._finish`` calls :meth:`not_run` once, from the thread that
    cancelled or dropped the task, with no lock of the runtime held.
    """

    __slots__ = ()

    def not_run(self) -> None:
        """The task was cancelled or dropped: it will never be called."""


class FutureCall(NotRunHook, Generic[T]):
    """``fn(*args, **kwargs)`` into ``future``; see the module docstring.

    ``reraise``: after setting the exception on the future, raise it again so
    the runner's error handler (and the metrics) see a failed task.  The
    runners' own ``submit`` does; the Executor views do not (the standard
    library's executors report an exception only through its future).
    ``reply``: called with the result just before it is set (success only).
    """

    __slots__ = ("args", "fn", "future", "kwargs", "reply", "reraise")

    def __init__(
        self,
        future: Future[T],
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        *,
        reraise: bool,
        reply: Callable[[T], Any] | None = None,
    ) -> None:
        self.future = future
        self.fn: Callable[..., T] | None = fn
        self.args = args
        self.kwargs = kwargs
        self.reraise = reraise
        self.reply = reply

    def __call__(self) -> None:
        future = self.future
        fn = self.fn
        args, kwargs = self.args, self.kwargs
        # Drop our references before running: a result or argument must not
        # outlive the call because this object (held by the task) does.
        self.fn = None
        self.args = ()
        self.kwargs = None
        if fn is None or not future.set_running_or_notify_cancel():
            return
        previous = _running.future
        _running.future = future
        try:
            result = fn(*args, **kwargs) if kwargs else fn(*args)
        except BaseException as exc:
            future.set_exception(exc)
            if self.reraise:
                raise
            return
        finally:
            _running.future = previous
            del fn, args, kwargs
        reply = self.reply
        if reply is None:
            future.set_result(result)
            return
        # The reply is posted before the future completes, so whoever the
        # future wakes finds it queued: on one reply runner it runs first.
        self.reply = None
        try:
            reply(result)
        finally:
            future.set_result(result)

    def not_run(self) -> None:
        self.fn = None
        self.args = ()
        self.kwargs = None
        self.reply = None
        future = self.future
        # True also if the caller cancelled the future first (which is what
        # cancelled the task); only the un-notified state needs notifying.
        if future.cancel():
            notify_cancelled(future)


def notify_cancelled(future: Future[Any]) -> None:
    """Move a cancelled future to CANCELLED_AND_NOTIFIED (waking ``wait()``
    and ``as_completed()`` waiters); nothing if it is already notified."""
    with contextlib.suppress(RuntimeError):  # already notified by someone else
        future.set_running_or_notify_cancel()


__all__ = ["FutureCall", "NotRunHook", "current_future", "notify_cancelled"]
