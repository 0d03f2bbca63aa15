"""The ``TaskRunner`` interface shared by the pool and every runner.

Which runner runs the calling thread's task (``current_task_runner()``) is
kept in :mod:`taskrunner.runtime.current`.

A runner is where tasks are posted.  Every runner offers the same calls; the
subclasses differ in *how* tasks run (in parallel on the pool, one at a time
in order, on one dedicated thread, at most K at once).  The generic calls
(``post_task_and_reply``, ``post_repeating_task``, ``flush``; ``map`` in
taskrunner.runtime.batch_map) are written once here on top of the three
primitives each runner implements: ``post_task``, ``post_delayed_task`` and
``wait_idle``.
"""

from __future__ import annotations

import abc
import enum
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar, TypeVarTuple

from taskrunner.errors import RunnerClosedError
from taskrunner.runtime.batch_map import MapMixin
from taskrunner.runtime.current import current_task_runner
from taskrunner.runtime.executor import RunnerExecutor
from taskrunner.runtime.future_call import FutureCall
from taskrunner.runtime.traits import DEFAULT_TRAITS, TaskTraits
from taskrunner.runtime.waits import check_wait_timeout

if TYPE_CHECKING:
    from taskrunner.runtime.repeating import RepeatingMode, RepeatingTaskHandle
    from taskrunner.runtime.task import Task

Ts = TypeVarTuple("Ts")  # the positional arguments of a posted callable

T = TypeVar("T")

# A barrier may wait for the tasks before it: on the pool it runs on the
# blocking group, never holding a CPU worker.
_BARRIER_TRAITS = TaskTraits(may_block=True)


class NoReply(enum.Enum):
    """The type of :data:`NO_REPLY`."""

    NO_REPLY = "no_reply"


#: ``reply_runner=NO_REPLY``: run the task of a task-and-reply post and skip
#: its reply (the result still reaches the returned Future).
NO_REPLY = NoReply.NO_REPLY


# Guards the read-modify-write of every runner's name and metadata (rare
# writes; readers take the current dict, which is replaced, never mutated).
_META_LOCK = threading.Lock()


def check_runner_name(name: object, default: str) -> str:
    """A runner's or pool's ``name`` argument: ``default`` for None, else it must
    be a non-empty str (the rule of the :attr:`TaskRunner.name` setter)."""
    if name is None:
        return default
    if not isinstance(name, str):
        raise TypeError(f"name must be a str or None, not {type(name).__name__}")
    if not name:
        raise ValueError("name must not be empty")
    return name


