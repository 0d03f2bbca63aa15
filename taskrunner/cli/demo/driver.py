"""``run_demo``: the demo's flow (see :mod:`taskrunner.cli.demo`)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TextIO

from taskrunner.cli.console import Progress, print_table, use_rich
from taskrunner.cli.demo.app import TYPES, DemoError, DemoOptions, app, workload
from taskrunner.cli.demo.processes import Observer, Workers
from taskrunner.cli.demo.showcase import RUNTIME_TASKS, Check, Counter, runtime_showcase
from taskrunner.cli.demo.verdict import Verdict, all_jobs, delay_of, judge, percentile
from taskrunner.jobs import (
    JobManager,
    JobSpec,
    JobState,
    SQLiteJobStore,
)
from taskrunner.jobs.model import Job
from taskrunner.runtime.pool import ThreadPool
from taskrunner.runtime.repeating import RepeatingMode
from taskrunner.runtime.traits import TaskTraits

# ---------------------------------------------------------------- the driver


def _prepare(options: DemoOptions) -> tuple[Path, Path, Path, Path | None]:
    """(db, runs ledger, log directory, temporary directory to remove or None)."""
    if options.jobs < 10:
        raise DemoError(f"--jobs must be at least 10, got {options.jobs}")
    if options.db is None:
        tmp = Path(tempfile.mkdtemp(prefix="taskrunner-demo-"))
        return tmp / "demo.db", tmp / "demo.db.runs", tmp, tmp
    db = options.db
    if not db.parent.is_dir():
        raise DemoError(f"no such directory for the database: {db.parent}")
    runs = db.with_name(db.name + ".runs")
    logs = db.with_name(db.name + ".logs")
    companions = [db, runs, *(Path(f"{p}{s}") for p in (db, runs) for s in ("-wal", "-shm"))]
    if db.exists():
        if not options.overwrite:
            raise DemoError(f"{db} exists; the demo needs a new store (pass --overwrite)")
        for path in companions:
            path.unlink(missing_ok=True)
        shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(exist_ok=True)
    return db, runs, logs, None


def run_demo(options: DemoOptions, out: TextIO | None = None) -> int:
    """Run the demo; returns 0 if no job was lost or ran twice, else 1.

    Raises :class:`DemoError` for options it cannot run with.
    """
    stream = out or sys.stdout
    db, runs, logs, tmp = _prepare(options)
    code = 1
    try:
        code = _run(options, db, runs, logs, tmp is not None, stream)
    finally:
        if tmp is not None:
            if code == 0:
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                print(
                    f"The store, the runs ledger and the worker logs are kept in {tmp}", file=stream
                )
    return code


def _run(
    options: DemoOptions, db: Path, runs: Path, logs: Path, temporary: bool, out: TextIO
) -> int:
    rng = random.Random(options.seed)
    fancy = use_rich(out, options.plain)
    specs = workload(options.jobs, rng)
    per_type = {t: sum(1 for s in specs if s.job_type == t) for t in TYPES}
    print(
        f"taskrunner demo: {len(specs)} jobs on {'a temporary ' if temporary else ''}"
        f"SQLite store {db}\n"
        f"  mix: {', '.join(f'{n} {t}' for t, n in per_type.items())}; "
        f"2 worker processes, one killed with SIGKILL midway",
        file=out,
        flush=True,
    )
    store = SQLiteJobStore(db)
    pool = ThreadPool(2, name="demo")
    manager = JobManager(store, pool)  # submits and cancels; never started, so never claims
    app(manager)
    workers = Workers(db, runs, logs)
    progress = Progress(fancy=fancy, stream=out)
    observer = Observer(store, runs, progress)
    killed: set[int] = set()
    killed_pids: set[int] = set()
    problems: list[str] = []
    runtime: list[Check] = []
    ticks = Counter()
    t_start = time.time()
    try:
        with progress:
            progress.add("jobs", "jobs finished", len(specs))
            for job_type in TYPES:
                progress.add(job_type, f"  {job_type}", per_type[job_type])
            progress.add("runtime", "runtime tasks (this process)", RUNTIME_TASKS)
            for _ in range(2):
                number, pid = workers.start()
                progress.event(f"worker {number} started (pid {pid})")
            sampler = pool.post_repeating_task(
                observer.sample,
                0.1,
                initial_delay=0,
                traits=TaskTraits(may_block=True),
                name="demo-sampler",
            )
            ticker = pool.post_repeating_task(
                ticks.add,
                0.05,
                mode=RepeatingMode.FIXED_RATE,
                name="demo-ticker",
            )
            t_ticks = time.monotonic()
            showcase_result: list[list[Check]] = []
            showcase_error: list[BaseException] = []

            def showcase() -> None:
                try:
                    showcase_result.append(runtime_showcase(pool, progress, rng))
                except BaseException as exc:
                    showcase_error.append(exc)

            showcase_thread = threading.Thread(target=showcase, name="demo-runtime")
            showcase_thread.start()
            ids = _submit_waves(manager, specs, progress)
            slow_id = ids[0]
            _drive(
                options,
                manager,
                observer,
                workers,
                progress,
                slow_id,
                ids,
                killed,
                killed_pids,
                problems,
            )
            sampler.stop()
            ticker.stop()
            tick_seconds = time.monotonic() - t_ticks
            tick_runs = ticker.runs
            showcase_thread.join()
            observer.sample()
            codes = workers.stop_all(killed)
            for number, code in codes.items():
                if code != 0:
                    problems.append(f"worker {number} did not stop cleanly (exit code {code})")
                else:
                    progress.event(f"worker {number} stopped gracefully on SIGTERM")
        if showcase_error:
            problems.append(f"the runtime showcase failed: {showcase_error[0]!r}")
        else:
            runtime = showcase_result[0]
        runtime.append(
            Check(
                "repeating task",
                f"fixed rate every 50 ms: {tick_runs} runs in {tick_seconds:.1f} s "
                f"(~{tick_seconds / 0.05:.0f} expected)",
                None,
            )
        )
        if observer.error is not None:
            problems.append(f"sampling the store failed: {observer.error!r}")
        jobs = all_jobs(store)
        verdict = judge(ids, jobs, slow_id, runs, killed_pids)
        _summary(out, fancy, jobs, verdict, runtime, t_start, problems, killed)
    finally:
        workers.close()
        observer.close()
        manager.shutdown()
        pool.shutdown()
        store.close()
    failed = bool(verdict.lost or verdict.twice or problems) or any(c.ok is False for c in runtime)
    if not temporary:
        print(
            f"\nThe store is kept: try `taskrunner jobs list --db {db} --state cancelled` "
            f"or `taskrunner jobs show --db {db} {slow_id}`.  Worker logs: {logs}\n"
            f"Look at what ran in a browser: taskrunner dashboard --db {db}",
            file=out,
        )
    return 1 if failed else 0


def _submit_waves(manager: JobManager, specs: list[JobSpec], progress: Progress) -> list[str]:
    """Submit in five waves, 0.2 s apart, as a service would over time."""
    ids: list[str] = []
    waves = 5
    size = -(-len(specs) // waves)
    for i in range(waves):
        batch = specs[i * size : (i + 1) * size]
        if not batch:
            break
        ids.extend(h.id for h in manager.submit_many(batch))
        progress.event(f"submitted {len(ids)} of {len(specs)} jobs (durably stored)")
        if i < waves - 1:
            time.sleep(0.2)  # pacing the arrivals, not synchronising
    return ids


def _drive(
    options: DemoOptions,
    manager: JobManager,
    observer: Observer,
    workers: Workers,
    progress: Progress,
    slow_id: str,
    ids: list[str],
    killed: set[int],
    killed_pids: set[int],
    problems: list[str],
) -> None:
    """Kill a worker midway, start another, cancel the slow job, wait for the end."""
    total = len(ids)
    deadline = time.monotonic() + options.timeout

    def remaining() -> float:
        return max(0.0, deadline - time.monotonic())

    # Midway: enough jobs finished and some worker is running attempts.
    snap = observer.wait(
        lambda s: (
            bool(s.running_by_pid)
            and (s.total_finished >= total * 0.4 or s.total_finished >= total - 1)
        ),
        remaining(),
    )
    if snap is None:
        problems.append("no worker was running jobs midway: nothing to kill")
        return
    running_by_pid = snap.running_by_pid
    pid = max(running_by_pid, key=lambda p: running_by_pid[p])
    victim = workers.number_of(pid)
    if victim is not None:
        os.kill(pid, signal.SIGKILL)
        workers.procs[victim].wait()
        killed.add(victim)
        killed_pids.add(pid)
        cut = observer.ledger("SELECT count(*) FROM runs WHERE pid = ? AND outcome IS NULL", (pid,))
        progress.event(
            f"SIGKILL worker {victim} (pid {pid}): {cut[0][0] if cut else 0} running attempt(s) "
            f"cut short; {snap.total_finished}/{total} jobs had finished"
        )
        number, new_pid = workers.start()
        progress.event(f"worker {number} started (pid {new_pid}) on the same store")
    # The slow job: cancel it while it runs on a live worker (if the kill cut it
    # short, once a survivor has recovered it and runs it again).
    found = _wait_running(manager, observer, slow_id, killed_pids, remaining())
    if found is None:
        problems.append("the slow job never ran on a live worker: it was not cancelled")
    else:
        job, runner_pid = found
        manager.cancel(slow_id)
        progress.event(
            f"cancelled the slow job while it ran on worker {workers.number_of(runner_pid)} "
            f"(attempt {job.attempt}); its handler stops at its next check"
        )
    snap = observer.wait(
        lambda s: s.unfinished == 0 and sum(s.states.values()) >= total, remaining()
    )
    if snap is None:
        problems.append(f"not every job finished within {options.timeout:.0f} s")
    else:
        progress.event("every job reached a final state")
    dead = workers.died(killed)
    if dead:
        problems.append(f"worker(s) {dead} exited on their own; see their logs")


def _wait_running(
    manager: JobManager, observer: Observer, job_id: str, dead: set[int], timeout: float
) -> tuple[Job, int] | None:
    """The job and the pid running it, once a live worker runs it (polling the
    store and the ledger, which other processes write)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = manager.get(job_id)
        if job.is_final:
            return None
        if job.state is JobState.RUNNING:
            rows = observer.ledger(
                "SELECT pid FROM runs WHERE job_id = ? AND attempt = ? AND outcome IS NULL",
                (job_id, job.attempt),
            )
            pids = [int(r[0]) for r in rows if int(r[0]) not in dead]
            if pids:
                return job, pids[0]
        time.sleep(0.05)  # polling other processes' progress
    return None


