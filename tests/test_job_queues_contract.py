"""The queue part of the JobStore contract, on every store (memory, SQLite, PostgreSQL).

Every job belongs to a queue; ``claim_due(queues=...)`` takes only from the
queues named, each up to its cap; a paused queue is never claimed from, by
anyone on the store, until resumed; ``list_queues`` reports each queue's depth.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule
from test_job_store_contract import (
    _HYPOTHESIS_DIR,
    JOB_SPECS,
    LEASE,
    STEPS,
    STORE_KINDS,
    T0,
    Faults,
    StoresAgree,
    ids,
    make_store,
    mk,
)

from taskrunner.jobs import (
    CorruptJobError,
    JobState,
    JobStore,
    SQLiteJobStore,
    StoreError,
    new_job,
)
from taskrunner.jobs.queues import (
    DEFAULT_QUEUE,
    QueueControl,
    QueueInfo,
    check_queue,
    check_queue_limits,
    parse_queue_spec,
)

pytestmark = [
    pytest.mark.thread_unsafe(reason="each test drives one store of its own"),
]


@pytest.fixture
def faults() -> Faults:
    return Faults()


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path, faults: Faults) -> Iterator[Any]:
    made = make_store(request.param, tmp_path, faults)
    yield made
    made.close()


def claim(store: JobStore, now: float = T0 + 10, limit: int = 100, **kw: Any) -> list[str]:
    return ids(store.claim_due("w", now, limit=limit, lease_seconds=LEASE, **kw))


# ---------------------------------------------------------------- names and specs


@pytest.mark.parametrize("name", ["default", "mail", "a", "x.y-z_1", "Q" * 64, "_private"])
def test_good_queue_names(name: str) -> None:
    assert check_queue(name) == name
    assert new_job("t", now=T0, queue=name).queue == name


@pytest.mark.parametrize(
    ("name", "error", "match"),
    [
        ("", ValueError, "must not be empty"),
        ("Q" * 65, ValueError, "longer than 64"),
        ("mail:10", ValueError, "not a valid queue name"),
        ("a,b", ValueError, "not a valid queue name"),
        ("with space", ValueError, "not a valid queue name"),
        ("-dash", ValueError, "not a valid queue name"),
        ("nul\x00", ValueError, "not a valid queue name"),
        ("é", ValueError, "not a valid queue name"),
        (3, TypeError, "must be a str"),
    ],
)
def test_bad_queue_names_are_refused_naming_the_problem(
    name: object, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        check_queue(name)
    with pytest.raises(error, match=r"Job\.queue"):
        new_job("t", now=T0, queue=name)  # type: ignore[arg-type]


def test_a_job_is_in_the_default_queue_unless_told() -> None:
    assert new_job("t", now=T0).queue == DEFAULT_QUEUE == "default"


def test_queue_specs_parse_or_say_what_is_wrong() -> None:
    assert parse_queue_spec("mail:10,reports:2") == {"mail": 10, "reports": 2}
    assert parse_queue_spec(" mail : 3 , default") == {"mail": 3, "default": 1}
    for spec, match in [
        ("", "empty item"),
        ("mail:10,", "empty item"),
        ("mail:ten", "whole number"),
        ("mail:0", ">= 1"),
        ("mail:1,mail:2", "named twice"),
        ("ma il:1", "not a valid queue name"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_queue_spec(spec)
    assert check_queue_limits({"a": 1}) == {"a": 1}
    with pytest.raises(ValueError, match="at least one"):
        check_queue_limits({})
    with pytest.raises(ValueError, match=r"queues\['a'\] must be >= 1"):
        check_queue_limits({"a": 0})
    with pytest.raises(TypeError, match="mapping"):
        check_queue_limits(["a"])


# ---------------------------------------------------------------- the store contract


def test_the_queue_is_stored_and_read_back(store: JobStore) -> None:
    store.insert_many([mk("m", queue="mail"), mk("d")])
    assert store.get("m").queue == "mail"
    assert store.get("d").queue == "default"
    assert [(j.id, j.queue) for j in store.list_jobs().jobs] == [("d", "default"), ("m", "mail")]
    assert isinstance(store, QueueControl)


def test_claim_due_takes_only_the_queues_asked_for_each_up_to_its_cap(store: JobStore) -> None:
    store.insert_many(
        [mk(f"m{i}", queue="mail", priority=i) for i in range(4)]
        + [mk(f"r{i}", queue="reports") for i in range(3)]
        + [mk("d0"), mk("x0", queue="mail", type="other")]
    )
    assert claim(store, queues={}) == []
    assert claim(store, queues={"mail": 0}) == []
    took = claim(store, queues={"mail": 2, "reports": 1}, types=["t"])
    assert took == ["m3", "m2", "r0"]  # claim order across queues; each queue capped
    assert claim(store, queues={"mail": 5, "nothing": 3}, types=["t"]) == ["m1", "m0"]
    assert claim(store, queues={"reports": 5}, limit=1) == ["r1"]  # the overall limit too
    assert claim(store, queues={"mail": 5}) == ["x0"]  # no types: every type
    assert store.get("d0").state is JobState.PENDING
    assert claim(store) == ["d0", "r2"]
    with pytest.raises(ValueError, match="queues key"):
        claim(store, queues={"bad name": 1})
    with pytest.raises(ValueError, match=r"queues\['mail'\] must be >= 0"):
        claim(store, queues={"mail": -1})
    with pytest.raises(TypeError, match="queues must be a mapping"):
        claim(store, queues=["mail"])


def test_claims_over_many_types_and_queues_keep_the_claim_order_and_caps(
    store: JobStore,
) -> None:
    # Several (queue, type) ranges that hold more than can be taken: the store
    # reads their keys first, then only the rows it takes.
    store.insert_many(
        [
            mk(f"{q}{t}{i}", queue=q, type=t, priority=p, run_at=T0 - i)
            for q, p in (("a", 1), ("b", 2))
            for t in ("t", "u", "v")
            for i in range(3)
        ]
    )
    both = {"a": 2, "b": 3}
    took = claim(store, queues=both, types=["t", "u", "z"], limit=4)
    assert took == ["bt2", "bu2", "bt1", "at2"]  # b first (priority), then a; b capped at 3
    took = claim(store, queues=both, types=["t", "u", "v"], limit=10)
    assert took == ["bv2", "bu1", "bv1", "au2", "av2"]
    assert claim(store, queues={"b": 9}, types=["v", "t"], limit=2) == ["bt0", "bv0"]


def test_a_paused_queue_is_never_claimed_from_until_resumed(store: Any) -> None:
    store.insert_many([mk("m1", queue="mail"), mk("m2", queue="mail"), mk("d1")])
    running = store.claim_due("w", T0, limit=1, lease_seconds=LEASE, queues={"mail": 1})
    assert ids(running) == ["m1"]
    assert store.pause_queue("mail", T0 + 1) is True
    assert store.pause_queue("mail", T0 + 1) is False  # already paused
    both = {"mail": 5, "default": 5}
    for kw in ({}, {"types": ["t"]}, {"queues": {"mail": 5}}, {"queues": both}):
        assert "m2" not in claim(store, **kw)
    # Its running job finishes as usual.
    assert store.complete("m1", "w", T0 + 2).state is JobState.SUCCEEDED
    assert store.get("m2").state is JobState.PENDING
    assert store.resume_queue("mail", T0 + 3) is True
    assert store.resume_queue("mail", T0 + 3) is False
    assert claim(store, types=["t"]) == ["m2"]
    # Pausing a queue that has no jobs yet holds for the jobs that come later.
    assert store.pause_queue("later", T0 + 4) is True
    store.insert(mk("l1", queue="later"))
    assert claim(store) == []
    store.resume_queue("later", T0 + 5)
    assert claim(store) == ["l1"]
    with pytest.raises(ValueError, match="queue"):
        store.pause_queue("", T0)
    with pytest.raises(TypeError, match="now"):
        store.resume_queue("mail", None)


def test_list_queues_reports_depth_running_oldest_and_paused(store: Any) -> None:
    assert store.list_queues(T0) == []
    store.insert_many(
        [
            mk("m1", queue="mail", run_at=T0 - 30),
            mk("m2", queue="mail", run_at=T0 - 10),
            mk("m3", queue="mail", run_at=T0 + 60),  # delayed: in the depth, not waiting
            mk("r1", queue="reports", run_at=T0 + 60),
            mk("d1", run_at=T0 - 5),
            mk("d2", run_at=T0 - 5),
        ]
    )
    store.claim_due("w", T0, limit=1, lease_seconds=LEASE, queues={"default": 1})
    store.pause_queue("reports", T0)
    store.pause_queue("idle", T0)
    store.resume_queue("idle", T0)
    listed = store.list_queues(T0)
    assert listed == [
        QueueInfo("default", 1, 1, T0 - 5, 5.0, False),
        QueueInfo("idle", 0, 0, None, None, False),
        QueueInfo("mail", 3, 0, T0 - 30, 30.0, False),
        QueueInfo("reports", 1, 0, None, None, True),
    ]
    assert listed[2].to_dict()["oldest_age"] == 30.0
    # Finished jobs leave the listing; a queue once paused stays listed.
    store.complete("d1" if store.get("d1").state is JobState.RUNNING else "d2", "w", T0)
    assert [q.name for q in store.list_queues(T0 + 1)] == ["default", "idle", "mail", "reports"]


def test_a_failed_pause_changes_nothing(store: Any, faults: Faults) -> None:
    faults.fail_next = 1
    with pytest.raises(StoreError):
        store.pause_queue("mail", T0)
    assert store.list_queues(T0) == []
    store.insert(mk("m", queue="mail"))
    assert claim(store) == ["m"]


def test_a_paused_queue_holds_across_store_objects_on_one_file(tmp_path: Path) -> None:
    with SQLiteJobStore(tmp_path / "q.db") as first, SQLiteJobStore(tmp_path / "q.db") as second:
        first.insert(mk("m", queue="mail"))
        first.pause_queue("mail", T0)
        assert claim(second) == []
        assert [q.paused for q in second.list_queues(T0)] == [True]
        first.resume_queue("mail", T0)
        assert claim(second) == ["m"]


def test_a_version_3_sqlite_file_is_migrated_and_its_jobs_are_in_the_default_queue(
    tmp_path: Path,
) -> None:
    from taskrunner.jobs.stores.sqlite_store import MIGRATIONS

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for migration in MIGRATIONS:
        if migration.version <= 3:
            for statement in migration.statements:
                conn.execute(statement)
    conn.execute(
        "INSERT INTO jobs (id, type, args, state, priority, attempt, max_attempts, created_at,"
        " updated_at, run_at) VALUES ('old', 't', x'', 'pending', 0, 0, 3, ?, ?, ?)",
        (T0, T0, T0),
    )
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    with SQLiteJobStore(path) as store:
        assert store.pragmas()["user_version"] >= 4
        assert store.get("old").queue == "default"
        assert claim(store, queues={"default": 1}) == ["old"]


# ---------------------------------------------------------------- the memory model agrees

QUEUES = st.sampled_from(["default", "a", "b"])


class QueuesAgree(StoresAgree):
    """The stores-agree machine, plus jobs in several queues, pauses and per-queue claims."""

    @rule(dt=STEPS, specs=st.lists(JOB_SPECS, min_size=1, max_size=3), queue=QUEUES)
    def insert_queued(
        self, dt: float, specs: list[tuple[int, float, str | None, int]], queue: str
    ) -> None:
        self.now += dt
        jobs = [
            mk(
                f"j{self.count + i}",
                now=self.now,
                priority=priority,
                run_at=self.now + delay,
                idempotency_key=key,
                max_attempts=attempts,
                queue=queue,
            )
            for i, (priority, delay, key, attempts) in enumerate(specs)
        ]
        if self.both(lambda s: s.insert_many(jobs))[0] == "ok":
            self.count += len(jobs)

    @rule(dt=STEPS, queue=QUEUES, pause=st.booleans())
    def pause(self, dt: float, queue: str, pause: bool) -> None:
        self.now += dt
        if pause:
            self.both(lambda s: s.pause_queue(queue, self.now))
        else:
            self.both(lambda s: s.resume_queue(queue, self.now))

    @rule(
        dt=STEPS,
        owner=st.sampled_from(["w1", "w2"]),
        caps=st.dictionaries(QUEUES, st.integers(0, 2), max_size=3),
        limit=st.integers(1, 3),
        typed=st.booleans(),
    )
    def claim_queues(
        self, dt: float, owner: str, caps: dict[str, int], limit: int, typed: bool
    ) -> None:
        self.now += dt
        types = ["t"] if typed else None
        self.both(
            lambda s: s.claim_due(
                owner, self.now, limit=limit, lease_seconds=self.LEASE, types=types, queues=caps
            )
        )

    @invariant()
    def same_queues(self) -> None:
        if self.stores:
            self.both(lambda s: s.list_queues(self.now))


def test_memory_and_sqlite_stores_agree_on_queues(tmp_path: Path) -> None:
    _HYPOTHESIS_DIR[:] = [str(tmp_path)]
    QueuesAgree.TestCase.settings = settings(
        max_examples=60,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    QueuesAgree.TestCase().runTest()


# ---------------------------------------------------------------- the claim reads its index


def test_a_corrupt_claim_key_is_reported_naming_the_job(tmp_path: Path) -> None:
    with SQLiteJobStore(tmp_path / "q.db") as store:
        store.insert_many([mk("bad", queue="mail", priority=5), mk("good", queue="mail", type="u")])
        with sqlite3.connect(tmp_path / "q.db") as raw:
            raw.execute("UPDATE jobs SET priority = 'high' WHERE id = 'bad'")
        with pytest.raises(CorruptJobError, match="bad") as caught:
            claim(store, queues={"mail": 5}, types=["t", "u"], limit=1)  # keys first
        assert caught.value.job_id == "bad"
        assert store.get("good").state is JobState.PENDING  # nothing was claimed
        store.fail_corrupt("bad", T0, caught.value.problem)
        assert claim(store, queues={"mail": 5}, types=["t", "u"], limit=1) == ["good"]


def test_sqlite_claim_by_queue_and_type_reads_the_queue_index(tmp_path: Path) -> None:
    with SQLiteJobStore(tmp_path / "q.db") as store:
        sql = store._queue_claim_query(True)
        with sqlite3.connect(tmp_path / "q.db") as other:
            plan = other.execute("EXPLAIN QUERY PLAN " + sql, ("mail", "t", 0.0, 5)).fetchall()
    details = " ".join(str(row[-1]) for row in plan)
    assert "USING INDEX jobs_claim_by_queue (queue=? AND type=?)" in details, details
    assert "TEMP B-TREE" not in details, details  # read in claim order: nothing sorted


def test_postgres_claim_by_queue_and_type_reads_the_queue_index() -> None:
    import psycopg
    from pg_fixture import new_schema, require_dsn

    from taskrunner.jobs import PostgresJobStore

    dsn, schema = require_dsn(), new_schema()
    with PostgresJobStore(dsn, schema=schema) as store:
        store.insert_many([mk(f"x{n:05d}", queue="bulk") for n in range(5000)])
        store.insert_many(
            [mk(f"y{n:05d}", queue=f"q{n % 2}", type=f"t{n % 3}") for n in range(2000)]
        )
        with psycopg.connect(dsn, autocommit=True) as raw:
            raw.execute(f'ANALYZE "{schema}".jobs')
            sql = store._queue_claim_query(True).replace("%s", "{}")
            sql = sql.format("'q1'", "'t1'", "1e12", "5")
            plan = "\n".join(row[0] for row in raw.execute("EXPLAIN " + sql).fetchall())
        assert "jobs_claim_by_queue" in plan and "Sort" not in plan, plan
        claimed = store.claim_due(
            "w", T0, limit=5, lease_seconds=LEASE, types=["t1"], queues={"q1": 5}
        )
        assert len(claimed) == 5 and {(j.queue, j.type) for j in claimed} == {("q1", "t1")}
