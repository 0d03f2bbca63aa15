"""The argument checks and the per-job rules every job store applies.

The stores (:mod:`~taskrunner.jobs.stores.memory_store`,
:mod:`~taskrunner.jobs.stores.sqlite_store`, :mod:`~taskrunner.jobs.stores.postgres_store`)
share these so that the rules of the :class:`~taskrunner.jobs.stores.store.JobStore`
contract live in one place: a store's own work is to choose the jobs (in SQL,
or in memory) and to write the results atomically.

* The ``check_*`` functions validate one argument of a store method and
  return it normalised, or raise ``TypeError``/``ValueError`` naming it.
* The ``after_*`` functions compute what one operation does to one job: each
  takes the job as stored and returns it as it must be stored afterwards, or
  raises (:class:`~taskrunner.jobs.errors.LeaseLostError`,
  :class:`~taskrunner.jobs.errors.IllegalTransitionError`), changing nothing.
  They never read a clock and hold no state: pure functions, safe from any
  thread.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence

from taskrunner.jobs.errors import (
    CorruptJobError,
    IllegalTransitionError,
    JobError,
    LeaseLostError,
    UnknownJobError,
)
from taskrunner.jobs.model import (
    Job,
    check_duration,
    check_int,
    check_name,
    check_time,
)
from taskrunner.jobs.states import (
    FINAL_STATES,
    JobState,
    check_transition,
    parse_state,
)

#: One item of ``complete_many``: ``(job_id, result, attempt)``.
Completion = tuple[str, "bytes | None", "int | None"]


def check_completions(items: object) -> list[tuple[str, bytes | None, int | None]]:
    """Validate the items of ``complete_many`` (see :class:`BatchCompletion`)."""
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise TypeError("items must be a sequence of (job_id, result, attempt) tuples")
    out = []
    for item in items:
        if not isinstance(item, tuple) or len(item) != 3:
            raise TypeError(f"each item must be a (job_id, result, attempt) tuple, got {item!r}")
        job_id, result, attempt = item
        out.append((check_job_id(job_id), check_result(result), check_attempt(attempt)))
    return out


# ---------------------------------------------------------------- argument checks


def check_owner(owner: object) -> str:
    return check_name("owner", owner)


def check_job_id(job_id: object) -> str:
    return check_name("job_id", job_id)


def check_now(now: object) -> float:
    return check_time("now", now)


def check_lease(lease_seconds: object) -> float:
    return check_duration("lease_seconds", lease_seconds)


def check_limit(limit: object, *, high: int | None = None) -> int:
    return check_int("limit", limit, low=1, high=high)


def check_attempt(attempt: object) -> int | None:
    return None if attempt is None else check_int("attempt", attempt, low=1)


def check_text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    return value


def check_optional_text(name: str, value: object) -> str | None:
    return None if value is None else check_text(name, value)


def check_result(result: object) -> bytes | None:
    if result is not None and not isinstance(result, bytes):
        raise TypeError(
            f"result must be bytes (an encoded payload) or None, got {type(result).__name__}"
        )
    return result


def check_new_job(job: object) -> Job:
    """``job`` is a :class:`Job` fit for insertion (new, pending, unowned)."""
    if not isinstance(job, Job):
        raise TypeError(f"expected a Job, got {type(job).__name__}")
    if (
        job.state is not JobState.PENDING
        or job.owner is not None
        or job.result is not None
        or job.finished_at is not None
    ):
        raise ValueError(
            f"job {job.id!r}: insert takes a new pending job with no owner, result or "
            f"finish time (got state {job.state})"
        )
    return job


def check_filters(
    states: Iterable[JobState | str] | None,
    types: Iterable[str] | None,
    since: float | None,
) -> tuple[frozenset[JobState] | None, frozenset[str] | None, float | None]:
    """Normalise :meth:`JobStore.list_jobs` filters (``None`` means no filter)."""
    if isinstance(states, str):
        raise TypeError("states must be a collection of states, not one str")
    if isinstance(types, str):
        raise TypeError("types must be a collection of type names, not one str")
    state_set = None if states is None else frozenset(parse_state(s) for s in states)
    type_set = None if types is None else frozenset(check_name("types item", t) for t in types)
    since_f = None if since is None else check_time("since", since)
    return state_set, type_set, since_f


def check_types(types: object) -> frozenset[str] | None:
    """Normalise ``claim_due``'s ``types`` (``None``: every type)."""
    _, type_set, _ = check_filters(None, types, None)  # type: ignore[arg-type]
    return type_set


def encode_cursor(job: Job) -> str:
    """The cursor that resumes a listing after ``job`` (opaque to callers)."""
    return f"{job.created_at!r}:{job.id}"


