"""Pool-level rejected-task reporting: ``ThreadPool(on_rejected=...)``.

A pool calls ``on_rejected(task, reason)`` for every task that it, the pool
itself, refuses or drops:

* :attr:`RejectReason.CLOSED`: a post to the pool after its shutdown started
  (``post_task``, ``post_delayed_task``, ``submit``, ...).  The poster gets
  ``RunnerClosedError`` as always; the callback gets a handle made for the
  refused post, in state DROPPED.
* :attr:`RejectReason.SHUTDOWN`: a task that was queued or delayed when the
  pool's shutdown dropped it (a ``SKIP_ON_SHUTDOWN`` or
  ``CONTINUE_ON_SHUTDOWN`` task not started by the end of the drain, or any
  delayed task not yet due), the pool's own tasks and those of runners built
  on it alike.  The handle is in state DROPPED.

What a runner refuses or drops by itself (a closed runner's posts, a
single-thread runner's queue policy, a runner's own ``shutdown``) goes to that
runner's reporting, not here.  The pool's internal tasks (runners' run loops)
are never reported.

Contract: the callback runs on the thread that refused or dropped the task
(the poster's, the one calling ``shutdown``, or a worker), with no lock of the
runtime held; it should be quick.  One that raises is logged on
``taskrunner.pool`` and ignored: it never changes what happens to the task.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from contextvars import copy_context
from typing import TYPE_CHECKING, Any

from taskrunner.runtime.task import DROPPED, Task
from taskrunner.runtime.traits import TaskTraits

if TYPE_CHECKING:
    from taskrunner.runtime.runner import TaskRunner

__all__ = ["PoolRejectionCallback", "RejectReason"]

_log = logging.getLogger("taskrunner.pool")


class RejectReason(enum.Enum):
    """Why a pool refused or dropped a task."""

    CLOSED = "closed"  #: posted after shutdown started: refused (RunnerClosedError)
    SHUTDOWN = "shutdown"  #: queued or delayed when the pool's shutdown dropped it


PoolRejectionCallback = Callable[[Task, RejectReason], None]


def check_callback(on_rejected: object) -> None:
    """TypeError unless ``on_rejected`` is None or callable."""
    if on_rejected is not None and not callable(on_rejected):
        raise TypeError(f"on_rejected must be callable, not {type(on_rejected).__name__}")


def report(callback: PoolRejectionCallback, task: Task, reason: RejectReason) -> None:
    """Call ``callback(task, reason)``; log (once per call) if it raises."""
    try:
        callback(task, reason)
    except Exception:
        _log.exception(
            "on_rejected failed for task %s (%s)",
            task.name,
            reason.value,
            extra={"task_name": task.name, "runner": task.runner.name},
        )


def report_refused(
    callback: PoolRejectionCallback,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    traits: TaskTraits,
    name: str | None,
    runner: TaskRunner,
) -> None:
    """Report a post refused before it had a handle: make a DROPPED one (its
    token 0: it was never registered, so ``cancel()`` finds nothing)."""
    if not callable(fn):
        return  # not a task at all: the poster gets the TypeError's cause next time
    task = Task(0, fn, args, copy_context(), traits, name, runner)
    task._finish(DROPPED)
    report(callback, task, RejectReason.CLOSED)


CLOSED = RejectReason.CLOSED
SHUTDOWN = RejectReason.SHUTDOWN
