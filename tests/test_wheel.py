"""TimingWheel: the C hierarchical timing wheel through its Python class.

Functional behaviour (order, ties, never early, cancel, far deadlines through
the overflow, partial advances, exact next deadlines), bad input, waiting and
waking with real blocked threads (observed through ``waiters``, never timed
with sleeps), a hypothesis state machine against a sorted-list model, and a
multi-threaded stress run where every token must be cancelled once or fired
once.
"""

from __future__ import annotations

import bisect
import math
import random
import threading
import time
import weakref
from collections import Counter

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from taskrunner.errors import ClosedError, DuplicateTokenError, UnknownTokenError
from taskrunner.native.wheel import TimingWheel

MS = 1_000_000
SEC = 1_000_000_000
DAY = 86_400 * SEC
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
TOKEN_MAX = 2**64 - 1
JOIN = 10.0  # generous: a join that times out means a waiter was never woken


def until_blocked(wheel: TimingWheel, k: int) -> None:
    """Yield until k threads are asleep in wheel.wait (fails after JOIN seconds)."""
    give_up = time.monotonic() + JOIN
    while wheel.waiters < k:
        assert time.monotonic() < give_up, "waiter never blocked"
        time.sleep(0)  # a yield, not a timing assumption
    assert wheel.waiters == k


# ---- construction and plain use ---------------------------------------------------------------


def test_defaults() -> None:
    before = time.monotonic_ns()
    w = TimingWheel()
    assert w.tick_ns == 1_000_000
    assert before <= w.now_ns <= time.monotonic_ns()
    assert len(w) == 0
    assert not w.closed
    assert w.next_deadline_ns()[0] is None
    assert w.memory_bytes > 0
    assert w.waiters == 0
    assert "TimingWheel open" in repr(w)


def test_order_ties_and_never_early() -> None:
    w = TimingWheel(start_ns=0)
    deadlines = [5 * MS + 700, 5 * MS + 100, 5 * MS + 700, 9 * MS, 5 * MS + 100, 5 * MS, 70 * MS]
    for token, d in enumerate(deadlines):
        w.insert_ns(token, d)
    assert len(w) == len(deadlines)
    assert w.advance_ns(5 * MS - 1) == []
    assert w.advance_with_deadlines_ns(5 * MS + 100) == [
        (5, 5 * MS),
        (1, 5 * MS + 100),
        (4, 5 * MS + 100),
    ]
    assert w.advance_ns(5 * MS + 699) == []  # never early, even inside a collected tick
    assert w.advance_ns(10 * MS) == [0, 2, 3]  # tie at +700: insertion order
    assert w.now_ns == 10 * MS
    assert w.advance_ns(0) == []  # earlier than now: ignored
    assert w.now_ns == 10 * MS
    assert w.advance_ns(70 * MS) == [6]
    assert len(w) == 0


def test_past_deadlines_are_due_at_once() -> None:
    w = TimingWheel(start_ns=1000 * MS)
    w.insert_ns(1, 5)
    w.insert_ns(2, 1000 * MS)
    w.insert_ns(3, INT64_MIN)
    assert w.next_deadline_ns()[0] == INT64_MIN
    assert w.advance_ns(w.now_ns) == [3, 1, 2]


def test_insert_after_uses_the_wheel_time() -> None:
    w = TimingWheel(start_ns=50 * SEC)
    assert w.insert_after(1, 0.25) == 50 * SEC + 250 * MS
    assert w.insert_after(2, 0) == 50 * SEC
    assert w.insert_after(3, 1e300) == INT64_MAX  # saturates
    assert w.advance_ns(50 * SEC) == [2]
    assert w.advance_ns(51 * SEC) == [1]
    assert w.advance_ns(INT64_MAX) == [3]


def test_cancel_discard_and_duplicates() -> None:
    w = TimingWheel(start_ns=0)
    w.insert_ns(7, 10 * MS)
    with pytest.raises(DuplicateTokenError):
        w.insert_ns(7, 20 * MS)
    with pytest.raises(ValueError):  # DuplicateTokenError is a ValueError too
        w.insert_ns(7, 20 * MS)
    w.insert_ns(0, 20 * MS)
    w.insert_ns(TOKEN_MAX, 30 * MS)
    with pytest.raises(UnknownTokenError):
        w.cancel(8)
    with pytest.raises(KeyError):  # and a KeyError
        w.cancel(8)
    w.cancel(7)
    assert w.discard(7) is False
    assert w.discard(0) is True
    assert len(w) == 1
    w.insert_ns(7, 1)  # a token is reusable once it left
    assert w.advance_ns(SEC) == [7, TOKEN_MAX]
    with pytest.raises(UnknownTokenError, match="not pending"):
        w.cancel(TOKEN_MAX)  # fired


