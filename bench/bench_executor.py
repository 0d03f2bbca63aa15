"""The Executor view against ThreadPoolExecutor, measured in the same run.

* submit: N no-op calls through ``pool.executor.submit`` (each returns a
  Future), then wait for the last, against ``ThreadPoolExecutor(2).submit``;
  and ``pool.submit`` (the runner's own, which also reports errors).
* map: ``list(executor.map(abs, range(N)))`` on both, and ours with
  ``chunksize=64`` (one task per 64 calls).

Rounds alternate the sides and report medians (see PERFORMANCE.md: only
same-run ratios are worth quoting on these machines).

    python bench/bench_executor.py [--quick] [--rounds R]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor, wait

from _harness import median, rotate

from taskrunner import ThreadPool


def noop() -> None:
    pass


def submits(executor: Executor, n: int) -> float:
    submit = executor.submit
    t0 = time.perf_counter()
    fs = [submit(noop) for _ in range(n)]
    wait(fs)
    return n / (time.perf_counter() - t0)


def maps(executor: Executor, n: int, chunksize: int = 1) -> float:
    t0 = time.perf_counter()
    out = list(executor.map(abs, range(n), chunksize=chunksize))
    assert len(out) == n
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n = 20_000 if args.quick else 100_000
    rounds = 3 if args.quick else args.rounds
    with ThreadPool(2, name="bench") as pool, ThreadPoolExecutor(2) as tpe:
        cases: dict[str, Callable[[], float]] = {
            "ThreadPoolExecutor(2).submit": lambda: submits(tpe, n),
            "pool.executor.submit": lambda: submits(pool.executor, n),
            "pool.submit": lambda: submits(pool, n),  # type: ignore[arg-type]
            "ThreadPoolExecutor(2).map": lambda: maps(tpe, n),
            "pool.executor.map": lambda: maps(pool.executor, n),
            "pool.executor.map chunksize=64": lambda: maps(pool.executor, n, 64),
        }
        results = dict(zip(cases, rotate(list(cases.values()), rounds), strict=True))
    base_submit = median(results["ThreadPoolExecutor(2).submit"])
    base_map = median(results["ThreadPoolExecutor(2).map"])
    print(f"{n} calls, 2 workers, median of {rounds} alternated rounds")
    for label, values in results.items():
        rate = median(values)
        base = base_map if ".map" in label else base_submit
        print(f"  {label:34s} {rate:>10,.0f} calls/s   {rate / base:5.2f}x")


if __name__ == "__main__":
    main()
