"""EventBus (issue 19): handlers on their runners, publish order, typed
subscriptions, re-entrant publish, unsubscribe, close, and no handler kept
alive after either."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from taskrunner import (
    EventBus,
    EventBusClosedError,
    SequencedTaskRunner,
    SingleThreadTaskRunner,
    ThreadPool,
)

WAIT = 10.0


@pytest.fixture
def pool() -> Iterator[ThreadPool]:
    p = ThreadPool(2, name="bus")
    yield p
    p.shutdown(timeout=WAIT)


@dataclass
class Ping:
    n: int


@dataclass
class Pong:
    n: int


def test_each_handler_runs_on_its_runner_in_publish_order(pool: ThreadPool) -> None:
    bus: EventBus[int] = EventBus(pool)
    st = SingleThreadTaskRunner(pool, name="st")
    got_a: list[int] = []
    got_b: list[tuple[int, int]] = []
    done = threading.Event()

    def on_b(n: int) -> None:
        got_b.append((n, threading.get_ident()))
        if n == 199:
            done.set()

    sub_a = bus.subscribe(got_a.append)
    bus.subscribe(on_b, runner=st)
    assert isinstance(sub_a.runner, SequencedTaskRunner)
    for n in range(200):
        assert bus.publish(n) == 2
    assert done.wait(WAIT)
    assert sub_a.runner.flush(WAIT)
    assert got_a == list(range(200))
    assert [n for n, _ in got_b] == list(range(200))
    assert {t for _, t in got_b} == {st.thread.ident}
    stats = bus.stats()
    assert stats["published"] == 200 and stats["delivered"] == 400 and stats["pending"] == 0
    bus.close()
    st.shutdown(timeout=WAIT)


def test_typed_subscriptions_get_only_their_type(pool: ThreadPool) -> None:
    bus: EventBus[Ping | Pong] = EventBus(pool)
    pings: list[Ping] = []
    everything: list[object] = []
    s1 = bus.subscribe(pings.append, event_type=Ping)
    s2 = bus.subscribe(everything.append)
    assert bus.publish(Pong(1)) == 1
    assert bus.publish(Ping(2)) == 2
    for s in (s1, s2):
        assert s.runner is not None and s.runner.flush(WAIT)
    assert pings == [Ping(2)] and everything == [Pong(1), Ping(2)]
    bus.close()


def test_reentrant_publish_from_a_handler(pool: ThreadPool) -> None:
    bus: EventBus[int] = EventBus(pool)
    seen: list[int] = []
    done = threading.Event()

    def handler(n: int) -> None:
        seen.append(n)
        if n < 5:
            bus.publish(n + 1)
        else:
            done.set()

    bus.subscribe(handler)
    bus.publish(0)
    assert done.wait(WAIT)
    assert seen == [0, 1, 2, 3, 4, 5]
    bus.close()


def test_unsubscribe_stops_deliveries_and_releases_the_handler(pool: ThreadPool) -> None:
    bus: EventBus[int] = EventBus(pool)
    gate = threading.Event()
    runner = SequencedTaskRunner(pool)
    runner.post_task(gate.wait, WAIT)  # holds the deliveries in the queue
    calls: list[int] = []
    released = threading.Event()

    class Handler:
        def __call__(self, n: int) -> None:
            calls.append(n)

    handler = Handler()
    weakref.finalize(handler, released.set)
    sub = bus.subscribe(handler, runner=runner)
    del handler
    bus.publish(1)
    bus.publish(2)
    assert sub.unsubscribe() is True
    assert sub.unsubscribe() is False
    gc.collect()
    assert released.is_set()  # queued deliveries do not keep it alive
    gate.set()
    assert runner.flush(WAIT)
    assert calls == []
    assert bus.stats()["dropped"] == 2 and bus.stats()["subscribers"] == 0
    assert bus.publish(3) == 0
    bus.close()


def test_unsubscribe_from_its_own_handler(pool: ThreadPool) -> None:
    bus: EventBus[int] = EventBus(pool)
    calls: list[int] = []
    holder: list[object] = []
    done = threading.Event()

    def handler(n: int) -> None:
        calls.append(n)
        holder[0].unsubscribe()  # type: ignore[attr-defined]
        done.set()

    holder.append(bus.subscribe(handler))
    bus.publish(1)
    bus.publish(2)
    assert done.wait(WAIT)
    runner = current_runner_of(holder[0])
    assert runner is None or runner.wait_shutdown(WAIT)
    assert calls == [1]
    bus.close()


def current_runner_of(sub: object) -> SequencedTaskRunner | None:
    return sub.runner  # type: ignore[attr-defined,no-any-return]


def test_close_refuses_publish_drops_and_counts_pending(pool: ThreadPool) -> None:
    bus: EventBus[int] = EventBus(pool)
    gate = threading.Event()
    started = threading.Event()
    calls: list[int] = []
    released = threading.Event()

    def handler(n: int) -> None:
        calls.append(n)
        started.set()
        gate.wait(WAIT)

    weakref.finalize(handler, released.set)
    sub = bus.subscribe(handler)
    owned = sub.runner
    assert owned is not None
    del handler
    for n in range(5):
        bus.publish(n)
    assert started.wait(WAIT)  # the first delivery is running
    assert bus.close() == 4
    assert bus.close() == 0  # idempotent
    with pytest.raises(EventBusClosedError, match="publish after close"):
        bus.publish(9)
    with pytest.raises(EventBusClosedError):
        bus.subscribe(print)
    gate.set()
    assert owned.wait_shutdown(WAIT) and owned.wait_idle(WAIT)
    assert calls == [0]
    stats = bus.stats()
    assert stats["dropped"] == 4 and stats["delivered"] == 1 and stats["closed"]
    assert not sub.active and sub.runner is None
    gc.collect()
    assert released.is_set()


def test_a_handler_that_raises_goes_to_the_error_handler() -> None:
    errors: list[BaseException] = []
    got = threading.Event()
    pool = ThreadPool(2, name="bus-err", error_handler=lambda e, t: (errors.append(e), got.set()))
    try:
        bus: EventBus[int] = EventBus(pool)
        after: list[int] = []

        def handler(n: int) -> None:
            if n == 0:
                raise ValueError("boom")
            after.append(n)

        sub = bus.subscribe(handler)
        bus.publish(0)
        bus.publish(1)
        assert got.wait(WAIT)
        assert sub.runner is not None and sub.runner.flush(WAIT)
        assert isinstance(errors[0], ValueError) and after == [1]
        bus.close()
    finally:
        pool.shutdown(timeout=WAIT)


def test_the_bus_itself_is_collected_after_close(pool: ThreadPool) -> None:
    bus: EventBus[int] = EventBus(pool)
    gone = threading.Event()
    weakref.finalize(bus, gone.set)
    sub = bus.subscribe(lambda n: None)
    bus.publish(1)
    runner = sub.runner
    bus.close()
    assert runner is not None and runner.wait_shutdown(WAIT) and runner.wait_idle(WAIT)
    del bus, sub, runner
    gc.collect()
    assert gone.is_set()


def test_bad_arguments(pool: ThreadPool) -> None:
    with pytest.raises(TypeError, match="pool must be"):
        EventBus("x")  # type: ignore[arg-type]
    bus: EventBus[int] = EventBus(pool)
    with pytest.raises(TypeError, match="handler must be callable"):
        bus.subscribe(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="event_type must be a class"):
        bus.subscribe(print, event_type="int")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="runner must be"):
        bus.subscribe(print, runner=object())  # type: ignore[arg-type]
    assert bus.stats()["subscribers"] == 0
    bus.close()


def test_subscription_on_a_shut_down_runner_drops_and_counts(pool: ThreadPool) -> None:
    bus: EventBus[int] = EventBus(pool)
    runner = SequencedTaskRunner(pool)
    bus.subscribe(print, runner=runner)
    runner.shutdown(timeout=WAIT)
    assert bus.publish(1) == 0
    assert bus.stats()["dropped"] == 1 and bus.stats()["pending"] == 0
    bus.close()
