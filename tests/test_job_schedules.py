"""Periodic schedules: occurrence times (cron in a time zone, DST, intervals), the
misfire policies, the store contract on all three stores (exactly once from
threads and from two processes), and the manager on mock time."""

from __future__ import annotations

import gc
import itertools
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pg_fixture import new_schema, require_dsn
from test_job_store_contract import Faults, make_store

from taskrunner.errors import ClosedError
from taskrunner.jobs import (
    JobManager,
    JobState,
    JobStore,
    MemoryJobStore,
    Schedule,
    ScheduleStore,
    SerializationError,
    SQLiteJobStore,
    UnknownJobTypeError,
    UnknownScheduleError,
)
from taskrunner.jobs.schedule_model import (
    MAX_CATCH_UP,
    after_put,
    occurrence_id,
    plan_fire,
)
from taskrunner.jobs.schedule_times import (
    check_cron,
    first_at_or_after,
    latest_at_or_before,
    occurrences_after,
)
from taskrunner.testing import TaskEnvironment

pytestmark = [pytest.mark.thread_unsafe(reason="each test drives one store from its own threads")]

PARIS = ZoneInfo("Europe/Paris")
HOUR = 3600.0
DAY = 86400.0
# A Monday noon, UTC: an hourly cron's occurrences fall on whole hours after it.
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp()


def paris(*args: int, fold: int = 0) -> float:
    return datetime(*args, tzinfo=PARIS, fold=fold).timestamp()  # type: ignore[misc]


def sched(name: str = "report", **fields: Any) -> Schedule:
    values: dict[str, Any] = {
        "type": "report",
        "args": b'{"n":1}',
        "next_run_at": None,
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(fields)
    if "cron" not in values and "every" not in values:
        values["every"] = HOUR
    made = Schedule(name=name, **values)
    if made.next_run_at is None and "next_run_at" not in fields:
        made = replace(made, next_run_at=first_at_or_after(made, made.created_at + 1e-3))
    return made


def local(when: float) -> datetime:
    return datetime.fromtimestamp(when, PARIS)


# ---------------------------------------------------------------- occurrence times


def test_a_daily_0230_job_in_paris_on_the_dst_days() -> None:
    nightly = sched(cron="30 2 * * *", timezone="Europe/Paris")
    # Spring forward (29 March 2026: 02:00 -> 03:00): 02:30 does not exist, it runs at 03:00.
    spring = list(itertools.islice(occurrences_after(nightly, paris(2026, 3, 28, 12)), 3))
    assert [local(w).isoformat() for w in spring] == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    # Fall back (25 October 2026: 03:00 -> 02:00): 02:30 happens twice, it runs once.
    autumn = list(itertools.islice(occurrences_after(nightly, paris(2026, 10, 24, 12)), 3))
    assert [local(w).isoformat() for w in autumn] == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]
    assert autumn[1] - autumn[0] == 25 * HOUR  # the day with an extra hour
    assert latest_at_or_before(nightly, paris(2026, 10, 25, 2, 45, fold=1)) == autumn[0]
    assert latest_at_or_before(nightly, autumn[0]) == autumn[0]
    assert latest_at_or_before(nightly, autumn[0] - 1) == paris(2026, 10, 24, 2, 30)


def test_intervals_are_elapsed_time_whatever_the_clocks_do() -> None:
    start = paris(2026, 3, 29, 1, 30)
    hourly = sched(every=HOUR, start=start, timezone="Europe/Paris")
    times = list(itertools.islice(occurrences_after(hourly, start - 1), 3))
    assert times == [start, start + HOUR, start + 2 * HOUR]
    assert [local(w).hour for w in times] == [1, 3, 4]  # 02:xx does not exist that night
    assert latest_at_or_before(hourly, start + 1.5 * HOUR) == start + HOUR
    assert latest_at_or_before(hourly, start - 1) is None
    unanchored = sched(every=600)
    assert unanchored.next_run_at == T0 + 600


