"""``JobManager``: durable jobs on the thread pool, in three layers.

Layers
------
* **Control** (a :class:`SequencedTaskRunner`): decides.  It starts attempts,
  arms timeouts and deadlines, and signals cancel tokens; its tasks never
  interleave, so these decisions are made one at a time.
* **IO** (a sequenced, ``may_block`` runner): the only code that talks to the
  store.  Every store call goes through :meth:`JobManager._io`, which retries a
  failed write (:class:`StoreError`) with its own backoff as a *delayed task*,
  so a retrying write never blocks the other writes queued behind it.  When the
  retries are exhausted the ``error_handler`` is called; a job left RUNNING in
  the store by a write that never landed is recovered once its lease expires
  (nobody renews it), so no job stays RUNNING forever with no one running it.
* **Execution** (any runner; default: the pool, by the job's priority): runs
  the handler.

The in-memory tables (handlers, active attempts, futures) are guarded by
``_lock``; every lock section is short and calls nothing.

Durability and exactly-once
---------------------------
``submit`` returns once the job is stored (the durable ack: SQLite commits
with ``synchronous=FULL`` by default).  Concurrent submits are committed
together (group commit) when they arrive while a commit is running.
Duplicates are refused by the store's unique constraints, so they hold across
threads, processes and restarts.  A job runs only after this process *claimed*
it in the store (an atomic claim that records the owner and a lease), so two
managers sharing a store never run the same attempt; the lease is renewed by a
heartbeat while the handler runs, and a job whose owner died is recovered by
any live manager once the lease expires (retried if attempts remain, else
FAILED with reason "interrupted").

Time
----
Job times are epoch seconds derived from the pool's clock (a monotonic clock
anchored to ``time.time()`` at construction), so under
``taskrunner.testing.TaskEnvironment`` delays, retries, timeouts and leases
all run on mock time.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import json
import logging
import math
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from taskrunner.errors import RunnerClosedError
from taskrunner.jobs import context as ctxmod
from taskrunner.jobs.context import CancelToken, JobContext
from taskrunner.jobs.errors import (
    CorruptJobError,
    DuplicateJobError,
    JobCancelled,
    JobError,
    LeaseLostError,
    StoreError,
    UnknownJobTypeError,
)
from taskrunner.jobs.model import MAX_PRIORITY, MIN_PRIORITY, Job, new_job
from taskrunner.jobs.retry import RetryPolicy
from taskrunner.jobs.states import JobState
from taskrunner.jobs.store import BatchCompletion, JobPage, JobStore
from taskrunner.pool import ThreadPool
from taskrunner.repeating import RepeatingTaskHandle
from taskrunner.runner import TaskRunner
from taskrunner.sequenced import SequencedTaskRunner
from taskrunner.traits import TaskPriority, TaskTraits

__all__ = [
    "JSONSerializer",
    "JobFailedError",
    "JobHandle",
    "JobManager",
    "JobSpec",
    "SerializationError",
    "Serializer",
]

log = logging.getLogger("taskrunner.jobs")
T = TypeVar("T")

Handler = Callable[[JobContext, Any], Any]
StoreErrorHandler = Callable[[BaseException, str], None]


class Serializer(Protocol):
    """Encodes job arguments and results to bytes and back."""

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class JSONSerializer:
    """The default serializer: compact JSON, no NaN, UTF-8."""

    def dumps(self, value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data.decode()) if data else None


class SerializationError(JobError, ValueError):
    """Arguments or a result could not be encoded (or decoded) by the serializer."""


class JobFailedError(JobError):
    """``result()`` of a job that ended FAILED; ``job`` is the stored record."""

    def __init__(self, job: Job) -> None:
        self.job = job
        super().__init__(f"job {job.id!r} ({job.type}) failed: {job.last_error}")


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job for :meth:`JobManager.submit_many` (the arguments of ``submit``)."""

    job_type: str
    args: Any = None
    job_id: str | None = None
    priority: int = 0
    delay: float | None = None
    run_at: float | None = None
    max_attempts: int | None = None
    timeout: float | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class _HandlerEntry:
    fn: Handler
    may_block: bool
    retry: RetryPolicy | None


class _Attempt:
    """One running attempt in this process.  Fields are written by the IO
    layer before the attempt is published in ``_active`` and not after."""

    __slots__ = ("context", "entry", "job", "started", "token")

    def __init__(self, job: Job, entry: _HandlerEntry, token: CancelToken) -> None:
        self.job = job
        self.entry = entry
        self.token = token
        self.context: contextvars.Context | None = None
        self.started = time.monotonic()