def decode_cursor(cursor: object) -> tuple[float, str]:
    """``(created_at, id)`` from :func:`encode_cursor`; ``ValueError`` if malformed."""
    if not isinstance(cursor, str):
        raise TypeError(f"after must be a cursor string, got {type(cursor).__name__}")
    stamp, sep, job_id = cursor.partition(":")
    try:
        created_at = check_time("cursor", float(stamp))
    except (TypeError, ValueError):
        created_at = None
    if not sep or not job_id or created_at is None:
        raise ValueError(f"invalid cursor {cursor!r}")
    return created_at, job_id


def claim_order_key(job: Job) -> tuple[int, float, float, str]:
    """Sort key of the claim order: priority (high first), run_at, created_at, id."""
    return (-job.priority, job.run_at, job.created_at, job.id)


def list_order_key(job: Job) -> tuple[float, str]:
    """Sort key of the listing order."""
    return (job.created_at, job.id)


def matches(
    job: Job,
    states: frozenset[JobState] | None,
    types: frozenset[str] | None,
    since: float | None,
) -> bool:
    """True if ``job`` passes normalised listing filters."""
    return (
        (states is None or job.state in states)
        and (types is None or job.type in types)
        and (since is None or job.created_at >= since)
    )


# ---------------------------------------------------------------- per-job rules
# Each takes the job as stored and returns it as it must be stored afterwards
# (or raises, changing nothing).  They never read a clock.


def is_due(job: Job, now: float) -> bool:
    return job.state is JobState.PENDING and job.run_at <= now


def check_attempts(attempts: object) -> dict[str, int] | None:
    """Validate ``renew_leases``'s ``attempts``: a mapping of job id to attempt (or None)."""
    if attempts is None:
        return None
    if not isinstance(attempts, Mapping):
        raise TypeError(f"attempts must be a mapping of job id to attempt, not {attempts!r}")
    checked: dict[str, int] = {}
    for job_id, attempt in attempts.items():
        number = check_attempt(attempt)
        if number is None:
            raise TypeError(f"attempts[{job_id!r}] must be an int, not None")
        checked[check_job_id(job_id)] = number
    return checked


def on_attempt(jobs: Iterable[Job], attempts: Mapping[str, int] | None) -> list[Job]:
    """The jobs among ``jobs`` that are on the attempt ``attempts`` names (all if None)."""
    if attempts is None:
        return list(jobs)
    return [job for job in jobs if attempts.get(job.id, job.attempt) == job.attempt]


def check_holder(job: Job, owner: str, attempt: int | None) -> None:
    """Raise :class:`LeaseLostError` unless ``owner`` holds the running ``job`` (on ``attempt``)."""
    if job.state is not JobState.RUNNING or job.owner != owner:
        raise LeaseLostError(job.id, owner, state=str(job.state), holder=job.owner)
    if attempt is not None and job.attempt != attempt:
        raise LeaseLostError(
            job.id,
            owner,
            state=str(job.state),
            holder=job.owner,
            detail=f"it is on attempt {job.attempt}, not {attempt}",
        )


def _to(job: Job, state: JobState, now: float, **changes: object) -> Job:
    check_transition(job.state, state, job_id=job.id)
    final = state in FINAL_STATES
    running = state is JobState.RUNNING
    defaults: dict[str, object] = {
        "state": state,
        "updated_at": now,
        "finished_at": now if final else None,
        "owner": job.owner if running else None,
        "lease_expires_at": job.lease_expires_at if running else None,
        # A cancel request stays on the record through the final state (see the
        # module docstring); a job going back to PENDING starts without one.
        "cancel_requested": job.cancel_requested if running or final else False,
    }
    defaults.update(changes)
    return dataclasses.replace(job, **defaults)  # type: ignore[arg-type]


def after_claim(job: Job, owner: str, now: float, lease_seconds: float) -> Job:
    return _to(
        job,
        JobState.RUNNING,
        now,
        owner=owner,
        lease_expires_at=now + lease_seconds,
        attempt=job.attempt + 1,
    )


def after_renew(job: Job, now: float, lease_seconds: float) -> Job:
    return dataclasses.replace(job, lease_expires_at=now + lease_seconds, updated_at=now)


def after_complete(
    job: Job, owner: str, now: float, result: bytes | None, attempt: int | None
) -> Job:
    check_holder(job, owner, attempt)
    return _to(job, JobState.SUCCEEDED, now, result=result)


