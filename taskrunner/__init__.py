"""taskrunner: a threading runtime whose queue core is C.

Post work to a :class:`ThreadPool` or to the runners built on it; see the
README for a tour.  Every public class documents its thread-safety, ordering
and shutdown contract.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskrunner.clock import MONOTONIC, Clock, MonotonicClock
from taskrunner.defaults import (
    DefaultPoolError,
    create_parallel_runner,
    create_sequenced_runner,
    create_single_thread_runner,
    default_pool,
    set_default_pool,
    shutdown_default_pool,
)
from taskrunner.errors import (
    ClosedError,
    DuplicateTokenError,
    ExecutorShutdownError,
    NoCurrentTaskRunnerError,
    QueueEmptyError,
    QueueFullError,
    RunnerClosedError,
    TaskRunnerError,
    UnknownTokenError,
)
from taskrunner.eventbus import EventBus, EventBusClosedError, Subscription
from taskrunner.executor import RunnerExecutor
from taskrunner.pool import ShutdownReport, ThreadPool
from taskrunner.rejections import RejectReason
from taskrunner.repeating import RepeatingMode, RepeatingTaskHandle
from taskrunner.runner import (
    NO_REPLY,
    TaskRunner,
    current_task_runner,
    current_task_runner_or_none,
)
from taskrunner.sequenced import ParallelTaskRunner, SequencedTaskRunner
from taskrunner.single_thread import QueuePolicy, SingleThreadTaskRunner
from taskrunner.task import Task, TaskState
from taskrunner.timers import DebounceTimer, OneShotTimer, RepeatingTimer
from taskrunner.traits import DEFAULT_TRAITS, ShutdownBehavior, TaskPriority, TaskTraits

if TYPE_CHECKING:
    from taskrunner.asyncio_runner import AsyncioTaskRunner

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # AsyncioTaskRunner is imported on first use: importing asyncio costs tens
    # of milliseconds that threaded programs need not pay.
    if name == "AsyncioTaskRunner":
        from taskrunner.asyncio_runner import AsyncioTaskRunner

        return AsyncioTaskRunner
    raise AttributeError(f"module 'taskrunner' has no attribute {name!r}")


__all__ = [
    "DEFAULT_TRAITS",
    "MONOTONIC",
    "NO_REPLY",
    "AsyncioTaskRunner",
    "Clock",
    "ClosedError",
    "DebounceTimer",
    "DefaultPoolError",
    "DuplicateTokenError",
    "EventBus",
    "EventBusClosedError",
    "ExecutorShutdownError",
    "MonotonicClock",
    "NoCurrentTaskRunnerError",
    "OneShotTimer",
    "ParallelTaskRunner",
    "QueueEmptyError",
    "QueueFullError",
    "QueuePolicy",
    "RejectReason",
    "RepeatingMode",
    "RepeatingTaskHandle",
    "RepeatingTimer",
    "RunnerClosedError",
    "RunnerExecutor",
    "SequencedTaskRunner",
    "ShutdownBehavior",
    "ShutdownReport",
    "SingleThreadTaskRunner",
    "Subscription",
    "Task",
    "TaskPriority",
    "TaskRunner",
    "TaskRunnerError",
    "TaskState",
    "TaskTraits",
    "ThreadPool",
    "UnknownTokenError",
    "create_parallel_runner",
    "create_sequenced_runner",
    "create_single_thread_runner",
    "current_task_runner",
    "current_task_runner_or_none",
    "default_pool",
    "set_default_pool",
    "shutdown_default_pool",
]
