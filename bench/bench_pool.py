"""ThreadPool against its standard-library peers, measured in the same run.

Each comparison alternates the two sides (A B A B ...) and reports medians,
because these 2-core machines drift by up to 2x over minutes; only the ratio
of one run is worth quoting.

    python bench/bench_pool.py [--quick] [--tasks N] [--rounds R]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import queue
import random
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import _floor
from _harness import Row, alternate2, gil_enabled, idle_start_latency, percentile

from taskrunner import TaskPriority, TaskTraits, ThreadPool


def noop() -> None:
    pass


TRAITS = [TaskTraits(priority=p) for p in TaskPriority]


# ---- throughput: one poster --------------------------------------------------


def ours_one_poster(n: int) -> float:
    with ThreadPool(2, name="bench") as pool:
        post = pool.post_task
        t0 = time.perf_counter()
        for _ in range(n):
            post(noop)
        pool.wait_idle()
        elapsed = time.perf_counter() - t0
    return n / elapsed


def tpe_one_poster(n: int) -> float:
    ex = ThreadPoolExecutor(2)
    submit = ex.submit
    t0 = time.perf_counter()
    for _ in range(n):
        submit(noop)
    ex.shutdown(wait=True)
    return n / (time.perf_counter() - t0)


#: The floor (bench/_floor.py): a pool on the same C heap with none of the
#: guarantees, the most any handle + claim + Python worker loop design can reach.
FLOOR_ROW = "floor: bare pool on the C heap, 1 poster, 2 workers"
#: The ~20 us work run on two plain threads with no pool: the ceiling of that row.
WORK_ALONE_ROW = "~20 us Python work alone on 2 threads (no pool)"


# ---- throughput: one batch post --------------------------------------------------------


def ours_batch(n: int) -> float:
    with ThreadPool(2, name="bench") as pool:
        t0 = time.perf_counter()
        pool.post_tasks(noop, [()] * n)
        pool.wait_idle()
        elapsed = time.perf_counter() - t0
    return n / elapsed


# ---- throughput: tasks of ~20 us of pure-Python work -------------------------------


def calibrate_work(target_us: float = 20.0) -> int:
    """Loop count of :func:`python_work` that takes about ``target_us`` on one thread."""
    loops = 1000
    while True:
        t0 = time.perf_counter()
        for _ in range(20):
            python_work(loops)
        per_call_us = (time.perf_counter() - t0) / 20 * 1e6
        if per_call_us > 5:
            return max(1, int(loops * target_us / per_call_us))
        loops *= 4


def python_work(loops: int) -> int:
    """Pure-Python work (bytecode, no C call that releases the GIL)."""
    x = 0
    for i in range(loops):
        x += i
    return x


def ours_work(n: int, loops: int) -> float:
    with ThreadPool(2, name="bench") as pool:
        post = pool.post_task
        t0 = time.perf_counter()
        for _ in range(n):
            post(python_work, loops)
        pool.wait_idle()
        elapsed = time.perf_counter() - t0
    return n / elapsed


def work_alone(n: int, loops: int) -> float:
    """The same ``n`` calls split over two plain threads, with no pool at all:
    the most any two-worker pool can reach on this work (with the GIL the
    threads take turns, without it they run in parallel)."""

    def half(count: int) -> None:
        for _ in range(count):
            python_work(loops)

    threads = [threading.Thread(target=half, args=(n // 2,)) for _ in range(2)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return 2 * (n // 2) / (time.perf_counter() - t0)


def tpe_work(n: int, loops: int) -> float:
    ex = ThreadPoolExecutor(2)
    submit = ex.submit
    t0 = time.perf_counter()
    for _ in range(n):
        submit(python_work, loops)
    ex.shutdown(wait=True)
    return n / (time.perf_counter() - t0)


# ---- throughput: several posters ----------------------------------------------


def _posters(k: int, n: int, post: Callable[[], None]) -> None:
    per = n // k
    start = threading.Barrier(k + 1)

    def body() -> None:
        start.wait()
        for _ in range(per):
            post()

    threads = [threading.Thread(target=body) for _ in range(k)]
    for t in threads:
        t.start()
    start.wait()
    for t in threads:
        t.join()


def ours_k_posters(n: int, k: int = 4) -> float:
    with ThreadPool(2, name="bench") as pool:
        post = pool.post_task
        t0 = time.perf_counter()
        _posters(k, n, lambda: post(noop))  # type: ignore[func-returns-value]
        pool.wait_idle()
        elapsed = time.perf_counter() - t0
    return (n // k * k) / elapsed


def tpe_k_posters(n: int, k: int = 4) -> float:
    ex = ThreadPoolExecutor(2)
    submit = ex.submit
    t0 = time.perf_counter()
    _posters(k, n, lambda: submit(noop))  # type: ignore[func-returns-value]
    ex.shutdown(wait=True)
    return (n // k * k) / (time.perf_counter() - t0)


# ---- throughput: mixed priorities ---------------------------------------------------


def ours_priorities(n: int) -> float:
    prios = [random.choice(TRAITS) for _ in range(n)]
    with ThreadPool(2, name="bench", best_effort_limit=0) as pool:
        post = pool.post_task
        t0 = time.perf_counter()
        for traits in prios:
            post(noop, traits=traits)
        pool.wait_idle()
        elapsed = time.perf_counter() - t0
    return n / elapsed


def pq_priorities(n: int) -> float:
    prios = [random.choice(list(TaskPriority)) for _ in range(n)]
    q: queue.PriorityQueue[tuple[int, int, Callable[[], None] | None]] = queue.PriorityQueue()

    def worker() -> None:
        while True:
            _, _, fn = q.get()
            if fn is None:
                q.task_done()
                return
            fn()
            q.task_done()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    seq = itertools.count()
    t0 = time.perf_counter()
    for p in prios:
        q.put((-p, next(seq), noop))
    q.join()
    elapsed = time.perf_counter() - t0
    for _ in threads:
        q.put((99, next(seq), None))
    for t in threads:
        t.join()
    return n / elapsed


# ---- latency: post to start on an idle pool ---------------------------------------

#: Samples per side (issue 16: the poster sleeps 200 us between posts; the time
#: runs from before post_task to the task's first line).
LATENCY_SAMPLES = 9000


def ours_latency(samples: int) -> list[float]:
    with ThreadPool(2, name="bench") as pool:
        return idle_start_latency(pool.post_task, pool.wait_idle, samples)


def latencies(samples: int) -> tuple[list[float], list[float], list[float]]:
    """Post->start samples of taskrunner, ThreadPoolExecutor and the floor
    (bench/_floor.py), in alternated blocks of 1,000."""
    ours: list[float] = []
    peer: list[float] = []
    floor: list[float] = []
    while len(ours) < samples:
        block = min(1000, samples - len(ours))
        ours += ours_latency(block)
        peer += tpe_latency(block)
        floor += _floor.latency(block)
    return ours, peer, floor


def tpe_latency(samples: int) -> list[float]:
    out: list[float] = []
    t_start = [0]

    def probe() -> None:
        t_start[0] = time.perf_counter_ns()

    with ThreadPoolExecutor(2) as ex:
        ex.submit(noop).result()
        for _ in range(samples):
            time.sleep(0.0002)
            t0 = time.perf_counter_ns()
            ex.submit(probe).result()
            out.append((t_start[0] - t0) / 1000)
    return out


# ---- delayed tasks --------------------------------------------------------------------


def delayed(n: int, spread: float) -> dict[str, float]:
    """Post and cancel cost on far-future timers (nothing fires meanwhile), then
    lateness: n timers spread over ``spread`` seconds, all posted before the
    first is due (so the figure is the timer's, not the poster's GIL share)."""
    with ThreadPool(2, name="bench") as pool:
        post = pool.post_delayed_task
        gc.disable()
        t0 = time.perf_counter()
        handles = [post(noop, 3600.0) for _ in range(n)]
        post_us = (time.perf_counter() - t0) / n * 1e6
        t0 = time.perf_counter()
        for h in handles:
            h.cancel()
        cancel_us = (time.perf_counter() - t0) / n * 1e6
        gc.enable()
        del handles

        lateness: list[float] = []
        lock = threading.Lock()
        done = threading.Event()
        remaining = [n]
        clock = pool.clock

        def fire(deadline: int) -> None:
            late = (clock.now_ns() - deadline) / 1e6
            with lock:
                lateness.append(late)
                remaining[0] -= 1
                if remaining[0] == 0:
                    done.set()

        now = clock.now_ns
        start = 0.5  # posting n timers takes well under this
        for d in [random.uniform(start, start + spread) for _ in range(n)]:
            post(fire, d, now() + int(d * 1e9))
        done.wait()
    lateness.sort()
    return {
        "post_us": post_us,
        "cancel_us": cancel_us,
        "late_p50_ms": lateness[len(lateness) // 2],
        "late_p99_ms": lateness[int(len(lateness) * 0.99)],
    }


def heapq_timer_delayed(n: int, spread: float) -> dict[str, float]:
    """The peer: a heapq + Condition timer thread with lazy cancel."""
    import heapq

    heap: list[tuple[float, int, Callable[[], None] | None]] = []
    cv = threading.Condition()
    lateness: list[float] = []
    finished = threading.Event()
    remaining = [n]
    stop = [False]

    def timer() -> None:
        with cv:
            while not stop[0]:
                if not heap:
                    cv.wait()
                    continue
                due, _, _fn = heap[0]
                now = time.monotonic()
                if due > now:
                    cv.wait(due - now)
                    continue
                heapq.heappop(heap)
                lateness.append((now - due) * 1e3)
                remaining[0] -= 1
                if remaining[0] == 0:
                    finished.set()

    thread = threading.Thread(target=timer)
    thread.start()
    seq = itertools.count()
    delays = [random.uniform(0.5, 0.5 + spread) for _ in range(n)]
    t0 = time.perf_counter()
    for d in delays:
        with cv:
            entry = (time.monotonic() + d, next(seq), noop)
            heapq.heappush(heap, entry)
            if heap[0] is entry:
                cv.notify()
    post_us = (time.perf_counter() - t0) / n * 1e6
    finished.wait()
    with cv:
        stop[0] = True
        cv.notify()
    thread.join()
    lateness.sort()
    return {
        "post_us": post_us,
        "late_p50_ms": lateness[len(lateness) // 2],
        "late_p99_ms": lateness[int(len(lateness) * 0.99)],
    }


def million_pending(n: int) -> dict[str, float]:
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pool = ThreadPool(2, name="bench").start()
    handles = [pool.post_delayed_task(noop, 3600.0) for _ in range(n)]
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    wheel_bytes = pool._delays.memory_bytes
    pending = len(pool._delays)
    pool.shutdown()
    del handles
    return {
        "pending": pending,
        "rss_per_task_bytes": (rss1 - rss0) * 1024 / n,
        "wheel_bytes_per_timer": wheel_bytes / n,
    }


# ---- driver ------------------------------------------------------------------------------


def report(quick: bool) -> Iterator[Row]:
    """The comparisons as rows for ``taskrunner bench`` (see taskrunner/cli/bench_report.py):
    ``(name, ours, peer_name, peer, unit)``, a unit ending in ``/s`` being a rate."""
    n, rounds = (20_000, 1) if quick else (200_000, 3)
    ours, peer = alternate2(lambda: ours_one_poster(n), lambda: tpe_one_poster(n), rounds)
    yield ("post+run no-op, 1 poster, 2 workers", ours, "ThreadPoolExecutor(2)", peer, "tasks/s")
    floor, peer = alternate2(lambda: _floor.run(n), lambda: tpe_one_poster(n), rounds)
    yield (FLOOR_ROW, floor, "ThreadPoolExecutor(2)", peer, "tasks/s")
    ours, peer = alternate2(lambda: ours_k_posters(n), lambda: tpe_k_posters(n), rounds)
    yield ("post+run no-op, 4 posters, 2 workers", ours, "ThreadPoolExecutor(2)", peer, "tasks/s")
    ours, peer = alternate2(lambda: ours_batch(n), lambda: tpe_one_poster(n), rounds)
    yield ("post_tasks no-op batch, 2 workers", ours, "ThreadPoolExecutor(2)", peer, "tasks/s")
    wn, loops = (5_000 if quick else 50_000), calibrate_work()
    ours, peer = alternate2(lambda: ours_work(wn, loops), lambda: tpe_work(wn, loops), rounds)
    label = "~20 us Python work, 1 poster, 2 workers"
    yield (label, ours, "ThreadPoolExecutor(2)", peer, "tasks/s")
    alone, peer = alternate2(lambda: work_alone(wn, loops), lambda: tpe_work(wn, loops), rounds)
    yield (WORK_ALONE_ROW, alone, "ThreadPoolExecutor(2)", peer, "tasks/s")
    ours, peer = alternate2(lambda: ours_priorities(n), lambda: pq_priorities(n), rounds)
    yield ("mixed priorities, 2 workers", ours, "queue.PriorityQueue", peer, "tasks/s")
    samples = 300 if quick else LATENCY_SAMPLES
    lo, lt, lf = latencies(samples)
    for label, q in (("p50", 0.5), ("p99", 0.99)):
        yield (
            f"post->start latency {label}, idle pool",
            percentile(lo, q),
            "ThreadPoolExecutor(2)",
            percentile(lt, q),
            "us",
        )
        yield (
            f"post->start latency {label}, idle floor pool (bench/_floor.py)",
            percentile(lf, q),
            "ThreadPoolExecutor(2)",
            percentile(lt, q),
            "us",
        )
    dn = 10_000 if quick else 100_000
    d, hq = delayed(dn, 2.0), heapq_timer_delayed(dn, 2.0)
    yield (
        f"post a delayed task ({dn:,} over 2 s)",
        d["post_us"],
        "heapq timer",
        hq["post_us"],
        "us",
    )
    yield ("delayed task lateness p99", d["late_p99_ms"], "heapq timer", hq["late_p99_ms"], "ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    parser.add_argument("--tasks", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-million", action="store_true")
    args = parser.parse_args(argv)
    n, rounds = args.tasks, args.rounds
    if args.quick:
        n, rounds = 20_000, 1
    print(
        f"python {sys.version.split()[0]}, gil={'on' if gil_enabled() else 'off'}, "
        f"{n} tasks, {rounds} rounds"
    )

    ours, peer = alternate2(lambda: ours_one_poster(n), lambda: tpe_one_poster(n), rounds)
    print(
        f"1 poster,  2 workers : taskrunner {ours:>10,.0f}/s  TPE(2) {peer:>9,.0f}/s  "
        f"ratio {ours / peer:5.1f}x  (goal >= 7x)"
    )
    floor, peer = alternate2(lambda: _floor.run(n), lambda: tpe_one_poster(n), rounds)
    print(
        f"floor (_floor.py)    : bare pool  {floor:>10,.0f}/s  TPE(2) {peer:>9,.0f}/s  "
        f"ratio {floor / peer:5.1f}x  (no guarantees: the ceiling of this design)"
    )
    ours, peer = alternate2(lambda: ours_k_posters(n), lambda: tpe_k_posters(n), rounds)
    print(
        f"4 posters, 2 workers : taskrunner {ours:>10,.0f}/s  TPE(2) {peer:>9,.0f}/s  "
        f"ratio {ours / peer:5.1f}x  (goal >= 7x)"
    )
    ours, peer = alternate2(lambda: ours_batch(n), lambda: tpe_one_poster(n), rounds)
    print(
        f"post_tasks batch     : taskrunner {ours:>10,.0f}/s  TPE(2) {peer:>9,.0f}/s  "
        f"ratio {ours / peer:5.1f}x"
    )
    wn, loops = (5_000 if args.quick else 50_000), calibrate_work()
    ours, peer = alternate2(lambda: ours_work(wn, loops), lambda: tpe_work(wn, loops), rounds)
    print(
        f"~20 us Python work   : taskrunner {ours:>10,.0f}/s  TPE(2) {peer:>9,.0f}/s  "
        f"ratio {ours / peer:5.1f}x  ({wn:,} tasks of {loops} loops; goal >= 3.5x)"
    )
    alone, peer = alternate2(lambda: work_alone(wn, loops), lambda: tpe_work(wn, loops), rounds)
    print(
        f"  the work alone     : 2 threads  {alone:>10,.0f}/s  TPE(2) {peer:>9,.0f}/s  "
        f"ratio {alone / peer:5.1f}x  (no pool: the ceiling for this work)"
    )
    ours, peer = alternate2(lambda: ours_priorities(n), lambda: pq_priorities(n), rounds)
    print(
        f"mixed priorities     : taskrunner {ours:>10,.0f}/s  PriorityQueue {peer:>9,.0f}/s  "
        f"ratio {ours / peer:5.1f}x  (goal >= 5x)"
    )

    samples = 300 if args.quick else LATENCY_SAMPLES
    lo, lt, lf = latencies(samples)
    q = percentile
    print(
        f"post->start latency  : taskrunner p50 {q(lo, 0.5):6.1f} us p99 {q(lo, 0.99):6.1f} us   "
        f"TPE p50 {q(lt, 0.5):6.1f} us p99 {q(lt, 0.99):6.1f} us  (goal p50 <= 15, p99 <= 50)"
    )
    print(f"  floor (_floor.py)  : bare pool  p50 {q(lf, 0.5):6.1f} us p99 {q(lf, 0.99):6.1f} us")

    dn = 10_000 if args.quick else 100_000
    d = delayed(dn, 2.0)
    hq = heapq_timer_delayed(dn, 2.0)
    print(
        f"{dn} delayed over 2 s: post {d['post_us']:.2f} us (heapq timer {hq['post_us']:.2f})"
        f", cancel {d['cancel_us']:.2f} us, lateness p50 {d['late_p50_ms']:.2f} ms "
        f"p99 {d['late_p99_ms']:.2f} ms (heapq timer p50 {hq['late_p50_ms']:.2f} "
        f"p99 {hq['late_p99_ms']:.2f})  (goal post <= 1, cancel <= 0.5, p99 <= tick+0.3)"
    )
    if not args.skip_million:
        m = million_pending(100_000 if args.quick else 1_000_000)
        print(
            f"{m['pending']:,} pending delayed tasks: {m['rss_per_task_bytes']:.0f} B resident "
            f"per task (wheel {m['wheel_bytes_per_timer']:.0f} B per timer)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
