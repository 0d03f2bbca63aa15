"""JobManager on SQLite against Huey on SQLite, same durability, same run.

Both stores run in WAL mode with ``synchronous=FULL`` (Huey: ``fsync=True``),
so an acknowledged job survives power loss on both sides.  Each figure is the
median of alternating rounds (ours, Huey, ours, Huey ...).

* durable submit, one thread: submits/s, each waiting for its commit;
* durable submit, 4 threads: concurrent submitters (ours commits them together);
* submit_many(100): ours in one transaction per 100 jobs vs Huey's enqueue loop;
* end to end: N no-op jobs submitted, then run by 2 worker threads, until
  every result is stored.

    python bench/bench_jobs.py [--quick] [--jobs N] [--rounds R]
"""

from __future__ import annotations

import argparse
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
    handles = ours.manager.submit_many([JobSpec("noop", i) for i in range(n)])
    t0 = time.perf_counter()
    ours.manager.start()
    for h in handles:
        h.future.result(120)
    rate = n / (time.perf_counter() - t0)
    ours.close()
    return rate


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
        for r in results:
            r.get(blocking=True, timeout=120, backoff=1.0, max_delay=0.001)
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
        peer_text = f"{peer_name} {peer:>9,.0f} {unit}  ratio {ours / peer:5.2f}x" if peer else ""
        print(f"{what:<30} taskrunner {ours:>9,.0f} {unit}  {peer_text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
