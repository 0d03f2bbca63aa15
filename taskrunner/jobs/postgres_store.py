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
  the new row with the per-job rules of :mod:`taskrunner.jobs.store` (the same
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
* **Uniqueness** of the job id (primary key) and of the idempotency key of
  unfinished jobs (a partial unique index) is enforced by PostgreSQL: two
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
  :data:`MIGRATIONS` (in :mod:`~taskrunner.jobs.postgres_schema`).
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

Needs psycopg 3 (``pip install 'taskrunner[postgres]'``); importing this
module without it raises an ``ImportError`` that says so.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, TypeAlias, TypeVar

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
    CorruptJobError,
    DuplicateJobError,
    JobError,
    JobRunningError,
    StoreError,
    UnknownJobError,
)
from taskrunner.jobs.model import JOB_FIELDS, Job, check_name, check_time
from taskrunner.jobs.postgres_schema import (
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
from taskrunner.jobs.sqlite_store import _decode_trace, _repaired
from taskrunner.jobs.states import JobState
from taskrunner.jobs.store import (
    MAX_PAGE_SIZE,
    FaultInjector,
    JobPage,
    LeaseRenewal,
    after_cancel,
    after_claim,
    after_complete,
    after_complete_many,
    after_fail,
    after_mark_cancelled,
    after_recover,
    after_renew,
    after_retry,
    check_attempt,
    check_attempts,
    check_completions,
    check_filters,
    check_job_id,
    check_lease,
    check_limit,
    check_new_job,
    check_now,
    check_optional_text,
    check_owner,
    check_result,
    check_text,
    check_types,
    claim_order_key,
    decode_cursor,
    encode_cursor,
    on_attempt,
)

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
_Conn: TypeAlias = "psycopg.Connection[tuple[Any, ...]]"

#: A subscriber: called with the earliest due time (epoch seconds) among the
#: jobs a notifying transaction made pending, or ``None`` when that is not
#: known (the listener reconnected and may have missed notifications).
Subscriber = Callable[[float | None], None]


_MAX_BIGINT: Final = 2**63 - 1
_COLUMNS: Final = ", ".join(JOB_FIELDS)
# The columns a rule of taskrunner.jobs.store may change; the rest are fixed at insert
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
_RETRIES: Final = 5  # serialization failures and deadlocks are retried this many times


def _check_pg_name(name: str, value: str) -> str:
    if "\x00" in value:
        raise ValueError(f"{name} contains a NUL character, which PostgreSQL text cannot hold")
    return value


def _pg_text(text: str) -> str:
    """Free text as stored: NUL, which PostgreSQL text cannot hold, spelled out."""
    return text.replace("\x00", "\\x00") if "\x00" in text else text


def _pg_optional_text(text: str | None) -> str | None:
    return None if text is None else _pg_text(text)


def _check_storable(job: Job) -> Job:
    for name in ("id", "type", "idempotency_key"):
        value = getattr(job, name)
        if value is not None:
            _check_pg_name(f"Job.{name}", value)
    if job.max_attempts > _MAX_BIGINT:
        raise ValueError(f"Job.max_attempts must be <= {_MAX_BIGINT}, got {job.max_attempts}")
    return job


# ---------------------------------------------------------------- rows <-> jobs


def _job_params(job: Job) -> dict[str, Any]:
    row: dict[str, Any] = {name: getattr(job, name) for name in JOB_FIELDS}
    row["state"] = job.state.value
    row["trace_context"] = (
        None
        if job.trace_context is None
        else json.dumps(dict(job.trace_context), sort_keys=True, separators=(",", ":"))
    )
    return row


def _decode(row: Sequence[Any]) -> Job:
    raw = dict(zip(JOB_FIELDS, row, strict=True))
    try:
        raw["trace_context"] = _decode_trace(raw["trace_context"])
        if type(raw["cancel_requested"]) is not bool:
            raise ValueError(f"cancel_requested must be a boolean, got {raw['cancel_requested']!r}")
        return Job(**raw)
    except (TypeError, ValueError) as exc:
        raise CorruptJobError(str(raw["id"]), str(exc)) from exc


# ---------------------------------------------------------------- SQL


class _Sql:
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
        self.get_for_update = f"{self.select} WHERE id = %s FOR UPDATE"
        self.claim_due = (
            f"{self.select} WHERE state = 'pending' AND run_at <= %s"
            " ORDER BY priority DESC, run_at, created_at, id LIMIT %s FOR UPDATE SKIP LOCKED"
        )
        self.claim_due_of_type = (
            f"{self.select} WHERE state = 'pending' AND type = %s AND run_at <= %s"
            " ORDER BY priority DESC, run_at, created_at, id LIMIT %s FOR UPDATE SKIP LOCKED"
        )
        self.held = (
            f"{self.select} WHERE id = ANY(%s) AND state = 'running' AND owner = %s"
            " ORDER BY id FOR UPDATE"
        )
        self.expired = (
            f"{self.select} WHERE state = 'running' AND lease_expires_at <= %s"
            " ORDER BY lease_expires_at, id FOR UPDATE SKIP LOCKED"
        )
        self.key_holder = (
            f"SELECT id FROM {jobs} WHERE idempotency_key = %s AND id <> %s"
            " AND state IN ('pending', 'running')"
        )
        self.notify = "SELECT pg_notify(%s, %s)"


def _check_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return float(value)


# ---------------------------------------------------------------- transactions


def _inject(injector: FaultInjector | None, operation: str) -> None:
    """Call the fault injector (if any) before a write; what it raises becomes StoreError."""
    if injector is None:
        return
    try:
        injector(operation)
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"{operation}: write failed: {exc}", exc) from exc