class TaskRunner(MapMixin, abc.ABC):
    """Where tasks are posted.  Every method may be called from any thread.

    After ``shutdown()`` every post raises ``RunnerClosedError``.
    """

    _name: str  # every runner sets it in its constructor

    @property
    def name(self) -> str:
        """The runner's name: in its ``stats()``, its ``repr``, the logs of its
        tasks' errors and its metrics labels.

        Settable from any thread (a non-empty str); tasks and metrics events
        after the change carry the new name.  Threads the runner already
        started keep the name they were given."""
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        if value is None:
            raise TypeError("name must be a str, not NoneType")
        value = check_runner_name(value, "")
        with _META_LOCK:
            old, self._name = self._name, value
        if old != value:
            self._renamed()

    def _renamed(self) -> None:
        """The name changed: re-key whatever is keyed by it (metrics sources)."""
        return None

    @property
    def metadata(self) -> dict[str, Any]:
        """The runner's metadata, a copy (changing it changes nothing here):
        free-form labels for your own bookkeeping, shown in ``stats()`` and
        in the logs of its tasks' errors.  Replace it with
        ``runner.metadata = {...}`` or set one key with :meth:`set_metadata`."""
        current: dict[str, Any] | None = self.__dict__.get("_metadata")
        return {} if current is None else dict(current)

    @metadata.setter
    def metadata(self, value: Mapping[str, Any]) -> None:
        if not isinstance(value, Mapping):
            raise TypeError(f"metadata must be a mapping, not {type(value).__name__}")
        fresh = dict(value)
        for key in fresh:
            if not isinstance(key, str):
                raise TypeError(f"metadata keys must be str, not {type(key).__name__}")
        with _META_LOCK:
            self.__dict__["_metadata"] = fresh

    def set_metadata(self, key: str, value: Any) -> None:
        """Set one metadata entry (atomic with respect to other metadata writes)."""
        if not isinstance(key, str):
            raise TypeError(f"metadata keys must be str, not {type(key).__name__}")
        with _META_LOCK:
            fresh = dict(self.__dict__.get("_metadata") or {})
            fresh[key] = value
            self.__dict__["_metadata"] = fresh  # replaced, never mutated: readers copy safely

    @property
    @abc.abstractmethod
    def is_closed(self) -> bool:
        """True once shutdown started: posts are refused."""

    @abc.abstractmethod
    def post_task(
        self,
        fn: Callable[[*Ts], Any],
        /,
        *args: *Ts,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
    ) -> Task:
        """Post ``fn(*args)`` to run soon; returns its cancelable handle."""

    def post_tasks(
        self,
        fn: Callable[[*Ts], Any],
        arg_tuples: Iterable[tuple[*Ts]],
        /,
        *,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
    ) -> list[Task]:
        """Post ``fn(*args)`` for each tuple in ``arg_tuples``, in order; returns
        the handles.  Every item is checked first (TypeError, naming its index,
        if one is not a tuple; nothing is posted then).  Each task is then
        posted as by :meth:`post_task`; the pool queues them in chunks with one
        C call each (see taskrunner.runtime.pool.batch_post)."""
        items = _argument_tuples(arg_tuples)
        return [self.post_task(fn, *args, traits=traits, name=name) for args in items]

    @abc.abstractmethod
    def post_delayed_task(
        self,
        fn: Callable[[*Ts], Any],
        delay: float,
        /,
        *args: *Ts,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
    ) -> Task:
        """Post ``fn(*args)`` to run ``delay`` seconds from now, never earlier
        (the delay is rounded to the nearest nanosecond; the timing wheel's tick
        groups wake-ups, it never makes a task early).  0 means at once, as
        :meth:`post_task`.  A negative, NaN or infinite delay is a ValueError."""

    def _post_delayed_ns(
        self,
        fn: Callable[..., Any],
        delay_ns: int,
        /,
        *args: Any,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
    ) -> Task:
        """:meth:`post_delayed_task` with the delay already in integer
        nanoseconds, for the runtime's own schedules (repeating tasks, the
        JobManager), which keep time in ns.  The pool and the runners built on
        it take it as is; this default goes through seconds."""
        return self.post_delayed_task(fn, max(0, delay_ns) / 1e9, *args, traits=traits, name=name)

    @abc.abstractmethod
    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no task of this runner is queued or running (delayed
        tasks not yet due do not count).  False if ``timeout`` ran out."""

    @abc.abstractmethod
    def shutdown(
        self, wait: bool = True, *, timeout: float | None = None, cancel_pending: bool = False
    ) -> Any:
        """Stop taking tasks; see the concrete runner for what happens to the rest."""

    def wait_shutdown(self, timeout: float | None = None) -> bool:
        """Block until this runner's shutdown has started (someone called
        ``shutdown()``, or the shutdown of the pool it is built on reached it):
        from then on posts are refused.  True at once if it already started;
        False if ``timeout`` seconds ran out first.

        Any number of threads may wait at once; all wake together.  It waits
        for the shutdown to *start*, not for the runner's tasks to end (use
        the report ``shutdown()`` returns for that).  Do not call it from one
        of this runner's own tasks on a sequenced or single-thread runner
        without a timeout: nothing else may ever shut it down."""
        return self._shutdown_signal().wait(check_wait_timeout(timeout))

    def _shutdown_signal(self) -> threading.Event:
        """The event :meth:`wait_shutdown` waits on, created on first use
        (``dict.setdefault`` is atomic: racing first uses share one event)."""
        event: threading.Event | None = self.__dict__.get("_shutdown_event")
        if event is None:
            event = self.__dict__.setdefault("_shutdown_event", threading.Event())
        return event

    def _signal_shutdown(self) -> None:
        """Wake every :meth:`wait_shutdown` waiter.  Each runner calls it once
        it has marked itself closed (idempotent)."""
        self._shutdown_signal().set()

    @abc.abstractmethod
    def stats(self) -> dict[str, Any]:
        """A snapshot of counters (queued, running, completed, failed, ...)."""

    # ---- generic calls built on the primitives ---------------------------

    def post_task_and_reply(
        self,
        task: Callable[[], Any],
        reply: Callable[[], Any],
        *,
        reply_runner: TaskRunner | NoReply | None = None,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
    ) -> Task:
        """Run ``task`` here, then ``reply`` on ``reply_runner`` (default: the
        runner that is posting, i.e. ``current_task_runner()``, which raises
        :class:`NoCurrentTaskRunnerError` outside a task).  If ``task`` raises,
        ``reply`` is not called and the error handler sees the error.

        ``reply_runner=NO_REPLY`` runs ``task`` and skips the reply; Go's
        "reply to the current runner if there is one" is
        ``reply_runner=current_task_runner_or_none() or NO_REPLY``.  A reply
        whose runner was shut down meanwhile is not run (the error handler
        sees the RunnerClosedError)."""
        return self._post_and_reply(task, reply, 0, reply_runner, traits, name)

    def post_delayed_task_and_reply(
        self,
        task: Callable[[], Any],
        reply: Callable[[], Any],
        delay: float,
        *,
        reply_runner: TaskRunner | NoReply | None = None,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
    ) -> Task:
        """:meth:`post_task_and_reply` with ``task`` run ``delay`` seconds from
        now (on this runner's clock, never earlier; see
        :meth:`post_delayed_task`).  The reply runner is decided now, at post
        time; the reply is posted to it once ``task`` returned."""
        return self._post_and_reply(task, reply, delay, reply_runner, traits, name)

    def _post_and_reply(
        self,
        task: Callable[[], Any],
        reply: Callable[[], Any],
        delay: float,
        reply_runner: TaskRunner | NoReply | None,
        traits: TaskTraits,
        name: str | None,
    ) -> Task:
        target = _reply_target(task, reply, reply_runner)
        label = f"reply:{name or _describe(task)}"

        def run_then_reply() -> None:
            task()
            if target is not None:
                target.post_task(reply, name=label)

        if delay == 0:
            return self.post_task(run_then_reply, traits=traits, name=name or _describe(task))
        return self.post_delayed_task(
            run_then_reply, delay, traits=traits, name=name or _describe(task)
        )

    def post_task_and_reply_with_result(
        self,
        task: Callable[[], T],
        reply: Callable[[T], Any],
        *,
        reply_runner: TaskRunner | NoReply | None = None,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
    ) -> Future[T]:
        """Run ``task`` here, then ``reply(result)`` on the reply runner
        (chosen as in :meth:`post_task_and_reply`; ``NO_REPLY`` skips it).

        Returns a ``concurrent.futures.Future`` holding the task's result (or
        its exception, in which case ``reply`` is not called); it works with
        ``asyncio.wrap_future``.  The reply is posted before the future
        completes, so on the reply runner it runs before anything the
        future's waiter posts there afterwards."""
        return self._post_and_reply_with_result(task, reply, 0, reply_runner, traits, name)

    def post_delayed_task_and_reply_with_result(
        self,
        task: Callable[[], T],
        reply: Callable[[T], Any],
        delay: float,
        *,
        reply_runner: TaskRunner | NoReply | None = None,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
    ) -> Future[T]:
        """:meth:`post_task_and_reply_with_result` with ``task`` run ``delay``
        seconds from now.  Cancelling the future before the task started
        cancels the task (and so the reply); a task dropped at shutdown
        cancels the future."""
        return self._post_and_reply_with_result(task, reply, delay, reply_runner, traits, name)

    def _post_and_reply_with_result(
        self,
        task: Callable[[], T],
        reply: Callable[[T], Any],
        delay: float,
        reply_runner: TaskRunner | NoReply | None,
        traits: TaskTraits,
        name: str | None,
    ) -> Future[T]:
        target = _reply_target(task, reply, reply_runner)
        future: Future[T] = Future()
        reply_label = f"reply:{name or _describe(task)}"
        post_reply: Callable[[T], None] | None = None
        if target is not None:

            def post_reply(result: T) -> None:
                target.post_task(reply, result, name=reply_label)

        call = FutureCall(future, task, (), None, reraise=True, reply=post_reply)
        label = name or _describe(task)
        if delay == 0:
            handle = self.post_task(call, traits=traits, name=label)
        else:
            handle = self.post_delayed_task(call, delay, traits=traits, name=label)
        _link_cancel(future, handle)
        return future

    def submit(
        self,
        fn: Callable[[*Ts], T],
        /,
        *args: *Ts,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
    ) -> Future[T]:
        """Post ``fn(*args)`` and return a ``concurrent.futures.Future`` of its
        result (like ``Executor.submit``).  Cancelling the future before the
        task started cancels the task; a task that never runs (cancelled,
        dropped at shutdown or by a queue policy) cancels the future.  An
        exception is set on the future and also reported to the error handler
        (``runner.executor.submit`` reports it through the future only)."""
        future: Future[T] = Future()
        call = FutureCall(future, fn, args, None, reraise=True)
        handle = self.post_task(call, traits=traits, name=name or _describe(fn))
        _link_cancel(future, handle)
        return future

    async def run(
        self,
        fn: Callable[[*Ts], T],
        /,
        *args: *Ts,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
    ) -> T:
        """Run ``fn(*args)`` as a task here and await its result from a
        coroutine, without blocking the event loop.

        Its exception is raised in the awaiting coroutine (and not reported to
        the error handler).  Cancelling the awaiting coroutine cancels the task
        if it has not started; one that started runs to its end and its result
        is discarded.  A task that never runs (dropped at shutdown) raises
        ``asyncio.CancelledError`` in the awaiting coroutine."""
        import asyncio

        future: Future[T] = Future()
        call = FutureCall(future, fn, args, None, reraise=False)
        handle = self.post_task(call, traits=traits, name=name or _describe(fn))
        _link_cancel(future, handle)
        return await asyncio.wrap_future(future)

    def post_repeating_task(
        self,
        fn: Callable[[], Any],
        interval: float,
        *,
        initial_delay: float | None = None,
        mode: RepeatingMode | None = None,
        stop_on_error: bool = False,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
    ) -> RepeatingTaskHandle:
        """Run ``fn`` every ``interval`` seconds until the handle's ``stop()``
        or this runner's shutdown; see :mod:`taskrunner.runtime.repeating`."""
        from taskrunner.runtime.repeating import RepeatingTask

        return RepeatingTask.start(
            self,
            fn,
            interval,
            initial_delay=initial_delay,
            mode=mode,
            stop_on_error=stop_on_error,
            traits=traits,
            name=name,
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every task posted to this runner before the call has
        finished (a barrier).  False if ``timeout`` ran out."""
        return self.wait_idle(timeout)

    def flush_async(self, callback: Callable[[], Any]) -> bool:
        """A barrier that does not block: ``callback()`` runs as a task of this
        runner once every task posted here before the call has finished
        (delayed tasks not yet due excepted).  Returns at once: True if the
        barrier was posted, False if the runner is closed (then, as when the
        runner closes before the barrier's turn, ``callback`` is never called).

        On a sequenced, single-thread or asyncio runner the barrier is simply
        the next task in order; on the pool and a parallel runner it waits (on
        a ``may_block`` worker, or a slot of the runner) for the tasks that were
        queued or running at the call.  A callback that raises goes to the
        error handler like any task's exception; later barriers are unaffected.
        Once called (or dropped) the barrier keeps no reference to ``callback``
        nor to the tasks it waited for.  A single-thread runner's queue policy
        applies to the barrier (REJECT may raise QueueFullError)."""
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        if self.is_closed:
            return False
        earlier = self._earlier_tasks()
        barrier = _FlushBarrier(self, callback, earlier)
        traits = _BARRIER_TRAITS if earlier else DEFAULT_TRAITS
        try:
            self.post_task(barrier, traits=traits, name=f"flush_async:{self.name}")
        except RunnerClosedError:
            barrier.release()
            return False
        return True

    def _earlier_tasks(self) -> list[Task]:
        """The tasks a barrier posted now must wait for besides its place in
        the queue: none for a runner that runs its tasks in posting order, one
        at a time (the default); the pool and parallel runners override it."""
        return []

    @property
    def executor(self) -> RunnerExecutor:
        """This runner as a ``concurrent.futures.Executor``: one shared view,
        created on first use, running calls with the runner's default traits.

        Its ``shutdown`` closes the view, not the runner.  For a view with
        other traits, or one of your own to shut down: ``RunnerExecutor(runner,
        traits=...)`` (see :mod:`taskrunner.runtime.executor`)."""
        view: RunnerExecutor | None = self.__dict__.get("_executor_view")
        if view is None:
            # setdefault is atomic: racing first uses all get the same view.
            view = self.__dict__.setdefault("_executor_view", RunnerExecutor(self))
        return view

    def __enter__(self) -> TaskRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown(wait=True)


class _FlushBarrier:
    """The task :meth:`TaskRunner.flush_async` posts."""

    __slots__ = ("callback", "earlier", "runner")

    def __init__(
        self, runner: TaskRunner, callback: Callable[[], Any], earlier: list[Task]
    ) -> None:
        self.runner: TaskRunner | None = runner
        self.callback: Callable[[], Any] | None = callback
        self.earlier = earlier

    def __call__(self) -> None:
        earlier, self.earlier = self.earlier, []
        for task in earlier:
            task.wait()
        del earlier
        runner, callback = self.runner, self.callback
        self.release()
        if runner is not None and callback is not None and not runner.is_closed:
            callback()

    def release(self) -> None:
        """Drop every reference (the barrier ran, or never will)."""
        self.runner = None
        self.callback = None
        self.earlier = []


def _reply_target(
    task: Callable[..., Any],
    reply: Callable[..., Any],
    reply_runner: TaskRunner | NoReply | None,
) -> TaskRunner | None:
    """Where a reply goes (None: skipped), decided at post time."""
    if not callable(task):
        raise TypeError(f"task must be callable, not {type(task).__name__}")
    if not callable(reply):
        raise TypeError(f"reply must be callable, not {type(reply).__name__}")
    if reply_runner is NO_REPLY:
        return None
    if reply_runner is None:
        return current_task_runner()
    if not isinstance(reply_runner, TaskRunner):
        raise TypeError(
            "reply_runner must be a TaskRunner, NO_REPLY or None, "
            f"not {type(reply_runner).__name__}"
        )
    return reply_runner


def _argument_tuples(arg_tuples: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The items of ``arg_tuples`` as a list, each checked to be a tuple."""
    if isinstance(arg_tuples, (str, bytes)):
        raise TypeError("post_tasks takes an iterable of argument tuples, not a string")
    items = list(arg_tuples)
    for i, args in enumerate(items):
        if type(args) is not tuple:
            raise TypeError(
                f"post_tasks: item {i} must be a tuple of arguments, not {type(args).__name__}"
                " (wrap a single argument as (x,))"
            )
    return items


def _describe(fn: Callable[..., Any]) -> str:
    from taskrunner.runtime.task import describe

    return describe(fn)


def _link_cancel(future: Future[Any], handle: Task) -> None:
    """Cancelling ``future`` cancels the task if it has not started yet."""

    def on_done(f: Future[Any]) -> None:
        if f.cancelled():
            handle.cancel()

    future.add_done_callback(on_done)