def test_a_cron_schedule_starts_no_earlier_than_its_start() -> None:
    later = sched(cron="0 * * * *", start=T0 + 5.5 * HOUR)
    assert first_at_or_after(later, T0) == T0 + 6 * HOUR
    assert first_at_or_after(sched(cron="0 * * * *"), T0) == T0


def test_bad_cron_expressions_and_time_zones_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="not valid"):
        check_cron("61 * * * *")
    with pytest.raises(ValueError, match="exactly one"):
        Schedule(name="x", type="t", next_run_at=None, created_at=0, updated_at=0)
    with pytest.raises(ValueError, match="every"):
        sched(every=0.5)
    with pytest.raises(ValueError, match="misfire"):
        sched(misfire="sometimes")
    with pytest.raises(ValueError, match="longer than 200"):
        sched("n" * 201)


# ---------------------------------------------------------------- the rules


def test_misfire_policies_after_three_missed_hours() -> None:
    now = T0 + 3.5 * HOUR  # occurrences at +1, +2, +3 h passed while nobody fired
    for policy, expected in (
        ("all", [T0 + HOUR, T0 + 2 * HOUR, T0 + 3 * HOUR]),
        ("once", [T0 + 3 * HOUR]),
        ("skip", []),
    ):
        times, following = plan_fire(sched(every=HOUR, misfire=policy), now)
        assert (policy, times, following) == (policy, expected, T0 + 4 * HOUR)
    # On time (within the grace), "skip" runs the occurrence too.
    assert plan_fire(sched(every=HOUR, misfire="skip"), T0 + HOUR + 5) == (
        [T0 + HOUR],
        T0 + 2 * HOUR,
    )
    assert plan_fire(sched(every=HOUR), T0 + HOUR - 1) == ([], T0 + HOUR)
    many, following = plan_fire(sched(every=1.0, misfire="all"), T0 + 5000)
    assert len(many) == MAX_CATCH_UP and following == T0 + MAX_CATCH_UP + 1


def test_declaring_a_schedule_again_keeps_its_next_run_unless_its_timing_changed() -> None:
    old = sched(every=HOUR)
    again = sched(every=HOUR, created_at=T0 + 600, args=b"2", next_run_at=T0 + 600 + HOUR)
    kept = after_put(old, again)
    assert (kept.next_run_at, kept.created_at, kept.args) == (old.next_run_at, T0, b"2")
    moved = sched(every=2 * HOUR, created_at=T0 + 600, next_run_at=T0 + 600 + 2 * HOUR)
    assert after_put(old, moved) is moved


# ---------------------------------------------------------------- the store contract


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    made = make_store(request.param, tmp_path, Faults())
    assert isinstance(made, ScheduleStore)
    yield made
    made.close()


def stores(store: JobStore) -> ScheduleStore:
    assert isinstance(store, ScheduleStore)
    return store


def test_schedules_are_stored_listed_and_deleted(store: JobStore) -> None:
    s = stores(store)
    nightly = s.put_schedule(sched("nightly", cron="0 3 * * *", timezone="Europe/Paris"))
    assert s.get_schedule("nightly") == nightly
    hourly = s.put_schedule(sched("hourly", priority=5, timeout=30.0, max_attempts=2))
    assert [x.name for x in s.list_schedules()] == ["hourly", "nightly"]
    assert s.get_schedule("hourly") == hourly
    assert s.next_schedule_at() == min(nightly.next_run_at or 0, hourly.next_run_at or 0)
    assert s.due_schedules(T0) == []
    assert s.due_schedules(T0 + DAY) == ["hourly", "nightly"]
    assert s.delete_schedule("hourly") is True
    assert s.delete_schedule("hourly") is False
    with pytest.raises(UnknownScheduleError, match="hourly"):
        s.get_schedule("hourly")
    # Declared again with the same timing: the next run is kept.
    s.put_schedule(replace(nightly, args=b"[]", created_at=T0 + 10, next_run_at=T0 + DAY))
    assert s.get_schedule("nightly").next_run_at == nightly.next_run_at
    assert s.get_schedule("nightly").args == b"[]"
    with pytest.raises(TypeError):
        s.put_schedule("nightly")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        s.fire_schedule("", T0)


