"""The embedded job store: one SQLite file, shared safely by threads and processes.

Design
------
The file is opened in WAL journal mode, so readers never wait for the writer,
with ``synchronous=FULL`` by default, so a write is on disk (WAL fsynced) when
the call that made it returns: the job manager's durable acknowledgement.

Every write is one ``BEGIN IMMEDIATE`` transaction: it takes SQLite's write lock
before reading the rows it will change, so two processes sharing the file can
never both claim a job, or both finish one, and a read-then-write is never
based on a stale snapshot.  While another process holds the lock, SQLite's busy
handler waits for it, and we retry what can fail without it, up to
``busy_timeout`` in all; then :class:`StoreError` is raised.  SQLite keeps no
queue of waiters (a waiting connection polls), so a process that writes
without pause can starve another for a while: keep transactions short (every
method here is one short transaction) and claim in batches.  Uniqueness (job id
and the idempotency key of unfinished jobs) is enforced by the primary key and
a partial unique index, never by a check in memory.

The schema is versioned with ``PRAGMA user_version`` and built by the ordered
:data:`MIGRATIONS`, applied in one ``BEGIN IMMEDIATE`` transaction that first
re-reads the version: two processes opening the same new file at once are
serialised, and the second finds the work done.  A file from a newer version
of taskrunner is refused.

Threads: one connection per store, guarded by a lock (``check_same_thread`` is
off).  Each operation runs entirely under the lock, so operations from
different threads never interleave on the connection; they are serialised,
which costs little because SQLite admits one writer at a time anyway.  Use one
store per process (or per thread, if you want concurrent readers).

A row that cannot be decoded into a valid :class:`Job` raises
:class:`CorruptJobError` naming it, and changes nothing;
:meth:`SQLiteJobStore.fail_corrupt` repairs it into a failed job.  For tests,
``fault_injector`` is called before each write statement (``COMMIT``
included) with the operation's name; whatever it raises rolls the transaction
back and surfaces as :class:`StoreError`.

Wake-ups: a commit that makes jobs pending (insert, retry, a failure with a
retry, snooze, recovery) pokes the listeners of the same file in every process
(:meth:`SQLiteJobStore.announce`, through the Unix datagram sockets of
:mod:`~taskrunner.jobs.stores.sqlite_wake`); :meth:`SQLiteJobStore.subscribe` is how
a job manager listens, with an adaptive poll as the fallback.

The SQL it shares with PostgreSQL (reads, claims, renewals, changes,
recovery) is :class:`~taskrunner.jobs.stores.sql_store.SqlJobStore`'s; this module
keeps the SQLite dialect: the connection, ``BEGIN IMMEDIATE`` and busy retries,
inserts and constraint errors, and the schema.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

from taskrunner.errors import ClosedError
from taskrunner.jobs.errors import (
    DuplicateJobError,
    StoreError,
)
from taskrunner.jobs.model import (
    JOB_FIELDS,
    Job,
)
from taskrunner.jobs.stores.sql_rows import decode_row, job_values
from taskrunner.jobs.stores.sql_store import SqlJobStore
from taskrunner.jobs.stores.sqlite_schema import MIGRATIONS, SCHEMA_VERSION, Migration
from taskrunner.jobs.stores.sqlite_wake import (
    Listener,
    PendingProbe,
    WakeDirectory,
    pending_due,
    wake_directory_for,
)
from taskrunner.jobs.stores.store import (
    FaultInjector,
)
from taskrunner.jobs.stores.subscriptions import Subscriptions
from taskrunner.jobs.stores.tx_enqueue import check_sqlite_connection, sqlite_savepoint

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SYNCHRONOUS_MODES", "Migration", "SQLiteJobStore"]

T = TypeVar("T")


#: Values of ``PRAGMA synchronous`` accepted, and the number SQLite reports for each.
SYNCHRONOUS_MODES: Final = {"OFF": 0, "NORMAL": 1, "FULL": 2, "EXTRA": 3}

_COLUMNS: Final = ", ".join(JOB_FIELDS)
_SELECT: Final = f"SELECT {_COLUMNS} FROM jobs"
_INSERT: Final = f"INSERT INTO jobs ({_COLUMNS}) VALUES ({', '.join('?' * len(JOB_FIELDS))})"
_UPDATE: Final = (
    "UPDATE jobs SET " + ", ".join(f"{name} = ?" for name in JOB_FIELDS[1:]) + " WHERE id = ?"
)
_CHUNK: Final = 500  # ids per IN (...) list, well under SQLite's variable limit
_WAKING: Final = frozenset({"fail", "snooze", "retry", "recover_expired"})
_SQLITE_BUSY: Final = 5
_SQLITE_LOCKED: Final = 6


_NOT_PAUSED: Final = "queue NOT IN (SELECT name FROM queues WHERE paused = TRUE)"


def _claim_sql(of_type: bool) -> str:
    """``claim_due``'s query: due jobs of every type, or of one type (bound first),
    in queues that are not paused.

    The typed one names its index, whose order is the claim order within a
    type, so it reads only the rows it returns: without statistics SQLite's
    planner would take ``jobs_by_state`` and sort every pending job."""
    if not of_type:
        return (
            f"{_SELECT} WHERE state = 'pending' AND run_at <= ? AND {_NOT_PAUSED}"
            " ORDER BY priority DESC, run_at, created_at, id LIMIT ?"
        )
    return (
        f"{_SELECT} INDEXED BY jobs_claim_by_type WHERE state = 'pending' AND type = ?"
        f" AND run_at <= ? AND {_NOT_PAUSED}"
        " ORDER BY priority DESC, run_at, created_at, id LIMIT ?"
    )


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    message = str(exc).lower()
    return "database is locked" in message or "database is busy" in message


# ---------------------------------------------------------------- rows <-> jobs


def _decode_flag(value: object) -> bool:
    if type(value) is not int or value not in (0, 1):
        raise ValueError(f"cancel_requested must be 0 or 1, got {value!r}")
    return bool(value)


def _job_params(job: Job) -> list[Any]:
    values = job_values(job)
    values["cancel_requested"] = int(job.cancel_requested)
    return [values[name] for name in JOB_FIELDS]


def _update_params(job: Job) -> list[Any]:
    row = _job_params(job)
    return [*row[1:], row[0]]


def _decode(row: Sequence[Any]) -> Job:
    return decode_row(row, _decode_flag)


# ---------------------------------------------------------------- transactions


class _Tx:
    """The statements of one transaction; every write goes through the fault injector."""

    __slots__ = ("_conn", "_injector", "_operation")

    def __init__(
        self, conn: sqlite3.Connection, operation: str, injector: FaultInjector | None
    ) -> None:
        self._conn = conn
        self._operation = operation
        self._injector = injector

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._conn.execute(sql, params).fetchall()

    def jobs(self, sql: str, params: Sequence[Any] = ()) -> list[Job]:
        return [_decode(row) for row in self.rows(sql, params)]

    def write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one write statement; returns the number of rows it changed."""
        if self._injector is not None:
            try:
                self._injector(self._operation)
            except StoreError:
                raise
            except Exception as exc:
                raise StoreError(f"{self._operation}: write failed: {exc}", exc) from exc
        return self._conn.execute(sql, params).rowcount

    def update_many(self, changes: Sequence[tuple[Job, Job]]) -> None:
        for _, job in changes:
            try:
                self.write(_UPDATE, _update_params(job))
            except sqlite3.IntegrityError as exc:
                raise _duplicate(self, job, exc, inserting=False) from exc

    def update_all(self, job: Job) -> None:
        self.write(_UPDATE, _update_params(job))


