"""``SingleThreadTaskRunner``: one dedicated thread and a bounded queue that pushes back.

Every queued task runs on the runner's own thread, for the runner's whole
life (``threading.get_ident()`` is the same in every task), in posting order.
The one exception is the CALLER_RUNS policy: a task refused by a full queue
runs on the thread that posted it, at the same time as the runner's thread
runs others, so state confined to the runner's thread must not be touched by
tasks posted with that policy.  The
queue is the C ring buffer (``csrc/tr_ring.h``) of ``capacity`` slots
(a power of two).  When it is full, the :class:`QueuePolicy` decides:

* ``REJECT``       raise :class:`QueueFullError`;
* ``DROP_NEWEST``  discard the new task, returning its handle in state DROPPED;
* ``DROP_OLDEST``  discard the oldest queued task (its handle becomes DROPPED)
                   and queue the new one;
* ``WAIT``         block the poster (in C, GIL released) until there is room,
                   or raise QueueFullError after ``wait_timeout`` seconds (a
                   task of this runner posting to it cannot wait for itself:
                   it gets QueueFullError at once);
* ``CALLER_RUNS``  run the task on the posting thread, now.

Each of these outcomes counts as rejected (``stats()["rejected"]``) and is
reported to ``on_rejected(task, policy)`` if given.  Delayed tasks wait in the
pool's timing wheel and enter the ring when due (a full ring then applies
the policy, except WAIT, which cannot block the timer thread: it drops).

Thread-safety: every method may be called from any thread.  ``_lock``
guards the counters; the ring guards itself.  The runner thread is the only
consumer of the ring.
"""

from __future__ import annotations

import contextlib
import enum
import sys
import threading
import time
from collections.abc import Callable
from contextvars import copy_context
from typing import Any, TypeVarTuple

from taskrunner.errors import QueueFullError, RunnerClosedError
from taskrunner.native.binding import CLOSED, OK, check, ffi, lib, timeout_ns
from taskrunner.native.ring import MAX_CAPACITY
from taskrunner.runtime.current import set_current
from taskrunner.runtime.metrics import DROPPED as M_DROPPED
from taskrunner.runtime.metrics import REJECTED as M_REJECTED
from taskrunner.runtime.metrics import RunnerGauges
from taskrunner.runtime.pool import SHUTDOWN_GRACE, ShutdownReport, ThreadPool
from taskrunner.runtime.pool.checks import check_int, shutdown_timeout, time_left
from taskrunner.runtime.pool.state import next_token
from taskrunner.runtime.runner import check_runner_name
from taskrunner.runtime.runners.pool_backed import PoolBackedRunner
from taskrunner.runtime.task import DROPPED, FAILED, RUNNING, SUCCEEDED, Task
from taskrunner.runtime.traits import DEFAULT_TRAITS, ShutdownBehavior, TaskTraits
from taskrunner.runtime.waits import check_wait_timeout

Ts = TypeVarTuple("Ts")  # the positional arguments of a posted callable

_try_push = lib.tr_ring_try_push
_push_wait = lib.tr_ring_push_wait
_push_evict = lib.tr_ring_push_evict
_pop_many_linger = lib.tr_ring_pop_many_linger
_pushed = lib.tr_ring_pushed
# The runner thread lingers this long for a batch of at least _LINGER_MIN
# tasks when it finds a stream (never when it had to wait, so an idle runner
# starts a task at once).  Under a GIL, taking one or two tokens per visit to C
# costs a GIL hand-off per task.  Without one, it costs a wake-up and a round of
# contention with the producer on the pending-task dict per task: lingering took
# a bounded runner fed 1M posts on 3.14t from about 0.97x to 1.1-1.2x the rate of
# queue.Queue + a thread, and the shorter linger did as well as 100 us there,
# since the producer really runs meanwhile.
_LINGER_NS_GIL = 100_000
_LINGER_NS_NO_GIL = 20_000
_LINGER_MIN = 32