def test_far_deadlines_through_the_overflow() -> None:
    w = TimingWheel(start_ns=5)
    far = [31 * DAY, 800 * DAY, 3 * 365 * DAY, 10 * 365 * DAY, 100 * 365 * DAY, INT64_MAX]
    for token, d in enumerate(far):
        w.insert_ns(token, d)
    for token, d in enumerate(far):
        assert w.next_deadline_ns()[0] == d
        assert w.advance_ns(d - 1) == []
        assert w.advance_with_deadlines_ns(d) == [(token, d)]
    assert len(w) == 0


def test_overflow_migrates_in_small_steps() -> None:
    hour = 3600 * SEC
    w = TimingWheel(tick=3600.0, start_ns=0)  # two levels of 1 h ticks: 4096 h, then overflow
    want = {token: (token * 97 + 1) * hour + token for token in range(150)}
    for token, d in want.items():
        w.insert_ns(token, d)
    fired: dict[int, int] = {}
    now = 0
    while len(fired) < len(want):
        now += hour
        for token, d in w.advance_with_deadlines_ns(now):
            assert d == want[token]
            assert d <= now < d + hour
            fired[token] = d
    assert fired == want


def test_advance_max_leaves_the_rest_due() -> None:
    w = TimingWheel(start_ns=0)
    for token in range(100):
        w.insert_ns(token, (100 - token // 2) * MS)
    got = w.advance_ns(200 * MS, max=7)
    assert got == [98, 99, 96, 97, 94, 95, 92]
    assert w.advance_ns(200 * MS, max=0) == []
    assert len(w) == 93
    rest = w.advance_ns(200 * MS, max=1000)
    assert len(rest) == 93
    assert rest[0] == 93 and rest[-2:] == [0, 1]


def test_advance_more_than_the_buffer() -> None:
    w = TimingWheel(start_ns=0, batch=16)
    for token in range(1000):
        w.insert_ns(token, 1000 - token)
    assert w.advance_ns(10**6, max=40) == list(range(999, 959, -1))
    assert w.advance_ns(10**6) == list(range(959, -1, -1))
    for token in range(50):
        w.insert_ns(token, token)
    pairs = w.advance_with_deadlines_ns(10**6)
    assert pairs == [(t, t) for t in range(50)]


def test_next_deadline_is_exact_across_levels() -> None:
    rng = random.Random(7)
    w = TimingWheel(start_ns=0)
    live: dict[int, int] = {}
    spans = [64 * MS, 4 * SEC, 250 * SEC, 4 * 3600 * SEC, 40 * DAY, 900 * DAY]
    for token in range(600):
        live[token] = 1 + rng.randrange(spans[token % len(spans)])
        w.insert_ns(token, live[token])
    while live:
        best = min(live.values())
        assert w.next_deadline_ns()[0] == best
        if rng.random() < 0.5:
            token = min(live, key=lambda t: (live[t], t))
            w.cancel(token)
            del live[token]
        else:
            for token in w.advance_ns(best):
                assert live.pop(token) == best
    assert w.next_deadline_ns()[0] is None


def test_memory_per_timer() -> None:
    w = TimingWheel(start_ns=0)
    n = 200_000
    insert = w.insert_ns
    for token in range(n):
        insert(token, token * 1000 + 1)
    assert len(w) == n
    per_timer = w.memory_bytes / n
    assert 32 <= per_timer <= 64, per_timer
    # Storage is kept for reuse, not returned, when timers leave.
    total = w.memory_bytes
    assert len(w.advance_ns(INT64_MAX)) == n
    assert w.memory_bytes == total


def test_close() -> None:
    w = TimingWheel(start_ns=0)
    w.insert_ns(1, 10)
    w.insert_ns(2, 20)
    w.close()
    w.close()  # idempotent
    assert w.closed
    assert "closed" in repr(w)
    with pytest.raises(ClosedError):
        w.insert_ns(3, 5)
    with pytest.raises(ClosedError):
        w.insert_after(3, 0.1)
    # What is pending can still be drained or discarded.
    assert w.next_deadline_ns()[0] == 10
    w.cancel(2)
    assert w.advance_ns(100) == [1]
    assert w.wait(0, None) is True  # closed: returns at once


def test_freed_with_its_owner() -> None:
    w = TimingWheel(start_ns=0)
    w.insert_ns(1, 1)
    ref = weakref.ref(w)
    del w
    assert ref() is None


# ---- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"tick": 0}, ValueError),
        ({"tick": -0.001}, ValueError),
        ({"tick": math.nan}, ValueError),
        ({"tick": math.inf}, ValueError),
        ({"tick": 1e-12}, ValueError),  # under 1 ns
        ({"tick": 1e12}, ValueError),  # over the int64 range of ns
        ({"tick": "0.001"}, TypeError),
        ({"tick": True}, TypeError),
        ({"start_ns": 1.5}, TypeError),
        ({"start_ns": True}, TypeError),
        ({"start_ns": 2**63}, ValueError),
        ({"batch": 0}, ValueError),
        ({"batch": 2.0}, TypeError),
    ],
    ids=lambda v: repr(v) if not isinstance(v, type) else v.__name__,
)
def test_bad_construction(kwargs: dict[str, object], exc: type[Exception]) -> None:
    with pytest.raises(exc):
        TimingWheel(**kwargs)  # type: ignore[arg-type]


