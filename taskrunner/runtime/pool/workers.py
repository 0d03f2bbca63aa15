"""The worker groups, their threads and the worker loop.
``ThreadPool``: the scheduler and its worker threads.

Design
------
Each posted task gets a 64-bit token from a process-wide counter and goes in
``_live``, a dict from token to task, until someone claims it (see
:mod:`taskrunner.runtime.task`).  The token, never the task, goes into C:

* the **ready queue** of a worker group is the C heap (priority, then FIFO);
* **delays** are the C timing wheel, driven by one timer thread
  (:mod:`taskrunner.runtime.delays`), which moves due tokens into the ready queues.

There are two worker groups, each with its own heap: the CPU group (a fixed
number of threads) and the blocking group for ``may_block`` tasks, which
starts empty, grows one thread at a time when a blocking task is posted and
no blocking worker is idle (up to ``max_blocking_workers``), and shrinks
when a worker has been idle for ``blocking_idle_timeout``.

A worker blocks inside ``tr_heap_pop_wait`` (in C, GIL released) and takes a
batch of tokens of one priority at a time (at most a fair share of what is
queued), so posting and getting work each cost one C call per task or less.
Before each task of a batch after the first the worker reads the heap's
preemption counter for its priority level (a memory read, no call): if a
more urgent task was pushed since the batch was taken, the worker gives the
rest of its batch back to the front of the queue and takes the urgent one.
So a higher-priority task never waits behind a lower one once a worker is
between tasks.  Within a priority, tasks leave the queue in FIFO order; with
several workers, tasks taken in one batch start in order on that worker.

BEST_EFFORT tasks are capped in C (``tr_heap_set_low_limit``): at most
``best_effort_limit`` run at once per group.

Under a GIL (``lazy_wake``, on by default there) the CPU group's heap wakes
workers lazily: while one worker is busy, a post wakes an idle one only once
a batch is queued, and a worker coming back from a batch naps in C (GIL
released) for up to 200 us for a batch to build up.  Idle workers re-check
every 200 us, so queued work never waits longer than that for one; an idle
pool still wakes a worker at once.  This trades at most 200 us of latency
under a stream of posts for far fewer GIL hand-offs (batches of ~25 tasks
instead of ~5).  Without a GIL workers are woken at once, to run in parallel.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from taskrunner.native.binding import CLOSED, EXISTS, OK, TIMEOUT, check, ffi, lib, timeout_ns
from taskrunner.runtime import rejections as _rejections
from taskrunner.runtime.current import set_current
from taskrunner.runtime.metrics import DROPPED as M_DROPPED
from taskrunner.runtime.metrics import FAILED as M_FAILED
from taskrunner.runtime.metrics import SUCCEEDED as M_SUCCEEDED
from taskrunner.runtime.pool.observe import TIMES_LIMIT
from taskrunner.runtime.pool.state import INTERNAL, PoolState, runtime_thread
from taskrunner.runtime.task import (
    DROPPED,
    FAILED,
    RUNNING,
    SUCCEEDED,
    Task,
)
from taskrunner.runtime.traits import ShutdownBehavior, TaskPriority

log = logging.getLogger("taskrunner.pool")

_push = lib.tr_heap_push
_pop_wait = lib.tr_heap_pop_wait
_unpop = lib.tr_heap_unpop
_unpack = ffi.unpack
_BLOCK = ShutdownBehavior.BLOCK_SHUTDOWN
_LEVELS = lib.TR_HEAP_LEVELS
_now_ns = time.monotonic_ns
# A worker holds the rest of a batch back for at most this long; then it
# returns it to the queue so idle workers can take it (long tasks gain nothing
# from batching, and a batch must not hide ready work from a free worker).
HOLD_NS = 1_000_000
_FOREVER = 1 << 63


class Worker:
    """One worker thread.  ``current`` is written only by its own thread.

    ``batch`` (the tokens of the batch it holds, if more than one) and
    ``batch_priority`` are written by the worker; the batch watch reads them
    and may set ``batch`` to None under ``batch_lock`` when it re-queues the
    batch (see taskrunner.runtime.pool.batch_watch).  ``seen_*`` belong to the watch.
    """

    __slots__ = (
        "batch",
        "batch_lock",
        "batch_priority",
        "current",
        "seen_batch",
        "seen_current",
        "thread",
    )

    def __init__(self) -> None:
        self.current: Task | None = None
        self.thread: threading.Thread | None = None
        self.batch: list[int] | None = None
        self.batch_priority = 0
        self.batch_lock = threading.Lock()  # guards the hand-back of batch
        self.seen_current: int | None = None  # a token: the watch holds no task
        self.seen_batch: list[int] | None = None


class WorkerGroup:
    """A worker group: a C heap (its ready queue) and the threads popping it.

    ``lock`` guards ``workers`` and ``spawned``; the heap guards itself.
    """

    def __init__(
        self,
        pool: WorkerLoop,
        kind: str,
        minimum: int,
        maximum: int,
        idle_timeout: float | None,
        best_effort_limit: int,
    ) -> None:
        self.pool = pool
        self.kind = kind
        self.minimum = minimum
        self.maximum = maximum
        self.idle_timeout_ns = timeout_ns(idle_timeout, "idle timeout")
        out = ffi.new("tr_heap **")
        check(lib.tr_heap_new(out), "ready queue")
        self.h = ffi.gc(out[0], lib.tr_heap_free)
        self.epochs = lib.tr_heap_epochs(self.h)
        if best_effort_limit:
            check(
                lib.tr_heap_set_low_limit(self.h, TaskPriority.BEST_EFFORT, best_effort_limit),
                "best-effort limit",
            )
        self.best_effort_capped = best_effort_limit > 0
        self.lock = threading.Lock()
        self.workers: list[Worker] = []
        self.spawned = 0

    def spawn(self) -> None:
        """Start one worker thread (caller holds ``lock``)."""
        worker = Worker()
        self.spawned += 1
        thread = threading.Thread(
            target=self.pool._worker_main,
            args=(self, worker),
            name=f"{self.pool._name}-{self.kind}-{self.spawned}",
            daemon=True,
        )
        worker.thread = thread
        self.workers.append(worker)
        thread.start()

    def maybe_grow(self) -> None:
        """Add a worker if none is idle and the group is below its maximum."""
        if len(self.workers) >= self.maximum or lib.tr_heap_len(self.h) <= lib.tr_heap_waiters(
            self.h
        ):
            return  # at the cap, or enough idle workers for what is queued
        with self.lock:
            if len(self.workers) < self.maximum and not self.pool._closed:
                self.spawn()

    def retire(self, worker: Worker) -> bool:
        """Called by an idle worker: True if it may exit (group above minimum)."""
        with self.lock:
            if len(self.workers) > self.minimum:
                self.workers.remove(worker)
                return True
        return False

    def queued(self) -> int:
        return int(lib.tr_heap_len(self.h))


class WorkerLoop(PoolState):
    """The loop each worker thread runs, and running one claimed task."""

    def _worker_main(self, group: WorkerGroup, worker: Worker) -> None:
        set_current(self)
        runtime_thread.pool = self  # shutdown() from this thread is "from inside"
        h = group.h
        size = self._batch_size if group is self._cpu else 1  # blocking tasks: never batch
        buf = ffi.new("uint64_t[]", size)
        count = ffi.new("size_t *")
        prio = ffi.new("int32_t *")
        epochs = group.epochs
        watch = self._batch_watch
        live_get = self._live.get
        live_pop = self._live.pop
        capped = group.best_effort_capped
        idle_timeout = group.idle_timeout_ns
        done = done_low = 0
        completed = failed = dropped = 0
        # Observability.  With neither metrics nor a tracer (``plain``) the loop
        # tests one local per task and nothing else.  Otherwise each task is
        # timed; a success's timings go to this thread's buffer ``acc`` (no
        # call; pushed in bulk), anything else is reported at once.
        plain = self._plain
        tracer = self._tracer
        acc = self._adopt_thread()
        times: list[int] = []  # acc's buffer for this batch's (runner, priority)
        put = times.append
        task: Task | None = None
        try:
            while True:
                # Hold no finished task while waiting: its ``runner`` (a run loop's
                # runner) and context would stay alive as long as this worker idles.
                task = None
                status = _pop_wait(h, buf, size, count, prio, done, done_low, idle_timeout)
                done = done_low = 0
                if status != OK:
                    if status == TIMEOUT:
                        if group.retire(worker):
                            break
                        continue
                    if status == CLOSED:
                        break
                    check(status, "worker pop")
                tokens = _unpack(buf, count[0])
                priority = prio[0]
                held = len(tokens) > 1
                if held:  # visible to the batch watch while a task of it runs
                    worker.batch_priority = priority
                    worker.batch = tokens
                    if not watch.armed:
                        watch.arm()
                level = (
                    priority if 0 <= priority < _LEVELS else (0 if priority < 0 else _LEVELS - 1)
                )
                epoch = epochs[level]
                hold_until = _now_ns() + HOLD_NS
                if acc is not None:
                    times = acc.buf(self._name, priority, None)
                    put = times.append
                for token in tokens:
                    if done and (epochs[level] != epoch or _now_ns() > hold_until):
                        # Something more urgent arrived, or this batch has held its
                        # tasks back long enough: give the rest back to the queue.
                        status = EXISTS
                        rest = tokens[done:]
                        with worker.batch_lock:
                            if worker.batch is tokens:
                                worker.batch = None
                                status = _unpop(h, rest, len(rest), priority)
                        if status == OK:
                            break  # unpop took the rest out of flight
                        if status != EXISTS:
                            check(status, "unpop")
                        # The batch watch re-queued this batch (or one of its tokens
                        # is queued again already): make sure the rest is queued and
                        # leave it there, counted as done here (it was popped;
                        # whoever claims each task first runs it).
                        if requeued(h, tokens, done, priority, live_get):
                            done = len(tokens)
                            break
                        epoch, hold_until = epochs[level], _FOREVER  # closed: run it here
                    done += 1
                    task = live_get(token)
                    if task is None:
                        continue  # cancelled
                    worker.current = task  # before the claim: see flush()
                    if live_pop(token, None) is None:
                        worker.current = None
                        continue  # cancelled between get and pop
                    if self._dropping and task.traits.shutdown_behavior is not _BLOCK:
                        self._note_not_run(task, M_DROPPED)
                        task._finish(DROPPED)
                        dropped += 1
                        if self._on_rejected is not None and task.ready_ns != INTERNAL:
                            _rejections.report(self._on_rejected, task, _rejections.SHUTDOWN)
                    elif plain:
                        task.state = RUNNING
                        try:
                            if task.args:
                                task.ctx.run(task.fn, *task.args)  # type: ignore[arg-type]
                            else:  # no star-call: no bound method, no argument tuple built
                                task.ctx.run(task.fn)  # type: ignore[arg-type]
                        except BaseException as exc:
                            task._name = task.name  # keep the callable's name for the report
                            task._finish(FAILED)
                            failed += 1
                            self._report_error(exc, task)
                        else:
                            # task._finish(SUCCEEDED), inlined: this is the hot path.
                            task.state = SUCCEEDED
                            task.fn = None
                            task.args = ()
                            if task._done_event is not None:
                                task._done_event.set()
                            completed += 1
                    else:
                        ready = task.ready_ns  # INTERNAL: a run loop, not ours to report
                        task.state = RUNNING
                        start = _now_ns()
                        try:
                            if tracer is None or ready == INTERNAL:
                                if task.args:
                                    task.ctx.run(task.fn, *task.args)  # type: ignore[arg-type]
                                else:  # no star-call: no bound method, no argument tuple built
                                    task.ctx.run(task.fn)  # type: ignore[arg-type]
                            else:
                                task.ctx.run(tracer.run_task, task, task.fn, task.args)  # type: ignore[arg-type]
                        except BaseException as exc:
                            end = _now_ns()
                            task._name = task.name  # keep the callable's name for the report
                            if ready != INTERNAL:
                                self._report_ran(task, M_FAILED, start, end)
                            task._finish(FAILED)
                            failed += 1
                            self._report_error(exc, task)
                        else:
                            end = _now_ns()
                            # Recorded before the task is seen done (state, event).
                            if acc is not None and ready != INTERNAL:
                                category = task.traits.category
                                if category is None:
                                    put(start - ready)
                                    put(end - start)
                                else:
                                    self._time_categorised(
                                        acc, priority, category, start - ready, end - start
                                    )
                            task.state = SUCCEEDED
                            task.fn = None
                            task.args = ()
                            if task._done_event is not None:
                                task._done_event.set()
                            completed += 1
                    worker.current = None
                    if task.traits.category is not None and self._gates:
                        self._release_gate(task)
                if held:
                    worker.batch = None
                if capped and priority <= TaskPriority.BEST_EFFORT:
                    done_low = done
                if completed or failed or dropped:
                    with self._stats_lock:
                        self._completed += completed
                        self._failed += failed
                        self._dropped += dropped
                    completed = failed = dropped = 0
                if acc is not None and len(times) >= 2 * TIMES_LIMIT:
                    self._flush_times(acc)
            if done:
                lib.tr_heap_complete(h, done, done_low)
        finally:
            # Push this thread's timings before it ends (a CONTINUE_ON_SHUTDOWN
            # task may finish after the pool's own final flush).
            self._release_thread(acc)
            set_current(None)

    def _run_claimed(self, task: Task) -> None:
        """Run a task the caller claimed, on the calling thread: state, errors, counters.

        During shutdown's dropping phase a task that is not BLOCK_SHUTDOWN is
        dropped instead of run."""
        if self._dropping and task.traits.shutdown_behavior is not _BLOCK:
            self._drop_claimed(task)
            return
        if not self._plain:
            self._run_claimed_observed(task)
            return
        task.state = RUNNING
        try:
            if task.args:
                task.ctx.run(task.fn, *task.args)  # type: ignore[arg-type]
            else:  # no star-call: no bound method, no argument tuple built
                task.ctx.run(task.fn)  # type: ignore[arg-type]
        except BaseException as exc:
            task._name = task.name  # keep the callable's name for the report
            task._finish(FAILED)
            with self._stats_lock:
                self._failed += 1
            self._report_error(exc, task)
        else:
            task._finish(SUCCEEDED)
            with self._stats_lock:
                self._completed += 1

    def _run_claimed_observed(self, task: Task) -> None:
        """:meth:`_run_claimed` with metrics or a tracer: timed, reported, wrapped."""
        tracer = self._tracer
        task.state = RUNNING
        start = _now_ns()
        try:
            if tracer is None:
                if task.args:
                    task.ctx.run(task.fn, *task.args)  # type: ignore[arg-type]
                else:  # no star-call: no bound method, no argument tuple built
                    task.ctx.run(task.fn)  # type: ignore[arg-type]
            else:
                task.ctx.run(tracer.run_task, task, task.fn, task.args)  # type: ignore[arg-type]
        except BaseException as exc:
            end = _now_ns()
            task._name = task.name  # keep the callable's name for the report
            self._report_ran(task, M_FAILED, start, end)  # counted before it is seen done
            task._finish(FAILED)
            with self._stats_lock:
                self._failed += 1
            self._report_error(exc, task)
        else:
            end = _now_ns()
            acc = self._thread_times()
            if acc is None:  # not one of the runtime's threads: report at once
                self._report_ran(task, M_SUCCEEDED, start, end)
            else:
                traits = task.traits
                buf = acc.buf(task.runner.name, int(traits.priority), traits.category)
                buf.append(start - task.ready_ns)
                buf.append(end - start)
                if len(buf) >= 2 * TIMES_LIMIT:
                    self._flush_times(acc)
            task._finish(SUCCEEDED)
            with self._stats_lock:
                self._completed += 1

    def _release_gate(self, task: Task) -> None:
        """A claimed task of a capped category ended (ran, dropped or cancelled)."""
        gate = self._gates.get(task.traits.category)  # type: ignore[arg-type]
        if gate is not None and not gate.forget(task):
            gate.release(task.token)

    def _report_error_from_callback(self, task: Task) -> None:
        log.exception(
            "a callback failed for task %s",
            task.name,
            extra={"task_name": task.name, "runner": task.runner.name},
        )

    def _report_error(self, exc: BaseException, task: Task) -> None:
        """Hand a task's exception to the error handler (default: the log)."""
        handler = self._error_handler
        try:
            if handler is not None:
                handler(exc, task)
            else:
                log.error(
                    "task %s raised %s",
                    task.name,
                    type(exc).__name__,
                    exc_info=(type(exc), exc, exc.__traceback__),
                    extra={
                        "task_name": task.name,
                        "runner": task.runner.name,
                        "runner_metadata": task.runner.metadata,
                    },
                )
        except BaseException:
            log.exception(
                "error handler failed for task %s",
                task.name,
                extra={"task_name": task.name, "runner": task.runner.name},
            )


def requeued(
    h: Any, tokens: list[int], done: int, priority: int, live_get: Callable[[int], Any]
) -> bool:
    """After the batch watch re-queued a worker's batch: make sure each pending
    token of ``tokens[done:]`` is queued (pushed now, or there already).  False
    if the queue is closed, and the worker must then run the rest itself."""
    for token in tokens[done:]:
        if live_get(token) is not None:
            status = _push(h, token, priority)
            if status == CLOSED:
                return False
            if status != EXISTS:
                check(status, "re-queue")
    return True
