"""TimingWheel against a heapq timer queue and sched.scheduler (pytest-benchmark).

    make bench          # or: .venv/bin/python -m pytest bench/test_bench_wheel.py --benchmark-only

What a delayed-task scheduler does with its timer structure: insert a timer,
cancel one, and expire everything that is due.  Each is measured on an empty
structure and with 100k and 1M timers already pending (deadlines spread over
an hour), because a heap's cost grows with its size and a wheel's should not.

Peers:
* ``heapq``: ``heappush`` of (deadline, seq, token) plus a token -> seq dict;
  cancel drops the dict entry (lazy, O(1)) and the heap is compacted when
  more than half of it is dead, as asyncio's event loop does.  The usual
  Python answer, and a fair one.
* ``sched.scheduler``: ``enterabs`` / ``cancel`` / ``run(blocking=False)``.
  Its cancel is ``list.remove`` + ``heapify``, O(n), so its sizes are kept
  small enough to finish (10k pending, and few cancels at 100k).
* ``wheel``: :class:`taskrunner.native.wheel.TimingWheel` (typed wrapper, argument
  checks included); ``wheel-cffi`` calls ``lib.tr_wheel_*`` directly, as the
  scheduler's timer code does.

Benchmarks named ``...-x{K}`` time K operations per round, so their figures are
per K ops; ``extra_info["ns_per_op"]`` holds the median per operation.  The
pending background is built once per structure and size, outside the timing;
each round's own timers are removed again in the (untimed) setup of the next
round, so every round sees the same size.  Only ratios measured in one run are
worth quoting (see PERFORMANCE.md).
"""

from __future__ import annotations

import heapq
import random
import sched
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pytest

from taskrunner.native.binding import ffi, lib
from taskrunner.native.wheel import TimingWheel

pytestmark = pytest.mark.thread_unsafe(reason="benchmarks")

SEC = 1_000_000_000
HOUR = 3600 * SEC
K = 10_000  # operations timed per round
BACKGROUND_BASE = 1 << 40  # background tokens start here; timed ones below


class Timers(Protocol):
    def insert(self, token: int, deadline_ns: int) -> None: ...
    def cancel(self, token: int) -> None: ...
    def expire(self, now_ns: int) -> list[int]: ...
    def discard_many(self, tokens: range) -> None: ...  # untimed cleanup
    def __len__(self) -> int: ...


class WheelTimers:
    """The typed Python wrapper."""

    def __init__(self) -> None:
        self.wheel = TimingWheel(start_ns=0)
        self.insert = self.wheel.insert_ns
        self.cancel = self.wheel.cancel

    def expire(self, now_ns: int) -> list[int]:
        return self.wheel.advance_ns(now_ns)

    def discard_many(self, tokens: range) -> None:
        for token in tokens:
            self.wheel.cancel(token)

    def __len__(self) -> int:
        return len(self.wheel)


class WheelCffiTimers:
    """The C calls without the wrapper: what taskrunner's own timer code does."""

    def __init__(self) -> None:
        self.wheel = TimingWheel(start_ns=0)
        w, ins, can = self.wheel._w, lib.tr_wheel_insert, lib.tr_wheel_cancel
        self.insert: Callable[[int, int], int] = lambda token, deadline: ins(w, token, deadline)
        self.cancel: Callable[[int], int] = lambda token: can(w, token)
        self._out = ffi.new("uint64_t[]", 4096)
        self._n = ffi.new("size_t *")

    def expire(self, now_ns: int) -> list[int]:
        advance, w, out, n = lib.tr_wheel_advance, self.wheel._w, self._out, self._n
        got: list[int] = []
        while True:
            advance(w, now_ns, out, ffi.NULL, 4096, n)
            got += ffi.unpack(out, n[0])
            if n[0] < 4096:
                return got

    def discard_many(self, tokens: range) -> None:
        for token in tokens:
            self.wheel.cancel(token)

    def __len__(self) -> int:
        return len(self.wheel)