def test_firing_enqueues_each_occurrence_once_with_its_job(store: JobStore) -> None:
    s = stores(store)
    s.put_schedule(sched("hourly", priority=3, timeout=30.0))
    assert s.fire_schedule("hourly", T0 + 10) == []  # not due yet
    jobs = s.fire_schedule("hourly", T0 + HOUR)
    assert [job.id for job in jobs] == [occurrence_id("hourly", T0 + HOUR)]
    job = store.get(jobs[0].id)
    assert (job.type, job.args, job.priority, job.timeout, job.run_at) == (
        "report",
        b'{"n":1}',
        3,
        30.0,
        T0 + HOUR,
    )
    assert job.state is JobState.PENDING
    assert s.fire_schedule("hourly", T0 + HOUR) == []  # fired already
    assert s.get_schedule("hourly").next_run_at == T0 + 2 * HOUR
    assert s.fire_schedule("missing", T0) == []


def test_an_occurrence_whose_job_exists_is_not_enqueued_again(store: JobStore) -> None:
    s = stores(store)
    s.put_schedule(sched("hourly"))
    first = s.fire_schedule("hourly", T0 + HOUR)
    s.delete_schedule("hourly")
    # Declared anew with a start that repeats the occurrence already enqueued.
    s.put_schedule(sched("hourly", start=T0 + HOUR, next_run_at=T0 + HOUR))
    again = s.fire_schedule("hourly", T0 + 2 * HOUR + 1)
    assert [job.run_at for job in again] == [T0 + 2 * HOUR]  # "once": the latest only
    assert store.count_jobs() == 2 and first[0].id != again[0].id


@pytest.mark.parametrize("policy", ["all", "once", "skip"])
def test_misfire_policies_in_the_store(store: JobStore, policy: str) -> None:
    s = stores(store)
    s.put_schedule(sched("hourly", misfire=policy))
    jobs = s.fire_schedule("hourly", T0 + 5.5 * HOUR)
    expected = {"all": [1, 2, 3, 4, 5], "once": [5], "skip": []}[policy]
    assert [round((job.run_at - T0) / HOUR) for job in jobs] == expected
    assert s.get_schedule("hourly").next_run_at == T0 + 6 * HOUR