def test_bad_arguments() -> None:
    w = TimingWheel(start_ns=0)
    bad_tokens: list[tuple[object, type[Exception]]] = [
        (-1, ValueError),
        (2**64, ValueError),
        (1.0, TypeError),
        ("1", TypeError),
        (None, TypeError),
        (True, TypeError),
    ]
    for token, exc in bad_tokens:
        with pytest.raises(exc):
            w.insert_ns(token, 5)  # type: ignore[arg-type]
        with pytest.raises(exc):
            w.cancel(token)  # type: ignore[arg-type]
        with pytest.raises(exc):
            w.discard(token)  # type: ignore[arg-type]
    for deadline, exc in [(1.5, TypeError), (None, TypeError), (2**63, ValueError)]:
        with pytest.raises(exc):
            w.insert_ns(1, deadline)  # type: ignore[arg-type]
        with pytest.raises(exc):
            w.advance_ns(deadline)  # type: ignore[arg-type]
        with pytest.raises(exc):
            w.advance_with_deadlines_ns(deadline)  # type: ignore[arg-type]
    for delay, exc in [(-0.5, ValueError), (math.nan, ValueError), (math.inf, ValueError)]:
        with pytest.raises(exc):
            w.insert_after(1, delay)
    with pytest.raises(TypeError):
        w.insert_after(1, "1")  # type: ignore[arg-type]
    for limit, exc in [(-1, ValueError), (1.5, TypeError), (True, TypeError)]:
        with pytest.raises(exc):
            w.advance_ns(0, max=limit)  # type: ignore[arg-type]
    for generation, exc in [(-1, ValueError), (2**64, ValueError), ("0", TypeError)]:
        with pytest.raises(exc):
            w.wait(generation, 0)  # type: ignore[arg-type]
    for timeout, exc in [(-1, ValueError), (math.nan, ValueError), ("1", TypeError)]:
        with pytest.raises(exc):
            w.wait(0, timeout)  # type: ignore[arg-type]
    assert len(w) == 0  # nothing half-done


# ---- waiting ----------------------------------------------------------------------------------


def test_generation_semantics() -> None:
    w = TimingWheel(start_ns=0)
    deadline, g0 = w.next_deadline_ns()
    assert deadline is None
    assert w.wait(g0, 0) is False
    t0 = time.monotonic()
    assert w.wait(g0, 0.02) is False
    assert time.monotonic() - t0 >= 0.019
    assert w.wait(g0 + 1, None) is True  # stale generation: at once
    w.insert_ns(1, 100 * MS)  # told "empty": any insert changes it
    deadline, g1 = w.next_deadline_ns()
    assert (deadline, g1 != g0) == (100 * MS, True)
    w.insert_ns(2, 200 * MS)  # later, and equal: no change
    w.insert_ns(3, 100 * MS)
    assert w.wait(g1, 0) is False
    w.insert_ns(4, 50 * MS)  # earlier: changed
    assert w.wait(g1, 0) is True
    _, g2 = w.next_deadline_ns()
    w.kick()
    assert w.wait(g2, 0) is True


class _Waiter(threading.Thread):
    def __init__(self, wheel: TimingWheel, generation: int, timeout: float | None) -> None:
        super().__init__(daemon=True)
        self.wheel, self.generation, self.timeout = wheel, generation, timeout
        self.result: bool | None = None

    def run(self) -> None:
        self.result = self.wheel.wait(self.generation, self.timeout)