class _Tx:
    """The statements of one transaction on one borrowed connection."""

    __slots__ = ("_conn", "_injector", "_operation", "_sql", "due")

    def __init__(
        self, conn: _Conn, sql: _Sql, operation: str, injector: FaultInjector | None
    ) -> None:
        self._conn = conn
        self._sql = sql
        self._operation = operation
        self._injector = injector
        #: Earliest run_at among the jobs this transaction made pending (for NOTIFY).
        self.due: float | None = None

    def inject(self) -> None:
        """Give the fault injector its chance to fail the next write."""
        _inject(self._injector, self._operation)

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

    def get_for_update(self, job_id: str) -> Job:
        found = self.jobs(self._sql.get_for_update, (job_id,))
        if not found:
            raise UnknownJobError(job_id)
        return found[0]

    def update(self, old: Job, new: Job) -> None:
        self.update_many([(old, new)])

    def update_many(self, changes: Sequence[tuple[Job, Job]]) -> None:
        """Write the new forms of jobs read (and locked) in this transaction."""
        params = []
        for old, new in changes:
            for name in _FIXED:  # the rules change only _MUTABLE columns
                assert getattr(old, name) == getattr(new, name), (name, old.id)
            row = _job_params(new)
            params.append({name: row[name] for name in ("id", *_MUTABLE)})
            if new.state is JobState.PENDING and old.state is not JobState.PENDING:
                self.pending(new.run_at)
        self.write_many(self._sql.update, params)

    def pending(self, run_at: float) -> None:
        """Note that a job became pending, due at ``run_at``: subscribers will be told."""
        self.due = run_at if self.due is None else min(self.due, run_at)

    def commit_notice(self) -> None:
        """Queue the NOTIFY (sent by PostgreSQL at commit), then let the injector fail COMMIT."""
        if self.due is not None:
            self._conn.execute(self._sql.notify, (self._sql.channel, repr(self.due)))
        self.inject()


# ---------------------------------------------------------------- the listener


class _Listener:
    """A thread holding one connection that LISTENs on the store's channel.

    It calls ``deliver`` for each notification, and once after each
    (re)connection with ``None`` (notifications may have been missed).  It
    reconnects with backoff when the connection breaks and stops when ``stop``
    is set (within ``poll`` seconds).
    """

    def __init__(
        self,
        dsn: str,
        connect_kwargs: Mapping[str, Any],
        channel: str,
        deliver: Callable[[float | None], None],
        poll: float = 0.25,
    ) -> None:
        self._dsn = dsn
        self._connect_kwargs = dict(connect_kwargs)
        self._channel = channel
        self._deliver = deliver
        self._poll = poll
        self.stop = threading.Event()
        #: Set once the first LISTEN is in place (for tests and callers that must not miss one).
        self.listening = threading.Event()
        self.thread = threading.Thread(target=self._run, name="taskrunner-pg-listen", daemon=True)

    def _run(self) -> None:
        pause = 0.1
        quoted = '"' + self._channel.replace('"', '""') + '"'
        while not self.stop.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True, **self._connect_kwargs) as conn:
                    conn.execute(f"LISTEN {quoted}")
                    self.listening.set()
                    pause = 0.1
                    self._deliver(None)
                    while not self.stop.is_set():
                        for note in conn.notifies(timeout=self._poll):
                            self._deliver(_parse_due(note.payload))
                            if self.stop.is_set():
                                break
            except psycopg.Error as exc:
                if self.stop.is_set():
                    break
                log.warning("PostgreSQL listener: %s; reconnecting in %.1fs", exc, pause)
                self.stop.wait(pause)
                pause = min(pause * 2, 5.0)


