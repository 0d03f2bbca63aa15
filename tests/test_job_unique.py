"""Job uniqueness (``unique_for``/``unique_by``): the store contract on all three
stores, concurrent submitters in threads and in two processes, and the manager's
``submit(..., on_duplicate=...)``."""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pg_fixture import new_schema, require_dsn
from test_job_store_contract import LEASE, T0, Faults, make_store

from taskrunner.jobs import (
    DuplicateJobError,
    JobManager,
    JobSpec,
    JobState,
    JobStore,
    MemoryJobStore,
    SQLiteJobStore,
    UnknownJobError,
    new_job,
)
from taskrunner.jobs.model import Job
from taskrunner.jobs.unique import check_unique_by, unique_key, with_uniqueness

pytestmark = [pytest.mark.thread_unsafe(reason="each test drives one store from its own threads")]

HOUR = 3600.0


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    made = make_store(request.param, tmp_path, Faults())
    yield made
    made.close()


def unique_job(job_id: str, args: object = None, *, now: float = T0, window: float = HOUR) -> Job:
    job = new_job("report", b"x", now=now, id=job_id)
    return with_uniqueness(job, {"day": 1} if args is None else args, window)


# ---------------------------------------------------------------- keys


def test_the_key_covers_the_named_fields_and_args_compare_by_value() -> None:
    a = new_job("report", b"", now=T0, id="a")
    b = new_job("other", b"", now=T0, id="b")
    by = ("type", "args")
    assert unique_key(a, {"x": 1, "y": 2}, by) == unique_key(a, {"y": 2, "x": 1}, by)
    assert unique_key(a, {"x": 1}, by) != unique_key(a, {"x": 2}, by)
    assert unique_key(a, {"x": 1}, by) != unique_key(b, {"x": 1}, by)
    assert unique_key(a, {"x": 1}, ("args",)) == unique_key(b, {"x": 1}, ("args",))
    assert unique_key(a, 1, ("args", "type")) == unique_key(a, 1, ("type", "args"))
    job = with_uniqueness(a, [1], timedelta(minutes=5))
    assert job.unique_until == T0 + 300 and job.unique_key is not None
    assert with_uniqueness(a, [1], None) is a


@pytest.mark.parametrize(
    ("unique_for", "unique_by", "error", "words"),
    [
        (0, ("type",), ValueError, "unique_for"),
        (timedelta(seconds=-1), ("type",), ValueError, "unique_for"),
        ("1h", ("type",), TypeError, "unique_for"),
        (60, "type", TypeError, "unique_by"),
        (60, (), ValueError, "unique_by"),
        (60, ("type", "colour"), ValueError, "colour"),
        (60, ("type", "type"), ValueError, "twice"),
    ],
)
def test_bad_uniqueness_arguments_are_named(
    unique_for: object, unique_by: object, error: type[Exception], words: str
) -> None:
    job = new_job("t", b"", now=T0, id="a")
    with pytest.raises(error, match=words):
        with_uniqueness(job, None, unique_for, unique_by)  # type: ignore[arg-type]
    assert check_unique_by(["args", "type"]) == ("args", "type")


# ---------------------------------------------------------------- the store contract


def test_a_duplicate_within_the_window_is_refused_naming_the_holder(store: JobStore) -> None:
    store.insert(unique_job("first"))
    with pytest.raises(DuplicateJobError) as caught:
        store.insert(unique_job("second", now=T0 + HOUR - 1))
    assert caught.value.existing_id == "first"
    assert caught.value.unique_key == store.get("first").unique_key
    assert "first" in str(caught.value)
    with pytest.raises(UnknownJobError):
        store.get("second")
    store.insert(unique_job("other-args", {"day": 2}, now=T0 + 1))  # another key


def test_a_finished_job_holds_its_key_until_its_window_ends(store: JobStore) -> None:
    store.insert(unique_job("first"))
    store.claim("first", "w", T0, lease_seconds=LEASE)
    store.complete("first", "w", T0 + 1)
    with pytest.raises(DuplicateJobError):
        store.insert(unique_job("second", now=T0 + 10))
    store.insert(unique_job("later", now=T0 + HOUR))  # the window has ended
    assert store.get("first").unique_key is None  # released to the later job
    assert store.get("first").state is JobState.SUCCEEDED
    assert store.get("later").unique_key is not None
    with pytest.raises(DuplicateJobError) as caught:
        store.insert(unique_job("third", now=T0 + HOUR + 5))
    assert caught.value.existing_id == "later"


def test_duplicates_within_one_batch_store_nothing(store: JobStore) -> None:
    with pytest.raises(DuplicateJobError):
        store.insert_many([unique_job("a"), new_job("t", b"", now=T0, id="b"), unique_job("c")])
    assert store.count_jobs() == 0
    store.insert(unique_job("d"))
    assert [j.id for j in store.list_jobs().jobs] == ["d"]


def test_deleting_the_holder_frees_its_key(store: JobStore) -> None:
    store.insert(unique_job("first"))
    store.delete("first")
    store.insert(unique_job("second", now=T0 + 1))
    assert store.get("second").unique_until == T0 + 1 + HOUR


