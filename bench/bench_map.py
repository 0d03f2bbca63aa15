"""``pool.map(fn, items)`` against ``ThreadPoolExecutor.map``, in the same run.

1M no-op items (issue 16's row, goal >= 15x), 2 workers each side, the
results consumed in order by the calling thread.  ``pool.map`` with its
default chunk size (items grouped into tasks, the tasks posted with one C
call per 1,024) and with ``chunksize=1`` (one task per item, the cost of a
task per call) are both shown.  Sides alternate (A B A B ...), medians.

    python bench/bench_map.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from _harness import Row, alternate2, banner, line

from taskrunner import ThreadPool


def noop(_item: object) -> None:
    return None


def ours_map(n: int, chunksize: int | None = None) -> float:
    with ThreadPool(2, name="bench") as pool:
        t0 = time.perf_counter()
        count = 0
        for _ in pool.map(noop, range(n), chunksize=chunksize):
            count += 1
        elapsed = time.perf_counter() - t0
    assert count == n
    return n / elapsed


def tpe_map(n: int) -> float:
    with ThreadPoolExecutor(2) as ex:
        t0 = time.perf_counter()
        count = 0
        for _ in ex.map(noop, range(n)):
            count += 1
        elapsed = time.perf_counter() - t0
    assert count == n
    return n / elapsed


def report(quick: bool) -> list[Row]:
    """Rows for ``taskrunner bench`` (name, ours, peer name, peer, unit)."""
    n, rounds = (50_000, 1) if quick else (1_000_000, 3)
    label = f"{n // 1000:,}k" if n < 1_000_000 else f"{n // 1_000_000}M"
    ours, peer = alternate2(lambda: ours_map(n), lambda: tpe_map(n), rounds)
    rows: list[Row] = [(f"pool.map no-op, {label} items", ours, "TPE(2).map", peer, "items/s")]
    small = n // 10  # one task per item: a tenth of the items is enough to see the rate
    ours, peer = alternate2(lambda: ours_map(small, 1), lambda: tpe_map(small), rounds)
    rows.append((f"pool.map chunksize=1, {small:,} items", ours, "TPE(2).map", peer, "items/s"))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    print(banner("2 workers each side"))
    for what, ours, peer_name, peer, unit in report(args.quick):
        assert peer is not None
        goal = 15.0 if "chunksize" not in what else None
        print(line(what, ours, peer_name, peer, unit, goal))
    return 0


if __name__ == "__main__":
    sys.exit(main())