def _start(wheel: TimingWheel, k: int, timeout: float | None) -> list[_Waiter]:
    _, generation = wheel.next_deadline_ns()
    waiters = [_Waiter(wheel, generation, timeout) for _ in range(k)]
    for t in waiters:
        t.start()
    until_blocked(wheel, k)
    return waiters


def _join(waiters: list[_Waiter]) -> list[bool | None]:
    for t in waiters:
        t.join(JOIN)
        assert not t.is_alive(), "a blocked waiter was never woken"
    return [t.result for t in waiters]


def test_blocked_waiters_are_woken() -> None:
    w = TimingWheel(start_ns=0)
    waiters = _start(w, 3, None)
    w.insert_ns(1, 100 * MS)
    assert _join(waiters) == [True, True, True]
    waiters = _start(w, 1, 0.15)  # told 100 ms: later or equal inserts do not wake it
    w.insert_ns(2, 100 * MS)
    w.insert_ns(3, 500 * MS)
    w.cancel(2)
    assert w.advance_ns(10 * MS) == []
    assert _join(waiters) == [False]
    waiters = _start(w, 2, JOIN)
    w.insert_ns(4, 99 * MS)
    assert _join(waiters) == [True, True]
    waiters = _start(w, 2, None)
    w.kick()
    assert _join(waiters) == [True, True]
    waiters = _start(w, 2, JOIN)
    w.close()
    assert _join(waiters) == [True, True]
    assert w.closed
    assert w.waiters == 0


def test_timer_thread_fires_everything_on_time() -> None:
    """A real timer loop on the monotonic clock: nothing early, nothing lost."""
    w = TimingWheel(start_ns=time.monotonic_ns())
    expected = 301
    # Written by the timer thread, read after `done`.
    fired: list[tuple[int, int, int]] = []
    batches: list[list[int]] = []
    done = threading.Event()

    def timer() -> None:
        while True:
            deadline, generation = w.next_deadline_ns()
            if w.closed and deadline is None:
                return
            if deadline is not None:
                wait = (deadline - time.monotonic_ns()) / 1e9
                if wait > 0 and w.wait(generation, wait):
                    continue  # an earlier deadline arrived
            elif w.wait(generation, None):
                continue
            now = time.monotonic_ns()
            batch = w.advance_with_deadlines_ns(now)
            batches.append([d for _, d in batch])
            fired.extend((t, d, now) for t, d in batch)
            if len(fired) >= expected:
                done.set()

    thread = threading.Thread(target=timer, daemon=True)
    thread.start()
    base = time.monotonic_ns()
    for token in range(300):
        w.insert_ns(token, base + (token * 7919 % 300) * 100_000)  # within 30 ms, shuffled
    w.insert_ns(1000, base - SEC)  # already due
    assert done.wait(JOIN), f"only {len(fired)} of {expected} fired"
    w.close()
    thread.join(JOIN)
    assert not thread.is_alive()
    assert sorted(t for t, _, _ in fired) == [*range(300), 1000]
    assert all(now >= d for _, d, now in fired)  # never early
    # Each batch is earliest first (inserts racing the timer may land in a later batch).
    assert all(batch == sorted(batch) for batch in batches)


# ---- a model-based state machine --------------------------------------------------------------

TICKS = [1e-9, 7e-9, 1e-6, 1e-3, 1.0, 3600.0]


