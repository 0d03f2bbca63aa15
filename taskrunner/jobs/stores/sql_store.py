"""One SQL job store, two dialects: the queries SQLite and PostgreSQL share.

:class:`SqlJobStore` implements the primitives of
:class:`~taskrunner.jobs.stores.base_store.BaseJobStore` with SQL written once: the
reads (get, idempotency key, listing, counting, next due), the claim in claim
order (one ordered index range per job type, merged), lease renewal, a
one-job change (lock, apply a rule of :mod:`taskrunner.jobs.stores.rules`, write),
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
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

from taskrunner.jobs.errors import (
    CorruptJobError,
    JobError,
    JobRunningError,
    StoreError,
    UnknownJobError,
)
from taskrunner.jobs.model import JOB_FIELDS, Job, check_time
from taskrunner.jobs.queues import QueueInfo, queue_info, take_by_queue
from taskrunner.jobs.states import JobState
from taskrunner.jobs.stores.base_store import BaseJobStore, Filters
from taskrunner.jobs.stores.rules import (
    after_claim,
    after_complete_many,
    after_recover,
    after_renew,
    claim_order_key,
    on_attempt,
)
from taskrunner.jobs.stores.sql_rows import repaired
from taskrunner.jobs.stores.sql_schedules import SqlSchedules
from taskrunner.jobs.stores.store import LeaseRenewal

__all__ = ["SqlJobStore", "SqlTx"]


class _ClaimKey(NamedTuple):
    """One due job's place in the claim order, and its queue (for the queue caps)."""

    order: tuple[int, float, float, str]
    queue: str


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
    #: The table of paused (and resumed) queues, as SQL names it.
    _queues_table: str
    #: Names the (queue, type, claim order) index in a query, where the planner needs telling.
    _queue_index: str
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

    def _queue_claim_query(self, of_type: bool, keys: bool = False) -> str:
        """Due jobs of one queue in claim order, none if it is paused: parameters
        ``(queue, [type,] now, limit)``.

        With ``keys``, only their claim-order columns ``(id, priority, run_at,
        created_at)``, all in the index: read without touching the rows."""
        m = self._mark
        select = (
            f"SELECT id, priority, run_at, created_at FROM {self._table}" if keys else self._select
        )
        not_paused = f"SELECT name FROM {self._queues_table} WHERE paused = TRUE"
        return (
            f"{select}{self._queue_index if of_type else ''}"
            f" WHERE state = 'pending' AND queue = {m}"
            f"{f' AND type = {m}' if of_type else ''} AND run_at <= {m}"
            f" AND queue NOT IN ({not_paused})"
            f" ORDER BY priority DESC, run_at, created_at, id LIMIT {m}{self._skip_locked}"
        )

    def _claim_due(
        self,
        owner: str,
        now: float,
        limit: int,
        lease: float,
        types: frozenset[str] | None,
        queues: Mapping[str, int] | None,
    ) -> list[Job]:
        def claim(tx: TxT) -> list[Job]:
            if queues is not None:
                due = self._claim_from_queues(tx, now, limit, types, queues)
            elif types is None:
                found = tx.jobs(self._claim_query(False), (now, limit))
                due = sorted(found, key=claim_order_key)[:limit]
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

    def _claim_from_queues(
        self,
        tx: TxT,
        now: float,
        limit: int,
        types: frozenset[str] | None,
        queues: Mapping[str, int],
    ) -> list[Job]:
        """The due jobs to claim from ``queues`` (each up to its cap), in claim order.

        One ordered index range per (queue, type), merged into the claim order,
        then each queue's cap applied; each query skips a paused queue (it reads
        the paused flags in the claim's own transaction).  When the ranges
        may hold more rows than can be taken (several types, or caps above the
        limit), only their keys are read first (from the index), so that the rows
        not taken are never decoded; then the rows taken."""
        caps = dict(queues)
        ranges: list[tuple[str, str | None]] = [
            (queue, name) for queue in sorted(caps) for name in sorted(types or ())
        ] or [(queue, None) for queue in sorted(caps)]
        if not ranges:
            return []

        def params(queue: str, name: str | None) -> tuple[Any, ...]:
            most = min(caps[queue], limit)
            return (queue, now, most) if name is None else (queue, name, now, most)

        if sum(min(caps[queue], limit) for queue, _ in ranges) <= limit:
            # Every row read may be taken: read them whole at once.
            whole = [
                job
                for queue, name in ranges
                for job in tx.jobs(self._queue_claim_query(name is not None), params(queue, name))
            ]
            return take_by_queue(sorted(whole, key=claim_order_key), caps, limit)
        keys = [
            _ClaimKey(self._claim_key(tx, row), queue)
            for queue, name in ranges
            for row in tx.rows(self._queue_claim_query(name is not None, True), params(queue, name))
        ]
        keys.sort(key=lambda key: key.order)
        chosen = [key.order[3] for key in take_by_queue(keys, caps, limit)]
        size = self._chunk or max(1, len(chosen))
        found: dict[str, Job] = {}
        for start in range(0, len(chosen), size):
            term, ids = self._in("id", chosen[start : start + size])
            found.update((job.id, job) for job in tx.jobs(f"{self._select} WHERE {term}", ids))
        return [found[job_id] for job_id in chosen if job_id in found]

    def _claim_key(self, tx: TxT, row: Sequence[Any]) -> tuple[int, float, float, str]:
        """The claim-order key of a keys row; CorruptJobError if its values cannot be one."""
        job_id, priority, run_at, created_at = row
        if (
            isinstance(job_id, str)
            and type(priority) is int
            and type(run_at) in (int, float)
            and type(created_at) in (int, float)
        ):
            return (-priority, float(run_at), float(created_at), job_id)
        tx.jobs(f"{self._select} WHERE id = {self._mark}", (job_id,))  # raises CorruptJobError
        raise CorruptJobError(str(job_id), "its claim order (priority, run_at, created_at) is bad")

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

    def _set_paused(self, queue: str, paused: bool, now: float) -> bool:
        m, table = self._mark, self._queues_table

        def body(tx: TxT) -> bool:
            rows = tx.rows(
                f"SELECT paused FROM {table} WHERE name = {m}{self._for_update}", (queue,)
            )
            before = bool(rows[0][0]) if rows else False
            tx.write(
                f"INSERT INTO {table} (name, paused, updated_at) VALUES ({m}, {m}, {m})"
                " ON CONFLICT (name) DO UPDATE"
                " SET paused = excluded.paused, updated_at = excluded.updated_at",
                (queue, paused, now),
            )
            if before and not paused:
                self._resumed(tx, now)
            return before != paused

        return self._transaction("pause_queue" if paused else "resume_queue", body)

    def _resumed(self, tx: TxT, now: float) -> None:
        """A queue was resumed in ``tx``: a dialect that can wake workers does so."""

    def _list_queues(self, now: float) -> list[QueueInfo]:
        def read(tx: TxT) -> list[QueueInfo]:
            counts = tx.rows(
                f"SELECT queue, state, count(*),"
                f" min(CASE WHEN state = 'pending' AND run_at <= {self._mark} THEN run_at END)"
                f" FROM {self._table} WHERE state IN ('pending', 'running')"
                " GROUP BY queue, state",
                (now,),
            )
            flags = tx.rows(f"SELECT name, paused FROM {self._queues_table}")
            return self._queue_infos(counts, flags, now)

        return self._read("list_queues", read)

    @staticmethod
    def _queue_infos(counts: list[Any], flags: list[Any], now: float) -> list[QueueInfo]:
        pending: dict[str, int] = {}
        running: dict[str, int] = {}
        oldest: dict[str, float] = {}
        for queue, state, count, first in counts:
            (pending if state == "pending" else running)[queue] = int(count)
            if first is not None:
                oldest[queue] = float(first)
        paused = {str(name): bool(flag) for name, flag in flags}
        names = sorted({*pending, *running, *paused})
        return [
            queue_info(
                name,
                pending.get(name, 0),
                running.get(name, 0),
                oldest.get(name),
                paused.get(name, False),
                now,
            )
            for name in names
        ]

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
