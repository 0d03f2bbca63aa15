"""The job manager's queues: which it consumes, each one's room, pause and resume.

:class:`QueueMixin` is the part of :class:`~taskrunner.jobs.manager.JobManager`
that knows its queues.  A manager consumes only the queues it was given
(``queues={"mail": 10, "reports": 2}``; by default ``{"default":
max_concurrent}``), runs at most each one's limit of that queue's jobs at once,
and claims only the job types it has handlers for.  Pausing and resuming are
stored (:class:`~taskrunner.jobs.queues.QueueControl`), so they hold for every
worker on the store, in any process: running jobs finish, nothing new is
claimed until resume.  A worker in another process sees a resume at its next
poll (at once on PostgreSQL, through NOTIFY); this manager claims at once.

Threads: the limits are set once at construction; the room of each queue
(:func:`~taskrunner.jobs.queues.claim_room`) is computed under ``_lock``, in the
claim, from the attempts running here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from taskrunner.jobs.attempts import Attempts
from taskrunner.jobs.queues import (
    DEFAULT_QUEUE,
    QueueControl,
    QueueInfo,
    check_queue,
    check_queue_limits,
)

__all__ = ["DEFAULT_CONCURRENCY", "QueueMixin", "queue_limits"]

#: Jobs a manager runs at once when given neither ``queues`` nor ``max_concurrent``.
DEFAULT_CONCURRENCY: Final = 64


def queue_limits(queues: Mapping[str, int] | None, max_concurrent: int | None) -> dict[str, int]:
    """The manager's ``{queue: concurrency limit}`` from its two arguments (one at most).

    ``TypeError``/``ValueError`` naming the argument for a bad value or both given."""
    if queues is not None:
        if max_concurrent is not None:
            raise ValueError(
                "give queues (each with its concurrency limit) or max_concurrent, not both"
            )
        return check_queue_limits(queues)
    limit = DEFAULT_CONCURRENCY if max_concurrent is None else max_concurrent
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"max_concurrent must be an int, got {type(limit).__name__}")
    if limit < 1:
        raise ValueError(f"max_concurrent must be >= 1, got {limit}")
    return {DEFAULT_QUEUE: limit}


class QueueMixin(Attempts):
    """Queue pause/resume/list on the manager (mixed into ``JobManager``)."""

    @property
    def queues(self) -> dict[str, int]:
        """The queues this manager consumes and each one's concurrency limit (a copy)."""
        return dict(self._queue_limits)

    def _queue_control(self) -> QueueControl:
        store = self._store
        if not isinstance(store, QueueControl):
            raise TypeError(f"{type(store).__name__} cannot pause or list queues")
        return store

    def pause_queue(self, queue: str) -> bool:
        """Pause ``queue`` for every worker on the store; True if it was running.

        Running jobs of the queue finish; no worker claims another of its jobs
        until :meth:`resume_queue` (a claim already under way may still take
        some, as if it had run just before).  Jobs can still be submitted to
        it.  The queue need not have jobs yet, nor be one this manager
        consumes.  Blocks until stored; ``ValueError`` for a bad name."""
        check_queue(queue)
        control = self._queue_control()
        return self._io(lambda: control.pause_queue(queue, self.now()), "pause_queue").result()

    def resume_queue(self, queue: str) -> bool:
        """Resume ``queue`` for every worker on the store; True if it was paused.

        This manager claims from it at once; other workers at their next poll
        (PostgreSQL: at once, through NOTIFY)."""
        check_queue(queue)
        control = self._queue_control()
        resumed = self._io(lambda: control.resume_queue(queue, self.now()), "resume_queue").result()
        self._kick()
        return resumed

    def list_queues(self) -> list[QueueInfo]:
        """Every queue with pending or running jobs on the store, or ever paused, by
        name: depth, running count, oldest waiting job and paused flag."""
        control = self._queue_control()
        return self._read(lambda: control.list_queues(self.now()), "list_queues")
