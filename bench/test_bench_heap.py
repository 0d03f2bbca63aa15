"""PriorityQueue (the C heap) against heapq and queue.PriorityQueue (pytest-benchmark).

    .venv/bin/python -m pytest bench/test_bench_heap.py --benchmark-only

Per-operation push+pop from one thread (where a cffi call, ~120-300 ns, cannot
beat heapq's ~50 ns), the same in batches of 64 (the C heap pops a batch in one
call), and removal of an arbitrary queued item at 100k queued (heapq has no
removal: the peer is a lazy-delete flag, and list.remove + heapify for exact
removal).  Structures are built outside the timed functions.
"""

from __future__ import annotations

import heapq
import itertools
import queue

import pytest

from taskrunner.native.heap import PriorityQueue

pytestmark = pytest.mark.thread_unsafe(reason="benchmarks")
BATCH = 64


def test_c_heap_push_pop(benchmark: pytest.FixtureRequest) -> None:
    """One push and one pop through the typed wrapper."""
    q = PriorityQueue()
    tokens = itertools.count()
    push, pop = q.push, q.try_pop

    def op() -> None:
        push(next(tokens), 1)
        pop()

    benchmark(op)


def test_heapq_push_pop(benchmark: pytest.FixtureRequest) -> None:
    """The same with heapq and a (priority, seq, item) tuple."""
    h: list[tuple[int, int, int]] = []
    seq = itertools.count()

    def op() -> None:
        n = next(seq)
        heapq.heappush(h, (-1, n, n))
        heapq.heappop(h)

    benchmark(op)


def test_priority_queue_put_get(benchmark: pytest.FixtureRequest) -> None:
    """queue.PriorityQueue: the thread-safe peer."""
    q: queue.PriorityQueue[tuple[int, int]] = queue.PriorityQueue()
    seq = itertools.count()

    def op() -> None:
        q.put((-1, next(seq)))
        q.get()

    benchmark(op)


def test_c_heap_batch_of_64(benchmark: pytest.FixtureRequest) -> None:
    """64 pushes in one call (push_many) and 64 pops in one call (pop_many)."""
    q = PriorityQueue()
    tokens = itertools.count()

    def op() -> None:
        q.push_many([(next(tokens), 1) for _ in range(BATCH)])
        q.pop_many(BATCH)

    benchmark(op)


def test_heapq_batch_of_64(benchmark: pytest.FixtureRequest) -> None:
    """heapq doing the same 64 pushes and pops."""
    h: list[tuple[int, int, int]] = []
    seq = itertools.count()

    def op() -> None:
        for _ in range(BATCH):
            n = next(seq)
            heapq.heappush(h, (-1, n, n))
        for _ in range(BATCH):
            heapq.heappop(h)

    benchmark(op)


def test_c_heap_remove_at_100k(benchmark: pytest.FixtureRequest) -> None:
    """Remove (and re-add) an arbitrary token with 100k queued: O(log n) in C."""
    q = PriorityQueue()
    for t in range(100_000):
        q.push(t, t % 3)

    def op() -> None:
        q.remove(50_000)
        q.push(50_000, 1)

    benchmark(op)


def test_heapq_exact_remove_at_100k(benchmark: pytest.FixtureRequest) -> None:
    """heapq's exact removal: list.remove + heapify, O(n)."""
    h = [(-(t % 3), t, t) for t in range(100_000)]
    heapq.heapify(h)
    entry = next(e for e in h if e[2] == 50_000)

    def op() -> None:
        h.remove(entry)
        heapq.heapify(h)
        heapq.heappush(h, entry)

    benchmark.pedantic(op, rounds=20, iterations=1)