def test_eight_threads_firing_one_schedule_enqueue_each_occurrence_once(store: JobStore) -> None:
    s = stores(store)
    s.put_schedule(sched("minutely", every=60.0, misfire="all"))
    barrier = threading.Barrier(8)
    fired: list[str] = []
    lock = threading.Lock()

    def fire(n: int) -> None:
        barrier.wait()
        for step in range(1, 31):  # each thread fires at the same 30 instants
            jobs = s.fire_schedule("minutely", T0 + step * 60 + n * 0.001)
            with lock:
                fired.extend(job.id for job in jobs)

    threads = [threading.Thread(target=fire, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(fired) == 30 and len(set(fired)) == 30
    assert store.count_jobs() == 30


def test_a_closed_store_refuses_schedule_calls(store: JobStore) -> None:
    s = stores(store)
    store.close()
    with pytest.raises(ClosedError):
        s.put_schedule(sched())
    with pytest.raises(ClosedError):
        s.list_schedules()
    with pytest.raises(ClosedError):
        s.fire_schedule("report", T0)


def _fire_in_process(kind: str, where: str, schema: str, start: Any, out: Any) -> None:
    store = open_store(kind, where, schema)
    start.wait(60)
    fired = []
    try:
        for step in range(1, 61):
            fired.extend(job.id for job in store.fire_schedule("minutely", T0 + step * 60))
    finally:
        store.close()
    out.put(fired)


def open_store(kind: str, where: str, schema: str) -> Any:
    if kind == "sqlite":
        return SQLiteJobStore(where)
    from taskrunner.jobs import PostgresJobStore

    return PostgresJobStore(where, schema=schema)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_two_processes_firing_one_schedule_enqueue_each_occurrence_once(
    kind: str, tmp_path: Path
) -> None:
    if kind == "sqlite":
        where, schema = str(tmp_path / "jobs.db"), ""
    else:
        where, schema = require_dsn(), new_schema()
    with open_store(kind, where, schema) as setup:
        setup.put_schedule(sched("minutely", every=60.0, misfire="all"))
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    children = [
        ctx.Process(target=_fire_in_process, args=(kind, where, schema, start, out))
        for _ in range(2)
    ]
    for child in children:
        child.start()
    start.set()
    fired = [job_id for _ in children for job_id in out.get(timeout=120)]
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    assert len(fired) == 60 and len(set(fired)) == 60
    with open_store(kind, where, schema) as check:
        assert check.count_jobs() == 60


# ---------------------------------------------------------------- the manager


def test_mock_time_drives_an_hourly_schedule_through_a_day() -> None:
    with TaskEnvironment() as env:
        store = MemoryJobStore()
        manager = JobManager(store, env.pool, poll_interval=DAY, lease_seconds=HOUR)
        runs: list[float] = []
        manager.register("tick", lambda ctx, args: runs.append(manager.now()), may_block=False)
        manager.start()
        hourly = manager.schedule("tick", every=timedelta(hours=1))
        first = hourly.next_run_at
        assert first is not None
        env.fast_forward(DAY)
        assert len(runs) == 24
        assert [round(t - first) for t in runs] == [i * 3600 for i in range(24)]
        assert manager.schedules()[0].next_run_at == first + DAY
        assert manager.unschedule("tick") is True
        env.fast_forward(DAY)
        assert len(runs) == 24
        manager.shutdown()


def test_mock_time_drives_a_cron_schedule_and_a_missed_run_follows_the_policy(
    tmp_path: Path,
) -> None:
    store = SQLiteJobStore(tmp_path / "jobs.db")
    with TaskEnvironment() as env:
        manager = JobManager(store, env.pool, poll_interval=DAY, lease_seconds=HOUR)
        runs: list[float] = []
        manager.register("hourly", lambda ctx, args: runs.append(args["n"]), may_block=False)
        manager.start()
        manager.schedule("hourly", cron="0 * * * *", args={"n": 1}, misfire="once")
        env.fast_forward(DAY)
        assert runs == [1] * 24
        manager.shutdown()
    due = store.get_schedule("hourly").next_run_at
    assert due is not None
    # Nobody runs for five hours, then a manager starts: one run for the missed ones.
    with TaskEnvironment() as env:
        manager = JobManager(store, env.pool, poll_interval=DAY, lease_seconds=HOUR)
        manager.register("hourly", lambda ctx, args: runs.append(args["n"] * 2), may_block=False)
        env.fast_forward(due + 4.5 * HOUR - manager.now())  # not started: nothing fires
        manager.start()
        env.run_until_idle()
        assert runs == [1] * 24 + [2]
        (missed,) = [job for job in store.list_jobs().jobs if job.run_at > due - 1]
        assert missed.run_at == due + 4 * HOUR  # the latest missed occurrence
        assert store.get_schedule("hourly").next_run_at == due + 5 * HOUR
        manager.shutdown()
    store.close()


def test_schedule_arguments_are_checked_by_name() -> None:
    with JobManager(MemoryJobStore(), poll_interval=1.0) as manager:
        with pytest.raises(ValueError, match="exactly one"):
            manager.schedule("x")
        with pytest.raises(ValueError, match="time zone"):
            manager.schedule("x", cron="0 3 * * *", timezone="Mars/Olympus")
        with pytest.raises(ValueError, match="not valid"):
            manager.schedule("x", cron="every day")
        with pytest.raises(ValueError, match="every"):
            manager.schedule("x", every=timedelta(0))
        with pytest.raises(TypeError, match="start"):
            manager.schedule("x", every=60, start="tomorrow")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="aware"):
            manager.schedule("x", every=60, start=datetime(2030, 1, 1))
        with pytest.raises(SerializationError, match="schedule 'x'"):
            manager.schedule("x", every=60, args={1, 2})
        with pytest.raises(ValueError, match="misfire"):
            manager.schedule("x", every=60, misfire="later")
        with pytest.raises(UnknownJobTypeError, match="nope"):
            manager.schedule("x", every=60, job_type="nope")  # no handler: no schedule
        assert manager.schedules() == []


def test_a_cron_schedule_without_cronsim_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cronsim", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"taskrunner\[schedules\]"):
        check_cron("0 3 * * *")
    assert plan_fire(sched(every=HOUR), T0 + HOUR) == ([T0 + HOUR], T0 + 2 * HOUR)


def test_a_manager_with_an_armed_schedule_shuts_down_and_is_collected() -> None:
    store = MemoryJobStore()
    manager = JobManager(store, poll_interval=0.05)
    manager.register("tick", lambda ctx, args: None)
    manager.start()
    manager.schedule("tick", every=timedelta(hours=1))  # its timer waits an hour
    gone = threading.Event()
    weakref.finalize(manager, gone.set)
    stopper = threading.Thread(target=manager.shutdown, kwargs={"timeout": 10})
    stopper.start()  # from another thread
    stopper.join(30)
    assert not stopper.is_alive()
    del manager, stopper
    gc.collect()
    assert gone.is_set()
    assert [s.name for s in store.list_schedules()] == ["tick"]  # durable: it stays


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parent.parent
    return subprocess.run(
        [sys.executable, "-m", "taskrunner", *args],
        capture_output=True,
        text=True,
        cwd=root,
        env=dict(os.environ, PYTHONPATH=str(root)),
        timeout=60,
    )


def test_the_command_line_lists_schedules_with_their_next_run(tmp_path: Path) -> None:
    db = str(tmp_path / "jobs.db")
    with SQLiteJobStore(db) as store:
        store.put_schedule(sched("nightly", cron="0 3 * * *", timezone="Europe/Paris"))
        store.put_schedule(sched("hourly", every=HOUR))
    listed = cli("schedules", "list", "--db", db)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "WHEN", "TIMEZONE", "MISFIRE", "NEXT", "RUN"]
    assert lines[1].split()[:5] == ["hourly", "report", "every", "1h", "UTC"]
    assert "2026-06-01 13:00:00+00:00" in lines[1]
    assert "0 3 * * *" in lines[2] and "2026-06-02 03:00:00+02:00" in lines[2]
    data = json.loads(cli("schedules", "list", "--db", db, "--json").stdout)
    assert [(d["name"], d["args"], d["next_run_at"]) for d in data] == [
        ("hourly", {"n": 1}, T0 + HOUR),
        ("nightly", {"n": 1}, paris(2026, 6, 2, 3)),
    ]
    removed = cli("schedules", "remove", "--db", db, "hourly")
    assert removed.returncode == 0 and "removed" in removed.stdout
    assert cli("schedules", "remove", "--db", db, "hourly").returncode == 1
    missing = cli("schedules", "list", "--db", str(tmp_path / "nope.db"))
    assert missing.returncode == 2 and "no such database file" in missing.stderr