class JobHandle:
    """What ``submit`` returns: the job's id, its future and a few shortcuts."""

    __slots__ = ("future", "id", "manager")

    def __init__(self, manager: JobManager, job_id: str, future: Future[Any]) -> None:
        self.manager = manager
        self.id = job_id
        #: Resolved with the decoded result when this process finishes the job
        #: (JobFailedError / JobCancelled when it fails or is cancelled).
        self.future = future

    def result(self, timeout: float | None = None) -> Any:
        return self.manager.result(self.id, timeout)

    def cancel(self) -> Job:
        return self.manager.cancel(self.id)

    def get(self) -> Job:
        return self.manager.get(self.id)

    def __repr__(self) -> str:
        return f"<JobHandle {self.id}>"


def _priority_traits(priority: int, may_block: bool) -> TaskTraits:
    if priority > 0:
        level = TaskPriority.USER_BLOCKING
    elif priority < 0:
        level = TaskPriority.BEST_EFFORT
    else:
        level = TaskPriority.USER_VISIBLE
    return TaskTraits(priority=level, may_block=may_block)


def _default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"


class JobManager:
    """Durable jobs: submit, run with retries, cancel, recover.  Thread-safe.

    ``store`` is a :class:`JobStore` (``SQLiteJobStore`` is the embedded
    default).  ``pool`` runs the layers (a pool of its own, shut down with the
    manager, when None).  ``retry_policy`` decides which failures retry and
    after what delay (the job's ``max_attempts`` caps the count);
    ``store_retry`` does the same for failed store writes.  ``owner`` names
    this manager in the store's leases (unique per process by default).
    """

    def __init__(
        self,
        store: JobStore,
        pool: ThreadPool | None = None,
        *,
        execution: TaskRunner | None = None,
        owner: str | None = None,
        serializer: Serializer | None = None,
        retry_policy: RetryPolicy | None = None,
        store_retry: RetryPolicy | None = None,
        lease_seconds: float = 30.0,
        poll_interval: float = 1.0,
        max_concurrent: int = 64,
        error_handler: StoreErrorHandler | None = None,
    ) -> None:
        if not isinstance(store, JobStore):
            raise TypeError(f"store must be a JobStore, not {type(store).__name__}")
        for what, value in (("lease_seconds", lease_seconds), ("poll_interval", poll_interval)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{what} must be a number of seconds")
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{what} must be > 0, got {value}")
        if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
            raise TypeError("max_concurrent must be an int")
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
        self._store = store
        self._batch_complete = isinstance(store, BatchCompletion)
        self._own_pool = pool is None
        self._pool = pool if pool is not None else ThreadPool(name="jobs")
        self._owner = owner or _default_owner()
        self._serializer: Serializer = serializer or JSONSerializer()
        self._retry = retry_policy or RetryPolicy()
        self._store_retry = store_retry or RetryPolicy(
            max_attempts=8, initial_delay=0.05, ratio=2.0, max_delay=5.0, jitter=0.2
        )
        self._lease = float(lease_seconds)
        self._poll = float(poll_interval)
        self._max_concurrent = max_concurrent
        self._error_handler = error_handler
        # Observability: the pool's metrics sink and, if the pool traces with
        # OpenTelemetry, spans for submits and attempts (the submit's context is
        # stored with the job, so a retry after a restart still links to it).
        self._metrics = self._pool.metrics
        self._otel: Any = None
        tracer = self._pool.tracer
        if tracer is not None and type(tracer).__name__ == "OtelTracer":
            from taskrunner import otel

            if isinstance(tracer, otel.OtelTracer):
                self._otel = otel
                self._tracer_provider = tracer.tracer_provider
        clock = self._pool.clock
        self._clock = clock
        self._mono0 = clock.now_ns()
        self._wall0 = time.time()
        self._control = SequencedTaskRunner(self._pool, name="jobs-control")
        self._io_runner = SequencedTaskRunner(
            self._pool,
            name="jobs-io",
            traits=TaskTraits(priority=TaskPriority.USER_BLOCKING, may_block=True),
        )
        self._execution = execution if execution is not None else self._pool
        # Guards every field below.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # _active shrank, or a flag changed
        self._handlers: dict[str, _HandlerEntry] = {}
        self._active: dict[str, _Attempt] = {}
        self._futures: dict[str, Future[Any]] = {}
        self._submit_contexts: dict[str, contextvars.Context] = {}
        self._pending_inserts: list[tuple[list[Job], Future[None]]] = []
        self._pending_completions: list[tuple[_Attempt, bytes, Any]] = []
        self._completion_flush_posted = False
        self._insert_flush_posted = False
        self._dispatch_posted = False
        self._started = False
        self._accepting = True
        self._claiming = True
        self._repeating: list[RepeatingTaskHandle] = []
        self._unsubscribe: Callable[[], None] | None = None  # store wake-ups (see start)
        self._stats = {
            "submitted": 0,
            "succeeded": 0,
            "failed": 0,
            "retried": 0,
            "cancelled": 0,
            "recovered": 0,
            "store_retries": 0,
            "corrupt": 0,
        }

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

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def store(self) -> JobStore:
        return self._store

    @property
    def pool(self) -> ThreadPool:
        return self._pool

    # ---- handlers ----------------------------------------------------------------------------

    def register(
        self,
        job_type: str,
        fn: Handler,
        *,
        may_block: bool = True,
        retry: RetryPolicy | None = None,
    ) -> None:
        """Register ``fn(ctx, args)`` for ``job_type``.  ``may_block`` (the
        default, since jobs usually do I/O) runs it on the pool's blocking
        group; ``retry`` overrides the manager's policy for this type."""
        if not isinstance(job_type, str) or not job_type:
            raise TypeError("job_type must be a non-empty str")
        if not callable(fn):
            raise TypeError(f"handler must be callable, not {type(fn).__name__}")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError("retry must be a RetryPolicy")
        with self._lock:
            if job_type in self._handlers:
                raise ValueError(f"a handler for job type {job_type!r} is already registered")
            self._handlers[job_type] = _HandlerEntry(fn, may_block, retry)

    def handler(
        self, job_type: str, *, may_block: bool = True, retry: RetryPolicy | None = None
    ) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`register`: ``@manager.handler("send_email")``."""

        def decorate(fn: Handler) -> Handler:
            self.register(job_type, fn, may_block=may_block, retry=retry)
            return fn

        return decorate

    @property
    def job_types(self) -> list[str]:
        with self._lock:
            return sorted(self._handlers)

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> JobManager:
        """Start the pool (if needed), recover, and begin claiming due jobs.

        Recovery: jobs whose owners died (expired leases) are retried or
        failed as their attempts allow; pending jobs, delayed ones at their
        due time, are claimed by exactly one manager even if several start at
        once.  Idempotent."""
        with self._lock:
            if not self._accepting:
                raise RunnerClosedError("JobManager: cannot start after shutdown")
            if self._started:
                return self
            self._started = True
        self._pool.start()
        self._io(self._recover, "recover_expired").result()
        heartbeat = self._io_runner.post_repeating_task(
            self._heartbeat, self._lease / 3, name="jobs-heartbeat"
        )
        poller = self._io_runner.post_repeating_task(self._poll_store, self._poll, name="jobs-poll")
        with self._lock:
            self._repeating = [heartbeat, poller]
        # --- store wake-ups (PostgresJobStore.subscribe: LISTEN/NOTIFY) ---------------------
        # A store that can announce new or due jobs makes us claim at once rather than at
        # the next poll; polling stays the fallback.  Self-contained: remove to disable.
        subscribe = getattr(self._store, "subscribe", None)
        if callable(subscribe):
            unsubscribe = subscribe(self._on_store_notice)
            with self._lock:
                self._unsubscribe = unsubscribe
        # --- end of store wake-ups -----------------------------------------------------------
        self._kick()
        return self

    def _on_store_notice(self, due_at: float | None) -> None:
        """Store listener thread: jobs became pending (due at ``due_at``, or now if None)."""
        self._kick(None if due_at is None else self._clock_ns(due_at))

    def __enter__(self) -> JobManager:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def shutdown(self, graceful: bool = True, timeout: float | None = None) -> int:
        """Stop taking jobs and wind down; returns how many attempts were left running.

        Graceful: stop claiming, let running attempts finish for up to
        ``timeout``, then ask the rest to stop (their tokens are cancelled with
        reason "shutdown").  Forceful: ask them at once.  An attempt stopped by
        shutdown is left RUNNING in the store, unrenewed: the next start (here
        or in another process) recovers it after its lease.  Pending writes are
        flushed before the IO layer stops."""
        with self._lock:
            if not self._accepting:
                return 0
            self._accepting = False
            self._claiming = False
            unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:  # store wake-ups (see start)
            unsubscribe()
        if graceful:
            with self._lock:
                self._changed.wait_for(lambda: not self._active, timeout)
        with self._lock:
            left = list(self._active.values())
        for attempt in left:
            attempt.token.cancel(ctxmod.SHUTDOWN)
        if graceful and left:
            with self._lock:
                self._changed.wait_for(lambda: not self._active, self._lease / 2)
        # The heartbeat ran until now so running attempts kept their leases.
        with self._lock:
            repeating, self._repeating = self._repeating, []
        for handle in repeating:
            handle.stop()
        self._control.shutdown(timeout=self._lease)
        self._io_runner.shutdown(timeout=self._lease)
        with self._lock:
            still = len(self._active)
        if self._own_pool:
            self._pool.shutdown(timeout=self._lease)
        return still

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

    # ---- submitting --------------------------------------------------------------------------

    def submit(
        self,
        job_type: str,
        args: Any = None,
        *,
        job_id: str | None = None,
        priority: int = 0,
        delay: float | None = None,
        run_at: float | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        idempotency_key: str | None = None,
        cancel_token: CancelToken | None = None,
        deadline: float | None = None,
    ) -> JobHandle:
        """Store a job durably, then schedule it; returns once it is stored.

        ``delay`` (seconds from now) or ``run_at`` (epoch seconds) defers it.
        ``cancel_token``: cancelling it cancels the job.  ``deadline`` (epoch
        seconds): the job is cancelled if still pending then, and a running
        attempt is told to stop.  Raises :class:`UnknownJobTypeError` before
        storing anything if no handler is registered, :class:`SerializationError`
        if ``args`` cannot be encoded, :class:`DuplicateJobError` if the id or
        the idempotency key is taken, ``ValueError``/``TypeError`` for bad values,
        and ``RunnerClosedError`` after shutdown."""
        spec = JobSpec(
            job_type, args, job_id, priority, delay, run_at, max_attempts, timeout, idempotency_key
        )
        if self._otel is None:
            job, due_ns = self._build(spec, self._clock.now_ns())
            self._insert([job])
        else:
            with self._otel.job_submit_span(
                job_type, job_id, tracer_provider=self._tracer_provider
            ):
                job, due_ns = self._build(spec, self._clock.now_ns())
                self._insert([job])
        return self._track(job, cancel_token, deadline, due_ns)

    def submit_many(self, specs: Sequence[JobSpec]) -> list[JobHandle]:
        """Store several jobs in one transaction (all or none), then schedule them."""
        now_ns = self._clock.now_ns()
        if not specs:
            return []
        if self._otel is None:
            built = [self._build(spec, now_ns) for spec in specs]
            self._insert([job for job, _ in built])
        else:
            with self._otel.job_submit_span(
                specs[0].job_type, None, tracer_provider=self._tracer_provider
            ):
                built = [self._build(spec, now_ns) for spec in specs]
                self._insert([job for job, _ in built])
        return [self._track(job, None, None, due_ns) for job, due_ns in built]

    def _build(self, spec: JobSpec, now_ns: int) -> tuple[Job, int]:
        """The job to store for ``spec`` at clock time ``now_ns``, and when it is due (ns)."""
        now = self._epoch(now_ns)
        if not isinstance(spec, JobSpec):
            raise TypeError(f"expected a JobSpec, got {type(spec).__name__}")
        with self._lock:
            if not self._accepting:
                raise RunnerClosedError("JobManager: submit after shutdown")
            known = spec.job_type in self._handlers
        if not known:
            raise UnknownJobTypeError(spec.job_type)
        if isinstance(spec.priority, bool) or not isinstance(spec.priority, int):
            raise TypeError("priority must be an int")
        if not MIN_PRIORITY <= spec.priority <= MAX_PRIORITY:
            raise ValueError(f"priority out of range: {spec.priority}")
        if spec.delay is not None and spec.run_at is not None:
            raise ValueError("give delay or run_at, not both")
        due, due_ns = now, now_ns
        if spec.delay is not None:
            if isinstance(spec.delay, bool) or not isinstance(spec.delay, (int, float)):
                raise TypeError("delay must be a number of seconds")
            if not math.isfinite(spec.delay) or spec.delay < 0:
                raise ValueError(f"delay must be a finite number >= 0, got {spec.delay}")
            due_ns = now_ns + round(spec.delay * 1e9)
            due = self._epoch(due_ns)
        elif spec.run_at is not None:
            due = spec.run_at
            due_ns = self._clock_ns(due)
        max_attempts = self._retry.max_attempts if spec.max_attempts is None else spec.max_attempts
        try:
            payload = self._serializer.dumps(spec.args)
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(
                f"arguments of job type {spec.job_type!r} cannot be encoded: {exc}"
            ) from exc
        job = new_job(
            spec.job_type,
            payload,
            now=now,
            id=spec.job_id,
            run_at=due,
            priority=spec.priority,
            max_attempts=max_attempts,
            timeout=spec.timeout,
            idempotency_key=spec.idempotency_key,
            trace_context=self._trace_carrier(),
        )
        return job, due_ns

    def _trace_carrier(self) -> dict[str, str] | None:
        """The current trace context to store with a new job (inside its submit span)."""
        if self._otel is None:
            return None
        carrier: dict[str, str] = self._otel.inject_context()
        return carrier or None

    def _insert(self, jobs: list[Job]) -> None:
        """Store ``jobs`` (one transaction), committed together with other
        submits waiting at the same time (group commit); waits for the ack."""
        future: Future[None] = Future()
        with self._lock:
            self._pending_inserts.append((jobs, future))
            post = not self._insert_flush_posted
            self._insert_flush_posted = True
        if post:
            self._io(self._flush_inserts, "insert", on_give_up=self._fail_pending_inserts)
        future.result()

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

    def _track(
        self, job: Job, cancel_token: CancelToken | None, deadline: float | None, due_ns: int
    ) -> JobHandle:
        future: Future[Any] = Future()
        with self._lock:
            self._futures[job.id] = future
            self._submit_contexts[job.id] = contextvars.copy_context()
            self._stats["submitted"] += 1
        handle = JobHandle(self, job.id, future)
        self._job_metric(job)
        if cancel_token is not None:
            cancel_token.on_cancel(lambda reason: self._cancel_quietly(job.id))
        if deadline is not None:
            wait_ns = self._clock_ns(deadline) - self._clock.now_ns()
            self._control._post_delayed_ns(self._deadline_passed, wait_ns, job.id)
        self._kick(due_ns)
        return handle

    # ---- dispatching -------------------------------------------------------------------------

    def _kick(self, at_ns: int | None = None) -> None:
        """Make the IO layer claim due jobs now, or at clock time ``at_ns``."""
        if at_ns is not None:
            wait_ns = at_ns - self._clock.now_ns()
            if wait_ns > 0:
                with contextlib.suppress(RunnerClosedError):
                    self._control._post_delayed_ns(self._kick, wait_ns)
                return
        with self._lock:
            if self._dispatch_posted or not self._claiming or not self._started:
                return
            self._dispatch_posted = True
        with contextlib.suppress(RunnerClosedError):
            self._io(self._dispatch, "claim_due")

    def _dispatch(self) -> None:
        """IO layer: claim as many due jobs as there is room for and start them."""
        with self._lock:
            self._dispatch_posted = False
            room = self._max_concurrent - len(self._active)
            claiming = self._claiming
        if room <= 0 or not claiming:
            return
        now = self.now()
        while True:
            try:
                jobs = self._store.claim_due(
                    self._owner, now, limit=room, lease_seconds=self._lease
                )
            except CorruptJobError as exc:
                self._fail_corrupt(exc, now)
                continue
            break
        for job in jobs:
            self._start_attempt(job)
        if len(jobs) == room:
            self._kick()  # there may be more due jobs than room: claim again when freed

    def _fail_corrupt(self, exc: CorruptJobError, now: float) -> None:
        log.error(
            "job %s cannot be decoded (%s): marked failed",
            exc.job_id,
            exc.problem,
            extra={"job_id": exc.job_id},
        )
        self._store.fail_corrupt(exc.job_id, now, exc.problem)
        with self._lock:
            self._stats["corrupt"] += 1
        self._resolve_from_store(exc.job_id)

    def _start_attempt(self, job: Job) -> None:
        """IO layer, for a job this manager just claimed."""
        with self._lock:
            entry = self._handlers.get(job.type)
            context = self._submit_contexts.get(job.id)
        if entry is None:
            self._write_failure(
                job, f"no handler registered for job type {job.type!r}", None, retry=False
            )
            return
        attempt = _Attempt(job, entry, CancelToken())
        attempt.context = context
        with self._lock:
            self._active[job.id] = attempt
        self._job_metric(job)
        try:
            self._control.post_task(self._arm_attempt, attempt)
            self._execution.post_task(
                self._execute,
                attempt,
                traits=_priority_traits(job.priority, entry.may_block),
                name=f"job:{job.type}",
            )
        except RunnerClosedError:
            attempt.token.cancel(ctxmod.SHUTDOWN)
            self._forget(job.id)

    def _arm_attempt(self, attempt: _Attempt) -> None:
        """Control layer: arm the attempt's timeout."""
        job = attempt.job
        if job.timeout is not None:
            token = attempt.token
            self._control.post_delayed_task(token.cancel, job.timeout, ctxmod.TIMEOUT)

    # ---- execution ---------------------------------------------------------------------------

    def _execute(self, attempt: _Attempt) -> None:
        """Execution layer: run the handler, then hand the outcome to the IO layer."""
        job = attempt.job
        logger = logging.LoggerAdapter(
            log, {"job_id": job.id, "job_type": job.type, "attempt": job.attempt}
        )
        deadline = None if job.timeout is None else self.now() + job.timeout
        ctx = JobContext(
            job.id, job.type, job.attempt, job.max_attempts, deadline, attempt.token, logger
        )
        outcome: tuple[str, Any, str | None]
        try:
            try:
                args = self._serializer.loads(job.args)
            except Exception as exc:
                raise SerializationError(f"cannot decode the job's arguments: {exc}") from exc
            attempt.token.raise_if_cancelled()
            value = self._call_handler(attempt, ctx, args)
        except BaseException as exc:
            outcome = ("error", exc, "".join(traceback.format_exception(exc)))
        else:
            outcome = ("ok", value, None)
        if outcome[0] == "ok" and self._batch_complete and attempt.token.reason is None:
            try:
                payload = self._serializer.dumps(outcome[1])
            except (TypeError, ValueError, OverflowError):
                pass  # _finish_attempt records the encoding failure
            else:
                self._queue_completion(attempt, payload, outcome[1])
                return
        try:
            self._io(
                lambda: self._finish_attempt(attempt, outcome),
                "finish",
                on_give_up=lambda exc: self._forget(job.id),
            )
        except RunnerClosedError:
            self._forget(job.id)

    def _call_handler(self, attempt: _Attempt, ctx: JobContext, args: Any) -> Any:
        """Run the handler in the submitter's context, inside an attempt span if traced."""
        fn = attempt.entry.fn
        if self._otel is not None:
            job = attempt.job
            span = self._otel.job_attempt_span(
                job.type,
                job.id,
                job.attempt,
                job.trace_context,
                tracer_provider=self._tracer_provider,
            )

            def traced(ctx: JobContext, args: Any) -> Any:
                with span:
                    return fn(ctx, args)

            run: Handler = traced
        else:
            run = fn
        if attempt.context is not None:
            return attempt.context.copy().run(run, ctx, args)
        return run(ctx, args)

    def _finish_attempt(self, attempt: _Attempt, outcome: tuple[str, Any, str | None]) -> None:
        """IO layer: record how the attempt ended."""
        job = attempt.job
        kind, value, tb = outcome
        reason = attempt.token.reason
        try:
            if reason == ctxmod.SHUTDOWN:
                return  # left RUNNING: recovered after its lease (see shutdown())
            if reason == ctxmod.LEASE_LOST:
                return  # someone else holds the job now
            if kind == "ok":
                try:
                    payload = self._serializer.dumps(value)
                except (TypeError, ValueError, OverflowError) as exc:
                    self._write_failure(job, f"result cannot be encoded: {exc}", None, retry=False)
                    return
                done = self._store.complete(
                    job.id, self._owner, self.now(), payload, attempt=job.attempt
                )
                self._job_metric(done, "succeeded")
                self._count("succeeded")
                self._resolve(done, value)
                return
            error: BaseException = value
            if isinstance(error, JobCancelled) or reason in (ctxmod.CANCELLED, ctxmod.DEADLINE):
                done = self._store.mark_cancelled(
                    job.id, self._owner, self.now(), reason or "cancelled", attempt=job.attempt
                )
                self._job_metric(done, "cancelled")
                self._count("cancelled")
                self._resolve(done, None)
                return
            policy = attempt.entry.retry or self._retry
            retry = (
                policy.should_retry(error)
                and not isinstance(error, SerializationError)
                and job.attempt < job.max_attempts
            )
            self._write_failure(
                job, f"{type(error).__name__}: {error}", tb, retry=retry, policy=policy
            )
        except LeaseLostError as exc:
            log.warning(
                "job %s: lease lost before its outcome was stored (%s)",
                job.id,
                exc,
                extra={"job_id": job.id, "attempt": job.attempt},
            )
        finally:
            self._forget(job.id)

    def _queue_completion(self, attempt: _Attempt, payload: bytes, value: Any) -> None:
        """Queue a successful attempt's outcome; the IO layer commits the queued
        ones together (one transaction, one fsync)."""
        with self._lock:
            self._pending_completions.append((attempt, payload, value))
            post = not self._completion_flush_posted
            self._completion_flush_posted = True
        if post:
            try:
                self._io(self._flush_completions, "complete", on_give_up=self._drop_completions)
            except RunnerClosedError:
                self._drop_completions(None)

    def _flush_completions(self) -> None:
        with self._lock:
            batch, self._pending_completions = self._pending_completions, []
            self._completion_flush_posted = False
        if not batch:
            return
        items = [(a.job.id, payload, a.job.attempt) for a, payload, _ in batch]
        try:
            results = self._store.complete_many(  # type: ignore[attr-defined]
                self._owner, self.now(), items
            )
        except StoreError:
            with self._lock:  # back to the front; the IO retry flushes them again
                self._pending_completions[:0] = batch
                self._completion_flush_posted = True
            raise
        for (attempt, _, value), done in zip(batch, results, strict=True):
            if isinstance(done, Job):
                self._job_metric(done, "succeeded")
                self._count("succeeded")
                self._resolve(done, value)
            else:
                log.warning(
                    "job %s: its outcome could not be stored (%s)",
                    attempt.job.id,
                    done,
                    extra={"job_id": attempt.job.id, "attempt": attempt.job.attempt},
                )
            self._forget(attempt.job.id)

    def _drop_completions(self, exc: BaseException | None) -> None:
        """The completion writes failed for good: forget the attempts (their
        leases expire unrenewed, and recovery retries them)."""
        with self._lock:
            batch, self._pending_completions = self._pending_completions, []
            self._completion_flush_posted = False
        for attempt, _, _ in batch:
            self._forget(attempt.job.id)

    def _write_failure(
        self,
        job: Job,
        error: str,
        tb: str | None,
        *,
        retry: bool,
        policy: RetryPolicy | None = None,
    ) -> None:
        now_ns = self._clock.now_ns()
        now = self._epoch(now_ns)
        retry_at = retry_ns = None
        if retry:
            retry_ns = now_ns + round((policy or self._retry).delay_for(job.attempt) * 1e9)
            retry_at = self._epoch(retry_ns)
        done = self._store.fail(
            job.id, self._owner, now, error, tb, retry_at=retry_at, attempt=job.attempt
        )
        timed_out = error.startswith(("JobTimeout", "TimeoutError"))
        if done.state is JobState.PENDING:
            self._job_metric(done, "timeout" if timed_out else "retrying")
        else:
            self._job_metric(done, "timeout" if timed_out else "failed")
        if done.state is JobState.PENDING:
            self._count("retried")
            log.info(
                "job %s attempt %d failed (%s); retry at +%.3fs",
                job.id,
                job.attempt,
                error,
                (retry_at or now) - now,
                extra={"job_id": job.id, "attempt": job.attempt},
            )
            due_ns = retry_ns if done.run_at == retry_at else None
            self._kick(self._clock_ns(done.run_at) if due_ns is None else due_ns)
        else:
            self._count("failed")
            log.warning(
                "job %s failed after %d attempt(s): %s",
                job.id,
                job.attempt,
                error,
                extra={"job_id": job.id, "attempt": job.attempt},
            )
            self._resolve(done, None)

    def _forget(self, job_id: str) -> None:
        with self._lock:
            self._active.pop(job_id, None)
            self._changed.notify_all()
        self._kick()

    def _job_metric(self, job: Job, outcome: str | None = None) -> None:
        """Report ``job``'s new state (and how its attempt ended) to the metrics."""
        metrics = self._metrics
        if metrics is None:
            return
        try:
            metrics.job_state_changed(job.type, job.state.value, job.attempt)
            if outcome is not None:
                attempt = self._active.get(job.id)
                seconds = 0.0 if attempt is None else time.monotonic() - attempt.started
                metrics.job_attempt_finished(job.type, job.attempt, outcome, seconds)
        except Exception:
            log.exception("a metrics hook failed for job %s", job.id, extra={"job_id": job.id})

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

    # ---- futures -----------------------------------------------------------------------------

    def _resolve(self, job: Job, value: Any) -> None:
        """Settle the local future of a job that reached a final state."""
        with self._lock:
            future = self._futures.pop(job.id, None)
            self._submit_contexts.pop(job.id, None)
        if future is None or future.done():
            return
        if job.state is JobState.SUCCEEDED:
            future.set_result(value)
        elif job.state is JobState.CANCELLED:
            future.set_exception(JobCancelled(f"job {job.id!r} was cancelled: {job.last_error}"))
        else:
            future.set_exception(JobFailedError(job))

    def _resolve_from_store(self, job_id: str) -> None:
        try:
            job = self._store.get(job_id)
        except (JobError, StoreError):
            return
        if job.is_final:
            value = None
            if job.state is JobState.SUCCEEDED and job.result is not None:
                try:
                    value = self._serializer.loads(job.result)
                except Exception:
                    value = None
            self._resolve(job, value)

    def result(self, job_id: str, timeout: float | None = None) -> Any:
        """Wait for a job to finish and return its decoded result.

        Raises :class:`JobFailedError` or :class:`JobCancelled` for a job that
        failed or was cancelled, ``TimeoutError`` when ``timeout`` runs out.
        Works for jobs finished by another process too (it polls the store)."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job.is_final:
                if job.state is JobState.SUCCEEDED:
                    return None if job.result is None else self._serializer.loads(job.result)
                if job.state is JobState.CANCELLED:
                    raise JobCancelled(f"job {job_id!r} was cancelled: {job.last_error}")
                raise JobFailedError(job)
            with self._lock:
                future = self._futures.get(job_id)
            remaining = None if end is None else end - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"job {job_id!r} did not finish in time")
            wait = self._poll if remaining is None else min(self._poll, remaining)
            if future is not None:
                try:
                    future.exception(wait)
                except TimeoutError:
                    pass
                except Exception:
                    pass
            else:
                time.sleep(min(wait, 0.05))

    # ---- cancellation, retry, deadlines ------------------------------------------------------

    def cancel(self, job_id: str) -> Job:
        """Cancel a job: a pending one becomes CANCELLED at once; a running one
        is asked to stop (its token is cancelled) and becomes CANCELLED when its
        handler stops.  Returns the job as stored after the request."""
        job = self._io(lambda: self._store.cancel(job_id, self.now()), "cancel").result()
        with self._lock:
            attempt = self._active.get(job_id)
        if attempt is not None:
            attempt.token.cancel(ctxmod.CANCELLED)
        if job.is_final:
            if job.state is JobState.CANCELLED and attempt is None:
                self._job_metric(job)
            self._resolve(job, None)
        return job

    def _cancel_quietly(self, job_id: str) -> None:
        try:
            self.cancel(job_id)
        except Exception:
            log.exception("cancelling job %s (its caller's token was cancelled) failed", job_id)

    def _deadline_passed(self, job_id: str) -> None:
        """Control layer: the submitter's deadline passed."""
        with self._lock:
            attempt = self._active.get(job_id)
        if attempt is not None:
            attempt.token.cancel(ctxmod.DEADLINE)
            return

        def cancel_if_pending() -> None:
            job = self._store.get(job_id)
            if job.state is JobState.PENDING:
                done = self._store.cancel(job_id, self.now(), ctxmod.DEADLINE)
                self._resolve(done, None)

        self._io(cancel_if_pending, "deadline")

    def retry(self, job_id: str, *, delay: float = 0.0) -> JobHandle:
        """Run a FAILED or CANCELLED job again (attempts start over)."""
        run_ns = self._clock.now_ns() + round(delay * 1e9)
        run_at = self._epoch(run_ns)
        job = self._io(lambda: self._store.retry(job_id, self.now(), run_at), "retry").result()
        future: Future[Any] = Future()
        with self._lock:
            self._futures[job.id] = future
        self._kick(run_ns if job.run_at == run_at else self._clock_ns(job.run_at))
        return JobHandle(self, job.id, future)

    # ---- heartbeat, polling, recovery --------------------------------------------------------

    def _heartbeat(self) -> None:
        """IO layer: renew our leases; stop attempts that lost theirs or were cancelled."""
        with self._lock:
            ids = list(self._active)
        if not ids:
            return
        renewal = self._store.renew_leases(self._owner, ids, self.now(), lease_seconds=self._lease)
        with self._lock:
            attempts = {i: self._active.get(i) for i in ids}
        for job_id, attempt in attempts.items():
            if attempt is None:
                continue
            if job_id not in renewal.held:
                attempt.token.cancel(ctxmod.LEASE_LOST)
            elif job_id in renewal.cancel_requested:
                attempt.token.cancel(ctxmod.CANCELLED)

    def _poll_store(self) -> None:
        """IO layer: recover dead owners' jobs and claim what others submitted."""
        self._recover()
        with self._lock:
            self._dispatch_posted = True
        self._dispatch()

    def _recover(self) -> None:
        recovered = self._store.recover_expired(self.now())
        if recovered:
            self._count("recovered", len(recovered))
            for job in recovered:
                self._job_metric(job, "interrupted")
                log.warning(
                    "job %s recovered from a dead owner: now %s",
                    job.id,
                    job.state,
                    extra={"job_id": job.id, "attempt": job.attempt},
                )
                if job.is_final:
                    self._resolve(job, None)

    # ---- queries -----------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        """The job as stored now (:class:`UnknownJobError` if none)."""
        return self._read(lambda: self._store.get(job_id), "get")

    def list(
        self,
        *,
        status: Iterable[JobState | str] | JobState | str | None = None,
        type: Iterable[str] | str | None = None,
        since: float | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> JobPage:
        """A page of jobs in creation order; pass ``page.next_cursor`` as ``cursor``."""
        states = [status] if isinstance(status, (str, JobState)) else status
        types = [type] if isinstance(type, str) else type
        return self._read(
            lambda: self._store.list_jobs(
                states=states, types=types, since=since, limit=limit, after=cursor
            ),
            "list",
        )

    def stats(self) -> dict[str, Any]:
        with self._lock:
            stats: dict[str, Any] = dict(self._stats)
            stats["active"] = len(self._active)
        stats["owner"] = self._owner
        return stats
