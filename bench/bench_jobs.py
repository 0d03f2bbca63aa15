"""JobManager on SQLite against Huey on SQLite, same durability, same run.

Both stores run in WAL mode with ``synchronous=FULL`` (Huey: ``fsync=True``),
so an acknowledged job survives power loss on both sides.  Each figure is the
median of alternating rounds (ours, Huey, ours, Huey ...).

* durable submit, one thread: submits/s, each waiting for its commit;
* durable submit, 4 threads: concurrent submitters (ours commits them together);
* submit_many(100): ours in one transaction per 100 jobs vs Huey's enqueue loop;
* durable submit latency, one thread: p50 and p99 of each submit, measured
  in interleaved chunks of 100 (ours, Huey, ours ...) so both see the same disk;
* end to end: N no-op jobs submitted, then run by 2 worker threads, until
  every result is stored.  Both sides wait the same way: a separate read-only
  connection counts the stored results every 5 ms (WAL readers block no
  writer).  The Huey side used to poll every result through Huey's own single
  locked connection every 1 ms, competing with its workers for that lock:
  that made Huey look 1.8x slower than it is.

    python bench/bench_jobs.py [--quick] [--jobs N] [--rounds R]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _harness import alternate as harness_alternate

from taskrunner import ThreadPool
from taskrunner.jobs import JobManager, JobSpec, SQLiteJobStore

try:
    from huey import SqliteHuey
    from huey.consumer import Consumer
except ImportError:  # pragma: no cover - bench-only dependency
    SqliteHuey = None


def noop_handler(ctx: Any, args: Any) -> Any:
    return args


# ---- ours ---------------------------------------------------------------------------


class Ours:
    def __init__(self, path: Path, workers: int = 2) -> None:
        self.store = SQLiteJobStore(path, synchronous="FULL")
        self.pool = ThreadPool(workers, name="bench-jobs")
        self.manager = JobManager(self.store, self.pool, poll_interval=0.5, max_concurrent=64)
        self.manager.register("noop", noop_handler, may_block=False)

    def close(self) -> None:
        self.manager.shutdown()
        self.pool.shutdown()
        self.store.close()


def ours_submit(path: Path, n: int) -> float:
    ours = Ours(path)
    submit = ours.manager.submit
    t0 = time.perf_counter()
    for i in range(n):
        submit("noop", i)
    rate = n / (time.perf_counter() - t0)
    ours.close()
    return rate


def ours_submit_threads(path: Path, n: int, threads: int = 4) -> float:
    ours = Ours(path)
    per = n // threads
    t0 = time.perf_counter()
    _run_threads(threads, lambda: [ours.manager.submit("noop", i) for i in range(per)])
    rate = per * threads / (time.perf_counter() - t0)
    ours.close()
    return rate


def ours_submit_many(path: Path, n: int, batch: int = 100) -> float:
    ours = Ours(path)
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        ours.manager.submit_many([JobSpec("noop", i) for i in range(start, start + batch)])
    rate = n / (time.perf_counter() - t0)
    ours.close()
    return rate


def ours_end_to_end(path: Path, n: int) -> float:
    ours = Ours(path)
    ours.manager.submit_many([JobSpec("noop", i) for i in range(n)])
    t0 = time.perf_counter()
    ours.manager.start()
    wait_stored(path, "SELECT count(*) FROM jobs WHERE state = 'succeeded'", n)
    rate = n / (time.perf_counter() - t0)
    ours.close()
    return rate


def wait_stored(path: Path, count_sql: str, n: int, timeout: float = 120.0) -> None:
    """Wait until ``count_sql`` counts ``n``: both sides' end-to-end runs wait this way,
    on a read-only connection of their own, every 5 ms."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    end = time.monotonic() + timeout
    try:
        while conn.execute(count_sql).fetchone()[0] < n:
            if time.monotonic() > end:
                raise TimeoutError(f"{n} results not stored within {timeout} s")
            time.sleep(0.005)
    finally:
        conn.close()


def submit_latency(path: Path, n: int, chunk: int = 100) -> tuple[list[float], list[float]]:
    """Single-thread submit latencies (us), ours and Huey's, in interleaved chunks."""
    ours = Ours(path)
    peer = _huey(path.with_name("huey.db"))[1] if SqliteHuey is not None else None
    mine: list[float] = []
    theirs: list[float] = []
    for start in range(0, n, chunk):
        for i in range(start, start + chunk):
            t0 = time.perf_counter()
            ours.manager.submit("noop", i)
            mine.append((time.perf_counter() - t0) * 1e6)
        if peer is not None:
            for i in range(start, start + chunk):
                t0 = time.perf_counter()
                peer(i)
                theirs.append((time.perf_counter() - t0) * 1e6)
    ours.close()
    return mine, theirs


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


