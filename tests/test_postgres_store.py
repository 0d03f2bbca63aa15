"""What is particular to the PostgreSQL job store.

Schema migrations (versioned, idempotent, concurrent), the database's own
constraints, ``FOR UPDATE SKIP LOCKED`` claims from several connections and
processes, LISTEN/NOTIFY wake-ups, corrupt rows, injected faults, and the job
manager end to end on PostgreSQL.  The behaviour common to every store is in
``test_job_store_contract.py``, which runs on PostgreSQL too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import test_job_store_contract as contract
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize
from pg_fixture import new_schema, pg_dsn, require_dsn
from test_job_store_contract import JOB_SPECS, StoresAgree

import taskrunner
from taskrunner import ThreadPool
from taskrunner.errors import ClosedError
from taskrunner.jobs import (
    CorruptJobError,
    DuplicateJobError,
    Job,
    JobContext,
    JobManager,
    JobState,
    LeaseLostError,
    MemoryJobStore,
    RetryPolicy,
    SQLiteJobStore,
    StoreError,
    new_job,
)

psycopg = pytest.importorskip("psycopg", reason="needs the postgres extra (psycopg 3)")

from taskrunner.jobs.stores import postgres_schema  # noqa: E402 (after the importorskip)
from taskrunner.jobs.stores.postgres_store import (  # noqa: E402
    MIGRATIONS,
    SCHEMA_VERSION,
    Migration,
    PostgresJobStore,
    migrate,
    schema_version,
)

__all__ = ["pg_dsn"]  # the fixture, imported for pytest

pytestmark = [
    pytest.mark.thread_unsafe(
        reason="each test owns a schema and starts its own threads and processes"
    )
]

T0 = 1_000_000.0
LEASE = 60.0
WAIT = 15.0
ROOT = Path(taskrunner.__file__).resolve().parent.parent  # for child processes' imports


def mk(job_id: str, **fields: Any) -> Job:
    now = fields.pop("now", T0)
    return new_job(
        fields.pop("type", "t"), fields.pop("args", b"args"), now=now, id=job_id, **fields
    )


@pytest.fixture
def schema() -> str:
    return new_schema()


@pytest.fixture
def store(pg_dsn: str, schema: str) -> Iterator[PostgresJobStore]:
    with PostgresJobStore(pg_dsn, schema=schema) as made:
        yield made


@pytest.fixture
def raw(pg_dsn: str) -> Iterator[Any]:
    """A plain autocommit connection to the test database."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        yield conn


class FailAt:
    """A fault injector that fails the injections whose (1-based) numbers are in ``failing``."""

    def __init__(self, *failing: int) -> None:
        self._lock = threading.Lock()  # guards both fields
        self.failing = set(failing)
        self.calls: list[str] = []

    def __call__(self, operation: str) -> None:
        with self._lock:
            self.calls.append(operation)
            if len(self.calls) in self.failing:
                raise OSError(f"injected failure at write {len(self.calls)}")


