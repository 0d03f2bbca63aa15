"""The schedule primitives of the SQL store, written once for SQLite and PostgreSQL.

:class:`SqlSchedules` implements :class:`~taskrunner.jobs.stores.schedule_store.ScheduleMethods`'
primitives over the ``schedules`` table with the dialect's transactions,
placeholder and row locks (see :mod:`taskrunner.jobs.stores.sql_store`); the one
thing a dialect adds is :meth:`SqlSchedules._insert_in`, which inserts new
jobs inside a transaction (and, on PostgreSQL, notifies listeners at commit).
The upsert (``INSERT ... ON CONFLICT (name) DO UPDATE``) is spelled the same
by both databases.  No state of its own; atomicity is the dialect's.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from taskrunner.jobs.model import Job
from taskrunner.jobs.schedule_model import SCHEDULE_FIELDS, Schedule, ScheduleError, after_put
from taskrunner.jobs.stores.schedule_store import Plan, ScheduleMethods

__all__ = ["SqlSchedules"]

T = TypeVar("T")
TxT = TypeVar("TxT")

_COLUMNS = ", ".join(SCHEDULE_FIELDS)


def decode_schedule(row: Sequence[Any]) -> Schedule:
    """The schedule a row holds; ScheduleError naming it if the row is not a valid one."""
    raw = dict(zip(SCHEDULE_FIELDS, row, strict=True))
    if isinstance(raw["args"], memoryview):
        raw["args"] = bytes(raw["args"])
    try:
        return Schedule(**raw)
    except (TypeError, ValueError) as exc:
        raise ScheduleError(f"schedule {raw['name']!r} is corrupt: {exc}") from exc


class SqlSchedules(ScheduleMethods, Generic[TxT]):
    """The schedule primitives over a SQL dialect (mixed into ``SqlJobStore``)."""

    __slots__ = ()

    _mark: str
    _table: str
    _for_update: str
    _chunk: int | None
    #: The schedules table, as SQL names it.
    _schedules_table: str

    @abstractmethod
    def _transaction(self, operation: str, body: Callable[[TxT], T]) -> T: ...

    @abstractmethod
    def _read(self, operation: str, body: Callable[[TxT], T]) -> T: ...

    @abstractmethod
    def _in(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]: ...

    @abstractmethod
    def _insert_in(self, tx: TxT, jobs: Sequence[Job]) -> None:
        """Insert new ``jobs`` (their ids free) in the transaction ``tx``."""

    # ------------------------------------------------------------ helpers

    def _schedule_rows(self, tx: Any, where: str, params: Sequence[Any]) -> list[Schedule]:
        rows = tx.rows(f"SELECT {_COLUMNS} FROM {self._schedules_table}{where}", params)
        return [decode_schedule(row) for row in rows]

    def _taken_ids(self, tx: Any, ids: Sequence[str]) -> set[str]:
        size = self._chunk or len(ids)
        taken: set[str] = set()
        for start in range(0, len(ids), size):
            term, params = self._in("id", ids[start : start + size])
            taken.update(
                row[0] for row in tx.rows(f"SELECT id FROM {self._table} WHERE {term}", params)
            )
        return taken

    # ------------------------------------------------------------ the primitives

    def _put_schedule(self, schedule: Schedule) -> Schedule:
        m = self._mark
        updates = ", ".join(f"{name} = excluded.{name}" for name in SCHEDULE_FIELDS[1:])
        sql = (
            f"INSERT INTO {self._schedules_table} ({_COLUMNS})"
            f" VALUES ({', '.join([m] * len(SCHEDULE_FIELDS))})"
            f" ON CONFLICT (name) DO UPDATE SET {updates}"
        )

        def put(tx: Any) -> Schedule:
            old = self._schedule_rows(tx, f" WHERE name = {m}{self._for_update}", (schedule.name,))
            stored = after_put(old[0] if old else None, schedule)
            tx.write(sql, [getattr(stored, name) for name in SCHEDULE_FIELDS])
            return stored

        return self._transaction("put_schedule", put)

    def _get_schedule(self, name: str) -> Schedule | None:
        def get(tx: Any) -> Schedule | None:
            found = self._schedule_rows(tx, f" WHERE name = {self._mark}", (name,))
            return found[0] if found else None

        return self._read("get_schedule", get)

    def _list_schedules(self) -> list[Schedule]:
        return self._read(
            "list_schedules", lambda tx: self._schedule_rows(tx, " ORDER BY name", ())
        )

    def _delete_schedule(self, name: str) -> bool:
        def delete(tx: Any) -> bool:
            sql = f"DELETE FROM {self._schedules_table} WHERE name = {self._mark}"
            return bool(tx.write(sql, (name,)))

        return self._transaction("delete_schedule", delete)

    def _due_schedules(self, now: float) -> list[str]:
        sql = (
            f"SELECT name FROM {self._schedules_table} WHERE next_run_at <= {self._mark}"
            " ORDER BY next_run_at, name"
        )

        def due(tx: Any) -> list[str]:
            return [row[0] for row in tx.rows(sql, (now,))]

        return self._read("due_schedules", due)

    def _fire(self, name: str, now: float, plan: Plan) -> list[Job]:
        m = self._mark

        def fire(tx: Any) -> list[Job]:
            found = self._schedule_rows(tx, f" WHERE name = {m}{self._for_update}", (name,))
            if not found:
                return []
            jobs, new = plan(found[0])
            if new is found[0]:
                return []
            if jobs:
                taken = self._taken_ids(tx, [job.id for job in jobs])
                jobs = [job for job in jobs if job.id not in taken]
            if jobs:
                self._insert_in(tx, jobs)
            tx.write(
                f"UPDATE {self._schedules_table} SET next_run_at = {m}, updated_at = {m}"
                f" WHERE name = {m}",
                (new.next_run_at, new.updated_at, name),
            )
            return jobs

        return self._transaction("fire_schedule", fire)

    def _next_schedule_at(self) -> float | None:
        def earliest(tx: Any) -> float | None:
            rows = tx.rows(f"SELECT min(next_run_at) FROM {self._schedules_table}")
            return None if not rows or rows[0][0] is None else float(rows[0][0])

        return self._read("next_schedule_at", earliest)