class HeapqTimers:
    """heapq with lazy cancel and asyncio-style compaction."""

    def __init__(self) -> None:
        self.heap: list[tuple[int, int, int]] = []
        self.live: dict[int, int] = {}  # token -> seq of its live heap entry
        self.seq = 0

    def insert(self, token: int, deadline_ns: int) -> None:
        seq = self.seq
        self.seq = seq + 1
        heapq.heappush(self.heap, (deadline_ns, seq, token))
        self.live[token] = seq

    def cancel(self, token: int) -> None:
        del self.live[token]
        if len(self.heap) > 2 * len(self.live) + 1024:
            live = self.live
            self.heap = [e for e in self.heap if live.get(e[2]) == e[1]]
            heapq.heapify(self.heap)

    def discard_many(self, tokens: range) -> None:
        for token in tokens:
            self.cancel(token)

    def expire(self, now_ns: int) -> list[int]:
        heap, live, out = self.heap, self.live, []
        while heap and heap[0][0] <= now_ns:
            _, seq, token = heapq.heappop(heap)
            if live.get(token) == seq:
                del live[token]
                out.append(token)
        return out

    def __len__(self) -> int:
        return len(self.live)


class SchedTimers:
    """sched.scheduler on a mock clock (seconds); cancel is O(n)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.s = sched.scheduler(lambda: self.now, lambda _: None)
        self.events: dict[int, sched.Event] = {}
        self.fired = 0  # sched hands back no tokens: its actions count themselves

    def _fire(self) -> None:
        self.fired += 1

    def insert(self, token: int, deadline_ns: int) -> None:
        self.events[token] = self.s.enterabs(deadline_ns / 1e9, 0, self._fire)

    def cancel(self, token: int) -> None:
        self.s.cancel(self.events.pop(token))

    def discard_many(self, tokens: range) -> None:
        """Untimed cleanup: one O(n) pass over sched's private heap instead of one per token."""
        gone = {id(self.events.pop(token)) for token in tokens}
        q = self.s._queue  # type: ignore[attr-defined]
        q[:] = [e for e in q if id(e) not in gone]
        heapq.heapify(q)

    def expire(self, now_ns: int) -> list[int]:
        self.now = now_ns / 1e9
        before = self.fired
        self.s.run(blocking=False)
        return [0] * (self.fired - before)

    def __len__(self) -> int:
        return len(self.events) - self.fired


FACTORIES: dict[str, Callable[[], Any]] = {
    "wheel": WheelTimers,
    "wheel-cffi": WheelCffiTimers,
    "heapq": HeapqTimers,
    "sched": SchedTimers,
}

_built: dict[tuple[str, int], Timers] = {}


def _background(kind: str, size: int) -> Timers:
    """A structure holding `size` timers due within the hour (built once, outside timing)."""
    key = (kind, size)
    if key not in _built:
        _built.clear()  # keep at most one large background alive at a time
        t = FACTORIES[kind]()
        rng = random.Random(size)
        for i in range(size):
            t.insert(BACKGROUND_BASE + i, rng.randrange(1, HOUR))
        _built[key] = t
    return _built[key]


def _deadlines(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(1, HOUR) for _ in range(n)]


def _per_op(benchmark: Any, ops: int) -> None:
    if benchmark.stats is not None:
        benchmark.extra_info["ns_per_op"] = round(benchmark.stats.stats.median / ops * 1e9, 1)


# (structure, pending size, ops per round); sched's O(n) cancel gets fewer ops at 100k.
INSERT_CASES = [
    *[(k, n, K) for k in ("wheel", "wheel-cffi", "heapq") for n in (0, 100_000, 1_000_000)],
    ("sched", 0, K),
    ("sched", 100_000, K),
]
CANCEL_CASES = [
    *[(k, n, K) for k in ("wheel", "wheel-cffi", "heapq") for n in (0, 100_000, 1_000_000)],
    ("sched", 0, 1000),
    ("sched", 10_000, 200),
    ("sched", 100_000, 20),
]