def readme_example(title: str) -> str:
    """The first ```python block after the README heading ``title``."""
    text = (Path(__file__).parent.parent / "README.md").read_text()
    section = text[text.index(f"\n### {title}\n") :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```\n", start)]


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres"])
def test_the_readme_example_runs_on_mock_time(kind: str, tmp_path: Path) -> None:
    store = make_store(kind, tmp_path)
    sent: list[str] = []
    beats: list[float] = []
    try:
        with TaskEnvironment() as env:
            manager = JobManager(store, env.pool, poll_interval=DAY, lease_seconds=HOUR)
            manager.register("heartbeat", lambda ctx, args: beats.append(1), may_block=False)
            manager.start()
            exec(readme_example("Periodic jobs"), {"manager": manager, "send_report": sent.append})
            (nightly,) = [s for s in manager.schedules() if s.name == "nightly_report"]
            assert nightly.next_run_at is not None
            assert local(nightly.next_run_at).hour == 3
            env.fast_forward(DAY)
            assert sent == ["ops"]
            assert len(beats) == 288
            manager.shutdown()
    finally:
        store.close()


def test_a_schedule_that_cannot_fire_is_logged_and_retried_at_the_poll_not_at_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MemoryJobStore()
    store.put_schedule(sched("broken", cron="0 * * * *", next_run_at=T0))
    store.put_schedule(sched("fine", every=HOUR))
    with TaskEnvironment() as env:
        manager = JobManager(store, env.pool, poll_interval=600, lease_seconds=HOUR)
        ran: list[int] = []
        manager.register("report", lambda ctx, args: ran.append(1), may_block=False)
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, "cronsim", None)  # as if it were not installed
            manager.start()
            env.fast_forward(1200)  # a busy loop would never let this return
        assert "schedule broken could not be fired" in caplog.text
        # At start, then at each poll and at the retry timer: a few, not a busy loop.
        assert caplog.text.count("could not be fired") <= 5
        assert len(ran) >= 1  # "fine" (long overdue on this clock) fired regardless
        manager.shutdown()


def _fire_forever(kind: str, where: str, schema: str, wall0: float, ready: Any) -> None:
    """Child process: fire the schedule "fast" in a loop, its clock at 100x speed;
    ``ready`` is set once it has fired (so it is killed while it works, not while
    it starts)."""
    store = open_store(kind, where, schema)
    while True:
        store.fire_schedule("fast", T0 + (time.time() - wall0) * 100)
        ready.set()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_firers_killed_mid_transaction_neither_lose_nor_double_an_occurrence(
    kind: str, tmp_path: Path
) -> None:
    if kind == "sqlite":
        where, schema = str(tmp_path / "jobs.db"), ""
    else:
        where, schema = require_dsn(), new_schema()
    with open_store(kind, where, schema) as setup:
        setup.put_schedule(sched("fast", every=1.0, misfire="all", next_run_at=T0 + 1))
    ctx = multiprocessing.get_context("spawn")
    wall0 = time.time()
    rng = random.Random(18)

    def firer() -> tuple[Any, Any]:
        ready = ctx.Event()
        process = ctx.Process(target=_fire_forever, args=(kind, where, schema, wall0, ready))
        process.start()
        return process, ready

    firers = [firer() for _ in range(2)]
    for _ in range(12):
        victim = rng.randrange(len(firers))
        process, ready = firers[victim]
        assert ready.wait(120), "a firer never fired"
        time.sleep(rng.uniform(0.05, 0.3))  # a random moment, often mid-transaction
        os.kill(process.pid or 0, signal.SIGKILL)
        process.join(30)
        firers[victim] = firer()
    for process, ready in firers:
        assert ready.wait(120), "a firer never fired"
        os.kill(process.pid or 0, signal.SIGKILL)
        process.join(30)
    with open_store(kind, where, schema) as check:
        following = check.get_schedule("fast").next_run_at
        times: list[float] = []
        cursor = None
        while True:
            page = check.list_jobs(limit=1000, after=cursor)
            times.extend(job.run_at for job in page.jobs)
            if (cursor := page.next_cursor) is None:
                break
        times.sort()
    assert len(times) > 0
    # Every occurrence before the schedule's next run was enqueued, and once.
    assert times == [T0 + k for k in range(1, round(following - T0))]
