"""PriorityQueue: the C binary heap through its Python class.

A hypothesis state machine against a ``heapq`` model, batch pops, the
best-effort cap, in-flight accounting, close, bad input, and threads pushing
and popping at once where every token must be seen exactly once.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import Counter
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from taskrunner.errors import ClosedError, DuplicateTokenError, UnknownTokenError
from taskrunner.native.heap import PriorityQueue

JOIN = 10.0


class HeapMachine(RuleBasedStateMachine):
    """The C heap and a heapq of (-priority, seq, token) must agree at every step."""

    def __init__(self) -> None:
        super().__init__()
        self.q = PriorityQueue()
        self.model: list[tuple[int, int, int]] = []
        self.seq = itertools.count()
        self.tokens = itertools.count()
        self.popped = 0

    @rule(priority=st.integers(-3, 3))
    def push(self, priority: int) -> None:
        token = next(self.tokens)
        self.q.push(token, priority)
        heapq.heappush(self.model, (-priority, next(self.seq), token))

    @rule(data=st.data())
    def push_duplicate(self, data: st.DataObject) -> None:
        if not self.model:
            return
        token = data.draw(st.sampled_from([t for _, _, t in self.model]))
        with pytest.raises(DuplicateTokenError):
            self.q.push(token, 0)

    @rule()
    def pop(self) -> None:
        got = self.q.try_pop()
        if not self.model:
            assert got is None
            return
        neg, _, token = heapq.heappop(self.model)
        assert got == (token, -neg)
        self.popped += 1

    @rule(n=st.integers(1, 8))
    def pop_many(self, n: int) -> None:
        got = self.q.pop_many(n)
        expected = [heapq.heappop(self.model)[2] for _ in range(min(n, len(self.model)))]
        assert got == expected
        self.popped += len(got)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        entry = data.draw(st.sampled_from(self.model))
        self.q.remove(entry[2])
        self.model.remove(entry)
        heapq.heapify(self.model)
        with pytest.raises(UnknownTokenError):
            self.q.remove(entry[2])

    @rule()
    def batch(self) -> None:
        if not self.model:
            with pytest.raises(TimeoutError):
                self.q.pop_batch(4, 0)
            return
        tokens, priority = self.q.pop_batch(4, 0)
        assert priority == -self.model[0][0]
        expected = []
        while self.model and len(expected) < len(tokens) and -self.model[0][0] == priority:
            expected.append(heapq.heappop(self.model)[2])
        assert tokens == expected  # one priority, FIFO
        self.popped += len(tokens)

    @invariant()
    def agree(self) -> None:
        assert len(self.q) == len(self.model)
        head = self.q.peek()
        assert head == (None if not self.model else (self.model[0][2], -self.model[0][0]))
        assert self.q.in_flight == self.popped
        counts = self.q.level_counts()
        assert sum(counts) == len(self.model)
        self.q.check_invariants()


TestHeapMachine = pytest.mark.thread_unsafe(reason="hypothesis is not thread-safe")(
    HeapMachine.TestCase
)
TestHeapMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


def test_fifo_within_priority_and_priority_order() -> None:
    q = PriorityQueue()
    for i in range(30):
        q.push(i, i % 3)
    out = [q.try_pop() for _ in range(30)]
    assert out == [(i, 2) for i in range(2, 30, 3)] + [(i, 1) for i in range(1, 30, 3)] + [
        (i, 0) for i in range(0, 30, 3)
    ]


def test_push_many_is_all_or_none() -> None:
    q = PriorityQueue()
    q.push(5, 0)
    with pytest.raises(DuplicateTokenError):
        q.push_many([(1, 0), (5, 1)])
    assert len(q) == 1
    q.push_many([(1, 0), (2, 2)])
    assert q.pop_many(10) == [2, 5, 1]


def test_low_cap_and_completion_accounting() -> None:
    q = PriorityQueue()
    q.set_low_limit(0, 1)
    for t in range(3):
        q.push(t, 0)
    assert q.pop_batch(8, 0) == ([0], 0)
    with pytest.raises(TimeoutError):
        q.pop_batch(8, 0.01)
    q.push(9, 1)  # a higher priority is not held back by the cap
    assert q.pop_batch(8, 0) == ([9], 1)
    tokens, _ = q.pop_batch(8, 0, completed=1, completed_low=1)
    assert tokens == [1]
    assert not q.wait_idle(0.01)
    q.complete(2, 1)
    q.complete(0, 0)
    with pytest.raises(ValueError):
        q.complete(5)


def test_close_drains_then_refuses() -> None:
    q = PriorityQueue()
    q.push(1, 0)
    q.close()
    assert q.closed
    with pytest.raises(ClosedError):
        q.push(2, 0)
    assert q.pop_batch(4, None) == ([1], 0)
    with pytest.raises(ClosedError):
        q.pop_batch(4, None)


@pytest.mark.thread_unsafe(reason="starts its own threads")
def test_close_wakes_a_blocked_pop() -> None:
    q = PriorityQueue()
    result: list[Any] = []

    def waiter() -> None:
        try:
            q.pop_batch(4, None)
        except ClosedError as exc:
            result.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    while q.waiters == 0:
        threading.Event().wait(0.001)  # until the waiter is blocked in C
    q.close()
    t.join(JOIN)
    assert not t.is_alive() and isinstance(result[0], ClosedError)


@pytest.mark.parametrize(
    ("call", "exc"),
    [
        (lambda q: q.push("1", 0), TypeError),
        (lambda q: q.push(True, 0), TypeError),
        (lambda q: q.push(-1, 0), ValueError),
        (lambda q: q.push(2**64, 0), ValueError),
        (lambda q: q.push(1, 2**31), ValueError),
        (lambda q: q.push(1, 1.5), TypeError),
        (lambda q: q.pop_many(0), ValueError),
        (lambda q: q.pop_batch(4, -1), ValueError),
        (lambda q: q.pop_batch(4, float("nan")), ValueError),
        (lambda q: q.set_low_limit(0, -1), ValueError),
        (lambda q: q.remove(7), UnknownTokenError),
    ],
)
def test_bad_input(call: Any, exc: type[BaseException]) -> None:
    q = PriorityQueue()
    with pytest.raises(exc):
        call(q)
    q.push(1, 0)  # still usable
    assert q.try_pop() == (1, 0)


@pytest.mark.thread_unsafe(reason="starts its own threads")
def test_threads_push_and_pop_every_token_once() -> None:
    q = PriorityQueue()
    producers, consumers, per = 4, 4, 5000
    seen: Counter[int] = Counter()
    lock = threading.Lock()

    def produce(p: int) -> None:
        for i in range(per):
            q.push(p * per + i, i % 3)

    def consume() -> None:
        done = 0
        while True:
            try:
                tokens, _ = q.pop_batch(16, None, completed=done)
            except ClosedError:
                return
            done = len(tokens)
            with lock:
                seen.update(tokens)
            q.complete(done)
            done = 0

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    threads += [threading.Thread(target=consume) for _ in range(consumers)]
    for t in threads:
        t.start()
    for t in threads[:producers]:
        t.join(JOIN)
    assert q.wait_idle(JOIN)
    q.close()
    for t in threads[producers:]:
        t.join(JOIN)
    assert len(seen) == producers * per
    assert set(seen.values()) == {1}
