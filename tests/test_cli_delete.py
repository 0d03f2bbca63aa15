"""``taskrunner jobs delete ID...`` (issue 19), on the SQLite store of test_cli."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import Jobs, cli

from taskrunner.jobs import SQLiteJobStore

pytestmark = pytest.mark.thread_unsafe(reason="runs the command line in subprocesses")


@pytest.fixture
def jobs(tmp_path: Path) -> Jobs:
    return Jobs(tmp_path / "jobs.db")


def stored(db: Path) -> set[str]:
    with SQLiteJobStore(db) as store:
        return {j.id for j in store.list_jobs(limit=1000).jobs}


def test_delete_removes_the_named_jobs(jobs: Jobs) -> None:
    db = str(jobs.db)
    before = stored(jobs.db)
    result = cli("jobs", "delete", "--db", db, jobs.pending[0], jobs.failed)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("deleted") == 2
    assert stored(jobs.db) == before - {jobs.pending[0], jobs.failed}


def test_delete_refuses_a_running_or_unknown_job_and_deletes_the_rest(jobs: Jobs) -> None:
    db = str(jobs.db)
    before = stored(jobs.db)
    result = cli("jobs", "delete", "--db", db, jobs.running, "nope", jobs.cancelled, "--json")
    assert result.returncode == 1
    outcomes = {line["id"]: line["outcome"] for line in json.loads(result.stdout)}
    assert outcomes == {
        jobs.running: "not deleted: it is running",
        "nope": "not deleted: unknown job",
        jobs.cancelled: "deleted",
    }
    assert stored(jobs.db) == before - {jobs.cancelled}


def test_delete_needs_an_id(jobs: Jobs) -> None:
    result = cli("jobs", "delete", "--db", str(jobs.db))
    assert result.returncode == 2 and "JOB_ID" in result.stderr
