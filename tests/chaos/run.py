"""The fault harness: worker processes on one store, faults at random moments, a ledger.

``python tests/chaos/run.py --store sqlite|postgres|both [--seconds 60] [--jobs 400]``
(``make chaos`` runs both stores for a few minutes; ``tests/test_chaos.py`` runs
a short version of each in ``make test``).

One run:

1. A store is set up: a SQLite file on a small tmpfs mounted for the run (when
   we may mount one: root), or a durable throwaway PostgreSQL cluster
   (``fsync`` on, so a crash keeps what was committed).
2. Jobs of types ``a``, ``b`` and ``c`` are submitted, due at moments spread
   over the run, each with enough attempts to survive its faults; some fail
   their first attempt on purpose.
3. Four worker processes (``taskrunner worker``) share the store, specialised:
   two handle ``a`` and ``c``, one only ``a``, one only ``b`` (so ``b`` jobs
   wait whenever that worker is down).  Every handler run is recorded in the
   ledger (:mod:`ledger`: ``O_APPEND`` + ``fsync``).
4. Until the time is up, one fault at a time, at random moments: SIGKILL of a
   worker (restarted), SIGSTOP of a worker for longer than the lease, then
   SIGCONT; the ``b`` worker stopped while it runs a job (its own poll then
   reclaims the job: a same-worker reclaim); PostgreSQL stopped (``-m
   immediate``, mid-run and mid-commit) for longer than the lease and
   restarted; the tmpfs filled (a full disk) for a while.  A worker that dies
   unasked is restarted and reported as a crash; one that could not even start
   (no stats written: its store refused it, say on a full disk) is restarted
   and noted, not counted as a crash.
5. The faults end, every job finishes, the workers stop, and :mod:`check`
   compares the ledger with the store.  The counts are printed; the exit code
   is 1 if any promise was broken.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path[:0] = [str(HERE.parent), str(ROOT)]

from chaos.check import Fault, Verdict, check  # noqa: E402
from chaos.extras import Orders, check_orders, check_ticks, declare_ticks, remove_ticks  # noqa: E402
from chaos.ledger import read_runs  # noqa: E402
from taskrunner.jobs import (  # noqa: E402
    Job,
    JobManager,
    JobSpec,
    JobStore,
    SQLiteJobStore,
)
from taskrunner.runtime.pool import ThreadPool  # noqa: E402

__all__ = ["Config", "main", "run_chaos"]

#: Some jobs come due together, every BURST_PERIOD seconds after the submit.
BURST_PERIOD = 2.0

#: The worker fleet: (name, job types it handles).
FLEET = (
    ("general-1", "a,c,tick"),
    ("general-2", "a,c,tick"),
    ("only-a", "a"),
    ("only-b", "b"),
)


@dataclass
class Config:
    store: str  # "sqlite" or "postgres"
    seconds: float = 60.0
    jobs: int = 400
    lease: float = 2.0
    seed: int = 0
    disk: bool = True  # a full disk (SQLite on a tmpfs), when a tmpfs can be mounted
    keep: bool = False
    out: Callable[[str], None] = print


@dataclass
class Worker:
    name: str
    types: str
    proc: subprocess.Popen[bytes] | None = None
    pids: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


class Harness:
    def __init__(self, cfg: Config, workdir: Path) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.workdir = workdir
        self.ledger = workdir / "ledger.jsonl"
        self.stats_dir = workdir / "stats"
        self.stats_dir.mkdir()
        self.logs = workdir / "logs"
        self.logs.mkdir()
        self.faults: list[Fault] = []
        self.workers = [Worker(name, types) for name, types in FLEET]
        self.worker_types: dict[int, list[str]] = {}
        self.notes: list[str] = []
        self.tmpfs: Path | None = None
        self.cluster: Any = None
        self.db: Path | None = None
        self.dsn: str | None = None
        self.submitted_at = 0.0

    # ---- the store ---------------------------------------------------------------------

    def open_store(self) -> JobStore:
        if self.dsn is not None:
            from taskrunner.jobs.stores.postgres_store import PostgresJobStore

            return PostgresJobStore(self.dsn)
        assert self.db is not None
        return SQLiteJobStore(self.db)

    def set_up_store(self) -> None:
        if self.cfg.store == "postgres":
            from pg_fixture import start_cluster

            self.cluster = start_cluster(durable=True)
            self.dsn = self.cluster.dsn
            return
        directory = self.workdir / "store"
        directory.mkdir()
        if self.cfg.disk:
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(directory)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode == 0:
                self.tmpfs = directory
            else:
                self.notes.append(f"full disk: skipped (cannot mount a tmpfs: {done.stderr})")
        self.db = directory / "jobs.db"

    def tear_down_store(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
        if self.tmpfs is not None:
            subprocess.run(["umount", "-l", str(self.tmpfs)], check=False)

    # ---- jobs --------------------------------------------------------------------------

    def submit(self) -> list[str]:
        store = self.open_store()
        pool = ThreadPool(1, name="chaos-submit")
        manager = JobManager(store, pool)
        for job_type in ("a", "b", "c", "tick"):
            manager.register(job_type, lambda ctx, args: None)  # submit only
        declare_ticks(manager)  # fired by every worker, run by the general ones
        specs = []
        spread = 0.7 * self.cfg.seconds
        bursts = max(1, int(spread / BURST_PERIOD))
        for n in range(self.cfg.jobs):
            job_type = self.rng.choices(["a", "b", "c"], [4, 3, 3])[0]
            seconds = self.rng.uniform(0.3, 1.2) if job_type == "b" else self.rng.uniform(0.02, 0.5)
            args = {"seconds": round(seconds, 3), "fail_first": self.rng.random() < 0.1}
            specs.append(
                JobSpec(
                    job_type,
                    args,
                    job_id=f"job-{n:05d}",
                    # A quarter come due in bursts (for the mid-commit outage).
                    delay=(
                        BURST_PERIOD * self.rng.randint(1, bursts)
                        if self.rng.random() < 0.25
                        else round(self.rng.uniform(0, spread), 3)
                    ),
                    max_attempts=50,
                )
            )
        self.submitted_at = time.monotonic()
        ids = [h.id for h in manager.submit_many(specs)]
        manager.shutdown()
        pool.shutdown()
        store.close()
        return ids

    def all_jobs(self) -> dict[str, Job]:
        store = self.open_store()
        try:
            jobs: dict[str, Job] = {}
            cursor = None
            while True:
                page = store.list_jobs(limit=1000, after=cursor)
                jobs.update((job.id, job) for job in page.jobs)
                if page.next_cursor is None:
                    return jobs
                cursor = page.next_cursor
        finally:
            store.close()

    def unfinished(self) -> int:
        store = self.open_store()
        try:
            return store.count_jobs(states=["pending", "running"])
        finally:
            store.close()

    # ---- workers -----------------------------------------------------------------------

    def start_worker(self, worker: Worker) -> None:
        env = dict(
            os.environ,
            CHAOS_LEDGER=str(self.ledger),
            CHAOS_TYPES=worker.types,
            CHAOS_STATS=str(self.stats_dir),
            PYTHONPATH=os.pathsep.join([str(HERE.parent), str(ROOT)]),
        )
        where = ["--dsn", self.dsn] if self.dsn is not None else ["--db", str(self.db)]
        log = open(self.logs / f"{worker.name}.log", "ab")  # noqa: SIM115 (kept by the child)
        worker.proc = subprocess.Popen(
            [
                sys.executable, "-m", "taskrunner.cli.worker", *where,
                "--app", "chaos.app:register", "--workers", "3",
                "--lease", str(self.cfg.lease), "--poll", "0.1",
            ],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )  # fmt: skip
        log.close()
        worker.pids.append(worker.pid)
        self.worker_types[worker.pid] = worker.types.split(",")

    def wait_started(self) -> None:
        """Wait until every worker runs (it has written its stats): a worker that
        cannot open its store at start (say, on a full disk) exits, as it should,
        and the faults are about running workers."""
        end = time.monotonic() + 60
        while time.monotonic() < end:
            self.supervise()
            if all((self.stats_dir / f"{w.pid}.json").exists() for w in self.workers if w.proc):
                return
            time.sleep(0.05)
        raise RuntimeError("the workers did not start in 60 s (see their logs)")

    def supervise(self) -> None:
        """Restart workers that died unasked (reported as crashes)."""
        for worker in self.workers:
            if worker.proc is None:  # down on purpose (killed, restarted soon)
                continue
            code = worker.proc.poll()
            if code is not None:
                now = time.monotonic()
                if (self.stats_dir / f"{worker.pid}.json").exists():
                    self.faults.append(Fault("crash", worker.pid, now, now))
                    self.notes.append(f"worker {worker.name} (pid {worker.pid}) died: exit {code}")
                else:
                    # It never ran (no stats written): its store refused it at start,
                    # as it should while, say, the disk is full.  Not a crash.
                    self.faults.append(Fault("start-refused", worker.pid, now, now))
                    self.notes.append(
                        f"worker {worker.name} (pid {worker.pid}) could not start: exit {code}"
                    )
                    time.sleep(0.2)  # do not spin while the cause lasts
                self.start_worker(worker)

    def stop_workers(self) -> None:
        for worker in self.workers:
            assert worker.proc is not None
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(signal.SIGCONT)
                worker.proc.send_signal(signal.SIGTERM)
        for worker in self.workers:
            assert worker.proc is not None
            try:
                worker.proc.wait(60)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
                self.notes.append(f"worker {worker.name} did not stop on SIGTERM: killed")

    # ---- faults ------------------------------------------------------------------------

    def pause(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))
            self.supervise()

    def kill(self) -> None:
        worker = self.rng.choice(self.workers)
        assert worker.proc is not None
        now = time.monotonic()
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait()
        self.faults.append(Fault("kill", worker.pid, now, now))
        worker.proc = None
        self.pause(self.rng.uniform(0.2, 1.0))
        self.start_worker(worker)
        self.wait_started()

    def stop(self, worker: Worker | None = None, kind: str = "stop") -> None:
        worker = worker or self.rng.choice(self.workers)
        assert worker.proc is not None
        start = time.monotonic()
        worker.proc.send_signal(signal.SIGSTOP)
        time.sleep(self.cfg.lease + self.rng.uniform(0.5, 1.5))  # beyond the lease
        worker.proc.send_signal(signal.SIGCONT)
        self.faults.append(Fault(kind, worker.pid, start, time.monotonic()))

    def reclaim(self) -> None:
        """Stop the only ``b`` worker while it runs a job: when it resumes, its own
        poll finds the job's lease expired and claims it again."""
        worker = next(w for w in self.workers if w.name == "only-b")
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            runs, _ = read_runs(self.ledger)
            if any(r.pid == worker.pid and r.end is None for r in runs):
                self.stop(worker, "reclaim-stop")
                return
            self.pause(0.05)

    def pg_outage(self) -> None:
        start = time.monotonic()
        self.cluster.halt()
        time.sleep(self.cfg.lease + self.rng.uniform(0.2, 1.5))  # longer than the lease
        self.cluster.start()
        self.faults.append(Fault("pg-outage", None, start, time.monotonic()))

    def pg_outage_mid_commit(self) -> None:
        """Make every COMMIT wait (synchronous replication to a standby that does
        not exist: the transaction is durable locally, its client is not told),
        then stop the server: the workers' claims, renewals and completions in
        flight all end in a lost connection whose outcome is unknown, though
        they committed.  The setting is removed while the server is down, and
        the whole outage is kept shorter than the lease, so that the owners of
        the claims that committed unseen are still the ones to run them."""
        import psycopg

        auto_conf = Path(self.cluster.datadir) / "postgresql.auto.conf"
        original = auto_conf.read_bytes()
        # Just before a burst of jobs comes due, so that claims are among the commits.
        since = time.monotonic() - self.submitted_at
        burst = self.submitted_at + BURST_PERIOD * (int(since / BURST_PERIOD) + 1)
        self.pause(max(0.0, burst - time.monotonic() - 0.2))
        with psycopg.connect(self.cluster.dsn, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET synchronous_standby_names = 'chaos_nobody'")
            conn.execute("SELECT pg_reload_conf()")
        start = time.monotonic()
        time.sleep(self.rng.uniform(0.3, 0.5))  # commits pile up, waiting
        self.cluster.halt()
        auto_conf.write_bytes(original)
        time.sleep(self.rng.uniform(0.1, 0.3))  # shorter than the lease, all told
        self.cluster.start()
        self.faults.append(Fault("pg-outage-mid-commit", None, start, time.monotonic()))

    def disk_full(self) -> None:
        assert self.tmpfs is not None
        filler = self.tmpfs / "filler"
        start = time.monotonic()
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for size in (1 << 20, 4096, 512):  # big writes, then what is left
                with contextlib.suppress(OSError):
                    while os.write(fd, b"\0" * size) == size:
                        pass
        finally:
            os.close(fd)
        time.sleep(self.rng.uniform(1.0, 2.5))
        filler.unlink()
        self.faults.append(Fault("disk-full", None, start, time.monotonic()))

    def inject(self) -> None:
        menu: list[tuple[Callable[[], None], int]] = []
        if self.cluster is not None:
            menu += [(self.pg_outage_mid_commit, 2), (self.pg_outage, 2)]
        if self.tmpfs is not None:
            menu.append((self.disk_full, 1))
        menu += [(self.reclaim, 2), (self.kill, 3), (self.stop, 2)]
        deadline = time.monotonic() + self.cfg.seconds
        done: set[str] = set()
        while time.monotonic() < deadline:
            # Each kind at least once, then at random.
            todo = [fn for fn, _ in menu if fn.__name__ not in done]
            fn = todo[0] if todo else self.rng.choices(*zip(*menu, strict=True))[0]
            fn()
            done.add(fn.__name__)
            self.pause(self.rng.uniform(0.3, 1.2))

    # ---- the run -----------------------------------------------------------------------

    def run(self) -> Verdict:
        out = self.cfg.out
        self.set_up_store()
        try:
            ids = self.submit()
            for worker in self.workers:
                self.start_worker(worker)
            self.wait_started()
            db = str(self.db) if self.db else None
            orders = Orders(self.open_store(), self.dsn, db, self.cfg.seed)
            orders.start()
            try:
                self.inject()
            finally:
                orders.stop()
            self.remove_ticks()
            end = time.monotonic() + 120 + self.cfg.seconds
            while self.unfinished() and time.monotonic() < end:
                self.pause(0.2)
            self.stop_workers()
            runs, problems = read_runs(self.ledger)
            jobs = self.all_jobs()
            stored_orders = orders.order_ids()
        finally:
            if self.workers[0].proc is not None:
                for worker in self.workers:
                    assert worker.proc is not None
                    if worker.proc.poll() is None:
                        worker.proc.kill()
                        worker.proc.wait()
            self.tear_down_store()
        plain = sorted(j for j in jobs if not j.startswith(("schedule:", "tx-")))
        if plain != sorted(ids):
            problems.append(f"the store holds {len(plain)} jobs, {len(ids)} were submitted")
        tick_problems, occurrences = check_ticks(jobs)
        order_problems, order_counts = check_orders(
            orders, stored_orders, jobs, {r.job for r in runs}
        )
        problems += tick_problems + order_problems
        (self.workdir / "faults.json").write_text(
            json.dumps([vars(f) for f in self.faults], indent=1)
        )
        verdict = check(runs, jobs, self.faults, self.cfg.lease, self.worker_types, problems)
        for fault in self.faults:
            if fault.kind == "crash":
                verdict.fail(f"a worker died unasked (pid {fault.pid})")
        verdict.counts["tick occurrences (every 1 s, misfire=all)"] = occurrences
        for outcome, count in order_counts.items():
            verdict.counts[f"transactional enqueues: {outcome}"] = count
        verdict.counts["transactional enqueues: errors"] = orders.errors
        stats = self.worker_stats()
        for key in ("recovered", "stale", "adopted", "store_retries", "retried"):
            verdict.counts[f"workers' stats: {key}"] = sum(s.get(key, 0) for s in stats)
        out(f"chaos on {self.cfg.store}: {self.cfg.jobs} jobs, {self.cfg.seconds:.0f} s of faults,")
        out(f"  {len(FLEET)} workers ({', '.join(f'{n}={t}' for n, t in FLEET)}),")
        out(f"  lease {self.cfg.lease} s, seed {self.cfg.seed}")
        for note in self.notes:
            out(f"  note: {note}")
        for key in sorted(verdict.counts):
            out(f"  {key:48} {verdict.counts[key]:6}")
        for violation in verdict.violations[:50]:
            out(f"  VIOLATION: {violation}")
        out(
            f"  {'FAIL' if verdict.violations else 'PASS'}: "
            f"{len(verdict.violations)} violation(s); workdir {self.workdir}"
        )
        return verdict

    def remove_ticks(self) -> None:
        store = self.open_store()
        manager = JobManager(store, ThreadPool(1, name="chaos-unschedule"))
        try:
            remove_ticks(manager)
        finally:
            manager.shutdown()
            manager.pool.shutdown()
            store.close()

    def worker_stats(self) -> list[dict[str, Any]]:
        stats = []
        for path in self.stats_dir.glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                stats.append(json.loads(path.read_text()))
        return stats


@contextlib.contextmanager
def _workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="taskrunner-chaos-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def run_chaos(cfg: Config) -> Verdict:
    """One harness run on ``cfg.store``; returns the verdict (also printed)."""
    with _workdir(cfg.keep) as workdir:
        verdict = Harness(cfg, workdir).run()
        if verdict.violations and not cfg.keep:
            cfg.out("  (run again with --keep to keep the ledger, logs and store)")
        return verdict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long faults go on")
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--no-disk", action="store_true", help="no full-disk fault")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    stores = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    failed = False
    for store in stores:
        cfg = Config(
            store,
            seconds=args.seconds,
            jobs=args.jobs,
            lease=args.lease,
            seed=seed,
            disk=not args.no_disk,
            keep=args.keep,
        )
        failed |= bool(run_chaos(cfg).violations)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
