"""Queues in the JobManager: submit to a queue, consume only given queues each up to
its limit, pause/resume at run time (also against a worker in another process,
on SQLite and PostgreSQL), ``taskrunner worker --queues`` and ``taskrunner
queues``.  The first test is the README's example."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pg_fixture import new_schema, require_dsn

from taskrunner import ThreadPool
from taskrunner.jobs import (
    JobContext,
    JobManager,
    JobState,
    JobStore,
    MemoryJobStore,
    SQLiteJobStore,
    new_job,
)
from taskrunner.jobs.queues import QueueInfo

pytestmark = [pytest.mark.thread_unsafe(reason="each test owns a pool, a store and processes")]

WAIT = 30.0
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    made: JobStore
    if request.param == "memory":
        made = MemoryJobStore()
    elif request.param == "sqlite":
        made = SQLiteJobStore(tmp_path / "jobs.db")
    else:
        from taskrunner.jobs import PostgresJobStore

        made = PostgresJobStore(require_dsn(), schema=new_schema())
    yield made
    made.close()


@pytest.fixture
def pool() -> Iterator[ThreadPool]:
    p = ThreadPool(4, name="queues").start()
    yield p
    p.shutdown(timeout=WAIT)


def test_readme_queues(store: JobStore) -> None:
    # A worker that runs mail (10 at once) and reports (2 at once), nothing else.
    worker = JobManager(store, queues={"mail": 10, "reports": 2}, poll_interval=0.05)
    worker.register("send_mail", lambda ctx, to: f"sent to {to}")
    worker.register("build_report", lambda ctx, month: f"report {month}")
    worker.start()

    mail = worker.submit("send_mail", "ann@example.com", queue="mail")
    assert mail.result(WAIT) == "sent to ann@example.com"

    worker.pause_queue("reports")  # for every worker on the store, until resumed
    report = worker.submit("build_report", "2026-11", queue="reports")
    other = worker.submit("send_mail", "bob@example.com", queue="mail")
    assert other.result(WAIT) == "sent to bob@example.com"  # claimed after the report...
    assert worker.get(report.id).state is JobState.PENDING  # ...which waits
    reports = {q.name: q for q in worker.list_queues()}["reports"]
    assert (reports.paused, reports.pending, reports.running) == (True, 1, 0)

    worker.resume_queue("reports")
    assert report.result(WAIT) == "report 2026-11"
    worker.shutdown()


class Gates:
    """Handlers that block until released, counting how many run at once per queue."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # guards the three fields
        self.changed = threading.Condition(self.lock)
        self.running: dict[str, int] = {}
        self.most: dict[str, int] = {}
        self.started = 0
        self.release = threading.Event()

    def handler(self, ctx: JobContext, args: Any) -> str:
        queue = ctx.queue
        with self.lock:
            self.running[queue] = self.running.get(queue, 0) + 1
            self.most[queue] = max(self.most.get(queue, 0), self.running[queue])
            self.started += 1
            self.changed.notify_all()
        try:
            assert self.release.wait(WAIT)
            return queue
        finally:
            with self.lock:
                self.running[queue] -= 1

    def wait_started(self, n: int) -> None:
        with self.lock:
            assert self.changed.wait_for(lambda: self.started >= n, WAIT)


def test_each_queue_runs_at_most_its_limit_at_once(store: JobStore, pool: ThreadPool) -> None:
    gates = Gates()
    m = JobManager(store, pool, queues={"a": 1, "b": 2}, poll_interval=0.05)
    m.register("work", gates.handler, may_block=True)
    m.start()
    handles = [m.submit("work", i, queue=q) for q in ("a", "b") for i in range(4)]
    gates.wait_started(3)
    listed = {q.name: (q.running, q.pending) for q in m.list_queues()}
    assert listed == {"a": (1, 3), "b": (2, 2)}
    gates.release.set()
    assert sorted(h.result(WAIT) for h in handles) == ["a"] * 4 + ["b"] * 4
    assert gates.most == {"a": 1, "b": 2}
    m.shutdown(timeout=WAIT)


def test_a_manager_claims_only_its_queues(store: JobStore, pool: ThreadPool) -> None:
    m = JobManager(store, pool, queues={"mail": 1}, poll_interval=0.05)
    m.register("send", lambda ctx, args: "sent")
    m.start()
    elsewhere = m.submit("send", None)  # the "default" queue: no one here consumes it
    mine = m.submit("send", None, queue="mail")
    assert mine.result(WAIT) == "sent"
    assert m.get(elsewhere.id).state is JobState.PENDING
    assert m.get(elsewhere.id).queue == "default"
    m.shutdown(timeout=WAIT)
    other = JobManager(store, pool, poll_interval=0.05)  # the default: {"default": 64}
    other.register("send", lambda ctx, args: "sent by the other")
    assert other.queues == {"default": 64}
    other.start()
    assert other.result(elsewhere.id, WAIT) == "sent by the other"
    other.shutdown(timeout=WAIT)


