"""Task traits: what a task asks of the scheduler (priority, blocking, category, shutdown).

Modelled on Chromium's ``base::TaskTraits``.  Traits are immutable and
hashable; the module-level defaults are shared, so posting with default
traits allocates nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class TaskPriority(enum.IntEnum):
    """How urgent a task is.  Higher values run first; FIFO within a priority."""

    #: Work the user does not wait for (prefetching, cleanup).  At most a few
    #: run at once (``ThreadPool(best_effort_limit=...)``) so they never starve
    #: user work.
    BEST_EFFORT = 0
    #: Work whose result the user will see (the default).
    USER_VISIBLE = 1
    #: Work the user is waiting for right now.
    USER_BLOCKING = 2


class ShutdownBehavior(enum.Enum):
    """What shutdown does with a task (Chromium's ``TaskShutdownBehavior``)."""

    #: Not started at shutdown: never runs.  Running: shutdown does not wait for it.
    CONTINUE_ON_SHUTDOWN = "continue_on_shutdown"
    #: Not started at shutdown: dropped.  Running: shutdown waits for it.  The default.
    SKIP_ON_SHUTDOWN = "skip_on_shutdown"
    #: Always runs before shutdown returns, even if posted just before it.  A
    #: delayed task with this behaviour is treated as SKIP_ON_SHUTDOWN.
    BLOCK_SHUTDOWN = "block_shutdown"


@dataclass(frozen=True, slots=True)
class TaskTraits:
    """The traits of a posted task.

    ``may_block`` sends the task to the pool's separate, growable group of
    blocking workers so blocking I/O cannot starve CPU work.  ``category``
    labels the task in metrics and, if the pool was given a limit for it,
    caps how many tasks of the category run at once.
    """

    priority: TaskPriority = TaskPriority.USER_VISIBLE
    may_block: bool = False
    category: str | None = None
    shutdown_behavior: ShutdownBehavior = ShutdownBehavior.SKIP_ON_SHUTDOWN

    def __post_init__(self) -> None:
        if not isinstance(self.priority, TaskPriority):
            if isinstance(self.priority, bool) or not isinstance(self.priority, int):
                raise TypeError(
                    f"priority must be a TaskPriority, not {type(self.priority).__name__}"
                )
            try:
                object.__setattr__(self, "priority", TaskPriority(self.priority))
            except ValueError:
                raise ValueError(f"unknown task priority {self.priority!r}") from None
        if not isinstance(self.may_block, bool):
            raise TypeError(f"may_block must be a bool, not {type(self.may_block).__name__}")
        if self.category is not None and not isinstance(self.category, str):
            raise TypeError(f"category must be a str or None, not {type(self.category).__name__}")
        if self.category == "":
            raise ValueError("category must not be empty (None means no category)")
        if not isinstance(self.shutdown_behavior, ShutdownBehavior):
            raise TypeError(
                "shutdown_behavior must be a ShutdownBehavior, "
                f"not {type(self.shutdown_behavior).__name__}"
            )


DEFAULT_TRAITS = TaskTraits()
