"""RingBuffer: the C bounded MPMC ring through its Python class.

Functional behaviour, bad input, a hypothesis state machine against a bounded
``deque`` model, blocking with timeouts, close waking blocked callers, and
multi-threaded stress runs where every token must be seen exactly once.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from taskrunner.errors import ClosedError
from taskrunner.native.ring import RingBuffer

TOKEN_MAX = 2**64 - 1
JOIN = 10.0  # generous: a join that times out means a waiter was never woken
SLACK = 0.5  # how late a timed-out wait may return on a loaded 2-core machine


# ---- construction and plain use ---------------------------------------------------------------


@pytest.mark.parametrize("capacity", [2, 4, 64, 1024])
def test_new(capacity: int) -> None:
    r = RingBuffer(capacity)
    assert r.capacity == capacity
    assert len(r) == 0
    assert not r.closed
    assert r.memory_bytes >= 16 * capacity
    assert repr(r) == f"<RingBuffer 0/{capacity}>"


@pytest.mark.parametrize("capacity", [0, 1, 3, 6, 1000, -4])
def test_bad_capacity_value(capacity: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        RingBuffer(capacity)


@pytest.mark.parametrize("capacity", [4.0, "4", None, True])
def test_bad_capacity_type(capacity: Any) -> None:
    with pytest.raises(TypeError):
        RingBuffer(capacity)


def test_fifo_full_empty() -> None:
    r = RingBuffer(8)
    assert r.try_pop() is None
    for i in range(8):
        assert r.try_push(100 + i)
    assert len(r) == 8
    assert not r.try_push(999)
    assert len(r) == 8
    assert [r.try_pop() for _ in range(8)] == list(range(100, 108))
    assert r.try_pop() is None
    # Wrap around the slots many times.
    out: list[int | None] = []
    for i in range(100):
        assert r.try_push(i)
        if i % 4 == 3:
            out.append(r.pop(timeout=0))
            out.append(r.pop(timeout=0))
            out.append(r.try_pop())
            out += r.pop_many(1)
    assert r.pop_many(100) == []
    assert out == list(range(100))


def test_extreme_tokens_round_trip() -> None:
    r = RingBuffer(4)
    for t in (0, 1, 2**63, TOKEN_MAX):
        r.push(t)
        assert r.pop() == t


@pytest.mark.parametrize("bad", [-1, 2**64, 2**70])
@pytest.mark.parametrize("method", ["try_push", "push", "push_evict"])
def test_bad_token_value(method: str, bad: int) -> None:
    r = RingBuffer(4)
    with pytest.raises(ValueError, match="token"):
        getattr(r, method)(bad)
    assert len(r) == 0


@pytest.mark.parametrize("bad", [1.0, "1", None, True, b"1"])
@pytest.mark.parametrize("method", ["try_push", "push", "push_evict"])
def test_bad_token_type(method: str, bad: Any) -> None:
    r = RingBuffer(4)
    with pytest.raises(TypeError, match="token"):
        getattr(r, method)(bad)
    assert len(r) == 0


def test_int_subclass_token_accepted() -> None:
    class Tok(int):
        pass

    r = RingBuffer(4)
    assert r.try_push(Tok(7))
    got = r.try_pop()
    assert got == 7 and type(got) is int


def test_pop_many() -> None:
    r = RingBuffer(16)
    assert r.pop_many(8) == []
    for i in range(10):
        r.push(i)
    assert r.pop_many(3) == [0, 1, 2]
    assert r.pop_many(100) == list(range(3, 10))
    # A request larger than the ring is capped at one ring-full.
    for i in range(16):
        r.push(i)
    assert r.pop_many(10**9) == list(range(16))
    for i in range(5):
        r.push(i)
    assert r.pop_many_wait(2) == [0, 1]
    assert r.pop_many_wait(64, timeout=0) == [2, 3, 4]


@pytest.mark.parametrize("bad", [0, -1])
def test_pop_many_bad_max_value(bad: int) -> None:
    r = RingBuffer(4)
    r.push(1)
    with pytest.raises(ValueError, match="max_items"):
        r.pop_many(bad)
    with pytest.raises(ValueError, match="max_items"):
        r.pop_many_wait(bad, timeout=0)
    assert len(r) == 1


@pytest.mark.parametrize("bad", [1.5, "2", None, True])
def test_pop_many_bad_max_type(bad: Any) -> None:
    r = RingBuffer(4)
    with pytest.raises(TypeError, match="max_items"):
        r.pop_many(bad)
    with pytest.raises(TypeError, match="max_items"):
        r.pop_many_wait(bad)


def test_push_evict() -> None:
    r = RingBuffer(4)
    for i in range(4):
        assert r.push_evict(i) is None
    for i in range(4, 10):
        assert r.push_evict(i) == i - 4  # the oldest
        assert len(r) == 4
    assert r.pop_many(8) == [6, 7, 8, 9]
    assert r.push_evict(20) is None


def test_close_semantics() -> None:
    r = RingBuffer(4)
    for i in range(4):
        r.push(i)
    r.close()
    r.close()  # idempotent
    assert r.closed
    assert repr(r) == "<RingBuffer 4/4 closed>"
    pushes: list[Callable[[], object]] = [
        lambda: r.try_push(9),
        lambda: r.push(9),
        lambda: r.push(9, timeout=0),
        lambda: r.push_evict(9),
    ]
    for call in pushes:
        with pytest.raises(ClosedError):
            call()
    # Pops drain what was queued, then raise instead of waiting.
    assert r.try_pop() == 0
    assert r.pop() == 1
    assert r.pop_many(1) == [2]
    assert r.pop_many_wait(4) == [3]
    assert len(r) == 0
    for call2 in (
        r.try_pop,
        r.pop,
        lambda: r.pop(timeout=0),
        lambda: r.pop_many(4),
        lambda: r.pop_many_wait(4),
        lambda: r.pop_many_wait(4, timeout=0),
    ):
        with pytest.raises(ClosedError):
            call2()


def test_freed_when_unreferenced() -> None:
    r = RingBuffer(4)
    r.push(1)
    ref = weakref.ref(r)
    del r
    gc.collect()
    assert ref() is None


# ---- timeouts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [0.03, 0.1])
def test_pop_times_out_on_time(timeout: float) -> None:
    r = RingBuffer(2)
    for call in (lambda: r.pop(timeout=timeout), lambda: r.pop_many_wait(4, timeout=timeout)):
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            call()
        elapsed = time.monotonic() - t0
        assert timeout <= elapsed < timeout + SLACK


def test_push_times_out_on_time() -> None:
    r = RingBuffer(2)
    r.push(1)
    r.push(2)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        r.push(3, timeout=0.05)
    elapsed = time.monotonic() - t0
    assert 0.05 <= elapsed < 0.05 + SLACK
    assert r.pop_many(4) == [1, 2]


def test_zero_timeout_does_not_wait() -> None:
    r = RingBuffer(2)
    with pytest.raises(TimeoutError):
        r.pop(timeout=0)
    with pytest.raises(TimeoutError):
        r.pop_many_wait(1, timeout=0)
    r.push(1, timeout=0)
    r.push(2, timeout=0)
    with pytest.raises(TimeoutError):
        r.push(3, timeout=0)
    assert r.pop(timeout=math.inf) == 1


@pytest.mark.parametrize(
    ("bad", "exc"), [(-1, ValueError), (math.nan, ValueError), ("1", TypeError), (True, TypeError)]
)
def test_bad_timeout(bad: Any, exc: type[Exception]) -> None:
    r = RingBuffer(2)
    r.push(1)
    with pytest.raises(exc):
        r.pop(timeout=bad)
    with pytest.raises(exc):
        r.pop_many_wait(1, timeout=bad)
    with pytest.raises(exc):
        r.push(2, timeout=bad)
    assert r.pop_many(4) == [1]


# ---- blocking calls woken by other threads -----------------------------------------------------


class Blocked:
    """Runs ``call`` on a thread and records its result or exception."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.entered = threading.Event()
        self._call = call
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()
        assert self.entered.wait(JOIN)

    def _main(self) -> None:
        self.entered.set()
        try:
            self.result = self._call()
        except BaseException as e:
            self.error = e

    def still_blocked(self) -> bool:
        """True if the call has not returned within a short grace period."""
        self.thread.join(0.05)
        return self.thread.is_alive()

    def finish(self) -> None:
        self.thread.join(JOIN)
        assert not self.thread.is_alive(), "the blocked call was never woken"