def _case_id(case: tuple[str, int, int]) -> str:
    kind, size, ops = case
    pending = f"{size // 1000}k" if size < 1_000_000 else f"{size // 1_000_000}M"
    return f"{kind}-{pending}-pending-x{ops}"


@pytest.fixture
def cleanup() -> Iterator[list[Callable[[], None]]]:
    """Callables run after the benchmark (frees the timed tokens of the last round)."""
    todo: list[Callable[[], None]] = []
    yield todo
    for fn in todo:
        fn()


@pytest.mark.parametrize("case", INSERT_CASES, ids=_case_id)
def test_insert(benchmark: Any, case: tuple[str, int, int], cleanup: list[Any]) -> None:
    """Insert K timers (deadlines within the hour) on top of `size` pending ones."""
    kind, size, ops = case
    t = _background(kind, size)
    deadlines = _deadlines(ops, 1)
    pairs = list(zip(range(ops), deadlines, strict=True))
    inserted = [False]

    def remove_previous() -> None:
        if inserted[0]:
            t.discard_many(range(ops))
            inserted[0] = False

    def setup() -> None:
        remove_previous()
        inserted[0] = True

    def run() -> None:
        insert = t.insert
        for token, deadline in pairs:
            insert(token, deadline)

    cleanup.append(remove_previous)
    benchmark.pedantic(run, setup=setup, rounds=5 if size < 1_000_000 else 3, iterations=1)
    _per_op(benchmark, ops)
    assert len(t) == size + ops


@pytest.mark.parametrize("case", CANCEL_CASES, ids=_case_id)
def test_cancel(benchmark: Any, case: tuple[str, int, int]) -> None:
    """Cancel K pending timers (in random order) with `size` others pending."""
    kind, size, ops = case
    t = _background(kind, size)
    deadlines = _deadlines(ops, 2)
    order = list(range(ops))
    random.Random(3).shuffle(order)

    def setup() -> None:
        for token, deadline in enumerate(deadlines):
            t.insert(token, deadline)

    def run() -> None:
        cancel = t.cancel
        for token in order:
            cancel(token)

    benchmark.pedantic(run, setup=setup, rounds=5 if size < 1_000_000 else 3, iterations=1)
    _per_op(benchmark, ops)
    assert len(t) == size


@pytest.mark.parametrize("kind", ["wheel", "wheel-cffi", "heapq", "sched"])
def test_insert_cancel_pair(benchmark: Any, kind: str) -> None:
    """One insert and one cancel of the same token on an otherwise empty structure."""
    t = FACTORIES[kind]()
    insert, cancel = t.insert, t.cancel

    def op() -> None:
        insert(1, 5 * SEC)
        cancel(1)

    benchmark(op)
    assert len(t) == 0


EXPIRE_COUNT = 100_000


@pytest.mark.parametrize("kind", ["wheel", "wheel-cffi", "heapq", "sched"])
def test_expire_all(benchmark: Any, kind: str) -> None:
    """Expire 100k timers spread over one second in 1 ms steps, earliest first."""
    deadlines = _deadlines(EXPIRE_COUNT, 4)
    holder: list[Timers] = []

    def setup() -> None:
        t = FACTORIES[kind]()
        for token, deadline in enumerate(deadlines):
            t.insert(token, deadline // 3600)  # within the first second
        holder[:] = [t]

    def run() -> None:
        t = holder[0]
        expire = t.expire
        fired = 0
        for now in range(0, SEC + 1, 1_000_000):
            fired += len(expire(now))
        assert fired == EXPIRE_COUNT

    benchmark.pedantic(run, setup=setup, rounds=3, iterations=1)
    _per_op(benchmark, EXPIRE_COUNT)
    assert len(holder[0]) == 0
