"""Transactional enqueue: submit(..., connection=conn) in the caller's transaction.

SQLite always; PostgreSQL on the test server (tests/pg_fixture.py), skipped
without one unless TASKRUNNER_PG_REQUIRED=1."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_fixture import new_schema, pg_dsn

from taskrunner import ThreadPool
from taskrunner.jobs import (
    DuplicateJobError,
    JobManager,
    JobState,
    MemoryJobStore,
    SQLiteJobStore,
    StoreError,
)
from taskrunner.jobs.model import new_job

__all__ = ["pg_dsn"]  # the fixture, imported for pytest

WAIT = 30.0
README = Path(__file__).resolve().parent.parent / "README.md"

pytestmark = [pytest.mark.thread_unsafe(reason="each test owns its managers and stores")]


def readme_example() -> str:
    text = README.read_text()
    section = text.split("### Transactional enqueue", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_the_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example(), "README.md", "exec"), {})
    conn = sqlite3.connect(tmp_path / "shop.db")
    assert conn.execute("SELECT id FROM orders").fetchall() == [(1,)]
    conn.close()


# ---- SQLite -----------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    with SQLiteJobStore(path):
        pass  # the job tables
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    return path


@pytest.fixture
def pool() -> Iterator[ThreadPool]:
    p = ThreadPool(2, name="txq").start()
    yield p
    p.shutdown(timeout=WAIT)


def job_count(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])
    finally:
        conn.close()


def test_sqlite_rollback_leaves_no_job(db: Path, pool: ThreadPool) -> None:
    with SQLiteJobStore(db) as store:
        manager = JobManager(store, pool)
        manager.register("noop", lambda ctx, args: None)
        app = sqlite3.connect(db)
        app.execute("INSERT INTO orders VALUES (1)")
        handle = manager.submit("noop", connection=app)
        app.rollback()
        app.close()
        assert job_count(db) == 0
        assert not handle.future.done()
        manager.shutdown()


def test_sqlite_commit_runs_the_job_exactly_once(db: Path, pool: ThreadPool) -> None:
    ran: list[int] = []
    with SQLiteJobStore(db) as store:
        manager = JobManager(store, pool)
        manager.register("record", lambda ctx, args: ran.append(args))
        manager.start()
        app = sqlite3.connect(db)
        with app:
            app.execute("INSERT INTO orders VALUES (1)")
            handle = manager.submit("record", 1, connection=app)
        store.announce()
        handle.result(WAIT)
        assert ran == [1]
        assert store.get(handle.id).state is JobState.SUCCEEDED
        app.close()
        manager.shutdown()


def test_sqlite_a_worker_racing_the_commit_sees_both_or_neither(db: Path, pool: ThreadPool) -> None:
    """Another process's view (a connection of its own) and a running worker, while the
    caller inserts an order and its job and commits: never one without the other."""
    seen: set[tuple[int, int]] = set()
    stop = threading.Event()

    def watch() -> None:
        conn = sqlite3.connect(db, isolation_level=None)
        while not stop.is_set():
            row = conn.execute(
                "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM jobs)"
            ).fetchone()
            seen.add((row[0], row[1]))
        conn.close()

    ran = threading.Event()
    with SQLiteJobStore(db) as worker_store, SQLiteJobStore(db) as store:
        worker = JobManager(worker_store, pool, poll_interval=0.01)
        worker.register("noop", lambda ctx, args: ran.set())
        worker.start()
        submitter = JobManager(store, pool)
        submitter.register("noop", lambda ctx, args: None)
        watcher = threading.Thread(target=watch)
        watcher.start()
        app = sqlite3.connect(db)
        for i in range(20):
            with app:
                app.execute("INSERT INTO orders VALUES (?)", (i,))
                submitter.submit("noop", connection=app)
        stop.set()
        watcher.join(WAIT)
        assert ran.wait(WAIT)
        assert all(orders == jobs for orders, jobs in seen), sorted(seen)
        app.close()
        submitter.shutdown()
        worker.shutdown()


def test_sqlite_duplicate_key_leaves_the_callers_transaction_usable(
    db: Path, pool: ThreadPool
) -> None:
    with SQLiteJobStore(db) as store:
        manager = JobManager(store, pool)
        manager.register("noop", lambda ctx, args: None)
        manager.submit("noop", idempotency_key="k")
        app = sqlite3.connect(db)
        app.execute("INSERT INTO orders VALUES (1)")
        with pytest.raises(DuplicateJobError):
            manager.submit("noop", idempotency_key="k", connection=app)
        app.commit()
        assert app.execute("SELECT count(*) FROM orders").fetchone()[0] == 1
        assert job_count(db) == 1
        app.close()
        manager.shutdown()


def test_sqlite_a_batch_is_all_or_nothing(db: Path) -> None:
    with SQLiteJobStore(db) as store:
        first = new_job("noop", b"null", now=1.0)
        app = sqlite3.connect(db)
        with pytest.raises(DuplicateJobError):
            store.insert_in(app, [first, first])
        app.commit()
        assert job_count(db) == 0
        app.close()


def test_sqlite_refuses_another_file(db: Path, tmp_path: Path, pool: ThreadPool) -> None:
    with SQLiteJobStore(db) as store:
        manager = JobManager(store, pool)
        manager.register("noop", lambda ctx, args: None)
        other = sqlite3.connect(tmp_path / "other.db")
        with pytest.raises(ValueError, match="same file"):
            manager.submit("noop", connection=other)
        memory = sqlite3.connect(":memory:")
        with pytest.raises(ValueError, match="in-memory"):
            manager.submit("noop", connection=memory)
        with pytest.raises(TypeError, match=r"sqlite3\.Connection"):
            manager.submit("noop", connection="app.db")
        other.close()
        memory.close()
        manager.shutdown()


def test_sqlite_refuses_an_autocommit_connection_outside_a_transaction(db: Path) -> None:
    with SQLiteJobStore(db) as store:
        app = sqlite3.connect(db, isolation_level=None)
        with pytest.raises(ValueError, match="autocommit"):
            store.insert_in(app, [new_job("noop", b"null", now=1.0)])
        app.execute("BEGIN")
        store.insert_in(app, [new_job("noop", b"null", now=1.0)])
        app.execute("ROLLBACK")
        assert job_count(db) == 0
        app.close()


def test_sqlite_a_failing_insert_is_a_store_error(db: Path) -> None:
    def fail(operation: str) -> None:
        raise OSError("disk on fire")

    with SQLiteJobStore(db, fault_injector=fail) as store:
        app = sqlite3.connect(db)
        with pytest.raises(StoreError):
            store.insert_in(app, [new_job("noop", b"null", now=1.0)])
        app.rollback()
        app.close()


def test_memory_store_has_no_transactions(pool: ThreadPool) -> None:
    manager = JobManager(MemoryJobStore(), pool)
    manager.register("noop", lambda ctx, args: None)
    with pytest.raises(TypeError, match="MemoryJobStore has no transactions"):
        manager.submit("noop", connection=object())
    manager.shutdown()


# ---- PostgreSQL ---------------------------------------------------------------------------


@pytest.fixture
def pg(pg_dsn: str) -> Iterator[tuple[Any, str]]:
    psycopg = pytest.importorskip("psycopg")
    from taskrunner.jobs.stores.postgres_store import PostgresJobStore

    schema = new_schema()
    with PostgresJobStore(pg_dsn, schema=schema) as store, psycopg.connect(pg_dsn) as setup:
        setup.execute(f'CREATE TABLE "{schema}".orders (id int PRIMARY KEY)')
        setup.commit()
        yield store, schema


def test_postgres_rollback_commit_and_notify(pg: tuple[Any, str], pg_dsn: str) -> None:
    import psycopg

    store, schema = pg
    pool = ThreadPool(2, name="txq-pg").start()
    ran = threading.Event()
    manager = JobManager(store, pool, poll_interval=3600)  # only NOTIFY can start the job
    manager.register("noop", lambda ctx, args: ran.set())
    manager.start()
    assert store.wait_listening(WAIT)
    with psycopg.connect(pg_dsn) as app:
        app.execute(f'INSERT INTO "{schema}".orders VALUES (1)')
        manager.submit("noop", connection=app)
        app.rollback()
        assert store.count_jobs() == 0
        with app.transaction():
            app.execute(f'INSERT INTO "{schema}".orders VALUES (2)')
            handle = manager.submit("noop", connection=app)
            assert store.count_jobs() == 0  # not visible before the commit
        handle.result(WAIT)
        assert ran.is_set()
        app.execute(f'INSERT INTO "{schema}".orders VALUES (3)')
        manager.submit("noop", idempotency_key="k", connection=app)
        with pytest.raises(DuplicateJobError):
            manager.submit("noop", idempotency_key="k", connection=app)
        app.commit()  # the duplicate rolled back to its savepoint: the rest commits
        assert app.execute(f'SELECT count(*) FROM "{schema}".orders').fetchone()[0] == 2
    manager.shutdown()
    pool.shutdown(timeout=WAIT)
    assert store.count_jobs() == 2


def test_postgres_a_worker_racing_the_commit_sees_both_or_neither(
    pg: tuple[Any, str], pg_dsn: str
) -> None:
    import psycopg

    store, schema = pg
    seen: set[tuple[int, int]] = set()
    stop = threading.Event()

    def watch() -> None:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute(
                    f'SELECT (SELECT count(*) FROM "{schema}".orders),'
                    f' (SELECT count(*) FROM "{schema}".jobs)'
                ).fetchone()
                assert row is not None
                seen.add((row[0], row[1]))

    pool = ThreadPool(2, name="txq-pg").start()
    manager = JobManager(store, pool)
    manager.register("noop", lambda ctx, args: None)
    watcher = threading.Thread(target=watch)
    watcher.start()
    with psycopg.connect(pg_dsn) as app:
        for i in range(20):
            with app.transaction():
                app.execute(f'INSERT INTO "{schema}".orders VALUES (%s)', (i,))
                manager.submit("noop", connection=app)
    stop.set()
    watcher.join(WAIT)
    assert all(orders == jobs for orders, jobs in seen), sorted(seen)
    manager.shutdown()
    pool.shutdown(timeout=WAIT)


def test_postgres_refuses_autocommit_and_wrong_types(pg: tuple[Any, str], pg_dsn: str) -> None:
    import psycopg

    store, _ = pg
    job = new_job("noop", b"null", now=1.0)
    with psycopg.connect(pg_dsn, autocommit=True) as app:
        with pytest.raises(ValueError, match="autocommit"):
            store.insert_in(app, [job])
        with app.transaction():
            store.insert_in(app, [job])
    with pytest.raises(TypeError, match="psycopg"):
        store.insert_in(sqlite3.connect(":memory:"), [job])
    assert store.get(job.id).id == job.id
