"""The PostgreSQL dialect's statements and transactions (for the PostgreSQL job store).

* The checks of values PostgreSQL cannot hold (NUL in text, integers past
  ``bigint``) and the spelling of NUL in free text.
* :class:`PgSql`: the statements of one schema, built once.
* :class:`PgTx`: the statements of one transaction on one borrowed
  connection (an :class:`~taskrunner.jobs.stores.sql_store.SqlTx`): every write
  goes through the fault injector first, updates write only the columns the
  rules change, and the jobs the transaction made pending are announced by a
  ``NOTIFY`` queued before ``COMMIT``.

A :class:`PgTx` belongs to one transaction on one thread; :class:`PgSql` is
immutable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeAlias

import psycopg

from taskrunner.jobs.errors import StoreError
from taskrunner.jobs.model import JOB_FIELDS, Job
from taskrunner.jobs.states import JobState
from taskrunner.jobs.stores.sql_rows import decode_row, job_values
from taskrunner.jobs.stores.store import FaultInjector

__all__ = ["Conn", "PgSql", "PgTx", "check_pg_name", "check_storable", "inject", "pg_text"]

Conn: TypeAlias = "psycopg.Connection[tuple[Any, ...]]"

_MAX_BIGINT: Final = 2**63 - 1
_COLUMNS: Final = ", ".join(JOB_FIELDS)
# The columns a rule of taskrunner.jobs.stores.rules may change; the rest are fixed at insert
# (only fail_corrupt rewrites them, with a statement of its own).
_MUTABLE: Final = (
    "state",
    "attempt",
    "updated_at",
    "run_at",
    "owner",
    "lease_expires_at",
    "result",
    "last_error",
    "error_traceback",
    "finished_at",
    "cancel_requested",
)
_FIXED: Final = tuple(name for name in JOB_FIELDS if name not in _MUTABLE)


def check_pg_name(name: str, value: str) -> str:
    if "\x00" in value:
        raise ValueError(f"{name} contains a NUL character, which PostgreSQL text cannot hold")
    return value


def pg_text(text: str) -> str:
    """Free text as stored: NUL, which PostgreSQL text cannot hold, spelled out."""
    return text.replace("\x00", "\\x00") if "\x00" in text else text


def check_storable(job: Job) -> Job:
    for name in ("id", "type", "idempotency_key", "unique_key"):
        value = getattr(job, name)
        if value is not None:
            check_pg_name(f"Job.{name}", value)
    if job.max_attempts > _MAX_BIGINT:
        raise ValueError(f"Job.max_attempts must be <= {_MAX_BIGINT}, got {job.max_attempts}")
    return job


# ---------------------------------------------------------------- rows <-> jobs


def _decode_flag(value: object) -> bool:
    if type(value) is not bool:
        raise ValueError(f"cancel_requested must be a boolean, got {value!r}")
    return value


job_values = job_values


def _decode(row: Sequence[Any]) -> Job:
    return decode_row(row, _decode_flag)


# ---------------------------------------------------------------- SQL


class PgSql:
    """The statements of one schema, built once (the schema name is checked and quoted)."""

    def __init__(self, schema: str) -> None:
        jobs = f'"{schema}".jobs'
        self.schema = schema
        self.jobs = jobs
        self.channel = f"{schema}.jobs"
        self.select = f"SELECT {_COLUMNS} FROM {jobs}"
        self.insert = (
            f"INSERT INTO {jobs} ({_COLUMNS}) VALUES "
            f"({', '.join(f'%({name})s' for name in JOB_FIELDS)})"
        )
        self.update = (
            f"UPDATE {jobs} SET "
            + ", ".join(f"{name} = %({name})s" for name in _MUTABLE)
            + " WHERE id = %(id)s"
        )
        self.update_all = (
            f"UPDATE {jobs} SET "
            + ", ".join(f"{name} = %({name})s" for name in JOB_FIELDS[1:])
            + " WHERE id = %(id)s"
        )
        self.queues = f'"{schema}".queues'
        not_paused = f"queue NOT IN (SELECT name FROM {self.queues} WHERE paused = TRUE)"
        self.claim_due = (
            f"{self.select} WHERE state = 'pending' AND run_at <= %s AND {not_paused}"
            " ORDER BY priority DESC, run_at, created_at, id LIMIT %s FOR UPDATE SKIP LOCKED"
        )
        self.claim_due_of_type = (
            f"{self.select} WHERE state = 'pending' AND type = %s AND run_at <= %s"
            f" AND {not_paused}"
            " ORDER BY priority DESC, run_at, created_at, id LIMIT %s FOR UPDATE SKIP LOCKED"
        )
        self.key_holder = (
            f"SELECT id FROM {jobs} WHERE idempotency_key = %s AND id <> %s"
            " AND state IN ('pending', 'running')"
        )
        self.notify = "SELECT pg_notify(%s, %s)"


# ---------------------------------------------------------------- transactions


def inject(injector: FaultInjector | None, operation: str) -> None:
    """Call the fault injector (if any) before a write; what it raises becomes StoreError."""
    if injector is None:
        return
    try:
        injector(operation)
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"{operation}: write failed: {exc}", exc) from exc


class PgTx:
    """The statements of one transaction on one borrowed connection."""

    __slots__ = ("_conn", "_injector", "_operation", "_sql", "due")

    def __init__(
        self, conn: Conn, sql: PgSql, operation: str, injector: FaultInjector | None
    ) -> None:
        self._conn = conn
        self._sql = sql
        self._operation = operation
        self._injector = injector
        #: Earliest run_at among the jobs this transaction made pending (for NOTIFY).
        self.due: float | None = None

    def inject(self) -> None:
        """Give the fault injector its chance to fail the next write."""
        inject(self._injector, self._operation)

    def rows(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        return self._conn.execute(sql, params).fetchall()

    def jobs(self, sql: str, params: Sequence[Any] = ()) -> list[Job]:
        return [_decode(row) for row in self.rows(sql, params)]

    def write(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> int:
        self.inject()
        return self._conn.execute(sql, params).rowcount

    def write_many(self, sql: str, params: Sequence[Mapping[str, Any]]) -> None:
        if not params:
            return
        self.inject()
        if len(params) == 1:  # executemany sets up a pipeline: worth it for several rows only
            self._conn.execute(sql, params[0])
            return
        with self._conn.cursor() as cur:
            cur.executemany(sql, params)

    def update_many(self, changes: Sequence[tuple[Job, Job]]) -> None:
        """Write the new forms of jobs read (and locked) in this transaction."""
        params = []
        for old, new in changes:
            for name in _FIXED:  # the rules change only _MUTABLE columns
                assert getattr(old, name) == getattr(new, name), (name, old.id)
            row = job_values(new)
            params.append({name: row[name] for name in ("id", *_MUTABLE)})
            if new.state is JobState.PENDING and old.state is not JobState.PENDING:
                self.pending(new.run_at)
        self.write_many(self._sql.update, params)

    def update_all(self, job: Job) -> None:
        """Rewrite every column of ``job``'s row (the repair of a corrupt row)."""
        self.write(self._sql.update_all, job_values(job))

    def pending(self, run_at: float) -> None:
        """Note that a job became pending, due at ``run_at``: subscribers will be told."""
        self.due = run_at if self.due is None else min(self.due, run_at)

    def commit_notice(self) -> None:
        """Queue the NOTIFY (sent by PostgreSQL at commit), then let the injector fail COMMIT."""
        if self.due is not None:
            self._conn.execute(self._sql.notify, (self._sql.channel, repr(self.due)))
        self.inject()
