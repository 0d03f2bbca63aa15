"""Sequenced, single-thread and parallel runners; replies; repeating tasks; timers."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from taskrunner import (
    QueueFullError,
    RunnerClosedError,
    TaskState,
    TaskTraits,
    ThreadPool,
    current_task_runner,
)
from taskrunner.runtime.repeating import RepeatingMode
from taskrunner.runtime.runners.sequenced import ParallelTaskRunner, SequencedTaskRunner
from taskrunner.runtime.runners.single_thread import QueuePolicy, SingleThreadTaskRunner
from taskrunner.runtime.timers import DebounceTimer, OneShotTimer, RepeatingTimer
from taskrunner.runtime.traits import ShutdownBehavior

WAIT = 10.0


@pytest.fixture
def pool() -> Iterator[ThreadPool]:
    p = ThreadPool(4, name="rpool").start()
    yield p
    p.shutdown(timeout=WAIT)


# ---- sequenced ------------------------------------------------------------------


def test_sequence_keeps_per_poster_order_and_never_overlaps(pool: ThreadPool) -> None:
    seq = SequencedTaskRunner(pool, name="seq")
    seen: dict[int, list[int]] = {p: [] for p in range(8)}
    active = [0]
    overlaps = [0]

    def task(poster: int, i: int) -> None:
        active[0] += 1  # no lock on purpose: the sequence must serialise us
        if active[0] != 1:
            overlaps[0] += 1
        seen[poster].append(i)
        active[0] -= 1

    def poster(p: int) -> None:
        for i in range(500):
            seq.post_task(task, p, i)

    threads = [threading.Thread(target=poster, args=(p,)) for p in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seq.wait_idle(WAIT)
    assert overlaps[0] == 0
    for p in range(8):
        assert seen[p] == list(range(500))
    assert seq.stats()["max_concurrency_seen"] == 1


def test_sequence_memory_visibility_and_current_runner(pool: ThreadPool) -> None:
    seq = SequencedTaskRunner(pool)
    state = {"n": 0}
    runners: list[object] = []

    def bump() -> None:
        state["n"] += 1
        runners.append(current_task_runner())

    for _ in range(1000):
        seq.post_task(bump)
    assert seq.flush(WAIT)
    assert state["n"] == 1000
    assert all(r is seq for r in runners)


def test_sequence_yields_its_worker(pool: ThreadPool) -> None:
    """A busy sequence does not monopolise a 1-worker pool."""
    small = ThreadPool(1, name="one").start()
    try:
        seq = SequencedTaskRunner(small, budget=0.001)
        stop = threading.Event()

        def spin() -> None:
            time.sleep(0.0005)
            if not stop.is_set():
                seq.post_task(spin)

        seq.post_task(spin)
        assert small.submit(lambda: "other").result(WAIT) == "other"
        stop.set()
        assert seq.wait_idle(WAIT)
    finally:
        small.shutdown()


def test_sequence_cancel_and_delayed(pool: ThreadPool) -> None:
    seq = SequencedTaskRunner(pool)
    gate = threading.Event()
    out: list[str] = []
    seq.post_task(gate.wait, WAIT)
    h = seq.post_task(out.append, "cancelled")
    seq.post_task(out.append, "a")
    seq.post_delayed_task(out.append, 0.02, "delayed")
    assert h.cancel()
    gate.set()
    deadline = time.monotonic() + WAIT
    while len(out) < 2 and time.monotonic() < deadline:
        seq.wait_idle(0.01)
    assert seq.wait_idle(WAIT)
    assert out == ["a", "delayed"]


@pytest.mark.thread_unsafe(
    reason="timing: counts on its first task having started before shutdown, which 4 copies "
    "competing for the shared pool's workers make unlikely"
)
def test_sequence_shutdown_drops_or_drains(pool: ThreadPool) -> None:
    seq = SequencedTaskRunner(pool)
    gate = threading.Event()
    started = threading.Event()
    out: list[int] = []

    def hold() -> None:
        started.set()
        gate.wait(WAIT)

    seq.post_task(hold)
    for i in range(5):
        seq.post_task(out.append, i)
    seq.post_task(
        out.append, 99, traits=TaskTraits(shutdown_behavior=ShutdownBehavior.BLOCK_SHUTDOWN)
    )
    assert started.wait(WAIT)  # the first task runs: the other six are queued
    threading.Timer(0.02, gate.set).start()
    report = seq.shutdown(cancel_pending=True)
    assert report.dropped == 5
    assert out == [99]
    with pytest.raises(RunnerClosedError):
        seq.post_task(print)


def test_pool_shutdown_with_a_busy_sequence_loses_nothing() -> None:
    pool = ThreadPool(2, name="seqdrain").start()
    seq = SequencedTaskRunner(pool)
    out: list[int] = []
    for i in range(2000):
        seq.post_task(out.append, i)
    report = pool.shutdown()
    assert report is not None and report.drained
    assert out == list(range(2000))


# ---- parallel -------------------------------------------------------------------


def test_parallel_cap_never_exceeded(pool: ThreadPool) -> None:
    par = ParallelTaskRunner(pool, 2)
    lock = threading.Lock()
    now = [0]
    peak = [0]

    def task() -> None:
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        time.sleep(0.001)
        with lock:
            now[0] -= 1

    for _ in range(60):
        par.post_task(task)
    assert par.wait_idle(WAIT)
    assert peak[0] == 2
    assert par.stats()["max_concurrency_seen"] == 2


def test_parallel_bad_input(pool: ThreadPool) -> None:
    with pytest.raises(ValueError):
        ParallelTaskRunner(pool, 0)
    with pytest.raises(TypeError):
        ParallelTaskRunner("pool", 2)  # type: ignore[arg-type]


# ---- single thread -----------------------------------------------------------------


def test_single_thread_affinity_and_order(pool: ThreadPool) -> None:
    st = SingleThreadTaskRunner(pool, capacity=64)
    idents: list[int] = []
    order: list[int] = []

    def task(i: int) -> None:
        idents.append(threading.get_ident())
        order.append(i)

    for i in range(1000):
        st.post_task(task, i)
    assert st.wait_idle(WAIT)
    assert len(set(idents)) == 1 and idents[0] == st.thread.ident
    assert order == list(range(1000))
    assert st.submit(current_task_runner).result(WAIT) is st
    st.shutdown()
    assert not st.thread.is_alive()


def _full_runner(
    pool: ThreadPool, policy: QueuePolicy, **kw: object
) -> tuple[SingleThreadTaskRunner, threading.Event, list[int]]:
    """A capacity-2 runner whose thread is blocked and whose queue is full."""
    rejected: list[int] = []
    st = SingleThreadTaskRunner(
        pool, capacity=2, policy=policy, on_rejected=lambda t, p: rejected.append(t.token), **kw
    )  # type: ignore[arg-type]
    gate = threading.Event()
    started = threading.Event()

    def block() -> None:
        started.set()
        gate.wait(WAIT)

    st.post_task(block)
    assert started.wait(WAIT)
    return st, gate, rejected


def test_policy_reject(pool: ThreadPool) -> None:
    st, gate, rejected = _full_runner(pool, QueuePolicy.REJECT)
    out: list[int] = []
    st.post_task(out.append, 1)
    st.post_task(out.append, 2)
    with pytest.raises(QueueFullError):
        st.post_task(out.append, 3)
    assert st.rejected_count == 1 and len(rejected) == 1
    gate.set()
    assert st.wait_idle(WAIT)
    assert out == [1, 2]
    st.shutdown()


def test_policy_drop_newest_and_oldest(pool: ThreadPool) -> None:
    st, gate, _ = _full_runner(pool, QueuePolicy.DROP_NEWEST)
    out: list[int] = []
    st.post_task(out.append, 1)
    st.post_task(out.append, 2)
    h = st.post_task(out.append, 3)
    assert h.state is TaskState.DROPPED
    gate.set()
    assert st.wait_idle(WAIT)
    assert out == [1, 2]
    st.shutdown()

    st, gate, _ = _full_runner(pool, QueuePolicy.DROP_OLDEST)
    out.clear()
    first = st.post_task(out.append, 1)
    st.post_task(out.append, 2)
    st.post_task(out.append, 3)
    assert first.state is TaskState.DROPPED
    gate.set()
    assert st.wait_idle(WAIT)
    assert out == [2, 3]
    assert st.stats()["rejected"] == 1
    st.shutdown()


def test_policy_wait_blocks_then_times_out(pool: ThreadPool) -> None:
    st, gate, _ = _full_runner(pool, QueuePolicy.WAIT, wait_timeout=0.05)
    out: list[int] = []
    st.post_task(out.append, 1)
    st.post_task(out.append, 2)
    t0 = time.monotonic()
    with pytest.raises(QueueFullError):
        st.post_task(out.append, 3)
    assert time.monotonic() - t0 >= 0.04
    # With room freed while the poster waits, the post goes through.
    threading.Timer(0.02, gate.set).start()
    st.post_task(out.append, 4)
    assert st.wait_idle(WAIT)
    assert out == [1, 2, 4]
    st.shutdown()


def test_policy_caller_runs(pool: ThreadPool) -> None:
    st, gate, _ = _full_runner(pool, QueuePolicy.CALLER_RUNS)
    where: list[int] = []
    st.post_task(lambda: None)
    st.post_task(lambda: None)
    st.post_task(lambda: where.append(threading.get_ident()))
    assert where == [threading.get_ident()]  # ran here, on the poster
    assert st.rejected_count == 1
    gate.set()
    st.shutdown()


def test_single_thread_bad_capacity(pool: ThreadPool) -> None:
    for bad in (0, 1, 3, 1000):
        with pytest.raises(ValueError):
            SingleThreadTaskRunner(pool, capacity=bad)
    with pytest.raises(TypeError):
        SingleThreadTaskRunner(pool, capacity=2.0)  # type: ignore[arg-type]


def test_single_thread_shutdown_with_queued_tasks(pool: ThreadPool) -> None:
    st, gate, _ = _full_runner(pool, QueuePolicy.REJECT)
    out: list[int] = []
    st.post_task(out.append, 1)
    st.post_task(out.append, 2)
    threading.Timer(0.02, gate.set).start()
    report = st.shutdown(cancel_pending=True)
    assert report.dropped == 2 and out == []
    assert not st.thread.is_alive()
    with pytest.raises(RunnerClosedError):
        st.post_task(print)


# ---- replies ------------------------------------------------------------------------


def test_reply_runs_on_the_posting_runner(pool: ThreadPool) -> None:
    ui = SingleThreadTaskRunner(pool, name="ui")
    worker = SequencedTaskRunner(pool, name="bg")
    result: list[tuple[object, object]] = []
    done = threading.Event()

    def reply(value: int) -> None:
        result.append((value, current_task_runner()))
        done.set()

    def start() -> None:
        worker.post_task_and_reply_with_result(lambda: 21 * 2, reply)

    ui.post_task(start)
    assert done.wait(WAIT)
    assert result == [(42, ui)]
    ui.shutdown()


@pytest.mark.thread_unsafe(reason="holds workers of the shared 2-worker pool")
def test_the_reply_is_posted_before_the_future_completes(pool: ThreadPool) -> None:
    """Whoever the future wakes finds the reply queued already: on one runner
    (an event loop, say) the reply runs before what the waiter posts after."""
    replies = SequencedTaskRunner(pool)
    held, holding = threading.Event(), threading.Event()

    def hold() -> None:
        holding.set()
        held.wait(WAIT)

    replies.post_task(hold)  # running: keeps the reply queued behind it
    assert holding.wait(WAIT)
    go = threading.Event()
    queued_when_done: list[int] = []
    future = pool.post_task_and_reply_with_result(
        lambda: go.wait(WAIT), lambda value: None, reply_runner=replies
    )
    future.add_done_callback(lambda f: queued_when_done.append(replies.stats()["queued"]))
    go.set()
    assert future.result(WAIT) is True
    held.set()
    assert replies.wait_idle(WAIT)
    assert queued_when_done == [1]
    replies.shutdown()


def test_reply_with_exception_skips_reply_and_sets_future(pool: ThreadPool) -> None:
    errors: list[BaseException] = []
    p = ThreadPool(1, name="replyerr", error_handler=lambda e, t: errors.append(e)).start()
    replies: list[object] = []
    fut = p.post_task_and_reply_with_result(lambda: 1 / 0, replies.append, reply_runner=pool)
    with pytest.raises(ZeroDivisionError):
        fut.result(WAIT)
    p.wait_idle(WAIT)
    assert replies == []
    assert isinstance(errors[0], ZeroDivisionError)
    p.shutdown()


def test_future_works_with_asyncio(pool: ThreadPool) -> None:
    async def main() -> int:
        return await asyncio.wrap_future(pool.submit(lambda: 5))

    assert asyncio.run(main()) == 5


def test_post_task_and_reply_outside_task_needs_reply_runner(pool: ThreadPool) -> None:
    from taskrunner.errors import NoCurrentTaskRunnerError

    with pytest.raises(NoCurrentTaskRunnerError):
        pool.post_task_and_reply(lambda: None, lambda: None)
    done = threading.Event()
    pool.post_task_and_reply(lambda: None, done.set, reply_runner=pool)
    assert done.wait(WAIT)


# ---- repeating tasks and timers (real time, short) -------------------------------------


def test_repeating_task_stops(pool: ThreadPool) -> None:
    count = [0]
    enough = threading.Event()

    def tick() -> None:
        count[0] += 1
        if count[0] == 5:
            enough.set()

    h = pool.post_repeating_task(tick, 0.002)
    assert enough.wait(WAIT)
    h.stop()
    assert h.is_stopped
    runs = h.runs
    pool.wait_idle(WAIT)
    assert h.runs <= runs + 1


def test_repeating_task_survives_exceptions_unless_told(pool: ThreadPool) -> None:
    p = ThreadPool(1, name="rep", error_handler=lambda e, t: None).start()
    calls = [0]
    three = threading.Event()

    def flaky() -> None:
        calls[0] += 1
        if calls[0] >= 3:
            three.set()
        raise RuntimeError("flaky")

    h = p.post_repeating_task(flaky, 0.001)
    assert three.wait(WAIT)
    h.stop()
    stopper = p.post_repeating_task(flaky, 0.001, stop_on_error=True)
    deadline = time.monotonic() + WAIT
    while not stopper.is_stopped and time.monotonic() < deadline:
        p.wait_idle(0.01)
    assert stopper.is_stopped and stopper.runs == 1
    p.shutdown()


def test_repeating_task_stops_at_shutdown() -> None:
    p = ThreadPool(1, name="repshut").start()
    h = p.post_repeating_task(lambda: None, 0.001, mode=RepeatingMode.FIXED_RATE)
    p.shutdown()
    assert h.is_stopped or p.is_closed


def test_repeating_bad_input(pool: ThreadPool) -> None:
    with pytest.raises(ValueError):
        pool.post_repeating_task(print, 0)
    with pytest.raises(ValueError):
        pool.post_repeating_task(print, 1, initial_delay=-1)
    with pytest.raises(TypeError):
        pool.post_repeating_task(print, 1, mode="fast")  # type: ignore[arg-type]


def test_one_shot_timer_restart_and_stop(pool: ThreadPool) -> None:
    fired: list[str] = []
    done = threading.Event()
    t = OneShotTimer(pool)
    t.start(0.5, lambda: fired.append("old"))
    t.start(0.01, lambda: (fired.append("new"), done.set()))
    assert done.wait(WAIT)
    assert fired == ["new"]
    t.start(0.01, lambda: fired.append("stopped"))
    t.stop()
    assert not t.is_running
    pool.wait_idle(WAIT)
    t.start(60, lambda: fired.append("now"))
    assert t.fire_now() and fired[-1] == "now"


def test_debounce_timer_fires_once_after_quiet(pool: ThreadPool) -> None:
    calls: list[int] = []
    done = threading.Event()
    d = DebounceTimer(pool, 0.03, lambda: (calls.append(1), done.set()))
    for _ in range(10):
        d.call()
    assert done.wait(WAIT)
    pool.wait_idle(WAIT)
    assert calls == [1]


def test_repeating_timer(pool: ThreadPool) -> None:
    n = [0]
    three = threading.Event()

    def tick() -> None:
        n[0] += 1
        if n[0] >= 3:
            three.set()

    r = RepeatingTimer(pool)
    r.start(0.002, tick)
    assert three.wait(WAIT)
    r.stop()
    assert not r.is_running


def test_repeating_task_refused_by_a_full_queue_stops_visibly(pool: ThreadPool) -> None:
    st, gate, _ = _full_runner(pool, QueuePolicy.REJECT)  # its thread is blocked
    st.post_task(lambda: None)
    st.post_task(lambda: None)  # the ring is full now
    h = st.post_repeating_task(lambda: None, 1.0, initial_delay=0)
    assert h.is_stopped  # refused at once, and it says so
    gate.set()
    st.shutdown()


def test_wait_policy_from_the_runners_own_thread_does_not_deadlock(pool: ThreadPool) -> None:
    st = SingleThreadTaskRunner(pool, capacity=2, policy=QueuePolicy.WAIT)
    outcome: list[str] = []

    def fill_own_queue() -> None:
        for _ in range(4):
            try:
                st.post_task(lambda: None)
            except QueueFullError:
                outcome.append("full")
                return
        outcome.append("never full")

    assert st.submit(fill_own_queue).result(WAIT) is None
    assert outcome == ["full"]
    st.shutdown()
