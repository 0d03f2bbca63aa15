"""Latency across processes on SQLite: due -> finished, against Huey, same durability.

200 no-op jobs are submitted one by one at 100/s by this process to 2 worker
processes on the same SQLite file (WAL, ``synchronous=FULL``; Huey:
``fsync=True``): ours are ``taskrunner worker`` processes woken through the
SQLite store's wake-up sockets (:mod:`taskrunner.jobs.stores.sqlite_wake`); Huey's
are two ``huey_consumer`` processes (one thread each, Huey's default polling:
0.1 s after an empty poll, growing 1.15x; ``--huey-args`` passes other options).

* ours: due -> finished is the stored ``finished_at - run_at`` of each job;
* Huey: its task returns ``time.time()`` as it ends, minus the enqueue time.

Both sides wait for the end the same way: a separate read-only connection
counts finished jobs every 10 ms (WAL readers do not block the writers).

    python bench/bench_wake.py [--quick] [--jobs N] [--rate R]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from taskrunner.jobs import JobManager, SQLiteJobStore

HERE = Path(__file__).resolve().parent

try:
    from huey import SqliteHuey
except ImportError:  # pragma: no cover - bench-only dependency
    SqliteHuey = None

# ---- the apps the worker processes load ---------------------------------------------------


def noop(ctx: Any, args: Any) -> Any:
    return None


def register(manager: JobManager) -> None:
    """``taskrunner worker --app bench_wake:register``."""
    manager.register("noop", noop, may_block=False)


def stamp() -> float:
    """Huey's task: when it ran (Huey names tasks by module, the same in both processes)."""
    return time.time()


stamp.__module__ = "bench_wake"  # also when this file runs as __main__

if SqliteHuey is not None and os.environ.get("BENCH_WAKE_HUEY_DB"):
    huey = SqliteHuey(
        "bench-wake", filename=os.environ["BENCH_WAKE_HUEY_DB"], fsync=True, journal_mode="wal"
    )
    huey.task()(stamp)


# ---- driver -------------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def _wait_count(db: Path, sql: str, n: int, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        while time.monotonic() < end:
            try:
                if conn.execute(sql).fetchone()[0] >= n:
                    return
            except sqlite3.OperationalError:
                pass  # the table does not exist yet
            time.sleep(0.01)
    finally:
        conn.close()
    raise TimeoutError(f"the jobs did not finish within {timeout} s")


def _pace(n: int, rate: float, submit: Callable[[int], None]) -> None:
    start = time.perf_counter()
    for i in range(n):
        pause = start + i / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        submit(i)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def ours(n: int, rate: float, workers: int = 2) -> list[float]:
    """Due -> finished of each job, ms."""
    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "jobs.db"
        store = SQLiteJobStore(db, synchronous="FULL")
        manager = JobManager(store)
        register(manager)
        cmd = [sys.executable, "-m", "taskrunner", "worker", "--db", str(db)]
        cmd += ["--app", "bench_wake:register", "--workers", "2"]
        procs = [subprocess.Popen(cmd, env=_env()) for _ in range(workers)]
        try:
            _wait_listeners(Path(str(db) + "-wake"), workers)
            _pace(n, rate, lambda i: manager.submit("noop", i) and None)
            _wait_count(db, "SELECT count(*) FROM jobs WHERE state = 'succeeded'", n)
            rows = store.list_jobs(limit=1000).jobs
        finally:
            _stop(procs)
            manager.shutdown()
            store.close()
    return [((j.finished_at or 0) - j.run_at) * 1e3 for j in rows]


def _wait_listeners(directory: Path, k: int, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if directory.is_dir() and len(list(directory.glob("*.sock"))) >= k:
            return
        time.sleep(0.05)
    raise TimeoutError("the workers did not start listening")


def huey_side(n: int, rate: float, workers: int = 2, extra: Sequence[str] = ()) -> list[float]:
    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "huey.db"
        env = _env(BENCH_WAKE_HUEY_DB=str(db))
        peer = SqliteHuey("bench-wake", filename=str(db), fsync=True, journal_mode="wal")
        task = peer.task()(stamp)
        consumer = HERE.parent / ".venv" / "bin" / "huey_consumer"
        exe = [str(consumer)] if consumer.exists() else ["huey_consumer"]
        cmd = [*exe, "bench_wake.huey", "-w", "1", "-k", "thread", "-q", *extra]
        procs = [subprocess.Popen(cmd, env=env) for _ in range(workers)]
        try:
            time.sleep(1.0)  # the consumers have no ready signal
            sent: list[tuple[float, Any]] = []
            _pace(n, rate, lambda i: sent.append((time.time(), task())))
            _wait_count(db, "SELECT count(*) FROM kv", n)
            return [(r.get() - t) * 1e3 for t, r in sent]
        finally:
            _stop(procs)


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def report(quick: bool) -> list[tuple[str, float, str, float | None, str]]:
    """Rows for ``taskrunner bench``: p50 and p99 of due -> finished, ms."""
    n = 100 if quick else 200
    mine = ours(n, 100.0)
    theirs = huey_side(n, 100.0) if SqliteHuey is not None else None
    out: list[tuple[str, float, str, float | None, str]] = []
    for label, q in (("p50", 0.5), ("p99", 0.99)):
        out.append(
            (
                f"SQLite, 2 worker processes, {n} jobs at 100/s: due->finished {label}",
                _pct(mine, q),
                "Huey (2 consumers)",
                None if theirs is None else _pct(theirs, q),
                "ms",
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--no-huey", action="store_true")
    parser.add_argument(
        "--huey-args",
        default="",
        help="extra huey_consumer options, e.g. '-d 0.01' (default: Huey's own polling)",
    )
    args = parser.parse_args(argv)
    n = 100 if args.quick else args.jobs
    mine = ours(n, args.rate)
    print(
        f"taskrunner: due->finished p50 {_pct(mine, 0.5):.1f} ms  p99 {_pct(mine, 0.99):.1f} ms"
        f"  max {max(mine):.1f} ms  mean {statistics.mean(mine):.1f} ms"
    )
    if SqliteHuey is not None and not args.no_huey:
        theirs = huey_side(n, args.rate, extra=args.huey_args.split())
        print(
            f"Huey:       due->finished p50 {_pct(theirs, 0.5):.1f} ms"
            f"  p99 {_pct(theirs, 0.99):.1f} ms  max {max(theirs):.1f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
