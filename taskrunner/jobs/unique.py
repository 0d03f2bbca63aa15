"""Job uniqueness: ``submit(..., unique_for=timedelta(hours=1), unique_by=("type", "args"))``.

A unique job carries a **unique key**, a digest of the fields named by
``unique_by``, and the end of its **window**, ``unique_until = created_at +
unique_for``.  While a job's window is open, no other job with the same key can
be stored: the store refuses it with
:class:`~taskrunner.jobs.errors.DuplicateJobError` naming the job that holds
the key (``existing_id``, and ``unique_key``), or, with
``on_duplicate="return"``, the manager returns that job's handle instead.

Enforcement is the store's, by the same machinery as the idempotency key: a
column and a unique index over it (SQLite and PostgreSQL), or one map under
the memory store's lock, so it holds across threads, processes and machines.
A time window cannot be written into an index, so an insert first releases
(clears on the older job) the keys it wants whose window ended, by the new
job's clock, and the index then refuses exactly the duplicates within a window
(:meth:`~taskrunner.jobs.stores.sql_store.SqlJobStore._release_unique_keys`).  A job
holds its key in every state, finished included, until its window ends or it
is deleted or purged: "at most one such job per hour" counts the jobs that
already ran.

The fields a key may cover are :data:`UNIQUE_FIELDS`; adding one (a queue,
say) is one entry there.  ``args`` compare by value: JSON-encodable arguments
are compared in canonical JSON (dict keys sorted), so ``{"a": 1, "b": 2}`` and
``{"b": 2, "a": 1}`` are the same; other arguments by their serialized bytes.
Pure functions, safe from any thread.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

from taskrunner.jobs.errors import DuplicateJobError
from taskrunner.jobs.model import Job, check_below_max_duration

if TYPE_CHECKING:
    from taskrunner.jobs.handles import JobHandle
    from taskrunner.jobs.manager_core import ManagerCore

__all__ = [
    "DEFAULT_UNIQUE_BY",
    "ON_DUPLICATE",
    "UNIQUE_FIELDS",
    "check_on_duplicate",
    "check_unique_by",
    "check_unique_for",
    "unique_key",
    "with_uniqueness",
]


def _canonical_args(job: Job, args: Any) -> bytes:
    try:
        text = json.dumps(args, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return b"b" + job.args  # not JSON: the serializer's bytes
    return b"j" + text.encode()


#: The fields ``unique_by`` may name, each with how its value is read from the
#: new job (and the arguments as given to ``submit``).
UNIQUE_FIELDS: Final[Mapping[str, Callable[[Job, Any], bytes]]] = {
    "type": lambda job, args: job.type.encode(),
    "args": _canonical_args,
}

#: What ``unique_by`` covers unless told.
DEFAULT_UNIQUE_BY: Final = ("type", "args")

#: What ``submit`` does with a duplicate: raise DuplicateJobError, or return the existing job.
ON_DUPLICATE: Final = ("raise", "return")


def check_unique_for(unique_for: object) -> float | None:
    """``None``, or the window as seconds > 0 (a ``timedelta`` or a number of seconds)."""
    if unique_for is None:
        return None
    if isinstance(unique_for, timedelta):
        seconds = unique_for.total_seconds()
    elif isinstance(unique_for, int | float) and not isinstance(unique_for, bool):
        seconds = float(unique_for)
    else:
        raise TypeError(
            "unique_for must be a timedelta or a number of seconds, "
            f"got {type(unique_for).__name__}"
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"unique_for must be a positive, finite duration, got {unique_for!r}")
    check_below_max_duration("unique_for", seconds)
    return seconds


def check_unique_by(unique_by: object) -> tuple[str, ...]:
    """The field names of ``unique_by`` (a non-empty sequence of :data:`UNIQUE_FIELDS`), sorted."""
    if isinstance(unique_by, str) or not isinstance(unique_by, Sequence):
        raise TypeError(
            f"unique_by must be a sequence of field names such as ('type', 'args'), "
            f"got {unique_by!r}"
        )
    names = tuple(unique_by)
    if not names:
        raise ValueError("unique_by must name at least one field")
    for name in names:
        if name not in UNIQUE_FIELDS:
            raise ValueError(
                f"unique_by: unknown field {name!r} (known: {', '.join(UNIQUE_FIELDS)})"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"unique_by names a field twice: {names!r}")
    return tuple(sorted(names))


def check_on_duplicate(on_duplicate: object) -> str:
    if on_duplicate not in ON_DUPLICATE:
        raise ValueError(f"on_duplicate must be 'raise' or 'return', got {on_duplicate!r}")
    return str(on_duplicate)


def unique_key(job: Job, args: Any, unique_by: Sequence[str]) -> str:
    """The unique key of ``job`` over the fields ``unique_by`` (checked, any order)."""
    digest = hashlib.sha256(b"taskrunner.unique.v1")
    for name in check_unique_by(unique_by):
        value = UNIQUE_FIELDS[name](job, args)
        for part in (name.encode(), value):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return f"u1:{digest.hexdigest()}"


def with_uniqueness(
    job: Job, args: Any, unique_for: object, unique_by: Sequence[str] = DEFAULT_UNIQUE_BY
) -> Job:
    """``job`` with its unique key and window, or ``job`` itself without ``unique_for``."""
    window = check_unique_for(unique_for)
    by = check_unique_by(unique_by)
    if window is None:
        return job
    return dataclasses.replace(
        job, unique_key=unique_key(job, args, by), unique_until=job.created_at + window
    )


def duplicate_handle(manager: ManagerCore, exc: DuplicateJobError, on_duplicate: str) -> JobHandle:
    """What ``submit`` returns for a refused duplicate: the existing job's handle
    with ``on_duplicate="return"``; otherwise ``exc`` is raised again.

    The handle's ``future`` is the one this process tracks for that job, if it
    submitted it and has not settled it yet; otherwise a future of its own that
    is never settled: use ``handle.result()``, which reads the store."""
    from concurrent.futures import Future

    from taskrunner.jobs.handles import JobHandle

    if on_duplicate != "return" or exc.existing_id is None:
        raise exc
    with manager._lock:
        future = manager._futures.get(exc.existing_id)
    if future is None:
        # Not submitted here, or already settled: an untracked future (``result()``
        # reads the store); registering it would keep it forever if the job is final.
        future = Future()
    return JobHandle(manager, exc.existing_id, future)  # type: ignore[arg-type]
