"""JobManager across processes: a worker killed with SIGKILL, and two workers on one store."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from taskrunner.jobs import JobSpec, JobState, MemoryJobStore, SQLiteJobStore
from taskrunner.jobs.manager import JobManager
from taskrunner.runtime.pool import ThreadPool

pytestmark = [pytest.mark.thread_unsafe(reason="starts and kills processes")]
ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 60.0


def _submit(db: Path, n: int, seconds: float, wait_for_peer: bool = False) -> list[str]:
    store = SQLiteJobStore(db)
    pool = ThreadPool(1, name="submitter")
    m = JobManager(store, pool)
    m.register("work", lambda ctx, args: None)  # submit only: never started here
    args = {"seconds": seconds, "wait_for_peer": wait_for_peer}
    handles = m.submit_many([JobSpec("work", {"n": i, **args}) for i in range(n)])
    m.shutdown()
    pool.shutdown()
    store.close()
    return [h.id for h in handles]


def _worker(db: Path, runs: Path, lease: float) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        TASKRUNNER_RUNS_DB=str(runs),
        PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), str(ROOT)]),
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taskrunner.cli.worker",
            "--db",
            str(db),
            "--app",
            "crash_app:register",
            "--workers",
            "2",
            "--lease",
            str(lease),
            "--poll",
            "0.1",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _runs(runs: Path) -> list[tuple[str, int, int, int]]:
    if not runs.exists():
        return []
    with sqlite3.connect(runs, timeout=30) as conn:
        try:
            return list(conn.execute("SELECT job_id, attempt, pid, finished FROM runs"))
        except sqlite3.OperationalError:
            return []


def _wait_all_final(db: Path, ids: list[str]) -> dict[str, object]:
    store = SQLiteJobStore(db)
    end = time.monotonic() + DEADLINE
    try:
        while time.monotonic() < end:
            if store.count_jobs(states=["pending", "running"]) == 0:
                return {job_id: store.get(job_id) for job_id in ids}
            time.sleep(0.05)  # polling another process's progress
        pytest.fail("jobs did not all finish in time")
    finally:
        store.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_sigkilled_worker_loses_nothing_and_reruns_nothing_finished(tmp_path: Path) -> None:
    db, runs = tmp_path / "jobs.db", tmp_path / "runs.db"
    ids = _submit(db, 120, seconds=0.02)
    first = _worker(db, runs, lease=1.0)
    end = time.monotonic() + DEADLINE
    while len(_runs(runs)) < 30 and time.monotonic() < end:
        time.sleep(0.02)  # waiting for the other process to make progress
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_pid = first.pid
    second = _worker(db, runs, lease=1.0)
    try:
        jobs = _wait_all_final(db, ids)
    finally:
        _stop(second)
    rows = _runs(runs)
    assert all(job.state is JobState.SUCCEEDED for job in jobs.values())  # type: ignore[attr-defined]
    by_job: dict[str, list[tuple[int, int, int]]] = {}
    for job_id, attempt, pid, finished in rows:
        by_job.setdefault(job_id, []).append((attempt, pid, finished))
    interrupted = 0
    for job_id in ids:
        job = jobs[job_id]
        attempts = [a for a, _, _ in by_job.get(job_id, [])]
        assert attempts, f"job {job_id} never ran"
        assert len(attempts) == len(set(attempts)), f"an attempt of {job_id} ran twice"
        assert max(attempts) == job.attempt  # type: ignore[attr-defined]
        # The attempt that succeeded ran to its end exactly once, and nothing after it.
        winners = [r for r in by_job[job_id] if r[0] == job.attempt]  # type: ignore[attr-defined]
        assert len(winners) == 1 and winners[0][2] == 1
        interrupted += sum(
            1 for a, pid, _ in by_job[job_id] if pid == killed_pid and a < job.attempt
        )  # type: ignore[attr-defined]
    assert interrupted >= 1  # the kill really interrupted running jobs, which were recovered


def test_two_workers_share_one_store_and_run_each_job_once(tmp_path: Path) -> None:
    """Each job runs exactly once (the promise), and both workers take part: made
    deterministic, not left to the scheduler.  The first worker starts alone and
    holds its jobs (``wait_for_peer``) until a run by another process is recorded,
    so it cannot finish everything before the second one starts; the second one
    finds due jobs because a manager claims at most ``max_concurrent`` (64) at once."""
    db, runs = tmp_path / "jobs.db", tmp_path / "runs.db"
    ids = _submit(db, 100, seconds=0.0, wait_for_peer=True)
    first = _worker(db, runs, lease=5.0)
    workers = [first]
    try:
        end = time.monotonic() + DEADLINE
        while not _runs(runs) and time.monotonic() < end:
            time.sleep(0.02)  # waiting for the first worker to start a job
        assert {r[2] for r in _runs(runs)} == {first.pid}
        workers.append(_worker(db, runs, lease=5.0))
        jobs = _wait_all_final(db, ids)
    finally:
        for w in workers:
            _stop(w)
    rows = _runs(runs)
    assert all(job.state is JobState.SUCCEEDED for job in jobs.values())  # type: ignore[attr-defined]
    assert sorted(r[0] for r in rows) == sorted(ids)  # each job ran exactly once
    assert {r[2] for r in rows} == {w.pid for w in workers}  # and both workers took part


def test_worker_rejects_a_bad_app() -> None:
    from taskrunner.cli.worker import load_app

    with pytest.raises(ValueError):
        load_app("no_colon")
    with pytest.raises(ValueError):
        load_app("no.such.module:thing")
    with pytest.raises(ValueError):
        load_app("taskrunner:no_such_attribute")


def test_memory_store_is_importable_for_single_process_use() -> None:
    assert MemoryJobStore().count_jobs() == 0