def _duplicate(tx: _Tx, job: Job, exc: sqlite3.IntegrityError, *, inserting: bool) -> Exception:
    """The error for an INSERT or UPDATE of ``job`` refused by a constraint.

    Asked inside the failed statement's transaction, which still holds the
    write lock, so the answer is consistent with the refusal.
    """
    if inserting and tx.rows("SELECT 1 FROM jobs WHERE id = ?", (job.id,)):
        return DuplicateJobError(job.id, existing_id=job.id)
    if job.unique_key is not None:
        # Asked after _release_unique_keys: a holder left is within its window.
        holder = tx.rows(
            "SELECT id FROM jobs WHERE unique_key = ? AND id != ?", (job.unique_key, job.id)
        )
        if holder:
            return DuplicateJobError(job.id, existing_id=holder[0][0], unique_key=job.unique_key)
    if job.idempotency_key is not None:
        holder = tx.rows(
            "SELECT id FROM jobs WHERE idempotency_key = ? AND id != ?"
            " AND state IN ('pending', 'running')",
            (job.idempotency_key, job.id),
        )
        if holder:
            return DuplicateJobError(
                job.id, existing_id=holder[0][0], idempotency_key=job.idempotency_key
            )
    return StoreError(f"job {job.id!r}: constraint failed: {exc}", exc)