def test_a_paused_queue_lets_running_jobs_finish_and_claims_nothing_new(
    store: JobStore, pool: ThreadPool
) -> None:
    gates = Gates()
    m = JobManager(store, pool, queues={"mail": 4, "default": 4}, poll_interval=0.05)
    m.register("work", gates.handler, may_block=True)
    m.register("quick", lambda ctx, args: "done")
    m.start()
    running = m.submit("work", None, queue="mail")
    gates.wait_started(1)
    assert m.pause_queue("mail") is True
    assert m.pause_queue("mail") is False
    waiting = m.submit("quick", None, queue="mail")
    later = m.submit("quick", None)  # claimed by a claim that saw `waiting` and skipped it
    assert later.result(WAIT) == "done"
    assert m.get(waiting.id).state is JobState.PENDING
    gates.release.set()
    assert running.result(WAIT) == "mail"  # the running job finished
    assert m.get(waiting.id).state is JobState.PENDING
    assert m.resume_queue("mail") is True
    assert waiting.result(WAIT) == "done"
    assert m.resume_queue("mail") is False
    m.shutdown(timeout=WAIT)


def test_bad_queue_arguments_are_refused_naming_the_problem(pool: ThreadPool) -> None:
    store = MemoryJobStore()
    with pytest.raises(ValueError, match="at least one"):
        JobManager(store, pool, queues={})
    with pytest.raises(ValueError, match="not both"):
        JobManager(store, pool, queues={"mail": 1}, max_concurrent=3)
    with pytest.raises(ValueError, match="not a valid queue name"):
        JobManager(store, pool, queues={"bad name": 1})
    with pytest.raises(ValueError, match=r"queues\['mail'\] must be >= 1"):
        JobManager(store, pool, queues={"mail": 0})
    with pytest.raises(ValueError, match="max_concurrent must be >= 1"):
        JobManager(store, pool, max_concurrent=0)
    m = JobManager(store, pool, max_concurrent=3)
    assert m.queues == {"default": 3}
    m.register("send", lambda ctx, args: None)
    with pytest.raises(ValueError, match="queue"):
        m.submit("send", None, queue="mail,reports")
    with pytest.raises(ValueError, match="not a valid queue name"):
        m.pause_queue("a b")
    assert store.count_jobs() == 0 and store.list_queues(0.0) == []
    m.shutdown(timeout=WAIT)


def test_a_manager_with_queues_is_collectable_after_shutdown(tmp_path: Path) -> None:
    store = SQLiteJobStore(tmp_path / "jobs.db")
    m = JobManager(store, queues={"mail": 2, "reports": 1}, poll_interval=0.05)
    m.register("send", lambda ctx, args: "sent")
    m.start()
    assert m.submit("send", None, queue="mail").result(WAIT) == "sent"
    m.pause_queue("reports")
    collected = threading.Event()
    weakref.finalize(m, collected.set)
    m.shutdown(timeout=WAIT)
    del m
    gc.collect()
    assert collected.is_set()
    store.close()


def test_a_resume_on_postgres_wakes_listening_workers_at_once(pool: ThreadPool) -> None:
    """The manager polls once an hour: only the resume's NOTIFY can make it claim."""
    from taskrunner.jobs import PostgresJobStore

    dsn, schema = require_dsn(), new_schema()
    with (
        PostgresJobStore(dsn, schema=schema) as store,
        PostgresJobStore(dsn, schema=schema) as operator,
    ):
        m = JobManager(store, pool, queues={"mail": 1}, poll_interval=3600)
        m.register("send", lambda ctx, args: "sent")
        m.start()
        assert store.wait_listening(WAIT)
        operator.pause_queue("mail", time.time())
        job = m.submit("send", None, queue="mail")  # its own claim finds the queue paused
        assert m.get(job.id).state is JobState.PENDING
        operator.resume_queue("mail", time.time())  # another store object: no local kick
        assert job.result(WAIT) == "sent"
        m.shutdown(timeout=WAIT)


# ---------------------------------------------------------------- across processes


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "taskrunner", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
    )


