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

Modules: this one is the public API (handlers, lifecycle, submit, cancel,
queries); :mod:`~taskrunner.jobs.attempts` claims, runs and finishes attempts;
:mod:`~taskrunner.jobs.manager_core` is the IO layer and the shared state;
:mod:`~taskrunner.jobs.registry` holds what may change at run time (handlers,
the retry policy);
:mod:`~taskrunner.jobs.handles` holds the value types.

Durability, at-least-once, fencing
----------------------------------
``submit`` returns once the job is stored (the durable ack: SQLite commits
with ``synchronous=FULL`` by default).  Concurrent submits are committed
together (group commit) when they arrive while a commit is running.
Duplicates are refused by the store's unique constraints, so they hold across
threads, processes and restarts.  A job runs only after this process *claimed*
it in the store (an atomic claim that records the owner and a lease), so two
managers sharing a store never run the same attempt; the lease is renewed by a
heartbeat while the handler runs, and a job whose owner died is recovered by
any live manager once the lease expires (retried if attempts remain, else
FAILED with reason "interrupted").  Jobs therefore run at least once, not
exactly once: an attempt whose lease ran out while it still ran (its process
paused, the store away for longer than the lease) is fenced -- running
attempts are keyed by ``(job, attempt)``, the store takes renewals and
outcomes only for the attempt it holds, and a late outcome is dropped, logged
and counted (``stats()["stale"]``).  A claim whose commit outcome was lost is
resolved by adopting what the store says this manager holds
(``stats()["adopted"]``).  A manager claims only the job types it has
handlers for.

Time
----
Job times are epoch seconds derived from the pool's clock (a monotonic clock
anchored to ``time.time()`` at construction), so under
``taskrunner.testing.TaskEnvironment`` delays, retries, timeouts and leases
all run on mock time.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from datetime import timedelta
from typing import Any

from taskrunner.errors import RunnerClosedError
from taskrunner.jobs import context as ctxmod
from taskrunner.jobs import unique
from taskrunner.jobs.building import JobBuilding, check_manager_arguments
from taskrunner.jobs.context import CancelToken
from taskrunner.jobs.errors import DuplicateJobError, JobCancelled
from taskrunner.jobs.handles import (
    JobFailedError,
    JobHandle,
    JobSpec,
    JSONSerializer,
    SerializationError,
    Serializer,
    StoreErrorHandler,
    default_owner,
)
from taskrunner.jobs.manager_queues import QueueMixin, queue_limits
from taskrunner.jobs.model import Job, check_time
from taskrunner.jobs.queues import DEFAULT_QUEUE
from taskrunner.jobs.registry import Registry
from taskrunner.jobs.retry import RetryPolicy
from taskrunner.jobs.scheduling import Scheduling
from taskrunner.jobs.states import JobState
from taskrunner.jobs.stores.store import BatchCompletion, JobPage, JobStore
from taskrunner.runtime.pool import ThreadPool
from taskrunner.runtime.pool.checks import shutdown_timeout
from taskrunner.runtime.runner import TaskRunner
from taskrunner.runtime.runners.sequenced import SequencedTaskRunner
from taskrunner.runtime.traits import TaskPriority, TaskTraits
from taskrunner.runtime.waits import check_wait_timeout

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


