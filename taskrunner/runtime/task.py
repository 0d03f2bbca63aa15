"""The task record, which is also the handle returned by every post.

A ``Task`` is created once per post and is the only per-task allocation on
the hot path (no Future unless a result is asked for).

Thread-safety and the one decision point.  A task leaves PENDING exactly once.
Its owner (the pool that holds it) keeps every pending task in one dict keyed
by token, and whoever removes the token from that dict (``dict.pop`` is atomic
with or without a GIL) owns the task's fate: a worker that pops it runs it, a
``cancel()`` that pops it cancels it, a shutdown that pops it drops it.  The
winner alone writes ``state`` after that, so a task is never both run and
cancelled, and never run twice.  Readers of ``state`` from other threads see
the latest value the winner wrote (a plain attribute store: a late read is
stale, never torn).
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from contextvars import Context
from typing import TYPE_CHECKING, Any, Protocol

from taskrunner.runtime.future_call import NotRunHook
from taskrunner.runtime.traits import TaskTraits
from taskrunner.runtime.waits import check_wait_timeout

if TYPE_CHECKING:
    from taskrunner.runtime.runner import TaskRunner


class TaskState(enum.Enum):
    """Where a task is in its life.  Legal moves: PENDING to any other state;
    RUNNING to SUCCEEDED or FAILED.  Nothing leaves the last four."""

    PENDING = "pending"  #: posted (queued or waiting for its delay), not started
    RUNNING = "running"  #: a thread is running it now
    SUCCEEDED = "succeeded"  #: ran and returned
    FAILED = "failed"  #: ran and raised (the error handler saw the exception)
    CANCELLED = "cancelled"  #: cancel() won before it started
    DROPPED = "dropped"  #: never ran: shutdown skipped it, or a queue policy discarded it


FINISHED_STATES = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.DROPPED}
)

PENDING = TaskState.PENDING
RUNNING = TaskState.RUNNING
SUCCEEDED = TaskState.SUCCEEDED
FAILED = TaskState.FAILED
CANCELLED = TaskState.CANCELLED
DROPPED = TaskState.DROPPED


class _TaskOwner(Protocol):
    def _cancel_task(self, task: Task) -> bool: ...


_log = logging.getLogger("taskrunner.task")

# Guards the lazy creation of a task's completion event (Task._done_event).
_EVENT_LOCK = threading.Lock()


def describe(fn: Callable[..., Any]) -> str:
    """A readable name for a callable (its qualified name, or its repr)."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        inner = getattr(fn, "func", None)  # functools.partial
        return f"partial({describe(inner)})" if inner is not None else repr(fn)
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module and module != "builtins" else str(name)


class Task:
    """A posted task and its handle (``runner`` is the runner it was posted to;
    that runner's ``_pool`` owns the pending-task table).

    ``cancel()`` stops a task that has not started (False once it started or
    finished); ``state`` tells where it is; ``wait()`` blocks until it
    finished.  The handle keeps no reference to the callable once finished.
    """

    __slots__ = (
        "__weakref__",
        "_done_event",
        "_name",
        "args",
        "ctx",
        "delayed",
        "fn",
        "ready_ns",
        "runner",
        "state",
        "token",
        "traits",
    )

    def __init__(
        self,
        token: int,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        ctx: Context,
        traits: TaskTraits,
        name: str | None,
        runner: TaskRunner,
    ) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, not {type(name).__name__}")
        self.token = token
        self.fn: Callable[..., Any] | None = fn
        self.args = args
        self.ctx = ctx
        self.traits = traits
        self._name = name
        self.runner = runner
        self.state = PENDING
        self.delayed = False
        self._done_event: threading.Event | None = None
        # When the task became ready to run (time.monotonic_ns): set at post,
        # and again when a delayed task falls due, only if the pool has metrics.
        self.ready_ns = 0

    @property
    def name(self) -> str:
        """The name given at post time, or the callable's qualified name.

        Computed on first use and cached.  Any thread may read it: racing
        readers compute the same string, and the ``task-<token>`` fallback
        (the callable is already released) is never cached, so it cannot
        overwrite the real name another reader computed.
        """
        name = self._name
        if name is None:
            fn = self.fn
            if fn is None:
                return f"task-{self.token}"
            name = self._name = describe(fn)
        return name

    def cancel(self) -> bool:
        """Cancel the task if it has not started.  True if this call cancelled it."""
        owner: _TaskOwner = self.runner._pool  # type: ignore[attr-defined]
        return owner._cancel_task(self)

    def cancelled(self) -> bool:
        return self.state is CANCELLED

    def done(self) -> bool:
        """True once the task finished in any way (ran, failed, cancelled, dropped)."""
        return self.state in FINISHED_STATES

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the task finished; False if ``timeout`` ran out first
        (seconds; None waits for as long as it takes, see taskrunner.runtime.waits)."""
        timeout = check_wait_timeout(timeout)
        if self.state in FINISHED_STATES:
            return True
        with _EVENT_LOCK:
            event = self._done_event
            if event is None:
                event = self._done_event = threading.Event()
        # Re-check after publishing the event: _finish() (and the worker's
        # inlined copy of it) writes state before it reads _done_event, so one
        # of the two sides sees the other.  That needs each side's store and
        # its following load to stay in order (the GIL keeps them so; on the
        # free-threaded build the lock release here and the atomic attribute
        # store there do).  tests/test_free_threading.py races waiters against
        # finishing tasks to catch a lost wake-up.
        if self.state in FINISHED_STATES:
            return True
        return event.wait(timeout)

    def _finish(self, state: TaskState) -> None:
        """Record the final state (only the thread that claimed the task calls this).

        A task that will never run (CANCELLED, DROPPED) whose callable is a
        :class:`~taskrunner.runtime.future_call.NotRunHook` is told so before waiters
        wake: that is how a Future handed out for it gets cancelled."""
        fn = self.fn
        self.state = state
        self.fn = None
        self.args = ()
        if (state is CANCELLED or state is DROPPED) and isinstance(fn, NotRunHook):
            try:
                fn.not_run()
            except Exception:
                _log.exception("task %s: its not-run hook failed", self.name)
        event = self._done_event
        if event is not None:
            event.set()

    def __repr__(self) -> str:
        return f"<Task {self.name!r} {self.state.value} priority={self.traits.priority.name}>"


def check_post(fn: object, traits: object) -> None:
    """TypeError unless ``fn`` is callable and ``traits`` a TaskTraits (the checks
    of every post; ``post_task`` inlines them on its fast path)."""
    if not callable(fn):
        raise TypeError(f"task must be callable, not {type(fn).__name__}")
    if type(traits) is not TaskTraits:
        raise TypeError(f"traits must be TaskTraits, not {type(traits).__name__}")
