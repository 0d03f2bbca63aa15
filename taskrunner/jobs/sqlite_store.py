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
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from taskrunner.errors import ClosedError
from taskrunner.jobs.errors import (
    CorruptJobError,
    DuplicateJobError,
    JobError,
    JobRunningError,
    StoreError,
    UnknownJobError,
)
from taskrunner.jobs.model import (
    JOB_FIELDS,
    MAX_PRIORITY,
    MIN_PRIORITY,
    Job,
    check_duration,
    check_name,
    check_time,
)
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
    corrupt_reason,
    decode_cursor,
    encode_cursor,
    on_attempt,
)

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SYNCHRONOUS_MODES", "Migration", "SQLiteJobStore"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: run ``statements`` in order to go from ``version - 1`` to ``version``."""

    version: int
    description: str
    statements: tuple[str, ...]


#: The schema history.  Append only: a released migration is never edited.
MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        1,
        "the jobs table and its indexes",
        (
            """
            CREATE TABLE jobs (
                id               TEXT PRIMARY KEY NOT NULL,
                type             TEXT NOT NULL,
                args             BLOB NOT NULL,
                state            TEXT NOT NULL CHECK (
                    state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
                priority         INTEGER NOT NULL,
                attempt          INTEGER NOT NULL,
                max_attempts     INTEGER NOT NULL,
                created_at       REAL NOT NULL,
                updated_at       REAL NOT NULL,
                run_at           REAL NOT NULL,
                timeout          REAL,
                idempotency_key  TEXT,
                owner            TEXT,
                lease_expires_at REAL,
                result           BLOB,
                last_error       TEXT,
                error_traceback  TEXT,
                finished_at      REAL
            )
            """,
            # Listing, unfiltered and by state, in (created_at, id) order.
            "CREATE INDEX jobs_by_created ON jobs (created_at, id)",
            "CREATE INDEX jobs_by_state ON jobs (state, created_at, id)",
            # Claiming: pending jobs in claim order.
            "CREATE INDEX jobs_claim_order ON jobs (priority DESC, run_at, created_at, id)"
            " WHERE state = 'pending'",
            # Recovery: running jobs by lease deadline.
            "CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 'running'",
            # Purging finished jobs.
            "CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL",
            # An idempotency key is held by at most one unfinished job.
            "CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key)"
            " WHERE idempotency_key IS NOT NULL AND state IN ('pending', 'running')",
        ),
    ),
    Migration(
        2,
        "trace context, cooperative cancellation, next-due index",
        (
            "ALTER TABLE jobs ADD COLUMN trace_context TEXT",
            "ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0",
            "CREATE INDEX jobs_next_due ON jobs (run_at) WHERE state = 'pending'",
        ),
    ),
    Migration(
        3,
        "claiming by job type",
        (
            # claim_due(types=...): pending jobs of the worker's types in claim order.
            "CREATE INDEX jobs_claim_by_type ON jobs"
            " (type, priority DESC, run_at, created_at, id) WHERE state = 'pending'",
        ),
    ),
)

#: The schema version this code writes (the last migration's).
SCHEMA_VERSION: Final = MIGRATIONS[-1].version

#: Values of ``PRAGMA synchronous`` accepted, and the number SQLite reports for each.
SYNCHRONOUS_MODES: Final = {"OFF": 0, "NORMAL": 1, "FULL": 2, "EXTRA": 3}

_COLUMNS: Final = ", ".join(JOB_FIELDS)
_SELECT: Final = f"SELECT {_COLUMNS} FROM jobs"
_INSERT: Final = f"INSERT INTO jobs ({_COLUMNS}) VALUES ({', '.join('?' * len(JOB_FIELDS))})"
_UPDATE: Final = (
    "UPDATE jobs SET " + ", ".join(f"{name} = ?" for name in JOB_FIELDS[1:]) + " WHERE id = ?"
)
_CHUNK: Final = 500  # ids per IN (...) list, well under SQLite's variable limit
_SQLITE_BUSY: Final = 5
_SQLITE_LOCKED: Final = 6


