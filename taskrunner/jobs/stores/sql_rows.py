"""Jobs to SQL rows and back: the row mapping the SQLite and PostgreSQL stores share.

A row is the job's fields in :data:`~taskrunner.jobs.model.JOB_FIELDS` order.
The two databases agree on every column but ``cancel_requested`` (SQLite
stores 0/1, PostgreSQL a boolean), so :func:`decode_row` takes that column's
decoder.  Decoding never trusts the row: a row that does not make a valid
:class:`~taskrunner.jobs.model.Job` raises
:class:`~taskrunner.jobs.errors.CorruptJobError` naming it, and
:func:`repaired` turns such a row into a decodable failed job (for
``fail_corrupt``).  Pure functions, safe from any thread.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from taskrunner.jobs.errors import CorruptJobError
from taskrunner.jobs.model import (
    JOB_FIELDS,
    MAX_PRIORITY,
    MIN_PRIORITY,
    Job,
    check_duration,
    check_name,
    check_time,
)
from taskrunner.jobs.queues import DEFAULT_QUEUE, check_queue
from taskrunner.jobs.stores.rules import check_text, repair_fields

__all__ = ["decode_row", "decode_trace", "job_values", "repaired"]


def job_values(job: Job) -> dict[str, Any]:
    """The job's column values by name (state as its text, trace context as JSON)."""
    row: dict[str, Any] = {name: getattr(job, name) for name in JOB_FIELDS}
    row["state"] = job.state.value
    row["trace_context"] = (
        None
        if job.trace_context is None
        else json.dumps(dict(job.trace_context), sort_keys=True, separators=(",", ":"))
    )
    return row


def decode_row(row: Sequence[Any], decode_flag: Callable[[object], bool]) -> Job:
    """The job a row holds (``decode_flag`` reads ``cancel_requested``); CorruptJobError if none."""
    raw = dict(zip(JOB_FIELDS, row, strict=True))
    try:
        raw["trace_context"] = decode_trace(raw["trace_context"])
        raw["cancel_requested"] = decode_flag(raw["cancel_requested"])
        return Job(**raw)
    except (TypeError, ValueError) as exc:
        raise CorruptJobError(str(raw["id"]), str(exc)) from exc


def decode_trace(text: object) -> dict[str, str] | None:
    if text is None:
        return None
    if not isinstance(text, str):
        raise TypeError(f"trace_context must be JSON text, got {type(text).__name__}")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"trace_context is not valid JSON: {exc}") from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError("trace_context is not a JSON object of strings")
    return value


def _valid(check: Callable[[Any], object], value: object) -> bool:
    try:
        check(value)
    except (TypeError, ValueError):
        return False
    return True


def repaired(row: Sequence[Any], now: float, reason: str) -> Job:
    """The row as a decodable failed job: each field that cannot be decoded reset."""
    raw = dict(zip(JOB_FIELDS, row, strict=True))

    def keep(name: str, check: Callable[[Any], object], default: object) -> None:
        if not _valid(check, raw[name]):
            raw[name] = default

    def optional(check: Callable[[Any], object]) -> Callable[[Any], object]:
        return lambda value: None if value is None else check(value)

    def is_bytes(value: object) -> None:
        if not isinstance(value, bytes):
            raise TypeError

    def is_int(low: int, high: int | None = None) -> Callable[[Any], object]:
        def check(value: object) -> None:
            if type(value) is not int or value < low or (high is not None and value > high):
                raise ValueError

        return check

    keep("type", lambda v: check_name("type", v), "corrupt")
    keep("args", is_bytes, b"")
    keep("priority", is_int(MIN_PRIORITY, MAX_PRIORITY), 0)
    keep("max_attempts", is_int(1), 1)
    keep("attempt", is_int(0, raw["max_attempts"]), raw["max_attempts"])
    keep("created_at", lambda v: check_time("t", v), now)
    keep("run_at", lambda v: check_time("t", v), now)
    keep("timeout", optional(lambda v: check_duration("t", v)), None)
    keep("idempotency_key", optional(lambda v: check_name("key", v)), None)
    keep("result", optional(is_bytes), None)
    keep("error_traceback", optional(lambda v: check_text("t", v)), None)
    keep("trace_context", decode_trace, None)
    keep("queue", check_queue, DEFAULT_QUEUE)
    keep("unique_key", optional(lambda v: check_name("key", v)), None)
    keep("unique_until", optional(lambda v: check_time("t", v)), None)
    if (raw["unique_key"] is None) != (raw["unique_until"] is None):
        raw["unique_key"] = raw["unique_until"] = None
    if raw["trace_context"] is not None:
        raw["trace_context"] = decode_trace(raw["trace_context"])
    raw.update(repair_fields(now, reason))
    return Job(**raw)