class JobManager(Registry, QueueMixin, Scheduling, JobBuilding):
    """Durable jobs: submit, run with retries, cancel, recover.  Thread-safe.

    ``store`` is a :class:`JobStore` (``SQLiteJobStore`` is the embedded
    default).  ``pool`` runs the layers (a pool of its own, shut down with the
    manager, when None).  ``retry_policy`` decides which failures retry and
    after what delay (the job's ``max_attempts`` caps the count);
    ``store_retry`` does the same for failed store writes.  ``owner`` names
    this manager in the store's leases (unique per process by default).
    ``queues`` maps each queue it consumes to its concurrency limit (default
    ``{"default": max_concurrent}``, 64); give one or the other.
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
        max_concurrent: int | None = None,
        queues: Mapping[str, int] | None = None,
        error_handler: StoreErrorHandler | None = None,
    ) -> None:
        check_manager_arguments(
            store,
            pool,
            execution,
            serializer,
            (("retry_policy", retry_policy), ("store_retry", store_retry)),
            (("lease_seconds", lease_seconds), ("poll_interval", poll_interval)),
        )
        self._queue_limits = queue_limits(queues, max_concurrent)
        self._store = store
        self._batch_complete = isinstance(store, BatchCompletion)
        self._own_pool = pool is None
        self._pool = pool if pool is not None else ThreadPool(name="jobs")
        self._owner = owner or default_owner()
        self._serializer: Serializer = serializer or JSONSerializer()
        self._retry = retry_policy or RetryPolicy()
        self._store_retry = store_retry or RetryPolicy(
            max_attempts=8, initial_delay=0.05, ratio=2.0, max_delay=5.0, jitter=0.2
        )
        self._lease = float(lease_seconds)
        self._poll = float(poll_interval)
        self._max_concurrent = sum(self._queue_limits.values())
        self._error_handler = error_handler
        # Observability: the pool's metrics sink and, if the pool traces with
        # OpenTelemetry, spans for submits and attempts (the submit's context is
        # stored with the job, so a retry after a restart still links to it).
        self._metrics = self._pool.metrics
        self._otel: Any = None
        tracer = self._pool.tracer
        if tracer is not None and type(tracer).__name__ == "OtelTracer":
            from taskrunner.integrations import otel

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
        self._handlers = {}
        self._active = {}
        self._futures = {}
        self._submit_contexts = {}
        self._pending_inserts = []
        self._pending_completions = []
        self._completion_flush_posted = False
        self._insert_flush_posted = False
        self._dispatch_posted = False
        self._claim_unknown = False
        self._abandoned = set()
        self._started = False
        self._accepting = True
        self._claiming = True
        self._repeating = []
        self._unsubscribe = None  # store wake-ups (see start)
        self._stats = {
            "submitted": 0,
            "succeeded": 0,
            "failed": 0,
            "retried": 0,
            "snoozed": 0,
            "cancelled": 0,
            "recovered": 0,
            "stale": 0,
            "adopted": 0,
            "store_retries": 0,
            "corrupt": 0,
        }

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def store(self) -> JobStore:
        return self._store

    @property
    def pool(self) -> ThreadPool:
        return self._pool

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
        self._start_schedules()  # periodic schedules (scheduling.py)
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
        timeout = shutdown_timeout(timeout)
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
        store_timeout: float | None = None,
        connection: object = None,
        queue: str = DEFAULT_QUEUE,
        unique_for: timedelta | float | None = None,
        unique_by: Sequence[str] = unique.DEFAULT_UNIQUE_BY,
        on_duplicate: str = "raise",
    ) -> JobHandle:
        """Store a job durably, then schedule it; returns once it is stored.

        ``queue`` names its queue (any manager consuming it may run it).
        ``connection``: the application's open ``sqlite3``/psycopg connection to
        the store's database; the job is inserted in its transaction, uncommitted,
        and runs only once the caller commits (README "Transactional enqueue").

        ``delay`` (seconds from now) or ``run_at`` (epoch seconds) defers it.
        ``cancel_token``: cancelling it cancels the job.  ``deadline`` (epoch
        seconds): the job is cancelled if still pending then, and a running
        attempt is told to stop.  Raises :class:`UnknownJobTypeError` before
        storing anything if no handler is registered, :class:`SerializationError`
        if ``args`` cannot be encoded, :class:`DuplicateJobError` if the id or
        the idempotency key is taken, ``ValueError``/``TypeError`` for bad values,
        and ``RunnerClosedError`` after shutdown.

        ``store_timeout`` (seconds, real time) bounds the wait for the durable
        write: if the job is not stored by then because the write is still
        queued or waiting to retry a failed attempt, the submit is withdrawn,
        nothing is stored and :class:`SubmitTimeoutError` is raised.  A write
        already in progress at that moment is waited for (if it lands, the
        submit succeeds).

        ``unique_for`` (a timedelta or seconds) makes the job unique over the
        fields ``unique_by`` for that long from now (:mod:`~taskrunner.jobs.unique`):
        a duplicate within the window is refused by the store's constraint, in
        any process, with :class:`DuplicateJobError` naming the existing job;
        ``on_duplicate="return"`` returns the existing job's handle instead (for
        a taken id or idempotency key too)."""
        if store_timeout is not None and (
            isinstance(store_timeout, bool)
            or not isinstance(store_timeout, (int, float))
            or not math.isfinite(store_timeout)
            or store_timeout <= 0
        ):
            raise ValueError(
                f"store_timeout must be a number of seconds > 0, got {store_timeout!r}"
            )
        on_duplicate = unique.check_on_duplicate(on_duplicate)
        # Checked before anything is stored: _track uses them after the write.
        if deadline is not None:
            deadline = check_time("deadline", deadline)
        if cancel_token is not None and not isinstance(cancel_token, CancelToken):
            raise TypeError(
                f"cancel_token must be a CancelToken or None, not {type(cancel_token).__name__}"
            )
        spec = JobSpec(
            job_type,
            args,
            job_id,
            priority,
            delay,
            run_at,
            max_attempts,
            timeout,
            idempotency_key,
            queue=queue,
            unique_for=unique_for,
            unique_by=unique.check_unique_by(unique_by),
        )
        try:
            if self._otel is None:
                job, due_ns = self._build(spec, self._clock.now_ns())
                (future,) = self._store_new([job], store_timeout, connection)
            else:
                with self._otel.job_submit_span(
                    job_type, job_id, tracer_provider=self._tracer_provider
                ):
                    job, due_ns = self._build(spec, self._clock.now_ns())
                    (future,) = self._store_new([job], store_timeout, connection)
        except DuplicateJobError as exc:
            return unique.duplicate_handle(self, exc, on_duplicate)
        return self._track(job, future, cancel_token, deadline, due_ns)

    def submit_many(self, specs: Sequence[JobSpec]) -> list[JobHandle]:
        """Store several jobs in one transaction (all or none), then schedule them."""
        now_ns = self._clock.now_ns()
        if not specs:
            return []
        if self._otel is None:
            built = [self._build(spec, now_ns) for spec in specs]
            futures = self._store_new([job for job, _ in built])
        else:
            with self._otel.job_submit_span(
                specs[0].job_type, None, tracer_provider=self._tracer_provider
            ):
                built = [self._build(spec, now_ns) for spec in specs]
                futures = self._store_new([job for job, _ in built])
        return [
            self._track(job, future, None, None, due_ns)
            for (job, due_ns), future in zip(built, futures, strict=True)
        ]

    def _track(
        self,
        job: Job,
        future: Future[Any],
        cancel_token: CancelToken | None,
        deadline: float | None,
        due_ns: int,
    ) -> JobHandle:
        """The stored job's handle; its cancel token, deadline and first run armed."""
        with self._lock:
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

    def result(self, job_id: str, timeout: float | None = None) -> Any:
        """Wait for a job to finish and return its decoded result.

        Raises :class:`JobFailedError` or :class:`JobCancelled` for a job that
        failed or was cancelled, ``TimeoutError`` when ``timeout`` runs out.
        Works for jobs finished by another process too (it polls the store)."""
        timeout = check_wait_timeout(timeout)
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
        """Cancel a job; returns the job as stored after the request.

        A pending job becomes CANCELLED at once; a final one is left as it is.
        A running one is asked to stop: the request is stored
        (``cancel_requested``, seen by its owner's heartbeat in any process)
        and its attempt's token is cancelled.  How the attempt ends decides the
        state: if the handler stops by raising (``ctx.check()`` raises
        :class:`JobCancelled`; any error counts), the job becomes CANCELLED and
        is not retried; if the handler ignores the request and returns, the
        work was done and the job becomes SUCCEEDED with its result.  Either
        way the stored job keeps ``cancel_requested=True``."""
        job = self._io(lambda: self._store.cancel(job_id, self.now()), "cancel").result()
        running = self._running(job_id)
        for attempt in running:
            attempt.token.cancel(ctxmod.CANCELLED)
        if job.is_final:
            if job.state is JobState.CANCELLED and not running:
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
        running = self._running(job_id)
        for attempt in running:
            attempt.token.cancel(ctxmod.DEADLINE)
        if running:
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
        (future,), registered = self._expect([job_id])  # before the write: it may run at once
        try:
            job = self._io(lambda: self._store.retry(job_id, self.now(), run_at), "retry").result()
        except BaseException:
            self._unexpect(registered)
            raise
        self._kick(run_ns if job.run_at == run_at else self._clock_ns(job.run_at))
        return JobHandle(self, job.id, future)

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
        """Counters since construction: ``submitted``, ``succeeded``, ``failed``,
        ``retried``, ``snoozed`` (attempts that returned ``Snooze``), ``cancelled``,
        ``recovered`` (dead owners' jobs taken back),
        ``stale`` (late outcomes of fenced attempts, dropped), ``adopted`` (jobs
        claimed by a commit whose outcome was lost, run once found), ``store_retries``,
        ``corrupt``; ``active`` attempts now and this manager's ``owner``."""
        with self._lock:
            stats: dict[str, Any] = dict(self._stats)
            stats["active"] = len(self._active)
        stats["owner"] = self._owner
        return stats