def _claim_sql(of_type: bool) -> str:
    """``claim_due``'s query: due jobs of every type, or of one type (bound first).

    The typed one names its index, whose order is the claim order within a
    type, so it reads only the rows it returns: without statistics SQLite's
    planner would take ``jobs_by_state`` and sort every pending job."""
    if not of_type:
        return (
            f"{_SELECT} WHERE state = 'pending' AND run_at <= ?"
            " ORDER BY priority DESC, run_at, created_at, id LIMIT ?"
        )
    return (
        f"{_SELECT} INDEXED BY jobs_claim_by_type WHERE state = 'pending' AND type = ?"
        " AND run_at <= ? ORDER BY priority DESC, run_at, created_at, id LIMIT ?"
    )


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)
    message = str(exc).lower()
    return "database is locked" in message or "database is busy" in message


# ---------------------------------------------------------------- rows <-> jobs


def _decode_trace(text: object) -> dict[str, str] | None:
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


def _decode_flag(value: object) -> bool:
    if type(value) is not int or value not in (0, 1):
        raise ValueError(f"cancel_requested must be 0 or 1, got {value!r}")
    return bool(value)


def _job_params(job: Job) -> list[Any]:
    row: list[Any] = [getattr(job, name) for name in JOB_FIELDS]
    row[JOB_FIELDS.index("state")] = job.state.value
    row[JOB_FIELDS.index("trace_context")] = (
        None
        if job.trace_context is None
        else json.dumps(dict(job.trace_context), sort_keys=True, separators=(",", ":"))
    )
    row[JOB_FIELDS.index("cancel_requested")] = int(job.cancel_requested)
    return row


def _update_params(job: Job) -> list[Any]:
    row = _job_params(job)
    return [*row[1:], row[0]]


def _decode(row: Sequence[Any]) -> Job:
    raw = dict(zip(JOB_FIELDS, row, strict=True))
    try:
        raw["trace_context"] = _decode_trace(raw["trace_context"])
        raw["cancel_requested"] = _decode_flag(raw["cancel_requested"])
        return Job(**raw)
    except (TypeError, ValueError) as exc:
        raise CorruptJobError(str(raw["id"]), str(exc)) from exc


def _valid(check: Callable[[Any], object], value: object) -> bool:
    try:
        check(value)
    except (TypeError, ValueError):
        return False
    return True


def _repaired(row: Sequence[Any], now: float, reason: str) -> Job:
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
    keep("trace_context", _decode_trace, None)
    if raw["trace_context"] is not None:
        raw["trace_context"] = _decode_trace(raw["trace_context"])
    raw.update(
        state=JobState.FAILED,
        updated_at=now,
        finished_at=now,
        owner=None,
        lease_expires_at=None,
        cancel_requested=False,
        last_error=corrupt_reason(reason),
    )
    return Job(**raw)


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

    def get(self, job_id: str) -> Job:
        found = self.jobs(f"{_SELECT} WHERE id = ?", (job_id,))
        if not found:
            raise UnknownJobError(job_id)
        return found[0]

    def update(self, job: Job) -> None:
        self.write(_UPDATE, _update_params(job))


# ---------------------------------------------------------------- the store