def _summary(
    out: TextIO,
    fancy: bool,
    jobs: dict[str, Job],
    verdict: Verdict,
    runtime: list[Check],
    t_start: float,
    problems: list[str],
    killed: set[int],
) -> None:
    print(file=out)
    states = {s: sum(1 for j in jobs.values() if j.state is s) for s in JobState}
    succeeded = [j for j in jobs.values() if j.state is JobState.SUCCEEDED]
    latencies = sorted(
        j.finished_at - j.created_at - delay_of(j) for j in succeeded if j.finished_at
    )
    first = min((j.created_at for j in succeeded), default=t_start)
    last = max((j.finished_at for j in succeeded if j.finished_at), default=first)
    span = max(last - first, 1e-9)
    shown = (JobState.SUCCEEDED, JobState.CANCELLED, JobState.FAILED)
    rows: list[tuple[str, object]] = [
        (f"jobs {s.value}", states[s]) for s in JobState if states[s] or s in shown
    ]
    rows += [
        ("retries (failed attempts retried)", verdict.retries),
        ("recovered after the SIGKILL", verdict.recovered),
        ("re-run: done, unrecorded at the kill", verdict.reexecuted),
        ("handler runs recorded", verdict.runs),
        ("throughput", f"{len(succeeded) / span:,.1f} jobs/s over {span:.1f} s"),
        ("latency p50 (due -> finished)", f"{percentile(latencies, 0.5) * 1000:,.0f} ms"),
        ("latency p99 (due -> finished)", f"{percentile(latencies, 0.99) * 1000:,.0f} ms"),
    ]
    print_table(
        "Jobs (store + runs ledger)", ["", "value"], rows, right=(1,), fancy=fancy, stream=out
    )
    checks = [(c.what, c.detail, {True: "ok", False: "FAILED", None: ""}[c.ok]) for c in runtime]
    print_table(
        "Runtime (this process)", ["", "what happened", ""], checks, fancy=fancy, stream=out
    )
    for problem in problems:
        print(f"problem: {problem}", file=out)
    for item in (verdict.lost + verdict.twice)[:10]:
        print(f"  {item}", file=out)
    total = len(jobs)
    if verdict.lost or verdict.twice:
        print(
            f"FAIL: {len(verdict.lost)} job(s) lost, {len(verdict.twice)} run twice, "
            f"out of {total}",
            file=out,
        )
    elif problems:
        print(f"FAIL: the demo could not check its promises ({len(problems)} problem(s))", file=out)
    elif any(c.ok is False for c in runtime):
        broken = ", ".join(c.what for c in runtime if c.ok is False)
        print(f"FAIL: no job lost or run twice, but a runtime check failed: {broken}", file=out)
    else:
        print(
            f"PASS: no job lost, none run twice: all {total} jobs reached their expected final "
            f"state across {len(killed)} SIGKILL; no attempt ran twice and no job ran after its "
            "outcome was stored",
            file=out,
        )
        if verdict.reexecuted:
            print(
                f"note: {verdict.reexecuted} handler run(s) had finished when their worker was "
                "killed, before the store recorded the outcome, so the job ran again on recovery "
                "(at-least-once delivery: keep handlers idempotent)",
                file=out,
            )
