"""The fault harness's verdict: the ledger of runs against the store, explained by the faults.

:func:`check` takes what the handlers recorded (:mod:`ledger`), every job as
stored at the end, the faults the harness injected (each a time window on the
machine's monotonic clock, on one worker process or on the whole store), the
lease, and which job types each worker process handled.  It returns the
violations (empty when every promise held) and the counts to print.

The promises checked, per job:

1. it is final (SUCCEEDED: the harness gives every job enough attempts);
2. no (job, attempt) ran twice;
3. two runs of it overlapped only if the earlier one's lease had truly
   expired: a fault that stopped its renewals (its process stopped, the store
   down or full) covered part of the lease before the later run started; the
   later run is on a later attempt, so the earlier one was fenced;
4. no run started after its final outcome was stored;
5. the stored result of a SUCCEEDED job is the one its last run returned
   (same attempt, same per-run token), and that run is the last attempt;
6. every earlier attempt is explained: its handler failed on purpose, or a
   fault hit its process or the store while it ran or before the next attempt;
   attempts that never ran (claimed, then interrupted before the handler
   started) are counted and need a fault too;
7. it ran only on workers that registered its type.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chaos.ledger import Run
from taskrunner.jobs import Job, JobState

__all__ = ["Fault", "Verdict", "check"]

TOLERANCE = 0.05  # seconds: clocks of processes on one machine, and the ledger's write time


@dataclass(frozen=True)
class Fault:
    """One injected fault: ``kind`` on process ``pid`` (None: on the store) in [start, end]."""

    kind: str  # kill, stop, reclaim-stop, crash, pg-outage, disk-full
    pid: int | None
    start: float
    end: float

    def hits(self, run: Run) -> bool:
        return self.pid is None or self.pid == run.pid

    def overlaps(self, low: float, high: float) -> bool:
        return self.start <= high and self.end >= low


@dataclass
class Verdict:
    violations: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def fail(self, message: str) -> None:
        self.violations.append(message)


def _cause(faults: Iterable[Fault], run: Run, low: float, high: float) -> str | None:
    for fault in faults:
        if fault.hits(run) and fault.overlaps(low, high):
            return fault.kind
    return None


def check(
    runs: list[Run],
    jobs: Mapping[str, Job],
    faults: list[Fault],
    lease: float,
    worker_types: Mapping[int, Iterable[str]],
    ledger_problems: Iterable[str] = (),
) -> Verdict:
    v = Verdict()
    for problem in ledger_problems:
        v.fail(problem)
    kill_time = {f.pid: f.start for f in faults if f.kind in ("kill", "crash") and f.pid}
    by_job: dict[str, list[Run]] = {}
    for run in runs:
        by_job.setdefault(run.job, []).append(run)
        if run.job not in jobs:
            v.fail(f"run of unknown job {run.job}")
    v.counts["jobs"] = len(jobs)
    v.counts["runs"] = len(runs)
    for fault in faults:
        v.counts[f"fault: {fault.kind}"] += 1
    for job_id, job in jobs.items():
        v.counts[f"final: {job.state.value}"] += 1
        mine = sorted(by_job.get(job_id, []), key=lambda r: r.start_m)
        # 1. final
        if job.state is not JobState.SUCCEEDED:
            v.fail(f"job {job_id} ended {job.state.value} ({job.last_error}), not succeeded")
        # 2. no (job, attempt) twice
        attempts = Counter(r.attempt for r in mine)
        for attempt, n in attempts.items():
            if n > 1:
                v.fail(f"job {job_id} attempt {attempt} ran {n} times")
        # 7. only on workers with its handler
        for run in mine:
            if run.type not in set(worker_types.get(run.pid, ())):
                v.fail(f"job {job_id} ({run.type}) ran on pid {run.pid}, which does not handle it")
        # 3. overlapping runs
        for i, early in enumerate(mine):
            end = early.end_m if early.end_m is not None else kill_time.get(early.pid, math.inf)
            for late in mine[i + 1 :]:
                if late.start_m >= end:
                    continue
                v.counts["overlapping runs (earlier one fenced)"] += 1
                if early.pid == late.pid:
                    v.counts["overlapping runs on one process"] += 1
                if late.attempt <= early.attempt:
                    v.fail(f"job {job_id}: attempt {late.attempt} overlapped {early.attempt}")
                cause = _cause(faults, early, late.start_m - lease, late.start_m)
                if cause is None:
                    v.fail(
                        f"job {job_id}: attempts {early.attempt} (pid {early.pid}) and "
                        f"{late.attempt} (pid {late.pid}) ran at once, and no fault had stopped "
                        f"the first one's lease renewals"
                    )
        # 4. nothing started after the final outcome
        if job.finished_at is not None:
            for run in mine:
                if run.start_t > job.finished_at + TOLERANCE:
                    v.fail(f"job {job_id}: attempt {run.attempt} started after the job was final")
        # 5. the stored result is the last run's
        if job.state is JobState.SUCCEEDED:
            stored: Any = json.loads(job.result) if job.result else None
            last = [r for r in mine if r.attempt == job.attempt]
            if not last:
                v.fail(f"job {job_id} succeeded on attempt {job.attempt}, which never ran")
            elif last[0].end != "end" or last[0].result != stored:
                v.fail(f"job {job_id}: stored result {stored} is not its last run's")
            if mine and max(r.attempt for r in mine) != job.attempt:
                v.fail(f"job {job_id}: a run after its succeeding attempt {job.attempt}")
        # 6. every earlier attempt explained
        for k, run in enumerate(mine):
            if run.attempt == job.attempt:
                continue
            v.counts["re-runs"] += 1
            if run.end == "error":
                v.counts["re-run cause: handler failed on purpose"] += 1
                continue
            following = mine[k + 1].start_m if k + 1 < len(mine) else math.inf
            cause = _cause(faults, run, run.start_m - lease, following)
            if cause is None:
                v.fail(f"job {job_id} attempt {run.attempt} (pid {run.pid}) was re-run unexplained")
            else:
                v.counts[f"re-run cause: {cause}"] += 1
        for k in range(1, len(mine)):
            before, after = mine[k - 1], mine[k]
            if before.pid == after.pid and before.end != "error":
                v.counts["same-worker reclaims (attempt n+1 on attempt n's process)"] += 1
        ran = set(attempts)
        never = [a for a in range(1, job.attempt + 1) if a not in ran]
        if never:
            v.counts["attempts spent without a run"] += len(never)
            if not faults:
                v.fail(f"job {job_id}: attempts {never} were spent without a run, and no fault")
    for run in runs:
        v.counts[f"runs ended: {run.end or 'killed'}"] += 1
    return v
