"""Transactional enqueue: insert jobs in the caller's own open database transaction.

``JobManager.submit(..., connection=conn)`` stores the job through ``conn``,
the application's connection, inside the transaction it has open, without
committing: the job and the application's data change commit together, or
neither does.  Workers see the job only once the caller commits; a rollback
leaves no job.  SQLite and PostgreSQL guarantee that no reader ever sees a
half-state (a transaction's rows appear all at once, at commit).

* **SQLite** (:class:`~taskrunner.jobs.stores.sqlite_store.SQLiteJobStore`): ``conn``
  is a ``sqlite3.Connection`` to the store's file (checked: another file
  raises ``ValueError`` naming both).  The insert takes SQLite's write lock
  until the caller commits or rolls back, so keep the transaction short:
  every other writer (workers included) waits for it.  The store cannot see
  the caller's commit, so it cannot wake the workers at that moment: call
  :meth:`SQLiteJobStore.announce <taskrunner.jobs.stores.sqlite_store.SQLiteJobStore.announce>`
  after ``conn.commit()`` for an immediate start; without it the workers'
  adaptive poll finds the job within a second.
* **PostgreSQL** (:class:`~taskrunner.jobs.stores.postgres_store.PostgresJobStore`):
  ``conn`` is a psycopg 3 connection to the store's database (see
  :mod:`~taskrunner.jobs.stores.postgres_enqueue`).  The insert runs in a savepoint
  (a duplicate id or key raises :class:`DuplicateJobError` and leaves the
  caller's transaction usable) and queues a ``NOTIFY``, which PostgreSQL
  delivers at commit: workers wake then, and never on a rollback.
* **MemoryJobStore** has no transactions: ``TypeError`` says so.

A connection in autocommit mode with no transaction open is refused
(``ValueError``): the insert would commit at once, which is not what the
caller asked for.  Thread-safety: the caller's connection is used on the
caller's thread only, as the driver requires.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from taskrunner.jobs.errors import StoreError
from taskrunner.jobs.model import Job

if TYPE_CHECKING:
    from taskrunner.jobs.stores.store import JobStore

__all__ = [
    "TransactionalInsert",
    "check_sqlite_connection",
    "insert_in_transaction",
    "sqlite_savepoint",
]


@runtime_checkable
class TransactionalInsert(Protocol):
    """A store that can insert jobs through the caller's connection, in its transaction."""

    def insert_in(self, connection: object, jobs: Sequence[Job]) -> None: ...


def insert_in_transaction(store: JobStore, connection: object, jobs: Sequence[Job]) -> None:
    """Insert ``jobs`` through ``connection`` in its open transaction (see the module doc)."""
    if not isinstance(store, TransactionalInsert):
        raise TypeError(
            f"{type(store).__name__} has no transactions: submit(..., connection=...) needs "
            "a SQLiteJobStore (sqlite3.Connection) or a PostgresJobStore (psycopg connection)"
        )
    store.insert_in(connection, jobs)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_sqlite_connection(store_path: str, conn: object) -> sqlite3.Connection:
    """``conn`` if it is a ``sqlite3.Connection`` to ``store_path`` that will not commit
    an insert at once; else ``TypeError``/``ValueError`` saying what is wrong."""
    if not isinstance(conn, sqlite3.Connection):
        raise TypeError(
            "connection must be a sqlite3.Connection for a SQLiteJobStore, "
            f"got {type(conn).__name__}"
        )
    try:
        rows = conn.execute("PRAGMA database_list").fetchall()
    except sqlite3.ProgrammingError as exc:  # closed, or used from another thread
        raise ValueError(f"connection cannot be used: {exc}") from exc
    main = next((row[2] for row in rows if row[1] == "main"), "")
    if not main or not _same_file(main, store_path):
        raise ValueError(
            f"connection is to {main or 'a private in-memory database'!r}, not to the job "
            f"store's file {store_path!r}: a transactional enqueue needs the same file"
        )
    if not conn.in_transaction:
        autocommit = getattr(conn, "autocommit", None)  # Python >= 3.12
        legacy = autocommit is None or autocommit == getattr(
            sqlite3, "LEGACY_TRANSACTION_CONTROL", -1
        )
        if autocommit is True or (legacy and conn.isolation_level is None):
            raise ValueError(
                "connection is in autocommit mode with no transaction open: the job would be "
                'committed at once; execute "BEGIN" first'
            )
    return conn


@contextlib.contextmanager
def sqlite_savepoint(conn: sqlite3.Connection) -> Iterator[None]:
    """A savepoint inside the caller's transaction (opened with ``BEGIN`` if the
    driver had not opened it yet): rolled back to if the block raises, released
    either way, so the caller's transaction stays open and usable.  A SQLite
    error becomes :class:`StoreError`."""
    try:
        if not conn.in_transaction:
            conn.execute("BEGIN")  # the caller's transaction, which the caller commits
        conn.execute("SAVEPOINT taskrunner_enqueue")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK TO taskrunner_enqueue")
            raise
        finally:
            conn.execute("RELEASE taskrunner_enqueue")
    except sqlite3.Error as exc:
        raise StoreError(f"insert in the caller's transaction: {exc}", exc) from exc
