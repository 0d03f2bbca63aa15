"""The job manager's IO layer: every store call, its retries, and group commit.

:class:`ManagerCore` declares the state that the manager's parts share (built
by :meth:`JobManager.__init__ <taskrunner.jobs.manager.JobManager>`) and holds
the IO layer: :meth:`_io` runs a store call on the sequenced ``may_block`` IO
runner and retries a failed write (:class:`StoreError`) as a *delayed task*,
so a retrying write never blocks the writes queued behind it; submits waiting
at the same time are committed together (:meth:`_insert`).

Threads: ``_lock`` guards every mutable field declared here (see the
comments); the IO methods themselves run only on the IO runner, one at a time.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Any, TypeVar

from taskrunner.errors import RunnerClosedError
from taskrunner.jobs.errors import DuplicateJobError, StoreError, SubmitTimeoutError
from taskrunner.jobs.handles import (
    HandlerEntry,
    RunningAttempt,
    Serializer,
    StoreErrorHandler,
)
from taskrunner.jobs.model import Job
from taskrunner.jobs.retry import RetryPolicy
from taskrunner.jobs.stores.store import JobStore
from taskrunner.jobs.stores.tx_enqueue import insert_in_transaction
from taskrunner.runtime.clock import Clock
from taskrunner.runtime.metrics import Metrics
from taskrunner.runtime.pool import ThreadPool
from taskrunner.runtime.repeating import RepeatingTaskHandle
from taskrunner.runtime.runner import TaskRunner
from taskrunner.runtime.runners.sequenced import SequencedTaskRunner

__all__ = ["ManagerCore"]

log = logging.getLogger("taskrunner.jobs")
T = TypeVar("T")


class ManagerCore:
    """The state shared by the manager's layers, and the IO layer's methods."""

    # Set once by JobManager.__init__, then only read.
    _store: JobStore
    _batch_complete: bool
    _own_pool: bool
    _pool: ThreadPool
    _owner: str
    _serializer: Serializer
    _retry: RetryPolicy  # replaced whole by the retry_policy setter (see registry.py)
    _store_retry: RetryPolicy
    _lease: float
    _poll: float
    _max_concurrent: int
    _queue_limits: dict[str, int]  # queue -> concurrency limit (see manager_queues)
    _error_handler: StoreErrorHandler | None
    _metrics: Metrics | None
    _otel: Any
    _tracer_provider: Any
    _clock: Clock
    _mono0: int
    _wall0: float
    _control: SequencedTaskRunner
    _io_runner: SequencedTaskRunner
    _execution: TaskRunner
    # _lock guards every field below; _changed is notified when _active shrinks,
    # a flag changes, or an insert finished or was put back for a retry.
    _lock: threading.Lock
    _changed: threading.Condition
    _handlers: dict[str, HandlerEntry]
    _active: dict[tuple[str, int], RunningAttempt]  # by (job id, attempt)
    _futures: dict[str, Future[Any]]
    _submit_contexts: dict[str, contextvars.Context]
    _pending_inserts: list[tuple[list[Job], Future[None]]]
    _pending_completions: list[tuple[RunningAttempt, bytes, Any]]
    _completion_flush_posted: bool
    _insert_flush_posted: bool
    _inline_insert: bool = False  # a submitter is committing inline on its own thread
    _dispatch_posted: bool
    _claim_unknown: bool  # a claim failed, maybe after committing: adopt what we hold
    _abandoned: set[tuple[str, int]]  # attempts whose outcome write was given up
    _started: bool
    _accepting: bool
    _claiming: bool
    _repeating: list[RepeatingTaskHandle]
    _unsubscribe: Callable[[], None] | None
    _stats: dict[str, int]

    # ---- time --------------------------------------------------------------------------------

    def now(self) -> float:
        """The manager's current time, epoch seconds (follows the pool's clock)."""
        return self._epoch(self._clock.now_ns())

    # The manager computes due times (delays, retries) in integer ns on the
    # pool's clock and schedules its wake-ups at exactly those times; the store
    # keeps epoch seconds (a float, ~240 ns apart today), derived with _epoch,
    # so that at the due ns now() equals the stored time and the job is due.

    def _epoch(self, ns: int) -> float:
        """Epoch seconds of the clock time ``ns``."""
        return self._wall0 + (ns - self._mono0) / 1e9

    def _clock_ns(self, epoch: float) -> int:
        """The clock time (ns) of epoch seconds ``epoch``, rounded up (never early)."""
        return self._mono0 + math.ceil((epoch - self._wall0) * 1e9)

    # ---- the IO layer ------------------------------------------------------------------------

    def _io(
        self,
        fn: Callable[[], T],
        op: str,
        on_give_up: Callable[[BaseException], None] | None = None,
    ) -> Future[T]:
        """Run ``fn`` on the IO layer, retrying StoreError as a delayed task.

        Returns a future of its result.  Other exceptions are final.  When the
        write retries run out, the error handler and ``on_give_up`` are called
        and the future holds the StoreError.  RunnerClosedError once the IO
        layer is shut down."""
        if not self._pool.started:
            self._pool.start()  # the IO layer runs on the pool: submit before start() works
        future: Future[T] = Future()
        attempts = itertools.count(1)

        def attempt() -> None:
            n = next(attempts)
            try:
                value = fn()
            except StoreError as exc:
                if self._store_retry.allows_another(n) and self._store_retry.should_retry(exc):
                    delay = self._store_retry.delay_for(n)
                    with self._lock:
                        self._stats["store_retries"] += 1
                    self._store_metric(op, failed=False)
                    log.warning(
                        "store %s failed (%s); retry %d in %.3fs",
                        op,
                        exc,
                        n,
                        delay,
                        extra={"operation": op, "attempt": n},
                    )
                    try:
                        self._io_runner.post_delayed_task(attempt, delay, name=f"retry-{op}")
                        return
                    except RunnerClosedError:
                        pass
                self._store_failed(exc, op)
                self._store_metric(op, failed=True)
                if on_give_up is not None:
                    on_give_up(exc)
                future.set_exception(exc)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(value)

        self._io_runner.post_task(attempt, name=op)
        return future

    def _read(self, fn: Callable[[], T], op: str) -> T:
        """A store read: through the IO layer, or directly once it is shut down."""
        if self._io_runner.is_closed:
            return fn()
        try:
            return self._io(fn, op).result()
        except RunnerClosedError:
            return fn()

    def _store_failed(self, exc: BaseException, op: str) -> None:
        log.error("store %s failed for good: %s", op, exc, extra={"operation": op})
        handler = self._error_handler
        if handler is not None:
            try:
                handler(exc, op)
            except Exception:
                log.exception("the job manager's error handler failed")

    # ---- group commit of submits --------------------------------------------------------------

    def _store_new(
        self, jobs: list[Job], timeout: float | None = None, connection: object = None
    ) -> list[Future[Any]]:
        """Store new ``jobs`` (see :meth:`_insert`); returns their futures, which were
        registered, with the submitter's context, before the write: a worker may
        claim and finish a job before the submitter gets control back."""
        futures, registered = self._expect([job.id for job in jobs])
        try:
            self._insert(jobs, timeout, connection)
        except BaseException:
            self._unexpect(registered)
            raise
        return futures

    def _expect(self, job_ids: list[str]) -> tuple[list[Future[Any]], list[str]]:
        """The futures the jobs ``job_ids`` settle when they end, registered now with
        the calling thread's context (the handler runs in it), and the ids this
        call registered.  A job already tracked keeps its future and context (the
        write will refuse a duplicate id)."""
        context = contextvars.copy_context()
        futures: list[Future[Any]] = []
        registered: list[str] = []
        with self._lock:
            for job_id in job_ids:
                future = self._futures.get(job_id)
                if future is None:
                    future = self._futures[job_id] = Future()
                    self._submit_contexts[job_id] = context
                    registered.append(job_id)
                futures.append(future)
        return futures, registered

    def _unexpect(self, registered: list[str]) -> None:
        """Forget what :meth:`_expect` registered, after the write failed."""
        with self._lock:
            for job_id in registered:
                future = self._futures.get(job_id)
                if future is not None and not future.done():
                    del self._futures[job_id]
                    self._submit_contexts.pop(job_id, None)

    def _insert(
        self, jobs: list[Job], timeout: float | None = None, connection: object = None
    ) -> None:
        """Store ``jobs`` (one transaction), committed together with other
        submits waiting at the same time (group commit); waits for the ack.

        With ``connection``, the caller's open database connection, the jobs
        are inserted in its transaction instead, on this thread, uncommitted
        (:mod:`~taskrunner.jobs.stores.tx_enqueue`); no retry: the caller's
        transaction decides.

        Inline fast path: a submitter that finds no insert queued or being
        written commits on its own thread, without the hop to the IO runner
        and back (the store is thread-safe); submitters arriving meanwhile queue
        up as usual and are committed together by the IO layer once it is done.
        If the inline write fails with :class:`StoreError`, the jobs take the
        queued path and the IO layer retries them as any other write.

        With ``timeout`` (seconds): if the jobs are not stored by then and no
        write of them is in progress (the write is waiting for its turn or for
        its next retry), they are withdrawn, nothing is stored and
        :class:`SubmitTimeoutError` is raised.  A write in progress at the
        deadline is waited for; if it lands, the jobs are stored and this
        returns normally."""
        if connection is not None:
            insert_in_transaction(self._store, connection, jobs)
            return
        end = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            inline = not (self._inline_insert or self._insert_flush_posted or self._pending_inserts)
            if inline:
                self._inline_insert = True
        if inline and self._insert_inline(jobs):
            return
        if end is not None:
            timeout = max(end - time.monotonic(), 1e-6)
        future: Future[None] = Future()
        with self._lock:
            self._pending_inserts.append((jobs, future))
            post = not self._insert_flush_posted
            self._insert_flush_posted = True
        if post:
            self._io(self._flush_inserts, "insert", on_give_up=self._fail_pending_inserts)
        if timeout is None:
            future.result()
            return
        try:
            future.result(timeout)
            return
        except FutureTimeoutError:
            pass
        future.add_done_callback(self._wake_waiters)
        with self._lock:
            while not future.done():
                for i, (_, pending) in enumerate(self._pending_inserts):
                    if pending is future:  # not being written now: withdraw it
                        del self._pending_inserts[i]
                        raise SubmitTimeoutError(
                            f"the job was not stored within {timeout} s (the store write "
                            "was still waiting or retrying); nothing was stored"
                        )
                self._changed.wait()  # its write is in progress: see how it ends
        future.result()

    def _insert_inline(self, jobs: list[Job]) -> bool:
        """Commit ``jobs`` on the caller's thread (``_inline_insert`` is set).

        True once stored; False after a :class:`StoreError`, for the caller to
        queue them for the IO layer's retries.  Other errors are raised."""
        try:
            if len(jobs) == 1:
                self._store.insert(jobs[0])
            else:
                self._store.insert_many(jobs)
        except StoreError as exc:
            with self._lock:
                self._stats["store_retries"] += 1
            self._store_metric("insert", failed=False)
            log.warning("store insert failed (%s); retrying on the IO layer", exc)
            return False
        finally:
            with self._lock:
                self._inline_insert = False
        return True

    def _wake_waiters(self, _: object = None) -> None:
        """An insert finished or was put back: wake the submits past their deadline."""
        with self._lock:
            self._changed.notify_all()

    def _fail_pending_inserts(self, exc: BaseException) -> None:
        with self._lock:
            batch, self._pending_inserts = self._pending_inserts, []
            self._insert_flush_posted = False
        for _, future in batch:
            future.set_exception(exc)

    def _flush_inserts(self) -> None:
        with self._lock:
            batch, self._pending_inserts = self._pending_inserts, []
            self._insert_flush_posted = False
        if not batch:
            return
        if len(batch) == 1:
            jobs, future = batch[0]
            self._insert_one(jobs, future)
            return
        everything = [job for jobs, _ in batch for job in jobs]
        try:
            self._store.insert_many(everything)
        except DuplicateJobError:
            for jobs, future in batch:  # find out whose submit it was
                self._insert_one(jobs, future)
            return
        except StoreError:
            self._requeue_inserts(batch)
            raise
        except BaseException as exc:
            for _, future in batch:
                future.set_exception(exc)
            return
        for _, future in batch:
            future.set_result(None)

    def _insert_one(self, jobs: list[Job], future: Future[None]) -> None:
        try:
            if len(jobs) == 1:
                self._store.insert(jobs[0])
            else:
                self._store.insert_many(jobs)
        except StoreError:
            self._requeue_inserts([(jobs, future)])
            raise
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(None)

    def _requeue_inserts(self, batch: list[tuple[list[Job], Future[None]]]) -> None:
        """A failed commit: put its submits back; the IO retry flushes them again,
        or, once retries run out, they fail with the StoreError."""
        with self._lock:
            self._pending_inserts[:0] = batch
            self._insert_flush_posted = True
            self._changed.notify_all()  # a submit past its deadline may withdraw now

    # ---- metrics and counters -----------------------------------------------------------------

    def _store_metric(self, op: str, *, failed: bool) -> None:
        metrics = self._metrics
        if metrics is None:
            return
        try:
            if failed:
                metrics.store_write_failed(op)
            else:
                metrics.store_write_retried(op)
        except Exception:
            log.exception("a metrics hook failed for store operation %s", op)

    def _count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self._stats[what] += n

    def _job_metric(
        self, job: Job, outcome: str | None = None, *, attempt: int | None = None
    ) -> None:
        """Report ``job``'s new state (and how its attempt ended) to the metrics.

        ``attempt`` is the number of the attempt that ended, when the job's own
        has changed since (a snooze gives the attempt back)."""
        metrics = self._metrics
        if metrics is None:
            return
        try:
            metrics.job_state_changed(job.type, job.state.value, job.attempt)
            if outcome is not None:
                number = job.attempt if attempt is None else attempt
                running = self._active.get((job.id, number))
                seconds = 0.0 if running is None else time.monotonic() - running.started
                metrics.job_attempt_finished(job.type, number, outcome, seconds)
        except Exception:
            log.exception("a metrics hook failed for job %s", job.id, extra={"job_id": job.id})

    def _stale(self, attempt: RunningAttempt, why: str) -> None:
        """A late attempt's outcome was dropped (fenced: the job is no longer held
        on this attempt): log it, count it in ``stats()["stale"]``, and report the
        attempt to the metrics with outcome ``stale``."""
        job = attempt.job
        self._count("stale")
        log.warning(
            "job %s attempt %d: stale outcome dropped, owner %s no longer holds it (%s)",
            job.id,
            job.attempt,
            self._owner,
            why,
            extra={"job_id": job.id, "attempt": job.attempt, "owner": self._owner},
        )
        metrics = self._metrics
        if metrics is not None:
            try:
                seconds = time.monotonic() - attempt.started
                metrics.job_attempt_finished(job.type, job.attempt, "stale", seconds)
            except Exception:
                log.exception("a metrics hook failed for job %s", job.id, extra={"job_id": job.id})
