"""The PostgreSQL job store's schema: its migrations, and applying them safely.

The tables live in their own PostgreSQL schema (``taskrunner`` by default),
versioned by the table ``schema_version`` and built by the ordered
:data:`MIGRATIONS`.  :func:`migrate` applies them in one transaction under an
advisory lock, so processes migrating at once are serialised and the later ones
find the work done; a database migrated by a newer taskrunner is refused.
:class:`~taskrunner.jobs.stores.postgres_store.PostgresJobStore` migrates on open
unless told not to.  Functions here hold no state and are thread-safe.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from taskrunner.jobs.errors import StoreError

__all__ = [
    "DEFAULT_SCHEMA",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Migration",
    "migrate",
    "schema_version",
]

_Conn: TypeAlias = "psycopg.Connection[tuple[Any, ...]]"

#: The PostgreSQL schema that holds the tables unless the caller names another.
DEFAULT_SCHEMA: Final = "taskrunner"


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: run ``statements`` in order to go from ``version - 1`` to ``version``.

    ``{schema}`` in a statement is replaced by the quoted schema name.
    """

    version: int
    description: str
    statements: tuple[str, ...]


#: The schema history.  Append only: a released migration is never edited.
MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        1,
        "the jobs table, its indexes and constraints",
        (
            # Ids, names and keys compare by code point (COLLATE "C"), as the
            # contract orders them; times are float8, exactly the callers' floats.
            """
            CREATE TABLE {schema}.jobs (
                id               text COLLATE "C" PRIMARY KEY,
                type             text COLLATE "C" NOT NULL,
                args             bytea NOT NULL,
                state            text NOT NULL CHECK (
                    state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
                priority         integer NOT NULL,
                attempt          bigint NOT NULL,
                max_attempts     bigint NOT NULL,
                created_at       double precision NOT NULL,
                updated_at       double precision NOT NULL,
                run_at           double precision NOT NULL,
                timeout          double precision,
                idempotency_key  text COLLATE "C",
                owner            text COLLATE "C",
                lease_expires_at double precision,
                result           bytea,
                last_error       text,
                error_traceback  text,
                finished_at      double precision,
                trace_context    text,
                cancel_requested boolean NOT NULL DEFAULT false
            )
            """,
            # Listing, unfiltered and by state, in (created_at, id) order.
            "CREATE INDEX jobs_by_created ON {schema}.jobs (created_at, id)",
            "CREATE INDEX jobs_by_state ON {schema}.jobs (state, created_at, id)",
            # Claiming: pending jobs in claim order.
            "CREATE INDEX jobs_claim_order ON {schema}.jobs"
            " (priority DESC, run_at, created_at, id) WHERE state = 'pending'",
            # next_due: pending jobs by due time.
            "CREATE INDEX jobs_next_due ON {schema}.jobs (run_at) WHERE state = 'pending'",
            # Recovery: running jobs by lease deadline.
            "CREATE INDEX jobs_leases ON {schema}.jobs (lease_expires_at) WHERE state = 'running'",
            # Purging finished jobs.
            "CREATE INDEX jobs_finished ON {schema}.jobs (finished_at)"
            " WHERE finished_at IS NOT NULL",
            # An idempotency key is held by at most one unfinished job.
            "CREATE UNIQUE INDEX jobs_idempotency_key ON {schema}.jobs (idempotency_key)"
            " WHERE idempotency_key IS NOT NULL AND state IN ('pending', 'running')",
        ),
    ),
    Migration(
        2,
        "claiming by job type",
        (
            # claim_due(types=...): pending jobs of the worker's types in claim order.
            "CREATE INDEX jobs_claim_by_type ON {schema}.jobs"
            " (type, priority DESC, run_at, created_at, id) WHERE state = 'pending'",
        ),
    ),
    Migration(
        3,
        "job queues: each job's queue, claiming by queue and type, paused queues",
        (
            'ALTER TABLE {schema}.jobs ADD COLUMN queue text COLLATE "C" NOT NULL'
            " DEFAULT 'default'",
            # claim_due(queues=..., types=...): a queue's pending jobs of one type in claim order.
            "CREATE INDEX jobs_claim_by_queue ON {schema}.jobs"
            " (queue, type, priority DESC, run_at, created_at, id) WHERE state = 'pending'",
            # One row per queue ever paused or resumed; claims skip the paused ones.
            """
            CREATE TABLE {schema}.queues (
                name       text COLLATE "C" PRIMARY KEY,
                paused     boolean NOT NULL DEFAULT false,
                updated_at double precision NOT NULL
            )
            """,
        ),
    ),
    Migration(
        4,
        "job uniqueness (unique_for/unique_by)",
        (
            'ALTER TABLE {schema}.jobs ADD COLUMN unique_key text COLLATE "C"',
            "ALTER TABLE {schema}.jobs ADD COLUMN unique_until double precision",
            # A unique key is held by one job at a time; an insert first releases
            # the keys whose window ended (SqlJobStore._release_unique_keys).
            "CREATE UNIQUE INDEX jobs_unique_key ON {schema}.jobs (unique_key)"
            " WHERE unique_key IS NOT NULL",
        ),
    ),
    Migration(
        5,
        "periodic schedules",
        (
            """
            CREATE TABLE {schema}.schedules (
                name          text COLLATE "C" PRIMARY KEY,
                type          text COLLATE "C" NOT NULL,
                args          bytea NOT NULL,
                cron          text,
                every         double precision,
                timezone      text NOT NULL,
                misfire       text NOT NULL CHECK (misfire IN ('once', 'all', 'skip')),
                misfire_grace double precision NOT NULL,
                priority      integer NOT NULL,
                max_attempts  bigint NOT NULL,
                timeout       double precision,
                start         double precision,
                next_run_at   double precision,
                created_at    double precision NOT NULL,
                updated_at    double precision NOT NULL,
                CHECK ((cron IS NULL) <> (every IS NULL))
            )
            """,
            # due_schedules and next_schedule_at.
            "CREATE INDEX schedules_next_run ON {schema}.schedules (next_run_at)"
            " WHERE next_run_at IS NOT NULL",
        ),
    ),
)

