"""One SQL job store, two dialects: the queries SQLite and PostgreSQL share.

:class:`SqlJobStore` implements the primitives of
:class:`~taskrunner.jobs.base_store.BaseJobStore` with SQL written once: the
reads (get, idempotency key, listing, counting, next due), the claim in claim
order (one ordered index range per job type, merged), lease renewal, a
one-job change (lock, apply a rule of :mod:`taskrunner.jobs.rules`, write),
batch completion, recovery of expired leases, repair and purge.  A dialect
subclass supplies what truly differs:

* connection handling and transactions (:meth:`~SqlJobStore._transaction`,
  :meth:`~SqlJobStore._read`), with their statement runner, an
  :class:`SqlTx`;
* the placeholder (``?`` or ``%s``) and the table's name;
* locking: PostgreSQL locks the rows it reads (``FOR UPDATE``, and ``FOR
  UPDATE SKIP LOCKED`` where claimers race), SQLite needs nothing as its one
  writer holds the database lock (``BEGIN IMMEDIATE``);
* membership in a list of values (``IN (?, ...)`` in chunks, or ``=
  ANY(%s)``), the listing cursor's comparison, and the claim query (SQLite
  names its index);
* inserts, constraint errors, notifications and the schema.

Thread-safety and atomicity are the dialect's (each body runs in one of its
transactions); this class holds no state.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from taskrunner.jobs.base_store import BaseJobStore, Filters
from taskrunner.jobs.errors import (
    CorruptJobError,
    JobError,
    JobRunningError,
    StoreError,
    UnknownJobError,
)
from taskrunner.jobs.model import JOB_FIELDS, Job, check_time
from taskrunner.jobs.rules import (
    after_claim,
    after_complete_many,
    after_recover,
    after_renew,
    claim_order_key,
    on_attempt,
)
from taskrunner.jobs.sql_rows import repaired
from taskrunner.jobs.sql_schedules import SqlSchedules
from taskrunner.jobs.states import JobState
from taskrunner.jobs.store import LeaseRenewal

__all__ = ["SqlJobStore", "SqlTx"]

T = TypeVar("T")

#: The columns of a row, in :data:`~taskrunner.jobs.model.JOB_FIELDS` order.
COLUMNS = ", ".join(JOB_FIELDS)


class SqlTx(Protocol):
    """The statements of one transaction, as a dialect runs them."""

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """The rows a query returns."""
        ...

    def jobs(self, sql: str, params: Sequence[Any] = ()) -> list[Job]:
        """The rows a query returns, decoded (CorruptJobError for a bad one)."""
        ...

    def write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one write statement; the number of rows it changed."""
        ...

    def update_many(self, changes: Sequence[tuple[Job, Job]]) -> None:
        """Write the new forms of ``(old, new)`` jobs read in this transaction."""
        ...

    def update_all(self, job: Job) -> None:
        """Rewrite every column of ``job``'s row (the repair of a corrupt row)."""
        ...


TxT = TypeVar("TxT", bound=SqlTx)