def in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(n)`` in ``count`` threads started together; return results or exceptions."""
    start = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(n: int) -> None:
        start.wait()
        try:
            results[n] = work(n)
        except Exception as exc:  # returned to the test
            results[n] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


# ---------------------------------------------------------------- options and imports


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"schema": "bad-name"}, ValueError, "schema must be"),
        ({"schema": "x" * 49}, ValueError, "schema must be"),
        ({"schema": "9lives"}, ValueError, "schema must be"),
        ({"schema": 5}, TypeError, "schema"),
        ({"max_connections": 0}, ValueError, "max_connections"),
        ({"min_connections": 3, "max_connections": 2}, ValueError, "min_connections"),
        ({"max_connections": 2.0}, TypeError, "max_connections"),
        ({"connect_timeout": 0}, ValueError, "connect_timeout"),
        ({"migrate": "yes"}, TypeError, "migrate"),
    ],
)
def test_bad_options_are_refused_before_connecting(
    options: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        PostgresJobStore("host=/nonexistent port=1", **options)


def test_bad_dsns_are_refused() -> None:
    with pytest.raises(TypeError, match="dsn"):
        PostgresJobStore(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dsn is not a valid connection string"):
        PostgresJobStore("this is = not = a dsn")


def test_an_unreachable_server_raises_store_error_without_the_password(tmp_path: Path) -> None:
    started = time.monotonic()
    dsn = f"host={tmp_path} port=9 user=u password=s3cret dbname=d"
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL") as caught:
        PostgresJobStore(dsn, connect_timeout=1)
    assert "s3cret" not in str(caught.value)
    assert time.monotonic() - started < 10
    with pytest.raises(StoreError):
        migrate(dsn, connect_timeout=1)


def test_the_import_error_names_the_extra() -> None:
    script = (
        "import sys; sys.modules['psycopg'] = None\n"
        "import taskrunner.jobs as jobs\n"  # the package itself imports without psycopg
        "try:\n"
        "    jobs.PostgresJobStore\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    assert "pip install 'taskrunner[postgres]'" in out.stdout


# ---------------------------------------------------------------- schema and migrations


def test_claiming_by_type_reads_the_type_index(
    store: PostgresJobStore, raw: Any, schema: str
) -> None:
    """A typed claim reads the type index in claim order: among many pending jobs,
    it neither scans the other types' jobs nor sorts its own."""
    store.insert_many([mk(f"x{n:05d}", type="common") for n in range(5000)])
    store.insert_many([mk(f"y{n:05d}", type=f"t{n % 2 + 1}") for n in range(2000)])
    raw.execute(f'ANALYZE "{schema}".jobs')
    sql = store._sql.claim_due_of_type.replace("%s", "{}").format("'t1'", "1e12", "5")
    plan = "\n".join(row[0] for row in raw.execute("EXPLAIN " + sql).fetchall())
    assert "jobs_claim_by_type" in plan and "Sort" not in plan, plan
    claimed = store.claim_due("w", T0, limit=5, lease_seconds=LEASE, types=["t1", "t2"])
    assert len(claimed) == 5 and {job.type for job in claimed} <= {"t1", "t2"}


def test_schema_has_the_indexes_constraints_and_version(
    store: PostgresJobStore, raw: Any, schema: str
) -> None:
    indexes = dict(
        raw.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s", (schema,)
        ).fetchall()
    )
    assert {
        "jobs_pkey",
        "jobs_by_created",
        "jobs_by_state",
        "jobs_claim_order",
        "jobs_next_due",
        "jobs_leases",
        "jobs_finished",
        "jobs_idempotency_key",
        "jobs_claim_by_type",
    } <= set(indexes)
    assert "UNIQUE" in indexes["jobs_idempotency_key"]
    assert "'pending'" in indexes["jobs_idempotency_key"]
    assert "'running'" in indexes["jobs_idempotency_key"]
    collations = dict(
        raw.execute(
            "SELECT column_name, collation_name FROM information_schema.columns"
            " WHERE table_schema = %s AND table_name = 'jobs'",
            (schema,),
        ).fetchall()
    )
    assert collations["id"] == "C" and collations["idempotency_key"] == "C"
    versions = raw.execute(f'SELECT version FROM "{schema}".schema_version').fetchall()
    assert [v for (v,) in versions] == [m.version for m in MIGRATIONS]
    assert store.schema_version() == SCHEMA_VERSION == MIGRATIONS[-1].version
    assert store.schema == schema and store.channel == f"{schema}.jobs"


