"""taskrunner: a threading runtime whose queue core is C.

Post work to a :class:`ThreadPool` or to the runners built on it; see the
README for a tour.  Every public class documents its thread-safety, ordering
and shutdown contract.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
from taskrunner.runtime.clock import MONOTONIC, Clock, MonotonicClock
from taskrunner.runtime.current import current_task_runner, current_task_runner_or_none
from taskrunner.runtime.defaults import (
    DefaultPoolError,
    create_parallel_runner,
    create_sequenced_runner,
    create_single_thread_runner,
    default_pool,
    set_default_pool,
    shutdown_default_pool,
)
from taskrunner.runtime.eventbus import EventBus, EventBusClosedError, Subscription
from taskrunner.runtime.executor import RunnerExecutor
from taskrunner.runtime.pool import MAX_WORKERS, ShutdownReport, ThreadPool
from taskrunner.runtime.rejections import RejectReason
from taskrunner.runtime.repeating import RepeatingMode, RepeatingTaskHandle
from taskrunner.runtime.runner import NO_REPLY, TaskRunner
from taskrunner.runtime.runners.sequenced import ParallelTaskRunner, SequencedTaskRunner
from taskrunner.runtime.runners.single_thread import QueuePolicy, SingleThreadTaskRunner
from taskrunner.runtime.task import Task, TaskState
from taskrunner.runtime.timers import DebounceTimer, OneShotTimer, RepeatingTimer
from taskrunner.runtime.traits import DEFAULT_TRAITS, ShutdownBehavior, TaskPriority, TaskTraits
from taskrunner.version import __version__ as __version__

if TYPE_CHECKING:
    from taskrunner.runtime.runners.asyncio_runner import AsyncioTaskRunner


def __getattr__(name: str) -> Any:
    # AsyncioTaskRunner is imported on first use: importing asyncio costs tens
    # of milliseconds that threaded programs need not pay.
    if name == "AsyncioTaskRunner":
        from taskrunner.runtime.runners.asyncio_runner import AsyncioTaskRunner

        return AsyncioTaskRunner
    raise AttributeError(f"module 'taskrunner' has no attribute {name!r}")


__all__ = [
    "DEFAULT_TRAITS",
    "MAX_WORKERS",
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
