"""The job manager's attempts: claiming, running, finishing, renewing, recovering.

:class:`Attempts` is the part of :class:`~taskrunner.jobs.manager.JobManager`
that turns claimed jobs into running attempts and their outcomes into store
writes.  Which layer runs each method is in its docstring: the IO layer (the
sequenced IO runner: claims, heartbeats, recovery, outcome writes), the control
layer (timeouts), or the execution layer (the handler).  The in-memory tables
are guarded by ``_lock`` (see :class:`~taskrunner.jobs.manager_core.ManagerCore`).
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from typing import Any

from taskrunner.errors import RunnerClosedError
from taskrunner.jobs import context as ctxmod
from taskrunner.jobs.context import CancelToken, JobContext
from taskrunner.jobs.errors import (
    CorruptJobError,
    JobCancelled,
    JobError,
    LeaseLostError,
    StoreError,
)
from taskrunner.jobs.handles import (
    Handler,
    JobFailedError,
    RunningAttempt,
    SerializationError,
    priority_traits,
)
from taskrunner.jobs.manager_core import ManagerCore
from taskrunner.jobs.model import Job
from taskrunner.jobs.outcomes import Cancel, Snooze
from taskrunner.jobs.queues import claim_room, filled
from taskrunner.jobs.retry import RetryPolicy
from taskrunner.jobs.states import JobState
from taskrunner.jobs.stores.store import MAX_PAGE_SIZE

__all__ = ["Attempts"]

log = logging.getLogger("taskrunner.jobs")


class Attempts(ManagerCore):
    """Dispatch, execution and outcomes of attempts (mixed into ``JobManager``)."""

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
        """IO layer: claim as many due jobs as there is room for and start them.

        Only jobs of the types this manager has handlers for, in the queues it
        consumes and not paused, each up to its room, are claimed (in the
        store's query), so managers with different handlers or queues can share
        a store; a job that no running manager takes stays pending."""
        with self._lock:
            unknown = self._claim_unknown
        if unknown:
            self._adopt_held()
        with self._lock:
            self._dispatch_posted = False
            busy = (attempt.job.queue for attempt in self._active.values())
            room_by_queue = claim_room(self._queue_limits, busy)
            room = sum(room_by_queue.values())
            claiming = self._claiming
            types = frozenset(self._handlers)
        if room <= 0 or not claiming or not types:
            return
        now = self.now()
        while True:
            try:
                jobs = self._store.claim_due(
                    self._owner,
                    now,
                    limit=room,
                    lease_seconds=self._lease,
                    types=types,
                    queues=room_by_queue,
                )
            except CorruptJobError as exc:
                self._fail_corrupt(exc, now)
                continue
            except StoreError:
                # The claim may have committed though we saw an error (a connection
                # lost during COMMIT): before claiming again, find what we hold.
                with self._lock:
                    self._claim_unknown = True
                raise
            break
        for job in jobs:
            self._start_attempt(job)
        if filled(jobs, room_by_queue):
            self._kick()  # there may be more due jobs than room: claim again when freed

    def _adopt_held(self) -> None:
        """IO layer, after a claim whose outcome is unknown: start at once the jobs
        the store says this manager holds but that do not run here.

        Without this, a claim that committed unseen would leave its jobs RUNNING
        under a live owner that does not know it has them, until their lease ran
        out and recovery counted an attempt that never ran.  Attempts whose
        outcome write was given up (``_abandoned``) are not run again: their
        leases expire and recovery retries them, as documented."""
        held: list[Job] = []
        cursor: str | None = None
        while True:
            page = self._store.list_jobs(
                states=[JobState.RUNNING], limit=MAX_PAGE_SIZE, after=cursor
            )
            held.extend(job for job in page.jobs if job.owner == self._owner)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        keys = {(job.id, job.attempt) for job in held}
        with self._lock:
            self._abandoned &= keys  # forget the ones no longer held
            orphans = [
                job
                for job in held
                if (job.id, job.attempt) not in self._active
                and (job.id, job.attempt) not in self._abandoned
            ]
        if orphans:
            self._take_up(orphans)
        with self._lock:  # only now: a StoreError above leaves it set, to try again
            self._claim_unknown = False

    def _take_up(self, orphans: list[Job]) -> None:
        """Renew the leases of ``orphans`` (jobs we hold unknowingly) and run them."""
        # Renew their leases first (they may have run out while the store was
        # away): a job renewed here is ours to run; one not renewed was taken back.
        renewal = self._store.renew_leases(
            self._owner,
            [job.id for job in orphans],
            self.now(),
            lease_seconds=self._lease,
            attempts={job.id: job.attempt for job in orphans},
        )
        for job in orphans:
            if job.id not in renewal.held:
                continue
            log.warning(
                "job %s attempt %d: claimed by a commit whose outcome was lost; running it now",
                job.id,
                job.attempt,
                extra={"job_id": job.id, "attempt": job.attempt},
            )
            self._count("adopted")
            self._start_attempt(job)

    def _abandon(self, attempt: RunningAttempt) -> None:
        """The outcome write of ``attempt`` was given up: it stays RUNNING in the
        store until its lease expires; never run it again here."""
        with self._lock:
            self._abandoned.add((attempt.job.id, attempt.job.attempt))
        self._forget(attempt)

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
        attempt = RunningAttempt(job, entry, CancelToken())
        attempt.context = context
        with self._lock:
            # An older attempt of this job still running here lost its lease (the
            # store gave the job out again): it is fenced, and told to stop.
            stale = [a for (i, _), a in self._active.items() if i == job.id]
            self._active[job.id, job.attempt] = attempt
        for old in stale:
            old.token.cancel(ctxmod.LEASE_LOST)
        self._job_metric(job)
        try:
            self._control.post_task(self._arm_attempt, attempt)
            self._execution.post_task(
                self._execute,
                attempt,
                traits=priority_traits(job.priority, entry.may_block),
                name=f"job:{job.type}",
            )
        except RunnerClosedError:
            attempt.token.cancel(ctxmod.SHUTDOWN)
            self._forget(attempt)

    def _arm_attempt(self, attempt: RunningAttempt) -> None:
        """Control layer: arm the attempt's timeout."""
        job = attempt.job
        if job.timeout is not None:
            token = attempt.token
            self._control.post_delayed_task(token.cancel, job.timeout, ctxmod.TIMEOUT)

    # ---- execution ---------------------------------------------------------------------------

    def _execute(self, attempt: RunningAttempt) -> None:
        """Execution layer: run the handler, then hand the outcome to the IO layer."""
        job = attempt.job
        logger = logging.LoggerAdapter(
            log, {"job_id": job.id, "job_type": job.type, "attempt": job.attempt}
        )
        deadline = None if job.timeout is None else self.now() + job.timeout
        fields = (job.id, job.type, job.attempt, job.max_attempts, deadline)
        ctx = JobContext(*fields, attempt.token, logger, job.queue)
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
        if (
            outcome[0] == "ok"
            and self._batch_complete
            and attempt.token.reason is None
            and not isinstance(outcome[1], Snooze)
        ):
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
                on_give_up=lambda exc: self._abandon(attempt),
            )
        except RunnerClosedError:
            self._forget(attempt)

    def _call_handler(self, attempt: RunningAttempt, ctx: JobContext, args: Any) -> Any:
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

    def _finish_attempt(
        self, attempt: RunningAttempt, outcome: tuple[str, Any, str | None]
    ) -> None:
        """IO layer: record how the attempt ended."""
        job = attempt.job
        kind, value, tb = outcome
        reason = attempt.token.reason
        try:
            if reason == ctxmod.SHUTDOWN:
                return  # left RUNNING: recovered after its lease (see shutdown())
            if reason == ctxmod.LEASE_LOST:
                self._stale(attempt, "its lease was lost while it ran")
                return  # the job was given out again: this attempt is fenced
            if kind == "ok" and isinstance(value, Snooze):
                self._write_snooze(job, value)
                return
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
                why = error.reason if isinstance(error, Cancel) else reason or "cancelled"
                done = self._store.mark_cancelled(
                    job.id, self._owner, self.now(), why, attempt=job.attempt
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
            if not self._outcome_landed(attempt):
                self._stale(attempt, str(exc))
        finally:
            self._forget(attempt)

    def _queue_completion(self, attempt: RunningAttempt, payload: bytes, value: Any) -> None:
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
            elif isinstance(done, LeaseLostError):
                if not self._outcome_landed(attempt):
                    self._stale(attempt, str(done))
            else:
                log.warning(
                    "job %s: its outcome could not be stored (%s)",
                    attempt.job.id,
                    done,
                    extra={"job_id": attempt.job.id, "attempt": attempt.job.attempt},
                )
            self._forget(attempt)

    def _drop_completions(self, exc: BaseException | None) -> None:
        """The completion writes failed for good: forget the attempts (their
        leases expire unrenewed, and recovery retries them)."""
        with self._lock:
            batch, self._pending_completions = self._pending_completions, []
            self._completion_flush_posted = False
        for attempt, _, _ in batch:
            self._abandon(attempt)

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
        if done.state is JobState.CANCELLED:  # its cancel was requested (store rule)
            self._job_metric(done, "cancelled")
            self._count("cancelled")
            self._resolve(done, None)
            return
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

    def _write_snooze(self, job: Job, snooze: Snooze) -> None:
        """IO layer: the handler returned ``Snooze``: the job sleeps, its attempt
        uncounted, or is cancelled if that was requested (store rule)."""
        now_ns = self._clock.now_ns()
        due_ns = now_ns + round(snooze.seconds * 1e9)
        done = self._store.snooze(
            job.id, self._owner, self._epoch(now_ns), self._epoch(due_ns), attempt=job.attempt
        )
        if done.state is JobState.CANCELLED:
            self._job_metric(done, "cancelled")
            self._count("cancelled")
            self._resolve(done, None)
            return
        self._job_metric(done, "snoozed", attempt=job.attempt)
        self._count("snoozed")
        self._kick(due_ns)

    def _outcome_landed(self, attempt: RunningAttempt) -> bool:
        """IO layer, after a finish was refused: True if the refusal met this
        attempt's own outcome, written by an earlier try whose commit was
        acknowledged with an error.  The job is then final on this attempt and
        not by recovery (which records "interrupted"); its future is settled."""
        try:
            job = self._store.get(attempt.job.id)
        except (JobError, StoreError):
            return False
        if job.attempt != attempt.job.attempt or not job.is_final:
            return False
        if job.last_error == "interrupted" and job.state is not JobState.SUCCEEDED:
            return False
        self._resolve_from_store(job.id)
        return True

    def _running(self, job_id: str) -> list[RunningAttempt]:
        """The attempts of ``job_id`` running here (more than one only while an
        older one, fenced, has not stopped yet)."""
        with self._lock:
            return [a for (i, _), a in self._active.items() if i == job_id]

    def _forget(self, attempt: RunningAttempt) -> None:
        """This attempt is over here: drop it (only it: a newer attempt of the same
        job, reclaimed by this manager, keeps its entry)."""
        key = (attempt.job.id, attempt.job.attempt)
        with self._lock:
            if self._active.get(key) is attempt:
                del self._active[key]
            self._changed.notify_all()
        self._kick()

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

    # ---- heartbeat, polling, recovery --------------------------------------------------------

    def _heartbeat(self) -> None:
        """IO layer: renew our leases; stop attempts that lost theirs or were cancelled.

        Leases are renewed per (job, attempt): only the newest attempt of a job
        running here can hold it; an older one (the job was reclaimed after its
        lease ran out) is told its lease is lost."""
        with self._lock:
            running = list(self._active.items())
        if not running:
            return
        newest: dict[str, int] = {}
        for (job_id, number), _ in running:
            newest[job_id] = max(number, newest.get(job_id, 0))
        renewal = self._store.renew_leases(
            self._owner, list(newest), self.now(), lease_seconds=self._lease, attempts=newest
        )
        for (job_id, number), attempt in running:
            if job_id not in renewal.held or newest[job_id] != number:
                attempt.token.cancel(ctxmod.LEASE_LOST)
            elif job_id in renewal.cancel_requested:
                attempt.token.cancel(ctxmod.CANCELLED)

    def _poll_store(self) -> None:
        """IO layer: recover dead owners' jobs and claim what others submitted.

        After a claim whose outcome is unknown, first take up what we hold, so
        that our own recovery does not take back a job we merely did not know
        we had (its lease may have run out while the store was away)."""
        with self._lock:
            unknown = self._claim_unknown
        if unknown:
            self._adopt_held()
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
