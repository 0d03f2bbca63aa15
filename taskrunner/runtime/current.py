"""Which runner is running the calling thread's task: ``current_task_runner()``.

Every place that runs a task (the pool's workers, the sequenced runners' run
loops, the single-thread runner's thread, the asyncio runner's drain) sets the
current runner with :func:`set_current` before the task and restores the
previous one after it.  Per thread (a ``threading.local``), so thread-safe.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from taskrunner.errors import NoCurrentTaskRunnerError

if TYPE_CHECKING:
    from taskrunner.runtime.runner import TaskRunner


class _Current(threading.local):
    """Per-thread: the runner whose task this thread is running, if any."""

    runner: TaskRunner | None = None


_current = _Current()


def current_task_runner() -> TaskRunner:
    """The runner running the calling task.

    Raises :class:`NoCurrentTaskRunnerError` when called outside any task (from
    a thread that is not running a task of some runner).
    """
    runner = _current.runner
    if runner is None:
        raise NoCurrentTaskRunnerError(
            "current_task_runner() called outside a task: no runner is running this thread"
        )
    return runner


def current_task_runner_or_none() -> TaskRunner | None:
    """Like :func:`current_task_runner`, but None outside a task."""
    return _current.runner


def set_current(runner: TaskRunner | None) -> TaskRunner | None:
    """Make ``runner`` this thread's current runner; return the previous one."""
    previous = _current.runner
    _current.runner = runner
    return previous
