"""The fields of a ``ThreadPool``, declared once for the modules that implement it.

``ThreadPool`` (:mod:`.threadpool`) is one class assembled from parts that
each do one job: :class:`~.workers.WorkerLoop`, :class:`~.observe.PoolObservability`
and :class:`~.shutdown.PoolShutdown`.  They share the pool's state, declared
here with what guards each field; ``ThreadPool.__init__`` sets them all.
The methods one part calls on another are declared here for the type checker
only (nothing of them exists at run time in this class).
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from taskrunner.runtime.clock import Clock

if TYPE_CHECKING:
    from taskrunner.errors import RunnerClosedError
    from taskrunner.runtime.delays import DelayedTasks
    from taskrunner.runtime.metrics import Metrics, RunnerGauges, TaskTracer
    from taskrunner.runtime.pool.batch_watch import BatchWatch
    from taskrunner.runtime.pool.gate import CategoryGate
    from taskrunner.runtime.pool.observe import PostCounter, TaskTimes
    from taskrunner.runtime.pool.shutdown import ShutdownReport
    from taskrunner.runtime.pool.workers import WorkerGroup
    from taskrunner.runtime.rejections import PoolRejectionCallback
    from taskrunner.runtime.runner import TaskRunner
    from taskrunner.runtime.task import Task
    from taskrunner.runtime.traits import TaskTraits

#: The next task token.  Tokens are unique across every pool of the process,
#: which keeps a token from being mistaken for another pool's.  ``next()`` on
#: ``itertools.count`` is atomic with or without the GIL.
next_token = itertools.count(1).__next__

#: ``Task.ready_ns`` of an internal task (a runner's run loop): not counted, not traced.
INTERNAL = -1

#: Per thread: the pool whose runtime thread (a worker, or the drain of a pool
#: that never started) this is, so that ``shutdown()`` knows it is called from inside.
runtime_thread = threading.local()

#: The handler of a task's exception: ``(exc, task)``.
ErrorHandler = Callable[[BaseException, "Task"], None]


if TYPE_CHECKING:
    _Base = TaskRunner  # the type checker sees the parts as the runner they make up
else:
    _Base = object


class PoolState(_Base):
    """The state every part of ``ThreadPool`` shares (see the module docstring)."""

    # Fixed at construction.
    _name: str
    _clock: Clock
    _now: Callable[[], int]
    _error_handler: ErrorHandler | None
    _batch_size: int
    _on_rejected: PoolRejectionCallback | None
    _metrics: Metrics | None
    _tracer: TaskTracer | None
    _plain: bool  # neither metrics nor a tracer: the run paths test only this
    _cpu: WorkerGroup
    _cpu_h: Any  # the CPU group's C heap (tr_heap *)
    _blocking: WorkerGroup
    _batch_watch: BatchWatch
    _delays: DelayedTasks
    _wheel: Any  # the delays' C wheel (tr_wheel *)
    _gates: dict[str, CategoryGate]
    # The pending tasks by token; see taskrunner.runtime.task for the claim rule.
    # A dict's single operations are atomic with or without the GIL.
    _live: dict[int, Task]

    # Buffered metrics (see .observe).  Post counters are created with an atomic
    # setdefault and read only under _flush_lock.
    _post_counters: dict[tuple[str, int, str | None], PostCounter]
    _posted_default: Callable[[], int]
    # Guards _accs and serialises the pushes of buffered events.
    _flush_lock: threading.Lock
    _accs: list[TaskTimes]
    _acc_local: threading.local  # .acc: the calling thread's TaskTimes

    # Guards _started, _closed (also read without it on the post path),
    # _report, _children and _children_prune_at.
    _lifecycle: threading.Lock
    _started: bool
    _closed: bool
    _dropping: bool  # set once by shutdown; workers then skip non-BLOCK tasks
    _report: ShutdownReport | None
    _shutdown_done: threading.Event
    _shutdown_deadline: float | None  # time.monotonic(); set once by shutdown()
    _dropped_at_close: int
    _children: dict[int, weakref.ref[TaskRunner]]
    _children_prune_at: int

    # Guards the counters below and _metrics_error_logged.
    _stats_lock: threading.Lock
    _metrics_error_logged: bool
    _completed: int
    _failed: int
    _cancelled: int
    _dropped: int

    if TYPE_CHECKING:  # implemented by the parts; declared for the type checker

        def metrics_gauges(self) -> RunnerGauges: ...
        def _drop_claimed(self, task: Task, *, count: bool = True) -> None: ...
        def _metrics_failed(self) -> None: ...
        def _note_not_run(self, task: Task, outcome: str) -> None: ...
        def _report_ran(self, task: Task, outcome: str, start_ns: int, end_ns: int) -> None: ...
        def _adopt_thread(self) -> TaskTimes | None: ...
        def _release_thread(self, acc: TaskTimes | None) -> None: ...
        def _thread_times(self) -> TaskTimes | None: ...
        def _flush_times(self, acc: TaskTimes) -> None: ...
        def _time_categorised(
            self, acc: TaskTimes, priority: int, category: str, wait_ns: int, run_ns: int
        ) -> None: ...
        def flush_metrics(self) -> None: ...
        def _worker_main(self, group: WorkerGroup, worker: Any) -> None: ...
        def _release_gate(self, task: Task) -> None: ...
        def _report_error(self, exc: BaseException, task: Task) -> None: ...
        def wait_idle(self, timeout: float | None = None) -> bool: ...
        def _register(
            self,
            fn: Callable[..., Any],
            args: tuple[Any, ...],
            traits: TaskTraits,
            name: str | None,
            runner: TaskRunner,
        ) -> Task: ...
        def _refused(
            self, fn: Any, args: tuple[Any, ...], traits: TaskTraits, name: str | None, call: str
        ) -> RunnerClosedError: ...
        def _post_failed(self, task: Task, status: int) -> None: ...
        def _enqueue(self, task: Task) -> None: ...