class SqlJobStore(BaseJobStore, SqlSchedules[TxT], Generic[TxT]):
    """The SQL store's primitives over a dialect (see the module docstring)."""

    __slots__ = ()

    #: The placeholder of one parameter.
    _mark: str
    #: The jobs table, as SQL names it.
    _table: str
    #: Appended to a query whose rows will be changed: locks them (or nothing).
    _for_update: str
    #: Appended to a query of rows racing claimers may hold: locks the free ones.
    _skip_locked: str
    #: How many values one membership test may hold (``None``: any number).
    _chunk: int | None

    # ------------------------------------------------------------ the dialect

    @abstractmethod
    def _transaction(self, operation: str, body: Callable[[TxT], T]) -> T:
        """Run ``body`` in one write transaction: all or nothing."""

    @abstractmethod
    def _read(self, operation: str, body: Callable[[TxT], T]) -> T:
        """Run ``body``, which only reads."""

    @abstractmethod
    def _in(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """The condition "``column`` is one of ``values``" and its parameters."""

    @abstractmethod
    def _after(self, position: tuple[float, str]) -> tuple[str, list[Any]]:
        """The condition "after ``position`` in the listing order" and its parameters."""

    @abstractmethod
    def _claim_query(self, of_type: bool) -> str:
        """Due jobs in claim order: parameters ``(now, limit)``, or ``(type, now, limit)``."""

    # ------------------------------------------------------------ shared SQL

    @property
    def _select(self) -> str:
        return f"SELECT {COLUMNS} FROM {self._table}"

    def _locked(self, tx: TxT, job_id: str) -> Job:
        """The job, read to be changed in this transaction (UnknownJobError if none)."""
        found = tx.jobs(f"{self._select} WHERE id = {self._mark}{self._for_update}", (job_id,))
        if not found:
            raise UnknownJobError(job_id)
        return found[0]

    def _where(self, filters: Filters) -> tuple[list[str], list[Any]]:
        states, types, since = filters
        terms: list[str] = []
        params: list[Any] = []
        for column, values in (
            ("state", None if states is None else sorted(state.value for state in states)),
            ("type", None if types is None else sorted(types)),
        ):
            if values is not None:
                term, values_params = self._in(column, values)
                terms.append(term)
                params.extend(values_params)
        if since is not None:
            terms.append(f"created_at >= {self._mark}")
            params.append(since)
        return terms, params

    # ------------------------------------------------------------ the primitives

    def _get(self, job_id: str) -> Job:
        def get(tx: TxT) -> Job:
            found = tx.jobs(f"{self._select} WHERE id = {self._mark}", (job_id,))
            if not found:
                raise UnknownJobError(job_id)
            return found[0]

        return self._read("get", get)

    def _find_key(self, key: str) -> Job | None:
        def find(tx: TxT) -> Job | None:
            found = tx.jobs(
                f"{self._select} WHERE idempotency_key = {self._mark}"
                " AND state IN ('pending', 'running')",
                (key,),
            )
            return found[0] if found else None

        return self._read("find_by_idempotency_key", find)

    def _list(self, filters: Filters, limit: int, position: tuple[float, str] | None) -> list[Job]:
        terms, params = self._where(filters)
        if position is not None:
            term, position_params = self._after(position)
            terms.append(term)
            params.extend(position_params)
        where = f" WHERE {' AND '.join(terms)}" if terms else ""
        sql = f"{self._select}{where} ORDER BY created_at, id LIMIT {self._mark}"
        return self._read("list_jobs", lambda tx: tx.jobs(sql, [*params, limit]))

    def _count(self, filters: Filters) -> int:
        terms, params = self._where(filters)
        where = f" WHERE {' AND '.join(terms)}" if terms else ""
        sql = f"SELECT count(*) FROM {self._table}{where}"
        count: int = self._read("count_jobs", lambda tx: tx.rows(sql, params)[0][0])
        return count

    def _claim_due(
        self, owner: str, now: float, limit: int, lease: float, types: frozenset[str] | None
    ) -> list[Job]:
        def claim(tx: TxT) -> list[Job]:
            if types is None:
                found = tx.jobs(self._claim_query(False), (now, limit))
            else:
                # One ordered index range per type (no sort of every pending job),
                # merged into the claim order.  Rows a dialect locked here but did
                # not take are released at commit.
                found = [
                    job
                    for name in sorted(types)
                    for job in tx.jobs(self._claim_query(True), (name, now, limit))
                ]
            due = sorted(found, key=claim_order_key)[:limit]
            changes = [(job, after_claim(job, owner, now, lease)) for job in due]
            tx.update_many(changes)
            return [new for _, new in changes]

        return self._transaction("claim_due", claim)

    def _renew(
        self,
        owner: str,
        ids: Sequence[str],
        now: float,
        lease: float,
        attempts: Mapping[str, int] | None,
    ) -> LeaseRenewal:
        size = self._chunk or len(ids)

        def renew(tx: TxT) -> LeaseRenewal:
            found: list[Job] = []
            for start in range(0, len(ids), size):
                term, params = self._in("id", ids[start : start + size])
                found.extend(
                    tx.jobs(
                        f"{self._select} WHERE {term} AND state = 'running'"
                        f" AND owner = {self._mark} ORDER BY id{self._for_update}",
                        [*params, owner],
                    )
                )
            held = on_attempt(found, attempts)
            tx.update_many([(job, after_renew(job, now, lease)) for job in held])
            return LeaseRenewal(
                frozenset(job.id for job in held),
                frozenset(job.id for job in held if job.cancel_requested),
            )

        return self._transaction("renew_leases", renew)

    def _change(self, operation: str, job_id: str, change: Callable[[Job], Job]) -> Job:
        def body(tx: TxT) -> Job:
            old = self._locked(tx, job_id)
            new = change(old)
            if new is not old:
                tx.update_many([(old, new)])
            return new

        return self._transaction(operation, body)

    def _complete_many(
        self, owner: str, now: float, batch: Sequence[tuple[str, bytes | None, int | None]]
    ) -> list[Job | JobError]:
        """Rows are read (and locked, where the dialect locks) in id order, whatever
        the order of ``batch``, so two owners completing overlapping batches cannot
        deadlock."""

        def body(tx: TxT) -> list[Job | JobError]:
            out, changes = after_complete_many(
                batch, owner, now, lambda job_id: self._locked(tx, job_id), lock_order=True
            )
            tx.update_many(changes)
            return out

        return self._transaction("complete", body)

    def _recover(self, now: float, reason: str) -> list[Job]:
        def recover(tx: TxT) -> list[Job]:
            expired = tx.jobs(
                f"{self._select} WHERE state = 'running' AND lease_expires_at <= {self._mark}"
                f" ORDER BY lease_expires_at, id{self._skip_locked}",
                (now,),
            )
            changes = [(job, after_recover(job, now, reason)) for job in expired]
            tx.update_many(changes)
            return [new for _, new in changes]

        return self._transaction("recover_expired", recover)

    def _fail_corrupt(self, job_id: str, now: float, reason: str) -> None:
        def repair(tx: TxT) -> None:
            rows = tx.rows(f"{self._select} WHERE id = {self._mark}{self._for_update}", (job_id,))
            if not rows:
                raise UnknownJobError(job_id)
            try:
                job = repaired(rows[0], now, reason)
            except (TypeError, ValueError) as exc:
                raise StoreError(f"job {job_id!r} cannot be repaired: {exc}", exc) from exc
            tx.update_all(job)

        self._transaction("fail_corrupt", repair)

    def next_due(self) -> float | None:
        def earliest(tx: TxT) -> float | None:
            rows = tx.rows(
                f"SELECT id, run_at FROM {self._table} WHERE state = 'pending'"
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

    def _delete(self, job_id: str) -> Job:
        def delete(tx: TxT) -> Job:
            job = self._locked(tx, job_id)  # a claim of it waits for us, or we for it
            if job.state is JobState.RUNNING:
                raise JobRunningError(job_id, "delete")
            tx.write(f"DELETE FROM {self._table} WHERE id = {self._mark}", (job_id,))
            return job

        return self._transaction("delete", delete)

    def _clear(self) -> int:
        def clear(tx: TxT) -> int:
            self._lock_all(tx)
            running = tx.rows(f"SELECT id FROM {self._table} WHERE state = 'running' LIMIT 1")
            if running:
                raise JobRunningError(running[0][0], "clear")
            return tx.write(f"DELETE FROM {self._table}")

        return self._transaction("clear", clear)

    def _release_unique_keys(self, tx: TxT, batch: Sequence[Job]) -> None:
        """Before inserting ``batch``: release the unique keys it wants whose holder's
        window has ended (by the new job's clock), so that the unique index refuses
        exactly the duplicates within a window.

        The keys are released in key order, so two inserters never lock the
        holders' rows in opposite orders.  Under PostgreSQL a concurrent inserter
        of the same key waits for the row lock, then finds the key released and
        the new holder's insert refuses its own: the index decides."""
        for job in sorted(
            (job for job in batch if job.unique_key is not None),
            key=lambda job: job.unique_key or "",
        ):
            tx.write(
                f"UPDATE {self._table} SET unique_key = NULL, unique_until = NULL"
                f" WHERE unique_key = {self._mark} AND unique_until <= {self._mark}",
                (job.unique_key, job.created_at),
            )

    def _lock_all(self, tx: TxT) -> None:
        """Hold off every other writer until ``tx`` ends, so that no claim starts
        between ``clear``'s check and its delete.  SQLite's write transaction
        (``BEGIN IMMEDIATE``) already does; PostgreSQL locks the table."""

    def _purge(self, finished_before: float) -> int:
        def purge(tx: TxT) -> int:
            return tx.write(
                f"DELETE FROM {self._table} WHERE finished_at IS NOT NULL"
                f" AND finished_at < {self._mark}"
                " AND state IN ('succeeded', 'failed', 'cancelled')",
                (finished_before,),
            )

        return self._transaction("purge", purge)
