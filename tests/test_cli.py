"""The ``taskrunner`` command line, driven as a user would: subprocesses on a temporary store."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskrunner.cli.args import parse_duration, parse_since
from taskrunner.jobs import JobManager, JobState, SQLiteJobStore, new_job
from taskrunner.jobs.stores.sqlite_store import SCHEMA_VERSION
from taskrunner.runtime.pool import ThreadPool

pytestmark = [pytest.mark.thread_unsafe(reason="starts processes")]
ROOT = Path(__file__).resolve().parent.parent
DAY = 86400.0


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "taskrunner", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "error" in lines[0]
    return lines[0]


# ---------------------------------------------------------------- a store in every state


class Jobs:
    """Ids of a store's jobs by what they are."""

    def __init__(self, db: Path) -> None:
        self.db = db
        now = time.time()
        with SQLiteJobStore(db) as store:

            def add(job_type: str, *, at: float = now, max_attempts: int = 3) -> str:
                job = new_job(job_type, b'{"n": 1}', now=at, max_attempts=max_attempts)
                store.insert(job)
                return job.id

            self.pending = [add("email"), add("email")]
            self.pending_report = add("report")
            self.running = add("report")
            store.claim(self.running, "worker-a", now, lease_seconds=600)
            self.succeeded = add("email")
            store.claim(self.succeeded, "worker-a", now, lease_seconds=600)
            store.complete(self.succeeded, "worker-a", now, b'{"ok": 1}')
            self.failed = add("report", max_attempts=1)
            store.claim(self.failed, "worker-a", now, lease_seconds=600)
            store.fail(self.failed, "worker-a", now, "ValueError: boom", "Traceback ...")
            self.cancelled = add("email")
            store.cancel(self.cancelled, now)
            old = now - 10 * DAY
            self.old = add("email", at=old)
            store.claim(self.old, "worker-a", old, lease_seconds=600)
            store.complete(self.old, "worker-a", old + 1, None)
        self.all = [
            *self.pending,
            self.pending_report,
            self.running,
            self.succeeded,
            self.failed,
            self.cancelled,
            self.old,
        ]
        self.in_creation_order = [self.old, *self.all[:-1]]

    def state(self, job_id: str) -> JobState:
        with SQLiteJobStore(self.db) as store:
            return store.get(job_id).state

    def states(self) -> dict[str, JobState]:
        with SQLiteJobStore(self.db) as store:
            return {j.id: j.state for j in store.list_jobs(limit=100).jobs}


@pytest.fixture
def jobs(tmp_path: Path) -> Jobs:
    return Jobs(tmp_path / "jobs.db")


def listed(*args: str) -> list[str]:
    result = cli("jobs", "list", *args, "--json")
    assert result.returncode == 0, result.stderr
    return [j["id"] for j in json.loads(result.stdout)]


# ---------------------------------------------------------------- jobs list / show


def test_list_filters_by_state_type_and_since(jobs: Jobs) -> None:
    db = str(jobs.db)
    assert listed("--db", db) == jobs.in_creation_order
    assert set(listed("--db", db, "--state", "pending")) == {*jobs.pending, jobs.pending_report}
    assert set(listed("--db", db, "--state", "pending", "--type", "report")) == {
        jobs.pending_report
    }
    assert set(listed("--db", db, "--state", "failed,cancelled")) == {jobs.failed, jobs.cancelled}
    assert set(listed("--db", db, "--state", "succeeded", "--since", "1d")) == {jobs.succeeded}
    assert set(listed("--db", db, "--state", "succeeded")) == {jobs.succeeded, jobs.old}
    assert listed("--db", db, "--limit", "2") == jobs.in_creation_order[:2]


def test_list_prints_a_table_by_default(jobs: Jobs) -> None:
    result = cli("jobs", "list", "--db", str(jobs.db), "--state", "failed")
    assert result.returncode == 0
    header, row = result.stdout.strip().splitlines()
    assert header.split()[:4] == ["ID", "TYPE", "QUEUE", "STATE"]
    assert row.split()[:5] == [jobs.failed, "report", "default", "failed", "1/1"]
    assert "ValueError: boom" in row


