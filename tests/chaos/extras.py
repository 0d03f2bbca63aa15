"""The fault harness's periodic schedule and transactional enqueues.

Both run while the faults do, and both are checked against what the store
holds at the end (:func:`check_ticks`, :func:`check_orders`):

* **A schedule.**  The harness declares ``tick`` (every :data:`TICK` seconds,
  ``misfire="all"``) before the workers start; every worker fires the store's
  schedules, the ``tick`` jobs run on the general workers.  When the faults end
  the harness removes the schedule.  Promise: each occurrence between the first
  and the last was enqueued exactly once (its job id names the occurrence, so
  a double would be a second id for the same time, and a gap a missing time),
  whatever workers were killed, stopped or cut off from the store meanwhile.
* **Transactional enqueues.**  A thread of the harness, in a loop: one
  transaction on its own connection to the store's database inserts a row in
  an application table ``orders`` and submits job ``tx-<n>`` with
  ``connection=``, then commits or (one in five) rolls back.  Promise: the
  order and its job are both stored or neither is; a rolled-back job never
  runs.  A transaction whose commit failed (the store down or its disk full)
  may have landed or not, and is checked for "both or neither" only.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from taskrunner.jobs import Job, JobManager, JobStore, SQLiteJobStore

__all__ = ["TICK", "Orders", "check_orders", "check_ticks", "declare_ticks", "remove_ticks"]

#: Seconds between two occurrences of the ``tick`` schedule.
TICK = 1.0
_TICK_PREFIX = "schedule:tick:"


def declare_ticks(manager: JobManager) -> None:
    """Declare the ``tick`` schedule on the manager's store (handler registered by the caller)."""
    manager.schedule(
        "tick",
        every=timedelta(seconds=TICK),
        misfire="all",
        args={"seconds": 0.05},
        max_attempts=50,
    )


def remove_ticks(manager: JobManager, attempts: int = 50) -> None:
    """Remove the schedule, retrying while the store is down (the faults have just ended)."""
    for _ in range(attempts):
        try:
            manager.unschedule("tick")
            return
        except Exception:
            time.sleep(0.5)
    raise RuntimeError("could not remove the tick schedule")


def check_ticks(jobs: dict[str, Job]) -> tuple[list[str], int]:
    """(violations, occurrences) of the ``tick`` schedule's jobs."""
    times = []
    for job_id in jobs:
        if job_id.startswith(_TICK_PREFIX):
            stamp = job_id[len(_TICK_PREFIX) :]
            when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
            times.append(when.timestamp())
    times.sort()
    problems = []
    if len(times) < 2:
        problems.append(f"the tick schedule enqueued {len(times)} occurrence(s)")
    for earlier, later in itertools.pairwise(times):
        gap = later - earlier
        if abs(gap - TICK) > 1e-3:
            what = "doubled" if gap < TICK else f"lost ({round(gap / TICK) - 1} missing)"
            problems.append(
                f"tick occurrences {datetime.fromtimestamp(earlier, UTC).isoformat()} and "
                f"{datetime.fromtimestamp(later, UTC).isoformat()}: {what}"
            )
    return problems, len(times)


class Orders:
    """The transactional submitter (a thread), and what it saw of each transaction."""

    def __init__(self, store: JobStore, dsn: str | None, db: str | None, seed: int) -> None:
        self.store = store
        self.dsn = dsn
        self.db = db
        self.rng = random.Random(seed)
        self.manager = JobManager(store)  # submits only: never started
        self.manager.register("a", lambda ctx, args: None)
        # n -> "committed", "rolled back" or "unknown" (the commit raised).
        self.outcomes: dict[int, str] = {}
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-orders", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        self.manager.shutdown()

    # ---- the loop ------------------------------------------------------------------------

    def _connect(self) -> Any:
        if self.dsn is not None:
            import psycopg

            return psycopg.connect(self.dsn, connect_timeout=2)
        import sqlite3

        assert self.db is not None
        conn = sqlite3.connect(self.db, timeout=5)
        return conn

    def _run(self) -> None:
        conn: Any = None
        n = 0
        while not self._stop.wait(self.rng.uniform(0.05, 0.3)):
            try:
                if conn is None:
                    conn = self._connect()
                    conn.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY)")
                    conn.commit()
            except Exception:
                self.errors += 1
                conn = _close(conn)
                continue
            n += 1
            commit = self.rng.random() >= 0.2
            self.outcomes[n] = "unknown"
            try:
                conn.execute(f"INSERT INTO orders (id) VALUES ({n})")
                self.manager.submit(
                    "a", {"seconds": 0.05}, job_id=f"tx-{n:05d}", max_attempts=50, connection=conn
                )
                if commit:
                    conn.commit()
                    self.outcomes[n] = "committed"
                    if isinstance(self.store, SQLiteJobStore):
                        self.store.announce()
                else:
                    conn.rollback()
                    self.outcomes[n] = "rolled back"
            except Exception:
                self.errors += 1
                with contextlib.suppress(Exception):
                    conn.rollback()
                if self.outcomes[n] == "unknown" and not commit:
                    self.outcomes[n] = "rolled back"
                conn = _close(conn)

    def order_ids(self) -> set[int]:
        conn = self._connect()
        try:
            return {row[0] for row in conn.execute("SELECT id FROM orders").fetchall()}
        finally:
            conn.close()


def _close(conn: Any) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.close()


def check_orders(
    orders: Orders, stored_orders: set[int], jobs: dict[str, Job], ran: set[str]
) -> tuple[list[str], dict[str, int]]:
    """(violations, counts): each order and its job both stored or neither; a
    committed one stored; a rolled-back one neither stored nor run."""
    problems = []
    counts = {"committed": 0, "rolled back": 0, "unknown": 0}
    for n, outcome in orders.outcomes.items():
        counts[outcome] += 1
        job_id = f"tx-{n:05d}"
        has_job, has_order = job_id in jobs, n in stored_orders
        if has_job != has_order:
            problems.append(f"transaction {n} ({outcome}): job stored {has_job}, order {has_order}")
        elif outcome == "committed" and not has_job:
            problems.append(f"transaction {n} committed, but neither order nor job is stored")
        elif outcome == "rolled back" and has_job:
            problems.append(f"transaction {n} rolled back, but its order and job are stored")
        if outcome == "rolled back" and job_id in ran:
            problems.append(f"job {job_id} of a rolled-back transaction ran")
    return problems, counts
