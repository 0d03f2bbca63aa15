"""The demo's verdict: the store and the runs ledger compared (nothing lost,
nothing run twice).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

from taskrunner.jobs import (
    JobState,
    SQLiteJobStore,
)
from taskrunner.jobs.model import Job

# ---------------------------------------------------------------- verdict


@dataclasses.dataclass(slots=True)
class Verdict:
    lost: list[str]
    twice: list[str]
    reexecuted: int  # handler had finished, outcome not stored before the kill: ran again
    recovered: int  # jobs interrupted by the kill and finished by another worker
    retries: int  # failed attempts that were retried (the flaky jobs)
    runs: int


def ledger_rows(runs: Path) -> list[tuple[str, str, int, int, str | None]]:
    if not runs.exists():
        return []
    conn = sqlite3.connect(runs, timeout=30)
    try:
        return list(conn.execute("SELECT job_id, type, attempt, pid, outcome FROM runs"))
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def judge(
    ids: list[str], jobs: dict[str, Job], slow_id: str, runs: Path, killed_pids: set[int]
) -> Verdict:
    rows = ledger_rows(runs)
    by_job: dict[str, list[tuple[int, int, str | None]]] = {}
    for job_id, _type, attempt, pid, outcome in rows:
        by_job.setdefault(job_id, []).append((attempt, pid, outcome))
    lost: list[str] = []
    twice: list[str] = []
    reexecuted = recovered = 0
    for job_id in ids:
        job = jobs.get(job_id)
        if job is None:
            lost.append(f"{job_id}: missing from the store")
            continue
        expected = JobState.CANCELLED if job_id == slow_id else JobState.SUCCEEDED
        if job.state is not expected:
            lost.append(f"{job_id} ({job.type}): {job.state}, expected {expected}")
        mine = by_job.get(job_id, [])
        attempts = [a for a, _, _ in mine]
        if len(attempts) != len(set(attempts)):
            twice.append(f"{job_id} ({job.type}): an attempt ran twice")
        if any(a > job.attempt for a in attempts):
            twice.append(f"{job_id} ({job.type}): ran after its outcome was stored")
        if job.state is JobState.SUCCEEDED and not any(
            a == job.attempt and o == "ok" for a, _, o in mine
        ):
            lost.append(f"{job_id} ({job.type}): stored as succeeded but its run never finished")
        reexecuted += sum(1 for a, _, o in mine if o == "ok" and a < job.attempt)
        if any(pid in killed_pids and (o is None or a < job.attempt) for a, pid, o in mine):
            recovered += 1  # held by the killed worker, taken back and finished by a survivor
    retries = sum(1 for _, _, _, _, o in rows if o == "error")
    return Verdict(lost, twice, reexecuted, recovered, retries, len(rows))


def all_jobs(store: SQLiteJobStore) -> dict[str, Job]:
    jobs: dict[str, Job] = {}
    cursor: str | None = None
    while True:
        page = store.list_jobs(limit=1000, after=cursor)
        jobs.update((j.id, j) for j in page.jobs)
        cursor = page.next_cursor
        if cursor is None:
            return jobs


def delay_of(job: Job) -> float:
    """The delay a demo job was submitted with (stored in its arguments), or 0."""
    try:
        delay = json.loads(job.args).get("delay")
    except (ValueError, AttributeError):
        return 0.0
    return float(delay) if isinstance(delay, int | float) else 0.0


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]
