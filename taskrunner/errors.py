"""The exceptions taskrunner raises.

Every error the library raises on purpose derives from ``TaskRunnerError``;
where a built-in exception says the same thing (``ValueError`` for a bad
argument, ``TimeoutError`` for a timeout, ``KeyError`` for an unknown key) the
class also derives from it, so callers can catch either.
"""

from __future__ import annotations


class TaskRunnerError(Exception):
    """Base class of every error raised by taskrunner."""


class ClosedError(TaskRunnerError):
    """The structure or runner was closed: it takes nothing new."""


class RunnerClosedError(ClosedError):
    """A task was posted to a runner or pool that is shut down (or shutting down)."""


class ExecutorShutdownError(RunnerClosedError, RuntimeError):
    """``submit``/``map`` on an Executor view that was shut down, or whose runner
    was: a ``RuntimeError`` as the standard library's executors raise."""


class QueueFullError(TaskRunnerError):
    """A bounded queue had no room and its policy is to refuse."""


class QueueEmptyError(TaskRunnerError):
    """A non-blocking pop found nothing."""


class UnknownTokenError(TaskRunnerError, KeyError):
    """The token is not held by the structure (never added, already removed or fired)."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else "unknown token"


class DuplicateTokenError(TaskRunnerError, ValueError):
    """The token is already held by the structure."""


class NoCurrentTaskRunnerError(TaskRunnerError, RuntimeError):
    """current_task_runner() was called outside any task."""