def test_a_refused_duplicate_changes_nothing_even_when_the_holder_expired_partly(
    store: JobStore,
) -> None:
    # The batch releases an expired key, then collides on another: all rolled back.
    store.insert(unique_job("old", {"k": 1}, window=10))
    store.insert(unique_job("live", {"k": 2}))
    with pytest.raises(DuplicateJobError) as caught:
        store.insert_many([unique_job("n1", {"k": 1}, now=T0 + 20), unique_job("n2", {"k": 2})])
    assert caught.value.existing_id == "live"
    assert store.get("old").unique_key is not None  # its release was rolled back
    assert store.count_jobs() == 2


def test_eight_threads_submitting_one_unique_job_store_exactly_one(store: JobStore) -> None:
    barrier = threading.Barrier(8)
    won: list[str] = []
    refused: list[str | None] = []
    lock = threading.Lock()

    def submit(n: int) -> None:
        job = unique_job(f"job-{n}", now=T0 + n * 0.001)
        barrier.wait()
        try:
            store.insert(job)
        except DuplicateJobError as exc:
            with lock:
                refused.append(exc.existing_id)
        else:
            with lock:
                won.append(job.id)

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(won) == 1 and len(refused) == 7
    assert set(refused) == set(won)
    assert store.count_jobs() == 1


def _submit_in_process(kind: str, where: str, schema: str, start: Any, out: Any, n: int) -> None:
    """Child process: insert ``n`` unique jobs (20 keys, each tried n/20 times)."""
    store = make_store_at(kind, where, schema)
    stored = 0
    start.wait(60)
    try:
        for i in range(n):
            job = unique_job(f"{os.getpid()}-{i}", {"k": i % 20})
            try:
                store.insert(job)
            except DuplicateJobError:
                continue
            stored += 1
    finally:
        store.close()
    out.put(stored)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_two_processes_submitting_the_same_unique_jobs_store_each_once(
    kind: str, tmp_path: Path
) -> None:
    if kind == "sqlite":
        where, schema = str(tmp_path / "jobs.db"), ""
    else:
        where, schema = require_dsn(), new_schema()
    make_store_at(kind, where, schema).close()  # migrated before the race
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    children = [
        ctx.Process(target=_submit_in_process, args=(kind, where, schema, start, out, 200))
        for _ in range(2)
    ]
    for child in children:
        child.start()
    start.set()
    stored = [out.get(timeout=120) for _ in children]
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    assert sum(stored) == 20  # one job per key, whichever process won it
    store = make_store_at(kind, where, schema)
    try:
        assert store.count_jobs() == 20
    finally:
        store.close()


def make_store_at(kind: str, where: str, schema: str) -> JobStore:
    if kind == "sqlite":
        return SQLiteJobStore(where)
    from taskrunner.jobs import PostgresJobStore

    return PostgresJobStore(where, schema=schema)


# ---------------------------------------------------------------- the manager


def test_submit_refuses_or_returns_the_existing_job(tmp_path: Path) -> None:
    with JobManager(MemoryJobStore(), poll_interval=0.05) as manager:
        gate = threading.Event()
        manager.register("report", lambda ctx, args: gate.wait(30) and args["day"])
        first = manager.submit("report", {"day": 7}, unique_for=timedelta(hours=1))
        with pytest.raises(DuplicateJobError) as caught:
            manager.submit("report", {"day": 7}, unique_for=timedelta(hours=1))
        assert caught.value.existing_id == first.id
        same = manager.submit(
            "report", {"day": 7}, unique_for=timedelta(hours=1), on_duplicate="return"
        )
        assert same.id == first.id
        other = manager.submit("report", {"day": 8}, unique_for=3600)
        assert other.id != first.id
        # Uniqueness over the arguments alone, whatever the type.
        manager.register("audit", lambda ctx, args: None)
        manager.register("audit-again", lambda ctx, args: None)
        audit = manager.submit("audit", {"day": 8}, unique_for=3600, unique_by=("args",))
        with pytest.raises(DuplicateJobError) as caught:
            manager.submit("audit-again", {"day": 8}, unique_for=3600, unique_by=["args"])
        assert caught.value.existing_id == audit.id
        gate.set()
        assert same.result(30) == 7
        with pytest.raises(ValueError, match="on_duplicate"):
            manager.submit("report", {"day": 9}, unique_for=60, on_duplicate="ignore")
        with pytest.raises(ValueError, match="unique_by"):
            manager.submit("report", {"day": 9}, unique_for=60, unique_by=("colour",))
        assert manager.stats()["submitted"] == 3
        # A batch is all or nothing: a duplicate in it stores none of it.
        with pytest.raises(DuplicateJobError):
            manager.submit_many(
                [
                    JobSpec("report", {"day": 10}, unique_for=60),
                    JobSpec("report", {"day": 7}, unique_for=60),
                ]
            )
        assert manager.list(type="report").jobs[-1].id == other.id


def readme_example(title: str) -> str:
    """The first ```python block after the README heading ``title``."""
    text = (Path(__file__).parent.parent / "README.md").read_text()
    section = text[text.index(f"\n### {title}\n") :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```\n", start)]


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres"])
def test_the_readme_example_runs(kind: str, tmp_path: Path) -> None:
    store = make_store(kind, tmp_path)
    try:
        with JobManager(store, poll_interval=0.05) as manager:
            manager.register("send_invoice", lambda ctx, args: args["order"])
            namespace: dict[str, Any] = {"manager": manager}
            exec(readme_example("Uniqueness"), namespace)
            assert namespace["again"].result(30) == 42
    finally:
        store.close()
