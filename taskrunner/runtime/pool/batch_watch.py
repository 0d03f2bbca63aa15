"""The batch watch: no ready task stays hidden behind a long task in a worker's batch.

A worker of the pool's CPU group pops up to ``batch_size`` tokens at once and
runs them one after another.  Between two tasks it gives the rest back to the
queue when something more urgent arrived or the batch has held it long enough
(``pool._HOLD_NS``).  That check cannot run while a task runs: a task that
blocks (waits for another task, sleeps, does I/O) would keep the rest of its
batch from every other worker, however idle they are.  Two tasks that meet at
a barrier on a two-worker pool would then deadlock, which a user of any thread
pool rightly takes for a bug.

The watch closes that gap.  While some worker holds a batch of more than one
token, a watch thread wakes every ``hold_ns`` and looks at each worker: one
that is still running the same task of the same batch as at its previous look
has been inside that task for at least ``hold_ns``, and, if some worker is
idle (waiting in the heap), the watch queues the tokens of its batch that are
still pending again (a fresh push of each, at the back of their priority).
The idle worker then takes them.  With no idle worker nothing is stolen, so a
one-worker pool keeps its strict FIFO order.  A token may thus sit both in the heap and in the
worker's batch: whoever claims the task first (``pool._live.pop``, see
taskrunner.runtime.task) runs it, the other finds it gone and skips it.  Every push is
popped and completed once, so the heap's in-flight count and ``wait_idle``
stay exact.

Synchronisation.  ``_Worker.batch_lock`` makes a steal and the worker's own
give-back (``tr_heap_unpop`` of the rest) exclusive: whichever comes first sets
``worker.batch`` to None.  The heap holds a token at most once (a second push
is refused with TR_EXISTS), so a token is at most in the heap and in one
batch.  When a worker whose batch was re-queued (or whose unpop meets a token
queued already) has to give its rest back (something more urgent arrived, or
the hold ran out), it pushes each pending token of the rest, TR_EXISTS meaning
"queued already", counts the rest as done (it popped them) and leaves them to
the queue, so preemption still holds.  Only if the heap is closed does it run
the rest itself, so no task is lost.

Cost.  Nothing per task; per batch of more than one token, two attribute
stores and one read of ``armed``.  The thread starts at the first such batch
and sleeps on an event while no worker holds one.  Thread-safety: ``arm`` and
``close`` may be called from any thread; ``_lock`` guards ``_armed``,
``_closed`` and ``_thread``.  Shutdown: :meth:`close` wakes the thread, which
exits at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from taskrunner.native.binding import OK, lib

_push = lib.tr_heap_push


class WatchedWorker(Protocol):
    """What the watch reads of a worker (see pool._Worker)."""

    current: Any
    batch: list[int] | None
    batch_priority: int
    batch_lock: threading.Lock
    seen_current: int | None  # the token of the task seen running at the last look
    seen_batch: list[int] | None


class BatchWatch:
    """Re-queues the pending rest of a batch whose worker is stuck in one task."""

    def __init__(
        self,
        name: str,
        heap: Any,
        workers: Callable[[], Sequence[WatchedWorker]],
        is_pending: Callable[[int], bool],
        hold_ns: int,
        idle_workers: Callable[[], int] = lambda: 1,
    ) -> None:
        self._name = name
        self._heap = heap
        self._workers = workers
        self._is_pending = is_pending
        self._idle_workers = idle_workers
        self._hold_s = hold_ns / 1e9
        self._wake = threading.Event()
        self._stop = threading.Event()  # set by close(): ends a sleep between looks
        self._lock = threading.Lock()  # guards _armed (writes), _closed, _thread
        # Read without the lock by workers on their batch path: a stale False
        # costs one arm() call, a stale True is caught by the disarm re-check.
        self.armed = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self.rescued = 0  # tokens queued again; written by the watch thread only

    def arm(self) -> None:
        """A worker holds a batch of more than one token: watch it (any thread)."""
        with self._lock:
            if self._closed or self.armed:
                return
            self.armed = True
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"{self._name}-batch-watch", daemon=True
                )
                self._thread.start()
            self._wake.set()

    def close(self, timeout: float | None = None) -> None:
        """Stop the watch thread (any thread, idempotent); joins it up to ``timeout``."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._stop.set()
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        previous_looked = False
        while True:
            self._wake.wait()
            if self._closed:
                return
            if previous_looked:
                if self._stop.wait(self._hold_s):
                    return
            else:
                previous_looked = True
            if not self._look():
                with self._lock:
                    if self._closed:
                        return  # close() may have set _wake just now: never clear it
                    self.armed = False
                    self._wake.clear()
                previous_looked = False
                # A worker that read armed=True just before it was cleared has
                # not armed again: look once more before sleeping.
                if self._holding():
                    self.arm()

    def _holding(self) -> bool:
        return any(w.batch is not None for w in self._workers())

    def _look(self) -> bool:
        """One look at every worker; True while some worker holds a batch."""
        holding = False
        for worker in self._workers():
            batch = worker.batch
            current = worker.current
            if batch is None:
                worker.seen_batch = worker.seen_current = None
                continue
            holding = True
            # The task's token, never the task: the watch must not keep a
            # finished task (and its runner) alive between two looks.
            token = None if current is None else current.token
            if token is None or token != worker.seen_current or batch is not worker.seen_batch:
                worker.seen_current, worker.seen_batch = token, batch
                continue
            if self._idle_workers() == 0:
                continue  # nobody could take the rest: keep the batch (and its order)
            self._steal(worker, batch)
            worker.seen_batch = worker.seen_current = None
        return holding

    def _steal(self, worker: WatchedWorker, batch: list[int]) -> None:
        with worker.batch_lock:
            if worker.batch is not batch:
                return  # the worker gave it back, or moved on
            worker.batch = None
            priority = worker.batch_priority
            pending = self._is_pending
            for token in batch:
                if pending(token) and _push(self._heap, token, priority) == OK:
                    self.rescued += 1
