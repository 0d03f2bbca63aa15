"""Transactional enqueue on PostgreSQL: insert jobs in the caller's psycopg transaction.

:meth:`PostgresJobStore.insert_in
<taskrunner.jobs.stores.postgres_store.PostgresJobStore.insert_in>` calls
:func:`pg_insert_in` (the contract is in :mod:`~taskrunner.jobs.stores.tx_enqueue`).
The rows and a ``NOTIFY`` on the store's channel are written inside a
savepoint of the caller's open transaction: PostgreSQL delivers the
notification at commit, and drops it with the rows on a rollback; a duplicate
id or idempotency key rolls back to the savepoint only, raises
:class:`DuplicateJobError` and leaves the caller's transaction usable.
The caller's connection is used on the caller's thread only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus

from taskrunner.jobs.errors import DuplicateJobError, StoreError
from taskrunner.jobs.model import Job
from taskrunner.jobs.stores.postgres_tx import PgSql, inject
from taskrunner.jobs.stores.sql_rows import job_values
from taskrunner.jobs.stores.store import FaultInjector

__all__ = ["pg_insert_in"]


def _checked(conn: object, database: tuple[str, int]) -> psycopg.Connection[Any]:
    if not isinstance(conn, psycopg.Connection):
        raise TypeError(
            "connection must be a psycopg (3) Connection for a PostgresJobStore, "
            f"got {type(conn).__name__}"
        )
    if conn.closed:
        raise ValueError("connection is closed")
    theirs = (conn.info.dbname, conn.info.port)
    if theirs != database:
        raise ValueError(
            f"connection is to database {theirs[0]!r} (port {theirs[1]}), not to the job "
            f"store's {database[0]!r} (port {database[1]}): a transactional enqueue "
            "needs the same database"
        )
    status = conn.info.transaction_status
    if status == TransactionStatus.INERROR:
        raise ValueError("connection's transaction has failed: roll it back first")
    if status == TransactionStatus.IDLE:
        if conn.autocommit:
            raise ValueError(
                "connection is in autocommit mode with no transaction open: the job would be "
                "committed at once; enqueue inside `with conn.transaction():`"
            )
        conn.execute("SELECT 1")  # psycopg opens the caller's transaction (BEGIN) now
    return conn


def pg_insert_in(
    connection: object,
    database: tuple[str, int],
    sql: PgSql,
    injector: FaultInjector | None,
    batch: Sequence[Job],
) -> None:
    """Insert the checked new jobs ``batch`` through ``connection`` (a psycopg connection to
    ``database``: (name, port)) in its open transaction, and queue their ``NOTIFY``."""
    conn = _checked(connection, database)
    if not batch:
        return
    try:
        with conn.transaction():  # a savepoint: the caller's transaction is already open
            inject(injector, "insert")
            for job in batch:
                conn.execute(sql.insert, job_values(job))
            due = min(job.run_at for job in batch)
            conn.execute(sql.notify, (sql.channel, repr(due)))
    except pg_errors.UniqueViolation as exc:
        raise _duplicate(conn, sql, batch, exc) from exc
    except pg_errors.UndefinedTable as exc:
        raise ValueError(
            f"connection's database has no {sql.jobs} table: is it the job store's database?"
        ) from exc
    except psycopg.Error as exc:
        raise StoreError(f"insert in the caller's transaction: {exc}", exc) from exc


def _duplicate(
    conn: psycopg.Connection[Any], sql: PgSql, batch: Sequence[Job], exc: Exception
) -> Exception:
    """Which job collided, asked in the caller's transaction (rolled back to the savepoint)."""
    for job in batch:
        if conn.execute(f"SELECT 1 FROM {sql.jobs} WHERE id = %s", (job.id,)).fetchone():
            return DuplicateJobError(job.id, existing_id=job.id)
        key = job.idempotency_key
        if key is not None:
            holder = conn.execute(sql.key_holder, (key, job.id)).fetchone()
            if holder:
                return DuplicateJobError(job.id, existing_id=holder[0], idempotency_key=key)
    return StoreError(f"insert in the caller's transaction: constraint failed: {exc}", exc)