class SQLiteJobStore:
    """A :class:`~taskrunner.jobs.store.JobStore` in one SQLite file.

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
        self._path = os.fspath(path)
        self._synchronous = synchronous.upper()
        self._busy_timeout = float(busy_timeout)
        self._fault_injector = fault_injector
        # _lock guards _conn and _closed: each operation runs entirely under it.
        self._lock = threading.Lock()
        self._closed = False
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
            return self._retrying(operation, attempt)

    def _read(self, operation: str, body: Callable[[_Tx], T]) -> T:
        """Run ``body``, which only reads, with busy retries."""
        tx = _Tx(self._conn, operation, None)
        with self._lock:
            self._check_open()
            return self._retrying(operation, lambda: body(tx))

    # ------------------------------------------------------------ the contract

    def insert(self, job: Job) -> None:
        self.insert_many([job])

    def insert_many(self, jobs: Sequence[Job]) -> None:
        batch = [check_new_job(job) for job in jobs]
        if not batch:
            with self._lock:
                self._check_open()
            return

        def insert(tx: _Tx) -> None:
            for job in batch:
                try:
                    tx.write(_INSERT, _job_params(job))
                except sqlite3.IntegrityError as exc:
                    raise self._duplicate(tx, job, exc, inserting=True) from exc

        self._transaction("insert", insert)

    @staticmethod
    def _duplicate(tx: _Tx, job: Job, exc: sqlite3.IntegrityError, *, inserting: bool) -> Exception:
        """The error for an INSERT or UPDATE of ``job`` refused by a constraint.

        Asked inside the failed statement's transaction, which still holds the
        write lock, so the answer is consistent with the refusal.
        """
        if inserting and tx.rows("SELECT 1 FROM jobs WHERE id = ?", (job.id,)):
            return DuplicateJobError(job.id, existing_id=job.id)
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

    def get(self, job_id: str) -> Job:
        check_job_id(job_id)
        return self._read("get", lambda tx: tx.get(job_id))

    def find_by_idempotency_key(self, key: str) -> Job | None:
        check_name("key", key)

        def find(tx: _Tx) -> Job | None:
            found = tx.jobs(
                f"{_SELECT} WHERE idempotency_key = ? AND state IN ('pending', 'running')",
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
            ordered = sorted(state.value for state in states)
            terms.append(f"state IN ({', '.join('?' * len(ordered))})")
            params.extend(ordered)
        if types is not None:
            names = sorted(types)
            terms.append(f"type IN ({', '.join('?' * len(names))})")
            params.extend(names)
        if since is not None:
            terms.append("created_at >= ?")
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
            with self._lock:
                self._check_open()
            return JobPage((), None)
        terms, params = self._where(state_set, type_set, since_f)
        if position is not None:
            terms.append("(created_at > ? OR (created_at = ? AND id > ?))")
            params.extend([position[0], position[0], position[1]])
        where = f" WHERE {' AND '.join(terms)}" if terms else ""
        sql = f"{_SELECT}{where} ORDER BY created_at, id LIMIT ?"
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
            with self._lock:
                self._check_open()
            return 0
        terms, params = self._where(state_set, type_set, since_f)
        where = f" WHERE {' AND '.join(terms)}" if terms else ""
        count: int = self._read(
            "count_jobs", lambda tx: tx.rows(f"SELECT count(*) FROM jobs{where}", params)[0][0]
        )
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
        check_owner(owner)
        now = check_now(now)
        limit = check_limit(limit)
        lease = check_lease(lease_seconds)
        wanted = check_types(types)
        if wanted is not None and not wanted:
            with self._lock:
                self._check_open()
            return []

        def claim(tx: _Tx) -> list[Job]:
            if wanted is None:
                due = tx.jobs(_claim_sql(False), (now, limit))
            else:
                # One ordered index range per type (no sort of every pending job),
                # merged into the claim order.
                found = [
                    job
                    for name in sorted(wanted)
                    for job in tx.jobs(_claim_sql(True), (name, now, limit))
                ]
                due = sorted(found, key=claim_order_key)[:limit]
            claimed = [after_claim(job, owner, now, lease) for job in due]
            for job in claimed:
                tx.update(job)
            return claimed

        return self._transaction("claim_due", claim)

    def claim(self, job_id: str, owner: str, now: float, *, lease_seconds: float) -> Job | None:
        check_job_id(job_id)
        check_owner(owner)
        now = check_now(now)
        lease = check_lease(lease_seconds)

        def claim(tx: _Tx) -> Job | None:
            job = tx.get(job_id)
            if job.state is not JobState.PENDING or job.run_at > now:
                return None
            claimed = after_claim(job, owner, now, lease)
            tx.update(claimed)
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
        check_owner(owner)
        ids = list(dict.fromkeys(check_job_id(job_id) for job_id in job_ids))
        now = check_now(now)
        lease = check_lease(lease_seconds)
        on = check_attempts(attempts)

        def renew(tx: _Tx) -> LeaseRenewal:
            found: list[Job] = []
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ", ".join("?" * len(chunk))
                found.extend(
                    tx.jobs(
                        f"{_SELECT} WHERE id IN ({marks}) AND state = 'running' AND owner = ?",
                        [*chunk, owner],
                    )
                )
            held = on_attempt(found, on)
            for job in held:
                tx.update(after_renew(job, now, lease))
            return LeaseRenewal(
                frozenset(job.id for job in held),
                frozenset(job.id for job in held if job.cancel_requested),
            )

        if not ids:
            with self._lock:
                self._check_open()
            return LeaseRenewal(frozenset(), frozenset())
        return self._transaction("renew_leases", renew)

    def _change(self, operation: str, job_id: str, change: Callable[[Job], Job]) -> Job:
        """Read one job, compute its new form with ``change``, and write it, atomically."""

        def body(tx: _Tx) -> Job:
            old = tx.get(job_id)
            new = change(old)
            if new is not old:
                try:
                    tx.update(new)
                except sqlite3.IntegrityError as exc:
                    raise self._duplicate(tx, new, exc, inserting=False) from exc
            return new

        return self._transaction(operation, body)

    def complete(
        self,
        job_id: str,
        owner: str,
        now: float,
        result: bytes | None = None,
        *,
        attempt: int | None = None,
    ) -> Job:
        check_job_id(job_id)
        check_owner(owner)
        now = check_now(now)
        check_result(result)
        attempt = check_attempt(attempt)
        return self._change(
            "complete", job_id, lambda job: after_complete(job, owner, now, result, attempt)
        )

    def complete_many(
        self, owner: str, now: float, items: Sequence[tuple[str, bytes | None, int | None]]
    ) -> list[Job | JobError]:
        """See :class:`~taskrunner.jobs.store.BatchCompletion`: one transaction for all."""
        check_owner(owner)
        now = check_now(now)
        batch = check_completions(items)

        def body(tx: _Tx) -> list[Job | JobError]:
            out, changes = after_complete_many(batch, owner, now, tx.get)
            for _, new in changes:
                tx.update(new)
            return out

        if not batch:
            return []
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
        check_job_id(job_id)
        check_owner(owner)
        now = check_now(now)
        check_text("error", error)
        check_optional_text("traceback", traceback)
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
        check_job_id(job_id)
        if owner is not None:
            check_owner(owner)
        now = check_now(now)
        check_text("reason", reason)
        attempt = check_attempt(attempt)
        return self._change(
            "mark_cancelled",
            job_id,
            lambda job: after_mark_cancelled(job, owner, now, reason, attempt),
        )

    def cancel(self, job_id: str, now: float, reason: str = "cancelled") -> Job:
        check_job_id(job_id)
        now = check_now(now)
        check_text("reason", reason)
        return self._change("cancel", job_id, lambda job: after_cancel(job, now, reason))

    def retry(self, job_id: str, now: float, run_at: float | None = None) -> Job:
        check_job_id(job_id)
        now = check_now(now)
        due = now if run_at is None else check_time("run_at", run_at)
        return self._change("retry", job_id, lambda job: after_retry(job, now, due))

    def recover_expired(self, now: float, *, interrupted_reason: str = "interrupted") -> list[Job]:
        now = check_now(now)
        check_text("interrupted_reason", interrupted_reason)

        def recover(tx: _Tx) -> list[Job]:
            expired = tx.jobs(
                f"{_SELECT} WHERE state = 'running' AND lease_expires_at <= ?"
                " ORDER BY lease_expires_at, id",
                (now,),
            )
            recovered = [after_recover(job, now, interrupted_reason) for job in expired]
            for job in recovered:
                tx.update(job)
            return recovered

        return self._transaction("recover_expired", recover)

    def fail_corrupt(self, job_id: str, now: float, reason: str) -> None:
        check_job_id(job_id)
        now = check_now(now)
        check_text("reason", reason)

        def repair(tx: _Tx) -> None:
            rows = tx.rows(f"{_SELECT} WHERE id = ?", (job_id,))
            if not rows:
                raise UnknownJobError(job_id)
            try:
                job = _repaired(rows[0], now, reason)
            except (TypeError, ValueError) as exc:
                raise StoreError(f"job {job_id!r} cannot be repaired: {exc}", exc) from exc
            tx.update(job)

        self._transaction("fail_corrupt", repair)

    def next_due(self) -> float | None:
        def earliest(tx: _Tx) -> float | None:
            rows = tx.rows(
                "SELECT id, run_at FROM jobs WHERE state = 'pending' ORDER BY run_at LIMIT 1"
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
                "DELETE FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?"
                " AND state IN ('succeeded', 'failed', 'cancelled')",
                (limit,),
            )

        return self._transaction("purge", purge)

    def delete(self, job_id: str) -> Job:
        check_job_id(job_id)

        def delete(tx: _Tx) -> Job:
            job = tx.get(job_id)
            if job.state is JobState.RUNNING:
                raise JobRunningError(job_id, "delete")
            tx.write("DELETE FROM jobs WHERE id = ?", (job_id,))
            return job

        return self._transaction("delete", delete)

    def clear(self) -> int:
        def clear(tx: _Tx) -> int:
            running = tx.rows("SELECT id FROM jobs WHERE state = 'running' LIMIT 1")
            if running:
                raise JobRunningError(running[0][0], "clear")
            return tx.write("DELETE FROM jobs")

        return self._transaction("clear", clear)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

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
