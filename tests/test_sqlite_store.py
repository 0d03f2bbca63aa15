"""What is particular to the SQLite job store.

Settings read back from SQLite, schema migrations, several processes (and
several connections) sharing one file, corrupt rows, injected write failures
and a busy database.  The behaviour common to every store is in
``test_job_store_contract.py``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import taskrunner
from taskrunner.errors import ClosedError
from taskrunner.jobs import (
    CorruptJobError,
    DuplicateJobError,
    Job,
    JobState,
    RetryPolicy,
    SQLiteJobStore,
    StoreError,
    new_job,
    retry_call,
)
from taskrunner.jobs.stores.sqlite_store import MIGRATIONS, SCHEMA_VERSION

pytestmark = [
    pytest.mark.thread_unsafe(
        reason="each test owns a database file and starts its own threads and processes"
    )
]

T0 = 1_000_000.0
LEASE = 60.0
ROOT = Path(taskrunner.__file__).resolve().parent.parent  # for child processes' imports


def mk(job_id: str, **fields: Any) -> Job:
    now = fields.pop("now", T0)
    return new_job(
        fields.pop("type", "t"), fields.pop("args", b"args"), now=now, id=job_id, **fields
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "jobs.db"


@pytest.fixture
def store(path: Path) -> Iterator[SQLiteJobStore]:
    with SQLiteJobStore(path) as made:
        yield made


def raw(path: Path) -> sqlite3.Connection:
    """A plain connection to the store's file, in autocommit mode."""
    return sqlite3.connect(path, isolation_level=None)


class FailAt:
    """A fault injector that fails the writes whose (1-based) numbers are in ``failing``."""

    def __init__(self, *failing: int) -> None:
        self.failing = set(failing)
        self.calls: list[str] = []

    def __call__(self, operation: str) -> None:
        self.calls.append(operation)
        if len(self.calls) in self.failing:
            raise sqlite3.OperationalError(f"disk I/O error (injected, write {len(self.calls)})")


# ---------------------------------------------------------------- settings and schema


def test_wal_and_full_synchronous_by_default(store: SQLiteJobStore, path: Path) -> None:
    assert store.pragmas() == {
        "journal_mode": "wal",
        "synchronous": 2,
        "busy_timeout": 5000,
        "user_version": SCHEMA_VERSION,
    }
    with raw(path) as other:  # WAL is a property of the file, seen by every connection
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(("mode", "number"), [("OFF", 0), ("normal", 1), ("FULL", 2), ("Extra", 3)])
def test_synchronous_is_configurable(path: Path, mode: str, number: int) -> None:
    with SQLiteJobStore(path, synchronous=mode, busy_timeout=0.25) as store:
        assert store.pragmas()["synchronous"] == number
        assert store.pragmas()["busy_timeout"] == 250


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"synchronous": "FAST"}, ValueError, "synchronous must be one of"),
        ({"synchronous": 2}, TypeError, "synchronous"),
        ({"busy_timeout": -1}, ValueError, "busy_timeout"),
        ({"busy_timeout": float("inf")}, ValueError, "busy_timeout"),
        ({"busy_timeout": "5"}, TypeError, "busy_timeout"),
    ],
)
def test_bad_options_are_refused_before_the_file_is_touched(
    path: Path, options: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        SQLiteJobStore(path, **options)
    assert not path.exists()


def test_schema_has_the_indexes_for_listing_claiming_and_uniqueness(
    store: SQLiteJobStore, path: Path
) -> None:
    with raw(path) as other:
        indexes = dict(
            other.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'").fetchall()
        )
    assert {
        "jobs_by_created",
        "jobs_by_state",
        "jobs_claim_order",
        "jobs_leases",
        "jobs_finished",
        "jobs_idempotency_key",
        "jobs_next_due",
        "jobs_claim_by_type",
    } <= set(indexes)
    assert "UNIQUE" in indexes["jobs_idempotency_key"]
    assert "state IN ('pending', 'running')" in indexes["jobs_idempotency_key"]
    assert [m.version for m in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))


