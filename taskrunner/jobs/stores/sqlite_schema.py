"""The SQLite job store's schema: its migrations, in order (append only).

:class:`~taskrunner.jobs.stores.sqlite_store.SQLiteJobStore` applies the missing ones
when it opens a file, in one transaction each, and records the version in
``PRAGMA user_version`` (see its ``_migrate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Migration"]


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
    Migration(
        4,
        "job queues: each job's queue, claiming by queue and type, paused queues",
        (
            "ALTER TABLE jobs ADD COLUMN queue TEXT NOT NULL DEFAULT 'default'",
            # claim_due(queues=..., types=...): a queue's pending jobs of one type in claim order.
            "CREATE INDEX jobs_claim_by_queue ON jobs"
            " (queue, type, priority DESC, run_at, created_at, id) WHERE state = 'pending'",
            # One row per queue ever paused or resumed; claims skip the paused ones.
            """
            CREATE TABLE queues (
                name       TEXT PRIMARY KEY NOT NULL,
                paused     INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
                updated_at REAL NOT NULL
            )
            """,
        ),
    ),
    Migration(
        5,
        "job uniqueness (unique_for/unique_by)",
        (
            "ALTER TABLE jobs ADD COLUMN unique_key TEXT",
            "ALTER TABLE jobs ADD COLUMN unique_until REAL",
            # A unique key is held by one job at a time; an insert first releases
            # the keys whose window ended (SqlJobStore._release_unique_keys).
            "CREATE UNIQUE INDEX jobs_unique_key ON jobs (unique_key) WHERE unique_key IS NOT NULL",
        ),
    ),
    Migration(
        6,
        "periodic schedules",
        (
            """
            CREATE TABLE schedules (
                name          TEXT PRIMARY KEY NOT NULL,
                type          TEXT NOT NULL,
                args          BLOB NOT NULL,
                cron          TEXT,
                every         REAL,
                timezone      TEXT NOT NULL,
                misfire       TEXT NOT NULL CHECK (misfire IN ('once', 'all', 'skip')),
                misfire_grace REAL NOT NULL,
                priority      INTEGER NOT NULL,
                max_attempts  INTEGER NOT NULL,
                timeout       REAL,
                start         REAL,
                next_run_at   REAL,
                created_at    REAL NOT NULL,
                updated_at    REAL NOT NULL,
                CHECK ((cron IS NULL) <> (every IS NULL))
            )
            """,
            # due_schedules and next_schedule_at.
            "CREATE INDEX schedules_next_run ON schedules (next_run_at)"
            " WHERE next_run_at IS NOT NULL",
        ),
    ),
)

#: The schema version this code writes (the last migration's).
SCHEMA_VERSION: Final = MIGRATIONS[-1].version