def test_push_wakes_blocked_pop() -> None:
    r = RingBuffer(2)
    b = Blocked(r.pop)
    assert b.still_blocked()
    r.push(42)
    b.finish()
    assert b.error is None and b.result == 42


def test_push_evict_wakes_blocked_pop_many_wait() -> None:
    r = RingBuffer(2)
    b = Blocked(lambda: r.pop_many_wait(8))
    assert b.still_blocked()
    assert r.push_evict(43) is None
    b.finish()
    assert b.error is None and b.result == [43]


def test_pop_wakes_blocked_push() -> None:
    r = RingBuffer(2)
    r.push(1)
    r.push(2)
    b = Blocked(lambda: r.push(3))
    assert b.still_blocked()
    assert r.pop_many(1) == [1]
    b.finish()
    assert b.error is None
    assert r.pop_many(4) == [2, 3]


def test_close_wakes_blocked_pops() -> None:
    r = RingBuffer(4)
    blocked = [Blocked(r.pop), Blocked(lambda: r.pop_many_wait(4)), Blocked(r.pop)]
    assert all(b.still_blocked() for b in blocked)
    r.close()
    for b in blocked:
        b.finish()
        assert isinstance(b.error, ClosedError)


def test_close_wakes_blocked_pushes() -> None:
    r = RingBuffer(2)
    r.push(1)
    r.push(2)
    blocked = [Blocked(functools.partial(r.push, 10 + i)) for i in range(3)]
    assert all(b.still_blocked() for b in blocked)
    r.close()
    for b in blocked:
        b.finish()
        assert isinstance(b.error, ClosedError)
    assert r.pop_many(4) == [1, 2]