def test_migrate_is_idempotent_and_versioned(
    pg_dsn: str, schema: str, raw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert schema_version(pg_dsn, schema=schema) == 0
    assert migrate(pg_dsn, schema=schema) == SCHEMA_VERSION
    assert migrate(pg_dsn, schema=schema) == SCHEMA_VERSION  # nothing to do
    with PostgresJobStore(pg_dsn, schema=schema) as store:
        store.insert(mk("kept"))
    # A later release adds a step: only that step runs, the jobs stay.
    step = Migration(
        SCHEMA_VERSION + 1,
        "a note column",
        ("ALTER TABLE {schema}.jobs ADD COLUMN note text",),
    )
    monkeypatch.setattr(postgres_schema, "MIGRATIONS", (*MIGRATIONS, step))
    assert migrate(pg_dsn, schema=schema) == SCHEMA_VERSION + 1
    rows = raw.execute(
        f'SELECT version, description FROM "{schema}".schema_version ORDER BY version'
    ).fetchall()
    assert rows[-1] == (SCHEMA_VERSION + 1, "a note column")
    assert len(rows) == SCHEMA_VERSION + 1
    raw.execute(f'SELECT note FROM "{schema}".jobs')
    monkeypatch.undo()
    # This code does not know version SCHEMA_VERSION + 1: it refuses the schema.
    with pytest.raises(StoreError, match="newer than this taskrunner supports"):
        PostgresJobStore(pg_dsn, schema=schema)
    with pytest.raises(StoreError, match="newer than this taskrunner supports"):
        migrate(pg_dsn, schema=schema)


def test_without_migrate_a_missing_schema_is_an_error_naming_the_command(
    pg_dsn: str, schema: str
) -> None:
    with pytest.raises(StoreError, match="taskrunner db migrate"):
        PostgresJobStore(pg_dsn, schema=schema, migrate=False)
    migrate(pg_dsn, schema=schema)
    with PostgresJobStore(pg_dsn, schema=schema, migrate=False) as store:
        store.insert(mk("a"))
        assert store.get("a").state is JobState.PENDING


def test_a_failed_migration_leaves_nothing_behind(pg_dsn: str, schema: str, raw: Any) -> None:
    with pytest.raises(StoreError, match="injected failure at write 3"):
        PostgresJobStore(pg_dsn, schema=schema, fault_injector=FailAt(3))
    found = raw.execute(
        "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s", (schema,)
    ).fetchone()
    assert found == (0,)
    assert schema_version(pg_dsn, schema=schema) == 0
    with PostgresJobStore(pg_dsn, schema=schema) as store:  # and it can be migrated later
        assert store.schema_version() == SCHEMA_VERSION


def test_stores_opening_a_new_schema_at_once_all_see_one_schema(
    pg_dsn: str, schema: str, raw: Any
) -> None:
    def open_and_insert(n: int) -> int:
        with PostgresJobStore(pg_dsn, schema=schema) as own:
            own.insert(mk(f"j{n}"))
            return own.schema_version()

    results = in_threads(6, open_and_insert)
    assert results == [SCHEMA_VERSION] * 6
    count = raw.execute(f'SELECT count(*) FROM "{schema}".schema_version').fetchone()
    assert count == (len(MIGRATIONS),)


# ---------------------------------------------------------------- constraints


def test_uniqueness_is_the_databases_not_the_stores(
    store: PostgresJobStore, raw: Any, schema: str
) -> None:
    store.insert(mk("a", idempotency_key="k"))
    columns = "id, type, args, state, priority, attempt, max_attempts, created_at, updated_at"
    values = "'pending', 0, 0, 3, 1, 1"
    with pytest.raises(psycopg.errors.UniqueViolation):  # a foreign writer is refused too
        raw.execute(
            f'INSERT INTO "{schema}".jobs ({columns}, run_at, idempotency_key)'
            f" VALUES ('b', 't', ''::bytea, {values}, 1, 'k')"
        )
    with pytest.raises(psycopg.errors.UniqueViolation):
        raw.execute(
            f'INSERT INTO "{schema}".jobs ({columns}, run_at)'
            f" VALUES ('a', 't', ''::bytea, {values}, 1)"
        )
    with pytest.raises(psycopg.errors.CheckViolation):
        raw.execute(f"UPDATE \"{schema}\".jobs SET state = 'sleeping' WHERE id = 'a'")


def test_concurrent_submits_of_one_id_from_eight_connections_one_wins(
    pg_dsn: str, schema: str
) -> None:
    PostgresJobStore(pg_dsn, schema=schema).close()

    def submit(n: int) -> str:
        with PostgresJobStore(pg_dsn, schema=schema) as own:
            own.insert(mk("same", args=f"from {n}".encode()))
            return f"from {n}"

    results = in_threads(8, submit)
    winners = [r for r in results if isinstance(r, str)]
    losers = [r for r in results if isinstance(r, DuplicateJobError)]
    assert len(winners) == 1 and len(losers) == 7, results
    with PostgresJobStore(pg_dsn, schema=schema) as store:
        assert store.get("same").args == winners[0].encode()
        assert store.count_jobs() == 1


def test_concurrent_submits_of_one_idempotency_key_one_wins(pg_dsn: str, schema: str) -> None:
    PostgresJobStore(pg_dsn, schema=schema).close()

    def submit(n: int) -> str:
        with PostgresJobStore(pg_dsn, schema=schema) as own:
            own.insert_many([mk(f"other{n}"), mk(f"job{n}", idempotency_key="pay-42")])
            return f"job{n}"

    results = in_threads(8, submit)
    winners = [r for r in results if isinstance(r, str)]
    losers = [r for r in results if isinstance(r, DuplicateJobError)]
    assert len(winners) == 1 and len(losers) == 7, results
    assert {loser.existing_id for loser in losers} == set(winners)
    assert {loser.idempotency_key for loser in losers} == {"pay-42"}
    with PostgresJobStore(pg_dsn, schema=schema) as store:
        assert store.find_by_idempotency_key("pay-42") == store.get(winners[0])
        assert store.count_jobs() == 2  # the losers' other jobs were not stored either


def test_nul_characters(store: PostgresJobStore) -> None:
    with pytest.raises(ValueError, match="NUL"):
        store.insert(mk("bad\x00id"))
    with pytest.raises(ValueError, match="NUL"):
        store.get("bad\x00id")
    store.insert(mk("a"))
    store.claim("a", "w", T0, lease_seconds=LEASE)
    failed = store.fail("a", "w", T0 + 1, "no\x00pe", "tb\x00")
    assert failed.last_error == "no\\x00pe" and failed.error_traceback == "tb\\x00"
    assert store.get("a") == failed


# ---------------------------------------------------------------- claims and leases


def test_claim_skips_a_row_locked_by_another_transaction_without_waiting(
    store: PostgresJobStore, pg_dsn: str, schema: str
) -> None:
    store.insert_many([mk("first", priority=9), mk("second"), mk("third")])
    with psycopg.connect(pg_dsn) as other:  # not autocommit: holds its lock until rollback
        other.execute(f"SELECT id FROM \"{schema}\".jobs WHERE id = 'first' FOR UPDATE")
        started = time.monotonic()
        claimed = store.claim_due("w1", T0, limit=5, lease_seconds=LEASE)
        assert time.monotonic() - started < 2  # skipped, not waited for
        assert [job.id for job in claimed] == ["second", "third"]
        other.rollback()
    assert [job.id for job in store.claim_due("w2", T0, limit=5, lease_seconds=LEASE)] == ["first"]


def test_recovery_skips_a_locked_row_and_takes_it_later(
    store: PostgresJobStore, pg_dsn: str, schema: str
) -> None:
    store.insert_many([mk("a"), mk("b")])
    store.claim_due("dead", T0, limit=2, lease_seconds=10)
    with psycopg.connect(pg_dsn) as other:
        other.execute(f"SELECT id FROM \"{schema}\".jobs WHERE id = 'a' FOR UPDATE")
        assert [job.id for job in store.recover_expired(T0 + 10)] == ["b"]
        other.rollback()
    assert [job.id for job in store.recover_expired(T0 + 10)] == ["a"]


def test_a_finish_waits_for_a_concurrent_change_of_the_same_row(
    store: PostgresJobStore, pg_dsn: str, schema: str
) -> None:
    """``complete`` locks the row: it waits for a recovery in progress, then loses the lease."""
    store.insert(mk("a"))
    store.claim("a", "w1", T0, lease_seconds=10)
    finished = threading.Event()
    outcome: list[Any] = []
    with psycopg.connect(pg_dsn) as recoverer:  # another machine, recovering the job
        recoverer.execute(
            f"UPDATE \"{schema}\".jobs SET state = 'pending', owner = NULL,"
            " lease_expires_at = NULL, last_error = 'interrupted' WHERE id = 'a'"
        )

        def finish() -> None:
            try:
                outcome.append(store.complete("a", "w1", T0 + 11, b"late"))
            except Exception as exc:  # checked below
                outcome.append(exc)
            finished.set()

        thread = threading.Thread(target=finish)
        thread.start()
        assert not finished.wait(0.3)  # blocked on the row lock
        recoverer.commit()
    thread.join(WAIT)
    assert len(outcome) == 1 and isinstance(outcome[0], LeaseLostError), outcome
    assert store.get("a").state is JobState.PENDING and store.get("a").result is None


CLAIMER = """
import json, sys, time
from taskrunner.jobs import PostgresJobStore
dsn, schema, owner, now = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
store = PostgresJobStore(dsn, schema=schema)
print("ready", flush=True)
sys.stdin.readline()
claimed = []
while batch := store.claim_due(owner, now, limit=4, lease_seconds=60):
    for job in batch:
        claimed.append(job.id)
        sum(range(5_000))  # the job's work, done outside any transaction
        store.complete(job.id, owner, now, owner.encode(), attempt=job.attempt)
store.close()
print(json.dumps(claimed), flush=True)
"""


def run_children(script: str, args_list: list[list[str]], timeout: float = 60) -> list[str]:
    """Start one child per args, wait until each says "ready", say "go" to all, collect output."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for args in args_list
    ]
    try:
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline()
            assert line == "ready\n", (line, child.stderr.read() if child.stderr else "")
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        outputs = []
        for child in children:
            out, err = child.communicate(timeout=timeout)
            assert child.returncode == 0, err
            outputs.append(out)
        return outputs
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


def test_three_processes_claim_each_job_exactly_once(
    store: PostgresJobStore, pg_dsn: str, schema: str
) -> None:
    store.insert_many([mk(f"j{i:04d}", priority=i % 3) for i in range(600)])
    args = [[pg_dsn, schema, f"proc{n}", str(T0)] for n in range(3)]
    claimed = {f"proc{n}": json.loads(out) for n, out in enumerate(run_children(CLAIMER, args))}
    counts = Counter(job_id for ids in claimed.values() for job_id in ids)
    assert set(counts) == {f"j{i:04d}" for i in range(600)}
    assert set(counts.values()) == {1}
    for owner, ids in claimed.items():
        for job_id in ids[:20]:
            assert store.get(job_id).result == owner.encode()
    assert store.count_jobs(states=["succeeded"]) == 600


def test_eight_connections_claim_each_job_exactly_once(pg_dsn: str, schema: str) -> None:
    with PostgresJobStore(pg_dsn, schema=schema, max_connections=8) as shared:
        shared.insert_many([mk(f"j{i:03d}") for i in range(400)])

        def claim_all(n: int) -> list[str]:
            claimed: list[str] = []
            while batch := shared.claim_due(f"w{n}", T0, limit=2, lease_seconds=LEASE):
                claimed.extend(job.id for job in batch)
            return claimed

        results = in_threads(8, claim_all)
    assert not [r for r in results if isinstance(r, Exception)], results
    counts = Counter(job_id for ids in results for job_id in ids)
    assert set(counts) == {f"j{i:03d}" for i in range(400)} and set(counts.values()) == {1}


# ---------------------------------------------------------------- LISTEN/NOTIFY


class Notes:
    """A subscriber that records what it is told; tests wait on it, never sleep."""

    def __init__(self) -> None:
        self._cond = threading.Condition()  # guards seen
        self.seen: list[float | None] = []

    def __call__(self, due_at: float | None) -> None:
        with self._cond:
            self.seen.append(due_at)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[float | None]], bool]) -> list[float | None]:
        with self._cond:
            assert self._cond.wait_for(lambda: predicate(self.seen), WAIT), self.seen
            return list(self.seen)


def test_inserts_and_retries_notify_subscribers(pg_dsn: str, schema: str) -> None:
    with (
        PostgresJobStore(pg_dsn, schema=schema) as listener,
        PostgresJobStore(pg_dsn, schema=schema) as other,  # another machine's store
    ):
        notes = Notes()
        unsubscribe = listener.subscribe(notes)
        assert listener.wait_listening(WAIT)
        notes.wait_for(lambda seen: seen == [None])  # "look now", once listening

        other.insert_many([mk("later", run_at=T0 + 50), mk("now", run_at=T0)])
        assert notes.wait_for(lambda seen: len(seen) == 2)[1] == T0  # the earliest due time

        other.claim("now", "w", T0, lease_seconds=10)
        other.complete("now", "w", T0 + 1)  # finishing makes nothing pending: silent
        other.claim("later", "w", T0 + 50, lease_seconds=10)
        other.fail("later", "w", T0 + 51, "boom", retry_at=T0 + 60)
        assert notes.wait_for(lambda seen: len(seen) == 3)[2] == T0 + 60

        other.claim("later", "w", T0 + 60, lease_seconds=10)
        assert [j.id for j in other.recover_expired(T0 + 70)] == ["later"]
        assert notes.wait_for(lambda seen: len(seen) == 4)[3] == T0 + 70

        other.insert(mk("dead", max_attempts=1))
        other.claim("dead", "w", T0, lease_seconds=10)
        other.recover_expired(T0 + 100)  # failed, not pending: silent
        other.retry("dead", T0 + 101, run_at=T0 + 200)
        seen = notes.wait_for(lambda seen: len(seen) >= 6)
        assert seen[4:] == [T0, T0 + 200]

        unsubscribe()
        unsubscribe()  # idempotent
        assert not listener.wait_listening(0)


def test_a_failing_subscriber_does_not_stop_the_others(pg_dsn: str, schema: str) -> None:
    with PostgresJobStore(pg_dsn, schema=schema) as store:

        def broken(due_at: float | None) -> None:
            raise RuntimeError("subscriber bug")

        notes = Notes()
        store.subscribe(broken)
        store.subscribe(notes)
        assert store.wait_listening(WAIT)
        notes.wait_for(lambda seen: None in seen)
        store.insert(mk("a"))
        notes.wait_for(lambda seen: T0 in seen)
    with pytest.raises(ClosedError):
        store.subscribe(notes)


def test_the_listener_reconnects_and_says_look_now(pg_dsn: str, schema: str, raw: Any) -> None:
    name = f"tr-listener-{os.urandom(4).hex()}"
    with PostgresJobStore(
        pg_dsn, schema=schema, connect_kwargs={"application_name": name}
    ) as store:
        notes = Notes()
        store.subscribe(notes)
        notes.wait_for(lambda seen: seen == [None])
        killed = raw.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = %s AND query ILIKE 'LISTEN%%'",
            (name,),
        ).fetchone()
        assert killed == (1,)
        notes.wait_for(lambda seen: seen == [None, None])  # reconnected: "look now" again
        store.insert(mk("a"))
        notes.wait_for(lambda seen: seen == [None, None, T0])


def test_close_stops_the_listener_thread(pg_dsn: str, schema: str) -> None:
    store = PostgresJobStore(pg_dsn, schema=schema)
    store.subscribe(lambda due_at: None)
    assert store.wait_listening(WAIT)
    assert any(t.name == "taskrunner-pg-listen" for t in threading.enumerate())
    store.close()
    assert not any(t.name == "taskrunner-pg-listen" for t in threading.enumerate())


# ---------------------------------------------------------------- corrupt rows and faults


CORRUPTIONS = [
    ("trace_context = '{not json'", "trace_context is not valid JSON"),
    ("trace_context = '[1, 2]'", "not a JSON object of strings"),
    ("owner = 'ghost'", "owner and lease_expires_at"),
    ("attempt = 7", "Job.attempt must be in"),
    ("run_at = 'NaN'", "Job.run_at must be finite"),
]


@pytest.mark.parametrize(("assignment", "problem"), CORRUPTIONS)
def test_a_corrupt_row_is_reported_then_failed(
    store: PostgresJobStore, raw: Any, schema: str, assignment: str, problem: str
) -> None:
    store.insert_many([mk("bad", priority=5, idempotency_key="k"), mk("good")])
    raw.execute(f"UPDATE \"{schema}\".jobs SET {assignment} WHERE id = 'bad'")

    with pytest.raises(CorruptJobError, match=problem) as caught:
        store.get("bad")
    assert caught.value.job_id == "bad"
    with pytest.raises(CorruptJobError):
        store.list_jobs()
    if "run_at" not in assignment:  # still due: the first claim candidate
        with pytest.raises(CorruptJobError):
            store.claim_due("w", T0, limit=5, lease_seconds=LEASE)
        assert store.get("good").state is JobState.PENDING  # nothing was claimed
    else:  # NaN sorts after every number: the earliest due time is the good job's
        assert store.next_due() == T0

    store.fail_corrupt("bad", T0 + 1, caught.value.problem)
    failed = store.get("bad")
    assert failed.state is JobState.FAILED and failed.finished_at == T0 + 1
    assert failed.last_error == f"corrupt job: {caught.value.problem}"
    assert [j.id for j in store.claim_due("w", T0, limit=5, lease_seconds=LEASE)] == ["good"]
    store.insert(mk("next", idempotency_key="k"))  # the failed job gave up its key


def test_a_failure_at_commit_writes_nothing(pg_dsn: str, schema: str) -> None:
    migrate(pg_dsn, schema=schema)  # so that the injector sees only the writes below
    faults = FailAt(2)  # the INSERT batch, then the COMMIT
    with PostgresJobStore(pg_dsn, schema=schema, fault_injector=faults) as store:
        with pytest.raises(StoreError, match="injected failure at write 2") as caught:
            store.insert_many([mk("a"), mk("b"), mk("c")])
        assert isinstance(caught.value.cause, OSError)
        assert faults.calls == ["insert", "insert"]
        assert store.count_jobs() == 0
        store.insert_many([mk("a"), mk("b"), mk("c")])
        assert store.count_jobs() == 3


def test_a_broken_connection_is_a_store_error_and_the_pool_recovers(
    pg_dsn: str, schema: str, raw: Any
) -> None:
    name = f"tr-victim-{os.urandom(4).hex()}"
    with PostgresJobStore(
        pg_dsn, schema=schema, connect_kwargs={"application_name": name}
    ) as store:
        store.insert(mk("a"))
        killed = raw.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = %s",
            (name,),
        ).fetchone()
        assert killed[0] >= 1
        outcomes: list[Any] = []
        for _ in range(3):  # the first call meets the killed connection
            try:
                outcomes.append(store.get("a").state)
            except StoreError as exc:
                outcomes.append(exc)
        assert isinstance(outcomes[0], StoreError), outcomes
        assert outcomes[-1] is JobState.PENDING, outcomes


# ---------------------------------------------------------------- the job manager


def wait_final(store: PostgresJobStore, job_id: str) -> Job:
    """The job once final (polling the store: it is finished by another manager)."""
    end = time.monotonic() + WAIT
    while not (job := store.get(job_id)).is_final:
        assert time.monotonic() < end, f"job {job_id} is still {job.state}"
        time.sleep(0.01)  # polling another manager's progress
    return job


def test_a_manager_is_woken_by_another_machines_submit(pg_dsn: str, schema: str) -> None:
    """Polling every 60 s: only LISTEN/NOTIFY can make the job run within seconds."""
    worker_pool = ThreadPool(2, name="pg-worker").start()
    client_pool = ThreadPool(1, name="pg-client").start()
    worker_store = PostgresJobStore(pg_dsn, schema=schema)
    client_store = PostgresJobStore(pg_dsn, schema=schema)
    retry = RetryPolicy(max_attempts=3, initial_delay=0.05, jitter=0)
    worker = JobManager(
        worker_store, worker_pool, poll_interval=60, lease_seconds=30, retry_policy=retry
    )
    client = JobManager(client_store, client_pool, poll_interval=60)
    attempts: list[int] = []

    @worker.handler("square")
    def square(ctx: JobContext, args: dict[str, int]) -> int:
        attempts.append(ctx.attempt)
        if args.get("flaky") and ctx.attempt == 1:
            raise ConnectionError("first attempt fails")
        return args["x"] ** 2

    client.register("square", lambda ctx, args: None)  # the client only submits
    try:
        worker.start()
        assert worker_store.wait_listening(WAIT)
        started = time.monotonic()
        handle = client.submit("square", {"x": 7})
        assert wait_final(client_store, handle.id).result == b"49"
        flaky = client.submit("square", {"x": 3, "flaky": True})
        done = wait_final(client_store, flaky.id)  # the retry, due 50 ms later, woke it too
        assert done.result == b"9" and done.attempt == 2
        delayed = client.submit("square", {"x": 4}, delay=0.3)
        assert wait_final(client_store, delayed.id).result == b"16"
        assert time.monotonic() - started < WAIT  # far less than one poll interval
        assert worker.stats()["succeeded"] == 3 and attempts == [1, 1, 2, 1]
    finally:
        worker.shutdown(timeout=WAIT)
        client.shutdown(timeout=WAIT)
        worker_pool.shutdown(timeout=WAIT)
        client_pool.shutdown(timeout=WAIT)
        worker_store.close()
        client_store.close()
    assert not worker_store.wait_listening(0)  # the manager unsubscribed


def test_a_worker_process_runs_jobs_from_postgres(pg_dsn: str, schema: str) -> None:
    with PostgresJobStore(pg_dsn, schema=schema) as store:
        store.insert_many(
            [new_job("work", json.dumps({"n": i}).encode(), now=time.time()) for i in range(20)]
        )
        # The runs table goes into the test's schema, dropped with it.
        runs_dsn = psycopg.conninfo.make_conninfo(pg_dsn, options=f"-c search_path={schema}")
        env = {
            **os.environ,
            "TASKRUNNER_RUNS_DSN": runs_dsn,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]),
        }
        with psycopg.connect(runs_dsn, autocommit=True) as conn:
            from pg_crash_app import RUNS_TABLE

            conn.execute(RUNS_TABLE)
        proc = subprocess.Popen(
            [sys.executable, "-m", "taskrunner.cli.worker", "--dsn", pg_dsn, "--schema", schema,
             "--app", "pg_crash_app:register", "--workers", "2", "--poll", "0.2"],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            end = time.monotonic() + WAIT * 2
            while store.count_jobs(states=["succeeded"]) < 20:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < end, "the worker did not finish the jobs"
                time.sleep(0.05)  # polling another process's progress
        finally:
            proc.terminate()
            proc.wait(WAIT)
        assert proc.returncode == 0
        results = {json.loads(job.result or b"null") for job in store.list_jobs().jobs}
        assert results == {2 * i for i in range(20)}


def test_pending_jobs_move_from_sqlite_to_postgres(store: PostgresJobStore, tmp_path: Path) -> None:
    """The README's recipe for moving a queue from one machine's SQLite file to PostgreSQL."""
    with SQLiteJobStore(tmp_path / "jobs.db") as old:
        old.insert_many([mk("a", run_at=T0 + 5, idempotency_key="k"), mk("b"), mk("done")])
        old.claim("b", "w", T0, lease_seconds=LEASE)
        old.fail("b", "w", T0 + 1, "boom", retry_at=T0 + 9)  # pending again, attempt 1
        old.claim("done", "w", T0, lease_seconds=LEASE)
        old.complete("done", "w", T0 + 1)
        cursor = None
        while True:
            page = old.list_jobs(states=["pending"], limit=500, after=cursor)
            store.insert_many(page.jobs)
            if (cursor := page.next_cursor) is None:
                break
        moved = [old.get("a"), old.get("b")]
    assert [store.get("a"), store.get("b")] == moved
    assert store.get("b").attempt == 1 and store.get("b").last_error == "boom"
    assert store.count_jobs() == 2


def test_worker_store_options_are_checked(pg_dsn: str) -> None:
    from taskrunner.cli.worker import open_store

    with pytest.raises(ValueError, match="exactly one"):
        open_store(None)
    with pytest.raises(ValueError, match="exactly one"):
        open_store("x.db", dsn=pg_dsn)
    with pytest.raises(ValueError, match="--schema"):
        open_store("x.db", schema="s")


# ---------------------------------------------------------------- agreement with the model


class MemoryAndPostgresAgree(StoresAgree):
    """The contract suite's random operations, on the memory store and PostgreSQL."""

    @initialize(specs=st.lists(JOB_SPECS, min_size=3, max_size=8))
    def open_stores(self, specs: list[tuple[int, float, str | None, int]]) -> None:
        self.stores = [MemoryJobStore(), PostgresJobStore(require_dsn(), schema=new_schema())]
        for spec in specs:
            self.insert(0.0, [spec])


def test_memory_and_postgres_stores_agree(pg_dsn: str, tmp_path: Path) -> None:
    contract._HYPOTHESIS_DIR[:] = [str(tmp_path)]  # read by StoresAgree.__init__
    MemoryAndPostgresAgree.TestCase.settings = settings(
        max_examples=15,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    MemoryAndPostgresAgree.TestCase().runTest()