def test_claiming_by_type_reads_the_type_index(store: SQLiteJobStore, path: Path) -> None:
    from taskrunner.jobs.stores.sqlite_store import _claim_sql

    with raw(path) as other:
        plan = other.execute("EXPLAIN QUERY PLAN " + _claim_sql(True), ("a", 0.0, 5)).fetchall()
    details = " ".join(str(row[-1]) for row in plan)
    assert "USING INDEX jobs_claim_by_type (type=?)" in details, details
    assert "TEMP B-TREE" not in details, details  # read in claim order: nothing sorted


# The schema of version 1, written out by hand as a release of that version left it.
V1_SCHEMA = """
CREATE TABLE jobs (
    id TEXT PRIMARY KEY NOT NULL, type TEXT NOT NULL, args BLOB NOT NULL,
    state TEXT NOT NULL CHECK (
        state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    priority INTEGER NOT NULL, attempt INTEGER NOT NULL, max_attempts INTEGER NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, run_at REAL NOT NULL, timeout REAL,
    idempotency_key TEXT, owner TEXT, lease_expires_at REAL, result BLOB, last_error TEXT,
    error_traceback TEXT, finished_at REAL
);
CREATE INDEX jobs_by_created ON jobs (created_at, id);
CREATE INDEX jobs_by_state ON jobs (state, created_at, id);
CREATE INDEX jobs_claim_order ON jobs (priority DESC, run_at, created_at, id)
    WHERE state = 'pending';
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL AND state IN ('pending', 'running');
INSERT INTO jobs VALUES ('old', 'email', x'7b7d', 'pending', 1, 0, 3, 1000000.0, 1000000.0,
    1000005.0, NULL, 'key-1', NULL, NULL, NULL, NULL, NULL, NULL);
PRAGMA user_version = 1;
"""


def write_v1(path: Path) -> None:
    with raw(path) as conn:
        conn.executescript(V1_SCHEMA)


def columns(path: Path) -> list[str]:
    with raw(path) as conn:
        return [row[1] for row in conn.execute("PRAGMA table_info(jobs)")]


def test_a_version_1_file_is_migrated_and_keeps_its_jobs(path: Path) -> None:
    write_v1(path)
    with SQLiteJobStore(path) as store:
        assert store.pragmas()["user_version"] == SCHEMA_VERSION
        old = store.get("old")
        assert old.state is JobState.PENDING and old.args == b"{}" and old.priority == 1
        assert old.trace_context is None and old.cancel_requested is False
        assert old.idempotency_key == "key-1"
        with pytest.raises(DuplicateJobError):  # the old unique index still holds
            store.insert(mk("new", idempotency_key="key-1"))
        store.insert(mk("traced", trace_context={"traceparent": "00-a-b-01"}))
        assert store.get("traced").trace_context == {"traceparent": "00-a-b-01"}
        assert [j.id for j in store.claim_due("w", T0 + 10, limit=5, lease_seconds=LEASE)] == [
            "old",
            "traced",
        ]
    assert columns(path)[-5:] == [
        "trace_context",
        "cancel_requested",
        "queue",
        "unique_key",
        "unique_until",
    ]
    with SQLiteJobStore(path) as store:  # the unique key of a migrated file
        assert store.get("old").unique_key is None


