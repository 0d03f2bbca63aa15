"""RingBuffer against queue.Queue and collections.deque (pytest-benchmark).

    make bench          # or: .venv/bin/python -m pytest bench/test_bench_ring.py --benchmark-only

Per-item cost of a push and a pop from one thread, the same in batches of 64
(the ring pops a batch in one C call), and a two-thread producer -> consumer
transfer of 200k items through a bounded queue of 1024, where the ring's
waits happen in C with the GIL released.  deque is unbounded and does not
block: it is the floor, not a peer.  Structures are built outside the timed
functions.  Only ratios measured in one run are worth quoting (see
PERFORMANCE.md): the throughput benchmark alternates ring and Queue rounds.
"""

from __future__ import annotations

import queue
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest

from taskrunner.native.ring import RingBuffer

pytestmark = pytest.mark.thread_unsafe(reason="benchmarks")

BATCH = 64
TRANSFER_ITEMS = 200_000
TRANSFER_BOUND = 1024


# ---- one item at a time -------------------------------------------------------------------------


def _ring_try() -> Callable[[], Any]:
    r = RingBuffer(1024)
    push, pop = r.try_push, r.try_pop

    def op() -> Any:
        push(1)
        return pop()

    return op


def _ring_wait() -> Callable[[], Any]:
    r = RingBuffer(1024)
    push, pop = r.push, r.pop

    def op() -> Any:
        push(1)
        return pop()

    return op


def _queue_blocking() -> Callable[[], Any]:
    q: queue.Queue[int] = queue.Queue(maxsize=1024)
    put, get = q.put, q.get

    def op() -> Any:
        put(1)
        return get()

    return op


def _queue_nowait() -> Callable[[], Any]:
    q: queue.Queue[int] = queue.Queue(maxsize=1024)
    put, get = q.put_nowait, q.get_nowait

    def op() -> Any:
        put(1)
        return get()

    return op


def _deque() -> Callable[[], Any]:
    d: deque[int] = deque()
    put, get = d.append, d.popleft

    def op() -> Any:
        put(1)
        return get()

    return op


SINGLE = {
    "ring try_push+try_pop": _ring_try,
    "ring push+pop": _ring_wait,
    "Queue put+get": _queue_blocking,
    "Queue put_nowait+get_nowait": _queue_nowait,
    "deque append+popleft": _deque,
}


@pytest.mark.benchmark(group="push+pop, 1 item")
@pytest.mark.parametrize("name", list(SINGLE))
def test_push_pop_one(benchmark: Any, name: str) -> None:
    """One push then one pop of the same item, single thread: per-call overhead."""
    op = SINGLE[name]()
    assert benchmark(op) == 1


# ---- batches ------------------------------------------------------------------------------------


def _ring_batch() -> Callable[[], Any]:
    r = RingBuffer(1024)
    push, pop_many = r.try_push, r.pop_many
    items = range(BATCH)

    def op() -> Any:
        for i in items:
            push(i)
        return pop_many(BATCH)

    return op


def _queue_batch() -> Callable[[], Any]:
    q: queue.Queue[int] = queue.Queue(maxsize=1024)
    put, get = q.put, q.get
    items = range(BATCH)

    def op() -> Any:
        for i in items:
            put(i)
        return [get() for _ in items]

    return op


def _deque_batch() -> Callable[[], Any]:
    d: deque[int] = deque()
    put, get = d.append, d.popleft
    items = range(BATCH)

    def op() -> Any:
        for i in items:
            put(i)
        return [get() for _ in items]

    return op


BATCHED = {
    f"ring {BATCH} try_push + pop_many({BATCH})": _ring_batch,
    f"Queue {BATCH} put + {BATCH} get": _queue_batch,
    f"deque {BATCH} append + {BATCH} popleft": _deque_batch,
}


@pytest.mark.benchmark(group=f"push+pop, batches of {BATCH}")
@pytest.mark.parametrize("name", list(BATCHED))
def test_push_pop_batch(benchmark: Any, name: str) -> None:
    """64 single pushes, then the 64 items taken out (the ring in one pop_many call)."""
    op = BATCHED[name]()
    assert benchmark(op) == list(range(BATCH))


# ---- two threads --------------------------------------------------------------------------------


def ring_transfer(n: int) -> float:
    """Seconds to move n items from a producer thread to this thread through the ring."""
    r = RingBuffer(TRANSFER_BOUND)
    push = r.push

    def produce() -> None:
        for i in range(n):
            push(i)

    pop_many_wait = r.pop_many_wait
    t0 = time.perf_counter()
    producer = threading.Thread(target=produce)
    producer.start()
    got = 0
    while got < n:
        got += len(pop_many_wait(256))
    producer.join()
    return time.perf_counter() - t0


def queue_transfer(n: int) -> float:
    """Seconds to move n items from a producer thread to this thread through queue.Queue."""
    q: queue.Queue[int] = queue.Queue(maxsize=TRANSFER_BOUND)
    put = q.put

    def produce() -> None:
        for i in range(n):
            put(i)

    get = q.get
    t0 = time.perf_counter()
    producer = threading.Thread(target=produce)
    producer.start()
    for _ in range(n):
        get()
    producer.join()
    return time.perf_counter() - t0


@pytest.mark.benchmark(group="producer -> consumer, 2 threads, 200k items")
def test_two_thread_throughput(benchmark: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """200k items, bound 1024: ring (push / pop_many_wait(256)) vs Queue (put / get).

    The timed function is the ring transfer; a Queue transfer runs in each
    round's setup (untimed by pytest-benchmark, timed here), so the two
    alternate A B A B and their ratio comes from one run.
    """
    queue_secs: list[float] = []

    def setup() -> None:
        queue_secs.append(queue_transfer(TRANSFER_ITEMS))

    ring_secs: list[float] = []

    def timed() -> None:
        ring_secs.append(ring_transfer(TRANSFER_ITEMS))

    benchmark.pedantic(timed, setup=setup, rounds=5, iterations=1, warmup_rounds=0)
    ring_rate = TRANSFER_ITEMS / statistics.median(ring_secs)
    queue_rate = TRANSFER_ITEMS / statistics.median(queue_secs)
    benchmark.extra_info.update(
        ring_items_per_s=round(ring_rate),
        queue_items_per_s=round(queue_rate),
        ratio=round(ring_rate / queue_rate, 2),
    )
    with capsys.disabled():
        print(
            f"\n  2-thread transfer of {TRANSFER_ITEMS} items (bound {TRANSFER_BOUND}), "
            f"medians of {len(ring_secs)}: ring {ring_rate:,.0f} items/s, "
            f"queue.Queue {queue_rate:,.0f} items/s, ratio {ring_rate / queue_rate:.1f}x"
        )