#: The schema version this code writes (the last migration's).
SCHEMA_VERSION: Final = MIGRATIONS[-1].version

_SCHEMA_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,47}")


def _check_schema(schema: object) -> str:
    if not isinstance(schema, str):
        raise TypeError(f"schema must be a str, got {type(schema).__name__}")
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError(
            f"schema must be 1-48 letters, digits or underscores, not starting with a digit,"
            f" got {schema!r}"
        )
    return schema


def _check_dsn(dsn: object) -> str:
    if not isinstance(dsn, str):
        raise TypeError(f"dsn must be a str (a libpq connection string), got {type(dsn).__name__}")
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ValueError(f"dsn is not a valid connection string: {exc}") from None
    return dsn


def _describe(dsn: str) -> str:
    """The DSN without its password, for messages."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "<invalid dsn>"
    params.pop("password", None)
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None}) or "<default>"


def _advisory_key(schema: str) -> int:
    """The advisory lock taken while migrating ``schema`` (the same in every process)."""
    digest = hashlib.blake2b(f"taskrunner.migrate:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _quoted_schema(schema: str) -> str:
    return f'"{_check_schema(schema)}"'


def _read_version(conn: _Conn, schema: str) -> int:
    """The schema's version (0 when it has no version table), read without locks."""
    found = conn.execute(
        "SELECT to_regclass(%s)", (f"{_quoted_schema(schema)}.schema_version",)
    ).fetchone()
    if found is None or found[0] is None:
        return 0
    row = conn.execute(
        f"SELECT coalesce(max(version), 0) FROM {_quoted_schema(schema)}.schema_version"
    ).fetchone()
    return int(row[0]) if row is not None else 0


def _newer_message(schema: str, version: int) -> str:
    return (
        f"schema {schema!r} has version {version}, newer than this taskrunner supports "
        f"({SCHEMA_VERSION})"
    )


def _apply_migrations(
    conn: _Conn,
    schema: str,
    injector: Callable[[], None] | None = None,
    migrations: Sequence[Migration] | None = None,
) -> int:
    """Bring ``schema`` up to date in one transaction; returns its version.  Autocommit ``conn``."""
    steps = MIGRATIONS if migrations is None else tuple(migrations)
    target = steps[-1].version if steps else 0
    quoted = _quoted_schema(schema)
    current = _read_version(conn, schema)
    if current > target:
        raise StoreError(_newer_message(schema, current))
    if current == target:
        return current  # the usual case: nothing to lock, no DDL rights needed
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_advisory_key(schema),))
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {quoted}.schema_version ("
            " version integer PRIMARY KEY,"
            " description text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = _read_version(conn, schema)  # again, under the lock
        if current > target:
            raise StoreError(_newer_message(schema, current))
        for migration in steps:
            if migration.version <= current:
                continue
            for statement in migration.statements:
                if injector is not None:
                    injector()
                conn.execute(statement.replace("{schema}", quoted))
            conn.execute(
                f"INSERT INTO {quoted}.schema_version (version, description) VALUES (%s, %s)",
                (migration.version, migration.description),
            )
            current = migration.version
        if injector is not None:
            injector()
    return current


def migrate(dsn: str, *, schema: str = DEFAULT_SCHEMA, connect_timeout: float = 10.0) -> int:
    """Create or upgrade the job tables in ``schema`` at ``dsn``; returns the schema version.

    Idempotent, and safe to run from several processes at once (an advisory
    lock serialises them).  Raises :class:`StoreError` if the database cannot
    be reached or was migrated by a newer taskrunner.  This is what
    ``taskrunner db migrate --dsn DSN`` runs.
    """
    dsn = _check_dsn(dsn)
    schema = _check_schema(schema)
    try:
        with psycopg.connect(
            dsn, autocommit=True, connect_timeout=_timeout(connect_timeout)
        ) as conn:
            return _apply_migrations(conn, schema)
    except psycopg.Error as exc:
        raise StoreError(
            f"cannot migrate {_describe(dsn)} (schema {schema!r}): {exc}", exc
        ) from exc


def schema_version(dsn: str, *, schema: str = DEFAULT_SCHEMA, connect_timeout: float = 10.0) -> int:
    """The version of ``schema`` in the database at ``dsn`` (0 if it was never migrated)."""
    dsn = _check_dsn(dsn)
    schema = _check_schema(schema)
    try:
        with psycopg.connect(
            dsn, autocommit=True, connect_timeout=_timeout(connect_timeout)
        ) as conn:
            return _read_version(conn, schema)
    except psycopg.Error as exc:
        raise StoreError(f"cannot read the schema version of {_describe(dsn)}: {exc}", exc) from exc


def _timeout(seconds: float) -> int:
    """libpq's connect_timeout: whole seconds, at least 2 (it treats 1 as 2 anyway)."""
    return max(2, math.ceil(seconds))
