"""Named job queues: their names, per-queue claim limits, and what a store reports of them.

Every job belongs to one queue (:data:`DEFAULT_QUEUE` unless its submitter
names another).  A job manager consumes only the queues it is given, each with
its own concurrency limit (``JobManager(store, queues={"mail": 10})``); a
queue can be paused and resumed at run time for every worker on the store
(:meth:`~taskrunner.jobs.stores.base_store.BaseJobStore.pause_queue`), and listed
with its depth (:class:`QueueInfo`).

This module holds the checks and pure helpers the stores and the manager
share: :func:`check_queue` (a queue name), :func:`check_queue_limits` (a
``{queue: limit}`` mapping), :func:`parse_queue_spec` (``"mail:10,reports:2"``
from the command line) and :func:`take_by_queue` (the claim's per-queue caps).
Pure functions and immutable values, safe from any thread; it imports nothing
of the job model, so the model can use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar, runtime_checkable

__all__ = [
    "DEFAULT_QUEUE",
    "MAX_QUEUE_NAME",
    "QueueControl",
    "QueueInfo",
    "check_claim_queues",
    "check_queue",
    "check_queue_limits",
    "claim_room",
    "filled",
    "parse_queue_spec",
    "take_by_queue",
]

#: The queue of a job whose submitter names none.
DEFAULT_QUEUE: Final = "default"
#: Longest queue name accepted (characters).
MAX_QUEUE_NAME: Final = 64

_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


def check_queue(value: object, name: str = "queue") -> str:
    """A queue name: 1-64 ASCII letters, digits, ``_``, ``.`` or ``-``, not starting
    with ``.`` or ``-``.  ``TypeError``/``ValueError`` naming ``name`` otherwise.

    The alphabet leaves out ``,`` and ``:`` (the separators of ``--queues
    mail:10,reports:2``), white space and anything a shell or URL would need
    to quote."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    if len(value) > MAX_QUEUE_NAME:
        raise ValueError(f"{name} is longer than {MAX_QUEUE_NAME} characters: {value[:70]!r}")
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"{name} {value!r} is not a valid queue name: use ASCII letters, digits, '_', '.'"
            " and '-', not starting with '.' or '-'"
        )
    return value


def check_queue_limits(queues: object, name: str = "queues") -> dict[str, int]:
    """A mapping of queue name to concurrency limit (an int >= 1), not empty; a new dict."""
    if not isinstance(queues, Mapping):
        raise TypeError(
            f"{name} must be a mapping of queue name to concurrency limit, "
            f"got {type(queues).__name__}"
        )
    if not queues:
        raise ValueError(f"{name} must name at least one queue")
    limits: dict[str, int] = {}
    for queue, limit in queues.items():
        check_queue(queue, f"{name} key")
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(
                f"{name}[{queue!r}] must be an int (a concurrency limit), "
                f"got {type(limit).__name__}"
            )
        if limit < 1:
            raise ValueError(f"{name}[{queue!r}] must be >= 1, got {limit}")
        limits[queue] = limit
    return limits


def check_claim_queues(queues: object) -> dict[str, int] | None:
    """``claim_due``'s ``queues``: None, or queue name -> the most to claim from it (>= 0)."""
    if queues is None:
        return None
    if not isinstance(queues, Mapping):
        raise TypeError(
            f"queues must be a mapping of queue name to the most jobs to claim from it, "
            f"got {type(queues).__name__}"
        )
    caps: dict[str, int] = {}
    for queue, cap in queues.items():
        check_queue(queue, "queues key")
        if isinstance(cap, bool) or not isinstance(cap, int):
            raise TypeError(f"queues[{queue!r}] must be an int, got {type(cap).__name__}")
        if cap < 0:
            raise ValueError(f"queues[{queue!r}] must be >= 0, got {cap}")
        caps[queue] = cap
    return caps


def parse_queue_spec(spec: str) -> dict[str, int]:
    """``"mail:10,reports:2"`` as ``{"mail": 10, "reports": 2}``; a name without
    ``:N`` gets 1.  ``ValueError`` saying what is wrong with a bad spec."""
    if not isinstance(spec, str):
        raise TypeError(f"a queue spec must be a str, got {type(spec).__name__}")
    limits: dict[str, int] = {}
    for part in spec.split(","):
        item = part.strip()
        if not item:
            raise ValueError(f"queue spec {spec!r} has an empty item (expected NAME:LIMIT,...)")
        queue, colon, text = item.partition(":")
        queue = queue.strip()
        check_queue(queue, "queue name")
        if queue in limits:
            raise ValueError(f"queue {queue!r} is named twice in {spec!r}")
        if not colon:
            limits[queue] = 1
            continue
        try:
            limit = int(text.strip())
        except ValueError:
            raise ValueError(
                f"queue {queue!r}: the limit must be a whole number, got {text!r}"
            ) from None
        if limit < 1:
            raise ValueError(f"queue {queue!r}: the limit must be >= 1, got {limit}")
        limits[queue] = limit
    return limits


