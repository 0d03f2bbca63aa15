"""Runners against their standard-library peers, measured in the same run.

* A bounded SingleThreadTaskRunner (capacity 1024, WAIT policy) fed by one
  producer, against a queue.Queue(maxsize=1024) consumed by one thread
  running the same callables.
* A SequencedTaskRunner of no-op tasks, against ThreadPoolExecutor(1) (the
  standard library's way to run tasks one at a time, in order).

Rounds alternate the two sides and report medians (see PERFORMANCE.md: only
same-run ratios are worth quoting on these machines).

    python bench/bench_runners.py [--quick] [--rounds R]
"""

from __future__ import annotations

import argparse
import queue
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from _harness import Row, alternate2, banner, line

from taskrunner import QueuePolicy, SequencedTaskRunner, SingleThreadTaskRunner, ThreadPool


def noop() -> None:
    pass


def ours_bounded(n: int) -> float:
    with ThreadPool(2, name="bench") as pool:
        runner = SingleThreadTaskRunner(pool, capacity=1024, policy=QueuePolicy.WAIT)
        post = runner.post_task
        t0 = time.perf_counter()
        for _ in range(n):
            post(noop)
        runner.wait_idle()
        elapsed = time.perf_counter() - t0
        runner.shutdown()
    return n / elapsed


def queue_bounded(n: int) -> float:
    q: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=1024)

    def consumer() -> None:
        get = q.get
        while True:
            fn = get()
            if fn is None:
                return
            fn()

    thread = threading.Thread(target=consumer)
    thread.start()
    put = q.put
    t0 = time.perf_counter()
    for _ in range(n):
        put(noop)
    put(None)
    thread.join()
    return n / (time.perf_counter() - t0)


def ours_sequenced(n: int) -> float:
    with ThreadPool(2, name="bench") as pool:
        seq = SequencedTaskRunner(pool)
        post = seq.post_task
        t0 = time.perf_counter()
        for _ in range(n):
            post(noop)
        seq.wait_idle()
        elapsed = time.perf_counter() - t0
    return n / elapsed


def tpe_sequenced(n: int) -> float:
    ex = ThreadPoolExecutor(1)
    submit = ex.submit
    t0 = time.perf_counter()
    for _ in range(n):
        submit(noop)
    ex.shutdown(wait=True)
    return n / (time.perf_counter() - t0)


def rows(quick: bool) -> list[Row]:
    bounded_n, seq_n, rounds = (100_000, 50_000, 1) if quick else (1_000_000, 200_000, 3)
    out: list[Row] = []
    ours, peer = alternate2(
        lambda: ours_bounded(bounded_n), lambda: queue_bounded(bounded_n), rounds
    )
    out.append(("bounded single-thread runner", ours, "queue.Queue(1024)", peer, "tasks/s"))
    ours, peer = alternate2(lambda: ours_sequenced(seq_n), lambda: tpe_sequenced(seq_n), rounds)
    out.append(("sequenced runner", ours, "TPE(1)", peer, "tasks/s"))
    return out


def report(quick: bool) -> list[Row]:
    """Rows for ``taskrunner bench`` (name, ours, peer name, peer, unit)."""
    return rows(quick)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print(banner("1 producer"))
    goals = {"bounded single-thread runner": 2.0, "sequenced runner": 5.0}
    for what, ours, peer_name, peer, unit in rows(args.quick):
        assert peer is not None
        print(line(what, ours, peer_name, peer, unit, goals[what]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
