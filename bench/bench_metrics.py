"""What metrics cost: no-op task throughput with metrics off, with the
in-process collector, and with the Prometheus collector being scraped.

One poster, 2 workers, ``--tasks`` no-op tasks per run.  The three arms are
alternated (A B C A B C ...).  Two figures per arm:

* throughput (tasks/s, wall clock): the median of the rounds, and the median
  of the per-round ratios to metrics off (side by side, which cancels the
  slow drift of these 2-core machines, up to 2x over minutes);
* CPU per task (process CPU time of all our threads / tasks): what the arm
  costs, and much less sensitive than wall time to other processes competing
  for the cores.  Reported as the same medians.

The Prometheus arm registers the collector on its own registry and renders
the text exposition every ``--scrape-interval`` seconds from another thread
while the tasks run (a real server scrapes every 15-60 s: this is far more
often).  Goal: the Prometheus arm keeps >= 85% of the metrics-off throughput.

    python bench/bench_metrics.py [--quick] [--tasks N] [--rounds R] [--scrape-interval S]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

from _harness import median, rotate

from taskrunner import ThreadPool
from taskrunner.runtime.metrics import InProcessMetrics, Metrics


class Figures(NamedTuple):
    rate: float  #: tasks per second, wall clock
    cpu_ns: float  #: process CPU nanoseconds per task


def noop() -> None:
    pass


def run(n: int, metrics: Metrics | None) -> Figures:
    """``n`` no-op posts and their runs, timed from the first post to idle
    (pool start and shutdown excluded)."""
    with ThreadPool(2, name="bench", metrics=metrics) as pool:
        post = pool.post_task
        c0, t0 = time.process_time_ns(), time.perf_counter()
        for _ in range(n):
            post(noop)
        pool.wait_idle()
        elapsed, cpu = time.perf_counter() - t0, time.process_time_ns() - c0
    return Figures(n / elapsed, cpu / n)


def arm_off(n: int) -> Figures:
    """Metrics off (``metrics=None``): the baseline."""
    return run(n, None)


def arm_in_process(n: int) -> Figures:
    """An InProcessMetrics collector, never read during the run."""
    return run(n, InProcessMetrics())


def arm_prometheus(n: int, interval: float) -> Figures:
    """InProcessMetrics exported by the Prometheus collector, scraped (rendered
    to text) every ``interval`` seconds by another thread during the run."""
    from prometheus_client import CollectorRegistry, generate_latest

    from taskrunner.integrations.prometheus import register

    registry = CollectorRegistry()
    metrics = register(registry=registry)
    stop = threading.Event()

    def scraper() -> None:
        while not stop.wait(interval):
            generate_latest(registry)

    thread = threading.Thread(target=scraper, name="bench-scraper", daemon=True)
    thread.start()
    try:
        figures = run(n, metrics)
    finally:
        stop.set()
        thread.join()
    text = generate_latest(registry).decode()
    counted = 'taskrunner_tasks_total{outcome="succeeded",priority="user_visible",runner="bench"}'
    if f"{counted} {float(n)}" not in text:
        raise AssertionError("the Prometheus arm did not count every task")
    return figures


class Summary(NamedTuple):
    rate: float  #: median tasks/s
    rate_ratio: float  #: median of the per-round rate ratios to the first arm
    cpu_ns: float  #: median CPU ns per task
    cpu_ratio: float  #: median of the per-round CPU-per-task ratios to the first arm


def alternate(arms: list[Callable[[], Figures]], rounds: int) -> list[Summary]:
    """Run the arms in turn, ``rounds`` times; summarise each against the first."""
    results = rotate(arms, rounds)  # the order rotates each round (see _harness)
    base = results[0]
    return [
        Summary(
            rate=median([f.rate for f in r]),
            rate_ratio=median([f.rate / b.rate for f, b in zip(r, base, strict=True)]),
            cpu_ns=median([f.cpu_ns for f in r]),
            cpu_ratio=median([f.cpu_ns / b.cpu_ns for f, b in zip(r, base, strict=True)]),
        )
        for r in results
    ]


def _have_prometheus() -> bool:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


def measure(n: int, rounds: int, interval: float | None) -> list[Summary]:
    """Off, in-process and (when ``interval`` is not None) Prometheus, after a warm-up."""
    arm_off(min(n, 5000))  # warm up: imports, first threads
    arms = [lambda: arm_off(n), lambda: arm_in_process(n)]
    if interval is not None:
        arms.append(lambda: arm_prometheus(n, interval))
    return alternate(arms, rounds)


def report(quick: bool) -> Iterator[tuple[str, float, str, float, str]]:
    """The rows for ``taskrunner bench`` (see taskrunner/cli/bench_report.py): each
    collector's throughput against metrics off, as the median per-round ratio
    (so ``ours / peer`` is the share of throughput kept).  Without
    prometheus-client the Prometheus row is left out."""
    n, rounds = (20_000, 3) if quick else (200_000, 7)
    summaries = measure(n, rounds, 0.2 if _have_prometheus() else None)
    off = summaries[0].rate
    names = ["no-op tasks, in-process metrics", "no-op tasks, Prometheus collector (scraped)"]
    for name, s in zip(names, summaries[1:], strict=False):
        yield (name, off * s.rate_ratio, "metrics off", off, "tasks/s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20k tasks, 3 rounds by default")
    parser.add_argument("--tasks", type=int, default=None, help="tasks per run (200k)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (7)")
    parser.add_argument("--scrape-interval", type=float, default=0.2)
    args = parser.parse_args(argv)
    n = args.tasks or (20_000 if args.quick else 200_000)
    rounds = args.rounds or (3 if args.quick else 7)
    if not _have_prometheus():
        print("bench_metrics: prometheus-client is not installed (taskrunner[prometheus])")
        return 1
    print(
        f"python {sys.version.split()[0]}, gil={'on' if _gil() else 'off'}, {n} no-op tasks, "
        f"1 poster, 2 workers, {rounds} rounds (A B C alternated), "
        f"scrape every {args.scrape_interval} s"
    )
    print("medians of the rounds; ratios: medians of the per-round ratios to metrics off")
    labels = ["metrics off         ", "in-process collector", "prometheus collector"]
    for label, s in zip(labels, measure(n, rounds, args.scrape_interval), strict=True):
        print(
            f"{label}: {s.rate:>10,.0f} tasks/s  {s.rate_ratio:.2f}x   "
            f"CPU {s.cpu_ns:>7,.0f} ns/task  {s.cpu_ratio:.2f}x"
        )
        last = s
    print(
        f"Prometheus cost: {100 * (1 - last.rate_ratio):.1f}% of throughput, "
        f"{100 * (last.cpu_ratio - 1):.1f}% more CPU per task (goal: throughput cost <= 15%)"
    )
    return 0


def _gil() -> bool:
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


if __name__ == "__main__":
    sys.exit(main())