def test_show_gives_every_field_and_decodes_payloads(jobs: Jobs) -> None:
    result = cli("jobs", "show", "--db", str(jobs.db), jobs.succeeded, "--json")
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data["id"] == jobs.succeeded
    assert data["state"] == "succeeded"
    assert data["args"] == {"n": 1}
    assert data["result"] == {"ok": 1}
    text = cli("jobs", "show", "--db", str(jobs.db), jobs.failed).stdout
    assert "state:            failed" in text
    assert "traceback:\nTraceback ..." in text


# ---------------------------------------------------------------- cancel / retry / purge


def test_cancel_pending_and_running_jobs(jobs: Jobs) -> None:
    db = str(jobs.db)
    result = cli("jobs", "cancel", "--db", db, jobs.pending[0])
    assert result.returncode == 0, result.stderr
    assert jobs.state(jobs.pending[0]) is JobState.CANCELLED
    assert jobs.state(jobs.pending[1]) is JobState.PENDING
    result = cli("jobs", "cancel", "--db", db, jobs.running)
    assert result.returncode == 0
    assert "cancel requested" in result.stdout
    with SQLiteJobStore(jobs.db) as store:
        running = store.get(jobs.running)
    assert running.state is JobState.RUNNING and running.cancel_requested
    # By filter: every pending email job.
    result = cli("jobs", "cancel", "--db", db, "--state", "pending", "--type", "email")
    assert result.returncode == 0
    assert jobs.state(jobs.pending[1]) is JobState.CANCELLED
    assert jobs.state(jobs.pending_report) is JobState.PENDING


def test_a_cancel_the_handler_ignored_stays_visible(jobs: Jobs) -> None:
    """The worker finished the job although its cancel was requested: it succeeded,
    and the listing and a second cancel say that the request came too late."""
    db = str(jobs.db)
    assert cli("jobs", "cancel", "--db", db, jobs.running).returncode == 0
    with SQLiteJobStore(jobs.db) as store:
        held = store.get(jobs.running)
        assert held.owner is not None
        store.complete(jobs.running, held.owner, time.time(), b"1", attempt=held.attempt)
    listing = cli("jobs", "list", "--db", db, "--state", "succeeded").stdout
    assert "succeeded (cancel requested)" in listing
    result = cli("jobs", "cancel", "--db", db, jobs.running, "--json")
    assert result.returncode == 1
    outcome = json.loads(result.stdout)[0]["outcome"]
    assert outcome == "not cancelled: it succeeded after the request (its handler did not stop)"