# ---------------------------------------------------------------- the store


class SQLiteJobStore(SqlJobStore[_Tx]):
    """A :class:`~taskrunner.jobs.stores.store.JobStore` in one SQLite file.

    ``path`` is the database file (created if missing; ``":memory:"`` gives a
    private in-memory database, without WAL).  ``synchronous`` is one of
    :data:`SYNCHRONOUS_MODES` (``FULL`` by default: every commit is fsynced;
    ``NORMAL`` may lose the last commits on power loss, never corrupts).
    ``busy_timeout`` is how long, in seconds, an operation waits for another
    connection's write lock before raising :class:`StoreError`.

    Opening applies the pending migrations; a :class:`StoreError` is raised if
    the file cannot be opened, is not a taskrunner store, or was written by a
    newer schema version.  Thread-safe (see the module docstring).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 5.0,
        fault_injector: FaultInjector | None = None,
    ) -> None:
        if not isinstance(synchronous, str):
            raise TypeError(f"synchronous must be a str, got {type(synchronous).__name__}")
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise ValueError(
                f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, got {synchronous!r}"
            )
        if isinstance(busy_timeout, bool) or not isinstance(busy_timeout, int | float):
            raise TypeError(f"busy_timeout must be a number, got {type(busy_timeout).__name__}")
        if not math.isfinite(busy_timeout) or busy_timeout < 0:
            raise ValueError(f"busy_timeout must be a finite number >= 0, got {busy_timeout}")
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
        self._path = os.fspath(path)
        if not isinstance(self._path, str):
            raise TypeError(f"path must name a file as text, not {type(self._path).__name__}")
        if not self._path:
            raise ValueError("path must not be empty (':memory:' is a private in-memory store)")
        self._synchronous = synchronous.upper()
        self._busy_timeout = float(busy_timeout)
        self._fault_injector = fault_injector
        # _lock guards _conn and _closed: each operation runs entirely under it.
        self._lock = threading.Lock()
        self._closed = False
        private = self._path == ":memory:" or self._path.startswith("file:")
        self._wake = None if private else WakeDirectory(wake_directory_for(self._path))
        # A private database is probed through this store (its own connection cannot see it).
        self._subscriptions = Subscriptions(
            lambda deliver: Listener(
                self._wake,
                PendingProbe(self._path, self._busy_timeout, self.next_due if private else None),
                deliver,
            )
        )
        try:
            self._conn = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout,
                isolation_level=None,  # autocommit: we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # shared by threads, under _lock
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open job store {self._path!r}: {exc}", exc) from exc
        try:
            self._configure()
            self._migrate()
        except BaseException:
            self._conn.close()
            self._closed = True
            raise

    # ------------------------------------------------------------ setup

    def _configure(self) -> None:
        ms = round(self._busy_timeout * 1000)

        def configure() -> None:
            self._conn.execute(f"PRAGMA busy_timeout = {ms}")
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal" and self._path != ":memory:":
                raise StoreError(f"cannot use WAL journal mode on {self._path!r} (got {mode!r})")
            self._conn.execute(f"PRAGMA synchronous = {self._synchronous}")

        with self._lock:
            self._retrying("open", configure)

    def _migrate(self) -> None:
        current = self._read("open", lambda tx: tx.rows("PRAGMA user_version")[0][0])
        if current > SCHEMA_VERSION:
            raise StoreError(self._newer_message(current))
        if current == SCHEMA_VERSION:
            return

        def migrate(tx: _Tx) -> None:
            version = tx.rows("PRAGMA user_version")[0][0]  # again, under the write lock
            if version > SCHEMA_VERSION:
                raise StoreError(self._newer_message(version))
            for migration in MIGRATIONS:
                if migration.version > version:
                    for statement in migration.statements:
                        tx.write(statement)
                    tx.write(f"PRAGMA user_version = {migration.version:d}")

        self._transaction("migrate", migrate)

    def _newer_message(self, version: int) -> str:
        return (
            f"job store {self._path!r} has schema version {version}, newer than this "
            f"taskrunner supports ({SCHEMA_VERSION})"
        )

    # ------------------------------------------------------------ running statements

    def _retrying(self, operation: str, attempt: Callable[[], T]) -> T:
        """Run ``attempt()`` (under _lock), retrying while SQLite is busy, up to busy_timeout."""
        deadline = time.monotonic() + self._busy_timeout
        pause = 0.001
        while True:
            try:
                return attempt()
            except sqlite3.Error as exc:
                if _is_busy(exc) and time.monotonic() < deadline:
                    time.sleep(pause)  # waiting for another process's lock, not synchronising
                    pause = min(pause * 2, 0.05)
                    continue
                raise StoreError(f"{operation}: {exc}", exc) from exc

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the job store is closed")

    def _transaction(self, operation: str, body: Callable[[_Tx], T]) -> T:
        """Run ``body`` in one BEGIN IMMEDIATE transaction; roll back if anything raises."""
        conn = self._conn
        tx = _Tx(conn, operation, self._fault_injector)

        def attempt() -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = body(tx)
                tx.write("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
            return result

        with self._lock:
            self._check_open()
            result = self._retrying(operation, attempt)
        if operation in _WAKING:
            due = pending_due(result)
            if due != math.inf:
                self.announce(due)
        return result

    def _read(self, operation: str, body: Callable[[_Tx], T]) -> T:
        """Run ``body``, which only reads, with busy retries."""
        tx = _Tx(self._conn, operation, None)
        with self._lock:
            self._check_open()
            return self._retrying(operation, lambda: body(tx))

    # ------------------------------------------------------------ the primitives

    def _ensure_open(self) -> None:
        with self._lock:
            self._check_open()

    def _insert(self, batch: Sequence[Job]) -> None:
        def insert(tx: _Tx) -> None:
            self._release_unique_keys(tx, batch)
            self._insert_in(tx, batch)

        self._transaction("insert", insert)
        if batch:
            self.announce(min(job.run_at for job in batch))

    def insert_in(self, connection: object, jobs: Sequence[Job]) -> None:
        """Insert new ``jobs`` through ``connection`` (a ``sqlite3.Connection`` to this
        file) in its open transaction, without committing: see
        :mod:`~taskrunner.jobs.stores.tx_enqueue`.  Call :meth:`announce` after committing."""
        conn = check_sqlite_connection(self._path, connection)
        self._check_open()  # not under _lock: a claim may hold it, waiting for the caller's commit
        batch = self._checked_new(jobs)
        tx = _Tx(conn, "insert", self._fault_injector)
        with sqlite_savepoint(conn):  # all of the batch or none of it
            for job in batch:
                try:
                    tx.write(_INSERT, _job_params(job))
                except sqlite3.IntegrityError as exc:
                    raise _duplicate(tx, job, exc, inserting=True) from exc

    def _insert_in(self, tx: _Tx, jobs: Sequence[Job]) -> None:
        for job in jobs:
            try:
                tx.write(_INSERT, _job_params(job))
            except sqlite3.IntegrityError as exc:
                raise _duplicate(tx, job, exc, inserting=True) from exc

    # ------------------------------------------------------------ the dialect

    _mark = "?"
    _table = "jobs"
    _queues_table = "queues"
    _queue_index = " INDEXED BY jobs_claim_by_queue"
    _schedules_table = "schedules"
    _for_update = ""  # the write lock (BEGIN IMMEDIATE) covers every row
    _skip_locked = ""
    _chunk = _CHUNK

    def _in(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        return f"{column} IN ({', '.join('?' * len(values))})", list(values)

    def _after(self, position: tuple[float, str]) -> tuple[str, list[Any]]:
        created_at, job_id = position
        return "(created_at > ? OR (created_at = ? AND id > ?))", [created_at, created_at, job_id]

    def _claim_query(self, of_type: bool) -> str:
        return _claim_sql(of_type)

    def close(self) -> None:
        """Close the connection and stop the wake-up listener.  Idempotent."""
        self._subscriptions.close()
        if self._wake is not None:
            self._wake.close()
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    # ------------------------------------------------------------ wake-ups (sqlite_wake)

    def announce(self, due_at: float | None = None) -> None:
        """Tell every listener of this file, in any process, that jobs became pending.

        The store calls it after each commit that makes jobs pending; call it
        yourself after committing a transactional enqueue (``submit(...,
        connection=conn)``), whose commit the store cannot see.  ``due_at`` is
        the earliest due time (``None``: now).  Best effort, never raises."""
        if self._wake is not None:
            self._wake.poke(due_at)
        self._subscriptions.deliver(due_at)

    def subscribe(self, callback: Callable[[float | None], None]) -> Callable[[], None]:
        """Call ``callback(due_at)`` when jobs become pending in this file; returns an unsubscribe.

        As :meth:`PostgresJobStore.subscribe
        <taskrunner.jobs.stores.postgres_store.PostgresJobStore.subscribe>`: ``due_at``
        is the earliest due time of the jobs, ``None`` means "look now".  Wake-ups
        come from this store's own writes and, through the sockets of
        :mod:`~taskrunner.jobs.stores.sqlite_wake`, from other processes' stores on the
        same file; the listener thread also polls adaptively (every 50 ms while
        it finds due jobs, backing off to 1 s).  Callbacks run one at a time on
        the listener thread or the writing thread: they must be quick; an
        exception is logged and ignored.  The first subscription starts the
        listener, the last unsubscribe stops it.  ``ClosedError`` after close."""
        self._ensure_open()
        return self._subscriptions.subscribe(callback)

    def wait_listening(self, timeout: float | None = None) -> bool:
        """Wait until the listener runs (True) or ``timeout`` passes; False if none subscribed."""
        return self._subscriptions.wait_listening(timeout)

    # ------------------------------------------------------------ extras

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    def pragmas(self) -> dict[str, Any]:
        """The connection's settings as SQLite reports them (for diagnostics and tests).

        Keys: ``journal_mode``, ``synchronous`` (0-3, see :data:`SYNCHRONOUS_MODES`),
        ``busy_timeout`` (ms) and ``user_version`` (the schema version).
        """

        def read(tx: _Tx) -> dict[str, Any]:
            names = ("journal_mode", "synchronous", "busy_timeout", "user_version")
            return {name: tx.rows(f"PRAGMA {name}")[0][0] for name in names}

        return self._read("pragmas", read)

    def __enter__(self) -> SQLiteJobStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<SQLiteJobStore {self._path!r} ({state})>"
