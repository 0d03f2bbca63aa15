"""How far CPU-bound pure-Python tasks scale with the number of workers.

Each task is a fixed amount of pure-Python arithmetic (``--task-ms``, 2 ms by
default, calibrated at start).  For 1, 2, 4, ... up to ``--max-workers``
workers the same batch of tasks is run by

* ``taskrunner.ThreadPool(w)``: ``post_task`` each task, then ``wait_idle()``;
* ``concurrent.futures.ThreadPoolExecutor(w)``: ``submit`` each, then wait for the futures;
* raw threads: ``w`` threads that each run their share of the tasks in a loop
  (no queue at all: the ceiling a pool can approach).

and the script prints tasks/s and the speed-up over one worker of the same
kind.  With the GIL the speed-up stays near 1x whatever the worker count; on
a free-threaded interpreter (3.14t) it should approach the core count, and a
pool that scales less than ThreadPoolExecutor is losing time to its own locks.

Each round runs every worker count and every kind once, the kinds alternating
(A B C, B C A, ...); tasks/s is the median over ``--repeats`` rounds, and a
speed-up is the median of the per-round ratios, because the speed of a shared
machine wanders: only ratios measured in the same run are worth quoting.
Pools and threads are created and warmed up outside the timed part.

    python bench/scaling.py [--max-workers N] [--quick] [--task-ms MS] [--repeats R] [--check]

``--check`` exits 1 when, on a free-threaded interpreter, taskrunner reaches
less than 1.8x on 2 workers or less than 95% of ThreadPoolExecutor's speed-up
at the largest worker count.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import sysconfig
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

from _harness import gil_enabled, median

from taskrunner import ThreadPool

KINDS = ("taskrunner", "ThreadPoolExecutor", "raw threads")


def spin(n: int) -> int:
    """The task: ``n`` rounds of integer arithmetic, nothing shared, nothing allocated to keep."""
    x = 0
    for i in range(n):
        x = (x * 31 + i) & 0xFFFF
    return x


def calibrate(task_ms: float) -> tuple[int, float]:
    """The ``n`` for which ``spin(n)`` takes about ``task_ms`` here, and its measured time."""
    n = 20_000
    best = min(_time_spin(n) for _ in range(5))
    n = max(1, round(n * task_ms / 1000 / best))
    return n, min(_time_spin(n) for _ in range(5)) * 1000


def _time_spin(n: int) -> float:
    t0 = time.perf_counter()
    spin(n)
    return time.perf_counter() - t0


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# ---- one timed run of each kind -------------------------------------------------------


class Ours:
    """A started ThreadPool of ``workers`` threads, reused for every round of one level."""

    def __init__(self, workers: int) -> None:
        self.pool = ThreadPool(workers, name="scaling").start()

    def run(self, tasks: int, n: int) -> float:
        post = self.pool.post_task
        t0 = time.perf_counter()
        for _ in range(tasks):
            post(spin, n)
        self.pool.wait_idle()
        return time.perf_counter() - t0

    def close(self) -> None:
        self.pool.shutdown()


class Executor:
    """A ThreadPoolExecutor whose ``workers`` threads all exist before the first timed run."""

    def __init__(self, workers: int) -> None:
        self.ex = ThreadPoolExecutor(workers)
        # The executor starts a thread per submit until it has ``workers``:
        # hold each task until all are running, so every thread exists now.
        everyone = threading.Barrier(workers)
        wait([self.ex.submit(everyone.wait) for _ in range(workers)])

    def run(self, tasks: int, n: int) -> float:
        submit = self.ex.submit
        t0 = time.perf_counter()
        futures = [submit(spin, n) for _ in range(tasks)]
        wait(futures)
        return time.perf_counter() - t0

    def close(self) -> None:
        self.ex.shutdown()


class RawThreads:
    """``workers`` fresh threads per run, each looping over its share; timed from a barrier."""

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def run(self, tasks: int, n: int) -> float:
        w = self.workers
        shares = [tasks // w + (1 if i < tasks % w else 0) for i in range(w)]
        start = threading.Barrier(w + 1)

        def body(share: int) -> None:
            start.wait()
            for _ in range(share):
                spin(n)

        threads = [threading.Thread(target=body, args=(s,)) for s in shares]
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        return time.perf_counter() - t0

    def close(self) -> None:
        pass


Runner = Ours | Executor | RawThreads
MAKERS: dict[str, Callable[[int], Runner]] = {
    "taskrunner": Ours,
    "ThreadPoolExecutor": Executor,
    "raw threads": RawThreads,
}


def measure(
    worker_counts: list[int], tasks: int, n: int, repeats: int
) -> dict[int, dict[str, tuple[float, float]]]:
    """``{workers: {kind: (median tasks/s, median speed-up over 1 worker)}}``.

    Every round runs every level and every kind once (the kinds rotating), so
    a speed-up compares two runs of the same round, not two moments minutes
    apart.  Idle pools and executors of the other levels wait, costing nothing.
    """
    runners = {(w, kind): MAKERS[kind](w) for w in worker_counts for kind in KINDS}
    try:
        for (w, _), runner in runners.items():  # warm-up: threads up, bytecode specialised
            runner.run(max(w, tasks // 8), n)
        rates: dict[tuple[int, str], list[float]] = {key: [] for key in runners}
        for r in range(repeats):
            for w in worker_counts:
                for k in range(len(KINDS)):
                    kind = KINDS[(r + k) % len(KINDS)]
                    gc.collect()
                    rates[w, kind].append(tasks / runners[w, kind].run(tasks, n))
    finally:
        for runner in runners.values():
            runner.close()
    return {
        w: {
            kind: (
                median(rates[w, kind]),
                median([a / b for a, b in zip(rates[w, kind], rates[1, kind], strict=True)]),
            )
            for kind in KINDS
        }
        for w in worker_counts
    }


def levels(max_workers: int) -> list[int]:
    out = [1]
    while out[-1] * 2 <= max_workers:
        out.append(out[-1] * 2)
    if out[-1] != max_workers:
        out.append(max_workers)
    return out


# ---- main -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--max-workers", type=int, default=None, help="largest worker count (default: the cores)"
    )
    parser.add_argument("--task-ms", type=float, default=2.0, help="CPU time per task (ms)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds per level (median)")
    parser.add_argument("--quick", action="store_true", help="a short run (fewer, smaller rounds)")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a free-threaded run scales too little"
    )
    args = parser.parse_args(argv)
    ncores = cores()
    max_workers = args.max_workers or ncores
    if max_workers < 1:
        parser.error("--max-workers must be >= 1")
    repeats = args.repeats or (3 if args.quick else 5)
    # Every level runs the same batch; with 1 worker it takes about 0.6 s
    # (0.1 s with --quick), and no level gives a worker fewer than 8 tasks.
    serial_s = 0.1 if args.quick else 0.6
    tasks = max(8 * max_workers, round(serial_s * 1000 / args.task_ms))
    tasks += -tasks % max_workers  # a whole number of tasks per worker at the top level

    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    gil = gil_enabled()
    build = "free-threaded build" if free_threaded else "regular build"
    n, task_ms = calibrate(args.task_ms)
    print(
        f"scaling: {platform.python_implementation()} {platform.python_version()} ({build}), "
        f"GIL {'enabled' if gil else 'disabled'}, {ncores} cores available",
        flush=True,
    )
    print(
        f"task: {task_ms:.2f} ms of pure-Python arithmetic (spin({n})); {tasks} tasks per run; "
        f"median of {repeats} rounds, the three kinds alternating",
        flush=True,
    )
    if gil:
        print("the GIL is on: expect a speed-up near 1x for every kind", flush=True)
    header = f"{'workers':>7}  " + "  ".join(f"{kind:>24}" for kind in KINDS) + "  ours/TPE"
    print(header)
    print(f"{'':>7}  " + "  ".join(f"{'tasks/s  speed-up':>24}" for _ in KINDS))

    t_start = time.perf_counter()
    worker_counts = levels(max_workers)
    results = measure(worker_counts, tasks, n, repeats)
    for workers in worker_counts:
        row = results[workers]
        cells = [f"{row[k][0]:>12,.0f}  {row[k][1]:>8.2f}x" for k in KINDS]
        ours_vs_tpe = row["taskrunner"][1] / row["ThreadPoolExecutor"][1]
        print(f"{workers:>7}  " + "  ".join(f"{c:>24}" for c in cells) + f"  {ours_vs_tpe:>8.2f}")

    top = worker_counts[-1]
    speedup = {k: results[top][k][1] for k in KINDS}
    print(
        f"at {top} workers: taskrunner {speedup['taskrunner']:.2f}x, ThreadPoolExecutor "
        f"{speedup['ThreadPoolExecutor']:.2f}x, raw threads {speedup['raw threads']:.2f}x "
        f"over one worker ({time.perf_counter() - t_start:.0f} s)"
    )

    problems: list[str] = []
    if not gil:
        if 2 in results and ncores >= 2:
            two = results[2]["taskrunner"][1]
            if two < 1.8:
                problems.append(f"taskrunner reaches {two:.2f}x on 2 workers (< 1.8x)")
        if top > 1 and speedup["taskrunner"] < 0.95 * speedup["ThreadPoolExecutor"]:
            problems.append(
                f"taskrunner scales {speedup['taskrunner']:.2f}x at {top} workers, below "
                f"ThreadPoolExecutor's {speedup['ThreadPoolExecutor']:.2f}x"
            )
        for problem in problems:
            print(f"below target: {problem}")
        if not problems:
            print("on target: taskrunner scales at least as well as ThreadPoolExecutor")
    return 1 if args.check and problems else 0


if __name__ == "__main__":
    sys.exit(main())