class WheelMachine(RuleBasedStateMachine):
    """TimingWheel vs a sorted list of (deadline, insertion order, token)."""

    @initialize(tick=st.sampled_from(TICKS), start=st.integers(-(2**62), 2**62))
    def setup(self, tick: float, start: int) -> None:
        self.tick_ns = round(tick * 1e9)
        self.wheel = TimingWheel(tick=tick, start_ns=start)
        self.now = start
        self.model: list[tuple[int, int, int]] = []  # sorted (deadline, seq, token)
        self.seq = 0
        self.is_closed = False

    def _offset(self, data: st.DataObject) -> int:
        t = self.tick_ns
        scale = data.draw(st.sampled_from([1, 2, 64, 4096, 1 << 18, 1 << 24, 1 << 40]))
        return data.draw(st.integers(-3 * t, min(scale * t, 2**62)))

    @rule(token=st.integers(0, 40), data=st.data())
    def insert(self, token: int, data: st.DataObject) -> None:
        if self.model and data.draw(st.integers(0, 3)) == 0:  # ties: reuse a pending deadline
            deadline = data.draw(st.sampled_from([d for d, _, _ in self.model]))
        else:
            deadline = max(INT64_MIN, min(INT64_MAX, self.now + self._offset(data)))
        pending = any(t == token for _, _, t in self.model)
        if self.is_closed:
            with pytest.raises(ClosedError):
                self.wheel.insert_ns(token, deadline)
        elif pending:
            with pytest.raises(DuplicateTokenError):
                self.wheel.insert_ns(token, deadline)
        else:
            self.wheel.insert_ns(token, deadline)
            bisect.insort(self.model, (deadline, self.seq, token))
            self.seq += 1

    @rule(token=st.integers(0, 40))
    def cancel(self, token: int) -> None:
        entry = next((e for e in self.model if e[2] == token), None)
        if entry is None:
            with pytest.raises(UnknownTokenError):
                self.wheel.cancel(token)
        else:
            self.wheel.cancel(token)
            self.model.remove(entry)

    @rule(data=st.data(), limit=st.one_of(st.none(), st.integers(0, 5)), earlier=st.booleans())
    def advance(self, data: st.DataObject, limit: int | None, earlier: bool) -> None:
        step = abs(self._offset(data))
        target = self.now - 1 if earlier else min(INT64_MAX, self.now + step)
        self.now = max(self.now, target)
        due = [e for e in self.model if e[0] <= self.now]
        if limit is not None:
            due = due[:limit]
        got = self.wheel.advance_with_deadlines_ns(target, max=limit)
        assert got == [(token, d) for d, _, token in due]
        del self.model[: len(due)]

    @precondition(lambda self: not self.is_closed)
    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        if data.draw(st.integers(0, 14)) == 0:  # rare, so most runs stay open
            self.wheel.close()
            self.is_closed = True

    @invariant()
    def same_state(self) -> None:
        if not hasattr(self, "wheel"):
            return
        assert len(self.wheel) == len(self.model)
        assert self.wheel.now_ns == self.now
        assert self.wheel.closed == self.is_closed
        want = self.model[0][0] if self.model else None
        assert self.wheel.next_deadline_ns()[0] == want


WheelMachine.TestCase.settings = settings(max_examples=120, stateful_step_count=60, deadline=None)
test_wheel_state_machine = pytest.mark.thread_unsafe(reason="hypothesis")(WheelMachine.TestCase)


# ---- many threads at once ---------------------------------------------------------------------


@pytest.mark.thread_unsafe(reason="starts its own threads")
def test_threads_insert_cancel_advance_account_for_every_token() -> None:
    threads, per_thread = 6, 4000
    w = TimingWheel(start_ns=0)
    clock_lock = threading.Lock()  # guards clock[0], the shared mock time
    clock = [0]
    # Each list below is written by one worker thread only and read after join().
    inserted: list[list[int]] = [[] for _ in range(threads)]
    cancelled: list[list[int]] = [[] for _ in range(threads)]
    batches: list[list[tuple[int, list[tuple[int, int]]]]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        rng = random.Random(i)
        mine = inserted[i]
        try:
            start.wait()
            for n in range(per_thread):
                r = rng.random()
                if r < 0.5:
                    with clock_lock:
                        now = clock[0]
                    token = i * per_thread + n
                    far = rng.random() < 0.1
                    offset = rng.randrange(40 * DAY) if far else rng.randrange(-MS, 50 * MS)
                    w.insert_ns(token, now + offset)
                    mine.append(token)
                elif r < 0.75 and mine:
                    victim = rng.choice(mine)
                    if w.discard(victim):
                        cancelled[i].append(victim)
                else:
                    with clock_lock:
                        clock[0] += rng.randrange(2 * MS)
                        now = clock[0]
                    got = w.advance_with_deadlines_ns(now, max=rng.choice([None, 1, 50]))
                    with clock_lock:  # another thread may have advanced the wheel further
                        after = clock[0]
                    batches[i].append((after, got))
        except BaseException as e:  # reported below
            errors.append(e)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
        assert not t.is_alive()
    assert not errors, errors
    rest = w.advance_with_deadlines_ns(INT64_MAX)
    assert len(w) == 0
    for now, batch in [b for per in batches for b in per] + [(INT64_MAX, rest)]:
        deadlines = [d for _, d in batch]
        assert deadlines == sorted(deadlines)  # each batch earliest first
        assert all(d <= now for d in deadlines)  # never early
    fired = [t for per in batches for _, batch in per for t, _ in batch] + [t for t, _ in rest]
    counts = Counter(fired + [t for per in cancelled for t in per])
    want = {t for per in inserted for t in per}
    assert len(want) == sum(len(per) for per in inserted)
    assert set(counts) == want  # nothing lost, nothing invented
    assert all(c == 1 for c in counts.values()), "a token fired or was cancelled twice"