def _gil_enabled() -> bool:
    check_gil = getattr(sys, "_is_gil_enabled", None)
    return True if check_gil is None else bool(check_gil())


_BLOCK = ShutdownBehavior.BLOCK_SHUTDOWN
_BATCH = 64


class QueuePolicy(enum.Enum):
    """What a bounded runner does with a task when its queue is full."""

    REJECT = "reject"  #: raise QueueFullError
    DROP_NEWEST = "drop_newest"  #: discard the new task (its handle says DROPPED)
    DROP_OLDEST = "drop_oldest"  #: discard the oldest queued task, queue the new one
    WAIT = "wait"  #: block the poster until there is room (optionally with a timeout)
    CALLER_RUNS = "caller_runs"  #: run the new task on the posting thread


RejectionCallback = Callable[[Task, QueuePolicy], None]
_WAIT = QueuePolicy.WAIT


class SingleThreadTaskRunner(PoolBackedRunner):
    """Tasks in order on one dedicated thread, behind a bounded queue.

    ``pool`` owns the tasks' handles and the timing wheel that holds delayed
    ones.  Without a pool the runner is standalone: it makes a private pool
    whose workers never start (its tasks never need them), so the runner has
    its own thread and its own timer thread and nothing else; that pool is
    shut down with the runner (``runner.pool`` is it).  Pass a pool to share
    its wheel, its clock (mock time) and its metrics.
    """

    def __init__(
        self,
        pool: ThreadPool | None = None,
        *,
        capacity: int = 1024,
        policy: QueuePolicy = QueuePolicy.WAIT,
        wait_timeout: float | None = None,
        on_rejected: RejectionCallback | None = None,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
    ) -> None:
        if pool is not None and not isinstance(pool, ThreadPool):
            raise TypeError(f"pool must be a ThreadPool or None, not {type(pool).__name__}")
        check_int("capacity", capacity, 2, MAX_CAPACITY)
        if capacity & (capacity - 1):
            raise ValueError(f"capacity must be a power of two, got {capacity}")
        if not isinstance(policy, QueuePolicy):
            raise TypeError(f"policy must be a QueuePolicy, not {type(policy).__name__}")
        if on_rejected is not None and not callable(on_rejected):
            raise TypeError("on_rejected must be callable")
        if type(traits) is not TaskTraits:
            raise TypeError(f"traits must be TaskTraits, not {type(traits).__name__}")
        self._wait_ns = timeout_ns(wait_timeout, "wait_timeout")
        self._policy = policy
        self._on_rejected = on_rejected
        self._traits = traits
        self._name = check_runner_name(name, f"SingleThreadTaskRunner-{id(self):x}")
        self._owns_pool = pool is None
        if pool is None:
            # Standalone: the pool's workers never start; only its timer runs.
            pool = ThreadPool(1, name=f"{self._name}-pool", start=False)
            pool._delays.start()
        self._pool = pool
        out = ffi.new("tr_ring **")
        check(lib.tr_ring_new(capacity, out), "ring")
        self._ring = ffi.gc(out[0], lib.tr_ring_free)
        self._capacity = capacity
        # Guards the counters and _closed.
        self._lock = threading.Lock()
        self._closed = False
        self._rejected = 0
        self._completed = 0
        # Tokens the thread took out of the ring and finished with, plus the
        # tokens DROP_OLDEST evicted: the runner is idle when that equals the
        # ring's count of pushes (tr_ring_pushed: counted in C as a push
        # claims its place, so no lock on the posting path).
        self._processed = 0
        self._evicted = 0
        self._idle = threading.Condition(self._lock)
        self._thread_ident: int | None = None
        self._attach()
        self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
        self._thread.start()
        self._thread_ident = self._thread.ident  # set by start(), before any task runs

    # ---- properties ---------------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def thread(self) -> threading.Thread:
        """The dedicated thread every task runs on."""
        return self._thread

    @property
    def rejected_count(self) -> int:
        with self._lock:
            return self._rejected

    # ---- posting ------------------------------------------------------------------------

    def post_task(
        self,
        fn: Callable[[*Ts], Any],
        /,
        *args: *Ts,
        traits: TaskTraits = DEFAULT_TRAITS,
        name: str | None = None,
    ) -> Task:
        """Queue ``fn(*args)`` for the runner's thread, applying the policy if full."""
        if self._closed:
            raise RunnerClosedError(f"{self._name}: post_task after shutdown")
        pool = self._pool
        if traits is not DEFAULT_TRAITS or not pool._plain or self._policy is not _WAIT:
            task = pool._register(fn, args, self._traits_for(traits), name, self)
            self._push(task, self._policy)
            return task
        # The common case inlined (pool._register + _push for WAIT, no metrics).
        if not callable(fn):
            raise TypeError(f"task must be callable, not {type(fn).__name__}")
        token = next_token()
        task = Task(token, fn, args, copy_context(), self._traits, name, self)
        pool._live[token] = task
        status = _try_push(self._ring, token)
        if status != OK:
            if status != CLOSED:  # full: wait for room
                # The runner's own thread would wait for itself forever: no wait.
                wait_ns = self._wait_ns if threading.get_ident() != self._thread_ident else 0
                status = _push_wait(self._ring, token, wait_ns)
            if status != OK:
                self._push_failed(task, _WAIT, status)
        return task

    def _accept_fired(self, task: Task) -> None:
        """A delayed task fell due (timer thread): queue it without ever blocking."""
        policy = QueuePolicy.DROP_NEWEST if self._policy is QueuePolicy.WAIT else self._policy
        if policy is QueuePolicy.CALLER_RUNS:
            policy = QueuePolicy.DROP_NEWEST  # never run user code on the timer thread
        with contextlib.suppress(QueueFullError, RunnerClosedError):
            self._push(task, policy)  # on failure _push already dropped and counted it

    def _push(self, task: Task, policy: QueuePolicy) -> None:
        ring = self._ring
        token = task.token
        if policy is QueuePolicy.WAIT:
            # The runner's own thread would wait for itself forever: no wait.
            wait_ns = 0 if threading.get_ident() == self._thread_ident else self._wait_ns
            status = _push_wait(ring, token, wait_ns)
        elif policy is QueuePolicy.DROP_OLDEST:
            evicted = ffi.new("uint64_t *")
            did = ffi.new("int *")
            status = _push_evict(ring, token, evicted, did)
            if status == OK and did[0]:
                self._drop_evicted(int(evicted[0]))
        else:
            status = _try_push(ring, token)
        if status == OK:
            return None
        self._push_failed(task, policy, status)
        return None

    def _push_failed(self, task: Task, policy: QueuePolicy, status: int) -> None:
        """A push did not reach the ring: closed, or full (the policy decides)."""
        if status == CLOSED:
            return self._check_closed(task, status)
        # Full (or WAIT timed out): the policy decides.
        self._count_rejected(task, policy)
        if policy is QueuePolicy.CALLER_RUNS:
            if self._pool._claim(task):
                previous = set_current(self)
                try:
                    self._pool._run_claimed(task)
                finally:
                    set_current(previous)
            return None
        if self._pool._claim(task):
            self._pool._note_not_run(task, M_REJECTED)
            task._finish(DROPPED)
        if policy is QueuePolicy.DROP_NEWEST:
            return None
        raise QueueFullError(
            f"{self._name}: queue full ({self._capacity} tasks)"
            + (" after waiting" if policy is QueuePolicy.WAIT else "")
        )

    def _left_unrun(self) -> None:
        """An evicted token left the ring without reaching the thread."""
        with self._lock:
            self._processed += 1
            self._evicted += 1
            if self._processed == _pushed(self._ring):
                self._idle.notify_all()

    def _check_closed(self, task: Task, status: int) -> None:
        if status == OK:
            return
        if self._pool._claim(task):
            self._pool._note_not_run(task, M_DROPPED)
            task._finish(DROPPED)
        elif status == CLOSED:
            return  # the pool's shutdown dropped (and counted) it meanwhile: the handle says so
        if status == CLOSED:
            raise RunnerClosedError(f"{self._name}: post_task after shutdown")
        check(status, f"{self._name}: post_task")

    def _drop_evicted(self, token: int) -> None:
        self._left_unrun()
        task = self._pool._live.get(token)
        if task is not None and self._pool._claim(task):
            self._pool._note_not_run(task, M_REJECTED)
            task._finish(DROPPED)
            self._count_rejected(task, QueuePolicy.DROP_OLDEST)

    def _count_rejected(self, task: Task, policy: QueuePolicy) -> None:
        with self._lock:
            self._rejected += 1
        metrics = self._pool.metrics
        if metrics is not None:
            traits = task.traits
            try:
                metrics.task_rejected(self._name, traits.priority, traits.category, policy.value)
            except Exception:
                self._pool._metrics_failed()
        callback = self._on_rejected
        if callback is not None:
            try:
                callback(task, policy)
            except Exception:
                self._pool._report_error_from_callback(task)

    # ---- the runner thread ------------------------------------------------------------------

    def _main(self) -> None:
        set_current(self)
        ring = self._ring
        buf = ffi.new("uint64_t[]", _BATCH)
        count = ffi.new("size_t *")
        unpack = ffi.unpack
        pool = self._pool
        live_pop = pool._live.pop
        run = pool._run_claimed
        plain = pool._plain  # no metrics, no tracer: tasks run inline below
        lock = self._lock
        idle = self._idle
        # Linger for a batch when a stream is found (see _LINGER_NS_GIL, tr_ring.h).
        linger_min = min(_LINGER_MIN, self._capacity // 2)
        linger_ns = _LINGER_NS_GIL if _gil_enabled() else _LINGER_NS_NO_GIL
        times = pool._adopt_thread()  # this thread's metrics buffer, if any
        task: Task | None = None
        try:
            while True:
                task = None  # hold no finished task (nor its captures) while waiting
                status = _pop_many_linger(ring, buf, _BATCH, count, linger_min, linger_ns, -1)
                if status == CLOSED:
                    break
                if status != OK:
                    check(status, f"{self._name}: pop")
                tokens = unpack(buf, count[0])
                ran = succeeded = failed = 0
                for token in tokens:
                    task = live_pop(token, None)
                    if task is None:
                        continue
                    ran += 1
                    if not plain or pool._dropping:
                        run(task)
                        continue
                    # pool._run_claimed(task), inlined: counters per batch.
                    task.state = RUNNING
                    try:
                        if task.args:
                            task.ctx.run(task.fn, *task.args)  # type: ignore[arg-type]
                        else:  # no star-call: no bound method, no argument tuple built
                            task.ctx.run(task.fn)  # type: ignore[arg-type]
                    except BaseException as exc:
                        task._name = task.name
                        task._finish(FAILED)
                        failed += 1
                        pool._report_error(exc, task)
                    else:
                        task.state = SUCCEEDED
                        task.fn = None
                        task.args = ()
                        if task._done_event is not None:
                            task._done_event.set()
                        succeeded += 1
                if succeeded or failed:
                    with pool._stats_lock:
                        pool._completed += succeeded
                        pool._failed += failed
                with lock:
                    self._processed += len(tokens)
                    self._completed += ran
                    if self._processed == _pushed(ring):
                        idle.notify_all()
        finally:
            self._pool._release_thread(times)
            set_current(None)

    # ---- waiting and shutdown -----------------------------------------------------------------

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until the queue is empty and the thread is between tasks."""
        timeout = check_wait_timeout(timeout)
        with self._lock:
            ring = self._ring
            return bool(self._idle.wait_for(lambda: self._processed == _pushed(ring), timeout))

    def shutdown(
        self, wait: bool = True, *, timeout: float | None = None, cancel_pending: bool = False
    ) -> ShutdownReport:
        """Refuse new tasks and stop the thread.  Graceful: queued tasks run
        (with ``wait``, waiting for them); forceful, or once the timeout ran
        out: queued tasks that are not BLOCK_SHUTDOWN are dropped.  With
        ``wait`` the thread is then joined.  ``timeout`` bounds the whole call
        (plus ``SHUTDOWN_GRACE``): a task still running then is reported and the
        thread ends on its own after it.

        Called from one of this runner's own tasks (its thread), it cannot wait
        for itself: it returns at once, and the queued tasks run after the
        caller (or, with ``cancel_pending``, are dropped now); the thread ends
        after them."""
        timeout = shutdown_timeout(timeout)
        end = None if timeout is None else time.monotonic() + timeout + SHUTDOWN_GRACE
        # The thread object, not its ident: an ident is reused once the thread has ended.
        own_thread = threading.current_thread() is self._thread
        waits = wait and not own_thread
        with self._lock:
            self._closed = True
        self._signal_shutdown()
        drained = timed_out = False
        if not cancel_pending and waits:
            drained = self.wait_idle(timeout)
            timed_out = not drained
        dropped = 0
        if cancel_pending or timed_out:
            dropped = self._drop_queued()
        lib.tr_ring_close(self._ring)
        if waits:
            self._thread.join(time_left(end))
            if self._thread.is_alive():
                timed_out = True
        if own_thread:
            running = 1
        else:
            with self._lock:
                busy = self._processed != _pushed(self._ring)
            running = int(busy and self._thread.is_alive())
        self._forget_source()
        if self._owns_pool:
            # Its timer thread and pending-task table; nothing of ours is left in it.
            self._pool.shutdown(wait=waits, timeout=time_left(end))
        return ShutdownReport(
            drained=drained and not cancel_pending,
            dropped=dropped,
            still_running=running,
            timed_out=timed_out,
        )

    def _drop_queued(self) -> int:
        """Drop queued tasks that are not BLOCK_SHUTDOWN (they stay in the ring
        and the thread skips them, since their claim is gone)."""
        dropped = 0
        for task in list(self._pool._live.copy().values()):
            if (
                task.runner is self
                and not task.delayed
                and task.traits.shutdown_behavior is not _BLOCK
                and self._pool._claim(task)
            ):
                self._pool._note_not_run(task, M_DROPPED)
                task._finish(DROPPED)
                dropped += 1
        return dropped

    def _pool_closed(self) -> tuple[int, int]:
        """The pool finished shutting down: queued tasks follow the pool's
        choice (its dropping phase drops non-BLOCK tasks), then the thread ends.
        It is joined until the pool's shutdown deadline (plus the grace).

        Returns (1 if the pool was shut down from this runner's own thread,
        which is still running that task; 1 if the thread outlived the
        deadline), each else 0."""
        lib.tr_ring_close(self._ring)
        self._forget_source()
        if threading.current_thread() is self._thread:
            return 1, 0
        deadline = self._pool._shutdown_deadline
        self._thread.join(time_left(None if deadline is None else deadline + SHUTDOWN_GRACE))
        return 0, int(self._thread.is_alive())

    # ---- metrics (the MetricsSource hooks) ------------------------------------------------

    def metrics_gauges(self) -> RunnerGauges:
        """This runner's levels, for the pool's metrics.  Tokens the thread took
        out of the ring but has not finished count as queued, except one,
        which counts as running while any is out."""
        with self._lock:
            unfinished = _pushed(self._ring) - self._processed
        in_ring = int(lib.tr_ring_len(self._ring))
        running = 1 if unfinished > in_ring else 0
        return RunnerGauges(
            kind="runner",
            queued=max(0, unfinished - running),
            running=running,
            capacity=self._capacity,
        )

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "name": self._name,
                "queued": int(lib.tr_ring_len(self._ring)),
                "capacity": self._capacity,
                "policy": self._policy.value,
                "posted": _pushed(self._ring) - self._evicted,
                "completed": self._completed,
                "rejected": self._rejected,
                "closed": self._closed,
                "metadata": self.metadata,
            }


__all__ = ["QueuePolicy", "SingleThreadTaskRunner"]