def test_cancel_of_a_finished_job_changes_nothing_and_exits_1(jobs: Jobs) -> None:
    before = jobs.states()
    result = cli("jobs", "cancel", "--db", str(jobs.db), jobs.succeeded, "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)[0]["outcome"].startswith("not cancelled")
    assert jobs.states() == before


def test_retry_failed_and_cancelled_jobs(jobs: Jobs) -> None:
    db = str(jobs.db)
    result = cli("jobs", "retry", "--db", db, jobs.failed, jobs.cancelled)
    assert result.returncode == 0, result.stderr
    with SQLiteJobStore(jobs.db) as store:
        for job_id in (jobs.failed, jobs.cancelled):
            job = store.get(job_id)
            assert job.state is JobState.PENDING and job.attempt == 0
    assert cli("jobs", "cancel", "--db", db, jobs.failed).returncode == 0
    start = time.time()
    assert cli("jobs", "retry", "--db", db, jobs.failed, "--delay", "1h").returncode == 0
    with SQLiteJobStore(jobs.db) as store:
        assert store.get(jobs.failed).run_at >= start + 3600 - 1


def test_retry_refuses_jobs_that_did_not_fail(jobs: Jobs) -> None:
    before = jobs.states()
    result = cli("jobs", "retry", "--db", str(jobs.db), jobs.succeeded)
    assert result.returncode == 1
    assert "not retried" in result.stdout
    assert jobs.states() == before


def test_purge_removes_only_finished_jobs_older_than_the_age(jobs: Jobs) -> None:
    db = str(jobs.db)
    before = jobs.states()
    result = cli("jobs", "purge", "--db", db, "--older-than", "7d", "--dry-run")
    assert result.returncode == 0 and "1 finished job(s)" in result.stdout
    assert jobs.states() == before
    result = cli("jobs", "purge", "--db", db, "--older-than", "7d", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout)["purged"] == 1
    after = jobs.states()
    assert jobs.old not in after
    assert after == {k: v for k, v in before.items() if k != jobs.old}
    result = cli("jobs", "purge", "--db", db, "--older-than", "0")
    assert result.returncode == 0 and "purged 3" in result.stdout
    assert set(jobs.states()) == {*jobs.pending, jobs.pending_report, jobs.running}


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["jobs", "list", "--db", "{missing}"], "no such database file"),
        (["jobs", "show", "--db", "{missing}", "x"], "no such database file"),
        (["jobs", "purge", "--db", "{missing}", "--older-than", "1d"], "no such database file"),
        (["jobs", "show", "--db", "{db}", "nope"], "unknown job 'nope'"),
        (["jobs", "cancel", "--db", "{db}", "{pending}", "nope"], "unknown job 'nope'"),
        (["jobs", "retry", "--db", "{db}", "nope"], "unknown job 'nope'"),
        (["jobs", "list", "--db", "{db}", "--state", "done"], "unknown job state 'done'"),
        (["jobs", "cancel", "--db", "{db}", "--state", "bogus"], "unknown job state 'bogus'"),
        (["jobs", "list", "--db", "{db}", "--since", "yesterday"], "invalid time"),
        (["jobs", "purge", "--db", "{db}", "--older-than", "7 days"], "invalid duration"),
        (["jobs", "purge", "--db", "{db}"], "--older-than"),
        (["jobs", "cancel", "--db", "{db}"], "name the jobs"),
        (["jobs", "list"], "--db"),
        (["jobs"], "required"),
        ([], "required"),
        (["worker", "--db", "{db}", "--app", "no_such_module:app"], "cannot import"),
        (["worker", "--db", "{db}", "--app", "nocolon"], "module:attribute"),
        (["demo", "--jobs", "3", "--db", "{db}"], "at least 10"),
        (["demo", "--db", "{db}"], "exists"),
        (["db", "migrate"], "--db"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(
    jobs: Jobs, args: list[str], says: str, tmp_path: Path
) -> None:
    before = jobs.states()
    values = {"db": str(jobs.db), "missing": str(tmp_path / "nope.db"), "pending": jobs.pending[0]}
    result = cli(*(a.format(**values) for a in args))
    assert result.returncode == 2, result
    assert says in one_line_error(result)
    assert result.stdout == ""
    assert jobs.states() == before  # a refused command changes nothing
    assert not (tmp_path / "nope.db").exists()  # and creates no store by accident


def test_duration_and_since_parsing() -> None:
    assert parse_duration("90") == 90
    assert parse_duration("15m") == 900
    assert parse_duration("1.5h") == 5400
    assert parse_duration("7d") == 7 * DAY
    assert parse_since("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_since("2024-05-01T12:00:00+00:00") == 1714564800.0


# ---------------------------------------------------------------- db migrate


def test_db_migrate_creates_then_reports_a_sqlite_store(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    result = cli("db", "migrate", "--db", str(db))
    assert result.returncode == 0, result.stderr
    assert f"created at schema version {SCHEMA_VERSION}" in result.stdout
    with SQLiteJobStore(db) as store:
        assert store.pragmas()["user_version"] == SCHEMA_VERSION
    result = cli("db", "migrate", "--db", str(db))
    assert result.returncode == 0 and "is at schema version" in result.stdout


def test_db_migrate_dsn_failure_is_one_line(tmp_path: Path) -> None:
    # Nothing listens on port 1 of the loopback: without psycopg this is exit 2,
    # with it a refused connection, exit 1.  Either way: one line, no traceback.
    result = cli("db", "migrate", "--dsn", "postgresql://127.0.0.1:1/none?connect_timeout=2")
    assert result.returncode in (1, 2)
    one_line_error(result)


# ---------------------------------------------------------------- worker


def _submit(db: Path, job_type: str, args: object) -> str:
    from taskrunner.cli.demo import app

    store = SQLiteJobStore(db)
    pool = ThreadPool(1, name="submitter")
    manager = JobManager(store, pool)
    app(manager)  # registers the types; never started, so it claims nothing
    try:
        return manager.submit(job_type, args).id
    finally:
        manager.shutdown()
        pool.shutdown()
        store.close()


def _wait_state(db: Path, job_id: str, state: JobState, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    with SQLiteJobStore(db) as store:
        while store.get(job_id).state is not state:
            assert time.monotonic() < end, f"job did not become {state}"
            time.sleep(0.05)  # polling the worker process's progress


@pytest.fixture
def worker(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    db = tmp_path / "w.db"
    SQLiteJobStore(db).close()
    # A short lease by default: the heartbeat (every lease/3) relays a cancel request
    # within a second.  A test may ask for another (indirect parametrisation).
    lease = getattr(request, "param", 3.0)
    command = [
        "worker",
        "--poll",
        "0.1",
        "--lease",
        str(lease),
        "--grace",
        "30",
        "--app",
        "taskrunner.cli.demo:app",
        "--db",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskrunner", *command, str(db)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        assert proc.stderr is not None
        assert "handlers cpu, fast, flaky, io, slow" in proc.stderr.readline()
        yield db, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _read_until(proc: subprocess.Popen[str], text: str) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        if text in line:
            return
    pytest.fail(f"the worker exited without logging {text!r}")


def test_worker_runs_jobs_and_stops_gracefully_on_sigterm(
    worker: tuple[Path, subprocess.Popen[str]],
) -> None:
    db, proc = worker
    job_id = _submit(db, "io", {"n": 7, "ms": 10})
    _wait_state(db, job_id, JobState.SUCCEEDED)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


# A long lease: on a loaded machine a 3 s lease can run out while the job runs, and
# the worker's own poll would take it back; the drain would then have nothing to
# wait for, and the second signal nothing to cut short.
@pytest.mark.parametrize("worker", [120.0], indirect=True)
def test_worker_second_signal_stops_at_once_leaving_the_job_for_recovery(
    worker: tuple[Path, subprocess.Popen[str]],
) -> None:
    db, proc = worker
    job_id = _submit(db, "slow", {"seconds": 120})
    _wait_state(db, job_id, JobState.RUNNING)
    proc.send_signal(signal.SIGINT)
    _read_until(proc, "stopping")  # the graceful drain has begun (it would wait 30 s)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 1
    assert SQLiteJobStore(db).get(job_id).state is JobState.RUNNING  # recovered after its lease


def test_cancel_stops_a_job_running_on_a_worker(
    worker: tuple[Path, subprocess.Popen[str]],
) -> None:
    db, proc = worker
    job_id = _submit(db, "slow", {"seconds": 120})
    _wait_state(db, job_id, JobState.RUNNING)
    result = cli("jobs", "cancel", "--db", str(db), job_id, "--wait", "20", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == [
        {"id": job_id, "state": "cancelled", "outcome": "cancelled"}
    ]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


# ---------------------------------------------------------------- demo


def test_demo_small_run_exits_0_and_says_nothing_was_lost(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    result = cli("demo", "--jobs", "40", "--db", str(db), "--plain", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SIGKILL worker" in result.stdout
    assert "PASS: no job lost, none run twice" in result.stdout
    with SQLiteJobStore(db) as store:
        states = [j.state for j in store.list_jobs(limit=100).jobs]
    assert len(states) == 40
    assert states.count(JobState.SUCCEEDED) == 39 and states.count(JobState.CANCELLED) == 1
    with sqlite3.connect(db.with_name("demo.db.runs")) as conn:
        runs = conn.execute("SELECT count(DISTINCT job_id) FROM runs").fetchone()[0]
    assert runs == 40  # every job ran (the ledger the verdict is based on)


# ---------------------------------------------------------------- bench


GOOD = """
def report(quick):
    yield ("rate", 200.0, "peer A", 100.0, "tasks/s")
    yield ("cost", 5.0, "peer B", 10.0, "us")
    yield ("override", 3.0, "peer C", 6.0, "score", True)
    yield ("no peer", 1.0, "Huey", None, "jobs/s")
"""


def test_bench_runs_reports_and_computes_ratios(tmp_path: Path) -> None:
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "bench_good.py").write_text(GOOD)
    (bench / "bench_plain.py").write_text("def main():\n    return 0\n")
    (bench / "bench_broken.py").write_text("def report(quick):\n    raise RuntimeError('x')\n")
    (bench / "conftest.py").write_text("raise SystemExit('never imported')\n")
    result = cli("bench", "--bench-dir", str(bench), "--json", "--plain")
    assert result.returncode == 1  # bench_broken raised
    data = json.loads(result.stdout)
    ratios = {r["name"]: r["ratio"] for r in data["rows"]}
    assert ratios == {"rate": 2.0, "cost": 2.0, "override": 0.5, "no peer": None}
    assert [s["script"] for s in data["skipped"]] == ["bench_plain.py"]
    assert [f["script"] for f in data["failed"]] == ["bench_broken.py"]
    result = cli("bench", "--bench-dir", str(bench), "--only", "good", "--plain")
    assert result.returncode == 0, result.stderr
    assert "2.00x" in result.stdout and "0.50x" in result.stdout and "n/a" in result.stdout


def test_bench_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "bench_good.py").write_text(GOOD)
    png = tmp_path / "ratios.png"
    result = cli("bench", "--bench-dir", str(bench), "--plot", str(png), "--plain")
    assert result.returncode == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_verdict_catches_lost_and_twice_run_jobs(tmp_path: Path) -> None:
    from taskrunner.cli.demo.app import ledger_connect
    from taskrunner.cli.demo.verdict import judge
    from taskrunner.jobs import Job

    def job(job_id: str, state: JobState, attempt: int) -> Job:
        final = state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)
        finished = 2.0 if final else None
        return Job(
            id=job_id,
            type="fast",
            state=state,
            attempt=attempt,
            created_at=1.0,
            updated_at=2.0,
            run_at=1.0,
            finished_at=finished,
        )

    ok, dup, late, pending = "ok", "dup", "late", "pending"
    recovered, rerun, slow = "rec", "rerun", "slow"
    jobs = {
        ok: job(ok, JobState.SUCCEEDED, 1),
        dup: job(dup, JobState.SUCCEEDED, 1),
        late: job(late, JobState.SUCCEEDED, 1),
        pending: job(pending, JobState.PENDING, 0),
        recovered: job(recovered, JobState.SUCCEEDED, 2),
        rerun: job(rerun, JobState.SUCCEEDED, 2),
        slow: job(slow, JobState.CANCELLED, 1),
    }
    killed = 666
    runs = tmp_path / "runs"
    conn = ledger_connect(str(runs))
    for row in [
        (ok, 1, 1, "ok"),
        (dup, 1, 1, "ok"),
        (dup, 1, 2, "ok"),  # one attempt run by two workers
        (late, 1, 1, "ok"),
        (late, 2, 2, "ok"),  # a run after the stored outcome
        (recovered, 1, killed, None),  # cut short by the kill
        (recovered, 2, 2, "ok"),
        (rerun, 1, killed, "ok"),  # done, but killed before the store recorded it
        (rerun, 2, 2, "ok"),
        (slow, 1, 1, "cancelled"),
    ]:
        conn.execute(
            "INSERT INTO runs (job_id, type, attempt, pid, started, outcome) VALUES (?, 'x', ?, ?,"
            " 0, ?)",
            row,
        )
    conn.close()
    verdict = judge([*jobs, "missing"], jobs, slow, runs, {killed})
    assert sorted(v.split()[0] for v in verdict.lost) == ["missing:", "pending"]
    assert sorted(v.split()[0] for v in verdict.twice) == ["dup", "late"]
    assert (verdict.recovered, verdict.reexecuted) == (2, 1)