def _parse_due(payload: str) -> float | None:
    try:
        due = float(payload)
    except ValueError:
        return None
    return due if math.isfinite(due) else None


# ---------------------------------------------------------------- the store


class PostgresJobStore:
    """A :class:`~taskrunner.jobs.store.JobStore` in a PostgreSQL database, shared by many machines.

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
        self._sql = _Sql(self._schema)
        # _lock guards _closed, _subscribers, _next_subscriber and _listener.  It is never
        # held while talking to the database or calling a subscriber.
        self._lock = threading.Lock()
        self._closed = False
        self._subscribers: dict[int, Subscriber] = {}
        self._next_subscriber = 0
        self._listener: _Listener | None = None
        # The pool is itself thread-safe; it is closed once, by close().
        self._pool: psycopg_pool.ConnectionPool[_Conn] = psycopg_pool.ConnectionPool(
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
        def check(conn: _Conn) -> None:
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
        _inject(self._fault_injector, "migrate")

    # ------------------------------------------------------------ running statements

    def _check_open(self) -> None:
        with self._lock:
            if self._closed:
                raise ClosedError("the job store is closed")

    def _with_connection(self, operation: str, body: Callable[[_Conn], T]) -> T:
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

    def _transaction(self, operation: str, body: Callable[[_Tx], T]) -> T:
        """Run ``body`` in one transaction, then NOTIFY if it made jobs pending; all or nothing."""
        self._check_open()

        def run(conn: _Conn) -> T:
            tx = _Tx(conn, self._sql, operation, self._fault_injector)
            with conn.transaction():
                result = body(tx)
                tx.commit_notice()
            return result

        return self._with_connection(operation, run)

    def _read(self, operation: str, body: Callable[[_Tx], T]) -> T:
        """Run ``body``, which only reads (each statement in its own snapshot)."""
        self._check_open()
        return self._with_connection(
            operation, lambda conn: body(_Tx(conn, self._sql, operation, None))
        )

    # ------------------------------------------------------------ the contract

    def insert(self, job: Job) -> None:
        self.insert_many([job])

    def insert_many(self, jobs: Sequence[Job]) -> None:
        batch = [_check_storable(check_new_job(job)) for job in jobs]
        if not batch:
            self._check_open()
            return

        def insert(tx: _Tx) -> None:
            tx.write_many(self._sql.insert, [_job_params(job) for job in batch])
            tx.pending(min(job.run_at for job in batch))

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

    def _find_duplicate(self, batch: Sequence[Job]) -> DuplicateJobError | None:
        """Which job of ``batch`` collided, and with what, in the order the jobs were given.

        Asked after the failed insert rolled back; ``None`` if no collision is
        found any more.
        """

        def find(tx: _Tx) -> DuplicateJobError | None:
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
            for job in batch:
                if job.id in taken:
                    return DuplicateJobError(job.id, existing_id=job.id)
                taken.add(job.id)
                key = job.idempotency_key
                if key is not None:
                    if key in holders:
                        return DuplicateJobError(
                            job.id, existing_id=holders[key], idempotency_key=key
                        )
                    holders[key] = job.id
            return None

        return self._read("insert", find)

    def get(self, job_id: str) -> Job:
        _check_pg_name("job_id", check_job_id(job_id))

        def get(tx: _Tx) -> Job:
            found = tx.jobs(f"{self._sql.select} WHERE id = %s", (job_id,))
            if not found:
                raise UnknownJobError(job_id)
            return found[0]

        return self._read("get", get)

    def find_by_idempotency_key(self, key: str) -> Job | None:
        _check_pg_name("key", check_name("key", key))

        def find(tx: _Tx) -> Job | None:
            found = tx.jobs(
                f"{self._sql.select} WHERE idempotency_key = %s"
                " AND state IN ('pending', 'running')",
                (key,),
            )
            return found[0] if found else None

        return self._read("find_by_idempotency_key", find)

    @staticmethod
    def _where(
        states: frozenset[JobState] | None,
        types: frozenset[str] | None,
        since: float | None,
    ) -> tuple[list[str], list[Any]]:
        terms: list[str] = []
        params: list[Any] = []
        if states is not None:
            terms.append("state = ANY(%s)")
            params.append(sorted(state.value for state in states))
        if types is not None:
            for name in types:
                _check_pg_name("types item", name)
            terms.append("type = ANY(%s)")
            params.append(sorted(types))
        if since is not None:
            terms.append("created_at >= %s")
            params.append(since)
        return terms, params

    def list_jobs(
        self,
        *,
        states: Iterable[JobState | str] | None = None,
        types: Iterable[str] | None = None,
        since: float | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> JobPage:
        state_set, type_set, since_f = check_filters(states, types, since)
        limit = check_limit(limit, high=MAX_PAGE_SIZE)
        position = None if after is None else decode_cursor(after)
        if state_set == frozenset() or type_set == frozenset():
            self._check_open()
            return JobPage((), None)
        terms, params = self._where(state_set, type_set, since_f)
        if position is not None:
            _check_pg_name("after", position[1])
            terms.append("(created_at, id) > (%s, %s)")
            params.extend(position)
        where = f" WHERE {' AND '.join(terms)}" if terms else ""
        sql = f"{self._sql.select}{where} ORDER BY created_at, id LIMIT %s"
        found = self._read("list_jobs", lambda tx: tx.jobs(sql, [*params, limit + 1]))
        if len(found) > limit:
            return JobPage(tuple(found[:limit]), encode_cursor(found[limit - 1]))
        return JobPage(tuple(found), None)

    def count_jobs(
        self,
        *,
        states: Iterable[JobState | str] | None = None,
        types: Iterable[str] | None = None,
        since: float | None = None,
    ) -> int:
        state_set, type_set, since_f = check_filters(states, types, since)
        if state_set == frozenset() or type_set == frozenset():
            self._check_open()
            return 0
        terms, params = self._where(state_set, type_set, since_f)
        where = f" WHERE {' AND '.join(terms)}" if terms else ""
        sql = f"SELECT count(*) FROM {self._sql.jobs}{where}"
        count: int = self._read("count_jobs", lambda tx: tx.rows(sql, params)[0][0])
        return count

    def claim_due(
        self,
        owner: str,
        now: float,
        *,
        limit: int,
        lease_seconds: float,
        types: Iterable[str] | None = None,
    ) -> list[Job]:
        _check_pg_name("owner", check_owner(owner))
        now = check_now(now)
        limit = check_limit(limit)
        lease = check_lease(lease_seconds)
        wanted = check_types(types)
        if wanted is not None:
            for name in wanted:
                _check_pg_name("types item", name)
            if not wanted:
                self._check_open()
                return []

        def claim(tx: _Tx) -> list[Job]:
            if wanted is None:
                rows = tx.jobs(self._sql.claim_due, (now, limit))
            else:
                # One ordered range of jobs_claim_by_type per type (no sort of every
                # pending job), merged into the claim order.  Rows locked here but
                # not taken are released at commit (others skip them meanwhile).
                rows = [
                    job
                    for name in sorted(wanted)
                    for job in tx.jobs(self._sql.claim_due_of_type, (name, now, limit))
                ]
            due = sorted(rows, key=claim_order_key)[:limit]
            changes = [(job, after_claim(job, owner, now, lease)) for job in due]
            tx.update_many(changes)
            return [new for _, new in changes]

        return self._transaction("claim_due", claim)

    def claim(self, job_id: str, owner: str, now: float, *, lease_seconds: float) -> Job | None:
        _check_pg_name("job_id", check_job_id(job_id))
        _check_pg_name("owner", check_owner(owner))
        now = check_now(now)
        lease = check_lease(lease_seconds)

        def claim(tx: _Tx) -> Job | None:
            job = tx.get_for_update(job_id)
            if job.state is not JobState.PENDING or job.run_at > now:
                return None
            claimed = after_claim(job, owner, now, lease)
            tx.update(job, claimed)
            return claimed

        return self._transaction("claim", claim)

    def renew_leases(
        self,
        owner: str,
        job_ids: Iterable[str],
        now: float,
        *,
        lease_seconds: float,
        attempts: Mapping[str, int] | None = None,
    ) -> LeaseRenewal:
        _check_pg_name("owner", check_owner(owner))
        ids = list(dict.fromkeys(_check_pg_name("job_id", check_job_id(i)) for i in job_ids))
        now = check_now(now)
        lease = check_lease(lease_seconds)
        on = check_attempts(attempts)
        if not ids:
            self._check_open()
            return LeaseRenewal(frozenset(), frozenset())

        def renew(tx: _Tx) -> LeaseRenewal:
            held = on_attempt(tx.jobs(self._sql.held, (ids, owner)), on)
            tx.update_many([(job, after_renew(job, now, lease)) for job in held])
            return LeaseRenewal(
                frozenset(job.id for job in held),
                frozenset(job.id for job in held if job.cancel_requested),
            )

        return self._transaction("renew_leases", renew)

    def _change(self, operation: str, job_id: str, change: Callable[[Job], Job]) -> Job:
        """Lock one job, compute its new form with ``change``, and write it, atomically."""

        def body(tx: _Tx) -> Job:
            old = tx.get_for_update(job_id)
            new = change(old)
            if new is not old:
                tx.update(old, new)
            return new

        try:
            return self._transaction(operation, body)
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

    def complete(
        self,
        job_id: str,
        owner: str,
        now: float,
        result: bytes | None = None,
        *,
        attempt: int | None = None,
    ) -> Job:
        _check_pg_name("job_id", check_job_id(job_id))
        _check_pg_name("owner", check_owner(owner))
        now = check_now(now)
        check_result(result)
        attempt = check_attempt(attempt)
        return self._change(
            "complete", job_id, lambda job: after_complete(job, owner, now, result, attempt)
        )

    def complete_many(
        self, owner: str, now: float, items: Sequence[tuple[str, bytes | None, int | None]]
    ) -> list[Job | JobError]:
        """See :class:`~taskrunner.jobs.store.BatchCompletion`: one transaction for all.

        Rows are locked in id order (whatever the order of ``items``), so two
        owners completing overlapping batches cannot deadlock."""
        _check_pg_name("owner", check_owner(owner))
        now = check_now(now)
        batch = check_completions(items)
        for job_id, _, _ in batch:
            _check_pg_name("job_id", job_id)
        if not batch:
            return []

        def body(tx: _Tx) -> list[Job | JobError]:
            out, changes = after_complete_many(
                batch, owner, now, tx.get_for_update, lock_order=True
            )
            if changes:
                tx.update_many(changes)
            return out

        return self._transaction("complete", body)

    def fail(
        self,
        job_id: str,
        owner: str,
        now: float,
        error: str,
        traceback: str | None = None,
        *,
        retry_at: float | None = None,
        attempt: int | None = None,
    ) -> Job:
        _check_pg_name("job_id", check_job_id(job_id))
        _check_pg_name("owner", check_owner(owner))
        now = check_now(now)
        error = _pg_text(check_text("error", error))
        traceback = _pg_optional_text(check_optional_text("traceback", traceback))
        retry_time = None if retry_at is None else check_time("retry_at", retry_at)
        attempt = check_attempt(attempt)
        return self._change(
            "fail",
            job_id,
            lambda job: after_fail(job, owner, now, error, traceback, retry_time, attempt),
        )

    def mark_cancelled(
        self,
        job_id: str,
        owner: str | None,
        now: float,
        reason: str = "cancelled",
        *,
        attempt: int | None = None,
    ) -> Job:
        _check_pg_name("job_id", check_job_id(job_id))
        if owner is not None:
            _check_pg_name("owner", check_owner(owner))
        now = check_now(now)
        reason = _pg_text(check_text("reason", reason))
        attempt = check_attempt(attempt)
        return self._change(
            "mark_cancelled",
            job_id,
            lambda job: after_mark_cancelled(job, owner, now, reason, attempt),
        )

    def cancel(self, job_id: str, now: float, reason: str = "cancelled") -> Job:
        _check_pg_name("job_id", check_job_id(job_id))
        now = check_now(now)
        reason = _pg_text(check_text("reason", reason))
        return self._change("cancel", job_id, lambda job: after_cancel(job, now, reason))

    def retry(self, job_id: str, now: float, run_at: float | None = None) -> Job:
        _check_pg_name("job_id", check_job_id(job_id))
        now = check_now(now)
        due = now if run_at is None else check_time("run_at", run_at)
        return self._change("retry", job_id, lambda job: after_retry(job, now, due))

    def recover_expired(self, now: float, *, interrupted_reason: str = "interrupted") -> list[Job]:
        now = check_now(now)
        reason = _pg_text(check_text("interrupted_reason", interrupted_reason))

        def recover(tx: _Tx) -> list[Job]:
            expired = tx.jobs(self._sql.expired, (now,))
            changes = [(job, after_recover(job, now, reason)) for job in expired]
            tx.update_many(changes)
            return [new for _, new in changes]

        return self._transaction("recover_expired", recover)

    def fail_corrupt(self, job_id: str, now: float, reason: str) -> None:
        _check_pg_name("job_id", check_job_id(job_id))
        now = check_now(now)
        reason = _pg_text(check_text("reason", reason))

        def repair(tx: _Tx) -> None:
            rows = tx.rows(self._sql.get_for_update, (job_id,))
            if not rows:
                raise UnknownJobError(job_id)
            try:
                job = _repaired(rows[0], now, reason)
            except (TypeError, ValueError) as exc:
                raise StoreError(f"job {job_id!r} cannot be repaired: {exc}", exc) from exc
            tx.write(self._sql.update_all, _job_params(job))

        self._transaction("fail_corrupt", repair)

    def next_due(self) -> float | None:
        def earliest(tx: _Tx) -> float | None:
            rows = tx.rows(
                f"SELECT id, run_at FROM {self._sql.jobs} WHERE state = 'pending'"
                " ORDER BY run_at LIMIT 1"
            )
            if not rows:
                return None
            job_id, run_at = rows[0]
            try:
                return check_time("run_at", run_at)
            except (TypeError, ValueError) as exc:
                raise CorruptJobError(str(job_id), str(exc)) from exc

        return self._read("next_due", earliest)

    def purge(self, finished_before: float) -> int:
        limit = check_time("finished_before", finished_before)

        def purge(tx: _Tx) -> int:
            return tx.write(
                f"DELETE FROM {self._sql.jobs} WHERE finished_at IS NOT NULL"
                " AND finished_at < %s AND state IN ('succeeded', 'failed', 'cancelled')",
                (limit,),
            )

        return self._transaction("purge", purge)

    def delete(self, job_id: str) -> Job:
        check_job_id(job_id)

        def delete(tx: _Tx) -> Job:
            job = tx.get_for_update(job_id)  # a claim of it waits for us, or we for it
            if job.state is JobState.RUNNING:
                raise JobRunningError(job_id, "delete")
            tx.write(f"DELETE FROM {self._sql.jobs} WHERE id = %s", (job_id,))
            return job

        return self._transaction("delete", delete)

    def clear(self) -> int:
        def clear(tx: _Tx) -> int:
            # No claim may start between the check and the delete: hold off
            # every writer (readers go on) until the transaction ends.
            tx.write(f"LOCK TABLE {self._sql.jobs} IN SHARE ROW EXCLUSIVE MODE")
            running = tx.rows(f"SELECT id FROM {self._sql.jobs} WHERE state = 'running' LIMIT 1")
            if running:
                raise JobRunningError(running[0][0], "clear")
            return tx.write(f"DELETE FROM {self._sql.jobs}")

        return self._transaction("clear", clear)

    def close(self) -> None:
        """Close the pool and stop the listener.  Idempotent; in-flight calls may fail."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._subscribers.clear()
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop.set()
            if listener.thread is not threading.current_thread():
                listener.thread.join(timeout=5)
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
        if not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        with self._lock:
            if self._closed:
                raise ClosedError("the job store is closed")
            token = self._next_subscriber
            self._next_subscriber += 1
            self._subscribers[token] = callback
            if self._listener is None:
                self._listener = _Listener(
                    self._dsn, self._connect_kwargs, self._sql.channel, self._deliver
                )
                self._listener.thread.start()

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers.pop(token, None)
                listener = self._listener if not self._subscribers else None
                if listener is not None:
                    self._listener = None
            if listener is not None:
                listener.stop.set()  # it ends within its poll interval; nothing to wait for

        return unsubscribe

    def wait_listening(self, timeout: float | None = None) -> bool:
        """Wait until the listener's ``LISTEN`` is in place (True), or ``timeout`` passes.

        Notifications sent before that are not seen (the listener calls every
        subscriber with ``None`` once listening, which covers them).  False if
        nobody is subscribed.
        """
        with self._lock:
            listener = self._listener
        return listener is not None and listener.listening.wait(timeout)

    def _deliver(self, due_at: float | None) -> None:
        """Listener thread: call every subscriber (outside the lock)."""
        with self._lock:
            callbacks = list(self._subscribers.values())
        for callback in callbacks:
            try:
                callback(due_at)
            except Exception:
                log.exception("a job store subscriber failed")

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
