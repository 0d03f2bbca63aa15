"""The states of a job and the one table of legal transitions between them.

A job is born ``PENDING``.  An owner (a worker process or thread pool) claims it
when it is due, which makes it ``RUNNING`` under a lease; the owner then finishes
it as ``SUCCEEDED``, ``FAILED`` or ``CANCELLED``, or sends it back to
``PENDING`` for another attempt.  ``FAILED`` and ``CANCELLED`` jobs can be
retried by hand, which makes them ``PENDING`` again; ``SUCCEEDED`` is the end.

Every store checks each state change against :data:`TRANSITIONS` with
:func:`check_transition`; nothing else decides what is legal.  The one
exception is ``fail_corrupt``, which repairs a row that cannot even be decoded
(its state may be the corrupt part) and so stands outside the table.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from taskrunner.jobs.errors import IllegalTransitionError

__all__ = [
    "FINAL_STATES",
    "TRANSITIONS",
    "UNFINISHED_STATES",
    "JobState",
    "can_transition",
    "check_transition",
    "is_final",
    "parse_state",
]


class JobState(StrEnum):
    """Where a job is in its life.  The value is the name stored in a job store."""

    # Stored and waiting: runs once ``run_at`` has passed and an owner claims it.
    PENDING = "pending"
    # Claimed: one owner holds a lease on it (until ``lease_expires_at``) and runs it.
    RUNNING = "running"
    # Final: the handler returned; its encoded result is stored.
    SUCCEEDED = "succeeded"
    # Final: the last attempt failed, or the failure was not retryable.  Retryable by hand.
    FAILED = "failed"
    # Final: cancelled while pending, or stopped while running.  Retryable by hand.
    CANCELLED = "cancelled"


_P, _R, _S, _F, _C = (
    JobState.PENDING,
    JobState.RUNNING,
    JobState.SUCCEEDED,
    JobState.FAILED,
    JobState.CANCELLED,
)

#: The legal transitions: ``TRANSITIONS[old]`` is the set of states ``old`` may become.
TRANSITIONS: Final[Mapping[JobState, frozenset[JobState]]] = MappingProxyType(
    {
        _P: frozenset({_R, _C}),  # claimed; cancelled before it ran
        _R: frozenset({_S, _F, _C, _P}),  # finished; back to pending for a retry or recovery
        _S: frozenset(),  # the end
        _F: frozenset({_P}),  # manual retry
        _C: frozenset({_P}),  # manual retry
    }
)

#: States a job leaves only by a manual retry (and never, for ``SUCCEEDED``).
FINAL_STATES: Final[frozenset[JobState]] = frozenset({_S, _F, _C})
#: States in which a job holds its idempotency key.
UNFINISHED_STATES: Final[frozenset[JobState]] = frozenset({_P, _R})


def parse_state(value: JobState | str) -> JobState:
    """Return the :class:`JobState` named by ``value`` (a member or its stored name).

    Raises ``ValueError`` naming the value for an unknown name, ``TypeError`` for
    something that is not a string.
    """
    if isinstance(value, JobState):
        return value
    if not isinstance(value, str):
        raise TypeError(f"a job state must be a JobState or str, got {type(value).__name__}")
    try:
        return JobState(value)
    except ValueError:
        names = ", ".join(s.value for s in JobState)
        raise ValueError(f"unknown job state {value!r} (expected one of {names})") from None


def is_final(state: JobState | str) -> bool:
    """True if ``state`` is ``SUCCEEDED``, ``FAILED`` or ``CANCELLED``."""
    return parse_state(state) in FINAL_STATES


def can_transition(old: JobState | str, new: JobState | str) -> bool:
    """True if :data:`TRANSITIONS` allows ``old -> new``."""
    return parse_state(new) in TRANSITIONS[parse_state(old)]


def check_transition(
    old: JobState | str, new: JobState | str, *, job_id: str | None = None
) -> None:
    """Raise :class:`IllegalTransitionError` unless ``old -> new`` is in the table."""
    if not can_transition(old, new):
        raise IllegalTransitionError(job_id, str(parse_state(old)), str(parse_state(new)))