def _wait_state(store: JobStore, job_id: str, state: JobState) -> None:
    end = time.monotonic() + 60
    while store.get(job_id).state is not state:
        assert time.monotonic() < end, f"job {job_id} did not become {state}"
        time.sleep(0.02)  # polling another process's progress


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_pause_and_resume_reach_a_worker_in_another_process(kind: str, tmp_path: Path) -> None:
    where: list[str]
    store: JobStore
    if kind == "sqlite":
        where = ["--db", str(tmp_path / "jobs.db")]
        store = SQLiteJobStore(tmp_path / "jobs.db")
    else:
        from taskrunner.jobs import PostgresJobStore

        dsn, schema = require_dsn(), new_schema()
        where = ["--dsn", dsn, "--schema", schema]
        store = PostgresJobStore(dsn, schema=schema)

    def insert(queue: str) -> str:
        job = new_job("send", b"null", now=time.time(), queue=queue)
        store.insert(job)
        return job.id

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT)]))
    opts = ["--queues", "mail:2,default:1", "--poll", "0.05"]
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taskrunner",
            "worker",
            *where,
            "--app",
            "queue_app:register",
            *opts,
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        first = insert("mail")
        _wait_state(store, first, JobState.SUCCEEDED)  # the worker runs, and runs mail
        paused = _cli("queues", "pause", *where, "mail")  # a third process pauses it
        assert paused.returncode == 0, paused.stderr
        assert paused.stdout.strip() == "queue mail paused"
        held = insert("mail")
        probe = insert("default")  # claimed by a claim that saw `held` and skipped it
        _wait_state(store, probe, JobState.SUCCEEDED)
        assert store.get(held).state is JobState.PENDING
        listed = _cli("queues", "list", *where, "--json")
        assert listed.returncode == 0, listed.stderr
        rows = {row["name"]: row for row in json.loads(listed.stdout)}
        assert rows["mail"]["paused"] is True and rows["mail"]["pending"] == 1
        table = _cli("queues", "list", *where)
        assert table.stdout.split()[:5] == ["QUEUE", "STATE", "PENDING", "RUNNING", "OLDEST"]
        assert "paused" in table.stdout
        resumed = _cli("queues", "resume", *where, "mail")
        assert resumed.returncode == 0 and resumed.stdout.strip() == "queue mail resumed"
        _wait_state(store, held, JobState.SUCCEEDED)
        again = _cli("queues", "resume", *where, "mail")
        assert again.stdout.strip() == "queue mail was already running"
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            code = worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
            raise
        store.close()
    stderr = worker.stderr.read().decode() if worker.stderr else ""
    assert code == 0, stderr
    assert "queues mail:2,default:1" in stderr


def test_worker_queues_spec_errors_are_usage_errors(tmp_path: Path) -> None:
    db = str(tmp_path / "jobs.db")
    for spec, message in [
        ("mail:ten", "whole number"),
        ("mail:0", ">= 1"),
        ("mail:1,,x", "empty item"),
        ("mail:1,mail:2", "named twice"),
    ]:
        result = _cli("worker", "--db", db, "--app", "queue_app:register", "--queues", spec)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "--queues" in lines[0] and message in lines[0], lines
    bad = _cli("queues", "pause", "--db", db, "no good")
    assert bad.returncode == 2 and "not a valid queue name" in bad.stderr


def test_queues_list_on_an_empty_store_and_as_a_table(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    store = SQLiteJobStore(db)
    assert _cli("queues", "list", "--db", str(db)).stdout.startswith("no queues")
    job = new_job("send", b"null", now=time.time() - 90, queue="mail")
    store.insert(job)
    store.close()
    shown = json.loads(_cli("jobs", "show", "--db", str(db), job.id, "--json").stdout)
    assert shown["queue"] == "mail"
    plain = _cli("jobs", "show", "--db", str(db), job.id).stdout
    assert any(line.split() == ["queue:", "mail"] for line in plain.splitlines()), plain
    listed = _cli("jobs", "list", "--db", str(db)).stdout.splitlines()
    assert listed[0].split()[:4] == ["ID", "TYPE", "QUEUE", "STATE"]
    assert listed[1].split()[:4] == [job.id, "send", "mail", "pending"]
    out = _cli("queues", "list", "--db", str(db)).stdout.splitlines()
    assert out[1].split()[:4] == ["mail", "active", "1", "0"]
    assert out[1].split()[4].endswith("s")  # waited about 90 s
    assert QueueInfo("mail", 1, 0, None, None, False).to_dict()["name"] == "mail"
