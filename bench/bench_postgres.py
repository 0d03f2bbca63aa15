"""Jobs per second on PostgreSQL with 1, 2 and 4 worker processes, against Procrastinate.

For each worker count the same work is done by taskrunner workers
(``python -m taskrunner.cli.worker --dsn ...``) and, when it is installed, by
Procrastinate workers (a bench-only dependency: ``pip install procrastinate``),
each on a database of its own on the same server:

1. the workers are started and left idle until each is LISTENing;
2. the clock starts; N jobs are submitted in one transaction (taskrunner:
   ``insert_many``; Procrastinate: ``batch_defer``); each job's handler
   computes ``n * 2`` (taskrunner also stores that result);
3. the clock stops when the database shows every job succeeded.

So a figure covers the wake-up (LISTEN/NOTIFY), the claims, the handler calls
and the final writes.  Each worker process runs 4 jobs at a time (taskrunner:
``--workers 4``; Procrastinate: ``concurrency=4``).  Sides alternate
(ours, theirs, ours, ...) and medians are reported, because these 2-core
machines drift over minutes; only ratios within one run are worth quoting.

The server is a throwaway cluster started for the run with PostgreSQL's
default durability (``fsync`` and ``synchronous_commit`` on), or the one
named by ``TASKRUNNER_PG_DSN``/``--dsn`` (databases ``tr_bench_*`` are created
and dropped there).

    python bench/bench_postgres.py [--jobs N] [--procs 1,2,4] [--rounds R] [--dsn DSN]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _harness import alternate

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]  # pg_fixture (the throwaway cluster)

CONCURRENCY = 4
TIMEOUT = 300.0


# ---- the work, as each system's workers import it ------------------------------


def register(manager: Any) -> None:
    """taskrunner worker app: ``--app bench_postgres:register``."""

    def double(ctx: Any, args: dict[str, int]) -> int:
        return args["n"] * 2

    manager.register("double", double, may_block=False)


def procrastinate_app(dsn: str) -> Any:
    import logging

    import procrastinate

    # It warns that the app lives in the main module (this script): true, and harmless here.
    logging.getLogger("procrastinate").setLevel(logging.ERROR)

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    def double(n: int) -> int:
        return n * 2

    app.task(name="double")(double)

    return app


def procrastinate_worker(dsn: str) -> None:
    """A Procrastinate worker process (``--procrastinate-worker DSN``)."""
    app = procrastinate_app(dsn)
    with app.open():
        app.run_worker(concurrency=CONCURRENCY, wait=True, install_signal_handlers=True)


# ---- helpers -------------------------------------------------------------------


def _sql(dsn: str, query: str, *params: Any) -> Any:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
        return None if row is None else row[0]


@contextmanager
def database(server: str, tag: str) -> Iterator[str]:
    """A new database on ``server`` for one measurement; dropped afterwards."""
    import psycopg
    from psycopg import conninfo, sql

    name = f"tr_bench_{tag}_{os.getpid()}_{os.urandom(3).hex()}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield conninfo.make_conninfo(server, dbname=name)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def processes(commands: list[list[str]]) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]))
    procs = [
        subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for cmd in commands
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait(
    what: str, done: Callable[[], bool], procs: list[subprocess.Popen[bytes]], pause: float
) -> None:
    end = time.monotonic() + TIMEOUT
    while not done():
        for proc in procs:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise RuntimeError(f"a worker exited ({proc.returncode}) {what}: {err[-2000:]}")
        if time.monotonic() > end:
            raise RuntimeError(f"timed out {what}")
        time.sleep(pause)  # polling the workers' progress


def _listening(dsn: str, count: int) -> Callable[[], bool]:
    def check() -> bool:
        found = _sql(
            dsn,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND query ILIKE 'LISTEN%%'",
        )
        return int(found) >= count

    return check


# ---- the two sides -------------------------------------------------------------


def ours(server: str, procs: int, jobs: int) -> float:
    from taskrunner.jobs import PostgresJobStore, new_job

    with database(server, "ours") as dsn:
        store = PostgresJobStore(dsn)  # creates the schema before the workers start
        worker = [sys.executable, "-m", "taskrunner.cli.worker", "--dsn", dsn, "--app",
                  "bench_postgres:register", "--workers", str(CONCURRENCY), "--lease", "30",
                  "--poll", "5"]  # fmt: skip
        try:
            with processes([worker] * procs) as running:
                _wait("starting", _listening(dsn, procs), running, 0.05)
                now = time.time()
                batch = [
                    new_job("double", json.dumps({"n": i}).encode(), now=now) for i in range(jobs)
                ]
                t0 = time.perf_counter()
                store.insert_many(batch)
                _wait(
                    "running the jobs",
                    lambda: store.count_jobs(states=["succeeded"]) >= jobs,
                    running,
                    0.01,
                )
                elapsed = time.perf_counter() - t0
            assert store.count_jobs(states=["succeeded"]) == jobs == store.count_jobs()
        finally:
            store.close()
    return jobs / elapsed


def theirs(server: str, procs: int, jobs: int) -> float:
    with database(server, "procrastinate") as dsn:
        app = procrastinate_app(dsn)
        with app.open():
            app.schema_manager.apply_schema()
            task = app.tasks["double"]
            worker = [sys.executable, str(Path(__file__).resolve()), "--procrastinate-worker", dsn]
            with processes([worker] * procs) as running:
                _wait("starting", _listening(dsn, procs), running, 0.05)
                t0 = time.perf_counter()
                task.batch_defer(*({"n": i} for i in range(jobs)))
                done_sql = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
                _wait("running the jobs", lambda: _sql(dsn, done_sql) >= jobs, running, 0.01)
                elapsed = time.perf_counter() - t0
    return jobs / elapsed


def have_procrastinate() -> bool:
    try:
        import procrastinate  # noqa: F401
    except ImportError:
        return False
    return True


# ---- main ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--procs", default="1,2,4", help="worker process counts")
    parser.add_argument("--rounds", type=int, default=1, help="measurements per figure")
    parser.add_argument("--dsn", default=os.environ.get("TASKRUNNER_PG_DSN"))
    parser.add_argument("--no-procrastinate", action="store_true")
    parser.add_argument("--procrastinate-worker", metavar="DSN", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.procrastinate_worker:
        procrastinate_worker(args.procrastinate_worker)
        return 0
    try:
        import psycopg  # noqa: F401
    except ImportError:
        print(
            "bench_postgres: skipped, psycopg is not installed (pip install 'taskrunner[postgres]')"
        )
        return 0
    counts = [int(n) for n in args.procs.split(",")]
    compare = not args.no_procrastinate and have_procrastinate()
    cluster = None
    server = args.dsn
    if not server:
        from pg_fixture import PgUnavailable, start_cluster  # type: ignore[import-not-found,unused-ignore]

        try:
            cluster = start_cluster(durable=True)
        except PgUnavailable as exc:
            print(f"bench_postgres: skipped, no PostgreSQL server: {exc}")
            return 0
        server = cluster.dsn
    try:
        version = _sql(server, "SHOW server_version")
        fsync = _sql(server, "SHOW fsync")
        commit = _sql(server, "SHOW synchronous_commit")
        print(
            f"PostgreSQL {version} (fsync={fsync}, synchronous_commit={commit}), "
            f"{args.jobs} jobs, {CONCURRENCY} at a time per process, "
            f"median of {args.rounds}; Procrastinate: "
            f"{'yes' if compare else 'not installed (pip install procrastinate)'}"
        )
        header = f"{'processes':>9}  {'taskrunner jobs/s':>17}  {'vs 1 proc':>9}"
        if compare:
            header += f"  {'Procrastinate jobs/s':>20}  {'vs 1 proc':>9}  {'ours/theirs':>11}"
        print(header)
        base: dict[str, float] = {}
        for procs in counts:
            a, peer = alternate(
                lambda procs=procs: ours(server, procs, args.jobs),
                (lambda procs=procs: theirs(server, procs, args.jobs)) if compare else None,
                args.rounds,
            )
            base.setdefault("ours", a)
            line = f"{procs:>9}  {a:>17.0f}  {a / base['ours']:>8.2f}x"
            if peer is not None:
                b = peer
                base.setdefault("theirs", b)
                line += f"  {b:>20.0f}  {b / base['theirs']:>8.2f}x  {a / b:>10.2f}x"
            print(line, flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