J = TypeVar("J", bound="_Queued")


class _Queued(Protocol):
    @property
    def queue(self) -> str: ...


def take_by_queue(ordered: Iterable[J], caps: Mapping[str, int], limit: int) -> list[J]:
    """The first jobs of ``ordered`` (in claim order) that fit: at most ``caps[q]``
    from queue ``q``, none from a queue not in ``caps``, ``limit`` in all."""
    left = dict(caps)
    taken: list[J] = []
    for job in ordered:
        if len(taken) >= limit:
            break
        if left.get(job.queue, 0) > 0:
            left[job.queue] -= 1
            taken.append(job)
    return taken


def claim_room(limits: Mapping[str, int], busy_queues: Iterable[str]) -> dict[str, int]:
    """How many more jobs of each queue of ``limits`` may start while jobs of
    ``busy_queues`` (one name per running job) run; queues without room left out."""
    busy: dict[str, int] = {}
    for queue in busy_queues:
        busy[queue] = busy.get(queue, 0) + 1
    room = {queue: limit - busy.get(queue, 0) for queue, limit in limits.items()}
    return {queue: left for queue, left in room.items() if left > 0}


def filled(jobs: Iterable[_Queued], room: Mapping[str, int]) -> bool:
    """True if claiming ``jobs`` used up the ``room`` of one of the queues (there may
    be more due jobs there, to claim once room is freed)."""
    taken: dict[str, int] = {}
    for job in jobs:
        taken[job.queue] = taken.get(job.queue, 0) + 1
    return any(taken.get(queue, 0) >= left for queue, left in room.items())


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """One queue as :meth:`~QueueControl.list_queues` saw it, at one instant.

    ``pending`` is its depth (pending jobs, delayed ones included), ``running``
    its jobs being run now, ``oldest_due_at`` the earliest ``run_at`` among
    its pending jobs that are due (epoch seconds; ``None`` when none waits),
    ``oldest_age`` how long that job has waited at the ``now`` of the listing
    (seconds), and ``paused`` whether claims skip it.
    """

    name: str
    pending: int
    running: int
    oldest_due_at: float | None
    oldest_age: float | None
    paused: bool

    def to_dict(self) -> dict[str, object]:
        """The fields as a plain dict (for JSON)."""
        return {
            "name": self.name,
            "pending": self.pending,
            "running": self.running,
            "oldest_due_at": self.oldest_due_at,
            "oldest_age": self.oldest_age,
            "paused": self.paused,
        }


def queue_info(
    name: str, pending: int, running: int, oldest: float | None, paused: bool, now: float
) -> QueueInfo:
    """A :class:`QueueInfo`, its age computed at ``now`` (never negative)."""
    age = None if oldest is None else max(0.0, now - oldest)
    return QueueInfo(name, pending, running, oldest, age, paused)


@runtime_checkable
class QueueControl(Protocol):
    """What a store offers to pause, resume and list queues (all three stores do).

    Pausing is stored, so it holds for every worker on the store, in any
    process, and across restarts, until resumed.  Claims skip the jobs of a
    paused queue; its running jobs carry on and finish as usual.  A claim
    that started before the pause took effect may still take jobs from it
    (as if it had run just before); every claim that starts after
    ``pause_queue`` returns honours it.  An explicit claim of one job by id
    (:meth:`~taskrunner.jobs.stores.store.JobStore.claim`) is an operator's act and
    is not stopped by a pause.  Thread-safe.
    """

    def pause_queue(self, queue: str, now: float) -> bool:
        """Pause ``queue`` (known or not yet); returns whether it was running before."""
        ...

    def resume_queue(self, queue: str, now: float) -> bool:
        """Resume ``queue``; returns whether it was paused before."""
        ...

    def list_queues(self, now: float) -> list[QueueInfo]:
        """Every queue with pending or running jobs, or that was ever paused, by name."""
        ...