def test_a_failed_migration_leaves_the_file_as_it_was(path: Path) -> None:
    write_v1(path)
    with pytest.raises(StoreError, match="injected"):
        SQLiteJobStore(path, fault_injector=FailAt(2))  # the second migration statement
    with raw(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "trace_context" not in columns(path)
    with SQLiteJobStore(path) as store:  # and it can be migrated later
        assert store.pragmas()["user_version"] == SCHEMA_VERSION
        assert store.get("old").state is JobState.PENDING


def test_a_file_from_a_newer_version_is_refused(path: Path) -> None:
    SQLiteJobStore(path).close()
    with raw(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this taskrunner supports"):
        SQLiteJobStore(path)


def test_a_file_that_is_not_a_database_is_refused(path: Path) -> None:
    path.write_bytes(b"this is not an SQLite database" * 100)
    with pytest.raises(StoreError):
        SQLiteJobStore(path)


def test_jobs_survive_closing_and_reopening(path: Path) -> None:
    with SQLiteJobStore(path) as store:
        store.insert(mk("a", trace_context={"k": "v"}))
        job = store.get("a")
    with pytest.raises(ClosedError):
        store.get("a")
    with SQLiteJobStore(path) as again:
        assert again.get("a") == job


def test_an_in_memory_database_works(tmp_path: Path) -> None:
    with SQLiteJobStore(":memory:") as store:
        store.insert(mk("a"))
        assert store.claim_due("w", T0, limit=1, lease_seconds=LEASE)[0].id == "a"
        assert store.pragmas()["journal_mode"] == "memory"


# ---------------------------------------------------------------- several processes


def run_children(script: str, args_list: list[list[str]], timeout: float = 60) -> list[str]:
    """Start one child per args, wait until each says "ready", say "go" to all, collect output.

    The gate makes the children start their real work together (no sleeps involved).
    """
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


CLAIMER = """
import json, sys, time
from taskrunner.jobs import SQLiteJobStore
path, owner, now = sys.argv[1], sys.argv[2], float(sys.argv[3])
store = SQLiteJobStore(path, busy_timeout=30)
print("ready", flush=True)
sys.stdin.readline()
first = store.claim_due(owner, now, limit=4, lease_seconds=60)
# Rendezvous through the store: wait until the other process holds jobs too, so
# that both take part whatever the OS scheduler does (reads never block writers).
give_up = time.monotonic() + 30
while store.count_jobs(states=["running"]) <= len(first):
    assert time.monotonic() < give_up, "the other process never claimed anything"
claimed = []
batch = first
while batch:
    for job in batch:
        claimed.append(job.id)
        sum(range(20_000))  # the job's work, done outside any transaction
        store.complete(job.id, owner, now, owner.encode(), attempt=job.attempt)
    batch = store.claim_due(owner, now, limit=4, lease_seconds=60)
store.close()
print(json.dumps(claimed), flush=True)
"""


def test_two_processes_claim_each_job_exactly_once(store: SQLiteJobStore, path: Path) -> None:
    store.insert_many([mk(f"j{i:04d}", priority=i % 3) for i in range(400)])
    outputs = run_children(CLAIMER, [[str(path), f"proc{n}", str(T0)] for n in range(2)])
    claimed = {f"proc{n}": json.loads(out) for n, out in enumerate(outputs)}
    counts = Counter(job_id for ids in claimed.values() for job_id in ids)
    assert set(counts) == {f"j{i:04d}" for i in range(400)}
    assert set(counts.values()) == {1}
    assert all(len(ids) >= 4 for ids in claimed.values())  # both took part
    for owner, ids in claimed.items():
        for job_id in ids[:20]:
            job = store.get(job_id)
            assert job.state is JobState.SUCCEEDED and job.result == owner.encode()
    assert store.count_jobs(states=["succeeded"]) == 400


OPENER = """
import sys
from taskrunner.jobs import SQLiteJobStore
print("ready", flush=True)
sys.stdin.readline()
with SQLiteJobStore(sys.argv[1], busy_timeout=30) as store:
    store.insert_many([])
    print(store.pragmas()["user_version"], flush=True)
"""


def test_processes_opening_a_new_file_at_once_all_see_one_schema(path: Path) -> None:
    outputs = run_children(OPENER, [[str(path)] for _ in range(3)])
    assert [int(out) for out in outputs] == [SCHEMA_VERSION] * 3
    with SQLiteJobStore(path) as store:
        store.insert(mk("a"))
        assert store.count_jobs() == 1


CRASHER = """
import sys
from taskrunner.jobs import SQLiteJobStore
store = SQLiteJobStore(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
claimed = store.claim_due("doomed", float(sys.argv[2]), limit=3, lease_seconds=10)
print(" ".join(job.id for job in claimed), flush=True)
sys.stdin.readline()  # killed while waiting here, its jobs still running
"""


def test_jobs_of_a_killed_process_are_recovered_after_their_lease(
    store: SQLiteJobStore, path: Path
) -> None:
    store.insert_many([mk("a", max_attempts=1), mk("b"), mk("c"), mk("d")])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CRASHER, str(path), str(T0)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline() == "ready\n"
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().split() == ["a", "b", "c"]
    finally:
        child.kill()
        child.wait()
    assert {j.id for j in store.list_jobs(states=["running"]).jobs} == {"a", "b", "c"}
    assert store.recover_expired(T0 + 9) == []
    recovered = {job.id: job for job in store.recover_expired(T0 + 10)}
    assert recovered["a"].state is JobState.FAILED and recovered["a"].last_error == "interrupted"
    assert recovered["b"].state is JobState.PENDING and recovered["b"].attempt == 1
    again = store.claim_due("heir", T0 + 10, limit=10, lease_seconds=LEASE)
    assert [job.id for job in again] == ["d", "b", "c"]  # b and c are due again from T0 + 10
    assert [job.attempt for job in again] == [1, 2, 2]


# ---------------------------------------------------------------- several connections


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


def test_eight_connections_claim_each_job_exactly_once(store: SQLiteJobStore, path: Path) -> None:
    store.insert_many([mk(f"j{i:03d}") for i in range(160)])

    def claim_all(n: int) -> list[str]:
        with SQLiteJobStore(path, busy_timeout=30) as own:
            claimed: list[str] = []
            while batch := own.claim_due(f"w{n}", T0, limit=2, lease_seconds=LEASE):
                claimed.extend(job.id for job in batch)
            return claimed

    results = in_threads(8, claim_all)
    assert not [r for r in results if isinstance(r, Exception)]
    counts = Counter(job_id for ids in results for job_id in ids)
    assert set(counts) == {f"j{i:03d}" for i in range(160)} and set(counts.values()) == {1}


def test_concurrent_submits_of_one_id_from_eight_threads_one_wins(path: Path) -> None:
    SQLiteJobStore(path).close()

    def submit(n: int) -> str:
        with SQLiteJobStore(path, busy_timeout=30) as own:
            own.insert(mk("same", args=f"from {n}".encode()))
            return f"from {n}"

    results = in_threads(8, submit)
    winners = [r for r in results if isinstance(r, str)]
    losers = [r for r in results if isinstance(r, DuplicateJobError)]
    assert len(winners) == 1 and len(losers) == 7
    with SQLiteJobStore(path) as store:
        assert store.get("same").args == winners[0].encode()
        assert store.count_jobs() == 1


def test_concurrent_submits_of_one_idempotency_key_one_wins(path: Path) -> None:
    SQLiteJobStore(path).close()

    def submit(n: int) -> str:
        with SQLiteJobStore(path, busy_timeout=30) as own:
            own.insert(mk(f"job{n}", idempotency_key="pay-42"))
            return f"job{n}"

    results = in_threads(8, submit)
    winners = [r for r in results if isinstance(r, str)]
    losers = [r for r in results if isinstance(r, DuplicateJobError)]
    assert len(winners) == 1 and len(losers) == 7
    assert {loser.existing_id for loser in losers} == set(winners)
    with SQLiteJobStore(path) as store:
        assert store.find_by_idempotency_key("pay-42") == store.get(winners[0])


# ---------------------------------------------------------------- corrupt rows


CORRUPTIONS = [
    ("state = 'exploded'", "unknown job state 'exploded'"),
    ("trace_context = '{not json'", "trace_context is not valid JSON"),
    ("trace_context = '[1, 2]'", "not a JSON object of strings"),
    ("priority = 'high'", "Job.priority must be an int"),
    ("cancel_requested = 7", "cancel_requested must be 0 or 1"),
    ("args = 'text, not bytes'", "Job.args must be bytes"),
    ("run_at = 'soon'", "Job.run_at must be a number"),
    ("owner = 'ghost'", "owner and lease_expires_at"),
    ("queue = 'no good'", "Job.queue 'no good' is not a valid queue name"),
]


def corrupt(path: Path, job_id: str, assignment: str) -> None:
    with raw(path) as conn:
        conn.execute("PRAGMA ignore_check_constraints = ON")  # as a foreign writer might
        conn.execute(f"UPDATE jobs SET {assignment} WHERE id = ?", (job_id,))


@pytest.mark.parametrize(("assignment", "problem"), CORRUPTIONS)
def test_a_corrupt_row_is_reported_then_failed(
    store: SQLiteJobStore, path: Path, assignment: str, problem: str
) -> None:
    store.insert_many(
        [mk("bad", priority=5, idempotency_key="k", trace_context={"a": "b"}), mk("good")]
    )
    corrupt(path, "bad", assignment)

    with pytest.raises(CorruptJobError, match=problem) as caught:
        store.get("bad")
    assert caught.value.job_id == "bad" and "bad" in str(caught.value)
    with pytest.raises(CorruptJobError):
        store.list_jobs()
    if not assignment.startswith(("state", "run_at")):  # still due: the first claim candidate
        with pytest.raises(CorruptJobError):
            store.claim_due("w", T0, limit=5, lease_seconds=LEASE)
        assert store.get("good").state is JobState.PENDING  # nothing was claimed

    store.fail_corrupt("bad", T0 + 1, caught.value.problem)
    failed = store.get("bad")
    assert failed.state is JobState.FAILED and failed.finished_at == T0 + 1
    assert failed.last_error == f"corrupt job: {caught.value.problem}"
    assert [j.id for j in store.list_jobs().jobs] == ["bad", "good"]
    assert [j.id for j in store.claim_due("w", T0, limit=5, lease_seconds=LEASE)] == ["good"]
    store.insert(mk("next", idempotency_key="k"))  # the failed job gave up its key


def test_a_corrupt_due_time_is_reported_by_next_due(store: SQLiteJobStore, path: Path) -> None:
    store.insert(mk("bad"))
    corrupt(path, "bad", "run_at = 'soon'")
    with pytest.raises(CorruptJobError, match="'bad'"):
        store.next_due()
    store.fail_corrupt("bad", T0, "bad run_at")
    assert store.next_due() is None


# ---------------------------------------------------------------- failing writes


def test_a_failure_at_commit_writes_nothing(path: Path) -> None:
    SQLiteJobStore(path).close()  # created without faults
    faults = FailAt(4)  # three INSERTs, then the COMMIT
    with SQLiteJobStore(path, fault_injector=faults) as store:
        with pytest.raises(StoreError, match="disk I/O error") as caught:
            store.insert_many([mk("a"), mk("b"), mk("c")])
        assert isinstance(caught.value.cause, sqlite3.OperationalError)
        assert caught.value.__cause__ is caught.value.cause
        assert faults.calls == ["insert"] * 4
        assert store.count_jobs() == 0
        store.insert_many([mk("a"), mk("b"), mk("c")])
        assert store.count_jobs() == 3


def test_failed_writes_are_retried_with_backoff(path: Path) -> None:
    SQLiteJobStore(path).close()  # created without faults
    faults = FailAt(1, 2)  # the first two writes fail
    with SQLiteJobStore(path, fault_injector=faults) as store:
        sleeps: list[float] = []
        policy = RetryPolicy(max_attempts=5, initial_delay=0.1, ratio=2.0, jitter=0.0)
        retry_call(lambda: store.insert(mk("a")), policy, sleep=sleeps.append)
        assert sleeps == [0.1, 0.2]
        assert store.get("a").state is JobState.PENDING

        faults.failing = set(range(len(faults.calls) + 1, len(faults.calls) + 100))
        with pytest.raises(StoreError):
            retry_call(lambda: store.cancel("a", T0), policy, sleep=sleeps.append)
        assert store.get("a").state is JobState.PENDING


def test_a_busy_database_waits_then_raises_store_error(path: Path) -> None:
    with SQLiteJobStore(path, busy_timeout=0.2) as store:
        store.insert(mk("a"))
        blocker = raw(path)
        blocker.execute("BEGIN IMMEDIATE")  # another connection holds the write lock
        try:
            assert store.get("a").state is JobState.PENDING  # WAL: reads go on
            started = time.monotonic()
            with pytest.raises(StoreError, match="locked"):
                store.insert(mk("b"))
            assert time.monotonic() - started >= 0.15
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        store.insert(mk("b"))
        assert store.count_jobs() == 2