def after_complete_many(
    batch: Sequence[tuple[str, bytes | None, int | None]],
    owner: str,
    now: float,
    load: Callable[[str], Job],
    *,
    lock_order: bool = False,
) -> tuple[list[Job | JobError], list[tuple[Job, Job]]]:
    """The rule of ``complete_many``: :func:`after_complete` for each item.

    ``load(job_id)`` reads a job (raising :class:`UnknownJobError` or
    :class:`CorruptJobError`).  Returns, in item order, each new job or the
    per-item error, and the ``(old, new)`` changes to write.  With
    ``lock_order`` the jobs are loaded in id order (a store that locks rows as
    it reads them then always locks in one order).  An id repeated in the
    batch sees its own earlier completion, so only the first one succeeds.
    """
    results: list[Job | JobError | None] = [None] * len(batch)
    done: dict[str, Job] = {}
    changes: list[tuple[Job, Job]] = []
    order = list(range(len(batch)))
    if lock_order:
        order.sort(key=lambda i: batch[i][0])
    for i in order:
        job_id, result, attempt = batch[i]
        try:
            old = done[job_id] if job_id in done else load(job_id)
            new = after_complete(old, owner, now, result, attempt)
        except (LeaseLostError, UnknownJobError, CorruptJobError) as exc:
            results[i] = exc
            continue
        done[job_id] = new
        changes.append((old, new))
        results[i] = new
    return [r for r in results if r is not None], changes


def after_fail(
    job: Job,
    owner: str,
    now: float,
    error: str,
    traceback: str | None,
    retry_at: float | None,
    attempt: int | None,
) -> Job:
    check_holder(job, owner, attempt)
    if job.cancel_requested:  # the attempt stopped (by an error) after the request
        return _to(job, JobState.CANCELLED, now, last_error=error, error_traceback=traceback)
    if retry_at is not None and job.attempt < job.max_attempts:
        return _to(
            job,
            JobState.PENDING,
            now,
            run_at=retry_at,
            last_error=error,
            error_traceback=traceback,
        )
    return _to(job, JobState.FAILED, now, last_error=error, error_traceback=traceback)


def after_snooze(job: Job, owner: str, now: float, run_at: float, attempt: int | None) -> Job:
    """The holder puts its job back to sleep until ``run_at``: the attempt is not counted.

    ``PENDING`` due at ``run_at`` with ``attempt`` back to what it was before
    the claim, ``last_error`` and its traceback kept; ``CANCELLED`` instead if
    its cancellation was requested (the attempt stopped after the request).
    """
    check_holder(job, owner, attempt)
    if job.cancel_requested:
        return _to(job, JobState.CANCELLED, now, last_error="cancelled", error_traceback=None)
    return _to(job, JobState.PENDING, now, run_at=run_at, attempt=job.attempt - 1)


def after_mark_cancelled(
    job: Job, owner: str | None, now: float, reason: str, attempt: int | None
) -> Job:
    if owner is not None:
        check_holder(job, owner, attempt)
    return _to(job, JobState.CANCELLED, now, last_error=reason, error_traceback=None)


def after_cancel(job: Job, now: float, reason: str) -> Job:
    if job.state is JobState.PENDING:
        return _to(job, JobState.CANCELLED, now, last_error=reason, error_traceback=None)
    if job.state is JobState.RUNNING:
        if job.cancel_requested:
            return job
        return dataclasses.replace(job, cancel_requested=True, updated_at=now)
    return job


def after_retry(job: Job, now: float, run_at: float) -> Job:
    if job.state not in (JobState.FAILED, JobState.CANCELLED):
        raise IllegalTransitionError(
            job.id,
            str(job.state),
            str(JobState.PENDING),
            "a manual retry takes a failed or cancelled job",
        )
    return _to(job, JobState.PENDING, now, run_at=run_at, attempt=0, result=None)


def after_recover(job: Job, now: float, reason: str) -> Job:
    if job.cancel_requested:
        return _to(job, JobState.CANCELLED, now, last_error=reason, error_traceback=None)
    if job.attempt < job.max_attempts:
        return _to(job, JobState.PENDING, now, run_at=now, last_error=reason, error_traceback=None)
    return _to(job, JobState.FAILED, now, last_error=reason, error_traceback=None)


def repair_fields(now: float, reason: str) -> dict[str, object]:
    """The fields a corrupt job is repaired with: failed at ``now``, unowned, ``reason`` named."""
    return {
        "state": JobState.FAILED,
        "updated_at": now,
        "finished_at": now,
        "owner": None,
        "lease_expires_at": None,
        "cancel_requested": False,
        "last_error": f"corrupt job: {reason}",
    }


def after_fail_corrupt(job: Job, now: float, reason: str) -> Job:
    """The repaired row as a failed job (outside the transition table, see states)."""
    return dataclasses.replace(job, **repair_fields(now, reason), error_traceback=None)  # type: ignore[arg-type]