def test_close_wakes_timed_waiters_early() -> None:
    r = RingBuffer(2)
    b = Blocked(lambda: r.pop(timeout=30))
    assert b.still_blocked()
    t0 = time.monotonic()
    r.close()
    b.finish()
    assert isinstance(b.error, ClosedError)
    assert time.monotonic() - t0 < JOIN


# ---- model-based test ---------------------------------------------------------------------------

tokens = st.integers(min_value=0, max_value=TOKEN_MAX)


class RingMachine(RuleBasedStateMachine):
    """Drives a RingBuffer and a bounded deque side by side, one thread."""

    def __init__(self) -> None:
        super().__init__()
        self.ring: RingBuffer
        self.model: deque[int] = deque()
        self.capacity = 0
        self.is_closed = False

    @initialize(log2=st.integers(min_value=1, max_value=5))
    def make(self, log2: int) -> None:
        self.capacity = 1 << log2
        self.ring = RingBuffer(self.capacity)

    def _full(self) -> bool:
        return len(self.model) == self.capacity

    @rule(token=tokens)
    def try_push(self, token: int) -> None:
        if self.is_closed:
            with pytest.raises(ClosedError):
                self.ring.try_push(token)
        elif self._full():
            assert self.ring.try_push(token) is False
        else:
            assert self.ring.try_push(token) is True
            self.model.append(token)

    @rule(token=tokens)
    def push_no_wait(self, token: int) -> None:
        if self.is_closed:
            with pytest.raises(ClosedError):
                self.ring.push(token, timeout=0)
        elif self._full():
            with pytest.raises(TimeoutError):
                self.ring.push(token, timeout=0)
        else:
            self.ring.push(token, timeout=0)
            self.model.append(token)

    @rule(token=tokens)
    def push_evict(self, token: int) -> None:
        if self.is_closed:
            with pytest.raises(ClosedError):
                self.ring.push_evict(token)
            return
        expected = self.model.popleft() if self._full() else None
        assert self.ring.push_evict(token) == expected
        self.model.append(token)

    @rule()
    def try_pop(self) -> None:
        if self.model:
            assert self.ring.try_pop() == self.model.popleft()
        elif self.is_closed:
            with pytest.raises(ClosedError):
                self.ring.try_pop()
        else:
            assert self.ring.try_pop() is None

    @rule()
    def pop_no_wait(self) -> None:
        if self.model:
            assert self.ring.pop(timeout=0) == self.model.popleft()
        else:
            with pytest.raises(ClosedError if self.is_closed else TimeoutError):
                self.ring.pop(timeout=0)

    @rule(k=st.integers(min_value=1, max_value=70), wait=st.booleans())
    def pop_many(self, k: int, wait: bool) -> None:
        want = [self.model.popleft() for _ in range(min(k, len(self.model), self.capacity))]
        if want:
            got = self.ring.pop_many_wait(k, timeout=0) if wait else self.ring.pop_many(k)
            assert got == want
        elif self.is_closed:
            with pytest.raises(ClosedError):
                self.ring.pop_many(k)
        elif wait:
            with pytest.raises(TimeoutError):
                self.ring.pop_many_wait(k, timeout=0)
        else:
            assert self.ring.pop_many(k) == []

    @precondition(lambda self: not self.is_closed)
    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        # Rare, so most runs exercise the open ring for a while.
        if data.draw(st.integers(0, 9)) == 0:
            self.ring.close()
            self.is_closed = True

    @invariant()
    def same_state(self) -> None:
        if self.capacity:
            assert len(self.ring) == len(self.model)
            assert self.ring.closed == self.is_closed
            assert self.ring.capacity == self.capacity


RingMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
test_ring_state_machine = pytest.mark.thread_unsafe(reason="hypothesis")(RingMachine.TestCase)


# ---- stress -------------------------------------------------------------------------------------

PER_PRODUCER = 40_000


def _token(producer: int, i: int) -> int:
    return (producer << 32) | i


def _run_stress(capacity: int, per_producer: int, close_after: float | None) -> None:
    """4 producers x 4 consumers; checks every accepted token is seen exactly once.

    With ``close_after`` the ring is closed that many seconds in, while
    producers are still pushing; otherwise after every producer finished.
    """
    r = RingBuffer(capacity)
    accepted = [0] * 4
    seen: list[list[int]] = [[] for _ in range(4)]  # per consumer, in the order it saw them
    evicted: list[int] = []
    errors: list[BaseException] = []

    def produce(p: int) -> None:
        i = 0
        try:
            while i < per_producer:
                tok = _token(p, i)
                if p == 0:
                    if not r.try_push(tok):
                        time.sleep(0)
                        continue
                elif p == 1:
                    r.push(tok)
                elif p == 2:
                    try:
                        r.push(tok, timeout=0.001)
                    except TimeoutError:
                        continue
                else:
                    old = r.push_evict(tok)
                    if old is not None:
                        evicted.append(old)
                i += 1
        except ClosedError:
            assert close_after is not None
        except BaseException as e:
            errors.append(e)
        accepted[p] = i

    def consume(c: int) -> None:
        out = seen[c]
        try:
            while True:
                if c == 0:
                    t = r.try_pop()
                    if t is None:
                        time.sleep(0)
                    else:
                        out.append(t)
                elif c == 1:
                    out.append(r.pop())
                elif c == 2:
                    got = r.pop_many(16)
                    if got:
                        out += got
                    else:
                        time.sleep(0)
                else:
                    with contextlib.suppress(TimeoutError):
                        out += r.pop_many_wait(32, timeout=0.001)
        except ClosedError:
            pass
        except BaseException as e:
            errors.append(e)

    consumers = [threading.Thread(target=consume, args=(c,)) for c in range(4)]
    producers = [threading.Thread(target=produce, args=(p,)) for p in range(4)]
    for t in consumers + producers:
        t.start()
    if close_after is not None:
        time.sleep(close_after)
        r.close()
    for t in producers:
        t.join(60)
    r.close()
    for t in consumers:
        t.join(60)
    assert not any(t.is_alive() for t in consumers + producers), "a thread is stuck"
    assert errors == []
    if close_after is None:
        assert accepted == [per_producer] * 4

    everything = Counter(evicted)
    for out in seen:
        everything.update(out)
        # FIFO as each consumer sees it: one producer's tokens in increasing order.
        last = [-1] * 4
        for tok in out:
            p, i = tok >> 32, tok & 0xFFFFFFFF
            assert i > last[p]
            last[p] = i
    want = Counter(_token(p, i) for p in range(4) for i in range(accepted[p]))
    assert everything == want  # each accepted token exactly once, nothing else
    assert len(r) == 0


@pytest.mark.parametrize("capacity", [4, 256])
def test_stress_every_token_once(capacity: int) -> None:
    _run_stress(capacity, PER_PRODUCER, close_after=None)


@pytest.mark.parametrize("capacity", [2, 64])
def test_stress_close_while_pushing(capacity: int) -> None:
    _run_stress(capacity, 10**9, close_after=0.2)