# ---- Huey ----------------------------------------------------------------------------


def _huey(path: Path) -> Any:
    huey = SqliteHuey("bench", filename=str(path), fsync=True, journal_mode="wal")
    task = huey.task()(noop_task)
    return huey, task


def noop_task(i: int) -> int:
    return i  # Huey stores no result for None: return a value so both sides store one


def huey_submit(path: Path, n: int) -> float:
    _, task = _huey(path)
    t0 = time.perf_counter()
    for i in range(n):
        task(i)
    return n / (time.perf_counter() - t0)


def huey_submit_threads(path: Path, n: int, threads: int = 4) -> float:
    _, task = _huey(path)
    per = n // threads
    t0 = time.perf_counter()
    _run_threads(threads, lambda: [task(i) for i in range(per)])
    return per * threads / (time.perf_counter() - t0)


def huey_end_to_end(path: Path, n: int) -> float:
    huey, task = _huey(path)
    results = [task(i) for i in range(n)]
    consumer = Consumer(
        huey,
        workers=2,
        worker_type="thread",
        initial_delay=0.001,
        max_delay=0.01,
        periodic=False,
        check_worker_health=False,
    )
    t0 = time.perf_counter()
    consumer.start()
    try:
        wait_stored(path, "SELECT count(*) FROM kv", len(results))
        rate = n / (time.perf_counter() - t0)
    finally:
        consumer.stop(graceful=True)
    return rate


# ---- driver ----------------------------------------------------------------------------


def _run_threads(k: int, body: Callable[[], object]) -> None:
    threads = [threading.Thread(target=body) for _ in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _measure(fn: Callable[[Path, int], float], n: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        return fn(Path(d) / "bench.db", n)


def alternate(
    ours: Callable[[Path, int], float],
    peer: Callable[[Path, int], float] | None,
    n: int,
    rounds: int,
) -> tuple[float, float | None]:
    """Both sides alternated (see _harness.alternate), each in a fresh database."""
    return harness_alternate(
        lambda: _measure(ours, n), None if peer is None else lambda: _measure(peer, n), rounds
    )


def rows(
    quick: bool = False, jobs: int | None = None, rounds: int | None = None
) -> list[tuple[str, float, str, float | None, str]]:
    """(what, ours, peer name, peer, unit) for each comparison."""
    n = jobs or (200 if quick else 1000)
    r = rounds or (1 if quick else 3)
    have_huey = SqliteHuey is not None
    out = []
    ours, peer = alternate(ours_submit, huey_submit if have_huey else None, n, r)
    out.append(("durable submit, 1 thread", ours, "Huey", peer, "jobs/s"))
    with tempfile.TemporaryDirectory() as d:
        mine, theirs = submit_latency(Path(d) / "bench.db", max(n, 1000))
    for label, q in (("p50", 0.5), ("p99", 0.99)):
        peer = percentile(theirs, q) if theirs else None
        out.append((f"durable submit, 1 thread, {label}", percentile(mine, q), "Huey", peer, "us"))
    ours, peer = alternate(ours_submit_threads, huey_submit_threads if have_huey else None, n, r)
    out.append(("durable submit, 4 threads", ours, "Huey", peer, "jobs/s"))
    ours, peer = alternate(ours_submit_many, huey_submit if have_huey else None, n, r)
    out.append(("submit_many(100) vs enqueue", ours, "Huey", peer, "jobs/s"))
    ours, peer = alternate(ours_end_to_end, huey_end_to_end if have_huey else None, n, r)
    out.append(("end to end, 2 workers", ours, "Huey", peer, "jobs/s"))
    return out


def report(quick: bool) -> list[tuple[str, float, str, float | None, str]]:
    """Rows for ``taskrunner bench`` (name, ours, peer name, peer, unit)."""
    return rows(quick)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    if SqliteHuey is None:
        print("huey is not installed (pip install huey): showing our figures only")
    print(f"python {sys.version.split()[0]}, SQLite WAL + synchronous=FULL on both sides")
    for what, ours, peer_name, peer, unit in rows(args.quick, args.jobs, args.rounds):
        ratio = (ours / peer if unit.endswith("/s") else peer / ours) if peer else 0.0
        peer_text = f"{peer_name} {peer:>9,.0f} {unit}  ratio {ratio:5.2f}x" if peer else ""
        print(f"{what:<30} taskrunner {ours:>9,.0f} {unit}  {peer_text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
