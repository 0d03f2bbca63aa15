"""The shared job store: one PostgreSQL database, used by workers on many machines.

Design
------
This is the model of Procrastinate, Oban and graphile-worker: the database is
the queue.  Every worker process, on any machine, opens a
:class:`PostgresJobStore` on the same database and claims jobs from the one
``jobs`` table; PostgreSQL's row locks and constraints are what keep them
apart.

* **Transactions.**  Every write is one transaction at ``READ COMMITTED``.  An
  operation on one job reads it with ``SELECT ... FOR UPDATE`` (so it waits for
  any concurrent change to that row, then sees its latest version), computes
  the new row with the per-job rules of :mod:`taskrunner.jobs.stores.rules` (the same
  functions as the other stores), and writes it back.  A ``complete`` racing
  with a ``recover_expired`` or a ``cancel`` is thereby serialised on the row.
* **Claims** select due jobs in claim order (priority, then ``run_at``,
  ``created_at``, id) with ``FOR UPDATE SKIP LOCKED``: rows another claimer has
  locked are skipped, not waited for, so claimers on many machines never queue
  behind each other and never get the same job.  A row that changed after the
  claimer's snapshot is re-checked by PostgreSQL when it is locked, and dropped
  if no longer due.  Recovery of expired leases skips locked rows the same way.
* **Leases.**  A claim writes ``owner`` and ``lease_expires_at``; the job
  manager's heartbeat renews them (:meth:`renew_leases`).  Lease times come
  from the callers' clocks, so the machines' clocks must agree (NTP) to well
  within a lease; leases of tens of seconds leave a wide margin.
* **Uniqueness** of the job id (primary key), of the idempotency key of
  unfinished jobs (a partial unique index) and of the unique key of jobs
  within their window (a unique index; an insert first releases the keys
  whose window ended) is enforced by PostgreSQL: two
  machines submitting the same id or key at once cannot both win; the loser
  gets :class:`DuplicateJobError`.
* **Wake-ups.**  A transaction that makes a job due or pending (``insert``,
  ``retry``, ``fail`` with a retry, ``recover_expired``) also sends
  ``NOTIFY`` on the store's channel, delivered at commit to every listening
  session.  :meth:`PostgresJobStore.subscribe` runs a listener thread with its
  own connection (``LISTEN``) and calls the subscribers back; the job manager
  uses it to claim at once instead of at its next poll.  Polling stays the
  fallback: a notification can be lost (the listener reconnecting), and the
  listener then calls every subscriber as if one had arrived.
* **Schema** lives in its own PostgreSQL schema (``taskrunner`` by default),
  versioned by the table ``schema_version`` and built by the ordered
  :data:`MIGRATIONS` (in :mod:`~taskrunner.jobs.stores.postgres_schema`).
  :func:`migrate` applies them in one transaction under an advisory lock,
  so processes migrating at once are serialised and the later ones find
  the work done; a database migrated by a newer taskrunner is refused.
  Stores migrate on open unless told not to (``migrate=False``, for
  deployments whose workers may not run DDL: run ``taskrunner db migrate``).
* **Durability** is the server's: a commit returns once PostgreSQL says it is
  durable (with its default ``synchronous_commit = on``).
* **Errors.**  A serialization failure or deadlock (PostgreSQL aborted the
  transaction, nothing was written) is retried here a few times.  Any other
  driver error, a lost connection included, is :class:`StoreError`, worth a
  retry; the pool drops broken connections.  As with any database, a
  connection lost *during* ``COMMIT`` leaves the outcome unknown: the
  :class:`StoreError` is raised though the write may have landed, and a retry
  then meets its effect (a :class:`DuplicateJobError` for an insert, a
  :class:`~taskrunner.jobs.errors.LeaseLostError` for a finish).

Threads: the store holds a connection pool (``psycopg_pool.ConnectionPool``);
each operation borrows one connection for its one transaction, so operations
from different threads run concurrently on different connections.  ``_lock``
guards only the store's own small state (closed flag, subscribers, listener).

Text: PostgreSQL cannot store the NUL character in ``text``.  A name (job id,
type, owner, idempotency key) containing one is refused with ``ValueError``;
in free text (error messages, tracebacks, reasons) it is stored as the four
characters ``\\x00``.

A row that cannot be decoded into a valid :class:`Job` (written by hand, or by
a foreign tool) raises :class:`CorruptJobError` naming it, and changes
nothing; :meth:`PostgresJobStore.fail_corrupt` repairs it.  For tests,
``fault_injector`` is called with the operation's name before each statement
that changes rows (a batch of inserts or updates is one statement), before
``COMMIT``, and, when migrating, before each DDL statement; whatever it raises
rolls the transaction back and surfaces as :class:`StoreError`.

The SQL it shares with SQLite is
:class:`~taskrunner.jobs.stores.sql_store.SqlJobStore`'s; this module keeps the
PostgreSQL dialect: the pool, row locks (``FOR UPDATE [SKIP LOCKED]``),
inserts and constraint errors, and subscriptions; its statements and
transaction runner are in :mod:`~taskrunner.jobs.stores.postgres_tx`, the listener
thread in :mod:`~taskrunner.jobs.stores.postgres_listen`, the schema in
:mod:`~taskrunner.jobs.stores.postgres_schema`.

Needs psycopg 3 (``pip install 'taskrunner[postgres]'``); importing this
module without it raises an ``ImportError`` that says so.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

try:
    import psycopg
    import psycopg_pool
    from psycopg import errors as pg_errors
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        "the PostgreSQL job store needs psycopg 3 and psycopg-pool: "
        "pip install 'taskrunner[postgres]'"
    ) from exc

from taskrunner.errors import ClosedError
from taskrunner.jobs.errors import (
    DuplicateJobError,
    StoreError,
)
from taskrunner.jobs.model import Job
from taskrunner.jobs.stores.postgres_enqueue import pg_insert_in
from taskrunner.jobs.stores.postgres_listen import Listener
from taskrunner.jobs.stores.postgres_schema import (
    DEFAULT_SCHEMA,
    MIGRATIONS,
    SCHEMA_VERSION,
    Migration,
    _apply_migrations,
    _check_dsn,
    _check_schema,
    _describe,
    _newer_message,
    _read_version,
    _timeout,
    migrate,
    schema_version,
)
from taskrunner.jobs.stores.postgres_tx import (
    Conn,
    PgSql,
    PgTx,
    check_pg_name,
    check_storable,
    inject,
    pg_text,
)
from taskrunner.jobs.stores.sql_rows import job_values
from taskrunner.jobs.stores.sql_store import SqlJobStore
from taskrunner.jobs.stores.store import (
    FaultInjector,
)
from taskrunner.jobs.stores.subscriptions import Deliver, Subscriptions

__all__ = [
    "DEFAULT_SCHEMA",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Migration",
    "PostgresJobStore",
    "Subscriber",
    "migrate",
    "schema_version",
]

log = logging.getLogger("taskrunner.jobs.postgres")
T = TypeVar("T")

#: A subscriber: called with the earliest due time (epoch seconds) among the
#: jobs a notifying transaction made pending, or ``None`` when that is not
#: known (the listener reconnected and may have missed notifications).
Subscriber = Deliver


_RETRIES: Final = 5  # serialization failures and deadlocks are retried this many times


def _check_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return float(value)


# ---------------------------------------------------------------- the store


class PostgresJobStore(SqlJobStore[PgTx]):
    """A :class:`~taskrunner.jobs.stores.store.JobStore` in a PostgreSQL database, shared by
    many machines.

    ``dsn`` is a libpq connection string or URI (``"postgresql://user@host/db"``).
    ``schema`` is the PostgreSQL schema holding the tables (created by the
    migrations).  ``min_connections``/``max_connections`` size the connection
    pool (one connection per concurrent operation; the job manager makes one
    store call at a time, plus reads); ``connect_timeout`` bounds connecting
    and waiting for a free pooled connection.  ``migrate`` (default) applies
    pending migrations on open; with ``migrate=False`` the schema must already
    be at :data:`SCHEMA_VERSION`.  ``connect_kwargs`` are passed to
    ``psycopg.connect`` (for example ``{"prepare_threshold": None}`` behind
    PgBouncer in transaction mode).

    Opening raises :class:`StoreError` if the server cannot be reached, or the
    schema is missing, out of date (``migrate=False``) or newer than this code.
    Thread-safe (see the module docstring).
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        min_connections: int = 1,
        max_connections: int = 4,
        connect_timeout: float = 10.0,
        migrate: bool = True,
        connect_kwargs: Mapping[str, Any] | None = None,
        fault_injector: FaultInjector | None = None,
    ) -> None:
        self._dsn = _check_dsn(dsn)
        self._schema = _check_schema(schema)
        for name, value in (
            ("min_connections", min_connections),
            ("max_connections", max_connections),
        ):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if min_connections < 0 or max_connections < max(1, min_connections):
            raise ValueError(
                f"need 0 <= min_connections <= max_connections and max_connections >= 1, got "
                f"{min_connections} and {max_connections}"
            )
        self._connect_timeout = _check_seconds("connect_timeout", connect_timeout)
        if not isinstance(migrate, bool):
            raise TypeError(f"migrate must be a bool, got {type(migrate).__name__}")
        extra = dict(connect_kwargs or {})
        extra.setdefault("connect_timeout", _timeout(self._connect_timeout))
        self._connect_kwargs = extra
        self._fault_injector = fault_injector
        self._sql = PgSql(self._schema)
        self._table = self._sql.jobs
        self._queues_table = self._sql.queues
        self._schedules_table = f'"{self._schema}".schedules'
        # _lock guards _closed and _database.  Never
        # held while talking to the database or calling a subscriber.
        self._lock = threading.Lock()
        self._closed = False
        self._subscriptions = Subscriptions(
            lambda deliver: Listener(self._dsn, self._connect_kwargs, self._sql.channel, deliver)
        )
        self._database: tuple[str, int] | None = None  # (name, port), for insert_in
        # The pool is itself thread-safe; it is closed once, by close().
        self._pool: psycopg_pool.ConnectionPool[Conn] = psycopg_pool.ConnectionPool(
            self._dsn,
            kwargs={**extra, "autocommit": True},
            min_size=min_connections,
            max_size=max_connections,
            timeout=self._connect_timeout,
            open=False,
            name=f"taskrunner-{self._schema}",
            num_workers=1,
        )
        try:
            self._pool.open(wait=min_connections > 0, timeout=self._connect_timeout)
            self._open_schema(migrate)
        except BaseException as exc:
            self._closed = True
            self._pool.close(timeout=0)
            if isinstance(exc, psycopg_pool.PoolTimeout):
                raise StoreError(
                    f"cannot connect to PostgreSQL at {_describe(self._dsn)} within "
                    f"{self._connect_timeout:g}s",
                    exc,
                ) from exc
            raise

    # ------------------------------------------------------------ setup

    def _open_schema(self, migrate: bool) -> None:
        def check(conn: Conn) -> None:
            if migrate:
                _apply_migrations(conn, self._schema, self._inject_migration)
                return
            version = _read_version(conn, self._schema)
            if version > SCHEMA_VERSION:
                raise StoreError(_newer_message(self._schema, version))
            if version < SCHEMA_VERSION:
                raise StoreError(
                    f"schema {self._schema!r} of {_describe(self._dsn)} is at version {version},"
                    f" this taskrunner needs {SCHEMA_VERSION}: run "
                    f"`taskrunner db migrate --dsn ...` (or open the store with migrate=True)"
                )

        self._with_connection("open", check)

    def _inject_migration(self) -> None:
        inject(self._fault_injector, "migrate")

    # ------------------------------------------------------------ running statements

    def _check_open(self) -> None:
        with self._lock:
            if self._closed:
                raise ClosedError("the job store is closed")

    def _with_connection(self, operation: str, body: Callable[[Conn], T]) -> T:
        """Run ``body`` on a pooled connection; map driver errors to StoreError/ClosedError.

        Serialization failures and deadlocks (PostgreSQL aborted the
        transaction; nothing was written) are retried a few times.
        """
        for attempt in range(1, _RETRIES + 1):
            try:
                with self._pool.connection() as conn:
                    return body(conn)
            except (pg_errors.SerializationFailure, pg_errors.DeadlockDetected) as exc:
                if attempt == _RETRIES:
                    raise StoreError(f"{operation}: {exc}", exc) from exc
            except psycopg_pool.PoolClosed as exc:
                raise ClosedError("the job store is closed") from exc
            except psycopg_pool.PoolTimeout as exc:
                raise StoreError(
                    f"{operation}: no connection to PostgreSQL within "
                    f"{self._connect_timeout:g}s: {exc}",
                    exc,
                ) from exc
            except psycopg.Error as exc:
                raise StoreError(f"{operation}: {exc}", exc) from exc
        raise AssertionError("not reached")

    def _transaction(self, operation: str, body: Callable[[PgTx], T]) -> T:
        """Run ``body`` in one transaction, then NOTIFY if it made jobs pending; all or nothing."""
        self._check_open()

        def run(conn: Conn) -> T:
            tx = PgTx(conn, self._sql, operation, self._fault_injector)
            with conn.transaction():
                result = body(tx)
                tx.commit_notice()
            return result

        return self._with_connection(operation, run)

    def _read(self, operation: str, body: Callable[[PgTx], T]) -> T:
        """Run ``body``, which only reads (each statement in its own snapshot)."""
        self._check_open()
        return self._with_connection(
            operation, lambda conn: body(PgTx(conn, self._sql, operation, None))
        )

    # ------------------------------------------------------------ the primitives

    def _name(self, name: str, value: str) -> str:
        return check_pg_name(name, value)

    def _text(self, value: str) -> str:
        return pg_text(value)

    def _storable(self, job: Job) -> Job:
        return check_storable(job)

    def _ensure_open(self) -> None:
        self._check_open()

    def _insert(self, batch: Sequence[Job]) -> None:
        def insert(tx: PgTx) -> None:
            self._release_unique_keys(tx, batch)
            self._insert_in(tx, batch)

        for _ in range(_RETRIES):
            try:
                self._transaction("insert", insert)
                return
            except StoreError as exc:
                if not isinstance(exc.cause, pg_errors.UniqueViolation):
                    raise
                duplicate = self._find_duplicate(batch)
                if duplicate is not None:
                    raise duplicate from exc
                # The row that collided is gone (finished, purged): try again.
        raise StoreError(f"insert: constraint kept failing for {len(batch)} job(s)")

    def _insert_in(self, tx: PgTx, jobs: Sequence[Job]) -> None:
        tx.write_many(self._sql.insert, [job_values(job) for job in jobs])
        tx.pending(min(job.run_at for job in jobs))

    def _find_duplicate(self, batch: Sequence[Job]) -> DuplicateJobError | None:
        """Which job of ``batch`` collided, and with what, in the order the jobs were given.

        Asked after the failed insert rolled back; ``None`` if no collision is
        found any more.
        """

        def find(tx: PgTx) -> DuplicateJobError | None:
            taken = {
                row[0]
                for row in tx.rows(
                    f"SELECT id FROM {self._sql.jobs} WHERE id = ANY(%s)",
                    ([job.id for job in batch],),
                )
            }
            keys = [job.idempotency_key for job in batch if job.idempotency_key is not None]
            holders: dict[str, str] = {}
            if keys:
                holders = dict(
                    tx.rows(
                        f"SELECT idempotency_key, id FROM {self._sql.jobs}"
                        " WHERE idempotency_key = ANY(%s) AND state IN ('pending', 'running')",
                        (keys,),
                    )
                )
            uniques = [job.unique_key for job in batch if job.unique_key is not None]
            windows: dict[str, tuple[str, float]] = {}
            if uniques:
                windows = {
                    key: (job_id, until)
                    for key, job_id, until in tx.rows(
                        f"SELECT unique_key, id, unique_until FROM {self._sql.jobs}"
                        " WHERE unique_key = ANY(%s)",
                        (uniques,),
                    )
                }
            for job in batch:
                if job.id in taken:
                    return DuplicateJobError(job.id, existing_id=job.id)
                taken.add(job.id)
                if job.unique_key is not None and job.unique_until is not None:
                    held = windows.get(job.unique_key)
                    if held is not None and held[1] > job.created_at:  # within its window
                        return DuplicateJobError(
                            job.id, existing_id=held[0], unique_key=job.unique_key
                        )
                    windows[job.unique_key] = (job.id, job.unique_until)
                key = job.idempotency_key
                if key is not None:
                    if key in holders:
                        return DuplicateJobError(
                            job.id, existing_id=holders[key], idempotency_key=key
                        )
                    holders[key] = job.id
            return None

        return self._read("insert", find)

    def insert_in(self, connection: object, jobs: Sequence[Job]) -> None:
        """Insert new ``jobs`` through ``connection`` (a psycopg connection to this
        database) in its open transaction, uncommitted; workers are notified at
        its commit.  See :mod:`~taskrunner.jobs.stores.postgres_enqueue`."""
        self._check_open()
        batch = self._checked_new(jobs)
        with self._lock:
            database = self._database
        if database is None:
            database = self._with_connection(
                "insert", lambda conn: (conn.info.dbname, conn.info.port)
            )
            with self._lock:
                self._database = database
        pg_insert_in(connection, database, self._sql, self._fault_injector, batch)

    # ------------------------------------------------------------ the dialect

    _mark = "%s"
    _queue_index = ""
    _for_update = " FOR UPDATE"
    _skip_locked = " FOR UPDATE SKIP LOCKED"
    _chunk = None

    def _in(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"{column} = ANY(%s)", [list(values)]

    def _after(self, position: tuple[float, str]) -> tuple[str, list[Any]]:
        return "(created_at, id) > (%s, %s)", list(position)

    def _claim_query(self, of_type: bool) -> str:
        return self._sql.claim_due_of_type if of_type else self._sql.claim_due

    def _change(self, operation: str, job_id: str, change: Callable[[Job], Job]) -> Job:
        """The shared change; a unique violation (only a manual retry can meet one)
        becomes :class:`DuplicateJobError` naming the job that holds the key."""
        try:
            return super()._change(operation, job_id, change)
        except StoreError as exc:
            if not isinstance(exc.cause, pg_errors.UniqueViolation):
                raise
            # Only a job going back to pending can collide: a manual retry whose
            # idempotency key another unfinished job took meanwhile.
            job = self.get(job_id)
            key = job.idempotency_key
            if key is not None:
                holder = self._read(
                    "retry", lambda tx: tx.rows(self._sql.key_holder, (key, job_id))
                )
                if holder:
                    raise DuplicateJobError(
                        job_id, existing_id=holder[0][0], idempotency_key=key
                    ) from exc
            raise

    def _resumed(self, tx: PgTx, now: float) -> None:
        tx.pending(now)  # NOTIFY at commit: listening workers claim from it at once

    def _lock_all(self, tx: PgTx) -> None:
        # Writers wait (readers go on) until clear's transaction ends.
        tx.write(f"LOCK TABLE {self._table} IN SHARE ROW EXCLUSIVE MODE")

    def close(self) -> None:
        """Close the pool and stop the listener.  Idempotent; in-flight calls may fail."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._subscriptions.close(timeout=5)
        self._pool.close(timeout=5)

    # ------------------------------------------------------------ notifications

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(due_at)`` when jobs become pending in this store; returns an unsubscribe.

        Any process's ``insert``, ``retry``, ``fail`` with a retry, or
        ``recover_expired`` that makes jobs pending sends one notification at
        commit; ``due_at`` is the earliest ``run_at`` among those jobs (maybe in
        the future, for delayed jobs: the subscriber decides when to claim).
        ``callback(None)`` means "look now": the listener (re)connected and
        notifications may have been missed.  Callbacks run on the listener
        thread, one at a time: they must be quick and not block (post work
        elsewhere); an exception is logged and ignored.  Delivery is best
        effort, so a subscriber must also poll (the job manager does).

        The first subscription starts the listener thread and its connection;
        the last unsubscribe stops it.  Unsubscribing is idempotent.  After
        :meth:`close`, ``ClosedError``.
        """
        return self._subscriptions.subscribe(callback)

    def wait_listening(self, timeout: float | None = None) -> bool:
        """Wait until the listener's ``LISTEN`` is in place (True), or ``timeout`` passes.

        Notifications sent before that are not seen (the listener calls every
        subscriber with ``None`` once listening, which covers them).  False if
        nobody is subscribed.
        """
        return self._subscriptions.wait_listening(timeout)

    # ------------------------------------------------------------ extras

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding the store's tables."""
        return self._schema

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel on which the store announces pending jobs."""
        return self._sql.channel

    def schema_version(self) -> int:
        """The schema's version as stored (== :data:`SCHEMA_VERSION` once open)."""
        self._check_open()
        return self._with_connection(
            "schema_version", lambda conn: _read_version(conn, self._schema)
        )

    def __enter__(self) -> PostgresJobStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        with self._lock:
            state = "closed" if self._closed else "open"
        return f"<PostgresJobStore {_describe(self._dsn)!r} schema={self._schema!r} ({state})>"
